"""The macOS :class:`~trio_sudp.tun.netconfig.NetBackend`: ``ifconfig`` and ``route``.

Commands follow wireguard-go's ``wg-quick`` for darwin: a utun is point-to-point,
so an IPv4 address gets a destination (the peer, or itself) and its subnet an
explicit route. The command runner is injectable, so the command lines are tested
on Linux against a fake.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Awaitable, Callable, Sequence

import attrs
import trio

from trio_sudp.tun.errors import NetConfigError
from trio_sudp.tun.netconfig import Gateway, IPAddress, IPInterface, Route

__all__ = ["CommandResult", "CommandRunner", "DarwinBackend", "parse_route_get", "run_command"]

#: Seconds one ``ifconfig`` or ``route`` command may take.
COMMAND_TIMEOUT = 10.0


@attrs.frozen
class CommandResult:
    """What a finished command returned."""

    returncode: int
    stdout: str
    stderr: str


CommandRunner = Callable[[Sequence[str]], Awaitable[CommandResult]]

# Messages of ifconfig/route that mean "already there" or "already gone".
_EXISTS = ("File exists",)
_GONE = (
    "not in table",
    "does not exist",
    "Can't assign requested address",
    "Device not configured",
    "No such process",
    "No such device",
)


async def run_command(argv: Sequence[str]) -> CommandResult:
    """Run ``argv`` without a shell, capturing its output, bounded by ``COMMAND_TIMEOUT``."""
    try:
        with trio.fail_after(COMMAND_TIMEOUT):
            done = await trio.run_process(
                list(argv), capture_stdout=True, capture_stderr=True, check=False
            )
    except trio.TooSlowError:
        raise NetConfigError(f"{' '.join(argv)} took more than {COMMAND_TIMEOUT} s") from None
    except OSError as exc:
        raise NetConfigError(f"cannot run {argv[0]}: {exc.strerror or exc}", exc.errno) from exc
    return CommandResult(
        done.returncode,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
    )


def _inet(version: int) -> str:
    return "-inet" if version == 4 else "-inet6"


def _destination(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[str]:
    if network.prefixlen == 0:
        return ["default"]
    if network.prefixlen == network.max_prefixlen:
        return ["-host", str(network.network_address)]
    return ["-net", str(network)]


def parse_route_get(output: str) -> tuple[str | None, str | None]:
    """The ``gateway`` and ``interface`` fields of ``route -n get`` output."""
    fields = {}
    for line in output.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key in ("gateway", "interface"):
            fields[key] = value.strip()
    return fields.get("gateway"), fields.get("interface")


class DarwinBackend:
    """Interface and route changes through macOS ``ifconfig`` and ``route``."""

    def __init__(self, runner: CommandRunner = run_command) -> None:
        self._runner = runner

    async def _run(
        self, argv: list[str], *, gone_ok: bool = False, exists_ok: bool = False
    ) -> CommandResult | None:
        """Run one command; ``None`` when it failed in a way the caller tolerates."""
        result = await self._runner(argv)
        if result.returncode == 0:
            return result
        message = (result.stderr.strip() or result.stdout.strip()).splitlines()
        text = message[-1] if message else f"exit status {result.returncode}"
        if gone_ok and any(m in text for m in _GONE):
            return None
        exists = any(m in text for m in _EXISTS)
        if exists_ok and exists:
            return None
        raise NetConfigError(f"{' '.join(argv)}: {text}", errno.EEXIST if exists else None)

    async def set_mtu(self, interface: str, mtu: int) -> None:
        """``ifconfig IF mtu N``."""
        await self._run(["ifconfig", interface, "mtu", str(mtu)])

    async def set_up(self, interface: str) -> None:
        """``ifconfig IF up``."""
        await self._run(["ifconfig", interface, "up"])

    async def add_address(
        self, interface: str, address: IPInterface, peer: IPAddress | None
    ) -> None:
        """Add the address and a route for its subnet through the interface."""
        if address.version == 4:
            dest = str(peer if peer is not None else address.ip)
            await self._run(["ifconfig", interface, "inet", str(address), dest, "alias"])
        else:
            await self._run(["ifconfig", interface, "inet6", str(address), "alias"])
        network = address.network
        if network.prefixlen < network.max_prefixlen:
            argv = ["route", "-q", "-n", "add", _inet(address.version), *_destination(network)]
            await self._run([*argv, "-interface", interface], exists_ok=True)

    async def delete_address(
        self, interface: str, address: IPInterface, peer: IPAddress | None
    ) -> None:
        """Remove the subnet route and the address; either already gone is fine."""
        network = address.network
        if network.prefixlen < network.max_prefixlen:
            argv = ["route", "-q", "-n", "delete", _inet(address.version), *_destination(network)]
            await self._run([*argv, "-interface", interface], gone_ok=True)
        family = "inet" if address.version == 4 else "inet6"
        await self._run(["ifconfig", interface, family, str(address.ip), "-alias"], gone_ok=True)

    @staticmethod
    def _route_argv(action: str, route: Route) -> list[str]:
        argv = ["route", "-q", "-n", action, _inet(route.destination.version)]
        argv += _destination(route.destination)
        gateway = route.gateway
        if gateway is not None:
            scoped = gateway.version == 6 and gateway.is_link_local and route.interface
            argv += ["-gateway", f"{gateway}%{route.interface}" if scoped else str(gateway)]
        else:
            argv += ["-interface", str(route.interface)]
        return argv

    async def add_route(self, route: Route) -> None:
        """``route -q -n add``; :class:`NetConfigError` with ``errno.EEXIST`` if it exists."""
        await self._run(self._route_argv("add", route))

    async def delete_route(self, route: Route) -> None:
        """``route -q -n delete``; a route already gone is fine."""
        await self._run(self._route_argv("delete", route), gone_ok=True)

    async def _get(self, version: int, target: str) -> Gateway | None:
        result = await self._run(["route", "-n", "get", _inet(version), target], gone_ok=True)
        if result is None:
            return None
        gateway, interface = parse_route_get(result.stdout)
        if interface is None:
            return None
        address = None
        if gateway is not None:
            try:  # "link#4" or a MAC address mean on-link
                address = ipaddress.ip_address(gateway.partition("%")[0])
            except ValueError:
                address = None
        return Gateway(address, interface)

    async def route_to(self, destination: IPAddress) -> Gateway:
        """``route -n get ADDRESS``."""
        found = await self._get(destination.version, str(destination))
        if found is None:
            raise NetConfigError(f"no route to {destination}", errno.ENETUNREACH)
        return found

    async def default_routes(self, version: int) -> list[Route]:
        """``route -n get default``: the one default route, if any."""
        found = await self._get(version, "default")
        if found is None:
            return []
        default = "0.0.0.0/0" if version == 4 else "::/0"
        return [Route(default, found.address, found.interface)]
