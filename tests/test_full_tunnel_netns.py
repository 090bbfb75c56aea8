"""Laptop → tunnel → server → internet, with the real ``serve`` and ``connect`` processes.

Three namespaces (tests/internet.py): the client, the server, and an "internet" host
that only the server reaches. Configurations are made by the CLI as a new user
would (``config init-server --masquerade``, ``config add-client --full-tunnel
--dns``). DNS goes to a fake ``resolvectl`` on the client daemon's ``PATH`` that
records its calls (the real one would change the host's DNS); hooks are ``/bin/sh``
commands writing to the same log. The metrics endpoints are scraped over HTTP from
inside the daemons' namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e import (
    TRIO_SUDP,
    Configs,
    add_lines,
    cli,
    links,
    make_configs,
    ping,
    show,
    start_client,
    start_server,
    wait_for,
)
from internet import (
    InternetTopology,
    cannot_reach,
    forwarding_sysctls,
    internet_topology,
    our_tables,
    reaches,
    require_nft,
)
from netns import Node, netns_topology, require_netns, run_in
from trio_sudp.vpn.dns import Resolvconf

pytestmark = pytest.mark.netns

TABLE = "trio-sudp-sudp0"

# Records "resolvectl ARGS" (or "resolvconf ARGS", and its stdin) in the events log.
FAKE_TOOL = """#!/bin/sh
echo "$(/usr/bin/basename "$0") $*" >> {log}
if [ "$1" = "-a" ]; then /bin/sed 's/^/stdin: /' >> {log}; fi
"""


class Events:
    """The log that fake tools and hooks write to, in the order things happen."""

    def __init__(self, tmp: Path, name: str = "events") -> None:
        self.path = tmp / name
        self.bin = tmp / f"{name}-bin"
        self.bin.mkdir()

    def tool(self, name: str) -> None:
        path = self.bin / name
        path.write_text(FAKE_TOOL.format(log=self.path))
        path.chmod(0o755)

    def path_env(self) -> dict[str, str]:
        """The daemon's environment: the fake tools first on PATH."""
        return {"PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def hook(self, phase: str, *, nft: bool = False) -> str:
        """A hook recording ``phase %i``, whether the interface exists (and our table)."""
        ip = shutil.which("ip")
        command = (
            f"if {ip} link show %i >/dev/null 2>&1; then s=present; else s=absent; fi;"
            f' echo "{phase} %i $s'
        )
        if nft:
            nft_command = shutil.which("nft")
            command = (
                f"if {nft_command} list table inet trio-sudp-%i >/dev/null 2>&1;"
                " then t=nat; else t=-; fi; " + command + " $t"
            )
        return command + f'" >> {self.path}'

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []


def toml_hooks(events: Events, *, nft: bool = False, **override: str) -> list[str]:
    """The four hook keys, each recording its phase unless overridden."""
    phases = ("pre_up", "post_up", "pre_down", "post_down")
    # A JSON string of ASCII text is a TOML basic string.
    return [f"{p} = {json.dumps(override.get(p, events.hook(p, nft=nft)))}" for p in phases]


def full_tunnel_configs(
    net: InternetTopology, tmp: Path, *, masquerade: bool = True, dns: bool = False
) -> Configs:
    """``config init-server`` (tunnel networks for IPv4 and IPv6) and one full-tunnel
    client, ``laptop``, by the CLI."""
    endpoint = f"{net.server.addr4(net.client.index)}:7000"
    args = ["config", "init-server", "-c", "server.toml", "--endpoint", endpoint,
            "--network", "10.0.0.1/24", "--network", "fd00:5d::1/64",
            "--control-socket", str(tmp / "server.sock")]  # fmt: skip
    if masquerade:
        args += ["--masquerade", "default-route"]
    made = cli(*args, cwd=tmp)
    assert made.returncode == 0, made.stderr
    args = ["config", "add-client", "-c", "server.toml", "-o", "laptop.toml", "--name",
            "laptop", "--full-tunnel", "--control-socket", str(tmp / "laptop.sock")]  # fmt: skip
    if dns:
        args += ["--dns", "10.0.0.1"]
    made = cli(*args, cwd=tmp)
    assert made.returncode == 0, made.stderr
    return Configs(
        tmp / "server.toml", [tmp / "laptop.toml"], tmp / "server.sock", [tmp / "laptop.sock"]
    )


def test_full_tunnel_client_reaches_the_internet_as_the_server(tmp_path: Path) -> None:
    """forward + masquerade: ping and a checksummed TCP fetch, IPv4 and IPv6, with the
    server's address as the source; DNS for the tunnel; all of it undone on exit."""
    require_nft()
    with internet_topology() as net:
        before = forwarding_sysctls(net.server)
        configs = full_tunnel_configs(net, tmp_path, dns=True)
        events = Events(tmp_path)
        events.tool("resolvectl")
        server = start_server(net.topo, configs, tmp_path, node=net.server.index)
        assert our_tables(net.server) == [TABLE]
        assert "forwarding sudp0: IPv4 via to2, IPv6 via to2, masquerading" in server.text()
        client = start_client(
            net.topo, configs, tmp_path, 1, node=net.client.index, env=events.path_env()
        )
        for version in (4, 6):
            reaches(net, version, tmp_path, seen_as=net.server_address(version))
        # Full tunnel: every name goes to the tunnel's DNS server.
        assert events.lines() == ["resolvectl dns sudp0 10.0.0.1", "resolvectl domain sudp0 ~."]

        assert client.stop() == 0
        assert events.lines()[2:] == ["resolvectl revert sudp0"]
        assert server.stop() == 0
        assert our_tables(net.server) == []
        assert forwarding_sysctls(net.server) == before
        assert not [n for n in links(net.server) if n.startswith("sudp")]


def test_without_forward_the_client_reaches_only_the_server(tmp_path: Path) -> None:
    require_nft()
    with internet_topology() as net:
        before = forwarding_sysctls(net.server)
        configs = full_tunnel_configs(net, tmp_path, masquerade=False)
        start_server(net.topo, configs, tmp_path, node=net.server.index)
        start_client(net.topo, configs, tmp_path, 1, node=net.client.index)
        assert ping(net.client, "10.0.0.1")
        assert ping(net.client, "fd00:5d::1")
        for version in (4, 6):
            cannot_reach(net, version)
        assert our_tables(net.server) == []
        during = forwarding_sysctls(net.server)
        assert {k: v for k, v in during.items() if "/sudp0/" not in k} == before
        assert during["ipv4/conf/sudp0/forwarding"] == "0"


def test_a_killed_servers_table_is_replaced_at_restart(tmp_path: Path) -> None:
    require_nft()
    with internet_topology() as net:
        before = forwarding_sysctls(net.server)
        configs = full_tunnel_configs(net, tmp_path)
        server = start_server(net.topo, configs, tmp_path, node=net.server.index)
        client = start_client(net.topo, configs, tmp_path, 1, node=net.client.index)
        reaches(net, 4, tmp_path, seen_as=net.server_address(4))

        server.stop(signal.SIGKILL)
        assert our_tables(net.server) == [TABLE]  # left behind, with the switches on
        assert forwarding_sysctls(net.server) != before
        server = start_server(net.topo, configs, tmp_path, node=net.server.index)
        assert f"replacing nftables table inet {TABLE} left by a previous run" in server.text()
        assert our_tables(net.server) == [TABLE]  # one, not two
        # The same client process notices the new server and goes on.
        target = net.internet_address(4)
        wait_for(lambda: ping(net.client, target, count=1), 20, "traffic to resume")
        reaches(net, 6, tmp_path, seen_as=net.server_address(6))
        assert client.process.poll() is None

        assert server.stop() == 0
        assert our_tables(net.server) == []
        assert forwarding_sysctls(net.server) == before  # as before the first start


def test_hooks_run_in_wg_quick_order_around_nat_and_dns(tmp_path: Path) -> None:
    """``%i`` is the interface's real name in every phase, also for a pattern: the
    server's ``sudp%d`` becomes sudp1 here (a sudp0 exists already)."""
    require_nft()
    with internet_topology() as net:
        configs = full_tunnel_configs(net, tmp_path, dns=True)
        server_events = Events(tmp_path, "server-events")
        add_lines(configs.server, "server", *toml_hooks(server_events, nft=True))
        client_events = Events(tmp_path, "client-events")
        client_events.tool("resolvectl")
        add_lines(
            configs.clients[0],
            "client",
            'dns_search = ["corp.example"]',
            *toml_hooks(client_events),
        )
        run_in(net.server, ["ip", "link", "add", "sudp0", "type", "veth", "peer", "name", "x0"])

        server = start_server(net.topo, configs, tmp_path, node=net.server.index)
        client = start_client(
            net.topo, configs, tmp_path, 1, node=net.client.index, env=client_events.path_env()
        )
        assert ping(net.client, net.internet_address(4))
        assert client.stop() == 0
        assert server.stop() == 0
    assert server_events.lines() == [
        "pre_up sudp1 absent -",
        "post_up sudp1 present nat",
        "pre_down sudp1 present nat",
        "post_down sudp1 absent -",
    ]
    assert client_events.lines() == [
        "pre_up sudp0 absent",
        "resolvectl dns sudp0 10.0.0.1",
        "resolvectl domain sudp0 corp.example ~.",
        "post_up sudp0 present",
        "pre_down sudp0 present",
        "resolvectl revert sudp0",
        "post_down sudp0 absent",
    ]


def test_a_failing_hook_stops_the_start_and_undoes_it(tmp_path: Path) -> None:
    require_nft()
    with internet_topology() as net:
        before = forwarding_sysctls(net.server)
        configs = full_tunnel_configs(net, tmp_path)
        events = Events(tmp_path)
        record = events.hook("post_up", nft=True)
        failing = f"{record}; echo first >&2; echo 'monitor unreachable' >&2; exit 3"
        original = configs.server.read_text()
        add_lines(configs.server, "server", *toml_hooks(events, nft=True, post_up=failing))
        done = run_in(net.server, [*TRIO_SUDP, "serve", "-c", str(configs.server)], check=False)
        assert done.returncode == 1, done.stderr
        assert done.stderr.splitlines()[-1] == (
            "trio-sudp: ERROR: post_up hook failed with exit code 3: monitor unreachable"
        )
        # Forwarding, NAT and the interface were up for post_up, and are all gone;
        # as in wg-quick, neither pre_down nor post_down ran.
        assert events.lines() == ["pre_up sudp0 absent -", "post_up sudp0 present nat"]
        assert our_tables(net.server) == []
        assert forwarding_sysctls(net.server) == before
        assert not [n for n in links(net.server) if n.startswith("sudp")]

        # A failing pre_up: the interface never exists.
        configs.server.write_text(original)
        failing = f"{events.hook('pre_up')}; echo nope >&2; exit 5"
        add_lines(configs.server, "server", *toml_hooks(events, pre_up=failing))
        done = run_in(net.server, [*TRIO_SUDP, "serve", "-c", str(configs.server)], check=False)
        assert done.returncode == 1, done.stderr
        assert done.stderr.splitlines()[-1] == (
            "trio-sudp: ERROR: pre_up hook failed with exit code 5: nope"
        )
        assert events.lines()[2:] == ["pre_up sudp0 absent"]  # and nothing after it
        assert our_tables(net.server) == []
        assert not [n for n in links(net.server) if n.startswith("sudp")]


def test_dns_through_resolvconf_when_there_is_no_resolvectl(tmp_path: Path) -> None:
    """Only resolvconf on the daemon's PATH (and ``ip``, for ``ip netns exec``)."""
    require_netns()
    with netns_topology(2) as topo:
        configs = make_configs(tmp_path, version=3, server_ip=topo[0].addr4(1))
        add_lines(configs.clients[0], "client", 'dns = ["10.0.0.1", "fd00::53"]',
                  'dns_search = ["corp.example", "lab.example"]')  # fmt: skip
        events = Events(tmp_path)
        events.tool("resolvconf")
        ip = shutil.which("ip")
        assert ip is not None
        (events.bin / "ip").symlink_to(ip)
        start_server(topo, configs, tmp_path)
        client = start_client(topo, configs, tmp_path, 1, node=1, env={"PATH": str(events.bin)})
        assert ping(topo[1], "10.0.0.1")
        assert client.stop() == 0
    record = Resolvconf("resolvconf").record("sudp0")  # Debian's interface-order, if any
    assert events.lines() == [
        f"resolvconf -a {record} -m 0",  # not a full tunnel: not exclusive
        "stdin: nameserver 10.0.0.1",
        "stdin: nameserver fd00::53",
        "stdin: search corp.example lab.example",
        f"resolvconf -d {record} -f",
    ]


# Scrapes a URL from inside a namespace, without any proxy: the status, then the body.
SCRAPE = """
import sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(sys.argv[1], timeout=10) as answer:
        print(answer.status)
        sys.stdout.write(answer.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code)
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(node: Node, path: str = "/metrics") -> tuple[int, Samples]:
    done = run_in(node, [sys.executable, "-c", SCRAPE, f"http://127.0.0.1:9586{path}"])
    code, _, body = done.stdout.partition("\n")
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return int(code), samples


def test_metrics_of_live_daemons_move_with_traffic(tmp_path: Path) -> None:
    require_netns()
    with netns_topology(2) as topo:
        configs = make_configs(tmp_path, version=3, server_ip=topo[0].addr4(1))
        for path, table in ((configs.server, "server"), (configs.clients[0], "client")):
            add_lines(path, table, 'metrics = "127.0.0.1:9586"')
        server = start_server(topo, configs, tmp_path)
        client = start_client(topo, configs, tmp_path, 1, node=1)
        for daemon in (server, client):
            daemon.wait_for_log("metrics on http://127.0.0.1:9586/metrics")

        code, before = scrape(topo[0])
        assert code == 200
        assert ping(topo[1], "10.0.0.1", count=10)
        _, after = scrape(topo[0])
        peer = frozenset({"interface": "sudp0", "peer": "client1", "vaddr": "1"}.items())
        for name in (
            "trio_sudp_peer_receive_packets_total",
            "trio_sudp_peer_transmit_packets_total",
            "trio_sudp_peer_receive_bytes_total",
            "trio_sudp_peer_transmit_bytes_total",
        ):
            assert after[(name, peer)] >= before[(name, peer)] + 10, name
        assert after[("trio_sudp_peer_handshakes_total", peer)] >= 1
        assert after[("trio_sudp_peer_established", peer)] == 1
        latest = after[("trio_sudp_peer_latest_handshake_seconds", peer)]
        assert time.time() - 120 < latest <= time.time() + 1
        device = frozenset({"interface": "sudp0"}.items())
        moved = after[("trio_sudp_device_transmit_packets_total", device)]
        assert moved >= before[("trio_sudp_device_transmit_packets_total", device)] + 10
        if "udp" in show(configs.server_socket):  # the UDP task's counters
            received = "trio_sudp_udp_receive_datagrams_total"
            assert after[(received, device)] >= before[(received, device)] + 10

        # The client's one peer is the server.
        _, seen = scrape(topo[1])
        server_peer = frozenset({"interface": "sudp0", "peer": "server", "vaddr": "0"}.items())
        assert seen[("trio_sudp_peer_transmit_packets_total", server_peer)] >= 10
        assert scrape(topo[0], "/")[0] == 404
