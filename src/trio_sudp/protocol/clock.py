"""Wall-clock time for SUDP timestamps, injectable so that fake time can drive everything.

The protocol core never reads a clock by itself: timers use the monotonic ``now``
every call receives, and message timestamps use one :class:`WallClock`.
"""

from __future__ import annotations

import time
from typing import Protocol


class WallClock(Protocol):
    """Microseconds since the Unix epoch."""

    def now_us(self) -> int: ...


class SystemClock:
    """The real wall clock."""

    __slots__ = ()

    def now_us(self) -> int:
        return time.time_ns() // 1000


class ManualClock:
    """A wall clock set by hand (tests): ``clock.now_us()`` is ``base_us + offset``."""

    __slots__ = ("us",)

    def __init__(self, us: int) -> None:
        self.us = us

    def now_us(self) -> int:
        return self.us

    def advance(self, seconds: float) -> None:
        self.us += round(seconds * 1_000_000)
