"""A bounded queue of writes that would have blocked, drained by a writer task.

The UDP task and the TUN task both write without blocking: the non-blocking call is
tried first; only when the socket or device is full do items wait here, in order,
until ``wait_writable`` says there is room. A full backlog refuses new items (the
caller counts them as dropped) rather than blocking the task that produced them.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Generic, TypeVar

import trio

__all__ = ["WriteBacklog"]

T = TypeVar("T")


class WriteBacklog(Generic[T]):
    """Items waiting for a writable socket or device, and the task that writes them.

    ``write_some(items)`` writes a prefix of ``items`` without blocking and returns
    how many it dealt with (written, or lost to an error it counted): fewer than given
    means the socket or device is full. At most ``chunk`` items are offered at once.
    """

    def __init__(
        self,
        write_some: Callable[[list[T]], int],
        wait_writable: Callable[[], Awaitable[None]],
        *,
        limit: int,
        chunk: int = 64,
    ) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._write_some = write_some
        self._wait_writable = wait_writable
        self._limit = limit
        self._chunk = chunk
        self._wakeup = trio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        """The waiting items, oldest first."""
        return iter(self._items)

    def push(self, item: T) -> bool:
        """Queue ``item``; ``False`` (dropped) if the backlog is full."""
        if len(self._items) >= self._limit:
            return False
        self._items.append(item)
        self._wakeup.set()
        return True

    def push_all(self, items: Iterable[T]) -> int:
        """Queue ``items`` in order; return how many did not fit (dropped)."""
        dropped = 0
        for item in items:
            if not self.push(item):
                dropped += 1
        return dropped

    async def run(self) -> None:
        """Write queued items as room appears, until the socket or device is closed."""
        items = self._items
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            while items:
                chunk = list(itertools.islice(items, self._chunk))
                try:
                    done = self._write_some(chunk)
                except trio.ClosedResourceError:
                    return
                for _ in range(done):
                    items.popleft()
                if done < len(chunk):
                    try:
                        await self._wait_writable()
                    except trio.ClosedResourceError:
                        return
