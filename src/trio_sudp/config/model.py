"""What the daemons consume: validated, frozen descriptions of a server and a client.

Both configuration formats (trio-sudp's TOML and tunelo's JSON) load into these
classes; nothing here knows about files. Build them through
:func:`trio_sudp.config.load_config`, which validates every field and the
relations between them (unique virtual addresses, non-overlapping tunnel
addresses, MTU limits); the classes themselves only check types.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

import attrs

from ..protocol.constants import SERVER_VADDR, Version
from ..protocol.crypto import PrivateKey, PublicKey
from ..protocol.peers import LocalIdentity, Peer
from ..protocol.settings import SessionSettings
from ..runtime.udp import parse_host_port
from ..vpn.mtu import tunnel_mtu
from ..vpn.routing import RouteTable

__all__ = [
    "DEFAULT_HANDSHAKE_RATE",
    "ClientConfig",
    "ConfigFormat",
    "IPAddress",
    "IPInterface",
    "IPNetwork",
    "PeerConfig",
    "ServerConfig",
]

ConfigFormat = Literal["toml", "tunelo"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: ClientHandshakes accepted per second per source host (as :func:`trio_sudp.open_server`).
DEFAULT_HANDSHAKE_RATE = 20.0


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


@attrs.frozen(kw_only=True)
class ServerConfig:
    """A VPN server: where it listens, who it is, its tunnel addresses and its clients.

    ``addresses`` are the server's own tunnel addresses with their networks
    (``10.0.0.1/24``, optionally an IPv6 one): the networks are the tunnel networks.
    ``mtu`` ``None`` means the default for the peers' versions (see
    :attr:`tunnel_mtu`). ``endpoint`` is the ``host:port`` clients are told to
    connect to (tunelo's ``public_ip`` and ``listen_port``), if known.
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
    ``routes`` are extra prefixes sent into it.
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

    @property
    def endpoint_host_port(self) -> tuple[str, int]:
        """``endpoint`` split into ``(host, port)`` (host not resolved)."""
        return parse_host_port(self.endpoint)
