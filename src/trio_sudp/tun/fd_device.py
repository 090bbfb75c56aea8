"""What the Linux TUN and the macOS utun devices share: a non-blocking fd that Trio waits on."""

from __future__ import annotations

import abc
import contextlib
from types import TracebackType
from typing import ClassVar, Self

import trio

__all__ = ["FdDevice"]


class FdDevice(abc.ABC):
    """A tunnel device behind one non-blocking file descriptor.

    Subclasses read and write packets; this class names the device, waits on the fd
    through Trio, and closes it (waking any waiter with ``ClosedResourceError``).
    """

    __slots__ = ("_fd", "_name")

    #: How messages name the device ("TUN device", "utun device").
    kind: ClassVar[str] = "device"

    def __init__(self, fd: int, name: str) -> None:
        self._fd = fd
        self._name = name

    @property
    def name(self) -> str:
        """The interface name the kernel gave the device."""
        return self._name

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._fd < 0

    def fileno(self) -> int:
        """The device fd (``-1`` once closed)."""
        return self._fd

    def _closed_error(self) -> trio.ClosedResourceError:
        return trio.ClosedResourceError(f"the {self.kind} was closed")

    async def wait_readable(self) -> None:
        """Sleep until ``read_nowait`` may succeed; ``ClosedResourceError`` on close."""
        if self._fd < 0:
            raise self._closed_error()
        await trio.lowlevel.wait_readable(self._fd)

    async def wait_writable(self) -> None:
        """Sleep until ``write_nowait`` may succeed; ``ClosedResourceError`` on close."""
        if self._fd < 0:
            raise self._closed_error()
        await trio.lowlevel.wait_writable(self._fd)

    def close(self) -> None:
        """Close the device, which deletes the interface, waking waiters. Idempotent."""
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        with contextlib.suppress(RuntimeError):  # outside trio.run nobody can be waiting
            trio.lowlevel.notify_closing(fd)
        self._release(fd)

    @abc.abstractmethod
    def _release(self, fd: int) -> None:
        """Close the underlying fd or socket."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name} fd={self._fd}>"
