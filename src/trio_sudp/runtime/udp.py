"""Real UDP transports: non-blocking stdlib sockets woken by ``trio.lowlevel``.

``trio.socket`` costs an ``await`` per datagram; the UDP task instead calls
``recvfrom``/``sendto`` directly and only awaits ``wait_readable``/``wait_writable``
when they raise ``BlockingIOError`` (see DESIGN.md, "The per-packet budget").

The family of a socket follows its bind address: ``"::"`` binds an IPv6 socket that
also carries IPv4 (as IPv4-mapped ``::ffff:a.b.c.d`` addresses) unless
``UDPNetwork(dual_stack=False)``. :func:`resolve_address` turns ``"host:port"`` into
the address form a transport of a given family sends to and receives from, so that
addresses can be compared with the sources ``recv_nowait`` returns.

On Linux the transport also moves several datagrams per system call, invisibly on
the wire (see ``SegmentSender`` and ``SegmentReceiver``): ``send_segments_nowait`` sends up to 64
equal-size datagrams to one address with one ``sendmsg`` carrying ``UDP_SEGMENT``
(GSO), and with ``UDP_GRO`` on the socket the kernel hands over datagrams of one
flow coalesced, which ``recv_segments_nowait`` returns with their segment size.
A kernel that lacks either (or refuses GSO for a route) gets one datagram per call.

For a server under hostile load the transport also offers the kernel's help:
``attach_prefilter`` drops garbage in the kernel (see ``prefilter``),
``grow_receive_buffer`` gives the socket a queue beyond ``net.core.rmem_max`` when
root, and ``kernel_drops`` reads how many datagrams the kernel dropped for it.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import ipaddress
import logging
import socket
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar, cast

import trio

from trio_sudp.runtime.transport import RECV_SIZE, Address, format_address, split_segments

from .bpf import SocketFilter, set_program
from .prefilter import PrefilterRules, build_server_filter, replace_filter

if TYPE_CHECKING:
    from trio_sudp.runtime.transport import (
        DatagramNetwork,
        DatagramTransport,
        SegmentReceiver,
        SegmentSender,
    )

__all__ = [
    "DEFAULT_SOCKET_BUFFER",
    "SERVER_RECEIVE_BUFFER",
    "UDPNetwork",
    "UDPTransport",
    "address_family",
    "format_address",
    "parse_host_port",
    "resolve_address",
    "sockaddr_for",
]

#: Socket send and receive buffer size asked for; the kernel may grant less.
DEFAULT_SOCKET_BUFFER = 4 * 1024 * 1024
#: Receive buffer for a server's socket (``grow_receive_buffer``): room for a flood's
#: burst while the server is busy, ~14,000 full-size datagrams.
SERVER_RECEIVE_BUFFER = 32 * 1024 * 1024

# ICMP errors some platforms report on a later recvfrom; they say nothing about the
# datagram being read, so reading goes on.
_TRANSIENT_RECV_ERRORS = (ConnectionRefusedError, ConnectionResetError)
_R = TypeVar("_R")

log = logging.getLogger("trio_sudp")

_LINUX = sys.platform.startswith("linux")
# <linux/udp.h>; the socket module of Python 3.11 does not name them.
_SOL_UDP = 17
_UDP_SEGMENT = 103
_UDP_GRO = 104
#: Bytes asked of every receive on a GRO socket: a coalesced buffer is at most 64 KiB
#: (one UDP datagram's worth), and a shorter buffer would silently cut it.
GRO_RECV_SIZE = 65536
# Room for the one control message a GRO socket receives: the segment size, an int.
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0
_INT = struct.Struct("=i")
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_MSG_TRUNC = int(getattr(socket, "MSG_TRUNC", 0))  # an IntFlag: & on it is Python code
# Errors by which the kernel refuses GSO itself (no checksum offload on the route,
# IPsec, no UDP_SEGMENT): no GSO any more on this socket.
_GSO_UNSUPPORTED = frozenset(
    code
    for code in (
        errno.EIO,
        errno.ENOPROTOOPT,
        errno.EOPNOTSUPP,
        getattr(errno, "ENOTSUP", errno.EOPNOTSUPP),
        errno.ENOSYS,
    )
)
# Errors by which it refuses this segment size (bigger than the route's MTU allows):
# no GSO for datagrams this big any more.
_GSO_TOO_BIG = frozenset((errno.EINVAL, errno.EMSGSIZE))
#: Below this segment size, a socket whose GSO sends keep failing gives GSO up.
_GSO_MIN_SIZE = 512
# The largest segment size a kernel takes (a UDP length).
_GSO_MAX_LIMIT = 0xFFFF
# <asm-generic/socket.h>, <linux/sock_diag.h>: the socket's counters as u32s, of which
# SK_MEMINFO_DROPS counts every datagram the kernel dropped for it (Linux 4.6+).
_SO_MEMINFO = 55
_SK_MEMINFO_DROPS = 8
_MEMINFO_SIZE = 4 * 16  # room for counters later kernels may add
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_SO_ATTACH_REUSEPORT_CBPF = 51


class UDPTransport:
    """A bound, non-blocking UDP socket implementing ``DatagramTransport``.

    It also implements ``SegmentSender`` (GSO) and ``SegmentReceiver`` (GRO), each where the
    kernel supports it and unless ``gso=False`` / ``gro=False``; see
    :attr:`max_segment_size` and :attr:`gro`.

    After :meth:`close` every method raises ``trio.ClosedResourceError``.
    """

    __slots__ = (
        "_closed",
        "_cmsg",
        "_cmsg_size",
        "_gro",
        "_gso_limit",
        "_local_address",
        "_pending",
        "_prefilter_in_kernel",
        "_recvfrom",
        "_recvmsg",
        "_sendmsg",
        "_sendto",
        "_sock",
    )

    def __init__(self, sock: socket.socket, *, gso: bool = True, gro: bool = True) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._local_address: Address = sock.getsockname()
        self._closed = False
        self._recvfrom = sock.recvfrom
        self._sendto = sock.sendto
        self._sendmsg = sock.sendmsg
        self._recvmsg = sock.recvmsg
        self._gso_limit = _probe_gso(sock) if gso else 0
        self._gro = gro and _enable_gro(sock)
        # The control message of the latest GSO send, rebuilt when the size changes.
        self._cmsg_size = -1
        self._cmsg: list[tuple[int, int, bytes]] = []
        # Datagrams of a coalesced buffer that recv_nowait has not returned yet.
        self._pending: collections.deque[tuple[bytes, Address]] = collections.deque()
        self._prefilter_in_kernel = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<UDPTransport {format_address(self._local_address)} {state}>"

    @property
    def local_address(self) -> Address:
        """The address this socket is bound to (port 0 replaced by the real port)."""
        return self._local_address

    @property
    def family(self) -> socket.AddressFamily:
        """``socket.AF_INET`` or ``socket.AF_INET6``; see :func:`resolve_address`."""
        return self._sock.family

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def fileno(self) -> int:
        """The socket's file descriptor (``-1`` once closed)."""
        return self._sock.fileno()

    @property
    def max_segment_size(self) -> int:
        """The largest datagram :meth:`send_segments_nowait` takes; 0: no GSO (any more)."""
        return self._gso_limit

    @property
    def gro(self) -> bool:
        """Whether the kernel may hand over datagrams coalesced (``UDP_GRO`` is on)."""
        return self._gro

    def attach_prefilter(self, rules: PrefilterRules, banned: Iterable[str] = ()) -> bool:
        """Have the kernel drop what ``rules`` refuse, and everything from the ``banned``
        hosts; return whether it took the filter.

        Where it refuses (not Linux), nothing is filtered and ``prefilter_reason`` is
        the server's first check. Call again with new rules (after clients were added
        or removed) to replace the filter. With :attr:`gro`, the kernel checks the
        first datagram of a coalesced buffer only, and no upper size bound.
        """
        self._check_open()
        if _is_udp(self._sock):  # a UDP socket filter's offsets, and Linux only
            program = build_server_filter(rules, coalesced=self._gro, banned=banned)
            self._prefilter_in_kernel = replace_filter(self._sock, program)
        return self._prefilter_in_kernel

    @property
    def prefilter_in_kernel(self) -> bool:
        """Whether the latest :meth:`attach_prefilter` put its filter in the kernel."""
        return self._prefilter_in_kernel

    def set_group_program(self, program: SocketFilter) -> None:
        """Give this socket's ``SO_REUSEPORT`` group the program that picks a socket
        for each datagram (``lanes.py``); ``OSError`` if the kernel refuses it."""
        self._check_open()
        set_program(self._sock, _SO_ATTACH_REUSEPORT_CBPF, program)

    def kernel_drops(self) -> int | None:
        """How many datagrams the kernel has dropped for this socket; ``None`` if unknown.

        Those the prefilter refused, those with a bad checksum, and those that found
        the receive queue full: one ``getsockopt``, nothing per datagram. The count
        wraps at 2**32.
        """
        self._check_open()
        if not _LINUX:
            return None
        try:
            info = self._sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, _MEMINFO_SIZE)
        except OSError:
            return None
        offset = 4 * _SK_MEMINFO_DROPS
        if len(info) < offset + 4:
            return None
        drops: int = _U32.unpack_from(info, offset)[0]
        return drops

    @property
    def receive_buffer_size(self) -> int:
        """The receive buffer the kernel granted, in its own accounting (about twice
        what was asked: it counts its bookkeeping too)."""
        self._check_open()
        size: int = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        return size

    def grow_receive_buffer(self, size: int = SERVER_RECEIVE_BUFFER) -> int:
        """Ask for a ``size``-byte receive buffer: beyond ``net.core.rmem_max`` with
        ``CAP_NET_ADMIN`` (``SO_RCVBUFFORCE``), else up to it. Nothing is asked when
        the buffer is already that large.

        Return :attr:`receive_buffer_size`.
        """
        self._check_open()
        if size > self.receive_buffer_size // 2:
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
            except OSError:
                _try_setsockopt(self._sock, socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        return self.receive_buffer_size

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("UDP transport was closed")

    def recv_nowait(self) -> tuple[bytes, Address]:
        """Return one datagram and its source; raise ``BlockingIOError`` when none is ready."""
        if self._gro:
            return self._recv_one_gro()
        try:
            return self._recvfrom(RECV_SIZE)
        except BlockingIOError:
            raise
        except OSError as exc:
            return self._recv_after_error(exc)

    def _recv_after_error(self, exc: OSError) -> tuple[bytes, Address]:
        return self._retry_after_error(exc, lambda: self._recvfrom(RECV_SIZE))

    def _retry_after_error(self, exc: OSError, receive: Callable[[], _R]) -> _R:
        """Retry ``receive`` past ICMP-reported errors; ``ClosedResourceError`` once closed."""
        while True:
            if self._closed:
                raise trio.ClosedResourceError("UDP transport was closed") from None
            if not isinstance(exc, _TRANSIENT_RECV_ERRORS):
                raise exc
            try:
                return receive()
            except BlockingIOError:
                raise
            except OSError as again:
                exc = again

    def _recv_one_gro(self) -> tuple[bytes, Address]:
        pending = self._pending
        if pending:
            return pending.popleft()
        buffer, segment_size, address = self.recv_segments_nowait()
        if not segment_size:
            return buffer, address
        first, *rest = split_segments(buffer, segment_size)
        pending.extend([(datagram, address) for datagram in rest])
        return first, address

    def recv_segments_nowait(self) -> tuple[bytes, int, Address]:
        """Return ``(buffer, segment_size, source)``; see ``SegmentReceiver``.

        ``segment_size`` is 0 when ``buffer`` is one datagram (always, without GRO).
        Raise ``BlockingIOError`` when none is ready.
        """
        if not self._gro or self._pending:
            datagram, address = self.recv_nowait()
            return datagram, 0, address
        try:
            buffer, ancdata, flags, address = self._recvmsg(GRO_RECV_SIZE, _GRO_CMSG_SPACE)
        except BlockingIOError:
            raise
        except OSError as exc:
            buffer, ancdata, flags, address = self._recvmsg_after_error(exc)
        if ancdata:
            return self._coalesced(buffer, ancdata, flags, address)
        if len(buffer) > RECV_SIZE:  # as recvfrom(RECV_SIZE) would have returned it
            buffer = buffer[:RECV_SIZE]
        return buffer, 0, address

    def _recvmsg_after_error(
        self, exc: OSError
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, Address]:
        return self._retry_after_error(exc, lambda: self._recvmsg(GRO_RECV_SIZE, _GRO_CMSG_SPACE))

    @staticmethod
    def _coalesced(
        buffer: bytes, ancdata: list[tuple[int, int, bytes]], flags: int, address: Address
    ) -> tuple[bytes, int, Address]:
        size = len(buffer)
        segment_size = 0
        for level, kind, data in ancdata:
            if level == _SOL_UDP and kind == _UDP_GRO and len(data) >= 4:
                segment_size = _INT.unpack_from(data)[0]
        if 0 < segment_size < size:
            if flags & _MSG_TRUNC:  # cannot happen with a 64 KiB buffer; never pass a cut one
                buffer = buffer[: size - size % segment_size]
            return buffer, segment_size, address
        if size > RECV_SIZE:
            buffer = buffer[:RECV_SIZE]
        return buffer, 0, address

    def send_nowait(self, data: bytes, address: Address) -> None:
        """Send one datagram; raise ``BlockingIOError`` if the socket buffer is full.

        Other ``OSError`` (no route, message too long, wrong address family) mean the
        datagram is lost.
        """
        try:
            self._sendto(data, address)
        except BlockingIOError:
            raise
        except OSError:
            if self._closed:
                raise trio.ClosedResourceError("UDP transport was closed") from None
            raise

    def send_segments_nowait(self, datagrams: Sequence[bytes], address: Address) -> None:
        """Send several datagrams to ``address`` with one GSO ``sendmsg``.

        The contract of ``SegmentSender``: at most ``MAX_SEGMENTS`` datagrams and
        ``MAX_SEGMENT_BYTES`` in all, each of the first's size (at most
        :attr:`max_segment_size`) but the last, which may be shorter. All are sent or
        none: ``BlockingIOError`` if the socket buffer is full. Any other ``OSError``
        means the batch was refused; when the kernel refused GSO itself, this
        transport stops offering it (for all sizes, or for this size and above).
        """
        size = len(datagrams[0])
        if size != self._cmsg_size:
            self._cmsg = [(_SOL_UDP, _UDP_SEGMENT, _U16.pack(size))]
            self._cmsg_size = size
        try:
            self._sendmsg(datagrams, self._cmsg, 0, address)
        except BlockingIOError:
            raise
        except OSError as exc:
            if self._closed:
                raise trio.ClosedResourceError("UDP transport was closed") from None
            self._gso_refused(exc, size)
            raise

    def _gso_refused(self, exc: OSError, size: int) -> None:
        code = exc.errno
        limit = self._gso_limit
        if code in _GSO_TOO_BIG and size > _GSO_MIN_SIZE:
            # Most likely bigger than the route's MTU: smaller datagrams may still go.
            if size <= limit:
                self._gso_limit = size - 1
                if limit == _GSO_MAX_LIMIT:  # log the first refusal only
                    log.debug(
                        "UDP GSO refused for %d-byte datagrams on %s (%s): "
                        "datagrams that big go one by one",
                        size,
                        format_address(self._local_address),
                        exc.strerror or exc,
                    )
        elif (code in _GSO_UNSUPPORTED or code in _GSO_TOO_BIG) and limit:
            self._gso_limit = 0
            log.debug(
                "UDP GSO refused on %s (%s): sending one datagram per call",
                format_address(self._local_address),
                exc.strerror or exc,
            )

    async def wait_readable(self) -> None:
        """Sleep until ``recv_nowait`` may succeed."""
        if self._closed:
            raise trio.ClosedResourceError("UDP transport was closed")
        if self._pending:
            await trio.lowlevel.checkpoint()
            return
        await trio.lowlevel.wait_readable(self._sock)

    async def wait_writable(self) -> None:
        """Sleep until ``send_nowait`` may succeed."""
        if self._closed:
            raise trio.ClosedResourceError("UDP transport was closed")
        await trio.lowlevel.wait_writable(self._sock)

    def close(self) -> None:
        """Close the socket, waking waiters with ``trio.ClosedResourceError``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        # Outside trio.run nobody can be waiting, and notify_closing raises RuntimeError.
        with contextlib.suppress(RuntimeError):
            trio.lowlevel.notify_closing(self._sock)
        self._sock.close()


class UDPNetwork:
    """The real network: binds :class:`UDPTransport` sockets.

    ``dual_stack``: IPv6 sockets also carry IPv4 (``IPV6_V6ONLY=0``).
    ``buffer_size``: ``SO_RCVBUF``/``SO_SNDBUF`` to ask for (failure is ignored).
    ``gso`` / ``gro``: use UDP segmentation offload when sending / coalesced receives
    where the kernel supports them (Linux).
    """

    def __init__(
        self,
        *,
        dual_stack: bool = True,
        buffer_size: int | None = DEFAULT_SOCKET_BUFFER,
        gso: bool = True,
        gro: bool = True,
    ) -> None:
        self.dual_stack = dual_stack
        self.buffer_size = buffer_size
        self.gso = gso
        self.gro = gro

    @property
    def can_share_port(self) -> bool:
        """Whether :meth:`bind` takes ``reuse_port=True`` (``SO_REUSEPORT``, Linux)."""
        return _LINUX and hasattr(socket, "SO_REUSEPORT")

    def bind(self, address: Address, *, reuse_port: bool = False) -> UDPTransport:
        """Bind a UDP socket to ``(ip, port)`` (or an IPv6 4-tuple); port 0 picks a free one.

        The host must be a numeric IP address (``""`` means ``0.0.0.0``). Raise
        ``OSError`` naming the address when binding fails (e.g. ``EADDRINUSE``).
        ``reuse_port``: join the other ``SO_REUSEPORT`` sockets of this user on that
        port (a server's lanes, ``lanes.py``).
        """
        host, port = address[0], address[1]
        family = address_family(host)
        sockaddr: Address = ("0.0.0.0" if host == "" else host, port, *address[2:])
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                _try_setsockopt(
                    sock, socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if self.dual_stack else 1
                )
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if self.buffer_size:
                _try_setsockopt(sock, socket.SOL_SOCKET, socket.SO_RCVBUF, self.buffer_size)
                _try_setsockopt(sock, socket.SOL_SOCKET, socket.SO_SNDBUF, self.buffer_size)
            sock.bind(sockaddr)
            return UDPTransport(sock, gso=self.gso, gro=self.gro)
        except OSError as exc:
            sock.close()
            reason = exc.strerror or str(exc)
            raise OSError(
                exc.errno, f"cannot bind UDP socket to {format_address(sockaddr)}: {reason}"
            ) from exc
        except BaseException:
            sock.close()
            raise


def _try_setsockopt(sock: socket.socket, level: int, option: int, value: int) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(level, option, value)


def _is_udp(sock: socket.socket) -> bool:
    return (
        _LINUX
        and sock.type == socket.SOCK_DGRAM
        and sock.family in (socket.AF_INET, socket.AF_INET6)
        and sock.proto in (0, socket.IPPROTO_UDP)
    )


def _probe_gso(sock: socket.socket) -> int:
    """The largest GSO segment to try on ``sock``: 65535 if the kernel knows ``UDP_SEGMENT``.

    A kernel without it (before Linux 4.18) would ignore the control message and send
    one big datagram, so it is asked first.
    """
    if not _is_udp(sock):
        return 0
    try:
        sock.getsockopt(_SOL_UDP, _UDP_SEGMENT)
    except OSError as exc:
        log.debug("no UDP GSO on this system (%s): one datagram per send", exc.strerror or exc)
        return 0
    return _GSO_MAX_LIMIT


def _enable_gro(sock: socket.socket) -> bool:
    """Turn ``UDP_GRO`` on (Linux 5.0+); ``False`` where the kernel refuses."""
    if not _is_udp(sock) or not _GRO_CMSG_SPACE:
        return False
    try:
        sock.setsockopt(_SOL_UDP, _UDP_GRO, 1)
    except OSError as exc:
        log.debug("no UDP GRO on this system (%s): one datagram per receive", exc.strerror or exc)
        return False
    return True


def address_family(host: str) -> socket.AddressFamily:
    """The socket family for a numeric bind host (``""`` is IPv4 any).

    Raise ``OSError(EINVAL)`` for anything but a numeric IP address.
    """
    if host == "":
        return socket.AF_INET
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        raise OSError(
            errno.EINVAL, f"bind address must be a numeric IP address, got {host!r}"
        ) from None
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6


def parse_host_port(text: str) -> tuple[str, int]:
    """Split ``"host:port"`` or ``"[ipv6]:port"`` into ``(host, port)``.

    Raise ``ValueError`` with a readable message when the text is malformed.
    """
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"expected '[ipv6]:port', got {text!r}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"expected 'host:port', got {text!r}")
        if ":" in host:
            raise ValueError(f"an IPv6 address needs brackets: '[ipv6]:port', got {text!r}")
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {port_text!r} in {text!r}")
    return host, int(port_text)


def sockaddr_for(ip: str, port: int, family: int) -> Address:
    """The address a socket of ``family`` uses for numeric ``ip``.

    IPv4 through an IPv6 socket becomes IPv4-mapped ``("::ffff:a.b.c.d", port, 0, 0)``;
    IPv6 forms match what ``recvfrom`` returns. Raise ``OSError(EAFNOSUPPORT)`` when an
    IPv6 address is asked for on an IPv4 socket, ``ValueError`` if ``ip`` is not numeric.
    """
    parsed = ipaddress.ip_address(ip.partition("%")[0])
    if family == socket.AF_INET:
        if isinstance(parsed, ipaddress.IPv6Address):
            if parsed.ipv4_mapped is None:
                raise OSError(
                    errno.EAFNOSUPPORT, f"cannot reach IPv6 address {ip} from an IPv4 socket"
                )
            parsed = parsed.ipv4_mapped
        return (str(parsed), port)
    if family != socket.AF_INET6:
        raise ValueError(f"unsupported address family {family!r}")
    if parsed.version == 4:
        ip = f"::ffff:{parsed}"
    # getaddrinfo on a numeric host never blocks and yields recvfrom's exact form.
    info = socket.getaddrinfo(
        ip, port, socket.AF_INET6, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST
    )
    host, _, flowinfo, scope_id = cast("tuple[str, int, int, int]", info[0][4])
    return (host, port, flowinfo, scope_id)


async def resolve_address(destination: str | tuple[str, int], family: int) -> Address:
    """Resolve ``"host:port"`` or ``(host, port)`` for a transport of ``family``.

    Numeric hosts resolve without I/O; names are looked up in a worker thread. An IPv4
    server reached through an IPv6 socket gets its IPv4-mapped address. Raise
    ``OSError`` when the name has no usable address.
    """
    host, port = parse_host_port(destination) if isinstance(destination, str) else destination
    try:
        return sockaddr_for(host, port, family)
    except ValueError:
        pass  # not numeric: a name
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    wanted = (socket.AF_INET,) if family == socket.AF_INET else (socket.AF_INET6, socket.AF_INET)
    for info_family, _, _, _, sockaddr in infos:
        if info_family in wanted:
            return sockaddr_for(str(sockaddr[0]), port, family)
    kind = "IPv4" if family == socket.AF_INET else "IP"
    raise OSError(errno.EADDRNOTAVAIL, f"{host!r} has no {kind} address usable here")


if TYPE_CHECKING:
    _network: DatagramNetwork = UDPNetwork()
    _transport: DatagramTransport = _network.bind(("127.0.0.1", 0))
    _sender: SegmentSender = UDPNetwork().bind(("127.0.0.1", 0))
    _receiver: SegmentReceiver = UDPNetwork().bind(("127.0.0.1", 0))
