"""DNS for the tunnel: fake ``resolvectl``/``resolvconf`` on PATH record each call.

The real tools would change the host's DNS, so they are never run here. What the
fakes are given was checked against the real scripts (Debian's resolvconf ignores
the words after the record name, openresolv parses ``-m 0 -x`` and ``-f``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trio_sudp.daemon.run import describe_failure
from trio_sudp.protocol.errors import ConfigError
from trio_sudp.vpn.dns import DnsError, Resolvconf, parse_search_domain, tunnel_dns

# Writes "name args" and then its stdin (if any, as "stdin: ...") to calls.log;
# fails (exit 1, a line on stderr) when its arguments match $FAIL_ON.
FAKE = """#!/bin/sh
log="$(/usr/bin/dirname "$0")/calls.log"
echo "$(/usr/bin/basename "$0") $*" >> "$log"
if [ "$1" = "-a" ]; then /bin/sed 's/^/stdin: /' >> "$log"; fi
case "$*" in
  *"$FAIL_ON"*) if [ -n "$FAIL_ON" ]; then echo "Failed to set DNS: nope" >&2; exit 1; fi ;;
esac
"""


class FakeTools:
    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.directory = directory
        directory.mkdir()
        monkeypatch.setenv("PATH", str(directory))
        monkeypatch.setenv("FAIL_ON", "")
        self.monkeypatch = monkeypatch

    def install(self, name: str) -> None:
        path = self.directory / name
        path.write_text(FAKE)
        path.chmod(0o755)

    def fail_on(self, words: str) -> None:
        self.monkeypatch.setenv("FAIL_ON", words)

    def calls(self) -> list[str]:
        log = self.directory / "calls.log"
        return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    return FakeTools(tmp_path / "bin", monkeypatch)


async def test_resolvectl_sets_servers_and_domains_and_reverts(tools: FakeTools) -> None:
    tools.install("resolvectl")
    tools.install("resolvconf")  # resolvectl is preferred
    async with tunnel_dns("sudp0", ["10.0.0.1", "fd00:5d::1"], ["corp.example", "lab"]) as used:
        assert used is not None and used.name == "resolvectl"
        assert tools.calls() == [
            "resolvectl dns sudp0 10.0.0.1 fd00:5d::1",
            "resolvectl domain sudp0 corp.example lab ~.",
        ]
    assert tools.calls()[2:] == ["resolvectl revert sudp0"]


async def test_resolvectl_without_routing_every_query(tools: FakeTools) -> None:
    tools.install("resolvectl")
    async with tunnel_dns("sudp0", ["10.0.0.1"], route_all=False):
        assert tools.calls() == ["resolvectl dns sudp0 10.0.0.1"]
    async with tunnel_dns("sudp0", [], ["corp.example"]):
        pass
    assert tools.calls()[1:] == [
        "resolvectl revert sudp0",
        "resolvectl domain sudp0 corp.example",
        "resolvectl revert sudp0",
    ]


async def test_resolvconf_gets_resolv_conf_lines_on_stdin(tools: FakeTools) -> None:
    tools.install("resolvconf")
    async with tunnel_dns("sudp0", ["10.0.0.1", "fd00:5d::1"], ["corp.example", "lab"]) as used:
        assert used is not None and used.name == "resolvconf"
        assert tools.calls() == [
            "resolvconf -a sudp0.trio-sudp -m 0 -x",
            "stdin: nameserver 10.0.0.1",
            "stdin: nameserver fd00:5d::1",
            "stdin: search corp.example lab",
        ]
    assert tools.calls()[4:] == ["resolvconf -d sudp0.trio-sudp -f"]


def test_resolvconf_record_sorts_with_tun_devices_on_debian(tmp_path: Path) -> None:
    order = tmp_path / "interface-order"
    order.write_text("# interface-order(5)\nlo.inet6\nlo.inet\nlo\ntun*\ntap*\n*\n")
    assert Resolvconf("resolvconf", interface_order=order).record("sudp0") == "tun.sudp0.trio-sudp"
    missing = tmp_path / "none"
    assert Resolvconf("resolvconf", interface_order=missing).record("sudp0") == "sudp0.trio-sudp"


async def test_neither_tool_is_one_line_exit_1(tools: FakeTools) -> None:
    with pytest.raises(DnsError) as caught:
        async with tunnel_dns("sudp0", ["10.0.0.1"]):
            pass  # pragma: no cover
    message = str(caught.value)
    assert "\n" not in message
    assert "neither resolvectl (systemd-resolved) nor resolvconf" in message
    assert describe_failure(caught.value) == (1, message)


async def test_nothing_configured_does_nothing(tools: FakeTools) -> None:
    tools.install("resolvectl")
    async with tunnel_dns("sudp0", [], []) as used:
        assert used is None
    assert tools.calls() == []
    tools.directory.joinpath("resolvectl").unlink()
    async with tunnel_dns("sudp0", []):  # no tool needed either
        pass


async def test_a_failing_call_is_one_line_and_undoes_the_first(tools: FakeTools) -> None:
    tools.install("resolvectl")
    tools.fail_on("domain")
    with pytest.raises(DnsError, match=r"Failed to set DNS: nope$") as caught:
        async with tunnel_dns("sudp0", ["10.0.0.1"], ["corp.example"]):
            pass  # pragma: no cover
    assert "\n" not in str(caught.value)
    assert tools.calls()[-1] == "resolvectl revert sudp0"


async def test_removed_on_cancellation_and_a_failing_removal_is_logged(
    tools: FakeTools, caplog: pytest.LogCaptureFixture
) -> None:
    tools.install("resolvectl")
    tools.fail_on("revert")
    with trio.CancelScope() as scope:
        async with tunnel_dns("sudp0", ["10.0.0.1"]):
            scope.cancel()
            await trio.sleep_forever()
    assert tools.calls()[-1] == "resolvectl revert sudp0"
    assert any("revert sudp0: Failed to set DNS: nope" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("servers", "search"),
    [(["10.0.0.300"], []), (["10.0.0.1"], ["a b"]), ([], ["x\nnameserver 192.0.2.1"])],
)
async def test_bad_settings_are_config_errors(
    tools: FakeTools, servers: list[str], search: list[str]
) -> None:
    tools.install("resolvectl")
    with pytest.raises(ConfigError) as caught:
        async with tunnel_dns("sudp0", servers, search):
            pass  # pragma: no cover
    assert "\n" not in str(caught.value)
    assert tools.calls() == []


@given(st.text(max_size=300))
def test_search_domains_cannot_smuggle_lines_or_options(text: str) -> None:
    failure: ConfigError | None = None
    try:
        domain = parse_search_domain(text)
    except ConfigError as exc:
        failure = exc
    if failure is not None:
        assert "\n" not in str(failure)  # one line: the text is shown escaped
        return
    assert domain == text
    assert not any(c.isspace() for c in domain)
    assert not domain.startswith(("-", "~", "."))


@given(st.lists(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True), min_size=1))
def test_ordinary_domains_are_accepted(labels: list[str]) -> None:
    name = ".".join(labels)[:253].rstrip(".-")
    if name and not name.split(".")[-1].endswith("-"):
        assert parse_search_domain(name) == name
