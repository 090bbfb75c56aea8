"""Prometheus metrics of a running daemon, served over HTTP from a Trio task.

``metrics = "127.0.0.1:9586"`` in ``[server]`` or ``[client]``. The metrics are made
at each scrape from the daemon's ``status()``, the document ``trio-sudp show
--json`` prints, by :class:`StatusCollector` (prometheus-client's collector API and
``generate_latest``; the optional extra ``trio-sudp[metrics]``). Names follow the
WireGuard exporters where there is a counterpart: ``…_receive_bytes_total``,
``…_transmit_bytes_total``, ``…_latest_handshake_seconds`` (a UNIX timestamp, 0
for never); every series has the label ``interface``, every peer series ``peer``
(the peer's name, else its virtual address) and ``vaddr``. ``docs/metrics.md``
lists them all.

The HTTP side is deliberately small: ``GET /metrics`` (or ``HEAD``) answers 200,
other paths 404, other methods 405, a request that is malformed, larger than
:data:`MAX_REQUEST` bytes or slower than :data:`REQUEST_TIME` seconds gets 400 or
nothing; every answer closes the connection, and at most :data:`MAX_CONNECTIONS`
are served at once (more are closed unanswered). Nothing is logged per request.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from ..runtime.transport import format_address

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_REQUEST",
    "PREFIX",
    "REQUEST_TIME",
    "MetricsEndpoint",
    "StatusCollector",
    "metrics_endpoint",
    "metrics_registry",
]

log = logging.getLogger("trio_sudp")

#: The first word of every metric name.
PREFIX = "trio_sudp"
#: Largest request head (request line and headers) read, in bytes.
MAX_REQUEST = 8192
#: Seconds a client has to send its request and read the answer.
REQUEST_TIME = 10.0
#: Connections served at once; more are closed at once.
MAX_CONNECTIONS = 16

Status = Callable[[], Mapping[str, Any]]

PEER_LABELS = ("interface", "peer", "vaddr")

#: Per-peer counters: status key, metric name (after ``trio_sudp_peer_``), help.
PEER_COUNTERS = (
    ("rx_bytes", "receive_bytes", "Bytes of the SUDP datagrams received from the peer."),
    ("tx_bytes", "transmit_bytes", "Bytes of the SUDP datagrams sent to the peer."),
    ("rx_packets", "receive_packets", "Datagrams received from the peer and accepted."),
    ("tx_packets", "transmit_packets", "Datagrams sent to the peer."),
    ("handshakes", "handshakes", "Handshakes completed with the peer."),
    ("endpoint_changes", "endpoint_changes", "Times the peer's endpoint moved (NAT, roaming)."),
)


#: Help texts of the counters of ``status["device"]`` and ``status["udp"]``; a counter
#: not listed here is exported too, with its status key as help.
DEVICE_HELP = {
    "rx_packets": "Packets read from the TUN device (sent into the tunnel).",
    "rx_bytes": "Bytes read from the TUN device.",
    "tx_packets": "Packets written to the TUN device (received from the tunnel).",
    "tx_bytes": "Bytes written to the TUN device.",
    "tx_gso_writes": "Writes that carried several TCP segments as one GSO packet.",
    "tx_backlog_drops": "Packets dropped because the TUN device and its backlog were full.",
    "tx_errors": "Packets the kernel refused to take from the TUN device.",
    "internal_errors": "Packets whose handling failed unexpectedly (a bug; logged).",
    "rx_reads": "Reads from the TUN device that returned anything (packets per read: divide).",
    "tx_writes": "Writes to the TUN device.",
    "rx_batches": "Wakeups of the TUN read loop that found something to read.",
}
UDP_HELP = {
    "rx_datagrams": "Datagrams received on the UDP socket.",
    "tx_datagrams": "Datagrams sent on the UDP socket.",
    "tx_backlog_drops": "Datagrams dropped because the socket and the send backlog were full.",
    "tx_errors": "Datagrams the operating system refused to send.",
    "internal_errors": "Datagrams whose handling failed unexpectedly (a bug; logged).",
    "tx_segment_sends": "System calls that sent several datagrams at once (UDP GSO).",
    "rx_segment_receives": "System calls that received several datagrams at once (UDP GRO).",
    "tx_calls": "System calls that sent anything (datagrams per call: divide).",
    "rx_calls": "System calls that received anything.",
    "rx_batches": "Wakeups of the UDP read loop that found something to read.",
    "rx_strangers": "Datagrams read from the strangers' socket: not from a client's endpoint.",
    "kernel_drops": "Datagrams the kernel dropped before the daemon read them (socket full).",
    "strangers_kernel_drops": "Of those, datagrams for the strangers' socket (not a client's).",
}
#: The entries of ``status["udp"]`` that are states, not counts: name, help.
UDP_GAUGES = {
    "receive_buffer": (
        "receive_buffer_bytes",
        "The UDP socket's receive buffer size, as the kernel reports it.",
    ),
    "lanes": ("lanes", "Receive sockets: 2 when known clients have one of their own, else 1."),
    "steering": ("steering", "1 while the kernel steers known clients to their own socket."),
    "steered": ("steered_endpoints", "Client endpoints the kernel steers to their socket now."),
    "banned": ("banned_hosts", "Flooding hosts whose datagrams the kernel drops now (banned)."),
}

BUDGET_HELP = {
    "verified_known": "Signatures verified for known clients' endpoints, within their budget.",
    "verified_strangers": "Signatures verified for other sources, within their budget.",
    "refused_known": "Verifications not attempted for known endpoints: over budget.",
    "refused_strangers": "Verifications not attempted for other sources: over budget.",
    "refusals_sent": "Unsigned refusals sent (within the refusal budget).",
    "refusals_suppressed": "Refusals not sent: over the refusal budget (no reflection).",
}


def _counter_name(key: str) -> str:
    """``rx_packets`` → ``receive_packets``, ``tx_errors`` → ``transmit_errors``."""
    for short, long in (("rx_", "receive_"), ("tx_", "transmit_")):
        if key.startswith(short):
            return long + key[len(short) :]
    return key


def _counters(status: Mapping[str, Any]) -> Iterator[tuple[str, int]]:
    """The integer entries of a status section (booleans and ``None`` left out)."""
    for key, value in sorted(status.items()):
        if isinstance(value, int) and not isinstance(value, bool):
            yield key, value


class StatusCollector:
    """Metrics from ``status()`` at each collection; ``clock`` gives UNIX time."""

    def __init__(self, status: Status, *, clock: Callable[[], float] = time.time) -> None:
        self._status = status
        self._clock = clock

    def collect(self) -> Iterable[Metric]:
        """Every metric of one status document."""
        status = self._status()
        interface = str(status["interface"])
        yield from self._daemon(status, interface)
        yield from self._peers(status.get("peers", ()), interface)

    def _daemon(self, status: Mapping[str, Any], interface: str) -> Iterator[Metric]:
        info = InfoMetricFamily(
            f"{PREFIX}_daemon", "The daemon: its role, address and key.", labels=("interface",)
        )
        info.add_metric(
            [interface],
            {
                "role": str(status.get("role", "")),
                "listen": str(status.get("listen") or ""),
                "public_key": str(status.get("public_key", "")),
            },
        )
        yield info
        mtu = GaugeMetricFamily(
            f"{PREFIX}_tunnel_mtu_bytes", "The tunnel MTU.", labels=("interface",)
        )
        mtu.add_metric([interface], float(status.get("mtu", 0)))
        yield mtu

        device = status.get("device") or {}
        for key, value in _counters(device):
            family = CounterMetricFamily(
                f"{PREFIX}_device_{_counter_name(key)}",
                DEVICE_HELP.get(key, f"TUN device counter {key}."),
                labels=("interface",),
            )
            family.add_metric([interface], value)
            yield family
        if "offload" in device:
            offload = GaugeMetricFamily(
                f"{PREFIX}_device_offload",
                "1 when the TUN device takes GSO writes (merged TCP segments).",
                labels=("interface",),
            )
            offload.add_metric([interface], 1.0 if device["offload"] else 0.0)
            yield offload

        drops = CounterMetricFamily(
            f"{PREFIX}_drops",
            "Datagrams and packets the daemon dropped, by reason (not per peer).",
            labels=("interface", "reason"),
        )
        for reason, count in sorted((status.get("drops") or {}).items()):
            drops.add_metric([interface, str(reason)], count)
        yield drops

        yield from self._udp(status.get("udp"), interface)
        budget = status.get("budget")
        if budget:
            for key, value in _counters(budget):
                family = CounterMetricFamily(
                    f"{PREFIX}_handshake_budget_{key}",
                    BUDGET_HELP.get(key, f"Handshake verification budget: {key}."),
                    labels=("interface",),
                )
                family.add_metric([interface], value)
                yield family

    def _udp(self, udp: Mapping[str, Any] | None, interface: str) -> Iterator[Metric]:
        if not udp:
            return
        for key, value in sorted(udp.items()):
            if value is None or key == "prefilter":
                continue
            family: CounterMetricFamily | GaugeMetricFamily
            if key in UDP_GAUGES:
                name, text = UDP_GAUGES[key]
                family = GaugeMetricFamily(f"{PREFIX}_udp_{name}", text, labels=("interface",))
                value = float(value)  # a flag counts as 0 or 1
            elif isinstance(value, int) and not isinstance(value, bool):
                family = CounterMetricFamily(
                    f"{PREFIX}_udp_{_counter_name(key)}",
                    UDP_HELP.get(key, f"UDP socket counter {key}."),
                    labels=("interface",),
                )
            else:
                continue
            family.add_metric([interface], value)
            yield family
        prefilter = udp.get("prefilter")
        if prefilter is not None:
            info = InfoMetricFamily(
                f"{PREFIX}_udp_prefilter",
                "Where datagrams of unknown senders are dropped: kernel or userspace.",
                labels=("interface",),
            )
            info.add_metric([interface], {"mode": str(prefilter)})
            yield info

    def _peers(self, peers: Iterable[Mapping[str, Any]], interface: str) -> Iterator[Metric]:
        peers = list(peers)
        now = self._clock()
        info = InfoMetricFamily(
            f"{PREFIX}_peer",
            "A peer: its public key fingerprint, SUDP version and endpoint.",
            labels=PEER_LABELS,
        )
        established = GaugeMetricFamily(
            f"{PREFIX}_peer_established",
            "1 while the peer has a session (a current key), else 0.",
            labels=PEER_LABELS,
        )
        latest = GaugeMetricFamily(
            f"{PREFIX}_peer_latest_handshake_seconds",
            "UNIX time of the latest completed handshake with the peer (0: never).",
            labels=PEER_LABELS,
        )
        counters = {
            key: CounterMetricFamily(f"{PREFIX}_peer_{name}", text, labels=PEER_LABELS)
            for key, name, text in PEER_COUNTERS
        }
        drops = CounterMetricFamily(
            f"{PREFIX}_peer_drops",
            "Datagrams and packets of the peer that were dropped, by reason.",
            labels=(*PEER_LABELS, "reason"),
        )
        for peer in peers:
            vaddr = str(peer["vaddr"])
            labels = [interface, str(peer.get("name") or vaddr), vaddr]
            endpoint = peer.get("endpoint")
            info.add_metric(
                labels,
                {
                    "public_key": str(peer.get("public_key", "")),
                    "version": str(peer.get("version", "")),
                    "endpoint": "" if endpoint is None else str(endpoint),
                },
            )
            established.add_metric(labels, 1.0 if peer.get("state") == "established" else 0.0)
            age = peer.get("last_handshake_age")
            latest.add_metric(labels, 0.0 if age is None else round(now - age, 3))
            for key, family in counters.items():
                family.add_metric(labels, peer.get(key, 0))
            for reason, count in sorted((peer.get("drops") or {}).items()):
                drops.add_metric([*labels, str(reason)], count)
        yield info
        yield established
        yield latest
        yield from counters.values()
        yield drops


def metrics_registry(
    status: Status, *, clock: Callable[[], float] = time.time
) -> CollectorRegistry:
    """A registry holding only a :class:`StatusCollector` of ``status``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(status, clock=clock))
    return registry


def _response(
    code: int, reason: str, body: bytes = b"", *, head: bool = False, **headers: str
) -> bytes:
    lines = [f"HTTP/1.1 {code} {reason}", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body)


NOT_FOUND = _response(404, "Not Found", b"not found: try /metrics\n", Content_Type="text/plain")
NOT_ALLOWED = _response(405, "Method Not Allowed", b"GET or HEAD only\n", Allow="GET, HEAD")
BAD_REQUEST = _response(400, "Bad Request", b"bad request\n", Content_Type="text/plain")
FAILED = _response(500, "Internal Server Error", b"failed; see the log\n")


async def _request_head(stream: trio.abc.ReceiveStream) -> bytes | None:
    """The bytes up to the blank line that ends the head; ``None`` if too long or cut."""
    received = b""
    while b"\r\n\r\n" not in received and b"\n\n" not in received:
        if len(received) >= MAX_REQUEST:
            return None
        chunk = await stream.receive_some(MAX_REQUEST - len(received))
        if not chunk:
            return None
        received += chunk
    return received


class MetricsEndpoint:
    """Listening sockets for the metrics; :meth:`serve` answers scrapes on them."""

    def __init__(self, listeners: list[trio.SocketListener], address: str) -> None:
        self.listeners = listeners
        #: ``"127.0.0.1:9586"``, for the log (the bound port when 0 was asked for).
        self.address = address
        self._connections = trio.CapacityLimiter(MAX_CONNECTIONS)

    @property
    def busy(self) -> int:
        """Connections being served now."""
        return int(self._connections.borrowed_tokens)

    async def serve(
        self, status: Status, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Answer scrapes with the metrics of ``status()`` until cancelled."""
        registry = metrics_registry(status)
        handler = functools.partial(self._handle, registry=registry)
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, handler, self.listeners)
            log.info("metrics on http://%s/metrics", self.address)
            task_status.started()

    async def _handle(self, stream: trio.SocketStream, registry: CollectorRegistry) -> None:
        try:
            self._connections.acquire_on_behalf_of_nowait(stream)
        except trio.WouldBlock:
            await trio.aclose_forcefully(stream)
            return
        try:
            with trio.move_on_after(REQUEST_TIME):
                answer = self._answer(await _request_head(stream), registry)
                if answer is not None:
                    await stream.send_all(answer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the scraper went away
        finally:
            self._connections.release_on_behalf_of(stream)
            await trio.aclose_forcefully(stream)

    @staticmethod
    def _answer(head: bytes | None, registry: CollectorRegistry) -> bytes | None:
        if head is None:
            return None
        request_line = head.split(b"\n", 1)[0].strip()
        parts = request_line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return BAD_REQUEST
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return NOT_ALLOWED
        if target != b"/metrics":
            return NOT_FOUND
        try:
            body = generate_latest(registry)
        except Exception:  # a bug: say so, but never stop the daemon for it
            log.exception("metrics: the status could not be turned into metrics")
            return FAILED
        return _response(200, "OK", body, head=method == b"HEAD", Content_Type=CONTENT_TYPE_LATEST)


@asynccontextmanager
async def metrics_endpoint(address: tuple[str, int]) -> AsyncIterator[MetricsEndpoint]:
    """Listen on ``(ip, port)`` now (``OSError`` if the port is taken); close at exit."""
    host, port = address
    listeners = await trio.open_tcp_listeners(port, host=host)
    try:
        bound = listeners[0].socket.getsockname()
        yield MetricsEndpoint(listeners, format_address((bound[0], bound[1])))
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
