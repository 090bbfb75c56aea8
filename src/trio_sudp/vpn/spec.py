"""What the VPN needs from a configuration (the config package's models provide it).

The tunnel MTU and the server's route table are the configuration's to compute (with
:func:`~trio_sudp.vpn.mtu.tunnel_mtu` and :class:`~trio_sudp.vpn.routing.RouteTable`),
so that ``check``, ``show`` and ``serve`` all ask the same place.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Protocol

from ..protocol.crypto import PrivateKey
from ..protocol.peers import Peer
from ..protocol.settings import SessionSettings
from .routing import RouteTable

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ClientEntry(Protocol):
    """One client as the server knows it."""

    @property
    def name(self) -> str | None: ...
    @property
    def peer(self) -> Peer: ...
    @property
    def prefixes(self) -> Sequence[IPNetwork]:
        """The client's own addresses (host prefixes) and the routes behind it."""
        ...


class ServerSpec(Protocol):
    """A VPN server: where it listens, who it is, its tunnel network and clients."""

    @property
    def listen(self) -> tuple[str, int]: ...
    @property
    def private_key(self) -> PrivateKey: ...
    @property
    def addresses(self) -> Sequence[IPInterface]: ...
    @property
    def tunnel_mtu(self) -> int: ...
    @property
    def interface(self) -> str | None: ...
    @property
    def peers(self) -> Sequence[ClientEntry]: ...
    @property
    def settings(self) -> SessionSettings: ...
    @property
    def handshake_rate(self) -> float | None: ...
    def route_table(self) -> RouteTable:
        """The server's inner routes: its addresses, each client's prefixes, the MTU."""
        ...


class ClientSpec(Protocol):
    """A VPN client: its identity, its tunnel addresses, and its server."""

    @property
    def private_key(self) -> PrivateKey: ...
    @property
    def vaddr(self) -> int: ...
    @property
    def addresses(self) -> Sequence[IPInterface]: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def server(self) -> Peer: ...
    @property
    def server_address(self) -> IPAddress | None: ...
    @property
    def tunnel_mtu(self) -> int: ...
    @property
    def interface(self) -> str | None: ...
    @property
    def full_tunnel(self) -> bool: ...
    @property
    def routes(self) -> Sequence[IPNetwork]: ...
    @property
    def settings(self) -> SessionSettings: ...
