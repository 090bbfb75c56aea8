"""The sans-IO SUDP protocol core: codecs, crypto, epochs and per-peer state machines.

Nothing here imports Trio, opens a socket or reads a clock: callers pass the
monotonic time in, and a :class:`~trio_sudp.protocol.clock.WallClock` supplies the
timestamps SUDP puts on the wire.
"""

from __future__ import annotations

from .address import Address
from .client import ClientSession
from .clock import ManualClock, SystemClock, WallClock
from .constants import ControlFlag, Kind, Version, max_payload
from .crypto import EphemeralKey, PrivateKey, PublicKey
from .errors import (
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
from .events import (
    Connected,
    Event,
    Expired,
    HandshakeFailed,
    HandshakeStarted,
    Rekeyed,
    Roamed,
    SessionLost,
)
from .peers import LocalIdentity, Peer
from .server import NO_PEER, ServerCore, ServerPeerSession
from .session import Session, SessionState, SessionStats
from .settings import SessionSettings

__all__ = [
    "NO_PEER",
    "Address",
    "BadPacket",
    "ClientSession",
    "ConfigError",
    "Connected",
    "ControlFlag",
    "DropReason",
    "EphemeralKey",
    "Event",
    "Expired",
    "HandshakeError",
    "HandshakeFailed",
    "HandshakeStarted",
    "InvalidKey",
    "Kind",
    "LocalIdentity",
    "LocalProtocolError",
    "ManualClock",
    "NotConnected",
    "PayloadTooLarge",
    "Peer",
    "PrivateKey",
    "PublicKey",
    "Rekeyed",
    "Roamed",
    "SUDPError",
    "ServerCore",
    "ServerPeerSession",
    "Session",
    "SessionLost",
    "SessionSettings",
    "SessionState",
    "SessionStats",
    "SystemClock",
    "UnknownPeer",
    "Version",
    "WallClock",
    "max_payload",
]
