"""The packet device the TUN task drives: a Linux TUN, a macOS utun, or an in-memory one.

Packets are whole IP packets (IPv4 or IPv6) without any prefix: a device that frames
them (utun's 4-byte address family) strips and adds the framing itself. Like the
datagram transport, the device is used without blocking: the TUN task calls
``read_nowait`` until ``BlockingIOError``, then awaits ``wait_readable``.
"""

from __future__ import annotations

from typing import Protocol


class PacketDevice(Protocol):
    """One open tunnel device."""

    @property
    def name(self) -> str:
        """The interface name (``tun0``, ``utun4``, ...)."""
        ...

    def read_nowait(self) -> bytes:
        """Return one IP packet; raise ``BlockingIOError`` when none is ready."""
        ...

    def write_nowait(self, packet: bytes) -> None:
        """Write one IP packet; raise ``BlockingIOError`` if the device would block."""
        ...

    async def wait_readable(self) -> None:
        """Sleep until ``read_nowait`` may succeed."""
        ...

    async def wait_writable(self) -> None:
        """Sleep until ``write_nowait`` may succeed."""
        ...

    def close(self) -> None:
        """Close the device (which removes a non-persistent TUN interface). Idempotent."""
        ...


class DeviceOpener(Protocol):
    """What opens a device for the VPN: :func:`trio_sudp.tun.open_tun`, or a test's."""

    def __call__(self, name: str | None, *, mtu: int | None) -> PacketDevice: ...
