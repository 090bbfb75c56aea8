"""Public test helpers: an in-memory datagram network, an in-memory TUN pair, a Trio wall clock."""

from __future__ import annotations

from trio_sudp.testing.clock import TrioWallClock
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
from trio_sudp.testing.memtun import MemoryTun, memory_tun_pair
from trio_sudp.testing.netbackend import MemoryNetBackend

__all__ = [
    "Capture",
    "CapturedDatagram",
    "FakeNetwork",
    "FakeTransport",
    "Fate",
    "LinkConfig",
    "LinkStats",
    "MemoryNetBackend",
    "MemoryTun",
    "TransportStats",
    "TrioWallClock",
    "memory_tun_pair",
]
