"""Linux TUN device opened directly through ``/dev/net/tun`` (``IFF_TUN | IFF_NO_PI``).

The fd is non-blocking and used without any wrapper: ``read_nowait`` is one
``os.read`` and ``write_nowait`` one ``os.write`` (≈1 µs each, against 4–7 µs
through ``trio.lowlevel.FdStream``), and Trio is only involved through
``wait_readable`` / ``wait_writable`` when the fd has nothing to give.

With ``vnet_header=True`` the device is opened with ``IFF_VNET_HDR``: every read
and write carries a 10-byte ``virtio_net_hdr``, which ``read_nowait`` strips and
``write_nowait`` adds, and :meth:`LinuxTun.write_vectored_nowait` can write a GSO
packet (many TCP segments in one write, see ``vpn/coalesce.py``).

With ``tso=True`` (which implies ``vnet_header``) the kernel is also told that the
device takes checksum and TCP segmentation offload (``TUNSETOFFLOAD`` with
``TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6``, as wireguard-go does): one read then
returns up to 64 KB of a TCP stream as one super-packet, and packets whose checksum
the kernel left to the device. :meth:`LinuxTun.read_packets_nowait` returns the
ordinary IP packets of one read (``vpn/segment.py`` cuts and completes them), one
system call for up to 45 segments. A kernel that refuses the offloads leaves the
device with plain reads (one debug line).
"""

from __future__ import annotations

import collections
import errno
import fcntl
import logging
import os
import socket
import struct
from collections.abc import Sequence

from trio_sudp.tun.errors import TunError
from trio_sudp.tun.fd_device import FdDevice
from trio_sudp.vpn.segment import (
    VNET_HEADER_SIZE,
    Segmenter,
    SegmentStats,
    best_segmenter,
)

__all__ = [
    "READ_SIZE",
    "TSO_OFFLOADS",
    "TUN_PATH",
    "VNET_HEADER_SIZE",
    "LinuxTun",
    "check_ifname",
]

log = logging.getLogger("trio_sudp")

TUN_PATH = "/dev/net/tun"

#: Bytes asked of every read: an IP packet can be up to 64 KiB, and a short buffer
#: would silently truncate it.
READ_SIZE = 65535

_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_IFF_VNET_HDR = 0x4000
_TUNSETOFFLOAD = 0x400454D0
#: ``TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6``: what the device takes for reads with ``tso``.
TSO_OFFLOADS = 0x01 | 0x02 | 0x04
_PLAIN_HEADER = bytes(VNET_HEADER_SIZE)
_SIOCGIFMTU = 0x8921
_SIOCSIFMTU = 0x8922
_IFNAMSIZ = 16
# struct ifreq is 40 bytes on 64-bit Linux: a 16-byte name and a 24-byte union.
_IFREQ_FLAGS = struct.Struct("16sH22x")
_IFREQ_INT = struct.Struct("16si20x")

_NEEDS_PRIVILEGE = "run as root or grant CAP_NET_ADMIN"


def check_ifname(name: str) -> bytes:
    """Return ``name`` as the bytes of an ``ifreq``; raise :class:`TunError` if invalid.

    A name may hold one ``%d`` the kernel replaces with the first free number.
    """
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        raise TunError(f"invalid interface name {name!r}: not ASCII") from None
    if not raw or len(raw) >= _IFNAMSIZ:
        raise TunError(f"invalid interface name {name!r}: must be 1 to {_IFNAMSIZ - 1} bytes")
    if name in (".", "..") or any(c in name for c in "/: \t\n") or name.count("%") > 1:
        raise TunError(f"invalid interface name {name!r}")
    return raw


class LinuxTun(FdDevice):
    """One open, non-persistent Linux TUN device: closing it deletes the interface."""

    __slots__ = ("_pending", "_read_size", "_segmenter", "vnet_header")
    kind = "TUN device"

    def __init__(
        self,
        fd: int,
        name: str,
        *,
        read_size: int = READ_SIZE,
        vnet_header: bool = False,
        segmenter: Segmenter | None = None,
    ) -> None:
        """Wrap an already configured, non-blocking TUN fd (see :meth:`open`).

        ``segmenter`` is given for a vnet-header fd with the TSO offloads on.
        """
        super().__init__(fd, name)
        #: Whether the fd was opened with ``IFF_VNET_HDR`` (GSO writes possible).
        self.vnet_header = vnet_header or segmenter is not None
        if segmenter is not None:
            read_size = max(read_size, READ_SIZE)  # a super-packet is up to 64 KB
        self._read_size = read_size + VNET_HEADER_SIZE if self.vnet_header else read_size
        self._segmenter = segmenter
        # Packets of a read that read_nowait has not returned yet (TSO only).
        self._pending: collections.deque[bytes] = collections.deque()

    @property
    def tso(self) -> bool:
        """Whether reads may be TCP super-packets (the TSO offloads are on)."""
        return self._segmenter is not None

    @property
    def segment_stats(self) -> SegmentStats | None:
        """The counters of the segmentation of reads (None without TSO)."""
        return None if self._segmenter is None else self._segmenter.stats

    @classmethod
    def open(
        cls,
        name: str | None = None,
        *,
        mtu: int | None = None,
        path: str = TUN_PATH,
        read_size: int = READ_SIZE,
        vnet_header: bool = False,
        tso: bool = False,
        segmenter: Segmenter | None = None,
    ) -> LinuxTun:
        """Create a TUN device named ``name`` (or a pattern such as ``"sudp%d"``).

        ``None`` lets the kernel choose (``tun0``, ``tun1``, ...). ``mtu``, when
        given, is set on the new interface. ``read_size`` bounds one read: a packet
        longer than it is truncated, so keep it at least the largest MTU the
        interface will have (a smaller buffer saves ≈0.3 µs per read).
        ``vnet_header`` opens it with ``IFF_VNET_HDR``, ``tso`` also with the
        offloads that make reads super-packets (see the module docstring);
        ``segmenter`` cuts the super-packets (default:
        :func:`~trio_sudp.vpn.segment.best_segmenter`).
        Raises :class:`TunError` with the reason.
        """
        raw = check_ifname(name) if name is not None else b""
        shown = name or "tun%d"
        try:
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise _open_error(path, exc) from exc
        try:
            vnet_header = vnet_header or tso
            flags = _IFF_TUN | _IFF_NO_PI | (_IFF_VNET_HDR if vnet_header else 0)
            ifr = fcntl.ioctl(fd, _TUNSETIFF, _IFREQ_FLAGS.pack(raw, flags))
            actual = _IFREQ_FLAGS.unpack(ifr)[0].rstrip(b"\0").decode("ascii")
            segmenter = None
            if tso and _set_offload(fd, actual):
                segmenter = segmenter or best_segmenter()
            tun = cls(fd, actual, read_size=read_size, vnet_header=vnet_header, segmenter=segmenter)
            _no_link_local(actual)
            if mtu is not None:
                tun.set_mtu(mtu)
        except OSError as exc:
            os.close(fd)
            raise _setiff_error(shown, exc) from exc
        except BaseException:
            os.close(fd)
            raise
        return tun

    @property
    def mtu(self) -> int:
        """The interface MTU, read from the kernel."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            ifr = fcntl.ioctl(s, _SIOCGIFMTU, _IFREQ_INT.pack(self._name.encode(), 0))
        mtu: int = _IFREQ_INT.unpack(ifr)[1]
        return mtu

    def set_mtu(self, mtu: int) -> None:
        """Set the interface MTU; raise :class:`TunError` if the kernel refuses it."""
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                fcntl.ioctl(s, _SIOCSIFMTU, _IFREQ_INT.pack(self._name.encode(), mtu))
        except OSError as exc:
            raise TunError(
                f"cannot set MTU {mtu} on {self._name}: {exc.strerror or exc}", exc.errno
            ) from exc

    def read_nowait(self) -> bytes:
        """Return one IP packet; raise ``BlockingIOError`` when none is ready.

        With TSO the packets of one read are returned one by one (prefer
        :meth:`read_packets_nowait`). Raises ``trio.ClosedResourceError`` once closed.
        """
        if self._segmenter is None:
            try:  # inline: this is the per-packet path of a device without TSO
                data = os.read(self._fd, self._read_size)
            except OSError:
                if self._fd < 0:
                    raise self._closed_error() from None
                raise
            return data[VNET_HEADER_SIZE:] if self.vnet_header else data
        pending = self._pending
        if not pending:
            pending.extend(self._read_segments(self._segmenter))
        return pending.popleft()

    def read_packets_nowait(self) -> list[bytes]:
        """Return the IP packets of one read (at least one); ``BlockingIOError`` if none.

        With TSO a super-packet comes back as its segments, cut as the kernel
        would have cut them, and a packet with a partial checksum completed;
        without, the one packet read. Raises ``trio.ClosedResourceError`` once closed.
        """
        if self._segmenter is None:
            data = self._read()
            return [data[VNET_HEADER_SIZE:] if self.vnet_header else data]
        pending = self._pending
        if pending:
            packets = list(pending)
            pending.clear()
            return packets
        return self._read_segments(self._segmenter)

    def _read_segments(self, segmenter: Segmenter) -> list[bytes]:
        split = segmenter.split
        while True:
            packets = split(self._read())
            if packets:
                return packets
            # A read the segmenter dropped (counted): try the next one.

    def _read(self) -> bytes:
        try:
            return os.read(self._fd, self._read_size)
        except OSError:
            if self._fd < 0:
                raise self._closed_error() from None
            raise

    def write_nowait(self, packet: bytes) -> None:
        """Write one IP packet; raise ``BlockingIOError`` if the device would block.

        Other ``OSError`` mean this packet is lost: ``EINVAL`` for a packet that is
        not IPv4 or IPv6, ``EIO`` while the interface is down.
        """
        try:
            if self.vnet_header:
                os.writev(self._fd, (_PLAIN_HEADER, packet))
            else:
                os.write(self._fd, packet)
        except OSError:
            if self._fd < 0:
                raise self._closed_error() from None
            raise

    def write_vectored_nowait(self, buffers: Sequence[bytes | memoryview]) -> None:
        """Write one packet given as its parts, vnet header first (``vnet_header`` only).

        ``BlockingIOError`` if the device would block; other ``OSError`` (``EINVAL``
        for a GSO packet the kernel refuses) mean the whole write is lost.
        """
        try:
            os.writev(self._fd, buffers)
        except OSError:
            if self._fd < 0:
                raise self._closed_error() from None
            raise

    def _release(self, fd: int) -> None:
        os.close(fd)


def _set_offload(fd: int, name: str) -> bool:
    """Turn on the TSO offloads; False (and one debug line) if the kernel refuses."""
    try:
        fcntl.ioctl(fd, _TUNSETOFFLOAD, TSO_OFFLOADS)
    except OSError as exc:
        log.debug("%s: no TSO reads, the kernel refused TUNSETOFFLOAD: %s", name, exc)
        return False
    return True


def _open_error(path: str, exc: OSError) -> TunError:
    if exc.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        hint = "no such device (load the tun kernel module: modprobe tun)"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        hint = f"permission denied ({_NEEDS_PRIVILEGE})"
    else:
        hint = exc.strerror or str(exc)
    return TunError(f"cannot open {path}: {hint}", exc.errno)


def _setiff_error(name: str, exc: OSError) -> TunError:
    if exc.errno in (errno.EPERM, errno.EACCES):
        hint = f"operation not permitted ({_NEEDS_PRIVILEGE})"
    elif exc.errno == errno.EBUSY:
        hint = "the name is used by another open TUN device"
    elif exc.errno == errno.EINVAL:
        hint = "invalid name, or an interface that is not a TUN device has that name"
    else:
        hint = exc.strerror or str(exc)
    return TunError(f"cannot create TUN device {name!r}: {hint}", exc.errno)


def _no_link_local(name: str) -> None:
    """Keep the kernel from giving the tunnel an IPv6 link-local address.

    A point-to-point tunnel needs no neighbour discovery; without this the kernel
    sends router solicitations and MLD reports from fe80:: into the tunnel, which
    the server drops as spoofed. Best effort: IPv6 may be disabled altogether.
    """
    try:
        with open(f"/proc/sys/net/ipv6/conf/{name}/addr_gen_mode", "w") as knob:
            knob.write("1")
    except OSError:
        pass
