"""trio-sudp against wireguard-go, side by side, in one run (root, Linux).

    sudo .venv/bin/python bench/bench_vpn.py [--quick] [--no-append] [--only veth,wg,v2,v3]

Must run as root: it creates network namespaces and TUN devices, and installs
``wireguard-go``, ``wireguard-tools`` and ``iperf3`` with apt-get when missing.

Builds two network namespaces joined by a veth pair (``sudpbench-<pid>-0`` and ``-1``;
addresses exist only inside them, nothing is routed outside), brings up every tunnel
at once and measures them one after another:

veth
    the bare veth pair (what the machine can do without a tunnel);
wireguard-go
    Debian's userspace WireGuard (``wireguard-go -f`` in each namespace, keys from
    ``wg genkey``, configured with ``wg set``, MTU 1420);
trio-sudp v2, trio-sudp v3
    the real daemons: ``trio-sudp serve`` in namespace 0, ``trio-sudp connect`` in
    namespace 1, configurations made with ``trio_sudp.config`` (default MTUs: 1420
    for v2, 1400 for v3).

For each: the median RTT of pings over the idle tunnel; iperf3 TCP, one stream,
client (namespace 1) to server (namespace 0), in rounds interleaved across the
tunnels (best round shown, all listed); the highest rate of 1400-byte UDP datagrams
(``iperf3 -u -l 1400``) received with less than 1 % loss, found by doubling the
offered rate and then bisecting; and the CPU each tunnel process spends per packet:
its utime+stime (``/proc/<pid>/stat``, all threads) over the TCP rounds divided by
the packets that crossed its tunnel device in either direction (``ip -s -j link``
counters; for trio-sudp its own device counters from ``show --json``, because a GSO
write of many TCP segments is one packet to the kernel's counter: trio-sudp counts
the segments, the packets the kernel would have counted without offload). The UDP
search also records CPU per packet at its best rate. A 1400-byte datagram is a
1428-byte IP packet, more than every tunnel's MTU: the kernel sends it as two
fragments, two tunnel packets (the same for every tunnel).

These machines are shared: before starting, and whenever a measurement finds other
processes (outside our namespaces) using more than 10 % of a CPU, the benchmark waits
for quiet (``--wait-quiet``, 300 s in all by default) and repeats that measurement;
what stayed disturbed is said in the report.

Everything is printed as one table with ratios to wireguard-go and appended with the
date, the command and the machine to ``bench/RESULTS.md`` (``--no-append`` to
skip). Namespaces, processes and temporary files are always removed, on errors and
on Ctrl-C or SIGTERM too; ``--keep-logs`` keeps the daemons' logs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
PREFIX = "sudpbench-"

#: The veth link between the namespaces (the tunnels' outer network).
VETH_IP = ("10.201.0.1", "10.201.0.2")
#: WireGuard's tunnel addresses.
WG_IP = ("10.202.0.1", "10.202.0.2")
WG_PORT = 51820
WG_MTU = 1420
#: trio-sudp v2 and v3 run side by side: each its own tunnel network and port.
SUDP_NETWORK = {2: "10.203.0.1/24", 3: "10.204.0.1/24"}
SUDP_PORT = {2: 7002, 3: 7003}

UDP_LEN = 1400
LOSS_LIMIT = 1.0  # per cent
#: Every setup command gets this long; measurements get their duration plus this.
COMMAND_TIMEOUT = 30.0
TUNNELS = ("veth", "wg", "v2", "v3")
PACKAGES = {"wireguard-go": "wireguard-go", "wg": "wireguard-tools", "iperf3": "iperf3"}
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A step failed; the message says which and why."""


# ----------------------------------------------------------------------------- helpers


def run(
    argv: Sequence[str],
    *,
    timeout: float = COMMAND_TIMEOUT,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; raise :class:`BenchError` on failure."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {timeout:g} s: {shlex.join(argv)}") from None
    if check and done.returncode != 0:
        raise BenchError(
            f"{shlex.join(argv)} exited {done.returncode}\n{done.stdout}{done.stderr}".rstrip()
        )
    return done


def wait_for(predicate: Callable[[], bool], limit: float, what: str) -> None:
    """Poll a condition with a deadline."""
    deadline = time.monotonic() + limit
    delay = 0.01
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {limit:g} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def host_cpu() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine (``/proc/stat``)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / CLOCK_TICK, total / CLOCK_TICK


#: Other processes using more than this per cent of one CPU during a measurement
#: disturb it: it is repeated once they are gone (or marked as disturbed).
DISTURBED = 10.0


def other_processes(exclude_ns: frozenset[int] = frozenset()) -> dict[int, tuple[str, float]]:
    """Command and CPU seconds of every user process but this one and those in our namespaces.

    Kernel threads are left out: they also do our own packets' softirq work.
    """
    out: dict[int, tuple[str, float]] = {}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            if exclude_ns and os.stat(f"/proc/{entry}/ns/net").st_ino in exclude_ns:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if argv == [b""]:
                continue  # a kernel thread
            name = " ".join(a.decode(errors="replace") for a in argv[:3] if a)
            out[int(entry)] = (name[:60], cpu_seconds(int(entry)))
    return out


def cpu_used(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> float:
    """CPU seconds the processes of ``after`` used since ``before`` (new ones: all of it)."""
    return sum(cpu - (before[pid][1] if pid in before else 0.0) for pid, (_, cpu) in after.items())


def background_load(
    exclude_ns: frozenset[int] = frozenset(), seconds: float = 2.0
) -> tuple[float, list[str]]:
    """Per cent of one CPU other processes use, and the busiest of them."""
    before = other_processes(exclude_ns)
    time.sleep(seconds)
    after = other_processes(exclude_ns)
    used = []
    for pid, (name, cpu) in after.items():
        share = 100 * (cpu - before[pid][1]) / seconds if pid in before else 0.0
        if share >= 5:
            used.append((share, f"{name} ({share:.0f} %)"))
    busy = 100 * cpu_used(before, after) / seconds
    return busy, [text for _, text in sorted(used, reverse=True)[:3]]


def wait_quiet(limit: float, exclude_ns: frozenset[int] = frozenset()) -> tuple[float, str]:
    """Wait up to ``limit`` s for other processes to use < DISTURBED % of a CPU; describe it."""
    deadline = time.monotonic() + limit
    while True:
        busy, top = background_load(exclude_ns)
        text = f"other processes used {busy:.0f} % of a CPU" + (
            f" ({', '.join(top)})" if top else ""
        )
        if busy < DISTURBED or time.monotonic() >= deadline:
            return busy, text
        print(f"  waiting for the machine to be quiet: {text}", flush=True)
        time.sleep(5)


def ensure_tools() -> None:
    """Install wireguard-go, wireguard-tools and iperf3 with apt-get if missing."""
    missing = sorted({pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None})
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise BenchError(f"missing {', '.join(missing)} and no apt-get to install them")
    print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    done = run(install, timeout=900, check=False, env=env)
    if done.returncode != 0:
        run(["apt-get", "update"], timeout=900, check=False, env=env)
        done = run(install, timeout=900, check=False, env=env)
    still = [tool for tool in PACKAGES if shutil.which(tool) is None]
    if done.returncode != 0 or still:
        raise BenchError(
            f"could not install {' '.join(missing)} with apt-get (exit {done.returncode}); "
            f"install them by hand.\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )


def tool_version(argv: Sequence[str]) -> str:
    try:
        done = run(argv, timeout=10, check=False)
    except BenchError:
        return "?"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def package_version(name: str) -> str:
    try:
        done = run(["dpkg-query", "-W", "-f", "${Version}", name], timeout=10, check=False)
    except (BenchError, FileNotFoundError):
        return "?"
    return done.stdout.strip() or "?"


# ----------------------------------------------------------------------------- namespaces


@dataclass
class Daemon:
    """A process started in a namespace (``ip netns exec`` keeps the pid)."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_log(self, marker: str, limit: float = 30.0) -> None:
        def seen() -> bool:
            if self.process.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.text()[-3000:]}"
                )
            return marker in self.text()

        wait_for(seen, limit, f"{marker!r} in the log of {self.name}")


class Lab:
    """Two namespaces on one veth pair, and every process started in them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        pid = os.getpid()
        self.ns = (f"{PREFIX}{pid}-0", f"{PREFIX}{pid}-1")
        self.daemons: list[Daemon] = []
        self._created: list[str] = []
        #: The namespaces' inodes: processes in them are ours.
        self.ns_inodes: frozenset[int] = frozenset()
        #: How long to wait, in all, for other processes to stop disturbing measurements.
        self.patience = 0.0

    # -- setup and teardown

    def build(self) -> None:
        for ns in self.ns:
            run(["ip", "netns", "add", ns])
            self._created.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        a, b = self.ns
        run(["ip", "-n", a, "link", "add", "veth0", "type", "veth",
             "peer", "name", "veth1", "netns", b])  # fmt: skip
        for ns, dev, ip in ((a, "veth0", VETH_IP[0]), (b, "veth1", VETH_IP[1])):
            run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev])
            run(["ip", "-n", ns, "link", "set", dev, "up"])
        self.ns_inodes = frozenset(os.stat(f"/run/netns/{ns}").st_ino for ns in self.ns)
        wait_for(lambda: self.ping_ok(VETH_IP[0]), 10, "the veth link")

    def others(self) -> dict[int, tuple[str, float]]:
        return other_processes(self.ns_inodes)

    def wait_quiet(self) -> None:
        """Wait (within what is left of ``patience``) for other load to go away."""
        start = time.monotonic()
        wait_quiet(self.patience, self.ns_inodes)
        self.patience = max(0.0, self.patience - (time.monotonic() - start))

    def stop(self, daemon: Daemon, limit: float = 15.0) -> None:
        """SIGTERM, then SIGKILL; forget the process."""
        proc = daemon.process
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=limit)
        if daemon in self.daemons:
            self.daemons.remove(daemon)

    def teardown(self) -> None:
        """Kill every process we started and delete the namespaces; Ctrl-C is ignored."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for daemon in list(self.daemons):
                with contextlib.suppress(Exception):
                    self.stop(daemon, limit=5)
            for ns in self._created:
                delete_namespace(ns)
            self._created.clear()
        finally:
            signal.signal(signal.SIGINT, previous)

    # -- running things

    def spawn(
        self, node: int, name: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> Daemon:
        log = self.tmp / f"{name}.log"
        with log.open("wb") as handle:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.ns[node], *argv],
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=env,
            )
        daemon = Daemon(name, process, log)
        self.daemons.append(daemon)
        return daemon

    def run(
        self,
        node: int,
        argv: Sequence[str],
        *,
        timeout: float = COMMAND_TIMEOUT,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", self.ns[node], *argv], timeout=timeout, check=check)

    def ping_ok(self, target: str, node: int = 1) -> bool:
        done = self.run(node, ["ping", "-n", "-q", "-c", "1", "-W", "1", target], check=False)
        return done.returncode == 0

    def link_packets(self, node: int, dev: str) -> int:
        """Packets through ``dev`` in both directions (kernel counters)."""
        out = self.run(node, ["ip", "-s", "-j", "link", "show", "dev", dev]).stdout
        stats = json.loads(out)[0]["stats64"]
        return int(stats["rx"]["packets"]) + int(stats["tx"]["packets"])


def delete_namespace(ns: str) -> None:
    """Kill what runs in a namespace of ours, then delete it."""
    done = subprocess.run(
        ["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    for pid in done.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=COMMAND_TIMEOUT)


def cleanup_stale() -> None:
    """Delete namespaces left by a bench run that was killed."""
    if not os.path.isdir("/run/netns"):
        return
    for ns in os.listdir("/run/netns"):
        pid = ns.removeprefix(PREFIX).split("-", 1)[0]
        if ns.startswith(PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            print(f"removing stale namespace {ns}", flush=True)
            delete_namespace(ns)


# ----------------------------------------------------------------------------- tunnels


@dataclass
class Tunnel:
    """A tunnel under test: where to send to, and which process moves packets on each side."""

    name: str
    #: The server's address as the client namespace reaches it.
    target: str
    #: Tunnel device (in namespace 0, namespace 1), None for the bare veth.
    devices: tuple[str, str] | None = None
    daemons: tuple[Daemon, Daemon] | None = None
    #: Called after the measurements: extra facts (e.g. drop counters).
    describe: Callable[[], dict[str, Any]] | None = None
    #: Packets each side moved through its device, when the kernel's link counters
    #: would not say (trio-sudp's GSO writes); None: the link counters.
    packet_counts: Callable[[], tuple[int, int]] | None = None


@contextlib.contextmanager
def veth_tunnel(lab: Lab) -> Iterator[Tunnel]:
    yield Tunnel("veth", VETH_IP[0])


@contextlib.contextmanager
def wireguard_tunnel(lab: Lab) -> Iterator[Tunnel]:
    # /var/run/wireguard/<dev>.sock is shared by the namespaces: unique device names.
    tag = os.getpid() % 100000
    devs = (f"wgb{tag}s", f"wgb{tag}c")
    env = {
        **os.environ,
        "WG_PROCESS_FOREGROUND": "1",
        "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1",
        "LOG_LEVEL": "error",
    }
    keys = []
    for i in (0, 1):
        private = run(["wg", "genkey"]).stdout.strip()
        public = subprocess.run(
            ["wg", "pubkey"], input=private, capture_output=True, text=True, timeout=10, check=True
        )
        key_file = lab.tmp / f"wg{i}.key"
        key_file.write_text(private + "\n")
        key_file.chmod(0o600)
        keys.append((key_file, public.stdout.strip()))
    daemons = []
    for i, dev in enumerate(devs):
        daemons.append(lab.spawn(i, f"wireguard-go-{i}", ["wireguard-go", "-f", dev], env=env))
    try:
        for i, dev in enumerate(devs):
            sock = Path(f"/var/run/wireguard/{dev}.sock")
            wait_for(sock.exists, 15, f"wireguard-go's socket {sock}")
            other = 1 - i
            lab.run(i, ["wg", "set", dev, "private-key", str(keys[i][0]),
                        "listen-port", str(WG_PORT),
                        "peer", keys[other][1], "allowed-ips", f"{WG_IP[other]}/32",
                        "endpoint", f"{VETH_IP[other]}:{WG_PORT}"])  # fmt: skip
            lab.run(i, ["ip", "addr", "add", f"{WG_IP[i]}/24", "dev", dev])
            lab.run(i, ["ip", "link", "set", dev, "mtu", str(WG_MTU), "up"])
        wait_for(lambda: lab.ping_ok(WG_IP[0]), 20, "a ping through wireguard-go")
        yield Tunnel("wireguard-go", WG_IP[0], devs, (daemons[0], daemons[1]))
    finally:
        for daemon in daemons:
            lab.stop(daemon)
        for dev in devs:  # left behind only if wireguard-go had to be killed
            with contextlib.suppress(OSError):
                os.unlink(f"/var/run/wireguard/{dev}.sock")


def sudp_show(socket_path: Path) -> dict[str, Any]:
    """A daemon's ``show --json`` document, asked in-process (a few ms, no subprocess)."""
    from trio_sudp.daemon.control import request

    return request(socket_path, "show", timeout=20)


@contextlib.contextmanager
def sudp_tunnel(lab: Lab, version: int, log_level: str) -> Iterator[Tunnel]:
    from trio_sudp.config import add_client, init_server

    tmp = lab.tmp / f"v{version}"
    tmp.mkdir()
    sockets = (tmp / "server.sock", tmp / "client.sock")
    server_conf, client_conf = tmp / "server.toml", tmp / "client.toml"
    port = SUDP_PORT[version]
    init_server(
        server_conf,
        listen=f"0.0.0.0:{port}",
        networks=[SUDP_NETWORK[version]],
        endpoint=f"{VETH_IP[0]}:{port}",
        version=version,
        control_socket=sockets[0],
    )
    add_client(server_conf, client_conf, name="bench", version=version, control_socket=sockets[1])
    command = [sys.executable, "-m", "trio_sudp"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = lab.spawn(
        0,
        f"sudp-v{version}-server",
        [*command, "serve", "-c", str(server_conf), "--log-level", log_level],
        env=env,
    )
    client: Daemon | None = None
    try:
        server.wait_for_log("serving on")
        client = lab.spawn(
            1,
            f"sudp-v{version}-client",
            [*command, "connect", "-c", str(client_conf), "--log-level", log_level],
            env=env,
        )
        client.wait_for_log("tunnel up")
        target = SUDP_NETWORK[version].split("/")[0]
        wait_for(lambda: lab.ping_ok(target), 20, f"a ping through trio-sudp v{version}")
        wait_for(sockets[0].exists, 10, "the server's control socket")
        wait_for(sockets[1].exists, 10, "the client's control socket")
        devs = (sudp_show(sockets[0])["interface"], sudp_show(sockets[1])["interface"])

        def describe() -> dict[str, Any]:
            facts: dict[str, Any] = {}
            for side, sock in zip(("server", "client"), sockets, strict=True):
                status = sudp_show(sock)
                drops = dict(status.get("drops") or {})
                for peer in status.get("peers", []):
                    for reason, count in (peer.get("drops") or {}).items():
                        drops[f"peer:{reason}"] = drops.get(f"peer:{reason}", 0) + count
                facts[f"{side} drops"] = drops
            return facts

        def packet_counts() -> tuple[int, int]:
            counts = []
            for sock in sockets:
                device = sudp_show(sock)["device"]
                counts.append(int(device["rx_packets"]) + int(device["tx_packets"]))
            return counts[0], counts[1]

        yield Tunnel(
            f"trio-sudp v{version}", target, devs, (server, client), describe, packet_counts
        )
    finally:
        if client is not None:
            lab.stop(client)
        lab.stop(server)


# ----------------------------------------------------------------------------- measurements


@dataclass
class CpuSample:
    """CPU seconds of each side's process, packets through each side's device, host CPU."""

    cpu: tuple[float, float]
    packets: tuple[int, int]
    host: tuple[float, float]
    others: dict[int, tuple[str, float]]
    at: float


def sample(lab: Lab, tunnel: Tunnel) -> CpuSample:
    others = lab.others()
    if tunnel.daemons is None or tunnel.devices is None:
        return CpuSample((0.0, 0.0), (0, 0), host_cpu(), others, time.monotonic())
    cpu = (cpu_seconds(tunnel.daemons[0].pid), cpu_seconds(tunnel.daemons[1].pid))
    if tunnel.packet_counts is not None:
        packets = tunnel.packet_counts()
    else:
        packets = (
            lab.link_packets(0, tunnel.devices[0]),
            lab.link_packets(1, tunnel.devices[1]),
        )
    return CpuSample(cpu, packets, host_cpu(), others, time.monotonic())


@dataclass
class CpuCost:
    """CPU per packet, packets per second and CPU share, per side (server, client).

    Built from one or more measured intervals (``add``): totals, not an average of ratios.
    """

    cpu: list[float] = field(default_factory=lambda: [0.0, 0.0])
    packets: list[int] = field(default_factory=lambda: [0, 0])
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


@dataclass
class UdpTrial:
    offered: float  # Mbit/s asked of iperf3
    sent: float  # Mbit/s the sender managed
    received: float  # Mbit/s that arrived
    loss: float  # per cent
    cpu: CpuCost


@dataclass
class Result:
    name: str
    #: Received Mbit/s of each TCP round.
    tcp_rounds: list[float] = field(default_factory=list)
    tcp_retransmits: int = 0
    #: CPU over all TCP rounds.
    tcp_cpu: CpuCost = field(default_factory=CpuCost)
    trials: list[UdpTrial] = field(default_factory=list)
    #: Every ping's RTT in ms.
    rtts: list[float] = field(default_factory=list)
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


class Iperf:
    """An iperf3 server in namespace 0, restarted if a test leaves it stuck."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.daemon: Daemon | None = None
        self.starts = 0

    def start(self) -> None:
        if self.daemon is not None:
            self.lab.stop(self.daemon, limit=5)
        self.starts += 1
        argv = ["iperf3", "-s", "--forceflush"]
        self.daemon = self.lab.spawn(0, f"iperf3-server-{self.starts}", argv)
        self.daemon.wait_for_log("Server listening", limit=10)

    def client(self, target: str, args: Sequence[str], seconds: float) -> dict[str, Any]:
        argv = ["iperf3", "-c", target, "-J", "-t", f"{seconds:g}", "--connect-timeout", "5000"]
        last = ""
        for _attempt in range(3):
            done = self.lab.run(1, [*argv, *args], timeout=seconds + 30, check=False)
            try:
                data: dict[str, Any] = json.loads(done.stdout)
            except json.JSONDecodeError:
                data = {"error": done.stdout[-500:] + done.stderr[-500:]}
            if done.returncode == 0 and "error" not in data:
                return data
            last = str(data.get("error"))
            self.start()  # a failed test can leave the server busy
        raise BenchError(f"iperf3 {' '.join(args)} to {target} failed: {last}")


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
        before = sample(lab, tunnel)
        data = iperf.client(tunnel.target, [], seconds)
        cpu.add(before, sample(lab, tunnel))
        return data, cpu

    before = drop_counters(lab, tunnel)
    data, cpu = undisturbed(lab, tunnel, once, result)
    count_drops(lab, tunnel, before, result.tcp_drops)
    end = data["end"]
    result.tcp_rounds.append(end["sum_received"]["bits_per_second"] / 1e6)
    result.tcp_retransmits += int(end["sum_sent"].get("retransmits") or 0)
    result.tcp_cpu.merge(cpu)
    us = result.tcp_cpu.us_per_packet if result.tcp_cpu.measured else (None, None)
    print(
        f"  {tunnel.name:14} {result.tcp_rounds[-1]:7.0f} Mbit/s, "
        f"{end['sum_sent'].get('retransmits')} retransmits; "
        f"CPU µs/pkt so far {fmt(us[0], 2)} server, {fmt(us[1], 2)} client",
        flush=True,
    )


def udp_trial(
    lab: Lab, iperf: Iperf, tunnel: Tunnel, rate: float, seconds: float, result: Result
) -> UdpTrial:
    # 4 MB socket buffers on both iperf3 ends (the default drops bursts even on loopback).
    args = ["-u", "-b", f"{rate:.0f}M", "-l", str(UDP_LEN), "-w", "4M"]

    def once() -> tuple[dict[str, Any], CpuCost]:
        cpu = CpuCost()
        before = sample(lab, tunnel)
        end: dict[str, Any] = iperf.client(tunnel.target, args, seconds)["end"]
        cpu.add(before, sample(lab, tunnel))
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
            f"  {tunnel.name:14} {rate:7.0f} Mbit/s offered: sent {t.sent:7.1f}, "
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
        lines = lab.run(node, ["cat", "/proc/net/snmp"]).stdout.splitlines()
        table: dict[str, dict[str, int]] = {}
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            proto, _, keys = names.partition(":")
            table[proto] = dict(
                zip(keys.split(), (int(v) for v in values.partition(":")[2].split()), strict=False)
            )
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
        show = ["ip", "-s", "-j", "link", "show", "dev", tunnel.devices[node]]
        stats = json.loads(lab.run(node, show).stdout)[0]["stats64"]
        out[f"{side} tun tx_dropped"] = int(stats["tx"]["dropped"])
        out[f"{side} tun rx_dropped"] = int(stats["rx"]["dropped"])
    return out


# ----------------------------------------------------------------------------- report


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or base == 0:
        return "-"
    return f"{value / base:.2f}×"


def markdown(rows: list[list[str]]) -> str:
    head = rows[0]
    lines = [head, ["---", *["---:"] * (len(head) - 1)], *rows[1:]]
    return "\n".join("| " + " | ".join(row) + " |" for row in lines)


def tcp_us(r: Result, side: int) -> float | None:
    return r.tcp_cpu.us_per_packet[side] if r.tcp_cpu.measured else None


def table(results: list[Result]) -> str:
    wg = next((r for r in results if r.name == "wireguard-go" and r.error is None), None)
    rows = [
        [
            "",
            "TCP Mbit/s",
            "× wg",
            "UDP Mbit/s (<1% loss)",
            "× wg",
            "RTT ms",
            "× wg",
            "CPU µs/pkt server",
            "× wg",
            "CPU µs/pkt client",
            "× wg",
        ]
    ]

    def base(value: Callable[[Result], float | None]) -> float | None:
        return None if wg is None else value(wg)

    for r in results:
        if r.error is not None and r.tcp is None:
            rows.append([r.name, f"failed: {r.error.splitlines()[0][:80]}", *[""] * 9])
            continue
        rows.append(
            [
                r.name,
                fmt(r.tcp, 0),
                ratio(r.tcp, base(lambda w: w.tcp)),
                fmt(r.udp, 0),
                ratio(r.udp, base(lambda w: w.udp)),
                fmt(r.rtt, 3),
                ratio(r.rtt, base(lambda w: w.rtt)),
                fmt(tcp_us(r, 0), 2),
                ratio(tcp_us(r, 0), base(lambda w: tcp_us(w, 0))),
                fmt(tcp_us(r, 1), 2),
                ratio(tcp_us(r, 1), base(lambda w: tcp_us(w, 1))),
            ]
        )
    return markdown(rows)


def detail_table(results: list[Result]) -> str:
    rows = [
        [
            "",
            "TCP rounds Mbit/s",
            "TCP retr.",
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


def targets(results: list[Result]) -> list[str]:
    """The issue's targets for trio-sudp, checked against this run's wireguard-go."""
    wg = next((r for r in results if r.name == "wireguard-go" and r.error is None), None)
    lines = []
    for r in results:
        if not r.name.startswith("trio-sudp") or r.tcp is None:
            continue
        checks = []
        if wg is not None:
            if wg.tcp:
                checks.append(("TCP ≥ 1.5× wg", r.tcp >= 1.5 * wg.tcp))
            if r.udp is not None and wg.udp:
                checks.append(("UDP ≥ wg", r.udp >= wg.udp))
            if r.rtt is not None and wg.rtt:
                checks.append(("RTT ≤ wg", r.rtt <= wg.rtt))
        worst = max((u for u in r.tcp_cpu.us_per_packet if u is not None), default=None)
        if worst is not None:
            checks.append(("≤ 5 µs CPU/pkt/side", worst <= 5.0))
        text = ", ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks)
        lines.append(f"- {r.name}: {text}")
    return lines


def machine() -> str:
    import trio

    try:
        import cryptography

        crypto = cryptography.__version__
    except ImportError:
        crypto = "?"
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"nproc {os.cpu_count()} ({cpu}), kernel {platform.release()}, "
        f"Python {platform.python_version()}, trio {trio.__version__}, "
        f"cryptography {crypto}, wireguard-go {package_version('wireguard-go')}, "
        f"{tool_version(['iperf3', '--version'])}"
    )


def report(results: list[Result], args: argparse.Namespace, command: str) -> str:
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = [
        f"### {now}: trio-sudp vs wireguard-go",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine()}",
        "",
        f"All tunnels up at once, measured one after another. TCP: iperf3, one stream, "
        f"client → server, {args.tcp_rounds} round(s) of {args.tcp_seconds:g} s interleaved "
        "across the tunnels, best round shown. "
        f"UDP: the best received rate of {UDP_LEN}-byte datagrams "
        f"(`iperf3 -u -l {UDP_LEN} -w 4M`, {args.udp_seconds:g} s per trial, rate doubled "
        f"then bisected) with < {LOSS_LIMIT:g} % loss. "
        f"RTT: median of {args.pings} pings (`ping -i 0.05`) over the idle tunnel. "
        "CPU µs/pkt: the tunnel process's utime+stime (all threads) over all TCP rounds / "
        "packets through its tunnel device in both directions (kernel counters; for "
        "trio-sudp its own, which count the segments of a GSO write); "
        "µs/pkt × wg below 1 is better.",
        "",
        table(results),
        "",
        "Details (server / client / whole machine):",
        "",
        detail_table(results),
        "",
    ]
    checks = targets(results)
    if checks:
        lines += ["Targets (TCP ≥ 1.5× wg, UDP ≥ wg, RTT ≤ wg, ≤ 5 µs CPU/pkt/side):", ""]
        lines += [*checks, ""]
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


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (about 1/4 the time)")
    parser.add_argument("--no-append", action="store_true", help=f"do not append to {RESULTS}")
    parser.add_argument(
        "--only", default=",".join(TUNNELS), help=f"comma-separated subset of {','.join(TUNNELS)}"
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
    chosen = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = sorted(set(chosen) - set(TUNNELS))
    if unknown:
        parser.error(f"unknown tunnel(s) {', '.join(unknown)}; choose from {', '.join(TUNNELS)}")
    args.tunnels = [t for t in TUNNELS if t in chosen]
    return args


def check_host() -> str | None:
    if not sys.platform.startswith("linux"):
        return "bench_vpn needs Linux (network namespaces, TUN devices)"
    if os.geteuid() != 0:
        return (
            "bench_vpn must run as root: it creates network namespaces and TUN devices, "
            "and apt-get installs wireguard-go, wireguard-tools and iperf3 when missing"
        )
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (modprobe tun)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    return None


def measure_all(lab: Lab, args: argparse.Namespace, results: list[Result]) -> None:
    """Bring every tunnel up, then measure them one after another, phase by phase."""
    openers: dict[str, Callable[[], contextlib.AbstractContextManager[Tunnel]]] = {
        "veth": lambda: veth_tunnel(lab),
        "wg": lambda: wireguard_tunnel(lab),
        "v2": lambda: sudp_tunnel(lab, 2, args.log_level),
        "v3": lambda: sudp_tunnel(lab, 3, args.log_level),
    }
    names = {"veth": "veth", "wg": "wireguard-go", "v2": "trio-sudp v2", "v3": "trio-sudp v3"}
    lab.build()
    iperf = Iperf(lab)
    iperf.start()
    with contextlib.ExitStack() as stack:
        up: list[tuple[Result, Tunnel]] = []
        for key in args.tunnels:
            result = Result(names[key])
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

        def each(what: str, step: Callable[[Result, Tunnel], None]) -> None:
            print(f"== {what}", flush=True)
            for result, tunnel in up:
                if result.error is not None:
                    continue
                try:
                    step(result, tunnel)
                except BenchError as exc:
                    result.error = str(exc)
                    print(f"  {tunnel.name} FAILED: {exc}", file=sys.stderr, flush=True)
                    iperf.start()

        def rtt(result: Result, tunnel: Tunnel) -> None:
            measure_rtt(lab, tunnel, args.pings, result)
            print(f"  {tunnel.name:14} median {result.rtt:.3f} ms", flush=True)

        each("ping", rtt)
        for i in range(args.tcp_rounds):
            each(
                f"TCP round {i + 1}/{args.tcp_rounds}",
                lambda r, t: measure_tcp(lab, iperf, t, args.tcp_seconds, r),
            )
        each(
            f"UDP, {UDP_LEN}-byte datagrams",
            lambda r, t: measure_udp(lab, iperf, t, args.udp_seconds, args.bisections, r),
        )
        for result, tunnel in up:
            if tunnel.describe is not None:
                with contextlib.suppress(BenchError):
                    result.facts.update(tunnel.describe())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    problem = check_host()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2

    # SIGTERM tears down like Ctrl-C does; SIGINT too when started with it ignored (`&`).
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        ensure_tools()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cleanup_stale()
    print("checking that no other process loads the machine ...", flush=True)
    start = time.monotonic()
    busy, background = wait_quiet(args.wait_quiet)
    print(f"  {background}", flush=True)
    if busy >= DISTURBED:
        print("WARNING: other processes load the machine; the numbers will be low", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="sudpbench-"))
    lab = Lab(tmp)
    lab.patience = max(0.0, args.wait_quiet - (time.monotonic() - start))
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
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    text = report(results, args, command)
    print()
    print(text)
    if not args.no_append:
        new = not RESULTS.exists()
        with RESULTS.open("a") as f:
            f.write("## VPN: trio-sudp vs wireguard-go (bench/bench_vpn.py)\n\n" if new else "\n")
            f.write(text + "\n")
        print(f"appended to {RESULTS}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
