"""DNS servers and search domains for the tunnel interface while the client runs.

``tunnel_dns`` is the entry point, entered once the interface is up::

    async with tunnel_dns("sudp0", ["10.0.0.1"], ["corp.example"]):
        ...  # names resolve through the tunnel

Two ways, the first found on ``PATH``:

- ``resolvectl`` (systemd-resolved): ``resolvectl dns IF SERVER...`` and
  ``resolvectl domain IF DOMAIN... [~.]`` at start, ``resolvectl revert IF`` at exit.
- ``resolvconf``: ``resolvconf -a RECORD -m 0 -x`` with ``nameserver``/``search``
  lines on stdin at start, ``resolvconf -d RECORD -f`` at exit. The same words
  work with both implementations: openresolv reads ``-m 0`` (first by metric),
  ``-x`` (exclusive) and ``-f`` (no error if already gone); Debian's resolvconf
  reads only the command and the record name and ignores the rest. Debian orders
  records by ``/etc/resolvconf/interface-order``, whose default puts unknown names
  last, so the record is named under that file's first ``NAME*`` pattern (``tun.``),
  as wg-quick does: ``tun.sudp0.trio-sudp``.

With ``route_all`` (the default, like wg-quick's ``DNS =``) every query goes to
these servers (``~.`` for systemd-resolved, ``-x`` for openresolv), not only names
under the search domains. Neither tool: :class:`DnsError`, one line (exit code 1).
Nothing configured: nothing is done.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

import trio

from trio_sudp.protocol.errors import ConfigError, SUDPError
from trio_sudp.vpn.tools import ToolFailed, find_tool, run_tool

__all__ = [
    "INTERFACE_ORDER",
    "DnsBackend",
    "DnsError",
    "Resolvconf",
    "Resolvectl",
    "find_dns_backend",
    "parse_search_domain",
    "require_dns_backend",
    "tunnel_dns",
]

logger = logging.getLogger("trio_sudp.vpn.dns")

#: Debian resolvconf's record order.
INTERFACE_ORDER = Path("/etc/resolvconf/interface-order")
#: Seconds removing the DNS settings may take at exit.
UNDO_TIMEOUT = 15.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DOMAIN = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?")


class DnsError(SUDPError):
    """DNS for the tunnel could not be set: no tool for it, or the tool failed. One line."""


def parse_search_domain(text: str) -> str:
    """A search domain (``corp.example``), checked; :class:`ConfigError` otherwise.

    Only letters, digits, ``-`` and ``_`` in dot-separated labels: nothing that could
    add a line to a resolv.conf or an option to a command.
    """
    if len(text) > 253 or not _DOMAIN.fullmatch(text):
        raise ConfigError(f"{text!r} is not a DNS search domain (like corp.example)")
    return text


class DnsBackend(Protocol):
    """One way of giving an interface its DNS servers and search domains."""

    name: str

    async def apply(
        self, interface: str, servers: Sequence[IPAddress], search: Sequence[str], route_all: bool
    ) -> None:
        """Set the servers and domains of ``interface``."""
        ...

    async def revert(self, interface: str) -> None:
        """Remove what :meth:`apply` set."""
        ...


async def _run(argv: list[str], stdin: bytes = b"") -> None:
    try:
        await run_tool(argv, stdin=stdin)
    except ToolFailed as exc:
        raise DnsError(f"cannot set DNS: {exc}") from None


class Resolvectl:
    """systemd-resolved, through the ``resolvectl`` program at ``program``."""

    name = "resolvectl"

    def __init__(self, program: str) -> None:
        self.program = program

    async def apply(
        self, interface: str, servers: Sequence[IPAddress], search: Sequence[str], route_all: bool
    ) -> None:
        """``resolvectl dns IF ...`` and ``resolvectl domain IF ...``."""
        if servers:
            await _run([self.program, "dns", interface, *map(str, servers)])
        domains = [*search, "~."] if route_all and servers else list(search)
        if domains:
            await _run([self.program, "domain", interface, *domains])

    async def revert(self, interface: str) -> None:
        """``resolvectl revert IF``."""
        await _run([self.program, "revert", interface])


class Resolvconf:
    """Debian's resolvconf or openresolv, through the program at ``program``."""

    name = "resolvconf"

    def __init__(self, program: str, *, interface_order: Path = INTERFACE_ORDER) -> None:
        self.program = program
        self.interface_order = interface_order

    def record(self, interface: str) -> str:
        """The record name: ``IF.trio-sudp``, under interface-order's first ``NAME*`` if any."""
        prefix = ""
        try:
            lines = self.interface_order.read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            found = re.fullmatch(r"([A-Za-z0-9-]+)\*", line.strip())
            if found:
                prefix = found.group(1) + "."
                break
        return f"{prefix}{interface}.trio-sudp"

    @staticmethod
    def resolv_conf(servers: Sequence[IPAddress], search: Sequence[str]) -> str:
        """The resolv.conf lines given to ``resolvconf -a``."""
        lines = [f"nameserver {server}" for server in servers]
        if search:
            lines.append("search " + " ".join(search))
        return "".join(line + "\n" for line in lines)

    async def apply(
        self, interface: str, servers: Sequence[IPAddress], search: Sequence[str], route_all: bool
    ) -> None:
        """``resolvconf -a RECORD -m 0 [-x]`` with the lines on stdin."""
        argv = [self.program, "-a", self.record(interface), "-m", "0"]
        if route_all:
            argv.append("-x")
        await _run(argv, self.resolv_conf(servers, search).encode())

    async def revert(self, interface: str) -> None:
        """``resolvconf -d RECORD -f``."""
        await _run([self.program, "-d", self.record(interface), "-f"])


def require_dns_backend() -> DnsBackend:
    """:func:`find_dns_backend`, or :class:`DnsError` (one line) when neither tool exists."""
    found = find_dns_backend()
    if found is None:
        raise DnsError(
            "DNS servers or search domains are configured but neither resolvectl"
            " (systemd-resolved) nor resolvconf is installed: install one, or remove the"
            " dns and dns_search settings"
        )
    return found


def find_dns_backend() -> DnsBackend | None:
    """``resolvectl`` if it is on ``PATH``, else ``resolvconf``, else ``None``."""
    program = find_tool("resolvectl")
    if program is not None:
        return Resolvectl(program)
    program = find_tool("resolvconf")
    if program is not None:
        return Resolvconf(program)
    return None


@asynccontextmanager
async def tunnel_dns(
    interface: str,
    servers: Iterable[str | IPAddress],
    search: Iterable[str] = (),
    *,
    route_all: bool = True,
    backend: DnsBackend | None = None,
) -> AsyncIterator[DnsBackend | None]:
    """Give ``interface`` these DNS ``servers`` and ``search`` domains; remove them on exit.

    Yields the backend used (``None`` when there is nothing to set). ``backend``
    ``None`` finds one with :func:`require_dns_backend`.
    """
    try:
        addresses = [ipaddress.ip_address(str(s)) for s in servers]
    except ValueError as exc:
        raise ConfigError(f"DNS server: {exc}") from None
    domains = [parse_search_domain(d) for d in search]
    if not addresses and not domains:
        yield None
        return
    found = backend if backend is not None else require_dns_backend()
    try:
        await found.apply(interface, addresses, domains, route_all)
        logger.info(
            "DNS for %s through %s: %s%s",
            interface,
            found.name,
            " ".join(map(str, addresses)) or "-",
            f" (search {' '.join(domains)})" if domains else "",
        )
        yield found
    finally:
        await _revert(found, interface)


async def _revert(backend: DnsBackend, interface: str) -> None:
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + UNDO_TIMEOUT
        try:
            await backend.revert(interface)
        except DnsError as exc:
            logger.warning("%s", exc)
    if scope.cancelled_caught:
        logger.warning("removing the DNS settings of %s timed out", interface)
