"""What the root benchmarks share: namespaces, processes, CPU accounting, trio-sudp's CLI.

``bench_vpn.py`` and ``bench_hostile.py`` build network namespaces joined by a veth pair
(``<prefix><pid>-0`` and ``-1``; addresses exist only inside them, nothing is routed
outside), start daemons in them with ``ip netns exec`` (which keeps the pid, so
``/proc/<pid>`` is the daemon's own), and always remove both again. trio-sudp is
driven only through its command line (``python -m trio_sudp`` of the interpreter that
runs the benchmark: run it with the checkout's ``.venv/bin/python``), so a benchmark
measures whatever trio-sudp that checkout installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
#: The veth link between namespaces 0 and 1 (the tunnels' outer network).
VETH_IP = ("10.201.0.1", "10.201.0.2")
#: Every setup command gets this long; measurements get their duration plus this.
COMMAND_TIMEOUT = 30.0
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
#: Other processes using more than this per cent of one CPU during a measurement
#: disturb it.
DISTURBED = 10.0


class BenchError(Exception):
    """A step failed; the message says which and why."""


# ----------------------------------------------------------------------------- processes


def run(
    argv: Sequence[str],
    *,
    timeout: float = COMMAND_TIMEOUT,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; raise :class:`BenchError` on failure."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else dict(env),
            input=stdin,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {timeout:g} s: {shlex.join(argv)}") from None
    except FileNotFoundError:
        raise BenchError(f"not found: {argv[0]}") from None
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


def voluntary_switches(pid: int) -> int:
    """Voluntary context switches of all of a process's threads: how often it slept.

    A thread that blocks in ``epoll_wait`` (or any blocking call) and is woken again
    counts one; for an event loop that is one wakeup.
    """
    total = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
                        break
    return total


def host_cpu() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine (``/proc/stat``)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / CLOCK_TICK, total / CLOCK_TICK


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


def ensure_tools(
    required: Mapping[str, str], optional: Mapping[str, str] | None = None
) -> list[str]:
    """Install missing tools (command -> Debian package) with apt-get.

    Raises :class:`BenchError` when a required one is still missing; returns the
    optional ones that are.
    """
    optional = optional or {}
    wanted = {**required, **optional}
    missing = sorted({pkg for tool, pkg in wanted.items() if shutil.which(tool) is None})
    if missing and shutil.which("apt-get") is not None:
        print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
        done = run(install, timeout=900, check=False, env=env)
        if done.returncode != 0:
            run(["apt-get", "update"], timeout=900, check=False, env=env)
            run(install, timeout=900, check=False, env=env)
    still = [tool for tool in required if shutil.which(tool) is None]
    if still:
        raise BenchError(
            f"missing {', '.join(still)} (Debian: {' '.join(required[t] for t in still)}); "
            "install them by hand"
        )
    return [tool for tool in optional if shutil.which(tool) is None]


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
    except BenchError:
        return "?"
    return done.stdout.strip() or "?"


def check_host(name: str) -> str | None:
    """Why this machine cannot run a root benchmark, or None."""
    if not sys.platform.startswith("linux"):
        return f"{name} needs Linux (network namespaces, TUN devices)"
    if os.geteuid() != 0:
        return f"{name} must run as root: it creates network namespaces and TUN devices"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (modprobe tun)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    return None


def install_signal_handlers() -> None:
    """SIGTERM tears down like Ctrl-C does; SIGINT too when started with it ignored (``&``)."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)


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

    def alive(self) -> bool:
        return self.process.poll() is None

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_log(self, marker: str, limit: float = 30.0) -> None:
        def seen() -> bool:
            self.check_alive()
            return marker in self.text()

        wait_for(seen, limit, f"{marker!r} in the log of {self.name}")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(
                f"{self.name} exited with {self.process.returncode}:\n{self.text()[-3000:]}"
            )


class Lab:
    """Network namespaces (0 and 1 on one veth pair), and every process started in them."""

    def __init__(self, tmp: Path, prefix: str, nodes: int = 2) -> None:
        self.tmp = tmp
        pid = os.getpid()
        self.ns = tuple(f"{prefix}{pid}-{i}" for i in range(nodes))
        self.daemons: list[Daemon] = []
        self._created: list[str] = []
        #: The namespaces' inodes: processes in them are ours.
        self.ns_inodes: frozenset[int] = frozenset()
        #: How long to wait, in all, for other processes to stop disturbing measurements.
        self.patience = 0.0
        self._spawned = 0

    # -- setup and teardown

    def build(self) -> None:
        for ns in self.ns:
            run(["ip", "netns", "add", ns])
            self._created.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        a, b = self.ns[:2]
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

    def stop(self, daemon: Daemon, limit: float = 15.0, sig: int = signal.SIGTERM) -> None:
        """``sig`` (SIGTERM), then SIGKILL; forget the process."""
        proc = daemon.process
        if proc.poll() is None:
            proc.send_signal(sig)
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
        self,
        node: int | None,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        stdout: Path | None = None,
    ) -> Daemon:
        """Start ``argv`` in namespace ``node`` (None: here), output to a log file.

        ``stdout``: a separate file for standard output (standard error goes to the log).
        """
        self._spawned += 1
        log = self.tmp / f"{name}-{self._spawned}.log"
        prefix = [] if node is None else ["ip", "netns", "exec", self.ns[node]]
        with log.open("wb") as err, contextlib.ExitStack() as stack:
            out = err if stdout is None else stack.enter_context(stdout.open("wb"))
            process = subprocess.Popen(
                [*prefix, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=None if env is None else dict(env),
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
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return run(
            ["ip", "netns", "exec", self.ns[node], *argv],
            timeout=timeout,
            check=check,
            stdin=stdin,
        )

    def ping_ok(self, target: str, node: int = 1) -> bool:
        done = self.run(node, ["ping", "-n", "-q", "-c", "1", "-W", "1", target], check=False)
        return done.returncode == 0

    def link_stats(self, node: int, dev: str) -> dict[str, Any]:
        """``ip -s -j link`` counters of a device (``rx``/``tx`` packets, bytes, dropped)."""
        out = self.run(node, ["ip", "-s", "-j", "link", "show", "dev", dev]).stdout
        stats: dict[str, Any] = json.loads(out)[0]["stats64"]
        return stats

    def link_packets(self, node: int, dev: str) -> int:
        """Packets through ``dev`` in both directions (kernel counters)."""
        stats = self.link_stats(node, dev)
        return int(stats["rx"]["packets"]) + int(stats["tx"]["packets"])

    def snmp(self, node: int) -> dict[str, dict[str, int]]:
        """``/proc/net/snmp`` of a namespace: ``{"Udp": {"InDatagrams": ...}, ...}``."""
        lines = self.run(node, ["cat", "/proc/net/snmp"]).stdout.splitlines()
        table: dict[str, dict[str, int]] = {}
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            proto, _, keys = names.partition(":")
            table[proto] = dict(
                zip(keys.split(), (int(v) for v in values.partition(":")[2].split()), strict=False)
            )
        return table


def open_lab(prefix: str, wait_limit: float) -> Lab:
    """Stale namespaces of ``prefix`` removed, a quiet machine waited for (at most
    ``wait_limit`` seconds, said on stdout), and a new lab in a fresh temporary
    folder with what is left of the wait as its patience for repeated runs."""
    cleanup_stale(prefix)
    print("checking that no other process loads the machine ...", flush=True)
    start = time.monotonic()
    busy, background = wait_quiet(wait_limit)
    print(f"  {background}", flush=True)
    if busy >= DISTURBED:
        print("WARNING: other processes load the machine; the numbers will be low", flush=True)
    lab = Lab(Path(tempfile.mkdtemp(prefix=prefix)), prefix)
    lab.patience = max(0.0, wait_limit - (time.monotonic() - start))
    return lab


def delete_namespace(ns: str) -> None:
    """Kill what runs in a namespace of ours, then delete it."""
    done = subprocess.run(
        ["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    for pid in done.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=COMMAND_TIMEOUT)


def cleanup_stale(prefix: str) -> None:
    """Delete namespaces left by a run of ours that was killed (its pid is gone)."""
    if not os.path.isdir("/run/netns"):
        return
    for ns in os.listdir("/run/netns"):
        pid = ns.removeprefix(prefix).split("-", 1)[0]
        if ns.startswith(prefix) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            print(f"removing stale namespace {ns}", flush=True)
            delete_namespace(ns)


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
        self.daemon = self.lab.spawn(0, "iperf3-server", argv)
        self.daemon.wait_for_log("Server listening", limit=10)

    def client(
        self, target: str, args: Sequence[str], seconds: float, attempts: int = 3
    ) -> dict[str, Any]:
        """One iperf3 test from namespace 1 (up to ``attempts`` tries); its JSON result."""
        argv = ["iperf3", "-c", target, "-J", "-t", f"{seconds:g}", "--connect-timeout", "5000"]
        last = ""
        for _attempt in range(attempts):
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


# ----------------------------------------------------------------------------- syscalls


#: Syscalls counted per daemon (perf's syscall tracepoints), by what they do.
SYSCALL_GROUPS = {
    "udp_send": ("sendmsg", "sendmmsg", "sendto"),
    "udp_receive": ("recvmsg", "recvmmsg", "recvfrom"),
    "tun_read": ("read", "readv"),
    "tun_write": ("write", "writev"),
    "poll": ("epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll"),
}


class SyscallCounter:
    """Counts a process's system calls with ``perf stat`` (in-kernel counting, all threads).

    Tracing syscalls slows every call of the counted process a little, so what is
    measured with it is measured in a run of its own.
    """

    def __init__(self, pid: int, out: Path) -> None:
        self.pid = pid
        self.out = out
        self._perf: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("perf") is not None

    def __enter__(self) -> SyscallCounter:
        events = [
            f"syscalls:sys_enter_{name}" for names in SYSCALL_GROUPS.values() for name in names
        ]
        argv = ["perf", "stat", "-x", ",", "-o", str(self.out), "-e", ",".join(events)]
        self._perf = subprocess.Popen(
            [*argv, "-p", str(self.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        time.sleep(0.3)  # perf needs a moment to attach
        if self._perf.poll() is not None:
            err = self._perf.stderr.read().decode(errors="replace") if self._perf.stderr else ""
            raise BenchError(f"perf stat -p {self.pid} failed: {err.strip()[-500:]}")
        return self

    def __exit__(self, *exc: object) -> None:
        perf = self._perf
        if perf is not None and perf.poll() is None:
            perf.send_signal(signal.SIGINT)
            try:
                perf.wait(timeout=10)
            except subprocess.TimeoutExpired:
                perf.kill()
                perf.wait(timeout=10)

    def counts(self) -> dict[str, int]:
        """Calls per group of :data:`SYSCALL_GROUPS` (after the ``with`` block)."""
        by_name: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in self.out.read_text().splitlines():
                fields = line.split(",")
                if len(fields) < 3 or not fields[0].strip().isdigit():
                    continue
                by_name[fields[2].rpartition("sys_enter_")[2]] = int(fields[0])
        return {
            group: sum(by_name.get(n, 0) for n in names) for group, names in SYSCALL_GROUPS.items()
        }


# ----------------------------------------------------------------------------- trio-sudp


def sudp_cli() -> list[str]:
    """The ``trio-sudp`` command of the interpreter running the benchmark."""
    return [sys.executable, "-m", "trio_sudp"]


def sudp_install() -> str:
    """Which trio-sudp the benchmark drives: version and where it is imported from."""
    code = "import trio_sudp; print(trio_sudp.__version__, trio_sudp.__file__)"
    done = run([sys.executable, "-c", code], check=False)
    if done.returncode != 0:
        raise BenchError(
            f"{sys.executable} cannot import trio_sudp: install the checkout "
            f"(scripts/test does) and run with its .venv/bin/python\n{done.stderr[-1000:]}"
        )
    version, _, where = done.stdout.strip().partition(" ")
    path = Path(where).resolve()
    inside = CHECKOUT in path.parents
    return f"trio-sudp {version} from {path.parent}" + (
        "" if inside else f" (NOT this checkout, {CHECKOUT})"
    )


@dataclass
class SudpConfig:
    """A server configuration with one client, made with ``trio-sudp config``."""

    version: int
    port: int
    server: Path
    client: Path
    sockets: tuple[Path, Path]
    #: The server's tunnel address.
    target: str
    client_vaddr: int
    #: The client's v3 header key as raw bytes (b"" for v2).
    shared_key: bytes


def make_sudp_config(
    directory: Path, version: int, port: int, network: str, endpoint_ip: str
) -> SudpConfig:
    """``trio-sudp config init-server`` and ``add-client`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    server, client = directory / "server.toml", directory / "client.toml"
    sockets = (directory / "server.sock", directory / "client.sock")
    cli = sudp_cli()
    run([*cli, "config", "init-server", "-c", str(server), "--listen", f"0.0.0.0:{port}",
         "--network", network, "--endpoint", f"{endpoint_ip}:{port}",
         "--version", str(version), "--control-socket", str(sockets[0])])  # fmt: skip
    run([*cli, "config", "add-client", "-c", str(server), "-o", str(client), "--name", "bench",
         "--control-socket", str(sockets[1])])  # fmt: skip
    with server.open("rb") as f:
        peer = tomllib.load(f)["peer"][0]
    return SudpConfig(
        version=version,
        port=port,
        server=server,
        client=client,
        sockets=sockets,
        target=network.split("/")[0],
        client_vaddr=int(peer["vaddr"]),
        shared_key=str(peer.get("shared_key") or "").encode() if version == 3 else b"",
    )


def sudp_show(socket_path: Path) -> dict[str, Any]:
    """A daemon's ``trio-sudp show --json`` document."""
    done = run([*sudp_cli(), "show", "--socket", str(socket_path), "--json"], timeout=30)
    status: dict[str, Any] = json.loads(done.stdout)
    return status


def sudp_drops(status: Mapping[str, Any]) -> dict[str, int]:
    """All drop counters of a ``show --json`` document: the daemon's and its peers'."""
    drops = {k: int(v) for k, v in (status.get("drops") or {}).items()}
    for peer in status.get("peers", []):
        for reason, count in (peer.get("drops") or {}).items():
            drops[f"peer:{reason}"] = drops.get(f"peer:{reason}", 0) + int(count)
    return drops


class SudpPair:
    """``trio-sudp serve`` in namespace 0 and ``trio-sudp connect`` in namespace 1."""

    def __init__(self, lab: Lab, config: SudpConfig, log_level: str) -> None:
        self.lab = lab
        self.config = config
        self.log_level = log_level
        self.server: Daemon | None = None
        self.client: Daemon | None = None
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def _spawn(self, node: int, role: str) -> Daemon:
        conf = self.config.server if role == "serve" else self.config.client
        name = f"sudp-v{self.config.version}-{'server' if node == 0 else 'client'}"
        argv = [*sudp_cli(), role, "-c", str(conf), "--log-level", self.log_level]
        return self.lab.spawn(node, name, argv, env=self.env)

    def start(self, limit: float = 30.0) -> None:
        self.server = self._spawn(0, "serve")
        wait_for(
            lambda: self._alive(self.server) and self.config.sockets[0].exists(),
            limit,
            "the server's control socket",
        )
        self.start_client(limit)

    def start_client(self, limit: float = 30.0) -> None:
        self.client = self._spawn(1, "connect")
        wait_for(
            lambda: self._alive(self.client) and self.lab.ping_ok(self.config.target),
            limit,
            f"a ping through trio-sudp v{self.config.version}",
        )
        wait_for(self.config.sockets[1].exists, 10, "the client's control socket")

    def restart_client(self, limit: float = 30.0) -> None:
        if self.client is not None:
            self.lab.stop(self.client)
        with contextlib.suppress(FileNotFoundError):
            self.config.sockets[1].unlink()
        self.start_client(limit)

    @staticmethod
    def _alive(daemon: Daemon | None) -> bool:
        assert daemon is not None
        daemon.check_alive()
        return True

    def show(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``show --json`` of the server and the client."""
        return sudp_show(self.config.sockets[0]), sudp_show(self.config.sockets[1])

    @property
    def daemons(self) -> tuple[Daemon, Daemon]:
        assert self.server is not None and self.client is not None
        return self.server, self.client

    def stop(self) -> None:
        for daemon in (self.client, self.server):
            if daemon is not None:
                self.lab.stop(daemon)


@contextlib.contextmanager
def sudp_pair(lab: Lab, config: SudpConfig, log_level: str) -> Iterator[SudpPair]:
    pair = SudpPair(lab, config, log_level)
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()


# ----------------------------------------------------------------------------- reports


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


def machine(extra: Sequence[str] = ()) -> str:
    """One line about the machine and the software measured."""
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    parts = [
        f"nproc {os.cpu_count()} ({cpu})",
        f"kernel {platform.release()}",
        f"Python {platform.python_version()}",
        *extra,
    ]
    return ", ".join(parts)
