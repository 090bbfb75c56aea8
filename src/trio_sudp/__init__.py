"""trio-sudp: SUDP secure-UDP tunnels and a VPN on Trio, wire-compatible with Go sudp/tunelo.

The library API::

    async with trio_sudp.open_server("0.0.0.0:7000", local=..., peers=[...]) as server:
        async for vaddr, payload in server:
            await server.send(vaddr, payload)

    async with trio_sudp.open_client("203.0.113.1:7000", local=..., server=...) as client:
        await client.send(b"hello")
        reply = await client.receive()

See the README for a complete, runnable example.
"""

from __future__ import annotations

from .protocol.clock import SystemClock, WallClock
from .protocol.constants import Version, max_payload
from .protocol.crypto import PrivateKey, PublicKey
from .protocol.errors import (
    BadPacket,
    ConfigError,
    DropReason,
    HandshakeError,
    InvalidKey,
    LocalProtocolError,
    NotConnected,
    PayloadTooLarge,
    SUDPError,
    UnknownPeer,
)
from .protocol.peers import LocalIdentity, Peer
from .protocol.session import SessionState
from .protocol.settings import SessionSettings
from .runtime import (
    PeerStatistics,
    SUDPClient,
    SUDPServer,
    open_client,
    open_server,
    serve_client,
    serve_server,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "BadPacket",
    "ConfigError",
    "DropReason",
    "HandshakeError",
    "InvalidKey",
    "LocalIdentity",
    "LocalProtocolError",
    "NotConnected",
    "PayloadTooLarge",
    "Peer",
    "PeerStatistics",
    "PrivateKey",
    "PublicKey",
    "SUDPClient",
    "SUDPError",
    "SUDPServer",
    "SessionSettings",
    "SessionState",
    "SystemClock",
    "UnknownPeer",
    "Version",
    "WallClock",
    "__version__",
    "max_payload",
    "open_client",
    "open_server",
    "serve_client",
    "serve_server",
]
