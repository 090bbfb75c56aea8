"""Checks across fields, shared by both formats: unique virtual addresses, tunnel
addresses that do not overlap, MTU limits, keys that make sense together.

The checks take the loaded model plus the name each value has in its file, so
that a message points at the line to fix (``peer[3].address`` in TOML,
``mappings["10.0.0.3"]`` in tunelo's JSON) and names the other peer involved.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import attrs

from ..protocol.constants import Version
from ..protocol.errors import ConfigError
from ..vpn.mtu import validate_tunnel_mtu
from .errors import Issues
from .model import ClientConfig, IPNetwork, PeerConfig, ServerConfig

__all__ = ["PeerFields", "ServerFields", "check_client", "check_mtu", "check_server"]


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
        elif not any(config.server_address in a.network for a in config.addresses) and not any(
            config.server_address in r for r in config.routes
        ):
            issues.warn(
                server_address,
                f"{config.server_address} is outside our tunnel network "
                f"({', '.join(str(a.network) for a in config.addresses)})",
            )
    if config.version == Version.V3 and not config.server.shared_key:
        issues.warn(shared_key, "no shared key: v3 header tags are unkeyed BLAKE2b")
