"""Throw-away network namespaces for end-to-end tests (root, Linux, iproute2).

Nothing here touches the host's root namespace: veth pairs are created inside a
namespace with their peer moved straight into another, and every address and
route exists only inside the namespaces. Names are unique per test
(``tsudp-<pid>-<random>-<n>``) and :func:`netns_topology` always deletes what it
created, on failure and on ``KeyboardInterrupt`` too; :func:`cleanup_stale_namespaces`
removes those left by a killed run. Usage::

    from netns import netns_topology, require_netns, run_in

    def test_something():
        require_netns()
        with netns_topology(2) as topo:
            run_in(topo[1], ["ip", "route"])
            ...

Addressing: link ``k`` between nodes ``a`` and ``b`` is ``10.200.k.0/24`` and
``fd00:200:k::/64``; node ``i`` has host number ``i + 1`` on every link. In the
default star around node 0, every other node has a default route via node 0,
which forwards.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import ipaddress
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

__all__ = [
    "PREFIX",
    "Link",
    "Node",
    "Topology",
    "cleanup_stale_namespaces",
    "netns1",
    "netns2",
    "netns3",
    "netns_topology",
    "require_netns",
    "require_root_and_tun",
    "run_in",
    "run_in_async",
    "run_scenario",
    "scenario_main",
    "wait_until",
]

PREFIX = "tsudp-"
#: Seconds any one setup or teardown command may take.
COMMAND_TIMEOUT = 20.0

# Forward between links; no IPv6 duplicate address detection (addresses usable at once).
_SYSCTLS = "; ".join(
    f"echo {value} > /proc/sys/net/{key}"
    for key, value in (
        ("ipv4/ip_forward", 1),
        ("ipv6/conf/all/forwarding", 1),
        ("ipv6/conf/all/accept_dad", 0),
        ("ipv6/conf/default/accept_dad", 0),
    )
)

_live: set[str] = set()  # namespaces this process created and has not deleted yet


def _skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"needs Linux network namespaces, not {sys.platform}"
    if os.geteuid() != 0:
        return "needs root (network namespaces, TUN devices)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (modprobe tun, or pass --device /dev/net/tun)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    return None


def require_root_and_tun() -> None:
    """``pytest.skip`` with the reason unless root, ``/dev/net/tun`` and ``ip`` are there."""
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)


_netns_probe: str | None = None


def require_netns() -> None:
    """Like :func:`require_root_and_tun`, and also check a namespace can be created."""
    global _netns_probe
    require_root_and_tun()
    if _netns_probe is None:
        cleanup_stale_namespaces()  # left by a run that was killed
        name = _unique_name(0)
        try:
            _ip("netns", "add", name)
        except subprocess.CalledProcessError as exc:
            _netns_probe = f"cannot create a network namespace: {exc.stderr.strip()}"
        else:
            _netns_probe = ""
            _delete_namespace(name)
    if _netns_probe:
        pytest.skip(_netns_probe)


@dataclass(frozen=True)
class Link:
    """A veth pair between two nodes, with one /24 and one /64."""

    index: int
    a: int
    b: int

    @property
    def network4(self) -> ipaddress.IPv4Network:
        """``10.200.<index>.0/24``."""
        return ipaddress.IPv4Network(f"10.200.{self.index}.0/24")

    @property
    def network6(self) -> ipaddress.IPv6Network:
        """``fd00:200:<index>::/64``."""
        return ipaddress.IPv6Network(f"fd00:200:{self.index}::/64")


@dataclass
class Node:
    """One namespace: its name, and its address on each link, by peer node."""

    index: int
    ns: str
    addresses4: dict[int, ipaddress.IPv4Interface] = field(default_factory=dict)
    addresses6: dict[int, ipaddress.IPv6Interface] = field(default_factory=dict)

    def addr4(self, peer: int) -> str:
        """This node's IPv4 address on the link to node ``peer``."""
        return str(self.addresses4[peer].ip)

    def addr6(self, peer: int) -> str:
        """This node's IPv6 address on the link to node ``peer``."""
        return str(self.addresses6[peer].ip)

    @staticmethod
    def ifname(peer: int) -> str:
        """The name of this node's veth towards node ``peer``."""
        return f"to{peer}"


@dataclass
class Topology:
    """The namespaces of one test and the processes started in them."""

    nodes: list[Node]
    links: list[Link]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    def __len__(self) -> int:
        return len(self.nodes)

    def spawn(self, node: int | Node, argv: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
        """Start a background process in a namespace; it is killed at teardown."""
        ns = node.ns if isinstance(node, Node) else self.nodes[node].ns
        proc: subprocess.Popen[bytes]
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **popen)
        self.processes.append(proc)
        return proc


def _unique_name(index: int) -> str:
    return f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}-{index}"


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], check=True, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )


def _ns_of(node: str | Node) -> str:
    return node.ns if isinstance(node, Node) else node


def run_in(
    node: str | Node,
    argv: Sequence[str],
    *,
    timeout: float = 60.0,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside a namespace (``ip netns exec``), capturing text output.

    With ``check``, a non-zero exit fails the test showing the command's output.
    """
    ns = _ns_of(node)
    done = subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        env=None if env is None else dict(env),
    )
    if check and done.returncode != 0:
        pytest.fail(_describe(ns, argv, done.returncode, done.stdout, done.stderr), pytrace=False)
    return done


async def run_in_async(
    node: str | Node,
    argv: Sequence[str],
    *,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """:func:`run_in` for Trio tests; bound it with ``trio.fail_after`` (cancelling kills it)."""
    ns = _ns_of(node)
    done = await trio.run_process(
        ["ip", "netns", "exec", ns, *argv],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=None if env is None else dict(env),
    )
    if check and done.returncode != 0:
        message = _describe(
            ns, argv, done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode()
        )
        pytest.fail(message, pytrace=False)
    return done


def _describe(ns: str, argv: Sequence[str], code: int, stdout: str, stderr: str) -> str:
    return f"in {ns}: {' '.join(argv)} exited {code}\n--- stdout\n{stdout}--- stderr\n{stderr}"


def _namespace_pids(ns: str) -> list[int]:
    done = subprocess.run(
        ["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def _delete_namespace(ns: str) -> None:
    for pid in _namespace_pids(ns):  # only processes inside our own namespace
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    done = subprocess.run(
        ["ip", "netns", "del", ns], capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    if done.returncode != 0 and os.path.exists(f"/run/netns/{ns}"):
        raise RuntimeError(f"cannot delete namespace {ns}: {done.stderr.strip()}")
    _live.discard(ns)


def _teardown(steps: Sequence[Callable[[], None]]) -> None:
    """Run every step even if Ctrl-C arrives meanwhile; re-raise it at the end."""
    interrupted: BaseException | None = None
    errors: list[Exception] = []
    for step in steps:
        for _attempt in range(3):
            try:
                step()
                break
            except KeyboardInterrupt as exc:
                interrupted = exc
            except Exception as exc:
                errors.append(exc)
                break
    if interrupted is not None:
        raise interrupted
    if errors:
        raise errors[0]


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=COMMAND_TIMEOUT)


@atexit.register
def _delete_leftovers() -> None:
    for ns in list(_live):
        with contextlib.suppress(Exception):
            _delete_namespace(ns)


def cleanup_stale_namespaces() -> list[str]:
    """Delete test namespaces whose creating process is gone; return their names."""
    if not os.path.isdir("/run/netns"):
        return []
    removed = []
    for ns in os.listdir("/run/netns"):
        if not ns.startswith(PREFIX):
            continue
        pid = ns[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _delete_namespace(ns)
            removed.append(ns)
    return removed


@contextlib.contextmanager
def netns_topology(
    count: int = 2,
    *,
    links: Sequence[tuple[int, int]] | None = None,
    default_via: Mapping[int, int] | None = None,
    ipv6: bool = True,
) -> Iterator[Topology]:
    """Create ``count`` namespaces joined by veth pairs; delete them all on exit.

    ``links`` defaults to a star around node 0; ``default_via`` maps a node to the
    neighbour it uses as default gateway (default: every other node via node 0).
    Every namespace has loopback up, IP forwarding on and IPv6 DAD off.
    """
    if links is None:
        links = [(0, i) for i in range(1, count)]
    if default_via is None:
        default_via = {i: 0 for i in range(1, count) if (0, i) in links or (i, 0) in links}
    nodes = [Node(i, _unique_name(i)) for i in range(count)]
    topo = Topology(nodes, [Link(k, a, b) for k, (a, b) in enumerate(links)])
    try:
        for node in nodes:
            _live.add(node.ns)
            _ip("netns", "add", node.ns)
            _ip("-n", node.ns, "link", "set", "lo", "up")
            _ip("netns", "exec", node.ns, "sh", "-c", _SYSCTLS)
        for link in topo.links:
            a, b = nodes[link.a], nodes[link.b]
            _ip("-n", a.ns, "link", "add", a.ifname(b.index), "type", "veth",
                "peer", "name", b.ifname(a.index), "netns", b.ns)  # fmt: skip
            for node, peer in ((a, b), (b, a)):
                dev = node.ifname(peer.index)
                host = node.index + 1
                node.addresses4[peer.index] = ipaddress.IPv4Interface(
                    f"{link.network4.network_address + host}/24"
                )
                _ip("-n", node.ns, "addr", "add", str(node.addresses4[peer.index]), "dev", dev)
                if ipv6:
                    node.addresses6[peer.index] = ipaddress.IPv6Interface(
                        f"{link.network6.network_address + host}/64"
                    )
                    addr6 = str(node.addresses6[peer.index])
                    _ip("-n", node.ns, "addr", "add", addr6, "dev", dev, "nodad")
                _ip("-n", node.ns, "link", "set", dev, "up")
        for i, gw in default_via.items():
            _ip("-n", nodes[i].ns, "route", "add", "default", "via", nodes[gw].addr4(i))
            if ipv6:
                _ip("-n", nodes[i].ns, "-6", "route", "add", "default", "via", nodes[gw].addr6(i))
        yield topo
    finally:
        steps: list[Callable[[], None]] = [functools.partial(_kill, p) for p in topo.processes]
        steps += [functools.partial(_delete_namespace, node.ns) for node in nodes]
        _teardown(steps)


@pytest.fixture
def netns1() -> Iterator[Topology]:
    """One fresh namespace (skips without root, TUN or ``ip``)."""
    require_netns()
    with netns_topology(1) as topo:
        yield topo


@pytest.fixture
def netns2() -> Iterator[Topology]:
    """Two namespaces on one veth link; node 1 routes by default via node 0."""
    require_netns()
    with netns_topology(2) as topo:
        yield topo


@pytest.fixture
def netns3() -> Iterator[Topology]:
    """Three namespaces in a star around node 0, which forwards between the others."""
    require_netns()
    with netns_topology(3) as topo:
        yield topo


def scenario_main(namespace: Mapping[str, Any]) -> None:
    """Entry point of a test module run as a script: ``python test_x.py scenario_name args``.

    Runs the module's ``async def scenario_name(*args)`` under ``trio.run``; the
    module runs it inside a namespace with :func:`run_scenario`.
    """
    name, *args = sys.argv[1:]
    if not name.startswith("scenario_"):
        raise SystemExit(f"not a scenario: {name}")
    try:
        trio.run(namespace[name], *args)
    except AssertionError as exc:
        # No pytest assertion rewriting out here: show the test module's variables instead.
        traceback.print_exc()
        here = namespace.get("__file__")
        for frame, line in traceback.walk_tb(exc.__traceback__):
            if frame.f_code.co_filename == here:
                sys.stderr.write(f"--- {frame.f_code.co_name}, line {line}:\n")
                for key, value in frame.f_locals.items():
                    sys.stderr.write(f"    {key} = {value!r}\n")
        raise SystemExit(1) from None


async def run_scenario(node: str | Node, module_file: str, name: str, *args: str) -> str:
    """Run ``scenario_<name>`` of ``module_file`` in a fresh Python inside a namespace.

    The scenario's assertion errors fail the calling test with its traceback.
    Returns its standard output. Bound it with ``trio.fail_after``.
    """
    argv = [sys.executable, module_file, name, *args]
    done = await run_in_async(node, argv)
    return done.stdout.decode(errors="replace")


async def wait_until(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll a condition the kernel changes (no event to wait on) until true, or fail.

    Fails with ``trio.TooSlowError`` after ``limit`` seconds.
    """
    with trio.fail_after(limit):
        for delay in itertools.chain((0.001, 0.005), itertools.repeat(0.02)):
            if predicate():
                return
            await trio.sleep(delay)
