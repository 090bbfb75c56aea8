"""The read loop the UDP task and the TUN task share: drain, then sleep only when empty.

Per the per-packet budget of DESIGN.md a wakeup reads everything that is ready
(non-blocking reads until ``BlockingIOError``, at most ``limit``), handing each item
on synchronously; a full batch ends with one checkpoint, a short one with
``wait_readable``. ``begin`` and ``end`` bracket every batch in the same synchronous
run, so that what the batch produces can leave together (UDP GSO, TUN GSO writes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

__all__ = ["read_in_batches"]


async def read_in_batches(
    drain: Callable[[float], int],
    wait_readable: Callable[[], Awaitable[None]],
    *,
    limit: int,
    begin: Callable[[], None],
    end: Callable[[], None],
) -> None:
    """Run read batches until the source is closed.

    Each batch calls ``begin()``, then ``drain(now)``, which reads until nothing is
    ready or ``limit`` items were read and returns how many it read, then ``end()``
    (even when ``drain`` raised). Returns on ``trio.ClosedResourceError`` from
    ``drain`` or ``wait_readable``.
    """
    current_time = trio.current_time
    checkpoint = trio.lowlevel.checkpoint
    while True:
        begin()
        try:
            count = drain(current_time())
        except trio.ClosedResourceError:
            return
        finally:
            end()
        try:
            if count >= limit:
                await checkpoint()
            else:
                await wait_readable()
        except trio.ClosedResourceError:
            return
