"""Forwarding and NAT on the server, end to end in client/server/internet namespaces.

No VPN here: the server's veth towards the client stands in for the tunnel, so
what is tested is exactly what ``server_forwarding`` sets up. It runs in a Python
process inside the server namespace (this file run as a script: ``scenario_hold``)
that holds the context open until SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from e2e import wait_for
from internet import (
    InternetTopology,
    cannot_reach,
    forwarding_sysctls,
    internet_topology,
    our_tables,
    reaches,
    require_nft,
)
from netns import run_in, scenario_main
from trio_sudp.vpn.ipforward import IPForwarding
from trio_sudp.vpn.nat import server_forwarding, table_name

pytestmark = pytest.mark.netns

HAS_FORCE_FORWARDING = os.path.exists("/proc/sys/net/ipv6/conf/default/force_forwarding")
IPV6_MODES = [
    pytest.param(
        True,
        id="ipv6-per-interface",
        marks=pytest.mark.skipif(
            not HAS_FORCE_FORWARDING, reason="needs Linux >= 6.17 (ipv6 force_forwarding)"
        ),
    ),
    pytest.param(False, id="ipv6-global-switch"),
]


async def scenario_hold(spec: str) -> None:
    """Hold ``server_forwarding`` open until SIGTERM; print its state once it is up."""
    args = json.loads(spec)
    sysctls = IPForwarding(force_forwarding=None if args.pop("force_forwarding") else False)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with server_forwarding(**args, ip_forwarding=sysctls) as state:
            shown = {
                "egress": state.egress,
                "table": state.table,
                "turned_on": sorted(str(k) for k in state.turned_on),
                "replaced_stale": state.replaced_stale,
            }
            print("ready", json.dumps(shown), flush=True)
            async for _ in signals:
                break
    print("stopped", flush=True)


@dataclass
class Holder:
    process: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def state(self) -> dict[str, Any]:
        line = next(x for x in self.text().splitlines() if x.startswith("ready "))
        state: dict[str, Any] = json.loads(line.split(" ", 1)[1])
        return state

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=30) == 0, self.text()
        assert "stopped" in self.text()


def hold(net: InternetTopology, log: Path, **spec: Any) -> Holder:
    args = {
        "tunnel": net.tunnel_side,
        "tunnel_networks": [str(link.network4) for link in net.topo.links[:1]]
        + [str(link.network6) for link in net.topo.links[:1]],
        "force_forwarding": True,
        **spec,
    }
    with log.open("w") as out:
        process = net.topo.spawn(
            net.server,
            [sys.executable, __file__, "scenario_hold", json.dumps(args)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    holder = Holder(process, log)

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                f"the forwarding holder exited {process.returncode}:\n{holder.text()}"
            )
        return "ready " in holder.text()

    wait_for(up, 30, "forwarding to be set up")
    return holder


@pytest.mark.parametrize("per_interface_ipv6", IPV6_MODES)
def test_masquerade_takes_the_client_to_the_internet_as_the_server(
    per_interface_ipv6: bool, tmp_path: Path
) -> None:
    require_nft()
    with internet_topology() as net:
        before = forwarding_sysctls(net.server)
        for version in (4, 6):
            cannot_reach(net, version)

        holder = hold(net, tmp_path / "hold.log", force_forwarding=per_interface_ipv6)
        state = holder.state()
        assert state["egress"] == {"4": net.egress, "6": net.egress}  # the default route's
        assert our_tables(net.server) == [table_name(net.tunnel_side)]
        during = forwarding_sysctls(net.server)
        for name in (net.tunnel_side, net.egress):
            assert during[f"ipv4/conf/{name}/forwarding"] == "1"
        assert during["ipv4/conf/lo/forwarding"] == "0"
        assert during["ipv4/ip_forward"] == "0"
        if per_interface_ipv6:
            assert during["ipv6/conf/all/forwarding"] == "0"
            for name in (net.tunnel_side, net.egress):
                assert during[f"ipv6/conf/{name}/force_forwarding"] == "1"
        else:
            assert during["ipv6/conf/all/forwarding"] == "1"
            # Only the global switch changed: each interface keeps its host behaviour.
            for name in (net.tunnel_side, net.egress, "lo", "default"):
                assert during[f"ipv6/conf/{name}/forwarding"] == "0"
        changed = sorted(k for k in before if before[k] != during[k])
        assert len(changed) == len(state["turned_on"])

        for version in (4, 6):
            reaches(net, version, tmp_path, seen_as=net.server_address(version))

        holder.stop()
        assert forwarding_sysctls(net.server) == before
        assert our_tables(net.server) == []
        for version in (4, 6):
            cannot_reach(net, version)


def test_forwarding_without_masquerade_keeps_the_client_addresses(tmp_path: Path) -> None:
    require_nft()
    with internet_topology() as net:
        # The internet host can route back to the client (a routed VPN).
        for version, client_net in ((4, "10.200.0.0/24"), (6, "fd00:200:0::/64")):
            via = net.server_address(version)
            run_in(net.internet, ["ip", f"-{version}", "route", "add", client_net, "via", via])
        # A switch that is on already stays on afterwards.
        run_in(
            net.server, ["sh", "-c", f"echo 1 > /proc/sys/net/ipv4/conf/{net.egress}/forwarding"]
        )
        before = forwarding_sysctls(net.server)

        holder = hold(net, tmp_path / "hold.log", egress=net.egress, masquerade=False)
        assert f"net.ipv4.conf.{net.egress}.forwarding" not in holder.state()["turned_on"]
        for version in (4, 6):
            reaches(net, version, tmp_path, seen_as=net.client_address(version))
        holder.stop()
        assert forwarding_sysctls(net.server) == before
        assert before[f"ipv4/conf/{net.egress}/forwarding"] == "1"


def test_a_killed_servers_table_is_replaced_and_its_switches_still_restored(
    tmp_path: Path,
) -> None:
    require_nft()
    with internet_topology() as net:
        before = forwarding_sysctls(net.server)
        first = hold(net, tmp_path / "first.log")
        first.process.kill()
        first.process.wait(timeout=10)
        assert our_tables(net.server) == [table_name(net.tunnel_side)]  # left behind
        assert forwarding_sysctls(net.server) != before

        second = hold(net, tmp_path / "second.log")
        assert second.state()["replaced_stale"] is True
        assert second.state()["turned_on"] == first.state()["turned_on"]
        assert "replacing nftables table inet trio-sudp-to0" in second.text()
        assert our_tables(net.server) == [table_name(net.tunnel_side)]  # one, not two
        reaches(net, 4, tmp_path, seen_as=net.server_address(4))

        second.stop()
        assert our_tables(net.server) == []
        assert forwarding_sysctls(net.server) == before  # as before the first start


if __name__ == "__main__":
    scenario_main(globals())
