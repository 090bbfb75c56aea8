"""The datagram transport the UDP task drives: a real UDP socket or a fake one.

The UDP task follows the per-packet budget of DESIGN.md: it calls the non-blocking
methods first, drains every ready datagram, and awaits ``wait_readable`` /
``wait_writable`` only when they raise ``BlockingIOError``.
"""

from __future__ import annotations

from typing import Any, Protocol

#: A transport address, opaque to the protocol: ``(host, port)`` for IPv4 and the fake
#: network, the 4-tuple ``recvfrom`` returns for IPv6. Hashable and comparable.
Address = tuple[Any, ...]

#: Receive buffer size: one byte more than the largest datagram SUDP allows, so that
#: an oversized datagram is seen as such instead of silently truncated.
RECV_SIZE = 4096


class DatagramTransport(Protocol):
    """One bound datagram socket, used without blocking.

    After ``close`` every method but ``close`` raises ``trio.ClosedResourceError``.
    """

    @property
    def local_address(self) -> Address:
        """The address this transport is bound to."""
        ...

    def recv_nowait(self) -> tuple[bytes, Address]:
        """Return one datagram and its source; raise ``BlockingIOError`` when none is ready."""
        ...

    def send_nowait(self, data: bytes, address: Address) -> None:
        """Send one datagram; raise ``BlockingIOError`` if it would block.

        Other ``OSError`` (unreachable, message too long) mean the datagram is lost.
        """
        ...

    async def wait_readable(self) -> None:
        """Sleep until ``recv_nowait`` may succeed (it may still raise ``BlockingIOError``)."""
        ...

    async def wait_writable(self) -> None:
        """Sleep until ``send_nowait`` may succeed."""
        ...

    def close(self) -> None:
        """Close the transport, waking any task blocked in ``wait_*`` with
        ``trio.ClosedResourceError``. Idempotent."""
        ...


class DatagramNetwork(Protocol):
    """Something transports can be bound on: the real network or a fake one."""

    def bind(self, address: Address) -> DatagramTransport:
        """Bind a new transport; raise ``OSError`` (e.g. address in use) on failure."""
        ...
