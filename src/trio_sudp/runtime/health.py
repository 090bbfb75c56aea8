"""What a server or client looks at once a second, beside its packet paths.

- The server's socket: when the kernel's drop counter for it rises (its queue
  overflowed, or the prefilter refused garbage), the protocol core hears of it
  (:class:`~trio_sudp.protocol.liveness.LossSignal`): idle expiry then waits, since
  a client's keepalives may have been among the losses.
- With debug logging on, the drops since the last look, summed by reason, in one
  line: a flood costs one log line a second, not one per datagram.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Final

import trio

from ..protocol.liveness import LossSignal

__all__ = ["DROP_REPORT_INTERVAL", "DropCounts", "watch"]

log = logging.getLogger("trio_sudp")

#: Seconds between two looks.
DROP_REPORT_INTERVAL: Final = 1.0

#: Where the drops are: ``(reason, count)`` pairs, counts growing, reasons repeating.
DropCounts = Callable[[], Iterable[tuple[str, int]]]


def _totals(drops: DropCounts) -> Counter[str]:
    totals: Counter[str] = Counter()
    for reason, count in drops():
        totals[reason] += count
    return totals


async def watch(
    drops: DropCounts,
    *,
    kernel_drops: Callable[[], int | None] | None = None,
    loss: LossSignal | None = None,
    interval: float = DROP_REPORT_INTERVAL,
) -> None:
    """Look every ``interval`` seconds: report socket losses to ``loss``, and (at debug
    level) log the drops since the last look. Runs until cancelled."""
    seen = _totals(drops) if log.isEnabledFor(logging.DEBUG) else None
    kernel_seen = kernel_drops() if kernel_drops is not None else None
    while True:
        await trio.sleep(interval)
        if kernel_drops is not None and loss is not None:
            try:
                count = kernel_drops()
            except trio.ClosedResourceError:
                return
            if count is not None and kernel_seen is not None and count != kernel_seen:
                loss.note(trio.current_time())
            kernel_seen = count
        if log.isEnabledFor(logging.DEBUG):
            now = _totals(drops)
            if seen is not None:
                new = now - seen
                if new:
                    parts = ", ".join(f"{reason} {n}" for reason, n in sorted(new.items()))
                    log.debug("dropped in the last %g s: %s", interval, parts)
            seen = now
        else:
            seen = None
