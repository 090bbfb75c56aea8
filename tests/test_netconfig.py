"""Interface configuration and its undo stack.

Three layers: the undo logic against a fake backend, the macOS command lines
against a fake runner, and the Linux (pyroute2) backend for real inside network
namespaces (``scenario_*``, run as ``python tests/test_netconfig.py scenario_x``).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.testing

from netns import Topology, netns1, netns2, run_in, run_scenario, scenario_main
from trio_sudp.tun import NetConfigError
from trio_sudp.tun.netconfig import (
    Gateway,
    IPAddress,
    IPInterface,
    NetConfig,
    Route,
    configure_interface,
    default_gateway_for,
    split_default_networks,
)
from trio_sudp.tun.netconfig_darwin import (
    CommandResult,
    DarwinBackend,
    parse_route_get,
    run_command,
)

__all__ = ["netns1", "netns2"]  # fixtures, imported for pytest

THIS = os.path.abspath(__file__)
TIME_LIMIT = 60
V4_LOCAL, V4_PEER = "10.201.0.1", "10.201.0.2"
V6_LOCAL = "fd00:201::1"
SERVER4, SERVER6 = "198.51.100.7", "2001:db8::7"

# --- the undo stack, against a fake backend -------------------------------------


class FakeBackend:
    """Keeps addresses and routes in sets; every call checkpoints, like a thread hop."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.addresses: set[tuple[str, IPInterface, IPAddress | None]] = set()
        self.routes: set[Route] = {Route("0.0.0.0/0", "192.0.2.1", "eth0")}
        self.mtu: dict[str, int] = {}
        self.up: set[str] = set()
        self.gateways: dict[IPAddress, Gateway] = {}
        self.fail: dict[str, BaseException] = {}
        self.hang: set[str] = set()

    async def _call(self, name: str, *args: object) -> None:
        self.calls.append((name, *args))
        await trio.sleep(0.1)  # a cancelled, unshielded caller would stop here
        if name in self.hang:
            await trio.sleep_forever()
        if name in self.fail:
            raise self.fail[name]

    async def set_mtu(self, interface: str, mtu: int) -> None:
        await self._call("set_mtu", interface, mtu)
        self.mtu[interface] = mtu

    async def set_up(self, interface: str) -> None:
        await self._call("set_up", interface)
        self.up.add(interface)

    async def add_address(
        self, interface: str, address: IPInterface, peer: IPAddress | None
    ) -> None:
        await self._call("add_address", interface, str(address), peer and str(peer))
        self.addresses.add((interface, address, peer))

    async def delete_address(
        self, interface: str, address: IPInterface, peer: IPAddress | None
    ) -> None:
        await self._call("delete_address", interface, str(address), peer and str(peer))
        self.addresses.discard((interface, address, peer))

    async def add_route(self, route: Route) -> None:
        await self._call("add_route", str(route))
        if route in self.routes:
            raise NetConfigError(f"{route} exists", errno.EEXIST)
        self.routes.add(route)

    async def delete_route(self, route: Route) -> None:
        await self._call("delete_route", str(route))
        self.routes.discard(route)

    async def route_to(self, destination: IPAddress) -> Gateway:
        await self._call("route_to", str(destination))
        return self.gateways.get(destination, Gateway(ipaddress.ip_address("192.0.2.1"), "eth0"))

    async def default_routes(self, version: int) -> list[Route]:
        await self._call("default_routes", version)
        return [r for r in self.routes if r.is_default and r.destination.version == version]


ORIGINAL_ROUTES = {Route("0.0.0.0/0", "192.0.2.1", "eth0")}


async def test_configure_then_undo_in_reverse(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBackend()
    async with configure_interface(
        "tun9",
        addresses=["10.0.0.2/24", "fd00::2/64"],
        peer="10.0.0.1",
        mtu=1400,
        routes=["10.9.0.0/16", Route("10.8.0.0/16", gateway="10.0.0.7", interface="tun9")],
        backend=fake,
    ) as iface:
        assert iface.name == "tun9"
        assert [str(a) for a in iface.addresses] == ["10.0.0.2/24", "fd00::2/64"]
        assert fake.calls == [
            ("set_mtu", "tun9", 1400),
            ("add_address", "tun9", "10.0.0.2/24", "10.0.0.1"),
            ("add_address", "tun9", "fd00::2/64", None),  # the peer is IPv4 only
            ("set_up", "tun9"),
            ("add_route", "10.9.0.0/16 dev tun9"),
            ("add_route", "10.8.0.0/16 via 10.0.0.7 dev tun9"),
        ]
        assert len(fake.addresses) == 2
        assert len(fake.routes) == 3
        assert iface.netconfig.changes == [
            "address 10.0.0.2/24 peer 10.0.0.1 dev tun9",
            "address fd00::2/64 dev tun9",
            "route 10.9.0.0/16 dev tun9",
            "route 10.8.0.0/16 via 10.0.0.7 dev tun9",
        ]
        fake.calls.clear()
    assert fake.calls == [
        ("delete_route", "10.8.0.0/16 via 10.0.0.7 dev tun9"),
        ("delete_route", "10.9.0.0/16 dev tun9"),
        ("delete_address", "tun9", "fd00::2/64", None),
        ("delete_address", "tun9", "10.0.0.2/24", "10.0.0.1"),
    ]
    assert fake.addresses == set()
    assert fake.routes == ORIGINAL_ROUTES


async def test_undo_after_exception(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBackend()
    with pytest.raises(ZeroDivisionError):
        async with configure_interface(
            "tun9", addresses=["10.0.0.2/24"], routes=["10.9.0.0/16"], backend=fake
        ):
            _ = 1 / 0
    assert fake.addresses == set()
    assert fake.routes == ORIGINAL_ROUTES


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
async def test_undo_after_interrupt(
    autojump_clock: trio.testing.MockClock, interrupt: type[BaseException]
) -> None:
    fake = FakeBackend()
    with pytest.raises(interrupt):
        async with configure_interface("tun9", routes=["10.9.0.0/16"], backend=fake):
            raise interrupt
    assert fake.routes == ORIGINAL_ROUTES


async def test_undo_after_cancellation_runs_shielded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeBackend()
    with trio.move_on_after(10) as scope:
        async with configure_interface(
            "tun9", addresses=["10.0.0.2/24"], routes=["10.9.0.0/16"], backend=fake
        ):
            await trio.sleep_forever()
    assert scope.cancelled_caught
    # Each undo step slept 0.1 s inside the cancelled scope and still completed.
    assert fake.addresses == set()
    assert fake.routes == ORIGINAL_ROUTES


async def test_setup_failure_undoes_what_was_done(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeBackend()
    fake.fail["add_route"] = NetConfigError("cannot add route: Network is unreachable")
    body_ran = False
    with pytest.raises(NetConfigError, match="unreachable"):
        async with configure_interface(
            "tun9", addresses=["10.0.0.2/24"], routes=["10.9.0.0/16"], backend=fake
        ):
            body_ran = True
    assert not body_ran
    assert fake.addresses == set()


async def test_undo_failure_after_clean_exit_raises_after_trying_everything(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeBackend()
    with pytest.raises(NetConfigError, match=r"could not undo route 10\.9\.0\.0/16 dev tun9"):
        async with configure_interface(
            "tun9", addresses=["10.0.0.2/24"], routes=["10.9.0.0/16"], backend=fake
        ):
            fake.fail["delete_route"] = NetConfigError("cannot delete route: EPERM", errno.EPERM)
    assert fake.addresses == set()  # the address was still removed


async def test_undo_failure_after_an_error_is_logged(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeBackend()
    caplog.set_level(logging.WARNING, "trio_sudp.tun.netconfig")

    async def failing_tunnel() -> None:
        async with configure_interface("tun9", routes=["10.9.0.0/16"], backend=fake):
            fake.fail["delete_route"] = RuntimeError("boom")
            raise KeyError("body")

    with pytest.raises(KeyError, match="body"):
        await failing_tunnel()
    assert "could not undo route 10.9.0.0/16 dev tun9: RuntimeError('boom')" in caplog.text


async def test_undo_is_bounded_in_time(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBackend()
    config = NetConfig(fake, undo_timeout=5)
    await config.add_route(Route("10.1.0.0/16", interface="tun9"))
    await config.add_route(Route("10.2.0.0/16", interface="tun9"))
    fake.hang.add("delete_route")
    start = trio.current_time()
    failures = await config.undo()
    assert trio.current_time() - start == pytest.approx(5)
    assert [f.reason for f in failures] == [
        "undo timed out before: route 10.2.0.0/16 dev tun9",
        "undo timed out before: route 10.1.0.0/16 dev tun9",
    ]
    assert config.changes == []


def test_second_ctrl_c_does_not_stop_undo() -> None:
    """A Ctrl-C during undo: the step is retried, the rest run, then KeyboardInterrupt.

    Trio delivers Ctrl-C to the main task, so this runs its own ``trio.run``.
    """
    fake = FakeBackend()
    original_delete = fake.delete_route
    signalled = False

    async def delete_with_ctrl_c(route: Route) -> None:
        nonlocal signalled
        if not signalled:
            signalled = True
            os.kill(os.getpid(), signal.SIGINT)  # arrives while deleting the first route
        await original_delete(route)

    async def main() -> NetConfig:
        config = NetConfig(fake)
        await config.add_route(Route("10.1.0.0/16", interface="tun9"))
        await config.add_route(Route("10.2.0.0/16", interface="tun9"))
        fake.delete_route = delete_with_ctrl_c  # type: ignore[method-assign]
        with trio.fail_after(10):
            await config.undo()
        return config

    with pytest.raises(KeyboardInterrupt):
        trio.run(main)
    assert signalled
    assert fake.routes == ORIGINAL_ROUTES
    assert fake.calls[-3:] == [
        ("delete_route", "10.2.0.0/16 dev tun9"),  # interrupted...
        ("delete_route", "10.2.0.0/16 dev tun9"),  # ...and retried
        ("delete_route", "10.1.0.0/16 dev tun9"),
    ]


async def test_undo_twice_does_nothing_more(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBackend()
    config = NetConfig(fake)
    await config.add_route(Route("10.1.0.0/16", interface="tun9"))
    assert await config.undo() == []
    fake.calls.clear()
    assert await config.undo() == []
    assert fake.calls == []


async def test_existing_route_is_not_ours(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBackend()
    config = NetConfig(fake)
    existing = Route("0.0.0.0/0", "192.0.2.1", "eth0")
    with pytest.raises(NetConfigError, match="exists"):
        await config.add_route(existing)
    assert await config.add_route(existing, exist_ok=True) is False
    assert config.changes == []
    await config.undo()
    assert existing in fake.routes


async def test_full_tunnel_with_half_routes(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBackend()
    async with configure_interface(
        "tun9", addresses=["10.0.0.2/24", "fd00::2/64"], backend=fake
    ) as iface:
        fake.calls.clear()
        await iface.route_all_traffic(exclude=["203.0.113.5"])
        assert fake.calls == [
            ("route_to", "203.0.113.5"),
            ("add_route", "203.0.113.5/32 via 192.0.2.1 dev eth0"),
            ("add_route", "0.0.0.0/1 dev tun9"),
            ("add_route", "128.0.0.0/1 dev tun9"),
            ("add_route", "::/1 dev tun9"),
            ("add_route", "8000::/1 dev tun9"),
        ]
        assert Route("0.0.0.0/0", "192.0.2.1", "eth0") in fake.routes  # left alone
    assert fake.routes == ORIGINAL_ROUTES


async def test_full_tunnel_replacing_the_default(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBackend()
    fake.gateways[ipaddress.ip_address("192.0.2.9")] = Gateway(None, "eth0")  # on-link
    async with configure_interface("tun9", addresses=["10.0.0.2/24"], backend=fake) as iface:
        await iface.route_all_traffic(exclude=["192.0.2.9"], replace_default=True)
        assert fake.routes == {
            Route("192.0.2.9/32", interface="eth0"),
            Route("0.0.0.0/0", interface="tun9"),
        }
    assert fake.routes == ORIGINAL_ROUTES


async def test_full_tunnel_refuses_a_server_behind_the_tunnel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeBackend()
    fake.gateways[ipaddress.ip_address("10.0.0.1")] = Gateway(None, "tun9")
    config = NetConfig(fake)
    with pytest.raises(NetConfigError, match="already routed through tun9"):
        await config.route_all_traffic("tun9", exclude=["10.0.0.1"])
    assert config.changes == []


async def test_default_gateway_for(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeBackend()
    gateway = await default_gateway_for("198.51.100.1", backend=fake)
    assert gateway == Gateway(ipaddress.ip_address("192.0.2.1"), "eth0")
    assert gateway.host_route("198.51.100.1") == Route("198.51.100.1/32", "192.0.2.1", "eth0")


def test_route_values() -> None:
    route = Route("10.1.2.3/16", interface="tun0")
    assert str(route.destination) == "10.1.0.0/16"
    assert Route("2001:db8::1", "2001:db8::ffff").destination.prefixlen == 128
    assert Route("::/0", interface="tun0").is_default
    assert (
        str(Route("10.0.0.0/8", "10.0.0.1", "eth0", 5))
        == "10.0.0.0/8 via 10.0.0.1 dev eth0 metric 5"
    )
    with pytest.raises(NetConfigError, match="needs a gateway or an interface"):
        Route("10.0.0.0/8")
    with pytest.raises(NetConfigError, match="gateway fd00::1 is IPv6"):
        Route("10.0.0.0/8", "fd00::1")
    with pytest.raises(ValueError, match="does not appear to be"):
        Route("not a network", interface="tun0")
    assert split_default_networks(6) == (
        ipaddress.ip_network("::/1"),
        ipaddress.ip_network("8000::/1"),
    )


async def test_peer_of_another_family_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    config = NetConfig(FakeBackend())
    with pytest.raises(NetConfigError, match="not of the same family"):
        await config.add_address("tun9", "fd00::2/64", peer="10.0.0.1")


# --- macOS command lines, against a fake runner -----------------------------------


class FakeRunner:
    """Answers commands from a table of (argv prefix → result); records every argv."""

    def __init__(self, answers: dict[tuple[str, ...], CommandResult] | None = None) -> None:
        self.argvs: list[list[str]] = []
        self.answers = answers or {}

    async def __call__(self, argv: Sequence[str]) -> CommandResult:
        self.argvs.append(list(argv))
        await trio.lowlevel.checkpoint()
        for prefix, result in self.answers.items():
            if tuple(argv[: len(prefix)]) == prefix:
                return result
        return CommandResult(0, "", "")


ROUTE_GET = """   route to: 198.51.100.7
destination: default
       mask: default
    gateway: 192.168.1.1
  interface: en0
      flags: <UP,GATEWAY,DONE,STATIC,PRCLONING>
"""


async def test_darwin_configure_and_undo_command_lines() -> None:
    runner = FakeRunner({("route", "-n", "get"): CommandResult(0, ROUTE_GET, "")})
    backend = DarwinBackend(runner)
    async with configure_interface(
        "utun4",
        addresses=["10.0.0.2/24", "fd00::2/64"],
        peer="10.0.0.1",
        mtu=1400,
        routes=["10.9.0.0/16"],
        backend=backend,
    ) as iface:
        await iface.route_all_traffic(exclude=[SERVER4], versions=[4])
        assert runner.argvs == [
            ["ifconfig", "utun4", "mtu", "1400"],
            ["ifconfig", "utun4", "inet", "10.0.0.2/24", "10.0.0.1", "alias"],
            ["route", "-q", "-n", "add", "-inet", "-net", "10.0.0.0/24", "-interface", "utun4"],
            ["ifconfig", "utun4", "inet6", "fd00::2/64", "alias"],
            ["route", "-q", "-n", "add", "-inet6", "-net", "fd00::/64", "-interface", "utun4"],
            ["ifconfig", "utun4", "up"],
            ["route", "-q", "-n", "add", "-inet", "-net", "10.9.0.0/16", "-interface", "utun4"],
            ["route", "-n", "get", "-inet", "198.51.100.7"],
            [
                "route",
                "-q",
                "-n",
                "add",
                "-inet",
                "-host",
                "198.51.100.7",
                "-gateway",
                "192.168.1.1",
            ],
            ["route", "-q", "-n", "add", "-inet", "-net", "0.0.0.0/1", "-interface", "utun4"],
            ["route", "-q", "-n", "add", "-inet", "-net", "128.0.0.0/1", "-interface", "utun4"],
        ]
        runner.argvs.clear()
    assert runner.argvs == [
        ["route", "-q", "-n", "delete", "-inet", "-net", "128.0.0.0/1", "-interface", "utun4"],
        ["route", "-q", "-n", "delete", "-inet", "-net", "0.0.0.0/1", "-interface", "utun4"],
        [
            "route",
            "-q",
            "-n",
            "delete",
            "-inet",
            "-host",
            "198.51.100.7",
            "-gateway",
            "192.168.1.1",
        ],
        ["route", "-q", "-n", "delete", "-inet", "-net", "10.9.0.0/16", "-interface", "utun4"],
        ["route", "-q", "-n", "delete", "-inet6", "-net", "fd00::/64", "-interface", "utun4"],
        ["ifconfig", "utun4", "inet6", "fd00::2", "-alias"],
        ["route", "-q", "-n", "delete", "-inet", "-net", "10.0.0.0/24", "-interface", "utun4"],
        ["ifconfig", "utun4", "inet", "10.0.0.2", "-alias"],
    ]


async def test_darwin_address_without_peer_points_to_itself() -> None:
    runner = FakeRunner()
    await DarwinBackend(runner).add_address("utun4", ipaddress.ip_interface("10.0.0.2/32"), None)
    assert runner.argvs == [["ifconfig", "utun4", "inet", "10.0.0.2/32", "10.0.0.2", "alias"]]


async def test_darwin_replace_default() -> None:
    runner = FakeRunner({("route", "-n", "get"): CommandResult(0, ROUTE_GET, "")})
    config = NetConfig(DarwinBackend(runner))
    await config.replace_default_route("utun4")
    assert runner.argvs == [
        ["route", "-n", "get", "-inet", "default"],
        ["route", "-q", "-n", "delete", "-inet", "default", "-gateway", "192.168.1.1"],
        ["route", "-q", "-n", "add", "-inet", "default", "-interface", "utun4"],
    ]
    runner.argvs.clear()
    assert await config.undo() == []
    assert runner.argvs == [
        ["route", "-q", "-n", "delete", "-inet", "default", "-interface", "utun4"],
        ["route", "-q", "-n", "add", "-inet", "default", "-gateway", "192.168.1.1"],
    ]


async def test_darwin_link_local_gateway_is_scoped() -> None:
    runner = FakeRunner()
    route = Route("::/0", "fe80::1", "en0")
    await DarwinBackend(runner).add_route(route)
    assert runner.argvs[0][-2:] == ["-gateway", "fe80::1%en0"]


async def test_darwin_errors() -> None:
    exists = CommandResult(1, "", "route: writing to routing socket: File exists\n")
    gone = CommandResult(1, "", "route: writing to routing socket: not in table\n")
    denied = CommandResult(1, "", "route: must be root to alter routing table\n")
    route = Route("10.9.0.0/16", interface="utun4")

    with pytest.raises(NetConfigError) as info:
        await DarwinBackend(FakeRunner({("route",): exists})).add_route(route)
    assert info.value.errno == errno.EEXIST
    config = NetConfig(DarwinBackend(FakeRunner({("route",): exists})))
    assert await config.add_route(route, exist_ok=True) is False

    await DarwinBackend(FakeRunner({("route",): gone})).delete_route(route)  # no error
    gone_if = CommandResult(1, "", "ifconfig: interface utun4 does not exist\n")
    await DarwinBackend(FakeRunner({("ifconfig",): gone_if})).delete_address(
        "utun4", ipaddress.ip_interface("10.0.0.2/24"), None
    )
    with pytest.raises(NetConfigError, match="must be root") as info:
        await DarwinBackend(FakeRunner({("route",): denied})).delete_route(route)
    assert info.value.reason.startswith("route -q -n delete -inet -net 10.9.0.0/16")

    unreachable = FakeRunner({("route", "-n", "get"): gone})
    with pytest.raises(NetConfigError, match=r"no route to 203\.0\.113\.1"):
        await DarwinBackend(unreachable).route_to(ipaddress.ip_address("203.0.113.1"))
    assert await DarwinBackend(unreachable).default_routes(6) == []


def test_parse_route_get() -> None:
    assert parse_route_get(ROUTE_GET) == ("192.168.1.1", "en0")
    on_link = "   route to: 192.168.1.20\n  interface: en0\n    gateway: link#4\n"
    assert parse_route_get(on_link) == ("link#4", "en0")
    assert parse_route_get("") == (None, None)


async def test_darwin_on_link_gateway() -> None:
    on_link = "  route to: 192.168.1.20\n  interface: en0\n    gateway: link#4\n"
    runner = FakeRunner({("route", "-n", "get"): CommandResult(0, on_link, "")})
    gateway = await DarwinBackend(runner).route_to(ipaddress.ip_address("192.168.1.20"))
    assert gateway == Gateway(None, "en0")


async def test_run_command() -> None:
    with trio.fail_after(10):
        result = await run_command(["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert result == CommandResult(3, "out\n", "err\n")
        with pytest.raises(NetConfigError, match="cannot run /nonexistent/ifconfig"):
            await run_command(["/nonexistent/ifconfig"])


# --- the Linux backend, for real, inside namespaces ------------------------------


def ip_json(*args: str) -> Any:
    done = subprocess.run(
        ["ip", "-j", *args], check=True, capture_output=True, text=True, timeout=10
    )
    return json.loads(done.stdout or "[]")


def main_routes() -> list[dict[str, Any]]:
    """Both main tables, without the per-link fe80::/64 a link gets when it goes up."""
    routes = ip_json("route", "show", "table", "main") + ip_json("-6", "route", "show")
    return [r for r in routes if r["dst"] != "fe80::/64"]


def addresses(ifname: str) -> list[tuple[str, str | None, int]]:
    """``(local, peer, prefixlen)`` of the non-link-local addresses of ``ifname``."""
    [link] = ip_json("addr", "show", "dev", ifname)
    return [
        (a["local"], a.get("address"), a["prefixlen"])
        for a in link["addr_info"]
        if not a["local"].startswith("fe80:")
    ]


def route_get(destination: str) -> dict[str, Any]:
    [found] = ip_json("route", "get", destination)
    return dict(found)


async def scenario_configure_and_undo() -> None:
    """Addresses, peer, MTU, up and routes are set; all is removed on each way out."""
    from trio_sudp.tun.linux import LinuxTun

    with trio.fail_after(30), LinuxTun.open("sudp%d") as tun:
        before = main_routes()
        for exit_by in ("normal", "exception", "cancel", "device gone"):
            with trio.move_on_after(5) as scope:
                try:
                    async with configure_interface(
                        tun.name,
                        addresses=[f"{V4_LOCAL}/24", f"{V6_LOCAL}/64"],
                        peer=V4_PEER,
                        mtu=1380,
                        routes=[
                            "10.203.0.0/16",
                            Route("10.204.0.0/24", gateway="10.201.0.9", interface=tun.name),
                            "fd00:204::/48",
                        ],
                    ):
                        [link] = ip_json("link", "show", "dev", tun.name)
                        assert link["mtu"] == 1380
                        assert "UP" in link["flags"]
                        assert addresses(tun.name) == [
                            (V4_LOCAL, V4_PEER, 24),
                            (V6_LOCAL, None, 64),
                        ]
                        mine = {(r["dst"], r.get("gateway")) for r in main_routes()}
                        assert {
                            ("10.201.0.0/24", None),
                            ("10.203.0.0/16", None),
                            ("10.204.0.0/24", "10.201.0.9"),
                            ("fd00:204::/48", None),
                        } <= mine
                        assert route_get("10.203.1.1")["dev"] == tun.name
                        if exit_by == "exception":
                            raise LookupError
                        if exit_by == "cancel":
                            scope.cancel()
                            await trio.sleep_forever()
                        if exit_by == "device gone":
                            tun.close()  # its routes vanish with it: undo must not fail
                except LookupError:
                    pass
            if exit_by == "device gone":
                break
            assert addresses(tun.name) == []
            assert main_routes() == before, exit_by


async def _full_tunnel(tun: Any, mode: str) -> None:
    """Configure, route all traffic into the TUN, check it, then leave as ``mode`` says."""
    async with configure_interface(
        tun.name, addresses=[f"{V4_LOCAL}/24", f"{V6_LOCAL}/64"]
    ) as iface:
        replace = mode == "replace"
        await iface.route_all_traffic(exclude=[SERVER4, SERVER6], replace_default=replace)
        assert route_get("8.8.8.8")["dev"] == tun.name
        assert route_get("2001:4860::8888")["dev"] == tun.name
        server = route_get(SERVER4)
        assert (server["gateway"], server["dev"]) == ("10.200.0.1", "to0")
        server6 = route_get(SERVER6)
        assert (server6["gateway"], server6["dev"]) == ("fd00:200::1", "to0")
        defaults = [r["dev"] for r in main_routes() if r["dst"] == "default"]
        assert defaults == ([tun.name] * 2 if replace else ["to0"] * 2)

        # A packet to anywhere now comes out of the TUN.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.sendto(b"to the world", ("8.8.8.8", 53))
        sock.close()
        with trio.fail_after(5):
            while True:
                try:
                    packet = tun.read_nowait()
                except BlockingIOError:
                    await tun.wait_readable()
                    continue
                if packet[0] >> 4 == 4 and packet[16:20] == socket.inet_aton("8.8.8.8"):
                    break
        assert packet[12:16] == socket.inet_aton(V4_LOCAL)
        assert packet.endswith(b"to the world")

        if mode in ("sigint", "sigterm"):
            os.kill(os.getpid(), signal.SIGINT if mode == "sigint" else signal.SIGTERM)
            await trio.sleep_forever()


async def _cancel_on_sigterm(
    scope: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """What the CLI does: SIGTERM cancels the tunnel."""
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            scope.cancel()
            return


async def scenario_full_tunnel(mode: str) -> None:
    """All traffic goes into the TUN but the server's; everything is restored after.

    Runs in node 1 of ``netns2``, whose default route is via 10.200.0.1 on ``to0``.
    """
    from trio_sudp.tun.linux import LinuxTun

    with trio.fail_after(30), LinuxTun.open("sudp%d") as tun:
        before = main_routes()
        gateway = await default_gateway_for(SERVER4)
        assert gateway == Gateway(ipaddress.ip_address("10.200.0.1"), "to0")
        if mode == "sigint":
            with pytest.raises(KeyboardInterrupt):
                await _full_tunnel(tun, mode)
        elif mode == "sigterm":
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(_cancel_on_sigterm, scope)
                    await _full_tunnel(tun, mode)
            assert scope.cancelled_caught
        else:
            await _full_tunnel(tun, mode)
        after = main_routes()
        assert after == before
        assert route_get("8.8.8.8")["dev"] == "to0"


async def scenario_gateway_lookup() -> None:
    """default_gateway_for finds the next hop, or no next hop for an on-link address."""
    with trio.fail_after(10):
        assert await default_gateway_for("203.0.113.9") == Gateway(
            ipaddress.ip_address("10.200.0.1"), "to0"
        )
        assert await default_gateway_for("10.200.0.1") == Gateway(None, "to0")
        assert await default_gateway_for("2001:db8::1") == Gateway(
            ipaddress.ip_address("fd00:200::1"), "to0"
        )
        subprocess.run(["ip", "route", "del", "default"], check=True, timeout=10)
        with pytest.raises(NetConfigError, match=r"cannot find the route to 203\.0\.113\.9"):
            await default_gateway_for("203.0.113.9")


@pytest.mark.netns
async def test_linux_configure_and_undo(netns1: Topology) -> None:
    with trio.fail_after(TIME_LIMIT):
        await run_scenario(netns1[0], THIS, "scenario_configure_and_undo")


@pytest.mark.netns
async def test_linux_gateway_lookup(netns2: Topology) -> None:
    with trio.fail_after(TIME_LIMIT):
        await run_scenario(netns2[1], THIS, "scenario_gateway_lookup")


@pytest.mark.netns
@pytest.mark.parametrize("mode", ["split", "replace", "sigint", "sigterm"])
async def test_linux_full_tunnel(netns2: Topology, mode: str) -> None:
    client = netns2[1]
    show = ["sh", "-c", "ip route; ip -6 route"]
    before = run_in(client, show).stdout
    with trio.fail_after(TIME_LIMIT):
        await run_scenario(client, THIS, "scenario_full_tunnel", mode)
    # The host routes via the real gateway would outlive the process: they must be gone.
    assert run_in(client, show).stdout == before


if __name__ == "__main__":
    scenario_main(globals())
