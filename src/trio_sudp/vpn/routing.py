"""The server's routing table: inner IP address → peer, and who may send from where.

A :class:`RouteTable` maps IPv4 and IPv6 prefixes to clients (by virtual address)
with longest-prefix match, knows the server's own tunnel networks, and makes the
per-packet decisions of the server (SPEC §5):

- :meth:`RouteTable.route_from_peer` for a packet a client sent: deliver it to the
  server's TUN (:data:`LOCAL`), relay it to another client, or drop it;
- :meth:`RouteTable.route_from_tun` for a packet the kernel wrote to the TUN.

A decision is a plain ``int`` so that nothing is allocated per packet: ``0``
(:data:`LOCAL`, the server's own virtual address) means "write to the TUN", a
positive value is the client to send to, a negative value is a :class:`RouteDrop`.

Lookups of host routes (/32, /128: a client's own addresses) are one dict lookup on
the raw address bytes. Other prefixes are searched from the longest prefix length
to the shortest, one dict lookup per distinct length, and the result is cached.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Final

from ..protocol.constants import MAX_CLIENT_VADDR, SERVER_VADDR
from ..protocol.errors import ConfigError
from .packet import IPAddress, icmpv4_frag_needed, icmpv6_packet_too_big, to_raw_address

__all__ = [
    "LOCAL",
    "Decision",
    "IPNetwork",
    "PrefixLike",
    "RouteDrop",
    "RouteTable",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
#: An address (a host route) or a prefix, as text or as an ``ipaddress`` object.
PrefixLike = str | IPAddress | IPNetwork
#: ``LOCAL`` (0), a client's virtual address (> 0), or a negative :class:`RouteDrop`.
Decision = int

#: Decision "deliver to the server's own TUN device"; equal to the server's vaddr.
LOCAL: Final = SERVER_VADDR


class RouteDrop(enum.IntEnum):
    """Why a packet is dropped. Members are negative ints, returned as decisions."""

    MALFORMED = -1
    SPOOFED_SOURCE = -2
    NO_ROUTE = -3
    TOO_BIG = -4
    #: The destination belongs to the sending client itself (a routing loop).
    HAIRPIN = -5

    @property
    def label(self) -> str:
        """A stable lower-case name for counters: ``"spoofed_source"``, ..."""
        return self.name.lower()


_MALFORMED: Final = RouteDrop.MALFORMED
_SPOOFED: Final = RouteDrop.SPOOFED_SOURCE
_NO_ROUTE: Final = RouteDrop.NO_ROUTE
_TOO_BIG: Final = RouteDrop.TOO_BIG
_HAIRPIN: Final = RouteDrop.HAIRPIN
_MISS: Final = -100  # internal: no prefix matched
_CACHE_LIMIT: Final = 4096
_NO_MTU: Final = 1 << 31


class _Family:
    """The lookup structures of one address family."""

    __slots__ = ("bits", "by_length", "cache", "hosts", "levels")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        #: Full-length prefixes by raw address: the one-lookup fast path.
        self.hosts: dict[bytes, int] = {}
        #: Shorter prefixes: length → {address >> (bits − length): owner}.
        self.by_length: dict[int, dict[int, int]] = {}
        #: ``by_length`` as (shift, table), longest prefix first.
        self.levels: tuple[tuple[int, dict[int, int]], ...] = ()
        #: LPM results (misses too) for addresses not in ``hosts``.
        self.cache: dict[bytes, int] = {}

    def add(self, net: IPNetwork, owner: int) -> None:
        if net.prefixlen == self.bits:
            self.hosts[net.network_address.packed] = owner
        else:
            table = self.by_length.setdefault(net.prefixlen, {})
            table[int(net.network_address) >> (self.bits - net.prefixlen)] = owner
            self._relevel()
        self.cache.clear()

    def remove(self, net: IPNetwork) -> None:
        if net.prefixlen == self.bits:
            self.hosts.pop(net.network_address.packed, None)
        else:
            table = self.by_length.get(net.prefixlen, {})
            table.pop(int(net.network_address) >> (self.bits - net.prefixlen), None)
            if not table:
                self.by_length.pop(net.prefixlen, None)
            self._relevel()
        self.cache.clear()

    def _relevel(self) -> None:
        self.levels = tuple(
            (self.bits - length, self.by_length[length])
            for length in sorted(self.by_length, reverse=True)
        )

    def lookup(self, raw: bytes) -> int:
        owner = self.hosts.get(raw)
        return self.slow(raw) if owner is None else owner

    def slow(self, raw: bytes) -> int:
        """LPM over the non-host prefixes, through the cache."""
        cache = self.cache
        owner = cache.get(raw)
        if owner is not None:
            return owner
        n = int.from_bytes(raw, "big")
        owner = _MISS
        for shift, table in self.levels:
            found = table.get(n >> shift)
            if found is not None:
                owner = found
                break
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[raw] = owner
        return owner


def _owner_name(owner: int) -> str:
    return "the server's own address" if owner == LOCAL else f"peer {owner}"


def _parse_prefix(value: PrefixLike, peer: int) -> IPNetwork:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        msg = f"peer {peer}: {value!r} is not an IP address or prefix ({exc})"
        raise ConfigError(msg) from None


def _parse_interface(value: str | IPInterface) -> IPInterface:
    try:
        interface = ipaddress.ip_interface(value)
    except ValueError as exc:
        raise ConfigError(f"{value!r} is not a tunnel address like 10.0.0.1/24 ({exc})") from None
    net = interface.network
    if interface.ip == net.network_address and net.num_addresses > 2:
        raise ConfigError(
            f"{value} names a network, not the server's address in it (like 10.0.0.1/24)"
        )
    return interface


class RouteTable:
    """Longest-prefix-match routes from inner addresses to clients, for the server.

    ``local`` lists the server's tunnel addresses with their network, like tunelo's
    ``utun_vaddr`` (``"10.0.0.1/24"``; IPv6 too). A packet from a client to an address
    in a local network that no client owns goes to the server's TUN; with
    ``gateway=True`` (tunelo's behaviour) so does one to any address no route
    matches, for the kernel to forward or refuse; with ``gateway=False`` such packets
    are dropped as :attr:`RouteDrop.NO_ROUTE`. ``mtu`` is the tunnel MTU (None: no
    check). Prefixes of different clients, or of a client and the server's own
    addresses, may not overlap.
    """

    def __init__(
        self,
        local: Iterable[str | IPInterface] = (),
        *,
        mtu: int | None = None,
        gateway: bool = True,
    ) -> None:
        self._v4 = _Family(32)
        self._v6 = _Family(128)
        # The same dicts as self._v4.hosts / self._v6.hosts (never replaced, only
        # updated), one attribute lookup away for the per-packet path.
        self._hosts4 = self._v4.hosts
        self._hosts6 = self._v6.hosts
        # version → prefix length → masked address → (owner, prefix): the assignments
        # checked for overlaps. LOCAL here means the server's own host addresses.
        self._claims: dict[int, dict[int, dict[int, tuple[int, IPNetwork]]]] = {4: {}, 6: {}}
        self._peers: dict[int, dict[IPNetwork, None]] = {}
        self._local: tuple[IPInterface, ...] = tuple(_parse_interface(x) for x in local)
        self._mtu = _NO_MTU if mtu is None else mtu
        self._unrouted: int = LOCAL if gateway else _NO_ROUTE
        self._source_v4: bytes | None = None
        self._source_v6: bytes | None = None
        for interface in self._local:
            family = self._v4 if interface.version == 4 else self._v6
            family.add(interface.network, LOCAL)
            own = ipaddress.ip_network(interface.ip)
            family.add(own, LOCAL)
            self._claim(own, LOCAL)
            if interface.version == 4 and self._source_v4 is None:
                self._source_v4 = interface.ip.packed
            elif interface.version == 6 and self._source_v6 is None:
                self._source_v6 = interface.ip.packed

    # -- building ---------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        local: Iterable[str | IPInterface],
        peers: Mapping[int, Iterable[PrefixLike]],
        *,
        mtu: int | None = None,
        gateway: bool = True,
    ) -> RouteTable:
        """Build a table from the server's tunnel addresses and each peer's addresses
        and extra prefixes (``{vaddr: ["10.0.0.2", "192.168.7.0/24"]}``)."""
        table = cls(local, mtu=mtu, gateway=gateway)
        for peer, prefixes in peers.items():
            table.add_peer(peer, prefixes)
        return table

    @classmethod
    def from_tunelo(
        cls,
        utun_vaddr: str,
        mappings: Mapping[str, int],
        *,
        mtu: int | None = None,
        gateway: bool = True,
    ) -> RouteTable:
        """Build a table from a tunelo server config's ``utun_vaddr`` and ``mappings``
        (tunnel IP → virtual address)."""
        peers: dict[int, list[PrefixLike]] = {}
        for address, vaddr in mappings.items():
            peers.setdefault(vaddr, []).append(address)
        return cls.from_config([utun_vaddr], peers, mtu=mtu, gateway=gateway)

    def _claim(self, net: IPNetwork, owner: int) -> None:
        by_length = self._claims[net.version].setdefault(net.prefixlen, {})
        shift = net.max_prefixlen - net.prefixlen
        by_length[int(net.network_address) >> shift] = (owner, net)

    def _unclaim(self, net: IPNetwork) -> None:
        by_length = self._claims[net.version][net.prefixlen]
        del by_length[int(net.network_address) >> (net.max_prefixlen - net.prefixlen)]
        if not by_length:
            del self._claims[net.version][net.prefixlen]

    def _conflict(self, net: IPNetwork, peer: int) -> tuple[int, IPNetwork] | None:
        """Another owner's assignment that overlaps ``net``, if any."""
        bits = net.max_prefixlen
        length = net.prefixlen
        value = int(net.network_address)
        for other_length, entries in self._claims[net.version].items():
            if other_length <= length:
                # A prefix at least as short contains net iff it matches its start.
                hit = entries.get(value >> (bits - other_length))
                if hit is not None and hit[0] != peer:
                    return hit
            else:
                # Longer prefixes inside net (rare: only when adding a short prefix).
                key = value >> (bits - length)
                shift = other_length - length
                for masked, hit in entries.items():
                    if masked >> shift == key and hit[0] != peer:
                        return hit
        return None

    def _check_peer(self, peer: int, prefixes: Iterable[PrefixLike]) -> list[IPNetwork]:
        if isinstance(peer, bool) or not isinstance(peer, int) or not 1 <= peer <= MAX_CLIENT_VADDR:
            raise ConfigError(f"peer virtual address {peer!r} is not in 1..{MAX_CLIENT_VADDR}")
        # Overlaps among one peer's own prefixes are harmless and allowed.
        nets = list(dict.fromkeys(_parse_prefix(p, peer) for p in prefixes))
        for net in nets:
            hit = self._conflict(net, peer)
            if hit is not None:
                owner, other = hit
                raise ConfigError(f"{net} of peer {peer} overlaps {other} of {_owner_name(owner)}")
        return nets

    def add_peer(self, peer: int, prefixes: Iterable[PrefixLike]) -> None:
        """Give ``peer`` these addresses (host routes) and prefixes, on top of any it has.

        Raises :class:`ConfigError` (and changes nothing) if one overlaps an address or
        prefix of another peer or the server's own address.
        """
        nets = self._check_peer(peer, prefixes)
        owned = self._peers.setdefault(peer, {})
        for net in nets:
            if net in owned:
                continue
            owned[net] = None
            self._claim(net, peer)
            (self._v4 if net.version == 4 else self._v6).add(net, peer)

    def set_peer(self, peer: int, prefixes: Iterable[PrefixLike]) -> None:
        """Replace all of ``peer``'s addresses and prefixes (for a config reload)."""
        nets = self._check_peer(peer, prefixes)
        self.remove_peer(peer)
        self.add_peer(peer, nets)

    def remove_peer(self, peer: int) -> None:
        """Forget every route to ``peer``. Does nothing if it has none."""
        for net in self._peers.pop(peer, {}):
            self._unclaim(net)
            (self._v4 if net.version == 4 else self._v6).remove(net)

    # -- inspection -------------------------------------------------------------

    @property
    def peers(self) -> dict[int, tuple[IPNetwork, ...]]:
        """Each peer's addresses and prefixes, as configured."""
        return {peer: tuple(nets) for peer, nets in self._peers.items()}

    @property
    def local(self) -> tuple[IPInterface, ...]:
        """The server's tunnel addresses with their networks."""
        return self._local

    @property
    def mtu(self) -> int | None:
        """The tunnel MTU packets are checked against, or None."""
        return None if self._mtu == _NO_MTU else self._mtu

    def lookup(self, address: str | bytes | IPAddress) -> int | None:
        """Longest-prefix match: the owning peer, :data:`LOCAL` for the server's own
        addresses and networks, or None when no prefix matches."""
        raw = to_raw_address(address)
        owner = (self._v4 if len(raw) == 4 else self._v6).lookup(raw)
        return None if owner == _MISS else owner

    def may_send(self, peer: int, source: str | bytes | IPAddress) -> bool:
        """Whether ``peer`` may send inner packets with this source address: true only
        if the longest matching prefix is one of the peer's own."""
        return peer != LOCAL and self.lookup(source) == peer

    # -- the per-packet path ----------------------------------------------------

    def route_from_peer(self, peer: int, packet: bytes) -> Decision:
        """Decide what to do with an inner packet client ``peer`` sent.

        Returns :data:`LOCAL` (write it to the TUN), another client's vaddr (relay
        it), or a :class:`RouteDrop`: ``MALFORMED``, ``SPOOFED_SOURCE`` (its source is
        not one of ``peer``'s), ``NO_ROUTE``, ``TOO_BIG`` (see :meth:`too_big_reply`)
        or ``HAIRPIN``.
        """
        # Written for speed: plain locals, no helper calls on the host-route path.
        n = len(packet)
        if n < 20:
            return _MALFORMED
        first = packet[0]
        if first == 0x45 or (first >> 4 == 4 and 20 <= (first & 15) << 2 <= n):
            if (packet[2] << 8 | packet[3]) != n:
                return _MALFORMED
            hosts = self._hosts4
            source = packet[12:16]
            destination = packet[16:20]
        elif first >> 4 == 6:
            if n < 40 or (packet[4] << 8 | packet[5]) + 40 != n:
                return _MALFORMED
            hosts = self._hosts6
            source = packet[8:24]
            destination = packet[24:40]
        else:
            return _MALFORMED
        owner = hosts.get(source)
        if owner is None:
            owner = (self._v4 if len(source) == 4 else self._v6).slow(source)
        if owner != peer or peer <= 0:  # the server's addresses have owner LOCAL (0)
            return _SPOOFED
        target = hosts.get(destination)
        if target is None:
            target = (self._v4 if len(source) == 4 else self._v6).slow(destination)
            if target < 0:
                target = self._unrouted
                if target < 0:
                    return target
        if n > self._mtu:
            return _TOO_BIG
        if target == peer:
            return _HAIRPIN
        return target

    def route_from_tun(self, packet: bytes) -> Decision:
        """Decide which client gets a packet read from the server's TUN.

        Returns the client's vaddr or a :class:`RouteDrop`: ``MALFORMED``, ``NO_ROUTE``
        (no client owns the destination) or ``TOO_BIG``. Never :data:`LOCAL`.
        """
        # The header checks repeat route_from_peer's on purpose (the per-packet path);
        # test_vpn_routing's test_random_bytes_never_raise keeps the two equal.
        n = len(packet)
        if n < 20:
            return _MALFORMED
        first = packet[0]
        if first == 0x45 or (first >> 4 == 4 and 20 <= (first & 15) << 2 <= n):
            if (packet[2] << 8 | packet[3]) != n:
                return _MALFORMED
            destination = packet[16:20]
            target = self._hosts4.get(destination)
            if target is None:
                target = self._v4.slow(destination)
        elif first >> 4 == 6:
            if n < 40 or (packet[4] << 8 | packet[5]) + 40 != n:
                return _MALFORMED
            destination = packet[24:40]
            target = self._hosts6.get(destination)
            if target is None:
                target = self._v6.slow(destination)
        else:
            return _MALFORMED
        if target <= 0:
            return _NO_ROUTE
        if n > self._mtu:
            return _TOO_BIG
        return target

    def too_big_reply(self, packet: bytes) -> bytes | None:
        """The ICMP error answering a packet dropped as ``TOO_BIG``: Fragmentation
        Needed (IPv4 with DF) or Packet Too Big (IPv6), from the server's tunnel address
        of that family to the packet's source. None when no reply is due."""
        if self._mtu == _NO_MTU or len(packet) <= self._mtu or not packet:
            return None
        version = packet[0] >> 4
        if version == 4 and self._source_v4 is not None:
            return icmpv4_frag_needed(packet, self._mtu, self._source_v4)
        if version == 6 and self._source_v6 is not None:
            return icmpv6_packet_too_big(packet, self._mtu, self._source_v6)
        return None
