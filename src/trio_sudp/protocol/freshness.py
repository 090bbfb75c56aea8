"""A peer's clock as we see it: its offset from ours and the freshness of its messages (SPEC §4).

The message that proves a new key (the server: the client's EpochAck or Data in the
new epoch; the client: the ServerHandshake answering its attempt) fixes
``offset = local − remote``, refused beyond ``max_clock_skew``; any other
authenticated message is held to the same skew limit without fixing anything, so
that a replayed message cannot set the offset (SPEC §6 "Clock"). Later messages
older than ``freshness`` or further than ``max_future`` in the future, after that
offset, are refused. The per-packet path compares a header time with
:meth:`PeerClock.window` (two integers per batch) and calls :meth:`PeerClock.check`
only for times outside it.

The clock also remembers the newest time of the peer's signed messages, for a while
after it last heard from the peer (also across a server's :meth:`forget`): a
handshake older than that by more than ``freshness`` is a replay of an earlier
session (:meth:`replayed`).
"""

from __future__ import annotations

import math
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
        "_newest",
        "_newest_until",
        "_replay_slack",
        "_retention",
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
        #: The newest header time of the peer's accepted signed messages, and until when
        #: (monotonic) it is remembered: beyond skew + freshness a replay fails anyway.
        self._newest = -1
        self._newest_until = -math.inf
        self._retention = settings.max_clock_skew + settings.freshness
        #: How much older than the newest a handshake may be (a clock stepping back a
        #: little is no replay; more would make the peer's messages stale anyway).
        self._replay_slack = self._fresh_us // unit_us

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

    def check(self, remote_time: int, *, fix: bool = True) -> DropReason | None:
        """Check an authenticated message's header time.

        Without an offset, the time is held to ``max_clock_skew`` and, with ``fix``,
        fixes the offset. Returns ``None`` if the time is acceptable, else
        ``CLOCK_SKEW`` (no offset yet; ``skew_us`` tells by how much), ``STALE`` or
        ``FUTURE``.
        """
        now_us = self._wall_us()
        remote_us = remote_time * self._unit
        offset = self.offset_us
        if offset is None:
            offset = now_us - remote_us
            if abs(offset) > self._max_skew_us:
                self.skew_us = offset
                return DropReason.CLOCK_SKEW
            if fix:
                self.offset_us = offset
            return None
        age = now_us - remote_us - offset
        if age > self._fresh_us:
            return DropReason.STALE
        if age < -self._future_us:
            return DropReason.FUTURE
        return None

    def saw(self, remote_time: int, now: float) -> None:
        """A signed message with header time ``remote_time`` was accepted at ``now``."""
        if remote_time > self._newest or now > self._newest_until:
            self._newest = remote_time
        self._newest_until = now + self._retention

    def replayed(self, remote_time: int, now: float) -> bool:
        """Whether a message stamped ``remote_time`` is older than the peer's newest message
        by more than ``freshness``: a replay of an earlier session."""
        return remote_time < self._newest - self._replay_slack and now <= self._newest_until

    def describe_skew(self) -> str:
        """The latest clock-skew refusal, for a message to the user."""
        limit = self._max_skew_us / 1e6
        return f"peer clock differs from ours by {-self.skew_us / 1e6:+.1f} s (limit ±{limit:g} s)"
