"""Tunnel devices (Linux TUN, macOS utun) and the interface configuration around them."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Protocol

from trio_sudp.tun.base import DeviceOpener, PacketDevice
from trio_sudp.tun.errors import NetConfigError, TunError

__all__ = ["DeviceOpener", "NetConfigError", "PacketDevice", "TunDevice", "TunError", "open_tun"]


class TunDevice(PacketDevice, Protocol):
    """A kernel tunnel device: a :class:`PacketDevice` with an fd, usable in ``with``."""

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        ...

    def fileno(self) -> int:
        """The device fd (``-1`` once closed)."""
        ...

    def __enter__(self) -> TunDevice: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def open_tun(
    name: str | None = None, *, mtu: int | None = None, offload: bool = True, tso: bool = True
) -> TunDevice:
    """Open a tunnel device for this platform, non-blocking, ready for the TUN task.

    ``name`` is an interface name or a pattern such as ``"sudp%d"`` on Linux; macOS
    only accepts ``utunN``, and picks a free utun for ``None`` or a pattern. Raises
    :class:`TunError` with a one-line reason (no ``/dev/net/tun``, no privilege, name
    in use...). Closing the device deletes the interface. ``offload`` opens a Linux
    TUN with ``IFF_VNET_HDR``, so that the TUN task can write many TCP segments of a
    flow as one GSO packet (``vpn/coalesce.py``); ``tso`` also has the kernel hand over
    TCP super-packets, which the device cuts into segments (``vpn/segment.py``).
    """
    if sys.platform == "linux":
        from trio_sudp.tun.linux import LinuxTun

        return LinuxTun.open(name, mtu=mtu, vnet_header=offload, tso=offload and tso)
    if sys.platform == "darwin":
        from trio_sudp.tun.darwin import DarwinUtun

        return DarwinUtun.open(name, mtu=mtu)
    raise TunError(f"tunnel devices are not supported on {sys.platform}")
