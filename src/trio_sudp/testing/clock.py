"""A wall clock that follows Trio's clock, for tests under ``MockClock``/``autojump_clock``."""

from __future__ import annotations

import trio

#: 2026-11-25, an arbitrary but realistic wall time for tests.
DEFAULT_START_US = 1_795_571_950_000_000


class TrioWallClock:
    """Microseconds since the Unix epoch = ``start_us + skew + trio.current_time()``.

    With Trio's ``MockClock`` both SUDP timestamps and timers then move in virtual
    time, so clock-offset, freshness and skew behaviour is deterministic. Give two
    peers clocks with different ``skew`` (seconds) to test clock skew.
    """

    __slots__ = ("_base_us",)

    def __init__(self, start_us: int = DEFAULT_START_US, *, skew: float = 0.0) -> None:
        self._base_us = start_us + round(skew * 1_000_000)

    def now_us(self) -> int:
        return self._base_us + int(trio.current_time() * 1_000_000)
