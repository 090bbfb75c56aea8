"""trio-sudp against two wireguard-go builds, side by side, in one run (root, Linux).

    sudo .venv/bin/python bench/bench_vpn.py [--quick] [--no-append] [--json]
        [--only veth,wg,wgup,v2,v3] [--wireguard-go-upstream PATH]

Must run as root: it creates network namespaces and TUN devices, and installs
``wireguard-go``, ``wireguard-tools``, ``iperf3`` and ``linux-perf`` with apt-get when
missing. trio-sudp is driven through its command line (``python -m trio_sudp`` of the
interpreter running this script: use the checkout's ``.venv/bin/python``).

Builds two network namespaces joined by a veth pair (``sudpbench-<pid>-0`` and ``-1``;
addresses exist only inside them, nothing is routed outside), brings up every tunnel
at once and measures them one after another:

veth
    the bare veth pair (what the machine can do without a tunnel);
wireguard-go 0.0.20220316 (``wg``)
    Debian's userspace WireGuard (``/usr/bin/wireguard-go -f`` in each namespace,
    keys from ``wg genkey``, configured with ``wg set``, MTU 1420);
wireguard-go 0.0.20250522 (``wgup``)
    upstream's, with the 2023 offload work (TUN TSO/GRO, UDP GSO/GRO), from
    ``../shared/bin/wireguard-go`` next to the checkout when present (or
    ``--wireguard-go-upstream``); configured the same way. Interface names are unique
    across namespaces and builds: wireguard-go's control sockets in
    ``/var/run/wireguard`` are shared by all namespaces;
trio-sudp v2, trio-sudp v3
    the real daemons: ``trio-sudp serve`` in namespace 0, ``trio-sudp connect`` in
    namespace 1, configured with ``trio-sudp config`` (default MTUs: 1420 for v2,
    1400 for v3).

Measurements, each phase across all tunnels before the next:

RTT
    the median of pings over the idle tunnel (``ping -i 0.05``).
TCP
    iperf3, one stream, client (namespace 1) to server (namespace 0), in rounds
    interleaved across the tunnels (best round shown, all listed).
CPU per Gbit
    the CPU seconds both tunnel processes used together (utime+stime of all threads,
    ``/proc/<pid>/stat``) over all TCP rounds, per Gbit iperf3 received. Bytes, not
    packets: upstream wireguard-go reads 64 KB TCP super-packets from its TUN device,
    so "per kernel packet" would flatter it. CPU µs per packet (the earlier measure)
    is still in the details table: packets through the tunnel device in both
    directions (``ip -s -j link``; for trio-sudp its own device counters from
    ``show --json``, which count the segments of a GSO write).
UDP
    the highest rate of 1400-byte datagrams (``iperf3 -u -l 1400``) received with
    less than 1 % loss, found by doubling the offered rate and then bisecting. A
    1400-byte datagram is a 1428-byte IP packet, more than every tunnel's MTU: the
    kernel sends it as two fragments, two tunnel packets (the same for every tunnel).
Per-hop RTT
    where the time of one idle ping goes. A capture helper (``netcapture.py``: one
    ``AF_PACKET`` socket per interface with kernel timestamps, ``SO_TIMESTAMPNS``)
    runs in each namespace on its tunnel device and its veth, and the client pings
    the server through the tunnel, one echo every 50 ms (as for the RTT). Each echo
    is found at eight points, all stamped by the same kernel clock: the request
    leaving the client's TUN device (t1: the kernel queues it for the client
    daemon), its encrypted datagram leaving the client's veth (t2) and arriving on
    the server's veth (t3: the same datagram, matched by its first 48 payload bytes,
    which hold a random nonce), the request arriving from the server's TUN device
    (t4: the server daemon wrote it), the reply leaving the server's TUN (t5), its
    datagram on both veths (t6, t7), and the reply arriving from the client's TUN
    (t8). Hops: client daemon out t2-t1 (wakeup, TUN read, encrypt, UDP send), wire
    t3-t2, server daemon in t4-t3 (UDP receive, wakeup, decrypt, TUN write), server
    kernel (ICMP echo) t5-t4, server daemon out t6-t5, wire t7-t6, client daemon in
    t8-t7; what ping reports beyond t8-t1 is the client kernel and ping itself. Each
    hop is the median over the echoes; only data datagrams count (SUDP kind 4,
    WireGuard type 4), so a keepalive sent meanwhile is not taken for the echo. The
    capture sockets add a copy per packet at each tap (a few µs in all); they are
    read once a second, so no capture process wakes up per packet.
Batching (trio-sudp)
    one more TCP run per trio-sudp tunnel, with the daemons' system calls counted by
    ``perf stat`` (syscall tracepoints; in-kernel counting, but it slows each call a
    little, so this run's throughput is not the TCP figure). UDP datagrams per send
    call (``sendmsg``/``sendmmsg``/``sendto``) and per receive call, TUN packets per
    ``read``/``readv`` and per ``write``/``writev``, and datagrams per wakeup (a
    wakeup: a voluntary context switch of the daemon, i.e. its event loop slept in
    ``epoll_wait`` and was woken; ``/proc/<pid>/task/*/status``; a busy loop rarely
    sleeps) and per ``epoll_wait`` call (one turn of the event loop). Datagrams are the
    peers' packet counters in ``show --json`` (data packets; keepalives are few);
    the daemons' own UDP counters are used instead where ``show --json`` has them.

These machines are shared: before starting, and whenever a measurement finds other
processes (outside our namespaces) using more than 10 % of a CPU, the benchmark waits
for quiet (``--wait-quiet``, 300 s in all by default) and repeats that measurement;
what stayed disturbed is said in the report. Their absolute speed differs from run to
run by up to 2.5x: only ratios within one run mean anything.

Everything is printed as tables with ratios to each wireguard-go and appended with
the date, the command and the machine to ``bench/RESULTS.md`` (``--no-append`` to
skip); ``--json`` also prints the whole result as one JSON object on the last line.
Namespaces, processes and temporary files are always removed, on errors and on
Ctrl-C or SIGTERM too; ``--keep-logs`` keeps the daemons' logs and captures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlab import (
    CHECKOUT,
    DISTURBED,
    HERE,
    VETH_IP,
    BenchError,
    Daemon,
    Iperf,
    Lab,
    SudpPair,
    SyscallCounter,
    check_host,
    cpu_seconds,
    cpu_used,
    ensure_tools,
    fmt,
    host_cpu,
    install_signal_handlers,
    machine,
    make_sudp_config,
    markdown,
    open_lab,
    package_version,
    ratio,
    run,
    sudp_drops,
    sudp_install,
    sudp_pair,
    tool_version,
    voluntary_switches,
    wait_for,
)

RESULTS = HERE / "RESULTS.md"
PREFIX = "sudpbench-"
VETH_DEV = ("veth0", "veth1")
SIDES = ("server", "client")

DEBIAN_WG = "/usr/bin/wireguard-go"
UPSTREAM_WG = CHECKOUT.parent / "shared" / "bin" / "wireguard-go"
#: WireGuard builds: tunnel addresses and ports of their own, so all run at once.
WG = {
    "wg": {"ip": ("10.202.0.1", "10.202.0.2"), "port": 51820, "tag": "wgd"},
    "wgup": {"ip": ("10.206.0.1", "10.206.0.2"), "port": 51821, "tag": "wgu"},
}
WG_MTU = 1420
#: trio-sudp v2 and v3 run side by side: each its own tunnel network and port.
SUDP_NETWORK = {2: "10.203.0.1/24", 3: "10.204.0.1/24"}
SUDP_PORT = {2: 7002, 3: 7003}

UDP_LEN = 1400
LOSS_LIMIT = 1.0  # per cent
TUNNELS = ("veth", "wg", "wgup", "v2", "v3")
#: The references, the modern one first: ratios are given to each.
REFERENCES = ("wgup", "wg")
REFERENCE_SHORT = {"wgup": "wg 2025", "wg": "wg 2022"}
PACKAGES = {"wg": "wireguard-tools", "iperf3": "iperf3"}
OPTIONAL_PACKAGES = {"perf": "linux-perf"}


# ----------------------------------------------------------------------------- tunnels


@dataclass
class Tunnel:
    """A tunnel under test: where to send to, and which process moves packets on each side."""

    key: str
    name: str
    #: The server's address as the client namespace reaches it.
    target: str
    #: Tunnel device (in namespace 0, namespace 1), None for the bare veth.
    devices: tuple[str, str] | None = None
    daemons: tuple[Daemon, Daemon] | None = None
    #: The outer UDP port (server side), for captures.
    udp_port: int | None = None
    #: Whether a captured UDP payload (its first bytes) is a data message.
    is_data: Callable[[bytes], bool] | None = None
    #: trio-sudp's daemons, for ``show --json``.
    pair: SudpPair | None = None
    #: Packets each side moved through its device, when the kernel's link counters
    #: would not say (trio-sudp's GSO writes); None: the link counters.
    packet_counts: Callable[[], tuple[int, int]] | None = None


@contextlib.contextmanager
def veth_tunnel(lab: Lab) -> Iterator[Tunnel]:
    yield Tunnel("veth", "veth", VETH_IP[0])


def wireguard_version(binary: str) -> str:
    """``0.0.20250522`` from ``wireguard-go --version``."""
    found = re.search(r"v?(\d+\.\d+\.\d+)", tool_version([binary, "--version"]))
    return found.group(1) if found else "?"


@contextlib.contextmanager
def wireguard_tunnel(lab: Lab, key: str, binary: str) -> Iterator[Tunnel]:
    spec = WG[key]
    ips, port = spec["ip"], spec["port"]
    assert isinstance(ips, tuple) and isinstance(port, int)
    # /var/run/wireguard/<dev>.sock is shared by the namespaces: unique device names.
    tag = os.getpid() % 100000
    devs = (f"{spec['tag']}{tag}s", f"{spec['tag']}{tag}c")
    env = {
        **os.environ,
        "WG_PROCESS_FOREGROUND": "1",
        "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1",
        "LOG_LEVEL": "error",
    }
    keys = []
    for i in (0, 1):
        private = run(["wg", "genkey"]).stdout.strip()
        public = run(["wg", "pubkey"], stdin=private).stdout.strip()
        key_file = lab.tmp / f"{key}{i}.key"
        key_file.write_text(private + "\n")
        key_file.chmod(0o600)
        keys.append((key_file, public))
    daemons = []
    for i, dev in enumerate(devs):
        daemons.append(lab.spawn(i, f"{key}-{i}", [binary, "-f", dev], env=env))
    try:
        for i, dev in enumerate(devs):
            sock = Path(f"/var/run/wireguard/{dev}.sock")
            wait_for(sock.exists, 15, f"wireguard-go's socket {sock}")
            other = 1 - i
            lab.run(i, ["wg", "set", dev, "private-key", str(keys[i][0]),
                        "listen-port", str(port),
                        "peer", keys[other][1], "allowed-ips", f"{ips[other]}/32",
                        "endpoint", f"{VETH_IP[other]}:{port}"])  # fmt: skip
            lab.run(i, ["ip", "addr", "add", f"{ips[i]}/24", "dev", dev])
            lab.run(i, ["ip", "link", "set", dev, "mtu", str(WG_MTU), "up"])
        wait_for(lambda: lab.ping_ok(ips[0]), 20, f"a ping through {binary}")
        yield Tunnel(
            key,
            f"wireguard-go {wireguard_version(binary)}",
            ips[0],
            devs,
            (daemons[0], daemons[1]),
            udp_port=port,
            is_data=lambda head: len(head) >= 1 and head[0] == 4,
        )
    finally:
        for daemon in daemons:
            lab.stop(daemon)
        for dev in devs:  # left behind only if wireguard-go had to be killed
            with contextlib.suppress(OSError):
                os.unlink(f"/var/run/wireguard/{dev}.sock")


@contextlib.contextmanager
def sudp_tunnel(lab: Lab, version: int, log_level: str) -> Iterator[Tunnel]:
    port = SUDP_PORT[version]
    config = make_sudp_config(
        lab.tmp / f"v{version}", version, port, SUDP_NETWORK[version], VETH_IP[0]
    )
    with sudp_pair(lab, config, log_level) as pair:
        server, client = pair.show()
        devs = (server["interface"], client["interface"])

        def packet_counts() -> tuple[int, int]:
            counts = []
            for status in pair.show():
                device = status["device"]
                counts.append(int(device["rx_packets"]) + int(device["tx_packets"]))
            return counts[0], counts[1]

        yield Tunnel(
            f"v{version}",
            f"trio-sudp v{version}",
            config.target,
            devs,
            pair.daemons,
            udp_port=port,
            is_data=lambda head: len(head) >= 2 and head[1] == 4,
            pair=pair,
            packet_counts=packet_counts,
        )


# ----------------------------------------------------------------------------- measurements


@dataclass
class CpuSample:
    """CPU seconds of each side's process, packets through each side's device, host CPU."""

    cpu: tuple[float, float]
    packets: tuple[int, int]
    host: tuple[float, float]
    others: dict[int, tuple[str, float]]
    at: float


def sample(lab: Lab, tunnel: Tunnel, *, before: bool) -> CpuSample:
    """CPU, time and packet counters; the slow packet counters (``show --json`` runs a
    command) are read before the clock when starting and after it when ending, so the
    interval holds only the measurement."""
    packets = (0, 0)

    def count() -> tuple[int, int]:
        if tunnel.daemons is None or tunnel.devices is None:
            return 0, 0
        if tunnel.packet_counts is not None:
            return tunnel.packet_counts()
        return lab.link_packets(0, tunnel.devices[0]), lab.link_packets(1, tunnel.devices[1])

    if before:
        packets = count()
    others = lab.others()
    cpu = (0.0, 0.0)
    if tunnel.daemons is not None:
        cpu = (cpu_seconds(tunnel.daemons[0].pid), cpu_seconds(tunnel.daemons[1].pid))
    at, host = time.monotonic(), host_cpu()
    if not before:
        packets = count()
    return CpuSample(cpu, packets, host, others, at)


@dataclass
class CpuCost:
    """CPU per packet and per bit, packets per second and CPU share, per side (server, client).

    Built from one or more measured intervals (``add``): totals, not an average of ratios.
    """

    cpu: list[float] = field(default_factory=lambda: [0.0, 0.0])
    packets: list[int] = field(default_factory=lambda: [0, 0])
    #: Payload bits the receiver got meanwhile (iperf3).
    bits: float = 0.0
    host_busy: float = 0.0
    host_total: float = 0.0
    #: CPU seconds of processes not ours (another benchmark, a test run, ...).
    others: float = 0.0
    elapsed: float = 0.0

    def add(self, before: CpuSample, after: CpuSample) -> None:
        for side in (0, 1):
            self.cpu[side] += after.cpu[side] - before.cpu[side]
            self.packets[side] += after.packets[side] - before.packets[side]
        self.host_busy += after.host[0] - before.host[0]
        self.host_total += after.host[1] - before.host[1]
        self.others += cpu_used(before.others, after.others)
        self.elapsed += after.at - before.at

    def merge(self, other: CpuCost) -> None:
        for side in (0, 1):
            self.cpu[side] += other.cpu[side]
            self.packets[side] += other.packets[side]
        self.bits += other.bits
        self.host_busy += other.host_busy
        self.host_total += other.host_total
        self.others += other.others
        self.elapsed += other.elapsed

    @property
    def others_percent(self) -> float:
        """Per cent of one CPU that other processes used meanwhile."""
        return 100 * self.others / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def measured(self) -> bool:
        """Whether there are tunnel processes to account (not the bare veth)."""
        return any(self.packets)

    @property
    def us_per_packet(self) -> tuple[float | None, float | None]:
        us = [c * 1e6 / p if p > 0 else None for c, p in zip(self.cpu, self.packets, strict=True)]
        return us[0], us[1]

    @property
    def seconds_per_gbit(self) -> float | None:
        """CPU seconds of both sides together per Gbit received."""
        if not self.measured or self.bits <= 0:
            return None
        return sum(self.cpu) / (self.bits / 1e9)

    @property
    def packets_per_second(self) -> tuple[float, float]:
        elapsed = max(self.elapsed, 1e-9)
        return self.packets[0] / elapsed, self.packets[1] / elapsed

    @property
    def cpu_percent(self) -> tuple[float, float]:
        elapsed = max(self.elapsed, 1e-9)
        return 100 * self.cpu[0] / elapsed, 100 * self.cpu[1] / elapsed

    @property
    def host_percent(self) -> float:
        """How busy the whole machine was: per cent of all CPUs' wall-clock time."""
        capacity = self.elapsed * (os.cpu_count() or 1)
        return 100 * self.host_busy / capacity if capacity > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "cpu_seconds": self.cpu,
            "packets": self.packets,
            "bits": self.bits,
            "elapsed": self.elapsed,
            "us_per_packet": self.us_per_packet if self.measured else None,
            "cpu_seconds_per_gbit": self.seconds_per_gbit,
            "cpu_percent": self.cpu_percent,
            "host_percent": self.host_percent,
            "others_percent": self.others_percent,
        }


@dataclass
class UdpTrial:
    offered: float  # Mbit/s asked of iperf3
    sent: float  # Mbit/s the sender managed
    received: float  # Mbit/s that arrived
    loss: float  # per cent
    cpu: CpuCost


#: The hops of one ping, in order (t2-t1, ..., t8-t7), then what ping adds.
HOPS = (
    "client out",
    "wire →",
    "server in",
    "server kernel",
    "server out",
    "wire ←",
    "client in",
    "ping + client kernel",
)


@dataclass
class Result:
    key: str
    name: str
    #: Received Mbit/s of each TCP round.
    tcp_rounds: list[float] = field(default_factory=list)
    tcp_retransmits: int = 0
    #: CPU over all TCP rounds.
    tcp_cpu: CpuCost = field(default_factory=CpuCost)
    trials: list[UdpTrial] = field(default_factory=list)
    #: Every ping's RTT in ms.
    rtts: list[float] = field(default_factory=list)
    #: Per-hop µs of each captured echo (HOPS order), and ping's RTT (ms) of those.
    hops: list[list[float]] = field(default_factory=list)
    hop_rtts: list[float] = field(default_factory=list)
    hop_echoes: int = 0
    #: The batching run (trio-sudp).
    batching: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    #: Measurements kept although other processes disturbed them (after retries).
    disturbed: int = 0
    #: Kernel drop counters that grew during the TCP rounds and the UDP search.
    tcp_drops: dict[str, int] = field(default_factory=dict)
    udp_drops: dict[str, int] = field(default_factory=dict)

    @property
    def tcp(self) -> float | None:
        """The best round (the least disturbed by other load on the machine)."""
        return max(self.tcp_rounds) if self.tcp_rounds else None

    @property
    def udp_best(self) -> UdpTrial | None:
        fine = [t for t in self.trials if t.loss < LOSS_LIMIT]
        return max(fine, key=lambda t: t.received) if fine else None

    @property
    def udp(self) -> float | None:
        best = self.udp_best
        return None if best is None else best.received

    @property
    def rtt(self) -> float | None:
        """The median RTT: the VM's scheduling adds rare multi-millisecond outliers."""
        return statistics.median(self.rtts) if self.rtts else None

    @property
    def cpu_per_gbit(self) -> float | None:
        return self.tcp_cpu.seconds_per_gbit

    @property
    def hop_medians(self) -> list[float] | None:
        if not self.hops:
            return None
        return [statistics.median(h[i] for h in self.hops) for i in range(len(HOPS))]

    def as_json(self) -> dict[str, Any]:
        best = self.udp_best
        return {
            "key": self.key,
            "name": self.name,
            "tcp_mbit": self.tcp,
            "tcp_rounds": self.tcp_rounds,
            "tcp_retransmits": self.tcp_retransmits,
            "tcp_cpu": self.tcp_cpu.as_json(),
            "cpu_seconds_per_gbit": self.cpu_per_gbit,
            "udp_mbit": self.udp,
            "udp_best": None
            if best is None
            else {"offered": best.offered, "received": best.received, "loss": best.loss},
            "udp_trials": [
                {"offered": t.offered, "sent": t.sent, "received": t.received, "loss": t.loss}
                for t in self.trials
            ],
            "rtt_ms": self.rtt,
            "rtts": self.rtts,
            "hops_us": None
            if self.hop_medians is None
            else dict(zip(HOPS, self.hop_medians, strict=True)),
            "hop_echoes": self.hop_echoes,
            "hop_rtt_ms": statistics.median(self.hop_rtts) if self.hop_rtts else None,
            "batching": self.batching,
            "tcp_drops": self.tcp_drops,
            "udp_drops": self.udp_drops,
            "facts": self.facts,
            "disturbed": self.disturbed,
            "error": self.error,
        }


def measure_rtt(lab: Lab, tunnel: Tunnel, count: int, result: Result) -> None:
    argv = ["ping", "-n", "-c", str(count), "-i", "0.05", "-W", "2", tunnel.target]
    out = lab.run(1, argv, timeout=count * 0.05 + 30, check=False).stdout
    times = [float(t) for t in re.findall(r"time=([\d.]+) ms", out)]
    if len(times) < count * 0.9:
        raise BenchError(f"ping through {tunnel.name} lost too many replies:\n{out}")
    result.rtts += times


def undisturbed(
    lab: Lab, tunnel: Tunnel, measure: Callable[[], tuple[Any, CpuCost]], result: Result
) -> tuple[Any, CpuCost]:
    """Run a measurement; repeat it (up to twice) if other processes took CPU meanwhile."""
    for attempt in range(3):
        value, cpu = measure()
        if cpu.others_percent < DISTURBED:
            return value, cpu
        if attempt < 2 and lab.patience > 0:
            print(
                f"  {tunnel.name}: other processes used {cpu.others_percent:.0f} % of a CPU "
                "meanwhile: waiting for quiet, then repeating",
                flush=True,
            )
            lab.wait_quiet()
        else:
            break
    result.disturbed += 1
    return value, cpu


def measure_tcp(lab: Lab, iperf: Iperf, tunnel: Tunnel, seconds: float, result: Result) -> None:
    def once() -> tuple[dict[str, Any], CpuCost]:
        cpu = CpuCost()
        before = sample(lab, tunnel, before=True)
        data = iperf.client(tunnel.target, [], seconds)
        cpu.add(before, sample(lab, tunnel, before=False))
        cpu.bits = float(data["end"]["sum_received"]["bytes"]) * 8
        return data, cpu

    before = drop_counters(lab, tunnel)
    data, cpu = undisturbed(lab, tunnel, once, result)
    count_drops(lab, tunnel, before, result.tcp_drops)
    end = data["end"]
    result.tcp_rounds.append(end["sum_received"]["bits_per_second"] / 1e6)
    result.tcp_retransmits += int(end["sum_sent"].get("retransmits") or 0)
    result.tcp_cpu.merge(cpu)
    print(
        f"  {tunnel.name:26} {result.tcp_rounds[-1]:7.0f} Mbit/s, "
        f"{end['sum_sent'].get('retransmits')} retransmits; "
        f"CPU s/Gbit so far {fmt(result.cpu_per_gbit, 2)}",
        flush=True,
    )


def udp_trial(
    lab: Lab, iperf: Iperf, tunnel: Tunnel, rate: float, seconds: float, result: Result
) -> UdpTrial:
    # 4 MB socket buffers on both iperf3 ends (the default drops bursts even on loopback).
    args = ["-u", "-b", f"{rate:.0f}M", "-l", str(UDP_LEN), "-w", "4M"]

    def once() -> tuple[dict[str, Any], CpuCost]:
        cpu = CpuCost()
        before = sample(lab, tunnel, before=True)
        end: dict[str, Any] = iperf.client(tunnel.target, args, seconds)["end"]
        cpu.add(before, sample(lab, tunnel, before=False))
        return end, cpu

    end, cpu = undisturbed(lab, tunnel, once, result)
    received = end["sum_received"]
    return UdpTrial(
        offered=rate,
        sent=end["sum_sent"]["bits_per_second"] / 1e6,
        received=received["bits_per_second"] / 1e6,
        loss=float(received["lost_percent"]),
        cpu=cpu,
    )


def measure_udp(
    lab: Lab, iperf: Iperf, tunnel: Tunnel, seconds: float, bisections: int, result: Result
) -> None:
    """The UDP search, noting which kernel counters say where packets were lost."""
    before = drop_counters(lab, tunnel)
    try:
        search_udp(lab, iperf, tunnel, seconds, bisections, result)
    finally:
        count_drops(lab, tunnel, before, result.udp_drops)


def search_udp(
    lab: Lab, iperf: Iperf, tunnel: Tunnel, seconds: float, bisections: int, result: Result
) -> None:
    """Double the offered rate until loss reaches 1 %, then bisect; keep the best good trial."""

    def trial(rate: float) -> str:
        """``"ok"``, ``"loss"`` (1 % or more), or ``"sender"`` (iperf3 could not offer it)."""
        t = udp_trial(lab, iperf, tunnel, rate, seconds, result)
        result.trials.append(t)
        if t.loss >= LOSS_LIMIT:
            verdict = "loss"
        elif t.sent < 0.9 * rate:
            verdict = "sender"  # the limit we can see is the sender's, not the tunnel's
        else:
            verdict = "ok"
        print(
            f"  {tunnel.name:26} {rate:7.0f} Mbit/s offered: sent {t.sent:7.1f}, "
            f"received {t.received:7.1f}, loss {t.loss:5.2f} % {verdict}",
            flush=True,
        )
        return verdict

    good: float | None = None
    bad: float | None = None
    rate = 250.0
    while good is None or bad is None:
        verdict = trial(rate)
        if verdict == "sender":
            return
        if verdict == "ok":
            good = rate
            if rate >= 16000:
                return
            rate *= 2
        else:
            bad = rate
            if rate <= 10:
                return
            rate /= 2
    for _ in range(bisections):
        if bad / good < 1.05:
            break
        mid = (good * bad) ** 0.5
        verdict = trial(mid)
        if verdict == "sender":
            return
        if verdict == "ok":
            good = mid
        else:
            bad = mid


# ----------------------------------------------------------------------------- per-hop RTT


@contextlib.contextmanager
def captures(
    lab: Lab, name: str, ifaces: Sequence[Sequence[str]], udp_port: int | None, seconds: float
) -> Iterator[list[Path]]:
    """``netcapture.py`` in namespaces 0 and 1 on ``ifaces[node]``; yields the output files.

    The files are complete once the ``with`` block is left.
    """
    outs: list[Path] = []
    daemons: list[Daemon] = []
    try:
        for node, names in enumerate(ifaces):
            out = lab.tmp / f"capture-{name}-{node}.jsonl"
            argv = [sys.executable, str(HERE / "netcapture.py"), "--seconds", f"{seconds:g}"]
            for iface in names:
                argv += ["--iface", iface]
            if udp_port is not None:
                argv += ["--udp-port", str(udp_port)]
            daemon = lab.spawn(node, f"capture-{name}-{node}", argv, stdout=out)
            daemons.append(daemon)
            outs.append(out)

            def ready(d: Daemon = daemon, o: Path = out) -> bool:
                d.check_alive()
                return o.exists() and o.read_text().startswith("ready")

            wait_for(ready, 15, f"the capture helper in namespace {node}")
        yield outs
    finally:
        for daemon in daemons:
            lab.stop(daemon, limit=5)


def read_capture(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def echo_hops(
    client: list[dict[str, Any]],
    server: list[dict[str, Any]],
    devices: tuple[str, str],
    is_data: Callable[[bytes], bool],
) -> dict[int, list[float]]:
    """t1..t8 (ns) of every echo found at all eight points, by ICMP sequence number."""

    def icmp(records: list[dict[str, Any]], dev: str, out: bool, kind: int) -> dict[int, int]:
        found: dict[int, int] = {}
        for r in records:
            if r["if"] == dev and r["out"] == out and "icmp" in r and r["icmp"][0] == kind:
                found.setdefault(r["icmp"][2], r["t"])
        return found

    def data(records: list[dict[str, Any]], out: bool) -> list[dict[str, Any]]:
        return [
            r
            for r in records
            if r["if"].startswith("veth")
            and r["out"] == out
            and "head" in r
            and is_data(bytes.fromhex(r["head"]))
        ]

    t1 = icmp(client, devices[1], True, 8)
    t4 = icmp(server, devices[0], False, 8)
    t5 = icmp(server, devices[0], True, 0)
    t8 = icmp(client, devices[1], False, 0)
    client_out, client_in = data(client, True), data(client, False)
    server_in, server_out = data(server, False), data(server, True)

    def first_after(records: list[dict[str, Any]], start: int, end: int) -> dict[str, Any] | None:
        return next((r for r in records if start <= r["t"] <= end), None)

    def same(records: list[dict[str, Any]], head: str) -> int | None:
        return next((r["t"] for r in records if r["head"] == head), None)

    out: dict[int, list[float]] = {}
    for seq, a in t1.items():
        if seq not in t4 or seq not in t5 or seq not in t8:
            continue
        sent = first_after(client_out, a, t4[seq])
        reply = first_after(server_out, t5[seq], t8[seq])
        if sent is None or reply is None:
            continue
        c = same(server_in, sent["head"])
        g = same(client_in, reply["head"])
        if c is None or g is None:
            continue
        out[seq] = [a, sent["t"], c, t4[seq], t5[seq], reply["t"], g, t8[seq]]
    return out


def measure_hops(lab: Lab, tunnel: Tunnel, count: int, result: Result) -> None:
    assert tunnel.devices is not None and tunnel.is_data is not None
    interval = 0.05
    ifaces = [[tunnel.devices[0], VETH_DEV[0]], [tunnel.devices[1], VETH_DEV[1]]]
    with captures(lab, tunnel.key, ifaces, tunnel.udp_port, count * interval + 30) as outs:
        argv = ["ping", "-n", "-c", str(count), "-i", f"{interval:g}", "-W", "2", tunnel.target]
        out = lab.run(1, argv, timeout=count * interval + 30, check=False).stdout
        time.sleep(0.2)  # the last reply's records
    rtt = {int(s): float(t) for s, t in re.findall(r"icmp_seq=(\d+) .*time=([\d.]+) ms", out)}
    server, client = read_capture(outs[0]), read_capture(outs[1])
    stamps = echo_hops(client, server, tunnel.devices, tunnel.is_data)
    for seq, t in sorted(stamps.items()):
        if seq not in rtt:
            continue
        hops = [(t[i + 1] - t[i]) / 1e3 for i in range(7)]
        hops.append(rtt[seq] * 1e3 - (t[7] - t[0]) / 1e3)
        result.hops.append(hops)
        result.hop_rtts.append(rtt[seq])
    result.hop_echoes = len(result.hops)
    if not result.hops:
        raise BenchError(
            f"per-hop RTT of {tunnel.name}: no echo found at all eight points "
            f"({len(server)} server and {len(client)} client records)"
        )


# ----------------------------------------------------------------------------- batching


#: Keys of ``show --json`` sections that would count UDP datagrams, system calls and
#: wakeups inside the daemon (none exist today; the benchmark uses them when they do).
DAEMON_BATCH_SECTIONS = ("udp", "endpoint", "socket", "batches", "loop")


def peer_packets(status: dict[str, Any]) -> tuple[int, int]:
    """Datagrams the daemon received and sent: its own UDP counters, else its peers'."""
    for section in DAEMON_BATCH_SECTIONS:
        udp = status.get(section)
        if isinstance(udp, dict) and "rx_datagrams" in udp and "tx_datagrams" in udp:
            return int(udp["rx_datagrams"]), int(udp["tx_datagrams"])
    rx = sum(int(p.get("rx_packets", 0)) for p in status.get("peers", []))
    tx = sum(int(p.get("tx_packets", 0)) for p in status.get("peers", []))
    return rx, tx


def daemon_counters(status: dict[str, Any]) -> dict[str, Any]:
    """The daemon's own batching counters, where ``show --json`` has any."""
    return {
        key: status[key]
        for key in DAEMON_BATCH_SECTIONS
        if isinstance(status.get(key), dict) and status[key]
    }


def measure_batching(
    lab: Lab, iperf: Iperf, tunnel: Tunnel, seconds: float, result: Result
) -> None:
    """One TCP run with the daemons' system calls counted (see the module docstring)."""
    assert tunnel.pair is not None and tunnel.daemons is not None
    before = tunnel.pair.show()
    switches = [voluntary_switches(d.pid) for d in tunnel.daemons]
    counters: list[SyscallCounter] = []
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        if SyscallCounter.available():
            for d, side in zip(tunnel.daemons, ("server", "client"), strict=True):
                counter = SyscallCounter(d.pid, lab.tmp / f"perf-{tunnel.key}-{side}.txt")
                counters.append(stack.enter_context(counter))
        data = iperf.client(tunnel.target, [], seconds)
    elapsed = time.monotonic() - start
    woke = [voluntary_switches(d.pid) - s for d, s in zip(tunnel.daemons, switches, strict=True)]
    after = tunnel.pair.show()
    out: dict[str, Any] = {
        "mbit": data["end"]["sum_received"]["bits_per_second"] / 1e6,
        "seconds": elapsed,
        "syscalls_counted": bool(counters),
    }
    for i, side in enumerate(("server", "client")):
        rx0, tx0 = peer_packets(before[i])
        rx1, tx1 = peer_packets(after[i])
        dev0, dev1 = before[i].get("device") or {}, after[i].get("device") or {}
        facts: dict[str, Any] = {
            "udp_rx": rx1 - rx0,
            "udp_tx": tx1 - tx0,
            "tun_read": int(dev1.get("rx_packets", 0)) - int(dev0.get("rx_packets", 0)),
            "tun_written": int(dev1.get("tx_packets", 0)) - int(dev0.get("tx_packets", 0)),
            "wakeups": woke[i],
        }
        if counters:
            facts["calls"] = counters[i].counts()
        counted = daemon_counters(after[i])
        if counted:
            facts["daemon_counters"] = counted
        out[side] = facts
    result.batching = out


def per(count: int, calls: int | None) -> float | None:
    return None if not calls else count / calls


# ----------------------------------------------------------------------------- drops


#: Kernel counters (``/proc/net/snmp``, per namespace) that say where packets were lost.
SNMP_DROPS = (
    ("Udp", "RcvbufErrors"),
    ("Udp", "SndbufErrors"),
    ("Udp", "InErrors"),
    ("Ip", "ReasmFails"),
    ("Ip", "InDiscards"),
    ("Ip", "OutDiscards"),
)


def snmp_drops(lab: Lab) -> dict[str, int]:
    """Drop counters of both namespaces, as ``server Udp.RcvbufErrors`` etc."""
    out: dict[str, int] = {}
    for node, side in ((0, "server"), (1, "client")):
        table = lab.snmp(node)
        for proto, key in SNMP_DROPS:
            out[f"{side} {proto}.{key}"] = table.get(proto, {}).get(key, 0)
    return out


def drop_counters(lab: Lab, tunnel: Tunnel) -> dict[str, int]:
    """The namespaces' drop counters and the tunnel devices' (see :func:`device_drops`)."""
    return {**snmp_drops(lab), **device_drops(lab, tunnel)}


def count_drops(lab: Lab, tunnel: Tunnel, before: dict[str, int], into: dict[str, int]) -> None:
    """Add to ``into`` how much each counter grew since ``before``."""
    for key, value in drop_counters(lab, tunnel).items():
        grown = value - before.get(key, 0)
        if grown > 0:
            into[key] = into.get(key, 0) + grown


def device_drops(lab: Lab, tunnel: Tunnel) -> dict[str, int]:
    """Packets the kernel dropped at each tunnel device (a full queue to the process)."""
    if tunnel.devices is None:
        return {}
    out: dict[str, int] = {}
    for node, side in ((0, "server"), (1, "client")):
        stats = lab.link_stats(node, tunnel.devices[node])
        out[f"{side} tun tx_dropped"] = int(stats["tx"]["dropped"])
        out[f"{side} tun rx_dropped"] = int(stats["rx"]["dropped"])
    return out


# ----------------------------------------------------------------------------- report


def tcp_us(r: Result, side: int) -> float | None:
    return r.tcp_cpu.us_per_packet[side] if r.tcp_cpu.measured else None


def references(results: list[Result]) -> list[Result]:
    """The wireguard-go rows that worked, the modern one first."""
    by_key = {r.key: r for r in results if r.error is None and r.tcp is not None}
    return [by_key[k] for k in REFERENCES if k in by_key]


METRICS: dict[str, tuple[str, Callable[[Result], float | None], int]] = {
    "tcp": ("TCP Mbit/s", lambda r: r.tcp, 0),
    "udp": ("UDP Mbit/s (<1% loss)", lambda r: r.udp, 0),
    "rtt": ("RTT ms", lambda r: r.rtt, 3),
    "cpu_per_gbit": ("CPU s/Gbit (both)", lambda r: r.cpu_per_gbit, 2),
}


def ratios(r: Result, refs: list[Result]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for ref in refs:
        row: dict[str, float | None] = {}
        for key, (_, value, _) in METRICS.items():
            v, b = value(r), value(ref)
            row[key] = None if v is None or b is None or b == 0 else v / b
        out[ref.key] = row
    return out


def table(results: list[Result]) -> str:
    refs = references(results)
    head = [""]
    for label, _, _ in METRICS.values():
        head.append(label)
        head += [f"× {REFERENCE_SHORT[ref.key]}" for ref in refs]
    rows = [head]
    for r in results:
        if r.error is not None and r.tcp is None:
            failed = f"failed: {r.error.splitlines()[0][:80]}"
            rows.append([r.name, failed, *[""] * (len(head) - 2)])
            continue
        row = [r.name]
        for _, value, digits in METRICS.values():
            row.append(fmt(value(r), digits))
            row += [ratio(value(r), value(ref)) for ref in refs]
        rows.append(row)
    return markdown(rows)


def detail_table(results: list[Result]) -> str:
    rows = [
        [
            "",
            "TCP rounds Mbit/s",
            "TCP retr.",
            "CPU µs/pkt srv/cli",
            "TCP kpkt/s srv/cli",
            "TCP CPU % srv/cli/host",
            "UDP best: offered → received Mbit/s, loss",
            "UDP CPU µs/pkt srv/cli",
            "UDP kpkt/s srv/cli",
            "UDP CPU % srv/cli/host",
            "RTT min/avg/max ms",
        ]
    ]

    def pps(c: CpuCost | None) -> str:
        if c is None or not c.measured:
            return "-"
        return "/".join(f"{p / 1e3:.0f}" for p in c.packets_per_second)

    def busy(c: CpuCost | None) -> str:
        if c is None or c.elapsed == 0:
            return "-"
        if not c.measured:
            return f"-/-/{c.host_percent:.0f}"
        return "/".join(f"{v:.0f}" for v in (*c.cpu_percent, c.host_percent))

    def us(c: CpuCost | None) -> str:
        if c is None or not c.measured:
            return "-"
        return "/".join(fmt(u, 2) for u in c.us_per_packet)

    for r in results:
        best = r.udp_best
        udp_cpu = None if best is None else best.cpu
        rtts = r.rtts
        rows.append(
            [
                r.name,
                ", ".join(f"{x:.0f}" for x in r.tcp_rounds) or "-",
                str(r.tcp_retransmits) if r.tcp_rounds else "-",
                us(r.tcp_cpu),
                pps(r.tcp_cpu),
                busy(r.tcp_cpu),
                "-"
                if best is None
                else f"{best.offered:.0f} → {best.received:.0f}, {best.loss:.2f} %",
                us(udp_cpu),
                pps(udp_cpu),
                busy(udp_cpu),
                "-"
                if not rtts
                else f"{min(rtts):.3f}/{statistics.fmean(rtts):.3f}/{max(rtts):.3f}",
            ]
        )
    return markdown(rows)


def hops_table(results: list[Result]) -> str:
    rows = [["", "echoes", "ping RTT µs", "t8-t1 µs", *(f"{h} µs" for h in HOPS)]]
    for r in results:
        medians = r.hop_medians
        if medians is None:
            continue
        rows.append(
            [
                r.name,
                str(r.hop_echoes),
                f"{statistics.median(r.hop_rtts) * 1e3:.0f}",
                f"{statistics.median(sum(h[:7]) for h in r.hops):.0f}",
                *(f"{m:.0f}" for m in medians),
            ]
        )
    return markdown(rows)


def batching_table(results: list[Result]) -> str:
    rows = [
        [
            "",
            "side",
            "Mbit/s (perf on)",
            "UDP dgrams out / send call",
            "UDP dgrams in / receive call",
            "TUN pkts / read",
            "TUN pkts / write",
            "UDP dgrams in+out / wakeup",
            "UDP dgrams in+out / epoll_wait",
            "wakeups/s",
            "epoll_wait calls/s",
        ]
    ]
    for r in results:
        b = r.batching
        if not b:
            continue
        for side in ("server", "client"):
            f = b[side]
            calls = f.get("calls") or {}
            wakeups = f["wakeups"]
            rows.append(
                [
                    r.name,
                    side,
                    f"{b['mbit']:.0f}",
                    fmt(per(f["udp_tx"], calls.get("udp_send")), 1),
                    fmt(per(f["udp_rx"], calls.get("udp_receive")), 1),
                    fmt(per(f["tun_read"], calls.get("tun_read")), 1),
                    fmt(per(f["tun_written"], calls.get("tun_write")), 1),
                    fmt(per(f["udp_rx"] + f["udp_tx"], wakeups), 1),
                    fmt(per(f["udp_rx"] + f["udp_tx"], calls.get("poll")), 1),
                    f"{wakeups / b['seconds']:.0f}",
                    f"{calls['poll'] / b['seconds']:.0f}" if calls else "-",
                ]
            )
    return markdown(rows)


def targets(results: list[Result]) -> list[str]:
    """Issue 11's targets for trio-sudp, against this run's upstream wireguard-go."""
    ref = next((r for r in references(results) if r.key == "wgup"), None)
    if ref is None:
        return ["- no upstream wireguard-go in this run: the targets were not checked"]
    lines = []
    for r in results:
        if not r.name.startswith("trio-sudp") or r.tcp is None:
            continue
        got = ratios(r, [ref])[ref.key]
        checks = []
        for label, key, ok in (
            ("TCP ≥ 0.6×", "tcp", lambda x: x >= 0.6),
            ("UDP ≥ 1.0×", "udp", lambda x: x >= 1.0),
            ("RTT ≤ 1.3×", "rtt", lambda x: x <= 1.3),
            ("CPU/Gbit ≤ 2×", "cpu_per_gbit", lambda x: x <= 2.0),
        ):
            value = got[key]
            if value is not None:
                checks.append(f"{label}: {'yes' if ok(value) else 'NO'} ({value:.2f}×)")
        lines.append(f"- {r.name}: " + ", ".join(checks))
    return lines


def report(results: list[Result], args: argparse.Namespace, command: str, about: str) -> str:
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = [
        f"### {now}: trio-sudp vs wireguard-go",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {about}",
        "",
        f"All tunnels up at once, measured one after another. TCP: iperf3, one stream, "
        f"client → server, {args.tcp_rounds} round(s) of {args.tcp_seconds:g} s interleaved "
        "across the tunnels, best round shown. "
        f"UDP: the best received rate of {UDP_LEN}-byte datagrams "
        f"(`iperf3 -u -l {UDP_LEN} -w 4M`, {args.udp_seconds:g} s per trial, rate doubled "
        f"then bisected) with < {LOSS_LIMIT:g} % loss. "
        f"RTT: median of {args.pings} pings (`ping -i 0.05`) over the idle tunnel. "
        "CPU s/Gbit: CPU seconds of both tunnel processes together (utime+stime, all "
        "threads) over all TCP rounds per Gbit received; × below 1 is better. "
        "× wg 2025 / wg 2022: ratio to wireguard-go 0.0.20250522 / 0.0.20220316 in this run.",
        "",
        table(results),
        "",
        "Details (server / client / whole machine; CPU µs/pkt: per packet through the "
        "tunnel device in both directions):",
        "",
        detail_table(results),
        "",
    ]
    if any(r.hops for r in results):
        lines += [
            f"Per-hop RTT of an idle ping (median over the echoes of {args.hop_pings} pings "
            "every 50 ms, kernel timestamps at the client TUN (t1, t8), client veth (t2, "
            "t7), server veth (t3, t6) and server TUN (t4, t5); see the script's docstring):",
            "",
            hops_table(results),
            "",
        ]
    if any(r.batching for r in results):
        counted = all(r.batching.get("syscalls_counted") for r in results if r.batching)
        lines += [
            f"Batching under load (one more {args.batch_seconds:g} s TCP run per trio-sudp "
            "tunnel; system calls counted with `perf stat`"
            + ("" if counted else " — perf was missing, so no per-call figures")
            + "; datagrams from `show --json` peer counters; a wakeup = a voluntary context "
            "switch of the daemon (its loop slept and was woken); an epoll_wait call = one "
            "turn of its event loop, slept or not):",
            "",
            batching_table(results),
            "",
        ]
        missing = [
            r.name
            for r in results
            if r.batching and not any("daemon_counters" in r.batching[s] for s in SIDES)
        ]
        if missing:
            lines += [
                "`show --json` has no UDP datagram, send/receive call or wakeup counters "
                f"({', '.join(missing)}): counted from outside (perf, /proc).",
                "",
            ]
    lines += ["Targets (issue 11, ratios to wireguard-go 0.0.20250522):", "", *targets(results), ""]
    others = [r.tcp_cpu.others_percent for r in results if r.tcp_rounds]
    disturbed = sum(r.disturbed for r in results)
    lines.append(
        "Other processes (not this benchmark's) used "
        + (f"at most {max(others):.0f} % of a CPU during the TCP rounds" if others else "-")
        + (
            f"; {disturbed} measurement(s) were disturbed by them even after waiting: "
            "read those numbers with care."
            if disturbed
            else "; no measurement was disturbed by them."
        )
    )
    lines.append("")
    lines += [
        "Where packets were lost (kernel counters that grew: tunnel devices' tx_dropped = "
        "the queue from the kernel to the tunnel process was full; Udp.RcvbufErrors = a "
        "socket's receive buffer was full; Ip.ReasmFails = a fragment was missing):",
        "",
    ]
    for r in results:
        for phase, drops in (("TCP", r.tcp_drops), ("UDP search", r.udp_drops)):
            if r.tcp_rounds:
                text = ", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "none"
                lines.append(f"- {r.name}, {phase}: {text}")
    lines.append("")
    for r in results:
        if r.facts:
            facts = ", ".join(f"{k} {v}" for k, v in r.facts.items())
            lines.append(f"- {r.name}: {facts}")
        if r.disturbed:
            lines.append(f"- {r.name}: {r.disturbed} disturbed measurement(s) kept")
        if r.error is not None:
            lines.append(f"- {r.name}: error: {r.error.splitlines()[0]}")
    if any(r.facts or r.error or r.disturbed for r in results):
        lines.append("")
    return "\n".join(lines)


def as_json(results: list[Result], args: argparse.Namespace, command: str, about: str) -> str:
    refs = references(results)
    doc = {
        "benchmark": "bench_vpn",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
        "machine": about,
        "settings": {
            k: getattr(args, k)
            for k in ("tcp_rounds", "tcp_seconds", "udp_seconds", "pings", "hop_pings")
        },
        "references": [r.key for r in refs],
        "results": [{**r.as_json(), "ratios": ratios(r, refs)} for r in results],
    }
    return json.dumps(doc, separators=(",", ":"))


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (about 1/4 the time)")
    parser.add_argument("--no-append", action="store_true", help=f"do not append to {RESULTS}")
    parser.add_argument("--json", action="store_true", help="the result as JSON, last line")
    parser.add_argument(
        "--only", default=",".join(TUNNELS), help=f"comma-separated subset of {','.join(TUNNELS)}"
    )
    parser.add_argument(
        "--wireguard-go-upstream",
        type=Path,
        default=UPSTREAM_WG,
        metavar="PATH",
        help=f"upstream wireguard-go (default: {UPSTREAM_WG}; skipped when missing)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="wait up to this long for other load to end before measuring (default: 300)",
    )
    parser.add_argument(
        "--log-level", default="info", help="trio-sudp daemons' log level (default: info)"
    )
    args = parser.parse_args(argv)
    args.tcp_rounds = 1 if args.quick else 3
    args.tcp_seconds = 3.0 if args.quick else 6.0
    args.udp_seconds = 1.0 if args.quick else 3.0
    args.bisections = 2 if args.quick else 4
    args.pings = 20 if args.quick else 60
    args.hop_pings = 20 if args.quick else 40
    args.batch_seconds = 3.0 if args.quick else 5.0
    chosen = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = sorted(set(chosen) - set(TUNNELS))
    if unknown:
        parser.error(f"unknown tunnel(s) {', '.join(unknown)}; choose from {', '.join(TUNNELS)}")
    args.tunnels = [t for t in TUNNELS if t in chosen]
    return args


def measure_all(lab: Lab, args: argparse.Namespace, results: list[Result]) -> None:
    """Bring every tunnel up, then measure them one after another, phase by phase."""
    upstream = str(args.wireguard_go_upstream)
    openers: dict[str, Callable[[], contextlib.AbstractContextManager[Tunnel]]] = {
        "veth": lambda: veth_tunnel(lab),
        "wg": lambda: wireguard_tunnel(lab, "wg", DEBIAN_WG),
        "wgup": lambda: wireguard_tunnel(lab, "wgup", upstream),
        "v2": lambda: sudp_tunnel(lab, 2, args.log_level),
        "v3": lambda: sudp_tunnel(lab, 3, args.log_level),
    }
    names = {
        "veth": "veth",
        "wg": f"wireguard-go {wireguard_version(DEBIAN_WG)}",
        "wgup": f"wireguard-go {wireguard_version(upstream)}"
        if os.access(upstream, os.X_OK)
        else "wireguard-go upstream",
        "v2": "trio-sudp v2",
        "v3": "trio-sudp v3",
    }
    lab.build()
    iperf = Iperf(lab)
    iperf.start()
    with contextlib.ExitStack() as stack:
        up: list[tuple[Result, Tunnel]] = []
        for key in args.tunnels:
            if key == "wgup" and not os.access(upstream, os.X_OK):
                print(f"== no upstream wireguard-go at {upstream}: skipped", flush=True)
                continue
            result = Result(key, names[key])
            results.append(result)
            print(f"== starting {result.name}", flush=True)
            try:
                tunnel = stack.enter_context(openers[key]())
            except BenchError as exc:
                result.error = str(exc)
                print(f"  FAILED: {exc}", file=sys.stderr, flush=True)
                continue
            for daemon in tunnel.daemons or ():
                print(f"  {daemon.name}: pid {daemon.pid}", flush=True)
            up.append((result, tunnel))

        def each(
            what: str, step: Callable[[Result, Tunnel], None], only: Callable[[Tunnel], bool]
        ) -> None:
            print(f"== {what}", flush=True)
            for result, tunnel in up:
                if result.error is not None or not only(tunnel):
                    continue
                try:
                    step(result, tunnel)
                except BenchError as exc:
                    result.error = str(exc)
                    print(f"  {tunnel.name} FAILED: {exc}", file=sys.stderr, flush=True)
                    iperf.start()

        def every(tunnel: Tunnel) -> bool:
            return True

        def daemons(tunnel: Tunnel) -> bool:
            return tunnel.daemons is not None

        def sudp(tunnel: Tunnel) -> bool:
            return tunnel.pair is not None

        def rtt(result: Result, tunnel: Tunnel) -> None:
            measure_rtt(lab, tunnel, args.pings, result)
            print(f"  {tunnel.name:26} median {result.rtt:.3f} ms", flush=True)

        def hops(result: Result, tunnel: Tunnel) -> None:
            measure_hops(lab, tunnel, args.hop_pings, result)
            medians = result.hop_medians or []
            text = ", ".join(f"{h} {m:.0f}" for h, m in zip(HOPS, medians, strict=True))
            print(f"  {tunnel.name:26} µs: {text}", flush=True)

        def batching(result: Result, tunnel: Tunnel) -> None:
            measure_batching(lab, iperf, tunnel, args.batch_seconds, result)
            b = result.batching
            for side in ("server", "client"):
                f = b[side]
                calls = f.get("calls") or {}
                print(
                    f"  {tunnel.name:14} {side}: {f['udp_tx']} dgrams out / "
                    f"{calls.get('udp_send', '?')} send calls, {f['udp_rx']} in / "
                    f"{calls.get('udp_receive', '?')} receive calls, "
                    f"{f['wakeups']} wakeups ({b['mbit']:.0f} Mbit/s with perf)",
                    flush=True,
                )

        each("ping", rtt, every)
        each("per-hop RTT (captures)", hops, daemons)
        for i in range(args.tcp_rounds):
            each(
                f"TCP round {i + 1}/{args.tcp_rounds}",
                lambda r, t: measure_tcp(lab, iperf, t, args.tcp_seconds, r),
                every,
            )
        each(
            f"UDP, {UDP_LEN}-byte datagrams",
            lambda r, t: measure_udp(lab, iperf, t, args.udp_seconds, args.bisections, r),
            every,
        )
        each("batching under load (perf stat)", batching, sudp)
        for result, tunnel in up:
            if tunnel.pair is not None:
                with contextlib.suppress(BenchError):
                    server, client = tunnel.pair.show()
                    result.facts["server drops"] = sudp_drops(server)
                    result.facts["client drops"] = sudp_drops(client)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    problem = check_host("bench_vpn")
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    install_signal_handlers()
    try:
        required = dict(PACKAGES)
        if "wg" in args.tunnels:
            required["wireguard-go"] = "wireguard-go"
        missing = ensure_tools(required, OPTIONAL_PACKAGES)
        installed = sudp_install()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if missing:
        print(f"note: {', '.join(missing)} missing: no system call counts", flush=True)
    print(installed, flush=True)
    lab = open_lab(PREFIX, args.wait_quiet)
    results: list[Result] = []
    try:
        measure_all(lab, args, results)
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        lab.teardown()
        if args.keep_logs:
            print(f"logs kept in {lab.tmp}")
        else:
            shutil.rmtree(lab.tmp, ignore_errors=True)

    import cryptography
    import trio

    upstream = str(args.wireguard_go_upstream)
    about = machine(
        [
            f"trio {trio.__version__}",
            f"cryptography {cryptography.__version__}",
            installed,
            f"wireguard-go {package_version('wireguard-go')} (Debian)",
            f"wireguard-go {wireguard_version(upstream)} ({upstream})"
            if os.access(upstream, os.X_OK)
            else "no upstream wireguard-go",
            tool_version(["iperf3", "--version"]),
        ]
    )
    text = report(results, args, command, about)
    print()
    print(text)
    if not args.no_append:
        new = not RESULTS.exists()
        with RESULTS.open("a") as f:
            f.write("## VPN: trio-sudp vs wireguard-go (bench/bench_vpn.py)\n\n" if new else "\n")
            f.write(text + "\n")
        print(f"appended to {RESULTS}")
    if args.json:
        print(as_json(results, args, command, about), flush=True)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
