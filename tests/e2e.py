"""Helpers for end-to-end tests: real ``trio-sudp serve``/``connect`` in namespaces.

Configurations are made with the library's own ``init_server``/``add_client`` (as
``trio-sudp config ...`` does); daemons run as subprocesses inside namespaces
created by :mod:`netns`, their logs go to files in the test's temporary directory,
and every wait is on a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netns import Node, Topology, run_in
from trio_sudp.config import add_client, init_server

TRIO_SUDP = [sys.executable, "-m", "trio_sudp"]
SERVER_PORT = 7000


def add_lines(path: Path, table: str, *lines: str) -> None:
    """Add TOML lines at the top of ``[table]`` in the file at ``path``."""
    text = path.read_text()
    header = f"[{table}]\n"
    assert header in text, f"{path} has no {header.strip()} table"
    path.write_text(text.replace(header, header + "".join(f"{x}\n" for x in lines), 1))


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``trio-sudp ARGS`` here (not in a namespace), in ``cwd``."""
    return subprocess.run(
        [*TRIO_SUDP, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


@dataclass
class Configs:
    server: Path
    clients: list[Path]
    server_socket: Path
    client_sockets: list[Path]


def make_configs(
    tmp: Path,
    *,
    version: int,
    server_ip: str,
    clients: int = 1,
    client_endpoints: list[str] | None = None,
    full_tunnel: bool = False,
    port: int = SERVER_PORT,
    listen_ip: str = "0.0.0.0",
) -> Configs:
    """A server and ``clients`` clients, as ``trio-sudp config`` would make them.

    ``client_endpoints`` gives each client the server address it connects to (a server
    with several links answers each client from the address on that client's link).
    The server listens on ``listen_ip`` (all its addresses by default).
    """
    server = tmp / "server.toml"
    init_server(
        server,
        listen=f"{listen_ip}:{port}",
        networks=["10.0.0.1/24"],
        endpoint=f"{server_ip}:{port}",
        version=version,
    )
    paths = []
    for i in range(1, clients + 1):
        path = tmp / f"client{i}.toml"
        endpoint = None if client_endpoints is None else f"{client_endpoints[i - 1]}:{port}"
        add_client(
            server,
            path,
            name=f"client{i}",
            version=version,
            full_tunnel=full_tunnel,
            endpoint=endpoint,
        )
        paths.append(path)
    # The namespaces share one filesystem: give every daemon its own control socket.
    server_socket = tmp / "server.sock"
    add_lines(server, "server", f'control_socket = "{server_socket}"')
    sockets = []
    for i, path in enumerate(paths, 1):
        sockets.append(tmp / f"client{i}.sock")
        add_lines(path, "client", f'control_socket = "{sockets[-1]}"')
    return Configs(server, paths, server_socket, sockets)


def wait_for(predicate: Callable[[], bool], limit: float, what: str) -> None:
    """Poll a condition the kernel or a subprocess changes, with a deadline."""
    deadline = time.monotonic() + limit
    delay = 0.01
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:g} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


@dataclass
class Daemon:
    """A ``trio-sudp`` daemon running in a namespace, logging to a file."""

    process: subprocess.Popen[bytes]
    log: Path
    node: Node
    stopped: bool = field(default=False)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, marker: str, limit: float = 20.0) -> None:
        def seen() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"daemon exited with {self.process.returncode}:\n{self.text()}"
                )
            return marker in self.text()

        wait_for(seen, limit, f"{marker!r} in {self.log.name}")

    def stop(self, sig: int = signal.SIGTERM, limit: float = 20.0) -> int:
        """Signal the daemon and wait for it to exit; return its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"daemon did not stop on {sig}:\n{self.text()}") from None
        self.stopped = True
        return code


def start(
    topo: Topology,
    node: int,
    command: str,
    config: Path,
    log: Path,
    env: Mapping[str, str] | None = None,
) -> Daemon:
    """Start ``trio-sudp COMMAND --config CONFIG`` in ``node``; ``env`` adds variables."""
    handle = log.open("wb")
    process = topo.spawn(
        node,
        [*TRIO_SUDP, command, "--config", str(config), "--log-level", "debug"],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    handle.close()
    return Daemon(process, log, topo[node])


def start_server(
    topo: Topology,
    configs: Configs,
    tmp: Path,
    node: int = 0,
    env: Mapping[str, str] | None = None,
) -> Daemon:
    log = tmp / f"server-{time.monotonic_ns()}.log"
    daemon = start(topo, node, "serve", configs.server, log, env)
    daemon.wait_for_log("control socket")
    return daemon


def start_client(
    topo: Topology,
    configs: Configs,
    tmp: Path,
    index: int,
    node: int,
    env: Mapping[str, str] | None = None,
) -> Daemon:
    log = tmp / f"client{index}-{time.monotonic_ns()}.log"
    daemon = start(topo, node, "connect", configs.clients[index - 1], log, env)
    daemon.wait_for_log("tunnel up")
    return daemon


def ping(node: Node, target: str, *, count: int = 3, source: str | None = None) -> bool:
    argv = ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "2", target]
    if source is not None:
        argv[1:1] = ["-I", source]
    return run_in(node, argv, check=False, timeout=30).returncode == 0


def show(socket: Path) -> dict[str, Any]:
    done = subprocess.run(
        [*TRIO_SUDP, "show", "--json", "--socket", str(socket)],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def links(node: Node) -> list[str]:
    """Interface names in a namespace."""
    out = run_in(node, ["ip", "-j", "link", "show"]).stdout
    return [entry["ifname"] for entry in json.loads(out)]


def routes(node: Node) -> list[str]:
    """The main routing tables (IPv4 and IPv6) of a namespace, one route per line."""
    v4 = run_in(node, ["ip", "route", "show"]).stdout.splitlines()
    v6 = run_in(node, ["ip", "-6", "route", "show"]).stdout.splitlines()
    return sorted(line.strip() for line in v4 + v6 if line.strip())
