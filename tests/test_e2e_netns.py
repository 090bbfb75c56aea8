"""End to end: ``trio-sudp serve`` and ``connect`` with real TUN devices in namespaces.

Node 0 is the server; clients are nodes 1 and 2, joined to it by veth pairs with
addresses that exist only inside the namespaces (10.200.k.0/24). The tunnel is
10.0.0.0/24: the server is 10.0.0.1, client k is 10.0.0.(k+1).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from e2e import (
    TRIO_SUDP,
    Configs,
    Daemon,
    links,
    make_configs,
    ping,
    routes,
    show,
    start_client,
    start_server,
    wait_for,
)
from netns import Topology, netns_topology, require_netns, run_in
from trio_sudp.config import add_client, init_server
from trio_sudp.daemon.demo_netns import TCP_RECEIVER, TCP_SENDER

pytestmark = pytest.mark.netns

VERSIONS = [pytest.param(2, id="v2"), pytest.param(3, id="v3")]
TRANSFER_MB = 50


def tcp_transfer(
    topo: Topology, tmp_path: Path, *, receiver: int, sender: int, address: str, mb: int
) -> None:
    """Send ``mb`` MiB over TCP from node ``sender`` to ``address`` on ``receiver``; compare."""
    receiver_out = tmp_path / "receiver.out"
    with receiver_out.open("w") as out:
        process = topo.spawn(receiver, [sys.executable, "-c", TCP_RECEIVER, address], stdout=out)
    wait_for(lambda: "ready" in receiver_out.read_text(), 10, "the TCP receiver")
    sent = run_in(
        topo[sender], [sys.executable, "-c", TCP_SENDER, address, str(mb)], timeout=120
    ).stdout.split()[:2]
    process.wait(timeout=60)
    received = receiver_out.read_text().split()[1:]
    assert sent == received
    assert int(sent[0]) == mb * 1024 * 1024


def no_tunnel_left(topo: Topology, node: int, before: list[str]) -> None:
    assert not [name for name in links(topo[node]) if name.startswith("sudp")]
    assert routes(topo[node]) == before


@pytest.mark.parametrize("version", VERSIONS)
def test_ping_both_ways_and_a_50_mb_transfer(version: int, tmp_path: Path) -> None:
    require_netns()
    with netns_topology(2) as topo:
        before = [routes(topo[0]), routes(topo[1])]
        configs = make_configs(tmp_path, version=version, server_ip=topo[0].addr4(1))
        server = start_server(topo, configs, tmp_path)
        client = start_client(topo, configs, tmp_path, 1, node=1)
        assert ping(topo[1], "10.0.0.1")
        assert ping(topo[0], "10.0.0.2")

        tcp_transfer(topo, tmp_path, receiver=0, sender=1, address="10.0.0.1", mb=TRANSFER_MB)

        status = show(configs.server_socket)
        (peer,) = status["peers"]
        assert peer["state"] == "established"
        assert peer["version"] == version
        assert peer["rx_bytes"] > TRANSFER_MB * 1024 * 1024
        # The transfer's segments reached the server's TUN merged (GSO writes).
        assert status["device"]["offload"] is True
        assert status["device"]["tx_gso_writes"] > 0
        assert status["device"]["tx_packets"] >= peer["rx_packets"] - 10
        assert show(configs.client_sockets[0])["peers"][0]["state"] == "established"

        assert client.stop() == 0
        no_tunnel_left(topo, 1, before[1])
        assert server.stop() == 0
        no_tunnel_left(topo, 0, before[0])
        assert "stopping on SIGTERM" in server.text()


def test_two_clients_ping_each_other_through_the_server(tmp_path: Path) -> None:
    require_netns()
    with netns_topology(3) as topo:
        configs = make_configs(
            tmp_path,
            version=3,
            server_ip=topo[0].addr4(1),
            clients=2,
            client_endpoints=[topo[0].addr4(1), topo[0].addr4(2)],
        )
        start_server(topo, configs, tmp_path)
        start_client(topo, configs, tmp_path, 1, node=1)
        start_client(topo, configs, tmp_path, 2, node=2)
        assert ping(topo[1], "10.0.0.3")
        assert ping(topo[2], "10.0.0.2")


def test_spoofed_inner_source_gets_nothing_through(tmp_path: Path) -> None:
    require_netns()
    with netns_topology(3) as topo:
        configs = make_configs(tmp_path, version=3, server_ip=topo[0].addr4(1), clients=2)
        start_server(topo, configs, tmp_path)
        start_client(topo, configs, tmp_path, 1, node=1)
        tun = next(name for name in links(topo[1]) if name.startswith("sudp"))
        # Client 1 claims client 2's tunnel address as its own.
        run_in(topo[1], ["ip", "addr", "add", "10.0.0.3/32", "dev", tun])
        assert not ping(topo[1], "10.0.0.1", source="10.0.0.3", count=3)
        (peer,) = show(configs.server_socket)["peers"][:1]
        assert peer["vaddr"] == 1
        assert peer["drops"].get("spoofed_source", 0) >= 3
        assert ping(topo[1], "10.0.0.1")  # its own address still works


def test_server_killed_and_restarted_client_resumes(tmp_path: Path) -> None:
    require_netns()
    with netns_topology(2) as topo:
        configs = make_configs(tmp_path, version=3, server_ip=topo[0].addr4(1))
        server = start_server(topo, configs, tmp_path)
        client = start_client(topo, configs, tmp_path, 1, node=1)
        assert ping(topo[1], "10.0.0.1")
        server.stop(signal.SIGKILL)
        assert not [n for n in links(topo[0]) if n.startswith("sudp")]  # died with it
        start_server(topo, configs, tmp_path)
        # The same client process; traffic resumes within a few seconds.
        wait_for(lambda: ping(topo[1], "10.0.0.1", count=1), 10, "traffic to resume")
        assert client.process.poll() is None
        assert "session lost" in client.text() or "SessionLost" in client.text()


def test_full_tunnel_routes_everything_and_restores_routes(tmp_path: Path) -> None:
    require_netns()
    with netns_topology(3) as topo:
        before = routes(topo[1])
        configs = make_configs(tmp_path, version=3, server_ip=topo[0].addr4(1), full_tunnel=True)
        start_server(topo, configs, tmp_path)
        client = start_client(topo, configs, tmp_path, 1, node=1)
        during = routes(topo[1])
        tun = next(name for name in links(topo[1]) if name.startswith("sudp"))
        assert any(line.startswith(f"0.0.0.0/1 dev {tun}") for line in during)
        assert any(line.startswith(f"128.0.0.0/1 dev {tun}") for line in during)
        assert any(line.startswith(f"{topo[0].addr4(1)} ") for line in during)
        # A host beyond the server is reached through the tunnel (the server forwards).
        rx_before = show(configs.server_socket)["peers"][0]["rx_packets"]
        assert ping(topo[1], topo[2].addr4(0))
        assert show(configs.server_socket)["peers"][0]["rx_packets"] >= rx_before + 3
        assert client.stop() == 0
        assert routes(topo[1]) == before
        assert not [n for n in links(topo[1]) if n.startswith("sudp")]


def test_failures_exit_non_zero_with_one_line(tmp_path: Path) -> None:
    require_netns()
    with netns_topology(2) as topo:
        configs = make_configs(tmp_path, version=3, server_ip=topo[0].addr4(1))
        # No server: the client gives up after the Go retry schedule, with the reason.
        done = run_in(topo[1], [*TRIO_SUDP, "connect", "-c", str(configs.clients[0])], check=False)
        assert done.returncode == 1
        assert "handshake failed: no answer from the server" in done.stderr
        # ... and says so while it waits, every 2 s.
        waiting = [line for line in done.stderr.splitlines() if "retrying the handshake" in line]
        assert len(waiting) >= 4
        assert "no answer from" in waiting[0]
        # Port in use.
        blocker = topo.spawn(
            0,
            [sys.executable, "-c", BLOCK_PORT],
            stdout=subprocess.PIPE,
        )
        assert blocker.stdout is not None
        assert blocker.stdout.readline().strip() == b"bound"
        done = run_in(topo[0], [*TRIO_SUDP, "serve", "-c", str(configs.server)], check=False)
        assert done.returncode == 1
        assert "Address already in use" in done.stderr
        assert not [n for n in links(topo[0]) if n.startswith("sudp")]


BLOCK_PORT = """
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7000))
print("bound", flush=True)
time.sleep(120)
"""


def test_not_root_says_so(tmp_path: Path) -> None:
    """Without privileges the daemon exits 1 naming what is missing."""
    require_netns()
    drop_root = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run(
        [*drop_root, sys.executable, "-c", "import trio_sudp"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:  # e.g. a Python installed under /root (pyenv)
        pytest.skip(f"this Python cannot run as nobody: {probe.stderr.strip().splitlines()[-1]}")
    home = Path(tempfile.mkdtemp(prefix="trio-sudp-nobody-"))
    try:
        home.chmod(0o755)
        configs = make_configs(home, version=3, server_ip="127.0.0.1", port=7999)
        for path in home.iterdir():
            os.chown(path, 65534, 65534)
        done = subprocess.run(
            [*drop_root, "--inh-caps=-all", *TRIO_SUDP, "serve", "-c", str(configs.server)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        shutil.rmtree(home)
    assert done.returncode == 1, done.stderr
    assert "/dev/net/tun" in done.stderr
    assert "root" in done.stderr or "CAP_NET_ADMIN" in done.stderr


def test_the_readme_demo_runs_in_namespaces() -> None:
    require_netns()
    done = subprocess.run(
        [*TRIO_SUDP, "demo"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 packets transmitted, 3 received" in done.stdout
    assert "SHA-256 matches" in done.stdout
    assert "their TUN devices are gone" in done.stdout
    assert not [ns for ns in os.listdir("/run/netns") if ns.startswith("sudp-demo-")]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRIO_SUDP, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def test_cli_made_configs_reload_adds_a_client_while_another_pings(tmp_path: Path) -> None:
    """init-server + add-client by the CLI, check, tunnel up; reload keeps sessions."""
    require_netns()
    with netns_topology(3) as topo:
        server_ip = topo[0].addr4(1)
        made = _cli("config", "init-server", "-c", "server.toml", "--endpoint",
                    f"{server_ip}:7000", "--control-socket", str(tmp_path / "server.sock"),
                    cwd=tmp_path)  # fmt: skip
        assert made.returncode == 0, made.stderr
        made = _cli("config", "add-client", "-c", "server.toml", "-o", "one.toml",
                    "--name", "one", "--control-socket", str(tmp_path / "one.sock"),
                    cwd=tmp_path)  # fmt: skip
        assert made.returncode == 0, made.stderr
        for name in ("server.toml", "one.toml"):
            checked = _cli("check", "-c", name, cwd=tmp_path)
            assert checked.returncode == 0, checked.stdout + checked.stderr
        configs = Configs(
            tmp_path / "server.toml",
            [tmp_path / "one.toml", tmp_path / "two.toml"],
            tmp_path / "server.sock",
            [tmp_path / "one.sock", tmp_path / "two.sock"],
        )
        server = start_server(topo, configs, tmp_path)
        start_client(topo, configs, tmp_path, 1, node=1)
        peer = show(configs.server_socket)["peers"][0]
        assert peer["state"] == "established"
        assert peer["last_handshake_age"] < 5

        # Client one pings without pause while the server reloads with a new client.
        pinger = topo.spawn(
            1,
            ["ping", "-n", "-q", "-c", "60", "-i", "0.05", "-W", "1", "10.0.0.1"],
            stdout=subprocess.PIPE,
            text=True,
        )
        made = _cli("config", "add-client", "-c", "server.toml", "-o", "two.toml",
                    "--name", "two", "--endpoint", f"{topo[0].addr4(2)}:7000",
                    "--control-socket", str(tmp_path / "two.sock"), cwd=tmp_path)  # fmt: skip
        assert made.returncode == 0, made.stderr
        reloaded = _cli("reload", "--socket", str(configs.server_socket), cwd=tmp_path)
        assert reloaded.returncode == 0, reloaded.stderr
        assert reloaded.stdout.strip() == "reloaded: added 2; removed -; changed -"
        out, _ = pinger.communicate(timeout=30)
        assert " 0% packet loss" in out, out
        assert show(configs.server_socket)["peers"][0]["handshakes"] == peer["handshakes"]

        start_client(topo, configs, tmp_path, 2, node=2)
        assert ping(topo[2], "10.0.0.1")
        assert ping(topo[2], "10.0.0.2")

        # SIGHUP does the same: client one is removed from the file and then gone.
        text = configs.server.read_text()
        first, rest = text.split("[[peer]]", 1)
        configs.server.write_text(first + "[[peer]]" + rest.split("[[peer]]", 1)[1])
        server.process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: [p["vaddr"] for p in show(configs.server_socket)["peers"]] == [2],
            10,
            "the reload on SIGHUP",
        )
        assert "reloaded: 0 added, 1 removed" in server.text()
        assert not ping(topo[1], "10.0.0.1", count=2)
        assert ping(topo[2], "10.0.0.1")


def test_ipv6_inside_and_outside_the_tunnel(tmp_path: Path) -> None:
    """An IPv6 tunnel network next to the IPv4 one, over an IPv6 UDP path."""
    require_netns()
    with netns_topology(2) as topo:
        server = tmp_path / "server.toml"
        init_server(
            server,
            listen="[::]:7000",
            networks=["10.0.0.1/24", "fd00:5d::1/64"],
            endpoint=f"[{topo[0].addr6(1)}]:7000",
            control_socket=tmp_path / "server.sock",
        )
        add_client(server, tmp_path / "client.toml", control_socket=tmp_path / "client.sock")
        configs = Configs(
            server, [tmp_path / "client.toml"], tmp_path / "server.sock", [tmp_path / "c.sock"]
        )
        start_server(topo, configs, tmp_path)
        start_client(topo, configs, tmp_path, 1, node=1)
        assert ping(topo[1], "fd00:5d::1")
        assert ping(topo[1], "10.0.0.1")
        assert ping(topo[0], "fd00:5d::2")
        status = show(configs.server_socket)
        assert status["listen"] == "[::]:7000"
        (peer,) = status["peers"]
        assert peer["endpoint"].startswith(f"[{topo[1].addr6(0)}]:")
        assert "fd00:5d::2/128" in peer["addresses"]
        # TCP over IPv6 from the server to the client: the client's TUN gets the
        # segments merged into IPv6 GSO writes.
        tcp_transfer(topo, tmp_path, receiver=1, sender=0, address="fd00:5d::2", mb=20)
        device = show(tmp_path / "client.sock")["device"]
        assert device["offload"] is True and device["tx_gso_writes"] > 0


def test_remove_client_and_reload_ends_its_session_only(tmp_path: Path) -> None:
    """config remove-client + reload: the client's session ends, the other keeps pinging,
    and the comments of the server file survive the edit."""
    require_netns()
    with netns_topology(3) as topo:
        made = _cli("config", "init-server", "-c", "server.toml", "--endpoint",
                    f"{topo[0].addr4(1)}:7000", "--control-socket", str(tmp_path / "server.sock"),
                    cwd=tmp_path)  # fmt: skip
        assert made.returncode == 0, made.stderr
        for index, name in enumerate(("one", "two"), 1):
            made = _cli("config", "add-client", "-c", "server.toml", "-o", f"{name}.toml",
                        "--name", name, "--endpoint", f"{topo[0].addr4(index)}:7000",
                        "--control-socket", str(tmp_path / f"{name}.sock"),
                        cwd=tmp_path)  # fmt: skip
            assert made.returncode == 0, made.stderr
        server_file = tmp_path / "server.toml"
        text = server_file.read_text().replace("[server]", "# operator's note\n[server]", 1)
        text = text.replace('name = "two"', 'name = "two"  # the second laptop', 1)
        server_file.write_text(text + "# end of the file\n")
        configs = Configs(
            server_file,
            [tmp_path / "one.toml", tmp_path / "two.toml"],
            tmp_path / "server.sock",
            [tmp_path / "one.sock", tmp_path / "two.sock"],
        )
        start_server(topo, configs, tmp_path)
        start_client(topo, configs, tmp_path, 1, node=1)
        start_client(topo, configs, tmp_path, 2, node=2)
        assert ping(topo[1], "10.0.0.1")
        assert ping(topo[2], "10.0.0.1")
        two = show(configs.server_socket)["peers"][1]

        pinger = topo.spawn(
            2,
            ["ping", "-n", "-q", "-c", "60", "-i", "0.05", "-W", "1", "10.0.0.1"],
            stdout=subprocess.PIPE,
            text=True,
        )
        removed = _cli("config", "remove-client", "-c", "server.toml", "one", cwd=tmp_path)
        assert removed.returncode == 0, removed.stderr
        reloaded = _cli("reload", "--socket", str(configs.server_socket), cwd=tmp_path)
        assert reloaded.returncode == 0, reloaded.stderr
        assert reloaded.stdout.strip() == "reloaded: added -; removed 1; changed -"
        out, _ = pinger.communicate(timeout=30)
        assert " 0% packet loss" in out, out

        peers = show(configs.server_socket)["peers"]
        assert [p["vaddr"] for p in peers] == [2]
        assert peers[0]["handshakes"] == two["handshakes"]
        assert not ping(topo[1], "10.0.0.1", count=2)
        assert ping(topo[2], "10.0.0.1")
        text = server_file.read_text()
        for comment in ("# operator's note", "# the second laptop", "# end of the file"):
            assert comment in text
        assert 'name = "one"' not in text


def ends_with_one_line(daemon: Daemon, line: str, limit: float = 20.0) -> float:
    """Wait for ``daemon`` to exit 1 with ``line`` its only error line and no
    traceback; return how many seconds that took."""
    started = time.monotonic()
    try:
        code = daemon.process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running after {limit:g} s:\n{daemon.text()}") from None
    took = time.monotonic() - started
    text = daemon.text()
    assert code == 1, text
    assert [entry for entry in text.splitlines() if ": ERROR: " in entry] == [
        f"trio-sudp: ERROR: {line}"
    ], text
    assert "Traceback" not in text and "internal error" not in text, text
    return took


def tun_of(topo: Topology, node: int) -> str:
    (device,) = [name for name in links(topo[node]) if name.startswith("sudp")]
    return device


def test_a_deleted_tun_device_ends_the_daemon_with_one_line(tmp_path: Path) -> None:
    """The server's device is deleted while a ping flood goes through it (its writer
    and reader both busy), the client's while it waits for packets."""
    require_netns()
    with netns_topology(2) as topo:
        before = routes(topo[1])
        configs = make_configs(tmp_path, version=3, server_ip=topo[0].addr4(1))
        server = start_server(topo, configs, tmp_path)
        client = start_client(topo, configs, tmp_path, 1, node=1)
        assert ping(topo[1], "10.0.0.1")
        flood = topo.spawn(
            1,
            ["ping", "-n", "-q", "-i", "0.002", "-W", "1", "10.0.0.1"],
            stdout=subprocess.DEVNULL,
        )
        written = show(configs.server_socket)["device"]["tx_packets"]
        wait_for(
            lambda: show(configs.server_socket)["device"]["tx_packets"] > written + 100,
            10,
            "the flood to reach the server's TUN",
        )
        device = tun_of(topo, 0)
        run_in(topo[0], ["ip", "link", "del", device])
        ends_with_one_line(server, f"TUN device {device} was removed")

        flood.kill()
        flood.wait(timeout=10)
        device = tun_of(topo, 1)
        run_in(topo[1], ["ip", "link", "del", device])
        ends_with_one_line(client, f"TUN device {device} was removed")
        no_tunnel_left(topo, 1, before)


def test_a_removed_control_socket_ends_the_daemon_with_one_line(tmp_path: Path) -> None:
    """The server's control socket is removed, the client's replaced by another file:
    each daemon notices within about a second, undoes its tunnel and exits 1."""
    require_netns()
    with netns_topology(2) as topo:
        before = [routes(topo[0]), routes(topo[1])]
        configs = make_configs(tmp_path, version=3, server_ip=topo[0].addr4(1))
        server = start_server(topo, configs, tmp_path)
        client = start_client(topo, configs, tmp_path, 1, node=1)
        assert ping(topo[1], "10.0.0.1")

        configs.server_socket.unlink()
        took = ends_with_one_line(server, f"the control socket {configs.server_socket} was removed")
        assert took < 5, f"noticed after {took:.1f} s"
        no_tunnel_left(topo, 0, before[0])

        path = configs.client_sockets[0]
        path.unlink()
        path.write_text("not a socket\n")
        took = ends_with_one_line(client, f"the control socket {path} was replaced by another file")
        assert took < 5, f"noticed after {took:.1f} s"
        no_tunnel_left(topo, 1, before[1])
        assert path.read_text() == "not a socket\n"  # not ours: left alone


def test_a_deleted_listen_address_ends_the_server_with_one_line(tmp_path: Path) -> None:
    """A server bound to one address exits 1 once that address is deleted."""
    require_netns()
    with netns_topology(2) as topo:
        address = topo[0].addr4(1)
        configs = make_configs(tmp_path, version=3, server_ip=address, listen_ip=address)
        server = start_server(topo, configs, tmp_path)
        client = start_client(topo, configs, tmp_path, 1, node=1)
        assert ping(topo[1], "10.0.0.1")
        assert show(configs.server_socket)["listen"] == f"{address}:7000"

        run_in(topo[0], ["ip", "addr", "del", f"{address}/24", "dev", topo[0].ifname(1)])
        line = f"the UDP address {address} of the server's socket was removed from this host"
        took = ends_with_one_line(server, line)
        assert took < 5, f"noticed after {took:.1f} s"
        assert not [name for name in links(topo[0]) if name.startswith("sudp")]
        assert not configs.server_socket.exists()
        assert client.process.poll() is None  # the client waits for the server to return
