"""The daemon's watchdog: a removed or replaced control socket, a vanished UDP address.

The loop runs on trio's autojump clock; the control socket is a real one in a
temporary directory; the UDP address checks bind real sockets inside a network
namespace the test created (``python tests/test_watchdog.py scenario_x``), where
addresses are added and deleted without touching the host.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from netns import Topology, netns1, run_scenario, scenario_main
from trio_sudp.daemon.control import ControlSocket, serve_control
from trio_sudp.daemon.watchdog import (
    WATCH_INTERVAL,
    Fault,
    control_socket_check,
    udp_address_check,
    watch,
    watch_daemon,
)

__all__ = ["netns1"]  # the fixture, imported for pytest

THIS = os.path.abspath(__file__)


async def answer(command: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True}


# --- the loop -------------------------------------------------------------------


async def test_the_first_problem_ends_the_watch_at_the_next_look(
    autojump_clock: trio.testing.MockClock,
) -> None:
    looks: list[float] = []
    broken_at = 3.5

    def fine() -> str | None:
        looks.append(trio.current_time())
        return None

    def breaks() -> str | None:
        return "the thing was removed" if trio.current_time() >= broken_at else None

    after: list[float] = []

    def last() -> str | None:
        after.append(trio.current_time())
        return None

    start = trio.current_time()
    with pytest.raises(Fault, match=r"^the thing was removed$"):
        await watch([fine, breaks, last], interval=WATCH_INTERVAL)
    # One look a second: noticed at the first look after the change, within a second;
    # the checks after the one that found it are not run then.
    assert [t - start for t in looks] == [1.0, 2.0, 3.0, 4.0]
    assert [t - start for t in after] == [1.0, 2.0, 3.0]
    assert trio.current_time() - start == 4.0


async def test_nothing_wrong_means_one_look_a_second_forever(
    autojump_clock: trio.testing.MockClock,
) -> None:
    looks = 0

    def fine() -> str | None:
        nonlocal looks
        looks += 1
        return None

    with trio.move_on_after(600.5):
        await watch([fine])
    assert looks == 600


# --- the control socket ----------------------------------------------------------


async def watched_control_socket(path: Path, change: Any) -> tuple[float, Fault]:
    """Serve ``path`` under :func:`watch_daemon`, call ``change(path)`` after 0.3 s;
    return how long after the change the watchdog raised, and what."""
    changed_at = 0.0
    with pytest.RaisesGroup(Fault) as caught:
        async with trio.open_nursery() as nursery:
            control = await nursery.start(serve_control, path, answer)
            nursery.start_soon(watch_daemon, control)
            await trio.sleep(0.3)
            change(path)
            changed_at = trio.current_time()
            await trio.sleep(60)
    (fault,) = caught.value.exceptions
    assert isinstance(fault, Fault)
    return trio.current_time() - changed_at, fault


async def test_a_removed_control_socket_is_noticed_within_a_second(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "run" / "sudp0.sock"
    after, fault = await watched_control_socket(path, Path.unlink)
    assert str(fault) == f"the control socket {path} was removed"
    assert 0 < after <= WATCH_INTERVAL
    assert not path.exists()


def replace_with_socket(path: Path) -> None:
    path.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(path))  # another daemon's, say


@pytest.mark.parametrize(
    "replace",
    [
        pytest.param(lambda p: (p.unlink(), p.write_text("x")), id="by-a-file"),
        pytest.param(replace_with_socket, id="by-another-socket"),
        pytest.param(lambda p: (p.unlink(), p.mkdir()), id="by-a-directory"),
    ],
)
async def test_a_replaced_control_socket_is_noticed_and_left_alone(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, replace: Any
) -> None:
    path = tmp_path / "sudp0.sock"
    after, fault = await watched_control_socket(path, replace)
    assert str(fault) == f"the control socket {path} was replaced by another file"
    assert 0 < after <= WATCH_INTERVAL
    assert os.path.lexists(path)  # not ours any more: not removed on the way out


async def test_a_whole_removed_directory_counts_as_removed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    directory = tmp_path / "run"
    path = directory / "sudp0.sock"

    def remove_directory(path: Path) -> None:
        path.unlink()
        directory.rmdir()
        directory.write_text("now a file")  # lstat of path: NotADirectoryError

    after, fault = await watched_control_socket(path, remove_directory)
    assert 0 < after <= WATCH_INTERVAL
    assert str(fault) == f"the control socket {path} was removed"


async def test_a_control_socket_left_in_place_is_never_a_problem(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "sudp0.sock"
    async with trio.open_nursery() as nursery:
        control = await nursery.start(serve_control, path, answer)
        assert isinstance(control, ControlSocket) and str(control) == str(path)
        nursery.start_soon(watch_daemon, control, ("0.0.0.0", 7000))  # wildcard: not watched
        os.utime(path)  # touched, still the same file
        await trio.sleep(30)
        assert control_socket_check(control)() is None
        nursery.cancel_scope.cancel()
    assert not path.exists()  # ours: removed on the way out


# --- the UDP address ----------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "::ffff:0.0.0.0"])
def test_a_wildcard_address_is_not_watched(host: str) -> None:
    assert udp_address_check(host) is None


def test_a_loopback_address_is_there() -> None:
    check = udp_address_check("127.0.0.1")
    assert check is not None
    assert check() is None


V4 = "10.99.0.1"
V6 = "fd00:99::1"
LINK_LOCAL = "fe80::99"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


async def scenario_deleted_addresses() -> None:
    """Each address passes while on its interface, a socket bound to it or not, and is
    reported once deleted: IPv4, IPv6, and IPv6 link-local with its scope."""
    ip("link", "add", "wd0", "type", "veth", "peer", "name", "wd1")
    ip("link", "set", "wd0", "up")
    ip("link", "set", "wd1", "up")
    ip("addr", "add", f"{V4}/24", "dev", "wd0")
    ip("addr", "add", f"{V6}/64", "dev", "wd0", "nodad")
    ip("addr", "add", f"{LINK_LOCAL}/64", "dev", "wd1", "nodad")
    for host, dev, prefix in ((V4, "wd0", 24), (V6, "wd0", 64), (f"{LINK_LOCAL}%wd1", "wd1", 64)):
        check = udp_address_check(host)
        assert check is not None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        bound = socket.socket(family, socket.SOCK_DGRAM)
        bound.bind(socket.getaddrinfo(host, 7000, family, socket.SOCK_DGRAM)[0][4])
        assert check() is None
        ip("addr", "del", f"{host.partition('%')[0]}/{prefix}", "dev", dev)
        assert check() == (
            f"the UDP address {host} of the server's socket was removed from this host"
        )
        bound.close()
    print("ok")


@pytest.mark.netns
async def test_deleted_addresses_are_noticed_in_a_namespace(netns1: Topology) -> None:
    with trio.fail_after(60):
        out = await run_scenario(netns1[0], THIS, "scenario_deleted_addresses")
    assert out.strip() == "ok"


if __name__ == "__main__":
    scenario_main(globals())
