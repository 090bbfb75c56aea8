"""What the daemons consume: validated, frozen descriptions of a server and a client.

Both configuration formats (trio-sudp's TOML and tunelo's JSON) load into these
classes; nothing here knows about files. This module also owns what makes them
valid: the parsers of single values (addresses, endpoints, virtual addresses;
each raises ``ConfigError`` with a message that does not repeat the field name)
and the checks across fields (unique virtual addresses, non-overlapping tunnel
addresses, MTU limits), which take the name each value has in its file so that a
message points at the line to fix (``peer[3].address`` in TOML,
``mappings["10.0.0.3"]`` in tunelo's JSON). Build these classes through
:func:`trio_sudp.config.load_config`; the classes themselves only check types.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal

import attrs

from ..protocol.budget import DEFAULT_HANDSHAKE_RATE
from ..protocol.constants import MAX_CLIENT_VADDR, SERVER_VADDR, Version
from ..protocol.crypto import PrivateKey, PublicKey
from ..protocol.errors import ConfigError
from ..protocol.peers import LocalIdentity, Peer
from ..protocol.settings import SessionSettings
from ..runtime.udp import parse_host_port
from ..vpn.mtu import tunnel_mtu, validate_tunnel_mtu
from ..vpn.routing import RouteTable
from .schema import Issues, show

__all__ = [
    "DEFAULT_HANDSHAKE_RATE",
    "MASQUERADE_DEFAULT_ROUTE",
    "ClientConfig",
    "ConfigFormat",
    "Hooks",
    "IPAddress",
    "IPInterface",
    "IPNetwork",
    "PeerConfig",
    "PeerFields",
    "ServerConfig",
    "ServerFields",
    "check_client",
    "check_server",
    "parse_address",
    "parse_client_vaddr",
    "parse_control_socket",
    "parse_dns_server",
    "parse_egress_interface",
    "parse_endpoint",
    "parse_handshake_rate",
    "parse_interface",
    "parse_interface_name",
    "parse_listen",
    "parse_metrics",
    "parse_network",
    "parse_prefix",
    "parse_search_domain",
    "parse_shared_key",
    "parse_version",
]

ConfigFormat = Literal["toml", "tunelo"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


#: :attr:`ServerConfig.masquerade` for "the interface of the default route, found when
#: the server starts" (``masquerade = true``). No interface is called this: Linux
#: refuses ``:`` in interface names.
MASQUERADE_DEFAULT_ROUTE: Final = ":default-route"


_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)"
    r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$"
)
_INTERFACE_NAME = re.compile(r"^[A-Za-z0-9_.%-]{1,15}$")
#: What Linux accepts as an interface name (dev_valid_name): no '/', ':' or space.
_KERNEL_INTERFACE_NAME = re.compile(r"^[^/:\s]{1,15}$")
_MAX_SOCKET_PATH = 103 if sys.platform == "darwin" else 107
#: BLAKE2b's key limit: a longer key crashes Go peers.
_MAX_SHARED_KEY = 64

# -- single values -------------------------------------------------------------------


def parse_interface(text: str) -> IPInterface:
    """A tunnel address with its network: ``10.0.0.1/24``, ``fd00::1/64``."""
    try:
        interface = ipaddress.ip_interface(text)
    except ValueError:
        raise ConfigError(
            f"{show(text)} is not an address with a prefix length like 10.0.0.1/24"
        ) from None
    net = interface.network
    if net.num_addresses > 2 and interface.ip in (net.network_address, net.broadcast_address):
        what = "network" if interface.ip == net.network_address else "broadcast"
        raise ConfigError(
            f"{text} is the {what} address of {net}, not a host address in it "
            f"(like {net.network_address + 1}/{net.prefixlen})"
        )
    return interface


def parse_address(text: str) -> IPAddress:
    """One host address: ``10.0.0.2`` (``10.0.0.2/32`` is accepted too)."""
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=True)
            if net.num_addresses != 1:
                raise ValueError
            return net.network_address
        return ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"{show(text)} is not an IP address like 10.0.0.2") from None


def parse_network(text: str) -> IPNetwork:
    """A prefix: ``192.168.7.0/24``; host bits must be zero."""
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(f"{show(text)} is not a prefix like 192.168.7.0/24") from None
    raise ConfigError(f"{text} has host bits set; did you mean {loose}?")


def parse_prefix(text: str) -> IPNetwork:
    """A route: a prefix, or a single address (a host route)."""
    if "/" not in text:
        return ipaddress.ip_network(parse_address(text))
    return parse_network(text)


def parse_listen(text: str) -> tuple[str, int]:
    """``ip:port`` or ``[ipv6]:port`` to listen on; the IP must be numeric."""
    try:
        host, port = parse_host_port(text)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not host:
        raise ConfigError(f"{show(text)} has no address; use 0.0.0.0:{port} for all of them")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{host!r} is not a numeric IP address (to listen on)") from None
    if port == 0:
        raise ConfigError("port 0 is not a port clients can reach")
    return host, port


def parse_endpoint(text: str) -> str:
    """``host:port`` or ``[ipv6]:port`` of a server; the host may be a DNS name."""
    try:
        host, port = parse_host_port(text)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if port == 0:
        raise ConfigError("port 0 is not a port a server listens on")
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        if not _HOSTNAME.match(host):
            raise ConfigError(f"{host!r} is neither an IP address nor a host name") from None
    return text


def parse_client_vaddr(value: int) -> int:
    if not 1 <= value <= MAX_CLIENT_VADDR:
        raise ConfigError(
            f"a client's virtual address is 1..{MAX_CLIENT_VADDR} (0 is the server), not {value}"
        )
    return value


def parse_version(value: int) -> Version:
    if value not in (2, 3):
        raise ConfigError(f"must be 2 or 3, not {value}")
    return Version(value)


def parse_interface_name(name: str) -> str:
    if not _INTERFACE_NAME.match(name) or name in (".", ".."):
        raise ConfigError(
            f"{name!r} is not an interface name (1-15 letters, digits, '_', '-', '.', '%')"
        )
    return name


def parse_control_socket(path: Path) -> Path:
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
        raise ConfigError(
            f"{path} is too long for a Unix socket (at most {_MAX_SOCKET_PATH} bytes)"
        )
    return path


def parse_shared_key(text: str) -> bytes | None:
    """A v3 shared key as bytes (``None``: unkeyed)."""
    key = text.encode()
    if len(key) > _MAX_SHARED_KEY:
        raise ConfigError(
            f"is {len(key)} bytes; at most 64 (BLAKE2b's limit: a longer key crashes Go peers)"
        )
    return key or None


def parse_egress_interface(name: str) -> str:
    """An existing interface of the host (to masquerade behind), by its Linux name."""
    if not _KERNEL_INTERFACE_NAME.match(name) or len(name.encode()) > 15 or name in (".", ".."):
        raise ConfigError(f"{name!r} is not an interface name (1-15 bytes, no '/', ':' or spaces)")
    return name


def parse_dns_server(text: str) -> IPAddress:
    """A resolver's address: ``10.0.0.1``, ``fd00::1``."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"{show(text)} is not an IP address like 10.0.0.1") from None


def parse_search_domain(text: str) -> str:
    """A DNS search domain: ``corp.example``."""
    name = text.removesuffix(".")
    if not name or not name.isascii() or not _HOSTNAME.match(name):
        hint = " (write an international name in its xn-- form)" if not text.isascii() else ""
        raise ConfigError(f"{show(text)} is not a domain name like corp.example{hint}")
    return text


def parse_metrics(text: str) -> tuple[str, int]:
    """``ip:port`` or ``[ipv6]:port`` to serve metrics on (TCP); the IP must be numeric."""
    try:
        host, port = parse_host_port(text)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not host:
        raise ConfigError(f"{show(text)} has no address; like 127.0.0.1:{port}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{host!r} is not a numeric IP address (to serve metrics on)") from None
    if port == 0:
        raise ConfigError("port 0 is not a port a scraper can reach")
    return host, port


def parse_handshake_rate(value: float | None) -> float | None:
    """ClientHandshakes per second per source host; ``None`` (or 0): no limit."""
    if value is not None and value < 0:
        raise ConfigError(f"must be 0 or more per second, not {value}")
    return value or None


# -- the configurations --------------------------------------------------------------


def _private_key_eq(key: PrivateKey) -> PublicKey:
    # Two configs are equal when their private keys are the same key.
    return key.public_key


def _host_network(address: IPAddress) -> IPNetwork:
    return ipaddress.ip_network(address)


@attrs.frozen(kw_only=True)
class PeerConfig:
    """One client as the server knows it.

    ``addresses`` are the client's own tunnel addresses (tunelo's ``mappings``:
    tunnel IP → virtual address); ``routes`` are further prefixes behind the client
    (a LAN it routes for). The client may only send inner packets from these.
    """

    peer: Peer
    name: str | None = None
    addresses: tuple[IPAddress, ...] = ()
    routes: tuple[IPNetwork, ...] = ()

    @property
    def vaddr(self) -> int:
        return self.peer.vaddr

    @property
    def version(self) -> Version:
        return self.peer.version

    @property
    def public_key(self) -> PublicKey:
        return self.peer.public_key

    @property
    def prefixes(self) -> tuple[IPNetwork, ...]:
        """The addresses as host prefixes (/32, /128) followed by the routes."""
        return tuple(_host_network(a) for a in self.addresses) + self.routes

    @property
    def label(self) -> str:
        """``"laptop (vaddr 2)"`` or ``"vaddr 2"``, for messages."""
        return f"{self.name} (vaddr {self.vaddr})" if self.name else f"vaddr {self.vaddr}"


def _commands(value: Sequence[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class Hooks:
    """Shell commands run around a daemon's tunnel, like wg-quick's ``PreUp`` and
    friends: before and after the interface comes up, before and after it goes.
    ``%i`` in a command stands for the interface name. Each phase's commands run in
    order (:func:`trio_sudp.daemon.hooks.run_hooks` runs them); any sequence of
    text is taken and kept as a tuple."""

    pre_up: tuple[str, ...] = attrs.field(default=(), converter=_commands)
    post_up: tuple[str, ...] = attrs.field(default=(), converter=_commands)
    pre_down: tuple[str, ...] = attrs.field(default=(), converter=_commands)
    post_down: tuple[str, ...] = attrs.field(default=(), converter=_commands)

    @property
    def empty(self) -> bool:
        """Whether no phase has a command."""
        return not (self.pre_up or self.post_up or self.pre_down or self.post_down)


def _masquerade_forwards(instance: ServerConfig, _attr: object, value: str | None) -> None:
    if value is not None and not instance.forward:
        raise ConfigError("masquerade needs forward: a server that masquerades forwards")


@attrs.frozen(kw_only=True)
class ServerConfig:
    """A VPN server: where it listens, who it is, its tunnel addresses and its clients.

    ``addresses`` are the server's own tunnel addresses with their networks
    (``10.0.0.1/24``, optionally an IPv6 one): the networks are the tunnel networks.
    ``mtu`` ``None`` means the default for the peers' versions (see
    :attr:`tunnel_mtu`). ``endpoint`` is the ``host:port`` clients are told to
    connect to (tunelo's ``public_ip`` and ``listen_port``), if known.

    With ``forward`` the server routes between the tunnel and the host's other
    interfaces; ``masquerade`` (an interface name, or
    :data:`MASQUERADE_DEFAULT_ROUTE`) also translates what clients send out of
    that interface to its address, and implies ``forward``. ``metrics`` is the
    ``(ip, port)`` to serve Prometheus metrics on.
    """

    source: Path | None = None
    format: ConfigFormat = "toml"
    listen: tuple[str, int]
    private_key: PrivateKey = attrs.field(eq=_private_key_eq, repr=False)
    addresses: tuple[IPInterface, ...]
    peers: tuple[PeerConfig, ...] = ()
    mtu: int | None = None
    interface: str | None = None
    control_socket: Path | None = None
    endpoint: str | None = None
    #: Version of peers added without one (``config add-client``).
    default_version: Version = Version.V3
    settings: SessionSettings = attrs.field(factory=SessionSettings)
    #: ClientHandshakes per second per source host; ``None``: no limit.
    handshake_rate: float | None = DEFAULT_HANDSHAKE_RATE
    forward: bool = False
    masquerade: str | None = attrs.field(default=None, validator=_masquerade_forwards)
    hooks: Hooks = Hooks()
    metrics: tuple[str, int] | None = None

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key

    @property
    def identity(self) -> LocalIdentity:
        """The server's identity: virtual address 0 and its private key."""
        return LocalIdentity(SERVER_VADDR, self.private_key)

    @property
    def peer_list(self) -> list[Peer]:
        """The clients as :class:`~trio_sudp.Peer` objects, for :func:`trio_sudp.open_server`."""
        return [p.peer for p in self.peers]

    @property
    def networks(self) -> tuple[IPNetwork, ...]:
        """The tunnel networks (one per configured address)."""
        return tuple(a.network for a in self.addresses)

    @property
    def versions(self) -> frozenset[Version]:
        """The versions in use: the peers' (or the default version when there are none)."""
        return frozenset(p.version for p in self.peers) or frozenset({self.default_version})

    @property
    def carries_ipv6(self) -> bool:
        return any(a.version == 6 for a in self.addresses)

    @property
    def tunnel_mtu(self) -> int:
        """``mtu``, or the smallest default of the versions in use (1400 for v3, 1420 v2)."""
        return tunnel_mtu(self.mtu, self.versions)

    def peer(self, vaddr: int) -> PeerConfig | None:
        """The client with this virtual address, if configured."""
        for p in self.peers:
            if p.vaddr == vaddr:
                return p
        return None

    def route_table(self, *, gateway: bool = True) -> RouteTable:
        """The server's inner routing table: its addresses, each client's addresses and
        routes, checked against the tunnel MTU."""
        return RouteTable.from_config(
            self.addresses,
            {p.vaddr: p.prefixes for p in self.peers},
            mtu=self.tunnel_mtu,
            gateway=gateway,
        )


@attrs.frozen(kw_only=True)
class ClientConfig:
    """A VPN client: who it is, its tunnel addresses, and the one server it talks to.

    ``endpoint`` is the server's ``host:port`` as written (a name is resolved by
    the daemon). ``server`` is the server as a :class:`~trio_sudp.Peer` (virtual
    address 0, public key, version, v3 shared key). ``server_address`` is the
    server's tunnel address (tunelo's ``utun_peer``), if given. With
    ``full_tunnel`` all traffic goes through the tunnel (tunelo's ``-peergw``);
    ``routes`` are extra prefixes sent into it. ``dns`` and ``dns_search`` are the
    resolvers and search domains to use for the tunnel interface; ``hooks`` and
    ``metrics`` as for :class:`ServerConfig`.
    """

    source: Path | None = None
    format: ConfigFormat = "toml"
    private_key: PrivateKey = attrs.field(eq=_private_key_eq, repr=False)
    vaddr: int
    addresses: tuple[IPInterface, ...]
    endpoint: str
    server: Peer
    server_address: IPAddress | None = None
    mtu: int | None = None
    interface: str | None = None
    control_socket: Path | None = None
    full_tunnel: bool = False
    routes: tuple[IPNetwork, ...] = ()
    settings: SessionSettings = attrs.field(factory=SessionSettings)
    dns: tuple[IPAddress, ...] = ()
    dns_search: tuple[str, ...] = ()
    hooks: Hooks = Hooks()
    metrics: tuple[str, int] | None = None

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key

    @property
    def identity(self) -> LocalIdentity:
        """Our identity: our virtual address and private key."""
        return LocalIdentity(self.vaddr, self.private_key)

    @property
    def version(self) -> Version:
        return self.server.version

    @property
    def carries_ipv6(self) -> bool:
        return any(a.version == 6 for a in self.addresses)

    @property
    def tunnel_mtu(self) -> int:
        """``mtu``, or the default of the server's version (1400 for v3, 1420 for v2)."""
        return tunnel_mtu(self.mtu, (self.server.version,))

    def reaches_through_tunnel(self, address: IPAddress) -> bool:
        """Whether packets to ``address`` go into the tunnel (full tunnel aside)."""
        return any(address in a.network for a in self.addresses) or any(
            address in r for r in self.routes
        )

    @property
    def endpoint_host_port(self) -> tuple[str, int]:
        """``endpoint`` split into ``(host, port)`` (host not resolved)."""
        return parse_host_port(self.endpoint)


# -- checks across fields -----------------------------------------------------------


@attrs.frozen
class PeerFields:
    """Where one peer's values are written in its file."""

    #: The peer itself: ``"peer[2]"``, ``"sudp.peers[0]"``.
    base: str
    vaddr: str
    #: One field name per entry of ``PeerConfig.addresses``.
    addresses: tuple[str, ...]
    #: One field name per entry of ``PeerConfig.routes``.
    routes: tuple[str, ...]
    public_key: str
    shared_key: str


@attrs.frozen
class ServerFields:
    """Where the server's own values are written."""

    #: One field name per entry of ``ServerConfig.addresses``.
    addresses: tuple[str, ...]
    mtu: str


def _describe(base: str, peer: PeerConfig) -> str:
    return f"{base} ({peer.name})" if peer.name else base


def check_mtu(
    issues: Issues, field: str, mtu: int | None, versions: frozenset[Version], ipv6: bool
) -> None:
    if mtu is None:
        return
    for version in sorted(versions):
        try:
            validate_tunnel_mtu(mtu, version, ipv6=ipv6)
        except ConfigError as exc:
            issues.error(field, str(exc))
            return


@attrs.frozen
class _Claim:
    net: IPNetwork
    #: -1 for the server's own address, else the index of the peer.
    owner: int
    field: str
    who: str

    @property
    def start(self) -> int:
        return int(self.net.network_address)

    @property
    def end(self) -> int:
        return int(self.net.broadcast_address)


def _overlaps(issues: Issues, claims: list[_Claim]) -> None:
    """Report prefixes of different owners that overlap (prefixes nest or are apart)."""
    for version in (4, 6):
        family = sorted(
            (c for c in claims if c.net.version == version),
            key=lambda c: (c.start, -c.end, c.owner),
        )
        cover: _Claim | None = None
        for claim in family:
            if cover is not None and claim.start <= cover.end and claim.owner != cover.owner:
                # Report it at whichever of the two comes later in the file.
                later, earlier = (claim, cover) if claim.owner > cover.owner else (cover, claim)
                verb = "is the same as" if later.net == earlier.net else "overlaps"
                issues.error(later.field, f"{later.net} {verb} {earlier.net} of {earlier.who}")
            if cover is None or claim.end > cover.end:
                cover = claim


def check_server(
    config: ServerConfig, issues: Issues, server: ServerFields, peers: Sequence[PeerFields]
) -> None:
    """Every check of a server configuration that involves more than one field."""
    # The server's own networks must not overlap each other.
    nets: list[_Claim] = []
    for index, (iface, field) in enumerate(zip(config.addresses, server.addresses, strict=True)):
        nets.append(_Claim(iface.network, index, field, f"the server's address {iface}"))
    _overlaps(issues, nets)

    check_mtu(issues, server.mtu, config.mtu, config.versions, config.carries_ipv6)

    seen_vaddr: dict[int, str] = {}
    seen_name: dict[str, str] = {}
    seen_key: dict[bytes, str] = {}
    claims: list[_Claim] = [
        _Claim(ipaddress.ip_network(iface.ip), -1, field, "the server's own address")
        for iface, field in zip(config.addresses, server.addresses, strict=True)
    ]
    for index, (peer, where) in enumerate(zip(config.peers, peers, strict=True)):
        who = _describe(where.base, peer)
        other = seen_vaddr.setdefault(peer.vaddr, who)
        if other != who:
            issues.error(where.vaddr, f"virtual address {peer.vaddr} is already used by {other}")
        if peer.name is not None:
            other = seen_name.setdefault(peer.name, who)
            if other != who:
                issues.error(f"{where.base}.name", f"name {peer.name!r} is already used by {other}")
        point = peer.public_key.point
        other = seen_key.setdefault(point, who)
        if other != who:
            issues.warn(where.public_key, f"same public key as {other}")
        if peer.public_key == config.public_key:
            issues.warn(where.public_key, "is the server's own public key")
        if peer.version == Version.V3 and not peer.peer.shared_key:
            issues.warn(where.shared_key, "no shared key: v3 header tags are unkeyed BLAKE2b")
        if not peer.addresses and not peer.routes:
            issues.warn(where.base, "has no tunnel address: it cannot send any packet")
        for address, field in zip(peer.addresses, where.addresses, strict=True):
            claims.append(_Claim(ipaddress.ip_network(address), index, field, who))
            inside = [i for i in config.addresses if address in i.network]
            for iface in inside:
                net = iface.network
                edges = (net.network_address, net.broadcast_address)
                if net.num_addresses > 2 and address in edges:
                    kind = "network" if address == net.network_address else "broadcast"
                    issues.error(field, f"{address} is the {kind} address of {net}")
            if not inside:
                nets_text = ", ".join(str(n) for n in config.networks)
                issues.warn(field, f"{address} is outside the tunnel network ({nets_text})")
        for net, field in zip(peer.routes, where.routes, strict=True):
            claims.append(_Claim(net, index, field, who))
    _overlaps(issues, claims)
    if not config.peers:
        issues.warn(None, "no peers: no client can connect yet (see: trio-sudp config add-client)")


def check_client(
    config: ClientConfig,
    issues: Issues,
    *,
    mtu: str,
    addresses: Sequence[str],
    server_address: str,
    shared_key: str,
    dns: Sequence[str] = (),
) -> None:
    """Every check of a client configuration that involves more than one field."""
    check_mtu(issues, mtu, config.mtu, frozenset({config.version}), config.carries_ipv6)
    nets: list[_Claim] = [
        _Claim(iface.network, index, field, f"address {iface}")
        for index, (iface, field) in enumerate(zip(config.addresses, addresses, strict=True))
    ]
    _overlaps(issues, nets)
    if config.server_address is not None:
        ours = [a for a in config.addresses if a.ip == config.server_address]
        if ours:
            issues.error(server_address, f"{config.server_address} is our own address")
        elif not config.reaches_through_tunnel(config.server_address):
            issues.warn(
                server_address,
                f"{config.server_address} is outside our tunnel network "
                f"({', '.join(str(a.network) for a in config.addresses)})",
            )
    if config.version == Version.V3 and not config.server.shared_key:
        issues.warn(shared_key, "no shared key: v3 header tags are unkeyed BLAKE2b")
    for address, field in zip(config.dns, dns, strict=True):
        if not config.full_tunnel and not config.reaches_through_tunnel(address):
            issues.warn(
                field,
                f"{address} is not reached through the tunnel (not in the tunnel network "
                "or the routes, and no full_tunnel): queries for it go around the VPN",
            )
