"""Events a session reports to its driver (frozen, comparable, cheap to ignore).

Events are about the session, never about single datagrams: a refused datagram is
only counted (``SessionStats.drops``), so that a flood costs no object per datagram.
"""

from __future__ import annotations

import attrs

from .address import Address

__all__ = [
    "Connected",
    "Event",
    "Expired",
    "HandshakeFailed",
    "HandshakeStarted",
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
    endpoint: Address | None


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

    old: Address
    new: Address


@attrs.frozen
class Expired:
    """The server forgot an idle peer (epochs, endpoint and clock offset)."""

    idle_for: float


Event = HandshakeStarted | Connected | Rekeyed | HandshakeFailed | SessionLost | Roamed | Expired
