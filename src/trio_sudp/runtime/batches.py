"""Batch sizes, and the read loop the UDP task and the TUN task share.

Per the per-packet budget of DESIGN.md a wakeup reads everything that is ready
(non-blocking reads until ``BlockingIOError``, at most a batch), handing each item on
synchronously; a full batch ends with one checkpoint, a short one with
``wait_readable``. Each batch runs inside its batch boundary (a context manager), so
that what the batch produces can leave together: the datagrams of a batch with UDP
GSO, the packets of a batch as TUN GSO writes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Final

import trio

__all__ = [
    "ITERATOR_BATCH",
    "RECEIVE_MANY_MIN",
    "STRANGERS_REST",
    "TUN_BACKLOG_LIMIT",
    "TUN_READ_BATCH",
    "TUN_WRITE_BATCH",
    "UDP_BACKLOG_LIMIT",
    "UDP_READ_BATCH",
    "Boundary",
    "read_in_batches",
]

#: Datagrams the UDP task handles per wakeup before it yields to other tasks.
UDP_READ_BATCH: Final = 128
#: Seconds the reader of a server's strangers' lane rests after a full batch: a flood
#: from strangers gets at most UDP_READ_BATCH / STRANGERS_REST datagrams a second of
#: the server's time (25,600), and the kernel drops the rest where it queues them.
STRANGERS_REST: Final = 0.005
#: Packets the TUN task reads per wakeup before it yields to other tasks.
TUN_READ_BATCH: Final = 64
#: Payloads an ``async for`` over a client or server takes between two checkpoints.
ITERATOR_BATCH: Final = 64
#: Fewest datagrams of one coalesced receive handed to a session at once: below,
#: one call per datagram is cheaper (``Session.receive_many`` has a fixed cost).
RECEIVE_MANY_MIN: Final = 4
#: Datagrams waiting for a writable socket before new ones are dropped.
UDP_BACKLOG_LIMIT: Final = 2048
#: Writes waiting for a writable TUN device before new ones are dropped.
TUN_BACKLOG_LIMIT: Final = 1024
#: Packets collected in one TUN write batch at most before they are written anyway.
TUN_WRITE_BATCH: Final = 256


class Boundary:
    """A batch boundary: a reusable context manager, ``begin()`` on entry, ``end()`` on exit.

    ``end()`` also runs when the batch raised, so that nothing collected is lost.
    """

    __slots__ = ("_begin", "_end")

    def __init__(self, begin: Callable[[], None], end: Callable[[], None]) -> None:
        self._begin = begin
        self._end = end

    def __enter__(self) -> None:
        self._begin()

    def __exit__(self, *exc_info: object) -> None:
        self._end()


async def read_in_batches(
    drain: Callable[[float], int],
    wait_readable: Callable[[], Awaitable[None]],
    *,
    limit: int,
    boundary: Callable[[], AbstractContextManager[object]],
    rest: float = 0.0,
) -> None:
    """Run read batches until the source is closed.

    Each batch enters ``boundary()``, then calls ``drain(now)``, which reads until
    nothing is ready or ``limit`` items were read and returns how many it read, then
    leaves the boundary (also when ``drain`` raised). After a full batch the loop
    checkpoints, or sleeps ``rest`` seconds if given. Returns on
    ``trio.ClosedResourceError`` from ``drain`` or ``wait_readable``.
    """
    current_time = trio.current_time
    checkpoint = trio.lowlevel.checkpoint
    while True:
        try:
            with boundary():
                count = drain(current_time())
        except trio.ClosedResourceError:
            return
        try:
            if count < limit:
                await wait_readable()
            elif rest:
                await trio.sleep(rest)
            else:
                await checkpoint()
        except trio.ClosedResourceError:
            return
