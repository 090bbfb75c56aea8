"""macOS utun device: a kernel-control socket (``PF_SYSTEM`` / ``SYSPROTO_CONTROL``).

Every read and write on a utun socket carries a 4-byte prefix ``0, 0, 0, AF``
(``AF_INET`` 2 or ``AF_INET6`` 30 on Darwin) in front of the IP packet. This
module strips and adds it, so the device has the same interface as the Linux TUN.
The socket and ``ioctl`` are injectable, so the framing and the open and naming
logic are tested on Linux against fakes.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable
from typing import Protocol

from trio_sudp.tun.errors import TunError
from trio_sudp.tun.fd_device import FdDevice

__all__ = [
    "AF_INET6_DARWIN",
    "AF_INET_DARWIN",
    "CTLIOCGINFO",
    "PF_SYSTEM",
    "SYSPROTO_CONTROL",
    "UTUN_CONTROL_NAME",
    "UTUN_OPT_IFNAME",
    "DarwinUtun",
    "family_header",
    "frame",
    "unframe",
    "utun_unit",
]

# <sys/socket.h>, <sys/sys_domain.h>, <sys/kern_control.h>, <net/if_utun.h>
PF_SYSTEM = 32
SYSPROTO_CONTROL = 2
UTUN_OPT_IFNAME = 2
UTUN_CONTROL_NAME = "com.apple.net.utun_control"
#: _IOWR('N', 3, struct ctl_info), where ctl_info is a u_int32_t id and a char[96] name.
CTLIOCGINFO = 0xC0644E03
#: _IOW('i', 52, struct ifreq): set the MTU (Darwin's ifreq is 32 bytes).
SIOCSIFMTU = 0x80206934
AF_INET_DARWIN = 2
AF_INET6_DARWIN = 30

#: Bytes asked of every read: the 4-byte prefix and the largest IP packet.
READ_SIZE = 65535 + 4

_CTL_INFO = struct.Struct("=I96s")
_IFREQ_INT = struct.Struct("16si12x")
_HEADER_V4 = bytes((0, 0, 0, AF_INET_DARWIN))
_HEADER_V6 = bytes((0, 0, 0, AF_INET6_DARWIN))
_IFNAMSIZ = 16


def family_header(packet: bytes) -> bytes:
    """The utun prefix for ``packet``, chosen from its IP version nibble.

    Raises ``ValueError`` for a packet that is neither IPv4 nor IPv6.
    """
    if packet:
        version = packet[0] >> 4
        if version == 4:
            return _HEADER_V4
        if version == 6:
            return _HEADER_V6
    raise ValueError("not an IPv4 or IPv6 packet")


def frame(packet: bytes) -> bytes:
    """Prefix an IP packet with its utun address-family header."""
    return family_header(packet) + packet


def unframe(data: bytes) -> bytes:
    """Strip the utun address-family header; ``ValueError`` if there is none."""
    if len(data) < 4 or data[:3] != b"\0\0\0" or data[3] not in (AF_INET_DARWIN, AF_INET6_DARWIN):
        raise ValueError("not a utun frame")
    return data[4:]


def utun_unit(name: str | None) -> int:
    """The ``sc_unit`` to connect to for ``name``: ``utunN`` is unit N + 1.

    ``None`` or a pattern holding ``%d`` gives 0, which lets the kernel pick the
    first free utun. Other names raise :class:`TunError`: macOS names utun devices
    itself.
    """
    if name is None or "%d" in name:
        return 0
    digits = name.removeprefix("utun")
    if name.startswith("utun") and digits.isdigit() and digits.isascii():
        return int(digits) + 1
    raise TunError(f"invalid utun name {name!r}: macOS names must be utunN, N a number")


class UtunSocket(Protocol):
    """The part of ``socket.socket`` a utun device uses."""

    def fileno(self) -> int: ...
    def setblocking(self, flag: bool, /) -> None: ...
    def connect(self, address: tuple[int, int], /) -> None: ...
    def getsockopt(self, level: int, option: int, buflen: int, /) -> bytes: ...
    def recv(self, bufsize: int, /) -> bytes: ...
    def sendmsg(self, buffers: tuple[bytes, bytes], /) -> int: ...
    def close(self) -> None: ...


#: ``socket.socket``'s signature: ``(family, type, proto)``.
SocketFactory = Callable[[int, int, int], UtunSocket]
#: ``fcntl.ioctl``'s signature with a bytes argument: returns the changed buffer.
Ioctl = Callable[[int, int, bytes], bytes]


def _real_socket(family: int, type_: int, proto: int) -> UtunSocket:
    return socket.socket(family, type_, proto)


def _real_ioctl(fd: int, request: int, arg: bytes) -> bytes:
    import fcntl

    return fcntl.ioctl(fd, request, arg)


class DarwinUtun(FdDevice):
    """One open macOS utun device: closing the socket deletes the interface."""

    __slots__ = ("_read_size", "_sock")
    kind = "utun device"

    def __init__(self, sock: UtunSocket, name: str, *, read_size: int = READ_SIZE) -> None:
        """Wrap a connected, non-blocking utun control socket (see :meth:`open`)."""
        super().__init__(sock.fileno(), name)
        self._sock = sock
        self._read_size = read_size

    @classmethod
    def open(
        cls,
        name: str | None = None,
        *,
        mtu: int | None = None,
        socket_factory: SocketFactory = _real_socket,
        ioctl: Ioctl = _real_ioctl,
    ) -> DarwinUtun:
        """Create a utun device: ``utunN``, or the first free one for ``None``.

        Raises :class:`TunError` with the reason.
        """
        unit = utun_unit(name)
        shown = name if name is not None and unit else "utun"
        try:
            sock = socket_factory(PF_SYSTEM, socket.SOCK_DGRAM, SYSPROTO_CONTROL)
        except OSError as exc:
            raise TunError(
                f"cannot open a utun control socket ({exc.strerror or exc}): utun needs macOS",
                exc.errno,
            ) from exc
        try:
            info = ioctl(sock.fileno(), CTLIOCGINFO, _CTL_INFO.pack(0, UTUN_CONTROL_NAME.encode()))
            ctl_id = _CTL_INFO.unpack(info)[0]
            sock.connect((ctl_id, unit))
            raw = sock.getsockopt(SYSPROTO_CONTROL, UTUN_OPT_IFNAME, _IFNAMSIZ)
            actual = raw.split(b"\0", 1)[0].decode("ascii")
            sock.setblocking(False)
            if mtu is not None:
                _set_mtu(actual, mtu, socket_factory, ioctl)
        except OSError as exc:
            sock.close()
            raise _open_error(shown, exc) from exc
        except BaseException:
            sock.close()
            raise
        return cls(sock, actual)

    def read_nowait(self) -> bytes:
        """Return one IP packet without its prefix; ``BlockingIOError`` when none is ready."""
        try:
            data = self._sock.recv(self._read_size)
        except OSError:
            if self._fd < 0:
                raise self._closed_error() from None
            raise
        return data[4:]

    def write_nowait(self, packet: bytes) -> None:
        """Write one IP packet, prefixed without copying it; ``BlockingIOError`` if full.

        A packet that is neither IPv4 nor IPv6 raises ``OSError(EINVAL)``, like Linux.
        """
        try:
            self._sock.sendmsg((family_header(packet), packet))
        except ValueError:
            raise OSError(errno.EINVAL, "not an IPv4 or IPv6 packet") from None
        except OSError:
            if self._fd < 0:
                raise self._closed_error() from None
            raise

    def _release(self, fd: int) -> None:
        self._sock.close()


def _set_mtu(name: str, mtu: int, socket_factory: SocketFactory, ioctl: Ioctl) -> None:
    try:
        sock = socket_factory(socket.AF_INET, socket.SOCK_DGRAM, 0)
        try:
            ioctl(sock.fileno(), SIOCSIFMTU, _IFREQ_INT.pack(name.encode(), mtu))
        finally:
            sock.close()
    except OSError as exc:
        raise TunError(f"cannot set MTU {mtu} on {name}: {exc.strerror or exc}", exc.errno) from exc


def _open_error(name: str, exc: OSError) -> TunError:
    if exc.errno in (errno.EPERM, errno.EACCES):
        hint = "permission denied (run as root)"
    elif exc.errno == errno.EBUSY:
        hint = "the device is in use"
    else:
        hint = exc.strerror or str(exc)
    return TunError(f"cannot open utun device {name!r}: {hint}", exc.errno)
