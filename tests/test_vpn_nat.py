"""``server_forwarding`` without root: a fake ``nft`` on PATH and a fake /proc/sys/net.

The real kernel and nftables are exercised in ``test_vpn_nat_netns.py``; here the
order of operations, the undo on every way out, stale-table handling, the
nftables JSON and the errors are checked where they can be seen.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trio_sudp.daemon.run import describe_failure
from trio_sudp.protocol.errors import ConfigError
from trio_sudp.testing.netbackend import MemoryNetBackend
from trio_sudp.tun.netconfig import Route
from trio_sudp.vpn.ipforward import ForwardingError, IPForwarding, SysctlKey
from trio_sudp.vpn.nat import (
    _recorded,
    forwarding_ruleset,
    server_forwarding,
    table_name,
)
from trio_sudp.vpn.nftables import Nftables, NftablesMissing

NETWORKS = [ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("fd00:5d::/64")]
INTERFACES = ("all", "default", "lo", "sudp0", "eth0")

FAKE_NFT = """#!/bin/sh
# Records each call ("ARGS: ..." then stdin) and answers listings from files.
log="$(dirname "$0")/nft.log"
echo "ARGS: $*" >> "$log"
case "$*" in
  "-j list tables inet") cat "$(dirname "$0")/tables.json" ;;
  "-j list table inet "*) cat "$(dirname "$0")/table.json" ;;
  "-j -f -") /bin/cat >> "$log"; echo >> "$log" ;;
esac
"""


class FakeNft:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "nft"
        self.path.write_text(FAKE_NFT)
        self.path.chmod(0o755)
        self.set_tables([])

    def set_tables(self, objects: list[dict[str, Any]]) -> None:
        names = [{"table": {"family": "inet", "name": o["table"]}} for o in objects[:1]]
        (self.directory / "tables.json").write_text(json.dumps({"nftables": names}))
        listing = [{"metainfo": {"version": "1.0.6"}}, *objects[1:]]
        (self.directory / "table.json").write_text(json.dumps({"nftables": listing}))

    def batches(self) -> list[list[dict[str, Any]]]:
        log = self.directory / "nft.log"
        text = log.read_text() if log.exists() else ""
        return [json.loads(line)["nftables"] for line in text.splitlines() if line.startswith("{")]

    def calls(self) -> list[str]:
        log = self.directory / "nft.log"
        return [line[6:] for line in log.read_text().splitlines() if line.startswith("ARGS: ")]


@pytest.fixture
def nft(tmp_path: Path) -> FakeNft:
    (tmp_path / "bin").mkdir()
    return FakeNft(tmp_path / "bin")


def fake_proc(root: Path, *, force_forwarding: bool = True, on: tuple[str, ...] = ()) -> Path:
    for version in (4, 6):
        for name in INTERFACES:
            conf = root / f"ipv{version}" / "conf" / name
            conf.mkdir(parents=True)
            value = "1" if f"ipv{version}/{name}" in on else "0"
            (conf / "forwarding").write_text(value + "\n")
            if version == 6 and force_forwarding:
                (conf / "force_forwarding").write_text("0\n")
    return root


def switches(root: Path) -> dict[str, str]:
    found = {}
    for path in sorted(root.glob("ipv*/conf/*/*")):
        found[str(path.relative_to(root))] = path.read_text().strip()
    return found


def rules(batch: list[dict[str, Any]], chain: str = "forward") -> list[list[dict[str, Any]]]:
    """The expressions of the rules a batch adds to ``chain``, minus the family match."""
    found = []
    for command in batch:
        rule = command.get("add", {}).get("rule")
        if rule is not None and rule["chain"] == chain:
            found.append(
                [
                    e
                    for e in rule["expr"]
                    if e.get("match", {}).get("left") != {"meta": {"key": "nfproto"}}
                ]
            )
    return found


def forwarding(nft: FakeNft, root: Path, **kwargs: Any) -> Any:
    kwargs.setdefault("backend", MemoryNetBackend(interface="eth0"))
    return server_forwarding(
        "sudp0",
        NETWORKS[:1],
        nftables=Nftables(str(nft.path)),
        ip_forwarding=IPForwarding(root),
        **kwargs,
    )


async def test_switches_on_inside_and_restored_after_with_the_table_made_and_deleted(
    nft: FakeNft, tmp_path: Path
) -> None:
    root = fake_proc(tmp_path / "proc")
    before = switches(root)
    async with forwarding(nft, root) as state:
        assert state.egress == {4: "eth0"}  # the default route's interface
        assert state.table == table_name("sudp0") == "trio-sudp-sudp0"
        on = {k for k, v in switches(root).items() if v == "1"}
        assert on == {"ipv4/conf/sudp0/forwarding", "ipv4/conf/eth0/forwarding"}
        (created,) = nft.batches()
    assert switches(root) == before
    _, deleted = nft.batches()
    assert deleted == [
        {"add": {"table": {"family": "inet", "name": "trio-sudp-sudp0"}}},
        {"delete": {"table": {"family": "inet", "name": "trio-sudp-sudp0"}}},
    ]
    assert created[:2] == deleted
    sets = [c["add"]["set"] for c in created if "set" in c.get("add", {})]
    assert sets == [
        {
            "family": "inet",
            "table": "trio-sudp-sudp0",
            "name": "restore-ipv4-forwarding",
            "type": "ifname",
            "elem": ["eth0", "sudp0"],
        }
    ]


@pytest.mark.parametrize("how", ["error", "cancel"])
async def test_undone_on_error_and_cancellation(nft: FakeNft, tmp_path: Path, how: str) -> None:
    root = fake_proc(tmp_path / "proc")
    before = switches(root)
    with trio.CancelScope() as scope:
        try:
            async with forwarding(nft, root):
                assert switches(root) != before
                if how == "cancel":
                    scope.cancel()
                    await trio.sleep_forever()
                raise KeyError("boom")
        except KeyError:
            assert how == "error"
    assert switches(root) == before
    assert len(nft.batches()) == 2


async def test_a_switch_that_was_on_stays_on(nft: FakeNft, tmp_path: Path) -> None:
    root = fake_proc(tmp_path / "proc", on=("ipv4/eth0",))
    before = switches(root)
    async with forwarding(nft, root) as state:
        assert state.turned_on == {SysctlKey(4, "sudp0", "forwarding")}
    assert switches(root) == before
    assert before["ipv4/conf/eth0/forwarding"] == "1"


async def test_ipv6_per_interface_or_global_switch(nft: FakeNft, tmp_path: Path) -> None:
    backend = MemoryNetBackend(interface="eth0")
    backend.routes.add(Route("::/0", "fd00::1", "eth0"))
    root = fake_proc(tmp_path / "new")
    async with forwarding(nft, root, backend=backend) as state:
        pass
    assert state.turned_on == {
        SysctlKey(4, "sudp0", "forwarding"),
        SysctlKey(4, "eth0", "forwarding"),
    }  # IPv4 only: the tunnel has no IPv6 network here
    nftables = Nftables(str(nft.path))
    async with server_forwarding(
        "sudp0", NETWORKS, nftables=nftables, ip_forwarding=IPForwarding(root), backend=backend
    ) as state:
        assert SysctlKey(6, "sudp0", "force_forwarding") in state.turned_on
        assert SysctlKey(6, "eth0", "force_forwarding") in state.turned_on
        assert switches(root)["ipv6/conf/all/forwarding"] == "0"
    old = fake_proc(tmp_path / "old", force_forwarding=False)
    async with server_forwarding(
        "sudp0", NETWORKS, nftables=nftables, ip_forwarding=IPForwarding(old), backend=backend
    ) as state:
        assert SysctlKey(6, "all", "forwarding") in state.turned_on
        assert switches(old)["ipv6/conf/all/forwarding"] == "1"
        # Forward only what arrives on the tunnel or egress interface, as the
        # per-interface switch would.
        not_ours = {
            "op": "!=",
            "left": {"meta": {"key": "iifname"}},
            "right": {"set": ["eth0", "sudp0"]},
        }
        assert [{"match": not_ours}, {"counter": None}, {"drop": None}] in rules(nft.batches()[-1])
    assert [r for r in rules(nft.batches()[-3]) if {"match": not_ours} in r] == []
    assert switches(old)["ipv6/conf/all/forwarding"] == "0"


async def test_a_stale_table_is_replaced_and_its_switches_taken_over(
    nft: FakeNft, tmp_path: Path
) -> None:
    root = fake_proc(tmp_path / "proc", on=("ipv4/sudp0", "ipv4/eth0", "ipv4/eth9"))
    (root / "ipv4/conf/eth9").mkdir(exist_ok=True)
    (root / "ipv4/conf/eth9/forwarding").write_text("1\n")
    # A killed server's table: it had turned on sudp0 and eth9 (its egress then).
    stale = forwarding_ruleset(
        "sudp0", NETWORKS[:1], {4: "eth9"}, masquerade=True,
        turned_on=[SysctlKey(4, "sudp0", "forwarding"), SysctlKey(4, "eth9", "forwarding")],
    )  # fmt: skip
    sets = [{"set": c["add"]["set"]} for c in stale if "set" in c.get("add", {})]
    nft.set_tables([{"table": "trio-sudp-sudp0"}, *sets])
    async with forwarding(nft, root) as state:
        assert state.replaced_stale
        # sudp0 was off before the killed run, so it is turned off at the end;
        # eth0 was on (not ours); eth9 is not needed now and was turned off at once.
        assert state.turned_on == {SysctlKey(4, "sudp0", "forwarding")}
        assert switches(root)["ipv4/conf/eth9/forwarding"] == "0"
        created = nft.batches()[-1]
        assert created[0]["add"]["table"]["name"] == "trio-sudp-sudp0"
        assert created[1]["delete"]["table"]["name"] == "trio-sudp-sudp0"
    assert switches(root)["ipv4/conf/sudp0/forwarding"] == "0"
    assert switches(root)["ipv4/conf/eth0/forwarding"] == "1"
    assert nft.calls()[:2] == ["-j list tables inet", "-j list table inet trio-sudp-sudp0"]


async def test_nft_missing_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    root = fake_proc(tmp_path / "proc")
    before = switches(root)
    with pytest.raises(NftablesMissing) as caught:
        async with server_forwarding(
            "sudp0",
            NETWORKS,
            egress="eth0",
            nftables=Nftables(str(tmp_path / "no-such-nft")),
            ip_forwarding=IPForwarding(root),
        ):
            pass  # pragma: no cover
    assert isinstance(caught.value, ConfigError)
    message = str(caught.value)
    assert "\n" not in message and "nftables" in message
    assert describe_failure(caught.value) == (2, message)
    assert switches(root) == before


async def test_nft_found_on_path(nft: FakeNft, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(nft.directory))
    assert Nftables().program() == str(nft.path)
    monkeypatch.setenv("PATH", str(nft.directory / "empty"))
    with pytest.raises(NftablesMissing, match="install the nftables package"):
        Nftables().program()


async def test_no_default_route_names_the_fix(nft: FakeNft, tmp_path: Path) -> None:
    root = fake_proc(tmp_path / "proc")
    with pytest.raises(ForwardingError, match="no IPv6 default route") as caught:
        async with server_forwarding(
            "sudp0",
            NETWORKS,
            nftables=Nftables(str(nft.path)),
            ip_forwarding=IPForwarding(root),
            backend=MemoryNetBackend(interface="eth0"),
        ):
            pass  # pragma: no cover
    assert "name the egress interface" in str(caught.value)
    assert describe_failure(caught.value) == (1, str(caught.value))
    assert nft.batches() == []


async def test_egress_cannot_be_the_tunnel(nft: FakeNft, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is the tunnel"):
        async with forwarding(nft, fake_proc(tmp_path / "proc"), egress="sudp0"):
            pass  # pragma: no cover


class FailingSwitch(IPForwarding):
    """Turning ``fail`` on fails, as a write to /proc/sys can (EPERM, EINVAL)."""

    def __init__(self, root: Path, fail: SysctlKey) -> None:
        super().__init__(root)
        self.fail = fail

    async def write(self, key: SysctlKey, value: str) -> None:
        if key == self.fail and value == "1":
            raise ForwardingError(f"cannot set {key} = 1: Operation not permitted")
        await super().write(key, value)


async def test_a_failing_switch_undoes_the_others_and_the_table(
    nft: FakeNft, tmp_path: Path
) -> None:
    root = fake_proc(tmp_path / "proc")
    before = switches(root)
    failing = FailingSwitch(root, SysctlKey(4, "sudp0", "forwarding"))
    with pytest.raises(ForwardingError, match="Operation not permitted"):
        async with server_forwarding(
            "sudp0", NETWORKS[:1], egress="eth0", nftables=Nftables(str(nft.path)),
            ip_forwarding=failing,
        ):  # fmt: skip
            pass  # pragma: no cover
    assert switches(root) == before  # eth0 had been turned on first, and off again
    assert len(nft.batches()) == 2  # made, then deleted


def test_ruleset_masquerades_each_family_out_of_its_egress() -> None:
    commands = forwarding_ruleset("sudp0", NETWORKS, {4: "eth0", 6: "he0"}, masquerade=True)
    nat = rules(commands, "postrouting")
    assert [e[-1] for e in nat] == [{"masquerade": None}] * 2
    v4, v6 = nat
    assert v4[0]["match"]["left"] == {"payload": {"protocol": "ip", "field": "saddr"}}
    assert v4[0]["match"]["right"] == {"set": [{"prefix": {"addr": "10.0.0.0", "len": 24}}]}
    assert v4[1]["match"]["right"] == "eth0"
    assert v6[0]["match"]["right"] == {"set": [{"prefix": {"addr": "fd00:5d::", "len": 64}}]}
    assert v6[1]["match"]["right"] == "he0"
    routed = forwarding_ruleset("sudp0", NETWORKS, {4: "eth0"}, masquerade=False)
    assert rules(routed, "postrouting") == []
    iif, oif = ({"match": {"op": "==", "left": {"meta": {"key": k}}, "right": v}} for k, v in
                (("iifname", "sudp0"), ("oifname", "eth0")))  # fmt: skip
    back = [{"match": {"op": "==", "left": {"meta": {"key": k}}, "right": v}} for k, v in
            (("iifname", "eth0"), ("oifname", "sudp0"))]  # fmt: skip
    count = {"counter": None}
    # Routed: both ways. Masquerading: into the tunnel only what answers.
    assert rules(routed) == [[iif, oif, count, {"accept": None}], [*back, count, {"accept": None}]]
    established = {"match": {"op": "in", "left": {"ct": {"key": "state"}},
                             "right": ["established", "related"]}}  # fmt: skip
    assert rules(commands)[:3] == [
        [iif, oif, count, {"accept": None}],
        [*back, established, count, {"accept": None}],
        [*back, count, {"drop": None}],
    ]


_names = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=15)
_keys = st.builds(
    SysctlKey,
    st.sampled_from([4, 6]),
    _names,
    st.sampled_from(["forwarding", "force_forwarding"]),
).filter(lambda k: k.version == 6 or k.name == "forwarding")


@given(st.frozensets(_keys, max_size=8))
def test_the_table_records_the_switches_it_turned_on(keys: frozenset[SysctlKey]) -> None:
    commands = forwarding_ruleset("sudp0", NETWORKS, {4: "eth0"}, masquerade=True, turned_on=keys)
    listed = [{"set": c["add"]["set"]} for c in commands if "set" in c.get("add", {})]
    assert _recorded([{"table": {"name": "x"}}, *listed]) == keys


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(st.lists(st.dictionaries(st.sampled_from(["set", "table", "name", "elem"]), _json)))
def test_reading_a_table_never_fails_on_odd_listings(objects: list[dict[str, Any]]) -> None:
    assert isinstance(_recorded(objects), frozenset)
