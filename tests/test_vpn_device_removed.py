"""A TUN device deleted under the tunnel: "TUN device X was removed", from either path.

The reader finds out on its next read; a write finds out when the kernel refuses it,
and then the writer task raises. The ``scenario_*`` functions do it to real TUN
devices, deleted with ``ip link del`` inside a network namespace the test created
(``python tests/test_vpn_device_removed.py scenario_x``); the daemon's own exit
(one log line, exit 1) is in ``test_e2e_netns.py``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess

import pytest
import trio
import trio.testing

from netns import Topology, netns1, run_scenario, scenario_main, wait_until
from trio_sudp.testing.packets import tcp_segment, udp4
from trio_sudp.tun import TunError
from trio_sudp.tun.linux import LinuxTun
from trio_sudp.vpn.device import DeviceIO

__all__ = ["netns1"]  # the fixture, imported for pytest

THIS = os.path.abspath(__file__)


class GoneDevice:
    """A device that answers every call as Linux does once the interface was deleted."""

    name = "fake0"
    vnet_header = False

    def read_nowait(self) -> bytes:
        raise OSError(errno.EBADFD, "File descriptor in bad state")

    def write_nowait(self, packet: bytes) -> None:
        raise OSError(errno.EBADFD, "File descriptor in bad state")

    async def wait_readable(self) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_writable(self) -> None:
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        pass


async def test_a_write_to_a_removed_device_ends_the_writer_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    io = DeviceIO(GoneDevice())
    caplog.set_level(logging.DEBUG, "trio_sudp")
    with (
        trio.fail_after(5),
        pytest.RaisesGroup(pytest.RaisesExc(TunError, match=r"^TUN device fake0 was removed$")),
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(io.run_writer)
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(3):
                io.write(udp4("10.0.0.2", "10.0.0.1", 1, 2, b"x"))
            await trio.sleep_forever()
    assert io.stats.tx_errors == 3
    assert caplog.records == []  # no line per lost packet: the exit says it once


async def test_a_read_from_a_removed_device_ends_the_reader() -> None:
    io = DeviceIO(GoneDevice())
    with trio.fail_after(5), pytest.raises(TunError) as info:
        await io.run_reader(lambda p, now: None, boundary=contextlib.nullcontext)
    assert str(info.value) == "TUN device fake0 was removed"
    assert info.value.errno == errno.EBADFD


# --- real devices, in a namespace -------------------------------------------------


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


async def delete_when_idle(name: str) -> None:
    await trio.testing.wait_all_tasks_blocked()
    ip("link", "del", name)


async def scenario_reader_waiting() -> None:
    """A reader waiting for packets wakes with the sentence when the device is deleted."""
    with trio.fail_after(20), LinuxTun.open("sudp%d", tso=True) as tun:
        ip("link", "set", tun.name, "up")
        io = DeviceIO(tun)
        with pytest.RaisesGroup(TunError) as caught:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(delete_when_idle, tun.name)
                await io.run_reader(lambda p, now: None, boundary=contextlib.nullcontext)
        assert str(caught.value.exceptions[0]) == f"TUN device {tun.name} was removed"
        assert not link_exists(tun.name)


async def scenario_writer(batched: str) -> None:
    """Packets written after the deletion, one by one or as a GSO batch, are refused;
    the writer task raises the sentence. No reader runs: the writes alone find out."""
    vnet = batched == "batched"
    with trio.fail_after(20), LinuxTun.open("sudp%d", vnet_header=vnet) as tun:
        ip("link", "set", tun.name, "up")
        ip("addr", "add", "10.0.0.1/24", "dev", tun.name)
        io = DeviceIO(tun)
        segments = [
            tcp_segment("10.0.0.2", "10.0.0.1", bytes(1000), seq=i * 1000, ident=i)
            for i in range(8)
        ]
        with pytest.RaisesGroup(TunError) as caught:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(io.run_writer)
                io.write(segments[0])  # the device takes it
                assert io.stats.tx_packets == 1 and io.stats.tx_errors == 0
                ip("link", "del", tun.name)
                await wait_until(lambda: not link_exists(tun.name))
                if vnet:
                    with io.write_batch():
                        for segment in segments[1:]:
                            io.write(segment)
                else:
                    for segment in segments[1:]:
                        io.write(segment)
                await trio.sleep_forever()
        assert str(caught.value.exceptions[0]) == f"TUN device {tun.name} was removed"
        assert io.stats.tx_errors == 7
        assert io.stats.tx_gso_writes == 0
    print("ok")


@pytest.mark.netns
@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(["scenario_reader_waiting"], id="reader"),
        pytest.param(["scenario_writer", "one-by-one"], id="writer-one-by-one"),
        pytest.param(["scenario_writer", "batched"], id="writer-gso-batch"),
    ],
)
async def test_a_real_device_deleted_in_a_namespace(netns1: Topology, scenario: list[str]) -> None:
    with trio.fail_after(60):
        await run_scenario(netns1[0], THIS, *scenario)


if __name__ == "__main__":
    scenario_main(globals())
