"""The Prometheus exporter: metrics from a daemon's status, and its small HTTP server.

The live daemons' endpoints are scraped in tests/test_full_tunnel_netns.py; here the
status comes from an in-memory VPN (the same ``VpnServer.status`` ``show`` uses) or
from a fixed document, and the HTTP server listens on loopback.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from runtime_helpers import wait_for
from test_vpn_glue import echo_request, world
from trio_sudp import Version
from trio_sudp.config import add_client, init_server
from trio_sudp.daemon import metrics
from trio_sudp.daemon.metrics import (
    MAX_CONNECTIONS,
    MAX_REQUEST,
    MetricsEndpoint,
    metrics_endpoint,
    metrics_registry,
)

ROOT = Path(__file__).parent.parent
DASHBOARD = ROOT / "contrib" / "grafana" / "trio-sudp.json"
DOCS = ROOT / "docs" / "metrics.md"

#: What the UDP task and the handshake budget report (``status["udp"]``, ``["budget"]``).
UDP = {
    "kernel_drops": 7,
    "receive_buffer": 4194304,
    "prefilter": "kernel",
    "rx_datagrams": 100,
    "tx_datagrams": 90,
    "tx_segment_sends": 30,
    "rx_segment_receives": 40,
    "tx_backlog_drops": 1,
    "tx_errors": 2,
    "strangers_kernel_drops": 5,
    "lanes": 2,
    "steering": True,
    "steered": 1,
    "banned": 3,
    "rx_strangers": 60,
}
BUDGET = {
    "verified_known": 5,
    "verified_strangers": 3,
    "refused_known": 0,
    "refused_strangers": 11,
    "refusals_sent": 4,
    "refusals_suppressed": 7,
}


def status_document(**changes: Any) -> dict[str, Any]:
    """A server's status as ``show --json`` prints it: one named peer, one without a name."""
    peer = {
        "vaddr": 1,
        "name": "laptop",
        "version": 3,
        "state": "established",
        "endpoint": "10.200.0.2:40000",
        "current_epoch": 2,
        "last_handshake_age": 12.5,
        "rx_packets": 10,
        "rx_bytes": 1500,
        "tx_packets": 9,
        "tx_bytes": 1400,
        "handshakes": 2,
        "endpoint_changes": 1,
        "drops": {"replay": 3, "spoofed_source": 1},
        "public_key": "SHA256:abc",
        "addresses": ["10.0.0.2/32"],
    }
    stranger = {**peer, "vaddr": 2, "name": None, "state": "idle", "last_handshake_age": None}
    stranger["drops"] = {}
    document = {
        "role": "server",
        "interface": "sudp0",
        "listen": "0.0.0.0:7000",
        "public_key": "SHA256:srv",
        "tunnel": ["10.0.0.1/24"],
        "mtu": 1400,
        "device": {
            "offload": True,
            "rx_packets": 5,
            "rx_bytes": 600,
            "tx_packets": 6,
            "tx_bytes": 700,
            "tx_gso_writes": 1,
            "tx_backlog_drops": 0,
            "tx_errors": 0,
            "internal_errors": 0,
        },
        "drops": {"no_route": 4},
        "peers": [peer, stranger],
        "udp": UDP,
        "budget": BUDGET,
    }
    document.update(changes)
    return document


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(status: Callable[[], Mapping[str, Any]], now: float = 1_000_000.0) -> Samples:
    return parse(generate_latest(metrics_registry(status, clock=lambda: now)).decode())


def peer_labels(peer: str, vaddr: int, **more: str) -> frozenset[tuple[str, str]]:
    return frozenset({"interface": "sudp0", "peer": peer, "vaddr": str(vaddr), **more}.items())


def daemon_labels(**more: str) -> frozenset[tuple[str, str]]:
    return frozenset({"interface": "sudp0", **more}.items())


def test_peer_metrics_follow_the_wireguard_exporters() -> None:
    samples = scrape(status_document)
    laptop = peer_labels("laptop", 1)
    assert samples[("trio_sudp_peer_receive_bytes_total", laptop)] == 1500
    assert samples[("trio_sudp_peer_transmit_bytes_total", laptop)] == 1400
    assert samples[("trio_sudp_peer_receive_packets_total", laptop)] == 10
    assert samples[("trio_sudp_peer_transmit_packets_total", laptop)] == 9
    assert samples[("trio_sudp_peer_handshakes_total", laptop)] == 2
    assert samples[("trio_sudp_peer_endpoint_changes_total", laptop)] == 1
    # A UNIX timestamp: now minus the handshake's age; 0 for never.
    assert samples[("trio_sudp_peer_latest_handshake_seconds", laptop)] == 1_000_000 - 12.5
    assert samples[("trio_sudp_peer_latest_handshake_seconds", peer_labels("2", 2))] == 0
    assert samples[("trio_sudp_peer_established", laptop)] == 1
    assert samples[("trio_sudp_peer_established", peer_labels("2", 2))] == 0
    drops = "trio_sudp_peer_drops_total"
    assert samples[(drops, peer_labels("laptop", 1, reason="replay"))] == 3
    assert samples[(drops, peer_labels("laptop", 1, reason="spoofed_source"))] == 1
    info = peer_labels(
        "laptop", 1, public_key="SHA256:abc", version="3", endpoint="10.200.0.2:40000"
    )
    assert samples[("trio_sudp_peer_info", info)] == 1


def test_daemon_metrics_device_udp_and_budget() -> None:
    samples = scrape(status_document)
    one = daemon_labels()
    assert samples[("trio_sudp_device_receive_packets_total", one)] == 5
    assert samples[("trio_sudp_device_transmit_bytes_total", one)] == 700
    assert samples[("trio_sudp_device_transmit_gso_writes_total", one)] == 1
    assert samples[("trio_sudp_device_offload", one)] == 1
    assert samples[("trio_sudp_drops_total", daemon_labels(reason="no_route"))] == 4
    assert samples[("trio_sudp_udp_kernel_drops_total", one)] == 7
    assert samples[("trio_sudp_udp_receive_buffer_bytes", one)] == 4194304
    assert samples[("trio_sudp_udp_receive_datagrams_total", one)] == 100
    assert samples[("trio_sudp_udp_transmit_segment_sends_total", one)] == 30
    assert samples[("trio_sudp_udp_receive_segment_receives_total", one)] == 40
    assert samples[("trio_sudp_udp_prefilter_info", daemon_labels(mode="kernel"))] == 1
    assert samples[("trio_sudp_udp_strangers_kernel_drops_total", one)] == 5
    assert samples[("trio_sudp_udp_receive_strangers_total", one)] == 60
    assert samples[("trio_sudp_udp_lanes", one)] == 2  # gauges, not counters
    assert samples[("trio_sudp_udp_steering", one)] == 1
    assert samples[("trio_sudp_udp_steered_endpoints", one)] == 1
    assert samples[("trio_sudp_udp_banned_hosts", one)] == 3
    for key, value in BUDGET.items():
        assert samples[(f"trio_sudp_handshake_budget_{key}_total", one)] == value
    info = daemon_labels(role="server", listen="0.0.0.0:7000", public_key="SHA256:srv")
    assert samples[("trio_sudp_daemon_info", info)] == 1
    assert samples[("trio_sudp_tunnel_mtu_bytes", one)] == 1400


def test_what_a_status_lacks_is_left_out() -> None:
    """A client has no budget; the UDP section may be partly unknown (``None``)."""
    udp = {**UDP, "kernel_drops": None, "receive_buffer": None, "prefilter": None}
    samples = scrape(lambda: status_document(budget=None, udp=udp, listen=None))
    names = {name for name, _ in samples}
    assert not [n for n in names if n.startswith("trio_sudp_handshake_budget_")]
    assert "trio_sudp_udp_kernel_drops_total" not in names
    assert "trio_sudp_udp_prefilter_info" not in names
    assert "trio_sudp_udp_receive_datagrams_total" in names
    samples = scrape(lambda: status_document(udp=None, budget=None, drops={}))
    assert not [n for n, _ in samples if n.startswith("trio_sudp_udp_")]


async def test_a_live_vpns_counters_move_with_traffic(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with world(Version.V3, [1]) as w:
            before = scrape(w.server.status)
            for _ in range(5):
                w.kernels[1].send(echo_request("10.0.0.2", "10.0.0.1"))
                await w.server_kernel.receive()
            after = scrape(w.server.status)
            client = scrape(w.clients[1].status)
    peer = frozenset({"interface": "srv0", "peer": "1", "vaddr": "1"}.items())
    for name in ("trio_sudp_peer_receive_packets_total", "trio_sudp_peer_receive_bytes_total"):
        assert after[(name, peer)] >= before[(name, peer)] + 5
    device = frozenset({"interface": "srv0"}.items())
    assert after[("trio_sudp_device_transmit_packets_total", device)] >= 5
    assert after[("trio_sudp_peer_handshakes_total", peer)] == 1
    # The client's one peer is its server, by the name "server" and vaddr 0.
    server = frozenset({"interface": "cli1", "peer": "server", "vaddr": "0"}.items())
    assert client[("trio_sudp_peer_transmit_packets_total", server)] >= 5


def dashboard_metric_names() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query", "definition") and isinstance(value, str):
                    exprs.append(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dashboard)
    assert exprs, "the dashboard has no queries"
    return {name for expr in exprs for name in re.findall(r"\btrio_sudp_[a-z0-9_]+", expr)}


async def exported_names() -> set[str]:
    """Every series name exported for a live in-memory server's status and for the
    complete document above (a fake socket has no receive buffer size), also of
    families without a sample right now (no drops yet)."""
    with trio.fail_after(30):
        async with world(Version.V3, [1]) as w:
            live = w.server.status()
    exported = set()
    for status in (live, status_document()):
        text = generate_latest(metrics_registry(lambda status=status: status)).decode()
        for family in text_string_to_metric_families(text):
            suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
            exported |= {family.name + suffix} | {sample.name for sample in family.samples}
    return exported


async def test_every_metric_is_documented_and_every_documented_one_exported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    documented = set(re.findall(r"^\| `(trio_sudp_[a-z0-9_]+)` \|", DOCS.read_text(), re.M))
    assert sorted(documented ^ await exported_names()) == []


async def test_every_metric_of_the_grafana_dashboard_is_exported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exported = await exported_names()
    used = dashboard_metric_names()
    assert len(used) >= 10
    assert sorted(used - exported) == []
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["panels"]


# -- HTTP ------------------------------------------------------------------------------


@asynccontextmanager
async def serving(
    status: Callable[[], Mapping[str, Any]] = status_document,
) -> AsyncIterator[tuple[MetricsEndpoint, int]]:
    async with metrics_endpoint(("127.0.0.1", 0)) as endpoint, trio.open_nursery() as nursery:
        await nursery.start(endpoint.serve, status)
        port = endpoint.listeners[0].socket.getsockname()[1]
        yield endpoint, port
        nursery.cancel_scope.cancel()


async def exchange(port: int, request: bytes) -> bytes:
    """Send ``request``; what came back before the server closed (or reset) the connection."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    answer = b""
    async with stream:
        try:
            await stream.send_all(request)
            while chunk := await stream.receive_some(65536):
                answer += chunk
        except trio.BrokenResourceError:  # closed with our bytes unread: a reset
            pass
    return answer


async def test_get_metrics_serves_prometheus_text() -> None:
    with trio.fail_after(20):
        async with serving() as (_, port):
            answer = await exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            head, body = answer.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert f"Content-Type: {CONTENT_TYPE_LATEST}\r\n".encode() in head + b"\r\n"
            assert f"Content-Length: {len(body)}".encode() in head
            samples = parse(body.decode())
            assert samples[("trio_sudp_peer_receive_bytes_total", peer_labels("laptop", 1))] == 1500
            # HEAD: the same head, no body; a query string is ignored.
            answer = await exchange(port, b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("request_bytes", "status_line"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 404 Not Found"),
        (b"GET /metricsx HTTP/1.1\r\n\r\n", b"HTTP/1.1 404 Not Found"),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 405 Method Not Allowed",
        ),
        (b"GET /metrics\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n", b"HTTP/1.1 400 Bad Request"),
    ],
)
async def test_other_requests_get_an_error(request_bytes: bytes, status_line: bytes) -> None:
    with trio.fail_after(20):
        async with serving() as (_, port):
            answer = await exchange(port, request_bytes)
    assert answer.split(b"\r\n", 1)[0] == status_line


async def test_an_oversized_or_cut_request_is_closed_unanswered() -> None:
    with trio.fail_after(20):
        async with serving() as (_, port):
            assert await exchange(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * MAX_REQUEST) == b""
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"GET /metrics HTTP/1.1\r\n")
                await stream.send_eof()
                assert await stream.receive_some(100) == b""
            # The server is still there.
            assert (await exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")).startswith(
                b"HTTP/1.1 200"
            )


async def test_a_slow_client_is_cut_off(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(metrics.REQUEST_TIME * 3):
        async with serving() as (_, port):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"GET /metrics HTTP/1.1\r\n")  # and nothing more
                start = trio.current_time()
                assert await stream.receive_some(100) == b""
                assert trio.current_time() - start >= metrics.REQUEST_TIME


async def test_connections_beyond_the_limit_are_closed_at_once() -> None:
    with trio.fail_after(20):
        async with serving() as (endpoint, port):
            idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(MAX_CONNECTIONS)]
            await wait_for(lambda: endpoint.busy == MAX_CONNECTIONS, 10)
            assert await exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n") == b""
            await idle.pop().aclose()
            await wait_for(lambda: endpoint.busy < MAX_CONNECTIONS, 10)
            assert (await exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")).startswith(
                b"HTTP/1.1 200"
            )
            for stream in idle:
                await stream.aclose()


async def test_a_broken_status_is_a_500_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = []

    def status() -> Mapping[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            return {"peers": []}  # no "interface": a bug in the status
        return status_document()

    with trio.fail_after(20):
        async with serving(status) as (_, port):
            answer = await exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 500")
            answer = await exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200")
    assert "metrics: the status could not be turned into metrics" in caplog.text


# -- configuration --------------------------------------------------------------------

# Runs the CLI as if prometheus-client were not installed.
WITHOUT_PROMETHEUS = """
import sys
sys.modules["prometheus_client"] = None
from trio_sudp.cli.app import main
sys.argv = ["trio-sudp", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("role", ["serve", "connect"])
def test_metrics_without_prometheus_client_is_one_line_exit_2(role: str, tmp_path: Path) -> None:
    server = tmp_path / "server.toml"
    init_server(server, endpoint="127.0.0.1:7999", listen="127.0.0.1:7999")
    add_client(server, tmp_path / "client.toml")
    path = server if role == "serve" else tmp_path / "client.toml"
    table = "[server]" if role == "serve" else "[client]"
    path.write_text(path.read_text().replace(table, f'{table}\nmetrics = "127.0.0.1:9586"', 1))
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_PROMETHEUS, role, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "trio-sudp: ERROR: metrics is configured but prometheus-client is not installed"
        " (pip install 'trio-sudp[metrics]')"
    ]
