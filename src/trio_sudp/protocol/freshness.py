"""A peer's clock as we see it: its offset from ours and the freshness of its messages (SPEC §4).

The first authenticated message of a peer fixes ``offset = local − remote`` (refused
beyond ``max_clock_skew``); later messages older than ``freshness`` or further than
``max_future`` in the future, after that offset, are refused. The per-packet path
compares a header time with :meth:`PeerClock.window` (two integers per batch) and
calls :meth:`PeerClock.check` only for times outside it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from .errors import DropReason
from .settings import SessionSettings

__all__ = ["PeerClock"]

#: The window of a clock without an offset: no time passes the fast check.
_CLOSED: Final = (1, 0)


class PeerClock:
    """The offset of one peer's clock and the time checks of its messages."""

    __slots__ = (
        "_fresh_us",
        "_future_us",
        "_max_skew_us",
        "_unit",
        "_wall_us",
        "offset_us",
        "skew_us",
    )

    def __init__(
        self, settings: SessionSettings, *, unit_us: int, wall_us: Callable[[], int]
    ) -> None:
        #: local wall clock minus the peer's, fixed by its first authenticated message.
        self.offset_us: int | None = None
        #: The offset of the latest message refused for clock skew (for messages).
        self.skew_us = 0
        self._unit = unit_us
        self._wall_us = wall_us
        self._max_skew_us = round(settings.max_clock_skew * 1e6)
        self._fresh_us = round(settings.freshness * 1e6)
        self._future_us = round(settings.max_future * 1e6)

    def window(self, wall_us: int) -> tuple[int, int]:
        """``(low, high)``: the header times that :meth:`check` accepts at ``wall_us``.

        ``(1, 0)`` (nothing) while no offset is fixed: the first message goes to
        :meth:`check`, which fixes it.
        """
        offset = self.offset_us
        if offset is None:
            return _CLOSED
        unit = self._unit
        return -((offset + self._fresh_us - wall_us) // unit), (
            wall_us - offset + self._future_us
        ) // unit

    def check(self, remote_time: int) -> DropReason | None:
        """Check an authenticated message's header time; fix the offset if none is set.

        Returns ``None`` if the time is acceptable, else ``CLOCK_SKEW`` (the first
        message; the offset stays unset and ``skew_us`` tells by how much), ``STALE``
        or ``FUTURE``.
        """
        now_us = self._wall_us()
        remote_us = remote_time * self._unit
        offset = self.offset_us
        if offset is None:
            offset = now_us - remote_us
            if abs(offset) > self._max_skew_us:
                self.skew_us = offset
                return DropReason.CLOCK_SKEW
            self.offset_us = offset
            return None
        age = now_us - remote_us - offset
        if age > self._fresh_us:
            return DropReason.STALE
        if age < -self._future_us:
            return DropReason.FUTURE
        return None

    def describe_skew(self) -> str:
        """The latest clock-skew refusal, for a message to the user."""
        limit = self._max_skew_us / 1e6
        return f"peer clock differs from ours by {-self.skew_us / 1e6:+.1f} s (limit ±{limit:g} s)"
