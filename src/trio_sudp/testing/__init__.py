"""Public test helpers: an in-memory datagram network (and an in-memory TUN pair)."""

from __future__ import annotations

from trio_sudp.testing.fakenet import (
    Capture,
    CapturedDatagram,
    FakeNetwork,
    FakeTransport,
    Fate,
    LinkConfig,
    LinkStats,
    TransportStats,
)

__all__ = [
    "Capture",
    "CapturedDatagram",
    "FakeNetwork",
    "FakeTransport",
    "Fate",
    "LinkConfig",
    "LinkStats",
    "TransportStats",
]
