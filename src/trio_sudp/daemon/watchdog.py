"""Whether what a running daemon stands on is still there, looked at once a second.

Two things can be taken from under ``serve`` or ``connect`` without the process
hearing of it: its control socket file, removed (``rm``) or replaced by another
file, and the one IP address a server's UDP socket is bound to (``listen =
"10.1.2.3:7000"``), deleted from its interface (``ip addr del``). :func:`watch`
looks once a second (an ``lstat``; a throwaway ``bind`` to the address, port 0)
and raises :class:`Fault` with one line naming the thing: the daemon exits 1,
undoing everything as on SIGTERM. A wildcard listen address (``0.0.0.0``, ``::``)
cannot vanish and is not watched. The TUN device is not watched here: its file
descriptor reports its removal itself (``vpn/device.py``).

This is the daemon's loop. ``runtime/health.py`` runs the runtime's (socket losses
and drop counts, for any server, inside a daemon or not), which knows nothing of
control sockets or configured addresses.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Callable, Sequence
from typing import Final, NoReturn

import trio

from ..protocol.errors import SUDPError
from .control import ControlSocket

__all__ = [
    "WATCH_INTERVAL",
    "Check",
    "Fault",
    "control_socket_check",
    "udp_address_check",
    "watch",
    "watch_daemon",
]

#: Seconds between two looks.
WATCH_INTERVAL: Final = 1.0

#: One look: ``None`` while all is well, else the one line saying what is gone.
Check = Callable[[], str | None]


class Fault(SUDPError):
    """Something the daemon runs on was removed under it; the message says what."""


async def watch(checks: Sequence[Check], *, interval: float = WATCH_INTERVAL) -> NoReturn:
    """Run ``checks`` every ``interval`` seconds; raise :class:`Fault` at the first problem."""
    while True:
        await trio.sleep(interval)
        for check in checks:
            problem = check()
            if problem is not None:
                raise Fault(problem)


async def watch_daemon(control: ControlSocket, listen: tuple[str, int] | None = None) -> NoReturn:
    """What ``serve`` and ``connect`` watch: their control socket and, for a server,
    the address it listens on."""
    checks = [control_socket_check(control)]
    address = None if listen is None else udp_address_check(listen[0])
    if address is not None:
        checks.append(address)
    await watch(checks)


def control_socket_check(control: ControlSocket) -> Check:
    """A problem once the control socket's file is removed or replaced."""

    def check() -> str | None:
        try:
            if control.is_ours():
                return None
            what = "replaced by another file" if os.path.lexists(control.path) else "removed"
        except OSError:
            return None  # cannot tell (permissions changed?): not a reason to stop
        return f"the control socket {control.path} was {what}"

    return check


def udp_address_check(host: str) -> Check | None:
    """A problem once this host can no longer bind ``host`` (the address was deleted);
    ``None`` for a wildcard address, which cannot vanish."""
    parsed = ipaddress.ip_address(host.partition("%")[0])
    mapped = parsed.ipv4_mapped if isinstance(parsed, ipaddress.IPv6Address) else None
    if (mapped or parsed).is_unspecified:
        return None
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host, 0, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST
    )[0]

    def check() -> str | None:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"the UDP address {host} of the server's socket was removed from this host"
        return None  # bound (the address is there), or cannot tell (out of descriptors?)

    return check
