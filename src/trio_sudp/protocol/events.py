"""Events a session reports to its driver (frozen, comparable, cheap to ignore)."""

from __future__ import annotations

from typing import Any

import attrs

from .errors import DropReason

__all__ = [
    "Connected",
    "Event",
    "Expired",
    "HandshakeFailed",
    "HandshakeStarted",
    "PacketDropped",
    "Rekeyed",
    "Roamed",
    "SessionLost",
]


@attrs.frozen
class HandshakeStarted:
    """The client sent a ClientHandshake for ``epoch`` (``reason``: connect, rekey, ...)."""

    epoch: int
    reason: str


@attrs.frozen
class Connected:
    """The first epoch key with this peer is in use."""

    epoch: int
    endpoint: Any


@attrs.frozen
class Rekeyed:
    """A new epoch key replaced the previous one."""

    epoch: int


@attrs.frozen
class HandshakeFailed:
    """A handshake attempt ended without a key; ``reason`` is one human-readable line."""

    epoch: int
    reason: str


@attrs.frozen
class SessionLost:
    """The client believes the server lost its session (restart, expiry) and rekeys."""

    reason: str


@attrs.frozen
class Roamed:
    """The peer's endpoint moved (NAT rebinding, roaming), seen on an authenticated message."""

    old: Any
    new: Any


@attrs.frozen
class Expired:
    """The server forgot an idle peer (epochs, endpoint and clock offset)."""

    idle_for: float


@attrs.frozen
class PacketDropped:
    """A datagram was not accepted, and why."""

    reason: DropReason
    detail: str = ""


Event = (
    HandshakeStarted
    | Connected
    | Rekeyed
    | HandshakeFailed
    | SessionLost
    | Roamed
    | Expired
    | PacketDropped
)
