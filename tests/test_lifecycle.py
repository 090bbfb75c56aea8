"""What the daemons set up around the interface, in order (``daemon/lifecycle.py``).

In memory here (fake network, memory TUN and netconfig; real ``/bin/sh`` hooks and a
fake ``resolvectl`` that log to one file), and as real ``serve`` / ``connect``
processes in namespaces in tests/test_full_tunnel_netns.py. The checks of missing
tools run the real CLI: they fail before anything needs root.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from test_vpn_glue import world
from trio_sudp import Version
from trio_sudp.config import ClientConfig, Hooks, ServerConfig, add_client, init_server, load_config
from trio_sudp.daemon.hooks import HookFailed, interface_for_hooks, run_hooks
from trio_sudp.daemon.lifecycle import (
    check_client_tools,
    check_server_tools,
    client_while_up,
    hook_interface,
    server_while_up,
)
from trio_sudp.daemon.run import describe_failure
from trio_sudp.vpn.dns import DnsBackend, DnsError
from trio_sudp.vpn.nftables import NftablesMissing

# A fake resolvectl: "resolvectl ARGS" into the log next to it.
FAKE_RESOLVECTL = """#!/bin/sh
echo "$(/usr/bin/basename "$0") $*" >> "$(/usr/bin/dirname "$0")/events"
"""


class Events:
    """One log for hooks and tools; hooks write ``phase %i``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "events"

    def hook(self, phase: str) -> str:
        return f'echo "{phase} %i" >> {self.path}'

    def hooks(self, **override: tuple[str, ...]) -> Hooks:
        phases = ("pre_up", "post_up", "pre_down", "post_down")
        return Hooks(**{p: override.get(p, (self.hook(p),)) for p in phases})

    def note(self, text: str) -> None:
        with self.path.open("a") as out:
            out.write(text + "\n")

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []


@pytest.fixture
def events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Events:
    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "resolvectl"
    fake.write_text(FAKE_RESOLVECTL)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))
    return Events(tools)


def test_a_pattern_is_numbered_like_the_kernel_does() -> None:
    assert interface_for_hooks("sudp%d", set()) == "sudp0"
    assert interface_for_hooks("sudp%d", {"sudp0", "sudp1", "sudp3"}) == "sudp2"
    assert interface_for_hooks("vpn-%d-x", {"vpn-0-x"}) == "vpn-1-x"
    assert interface_for_hooks("office", {"office"}) == "office"  # a name is a name
    assert interface_for_hooks("sudp%d", {"utun0"}, platform="darwin") == "utun1"


@given(st.sets(st.integers(min_value=0, max_value=40)))
def test_the_number_picked_is_the_lowest_free_one(taken: set[int]) -> None:
    name = interface_for_hooks("sudp%d", {f"sudp{n}" for n in taken} | {"eth0"})
    number = int(name.removeprefix("sudp"))
    assert number not in taken
    assert all(n in taken for n in range(number))


def test_without_hooks_the_kernel_names_the_interface() -> None:
    existing = lambda: [(1, "lo"), (2, "sudp0")]  # noqa: E731
    assert hook_interface(None, Hooks(), existing) == (None, "sudp%d")
    assert hook_interface("office%d", Hooks(), existing) == ("office%d", "office%d")
    # With hooks the name is known before the interface exists: %i is the same throughout.
    assert hook_interface(None, Hooks(post_up=("x",)), existing) == ("sudp1", "sudp1")
    assert hook_interface("vpn", Hooks(pre_up=("x",)), existing) == ("vpn", "vpn")


async def test_client_dns_and_hooks_in_wg_quick_order(events: Events, tmp_path: Path) -> None:
    hooks = events.hooks()
    with trio.fail_after(60):
        async with run_hooks(hooks, "cli1") as run:
            dns = check_client_tools_for(tmp_path / "c", dns=True)
            async with world(
                Version.V3,
                [1],
                client_up=lambda config: client_while_up(config, run, dns),
                dns=(ipaddress.ip_address("10.0.0.1"),),
                dns_search=("corp.example",),
                full_tunnel=True,
            ) as w:
                events.note("running")
                assert (
                    ipaddress.ip_network("0.0.0.0/1"),
                    "cli1",
                ) in {(r.destination, r.interface) for r in w.backends[1].routes}
    assert w.backends[1].clean
    assert events.lines() == [
        "pre_up cli1",
        "resolvectl dns cli1 10.0.0.1",
        "resolvectl domain cli1 corp.example ~.",  # full tunnel: every name
        "post_up cli1",
        "running",
        "pre_down cli1",
        "resolvectl revert cli1",
        "post_down cli1",
    ]


def client_config(directory: Path, dns: list[str]) -> ClientConfig:
    """A client file as ``config add-client --dns`` writes it, loaded."""
    directory.mkdir(exist_ok=True)
    server = directory / "server.toml"
    init_server(server, endpoint="127.0.0.1:7999")
    add_client(server, directory / "client.toml", dns=dns)
    config = load_config(directory / "client.toml")
    assert isinstance(config, ClientConfig)
    return config


def check_client_tools_for(directory: Path, *, dns: bool) -> DnsBackend | None:
    """The DNS tool ``connect`` would use for a configuration with or without DNS."""
    return check_client_tools(client_config(directory, ["10.0.0.1"] if dns else []))


async def test_a_failing_post_up_undoes_dns_and_the_interface(
    events: Events, tmp_path: Path
) -> None:
    hooks = events.hooks(post_up=("echo 'no monitor here' >&2; exit 3",))
    dns = check_client_tools_for(tmp_path / "c", dns=True)
    started = []

    async def start() -> None:
        async with (
            run_hooks(hooks, "cli1") as run,
            world(
                Version.V3,
                [1],
                client_up=lambda config: client_while_up(config, run, dns),
                dns=(ipaddress.ip_address("10.0.0.1"),),
            ) as w,
        ):
            started.append(w)  # pragma: no cover

    with trio.fail_after(60), pytest.RaisesGroup(HookFailed, flatten_subgroups=True) as caught:
        await start()
    message = "post_up hook failed with exit code 3: no monitor here"
    assert [str(e) for e in caught.value.exceptions] == [message]
    assert describe_failure(caught.value) == (1, message)
    # DNS was set and removed; as in wg-quick, neither pre_down nor post_down ran.
    assert events.lines() == [
        "pre_up cli1",
        "resolvectl dns cli1 10.0.0.1",
        "resolvectl revert cli1",
    ]
    assert not started


async def test_server_hooks_around_the_configured_interface(events: Events) -> None:
    with trio.fail_after(60):
        async with (
            run_hooks(events.hooks(), "srv0") as run,
            world(Version.V3, [1], server_up=lambda c: server_while_up(c, run)) as w,
        ):
            events.note("running")
            assert w.server_backend.mtu == {"srv0": 1400}
    assert w.server_backend.clean
    assert events.lines() == [
        "pre_up srv0",
        "post_up srv0",
        "running",
        "pre_down srv0",
        "post_down srv0",
    ]


def test_missing_tools_are_found_before_anything_is_touched(events: Events, tmp_path: Path) -> None:
    (events.directory / "resolvectl").unlink()
    with pytest.raises(DnsError) as dns:
        check_client_tools_for(tmp_path / "c", dns=True)
    assert describe_failure(dns.value) == (1, str(dns.value))
    assert check_client_tools_for(tmp_path / "d", dns=False) is None  # no DNS, no tool needed

    server = tmp_path / "server.toml"
    init_server(server, masquerade="eth0")
    config = load_config(server)
    assert isinstance(config, ServerConfig)
    with pytest.raises(NftablesMissing) as nft:
        check_server_tools(config)
    assert describe_failure(nft.value) == (2, str(nft.value))


def _cli_run(args: list[str], path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trio_sudp", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": path},
    )


def test_serve_without_nft_and_connect_without_a_dns_tool_say_so(tmp_path: Path) -> None:
    """Through the CLI, with a PATH that has neither nft nor resolvectl/resolvconf."""
    empty = tmp_path / "empty"
    empty.mkdir()
    server = tmp_path / "server.toml"
    init_server(server, endpoint="127.0.0.1:7999", masquerade="eth0")
    add_client(server, tmp_path / "client.toml", dns=["10.0.0.1"])

    done = _cli_run(["serve", "-c", str(server)], str(empty))
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "trio-sudp: ERROR: forwarding and masquerade need nftables, but 'nft' was not found"
        " on PATH (install the nftables package)"
    ]
    done = _cli_run(["connect", "-c", str(tmp_path / "client.toml")], str(empty))
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("trio-sudp: ERROR: DNS servers or search domains are configured")
    assert "neither resolvectl (systemd-resolved) nor resolvconf is installed" in line


def test_reload_says_what_needs_a_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from trio_sudp.daemon.main import _warn_restart_needed

    server = tmp_path / "server.toml"
    init_server(server)
    old = load_config(server)
    assert isinstance(old, ServerConfig)
    _warn_restart_needed(old, old)
    assert caplog.records == []
    new = attrs.evolve(old, forward=True, hooks=Hooks(post_up=("true",)))
    _warn_restart_needed(old, new)
    assert caplog.messages == ["reload: a change of forward, hooks needs a restart"]
