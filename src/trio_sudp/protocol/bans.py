"""Which source hosts a server refuses in the kernel for a while: those that flood it.

A host that is no client's endpoint may have ``handshake_rate`` signed datagrams a
second looked at (``VerifyBudget.admit``); the rest are refused at the door, which
is cheap but not free (a few microseconds of Python each). A host refused more than
:data:`FLOOD_REFUSALS` times within one look (:meth:`Bans.update`, once a second) is
banned: the runtime has the kernel drop its datagrams on the strangers' lane before
they are queued (``runtime/lanes.py``), for :data:`BAN_SECONDS`, twice as long each
time it is banned again soon after, up to :data:`MAX_BAN_SECONDS`.

Established clients are never affected: their datagrams arrive on the known lane,
which has no ban list, even when they share the flooding host's address (a NAT).
"""

from __future__ import annotations

from typing import Final

__all__ = ["BAN_SECONDS", "FLOOD_REFUSALS", "MAX_BANNED", "MAX_BAN_SECONDS", "Bans"]

#: Refusals at the door within one look that make a host a flooder: ten times what
#: the door lets through. Low, because the strangers' reader rests between full
#: batches (``runtime/batches.py``): a host among many flooding ones is read, and
#: refused, only a share of what it sends.
FLOOD_REFUSALS: Final = 200
#: Seconds of a first ban; each ban within :data:`MAX_BAN_SECONDS` of the last doubles.
BAN_SECONDS: Final = 10.0
MAX_BAN_SECONDS: Final = 320.0
#: Hosts banned at once at most (each costs the kernel a few instructions per datagram).
MAX_BANNED: Final = 256
#: Hosts whose refusals are counted between two looks at most (bounded memory).
_MAX_COUNTED: Final = 4096


class Bans:
    """Counts the door's refusals per host and turns flooders into timed bans."""

    __slots__ = ("_counts", "_last_ban", "_strikes", "_until", "threshold")

    def __init__(self, threshold: int = FLOOD_REFUSALS) -> None:
        self.threshold = threshold
        self._counts: dict[str, int] = {}
        #: Banned host: until when.
        self._until: dict[str, float] = {}
        #: Host: how long its latest ban was, and when it began.
        self._strikes: dict[str, tuple[float, float]] = {}

    def refused(self, host: str) -> None:
        """The door refused a signed datagram from ``host`` (its budget ran dry)."""
        counts = self._counts
        count = counts.get(host)
        if count is not None:
            counts[host] = count + 1
        elif len(counts) < _MAX_COUNTED:
            counts[host] = 1

    @property
    def banned(self) -> frozenset[str]:
        """The hosts banned now."""
        return frozenset(self._until)

    def update(self, now: float) -> bool:
        """Ban the flooders since the last call, lift expired bans; whether the set changed."""
        changed = False
        for host in [h for h, until in self._until.items() if until <= now]:
            del self._until[host]
            changed = True
        flooders = sorted(
            (h for h, n in self._counts.items() if n >= self.threshold and h not in self._until),
            key=lambda h: -self._counts[h],
        )
        self._counts = {}
        for host in flooders[: MAX_BANNED - len(self._until)]:
            last = self._strikes.get(host)
            seconds = BAN_SECONDS
            if last is not None and now - last[1] <= last[0] + MAX_BAN_SECONDS:
                seconds = min(2 * last[0], MAX_BAN_SECONDS)
            self._strikes[host] = (seconds, now)
            self._until[host] = now + seconds
            changed = True
        if len(self._strikes) > _MAX_COUNTED:
            self._strikes = {
                h: s for h, s in self._strikes.items() if now - s[1] <= s[0] + MAX_BAN_SECONDS
            }
        return changed
