"""The macOS utun device, against a fake kernel-control socket (it cannot run on Linux)."""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys

import pytest
import trio
import trio.testing

from trio_sudp.tun import TunError
from trio_sudp.tun.darwin import (
    CTLIOCGINFO,
    PF_SYSTEM,
    SIOCSIFMTU,
    SYSPROTO_CONTROL,
    UTUN_CONTROL_NAME,
    UTUN_OPT_IFNAME,
    DarwinUtun,
    family_header,
    frame,
    unframe,
    utun_unit,
)

IPV4 = bytes([0x45]) + bytes(19)
IPV6 = bytes([0x60]) + bytes(39)
CTL_ID = 0x1234


class FakeSocket:
    """Records what the device does to its socket; plays back queued frames."""

    def __init__(self, fd: int = 1000, ifname: bytes = b"utun7", connect_error: int = 0):
        self.fd = fd
        self.ifname = ifname
        self.connect_error = connect_error
        self.calls: list[tuple[object, ...]] = []
        self.incoming: list[bytes] = []
        self.sent: list[tuple[bytes, ...]] = []
        self.closed = 0

    def fileno(self) -> int:
        return self.fd

    def setblocking(self, flag: bool, /) -> None:
        self.calls.append(("setblocking", flag))

    def connect(self, address: tuple[int, int], /) -> None:
        self.calls.append(("connect", address))
        if self.connect_error:
            raise OSError(self.connect_error, os.strerror(self.connect_error))

    def getsockopt(self, level: int, option: int, buflen: int, /) -> bytes:
        self.calls.append(("getsockopt", level, option, buflen))
        return self.ifname.ljust(buflen, b"\0")

    def recv(self, bufsize: int, /) -> bytes:
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if not self.incoming:
            raise BlockingIOError(errno.EAGAIN, "would block")
        return self.incoming.pop(0)[:bufsize]

    def sendmsg(self, buffers: tuple[bytes, bytes], /) -> int:
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        self.sent.append(tuple(buffers))
        return sum(len(b) for b in buffers)

    def close(self) -> None:
        self.closed += 1


class FakeKernel:
    """A socket factory and an ioctl that answer like macOS."""

    def __init__(self, **socket_options: object) -> None:
        self.sockets: list[tuple[tuple[int, int, int], FakeSocket]] = []
        self.ioctls: list[tuple[int, int, bytes]] = []
        self.socket_options = socket_options
        self.socket_error = 0

    def socket(self, family: int, type_: int, proto: int) -> FakeSocket:
        if self.socket_error:
            raise OSError(self.socket_error, os.strerror(self.socket_error))
        sock = FakeSocket(fd=1000 + len(self.sockets), **self.socket_options)  # type: ignore[arg-type]
        self.sockets.append(((family, type_, proto), sock))
        return sock

    def ioctl(self, fd: int, request: int, arg: bytes) -> bytes:
        self.ioctls.append((fd, request, arg))
        if request == CTLIOCGINFO:
            ctl_id, name = struct.unpack("=I96s", arg)
            assert ctl_id == 0
            assert name.rstrip(b"\0") == UTUN_CONTROL_NAME.encode()
            return struct.pack("=I96s", CTL_ID, name)
        return arg

    def open(self, name: str | None = None, mtu: int | None = None) -> DarwinUtun:
        return DarwinUtun.open(name, mtu=mtu, socket_factory=self.socket, ioctl=self.ioctl)


# --- framing --------------------------------------------------------------------


def test_frame_prefixes_the_darwin_address_family() -> None:
    assert frame(IPV4) == b"\0\0\0\x02" + IPV4
    assert frame(IPV6) == b"\0\0\0\x1e" + IPV6
    assert family_header(IPV4) == b"\0\0\0\x02"


@pytest.mark.parametrize("packet", [b"", b"\x00abc", b"\x50" + bytes(20), b"\xff"])
def test_frame_refuses_non_ip(packet: bytes) -> None:
    with pytest.raises(ValueError, match="not an IPv4 or IPv6 packet"):
        frame(packet)


def test_unframe_round_trips() -> None:
    for packet in (IPV4, IPV6):
        assert unframe(frame(packet)) == packet


@pytest.mark.parametrize("data", [b"", b"\0\0\0", b"\0\0\0\x07" + IPV4, b"\x01\0\0\x02" + IPV4])
def test_unframe_refuses_bad_frames(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a utun frame"):
        unframe(data)


# --- naming ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "unit"),
    [(None, 0), ("sudp%d", 0), ("utun%d", 0), ("utun0", 1), ("utun12", 13)],
)
def test_utun_unit(name: str | None, unit: int) -> None:
    assert utun_unit(name) == unit


@pytest.mark.parametrize("name", ["tun0", "utun", "utunx", "utun-1", "utun\u0663", "sudp0"])
def test_utun_unit_refuses_other_names(name: str) -> None:
    with pytest.raises(TunError, match="macOS names must be utunN"):
        utun_unit(name)


# --- opening --------------------------------------------------------------------


def test_open_follows_the_utun_recipe() -> None:
    kernel = FakeKernel()
    tun = kernel.open("utun3")
    [(args, sock)] = kernel.sockets
    assert args == (PF_SYSTEM, socket.SOCK_DGRAM, SYSPROTO_CONTROL)
    assert kernel.ioctls[0][:2] == (sock.fd, CTLIOCGINFO)
    assert sock.calls == [
        ("connect", (CTL_ID, 4)),
        ("getsockopt", SYSPROTO_CONTROL, UTUN_OPT_IFNAME, 16),
        ("setblocking", False),
    ]
    assert tun.name == "utun7"  # what the kernel says, not what was asked
    assert tun.fileno() == sock.fd


def test_open_any_lets_the_kernel_pick_and_sets_mtu() -> None:
    kernel = FakeKernel(ifname=b"utun9")
    tun = kernel.open(None, mtu=1400)
    assert tun.name == "utun9"
    assert kernel.sockets[0][1].calls[0] == ("connect", (CTL_ID, 0))
    (family, type_, _), mtu_sock = kernel.sockets[1]
    assert (family, type_) == (socket.AF_INET, socket.SOCK_DGRAM)
    fd, request, ifreq = kernel.ioctls[1]
    assert (fd, request) == (mtu_sock.fd, SIOCSIFMTU)
    assert ifreq == struct.pack("16si12x", b"utun9", 1400)
    assert mtu_sock.closed == 1


def test_open_busy_unit() -> None:
    kernel = FakeKernel(connect_error=errno.EBUSY)
    with pytest.raises(TunError, match=r"cannot open utun device 'utun3': the device is in use"):
        kernel.open("utun3")
    assert kernel.sockets[0][1].closed == 1


def test_open_without_privilege() -> None:
    kernel = FakeKernel(connect_error=errno.EPERM)
    with pytest.raises(TunError, match=r"permission denied \(run as root\)") as info:
        kernel.open()
    assert info.value.errno == errno.EPERM


def test_open_off_macos() -> None:
    kernel = FakeKernel()
    kernel.socket_error = errno.EAFNOSUPPORT
    with pytest.raises(TunError, match="utun needs macOS"):
        kernel.open()


@pytest.mark.skipif(sys.platform == "darwin", reason="PF_SYSTEM exists on macOS")
def test_real_open_fails_cleanly_off_macos() -> None:
    with pytest.raises(TunError, match="utun needs macOS"):
        DarwinUtun.open()


# --- packets --------------------------------------------------------------------


def test_read_strips_and_write_adds_the_prefix() -> None:
    kernel = FakeKernel()
    tun = kernel.open()
    sock = kernel.sockets[0][1]
    sock.incoming += [frame(IPV4), frame(IPV6)]
    assert tun.read_nowait() == IPV4
    assert tun.read_nowait() == IPV6
    with pytest.raises(BlockingIOError):
        tun.read_nowait()
    tun.write_nowait(IPV6)
    tun.write_nowait(IPV4)
    assert sock.sent == [(b"\0\0\0\x1e", IPV6), (b"\0\0\0\x02", IPV4)]
    assert sock.sent[0][1] is IPV6  # scatter-gather: the packet is not copied


def test_write_refuses_non_ip_like_linux() -> None:
    tun = FakeKernel().open()
    with pytest.raises(OSError, match="not an IPv4 or IPv6 packet") as info:
        tun.write_nowait(b"\x10junk")
    assert info.value.errno == errno.EINVAL


def test_close_is_idempotent() -> None:
    kernel = FakeKernel()
    with kernel.open() as tun:
        pass
    tun.close()
    assert kernel.sockets[0][1].closed == 1
    assert tun.closed
    with pytest.raises(trio.ClosedResourceError):
        tun.read_nowait()
    with pytest.raises(trio.ClosedResourceError):
        tun.write_nowait(IPV4)


async def test_waits_on_the_socket_fd() -> None:
    """wait_readable uses the fd; close() wakes a waiter with ClosedResourceError."""
    left, right = socket.socketpair()
    with left, right:
        tun = DarwinUtun(FakeSocket(fd=left.fileno()), "utun5")
        with trio.fail_after(5):
            await tun.wait_writable()
            right.send(b"x")
            await tun.wait_readable()
            left.recv(1)
            async with trio.open_nursery() as nursery:
                woken: list[BaseException] = []

                async def waiter() -> None:
                    try:
                        await tun.wait_readable()
                    except trio.ClosedResourceError as exc:
                        woken.append(exc)

                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                tun.close()
        assert len(woken) == 1
        with pytest.raises(trio.ClosedResourceError):
            await tun.wait_readable()


@pytest.mark.skipif(sys.platform != "darwin" or os.geteuid() != 0, reason="needs macOS and root")
async def test_real_utun_on_macos() -> None:
    from trio_sudp.tun import open_tun

    with open_tun(mtu=1400) as tun:
        assert tun.name.startswith("utun")
        with pytest.raises(BlockingIOError):
            tun.read_nowait()
