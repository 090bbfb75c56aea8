"""Three namespaces for "laptop → server → internet" tests: client, server, internet.

Built on :func:`netns.netns_topology`. The client and the server share link 0
(``10.200.0.0/24``, ``fd00:200:0::/64``), the server and the internet host link 1
(``10.200.1.0/24``, ``fd00:200:1::/64``). The client's default route is via the
server, the server's via the internet host; the internet host knows only its own
link, so the client's addresses are unreachable from it, and every namespace
starts with forwarding off: a packet from the client reaches the internet host only
if the server forwards it, and an answer comes back only if the server masquerades
(or the internet host is given a route back). Usage::

    from internet import internet_topology

    with internet_topology() as net:
        run_in(net.client, ["ping", "-c1", net.internet.addr4(net.server.index)])

:data:`TCP_SOURCE` serves a checksummed payload and reports who connected;
:func:`fetch` gets it from the client side.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e import ping, wait_for
from netns import Node, Topology, netns_topology, require_netns, run_in

__all__ = [
    "PAYLOAD_BYTES",
    "TCP_PORT",
    "InternetTopology",
    "TcpSource",
    "cannot_reach",
    "fetch",
    "forwarding_sysctls",
    "internet_topology",
    "our_tables",
    "payload_sha256",
    "reaches",
    "require_nft",
    "start_source",
]

TCP_PORT = 8080
PAYLOAD_BYTES = 2 * 1024 * 1024
_SEED = 12

# Forwarding off everywhere (netns_topology turns it on); writing the global
# switches rewrites every interface's switch too.
_NO_FORWARDING = "; ".join(
    f"echo 0 > /proc/sys/net/{key}" for key in ("ipv4/ip_forward", "ipv6/conf/all/forwarding")
)


@dataclass
class InternetTopology:
    """The three namespaces, and the server's two interfaces."""

    topo: Topology
    client: Node
    server: Node
    internet: Node

    @property
    def tunnel_side(self) -> str:
        """The server's interface towards the client (where a tunnel would be)."""
        return self.server.ifname(self.client.index)

    @property
    def egress(self) -> str:
        """The server's interface towards the internet host (its default route)."""
        return self.server.ifname(self.internet.index)

    def internet_address(self, version: int) -> str:
        """The internet host's address."""
        peer = self.server.index
        return self.internet.addr4(peer) if version == 4 else self.internet.addr6(peer)

    def server_address(self, version: int) -> str:
        """The server's address on the internet side (what masquerading shows)."""
        peer = self.internet.index
        return self.server.addr4(peer) if version == 4 else self.server.addr6(peer)

    def client_address(self, version: int) -> str:
        """The client's address."""
        peer = self.server.index
        return self.client.addr4(peer) if version == 4 else self.client.addr6(peer)


@contextlib.contextmanager
def internet_topology() -> Iterator[InternetTopology]:
    """Create client (0), server (1) and internet (2) namespaces; delete them on exit."""
    with netns_topology(3, links=[(0, 1), (1, 2)], default_via={0: 1, 1: 2}) as topo:
        for node in topo.nodes:
            run_in(node, ["sh", "-c", _NO_FORWARDING])
        yield InternetTopology(topo, topo[0], topo[1], topo[2])


def forwarding_sysctls(node: Node) -> dict[str, str]:
    """Every forwarding switch in ``node``'s namespace, by path under /proc/sys/net."""
    script = (
        "for f in /proc/sys/net/ipv4/conf/*/forwarding /proc/sys/net/ipv4/ip_forward"
        " /proc/sys/net/ipv6/conf/*/forwarding /proc/sys/net/ipv6/conf/*/force_forwarding;"
        ' do [ -e "$f" ] && echo "${f#/proc/sys/net/} $(cat "$f")"; done'
    )
    lines = run_in(node, ["sh", "-c", script]).stdout.splitlines()
    return dict(line.split(" ", 1) for line in lines)


def payload() -> bytes:
    """The bytes :data:`TCP_SOURCE` sends."""
    return random.Random(_SEED).randbytes(PAYLOAD_BYTES)


def payload_sha256() -> str:
    """The SHA-256 of :func:`payload`, hex."""
    return hashlib.sha256(payload()).hexdigest()


# argv: address port seed size. Accepts one connection (or gives up after 60 s),
# prints the peer's address, sends the payload and exits.
TCP_SOURCE = """
import random, socket, sys
host, port, seed, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
with socket.socket(family, socket.SOCK_STREAM) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(1)
    s.settimeout(60)
    print("ready", flush=True)
    conn, peer = s.accept()
    with conn:
        print("peer", peer[0], flush=True)
        conn.sendall(random.Random(seed).randbytes(size))
"""

# argv: address port timeout. Prints the SHA-256 and length of what it read.
TCP_FETCH = """
import hashlib, socket, sys
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with socket.create_connection((host, port), timeout=timeout) as s:
    digest, n = hashlib.sha256(), 0
    while chunk := s.recv(65536):
        digest.update(chunk)
        n += len(chunk)
print(digest.hexdigest(), n)
"""


@dataclass
class TcpSource:
    """A :data:`TCP_SOURCE` process on the internet host; its output goes to ``log``."""

    process: subprocess.Popen[bytes]
    log: Path

    def peer(self) -> str:
        """The address the one connection came from."""
        self.process.wait(timeout=30)
        for line in self.log.read_text().splitlines():
            if line.startswith("peer "):
                return line.split()[1]
        raise AssertionError(f"no connection reached the TCP source: {self.log.read_text()!r}")


def start_source(net: InternetTopology, version: int, log: Path) -> TcpSource:
    """Start a one-shot TCP source on the internet host and wait until it listens."""
    address = net.internet_address(version)
    args = [address, str(TCP_PORT), str(_SEED), str(PAYLOAD_BYTES)]
    with log.open("w") as out:
        process = net.topo.spawn(
            net.internet, [sys.executable, "-c", TCP_SOURCE, *args], stdout=out
        )
    wait_for(lambda: "ready" in log.read_text(), 10, "the TCP source to listen")
    return TcpSource(process, log)


def fetch(net: InternetTopology, version: int, *, timeout: float = 10.0) -> tuple[str, int] | None:
    """Fetch the payload from the client; its SHA-256 and length, or ``None`` if unreachable."""
    address = net.internet_address(version)
    done = run_in(
        net.client,
        [sys.executable, "-c", TCP_FETCH, address, str(TCP_PORT), str(timeout)],
        check=False,
        timeout=timeout + 30,
    )
    if done.returncode != 0:
        return None
    digest, size = done.stdout.split()
    return digest, int(size)


def our_tables(node: Node) -> list[str]:
    """The nftables tables of trio-sudp in ``node``'s namespace."""
    out = run_in(node, ["nft", "-j", "list", "tables"]).stdout
    names = [o["table"]["name"] for o in json.loads(out)["nftables"] if "table" in o]
    return [name for name in names if name.startswith("trio-sudp-")]


def require_nft() -> None:
    """Skip unless namespaces work and ``nft`` is installed."""
    require_netns()
    if shutil.which("nft") is None:
        pytest.skip("needs nftables (the nft command)")


def reaches(net: InternetTopology, version: int, tmp: Path, *, seen_as: str) -> None:
    """The client pings the internet host and fetches the payload; the host sees ``seen_as``."""
    target = net.internet_address(version)
    assert ping(net.client, target, count=2)
    source = start_source(net, version, tmp / f"source{version}.log")
    assert fetch(net, version) == (payload_sha256(), PAYLOAD_BYTES)
    assert source.peer() == seen_as


def cannot_reach(net: InternetTopology, version: int) -> None:
    """Neither a ping nor a TCP connection from the client gets an answer within 1 s
    (inside these namespaces an answer takes well under a millisecond)."""
    target = net.internet_address(version)
    argv = ["ping", "-n", "-q", "-c", "1", "-W", "1", target]
    assert run_in(net.client, argv, check=False, timeout=30).returncode != 0
    assert fetch(net, version, timeout=1) is None
