"""A bounded queue of writes that would have blocked, drained by a writer task.

Both the UDP task and the TUN task write without blocking: the non-blocking call is
tried first; only when the socket or device is full do items wait here, in order,
until ``wait_writable`` says there is room. A full backlog drops new items (the
caller counts them) rather than blocking the task that produced them.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import trio

__all__ = ["WriteBacklog"]

log = logging.getLogger("trio_sudp")

T = TypeVar("T")


class WriteBacklog(Generic[T]):
    """Items waiting for a writable socket or device, and the task that writes them."""

    def __init__(
        self,
        write: Callable[[T], None],
        wait_writable: Callable[[], Awaitable[None]],
        *,
        limit: int,
        on_written: Callable[[T], None],
        on_error: Callable[[T, OSError], None],
    ) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._write = write
        self._wait_writable = wait_writable
        self._limit = limit
        self._on_written = on_written
        self._on_error = on_error
        self._wakeup = trio.Event()

    def __bool__(self) -> bool:
        return bool(self._items)

    def push(self, item: T) -> bool:
        """Queue ``item``; return ``False`` (dropped) if the backlog is full."""
        if len(self._items) >= self._limit:
            return False
        self._items.append(item)
        self._wakeup.set()
        return True

    async def run(self) -> None:
        """Write queued items as room appears, until the socket/device is closed."""
        items = self._items
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            while items:
                item = items[0]
                try:
                    self._write(item)
                except BlockingIOError:
                    try:
                        await self._wait_writable()
                    except trio.ClosedResourceError:
                        return
                    continue
                except trio.ClosedResourceError:
                    return
                except OSError as exc:
                    self._on_error(item, exc)
                else:
                    self._on_written(item)
                items.popleft()
