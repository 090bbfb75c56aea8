"""Real UDP transports: non-blocking stdlib sockets woken by ``trio.lowlevel``.

``trio.socket`` costs an ``await`` per datagram; the UDP task instead calls
``recvfrom``/``sendto`` directly and only awaits ``wait_readable``/``wait_writable``
when they raise ``BlockingIOError`` (see DESIGN.md, "The per-packet budget").

The family of a socket follows its bind address: ``"::"`` binds an IPv6 socket that
also carries IPv4 (as IPv4-mapped ``::ffff:a.b.c.d`` addresses) unless
``UDPNetwork(dual_stack=False)``. :func:`resolve_address` turns ``"host:port"`` into
the address form a transport of a given family sends to and receives from, so that
addresses can be compared with the sources ``recv_nowait`` returns.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
from typing import TYPE_CHECKING

import trio

from trio_sudp.runtime.transport import RECV_SIZE, Address

if TYPE_CHECKING:
    from trio_sudp.runtime.transport import DatagramNetwork, DatagramTransport

__all__ = [
    "DEFAULT_SOCKET_BUFFER",
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

# ICMP errors some platforms report on a later recvfrom; they say nothing about the
# datagram being read, so reading goes on.
_TRANSIENT_RECV_ERRORS = (ConnectionRefusedError, ConnectionResetError)


class UDPTransport:
    """A bound, non-blocking UDP socket implementing ``DatagramTransport``.

    After :meth:`close` every method raises ``trio.ClosedResourceError``.
    """

    __slots__ = ("_closed", "_local_address", "_recvfrom", "_sendto", "_sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._local_address: Address = sock.getsockname()
        self._closed = False
        self._recvfrom = sock.recvfrom
        self._sendto = sock.sendto

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

    def recv_nowait(self) -> tuple[bytes, Address]:
        """Return one datagram and its source; raise ``BlockingIOError`` when none is ready."""
        try:
            return self._recvfrom(RECV_SIZE)
        except BlockingIOError:
            raise
        except OSError as exc:
            return self._recv_after_error(exc)

    def _recv_after_error(self, exc: OSError) -> tuple[bytes, Address]:
        while True:
            if self._closed:
                raise trio.ClosedResourceError("UDP transport was closed") from None
            if not isinstance(exc, _TRANSIENT_RECV_ERRORS):
                raise exc
            try:
                return self._recvfrom(RECV_SIZE)
            except BlockingIOError:
                raise
            except OSError as again:
                exc = again

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

    async def wait_readable(self) -> None:
        """Sleep until ``recv_nowait`` may succeed."""
        if self._closed:
            raise trio.ClosedResourceError("UDP transport was closed")
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
        # Outside trio.run nobody can be waiting, and notify_closing raises RuntimeError.
        with contextlib.suppress(RuntimeError):
            trio.lowlevel.notify_closing(self._sock)
        self._sock.close()


class UDPNetwork:
    """The real network: binds :class:`UDPTransport` sockets.

    ``dual_stack``: IPv6 sockets also carry IPv4 (``IPV6_V6ONLY=0``).
    ``buffer_size``: ``SO_RCVBUF``/``SO_SNDBUF`` to ask for (failure is ignored).
    """

    def __init__(
        self, *, dual_stack: bool = True, buffer_size: int | None = DEFAULT_SOCKET_BUFFER
    ) -> None:
        self.dual_stack = dual_stack
        self.buffer_size = buffer_size

    def bind(self, address: Address) -> UDPTransport:
        """Bind a UDP socket to ``(ip, port)`` (or an IPv6 4-tuple); port 0 picks a free one.

        The host must be a numeric IP address (``""`` means ``0.0.0.0``). Raise
        ``OSError`` naming the address when binding fails (e.g. ``EADDRINUSE``).
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
            if self.buffer_size:
                _try_setsockopt(sock, socket.SOL_SOCKET, socket.SO_RCVBUF, self.buffer_size)
                _try_setsockopt(sock, socket.SOL_SOCKET, socket.SO_SNDBUF, self.buffer_size)
            sock.bind(sockaddr)
            return UDPTransport(sock)
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


def format_address(address: Address) -> str:
    """``"1.2.3.4:5"`` or ``"[::1]:5"`` for logs and error messages."""
    host, port = address[0], address[1]
    if isinstance(host, str) and ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


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
    return tuple(info[0][4])


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
