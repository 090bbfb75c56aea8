"""The real demo: ``trio-sudp serve`` and ``connect`` in two network namespaces.

Everything it creates — two namespaces ``sudp-demo-<pid>-{0,1}`` joined by a veth
pair (172.31.99.0/24, inside the namespaces only), a temporary directory with keys and
configurations, two daemons — is removed at the end, also on Ctrl-C or an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..config import add_client, init_server

__all__ = ["TCP_RECEIVER", "TCP_SENDER", "run_netns_demo"]

TRIO_SUDP = [sys.executable, "-m", "trio_sudp"]
LINK = ("172.31.99.1", "172.31.99.2")
TRANSFER_MB = 20

#: A TCP receiver: prints "ready", then the byte count and SHA-256 of what it got.
TCP_RECEIVER = """
import hashlib, socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5001))
s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
h = hashlib.sha256()
n = 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    h.update(b)
    n += len(b)
print(n, h.hexdigest(), flush=True)
"""

#: A TCP sender of N MiB of seeded random data: prints the byte count, SHA-256, seconds.
TCP_SENDER = """
import hashlib, random, socket, sys, time
size = int(sys.argv[2]) * 1024 * 1024
block = random.Random(7).randbytes(1 << 20)
h = hashlib.sha256()
start = time.perf_counter()
c = socket.create_connection((sys.argv[1], 5001), timeout=30)
sent = 0
while sent < size:
    chunk = block[: size - sent]
    c.sendall(chunk)
    h.update(chunk)
    sent += len(chunk)
c.close()
print(sent, h.hexdigest(), time.perf_counter() - start, flush=True)
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


def _in(ns: str, argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=120, **kwargs
    )


def _wait(predicate: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def _namespaces() -> Iterator[tuple[str, str]]:
    names = (f"sudp-demo-{os.getpid()}-0", f"sudp-demo-{os.getpid()}-1")
    try:
        for ns in names:
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        veth = ["link", "add", "veth0", "type", "veth", "peer", "name", "veth1"]
        _ip("-n", names[0], *veth, "netns", names[1])
        for ns, dev, addr in ((names[0], "veth0", LINK[0]), (names[1], "veth1", LINK[1])):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        yield names
    finally:
        for ns in names:
            pids = subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=20
            ).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def _tunnels(ns: str) -> list[str]:
    """TUN devices of ours left in a namespace."""
    links = json.loads(_in(ns, ["ip", "-j", "link", "show"]).stdout or "[]")
    return [link["ifname"] for link in links if link["ifname"].startswith("sudp")]


def _start(ns: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv], stdout=handle, stderr=subprocess.STDOUT
        )


def _wait_log(process: subprocess.Popen[bytes], log: Path, marker: str) -> None:
    def seen() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the daemon exited:\n{log.read_text(errors='replace')}")
        return marker in log.read_text(errors="replace")

    _wait(seen, 30, marker)


def _say(text: str) -> None:
    print(text, flush=True)


def run_netns_demo(version: int = 3) -> int:
    """Run the demo; print what happens; return the exit code."""
    with tempfile.TemporaryDirectory(prefix="trio-sudp-demo-") as tmp, _namespaces() as (ns0, ns1):
        work = Path(tmp)
        _say(f"namespaces {ns0} (server, {LINK[0]}) and {ns1} (client, {LINK[1]})")
        server_toml, client_toml = work / "server.toml", work / "client.toml"
        init_server(
            server_toml,
            listen="0.0.0.0:7000",
            networks=["10.0.0.1/24"],
            endpoint=f"{LINK[0]}:7000",
            version=version,
            control_socket=work / "server.sock",
        )
        add_client(server_toml, client_toml, name="demo", control_socket=work / "client.sock")
        _say(f"generated keys and configurations in {work} (SUDP v{version})")
        server_log, client_log = work / "server.log", work / "client.log"
        server = _start(ns0, [*TRIO_SUDP, "serve", "-c", str(server_toml)], server_log)
        _wait_log(server, server_log, "control socket")
        started = time.perf_counter()
        client = _start(ns1, [*TRIO_SUDP, "connect", "-c", str(client_toml)], client_log)
        _wait_log(client, client_log, "tunnel up")
        _say(f"tunnel up in {time.perf_counter() - started:.2f} s:")
        _say("  " + re.sub(r"^.*tunnel up: ", "", client_log.read_text().splitlines()[-1]))

        done = _in(ns1, ["ping", "-n", "-c", "3", "-i", "0.2", "10.0.0.1"])
        _say("\n$ ping -c 3 10.0.0.1   (client -> server, through the tunnel)")
        _say("\n".join("  " + line for line in done.stdout.strip().splitlines()[-2:]))

        receiver_out = work / "receiver.out"
        with receiver_out.open("w") as out:
            receiver = subprocess.Popen(
                ["ip", "netns", "exec", ns0, sys.executable, "-c", TCP_RECEIVER, "10.0.0.1"],
                stdout=out,
            )
        _wait(lambda: "ready" in receiver_out.read_text(), 10, "the TCP receiver")
        sent = _in(ns1, [sys.executable, "-c", TCP_SENDER, "10.0.0.1", str(TRANSFER_MB)])
        receiver.wait(timeout=60)
        count, digest, seconds = sent.stdout.split()
        received = receiver_out.read_text().split()[1:]
        ok = received == [count, digest]
        rate = int(count) * 8 / float(seconds) / 1e6
        verdict = "matches" if ok else "DIFFERS"
        _say(
            f"\nTCP transfer of {TRANSFER_MB} MiB client -> server: {rate:.0f} Mbit/s, "
            f"SHA-256 {verdict}"
        )

        _say("\n$ trio-sudp show   (on the server)")
        shown = subprocess.run(
            [*TRIO_SUDP, "show", "--socket", str(work / "server.sock")],
            capture_output=True,
            text=True,
            timeout=20,
        )
        _say("\n".join("  " + line for line in shown.stdout.splitlines()))

        for process in (client, server):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)
        leftovers = [ns for ns in (ns0, ns1) if _tunnels(ns)]
        cleanup = f"LEFTOVER devices in {leftovers}" if leftovers else "their TUN devices are gone"
        _say(f"\nstopped both daemons; {cleanup}")
        return 0 if ok and done.returncode == 0 and not leftovers else 1
