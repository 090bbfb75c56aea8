"""The server's route table: longest-prefix match, source filtering, per-packet decisions."""

from __future__ import annotations

import ipaddress
import json
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_sudp.protocol.errors import ConfigError
from trio_sudp.vpn.packet import validate
from trio_sudp.vpn.routing import LOCAL, RouteDrop, RouteTable
from vectors import VECTORS_DIR

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def mk4(src: str, dst: str, size: int = 60, *, df: bool = True) -> bytes:
    header = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, size, 7, 0x4000 if df else 0, 64, 17, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip
    return header + bytes(size - 20)


def mk6(src: str, dst: str, size: int = 80) -> bytes:
    return struct.pack(
        ">IHBB16s16s", 0x60000000, size - 40, 17, 64,
        socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst),
    ) + bytes(size - 40)  # fmt: skip


def mk(src: str, dst: str, size: int | None = None) -> bytes:
    if ":" in src:
        return mk6(src, dst, 80 if size is None else size)
    return mk4(src, dst, 60 if size is None else size)


@pytest.fixture
def table() -> RouteTable:
    return RouteTable.from_config(
        ["10.0.0.1/24", "fd00::1/64"],
        {
            1: ["10.0.0.2", "fd00::2"],
            2: ["10.0.0.3", "192.168.7.0/24", "fd00::3", "2001:db8:7::/48"],
            3: ["10.0.0.4"],
        },
        mtu=1400,
    )


# -- decisions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "src", "dst", "decision"),
    [
        (1, "10.0.0.2", "10.0.0.1", LOCAL),  # to the server itself
        (1, "10.0.0.2", "10.0.0.77", LOCAL),  # tunnel network, no client there
        (1, "10.0.0.2", "8.8.8.8", LOCAL),  # gateway: the kernel forwards or refuses
        (1, "10.0.0.2", "10.0.0.3", 2),  # client to client
        (1, "10.0.0.2", "192.168.7.200", 2),  # into a client's extra prefix
        (2, "192.168.7.9", "10.0.0.2", 1),  # from a client's extra prefix
        (3, "10.0.0.4", "10.0.0.3", 2),
        (1, "10.0.0.3", "10.0.0.4", RouteDrop.SPOOFED_SOURCE),  # peer 2's address
        (1, "10.0.0.1", "10.0.0.4", RouteDrop.SPOOFED_SOURCE),  # the server's address
        (1, "10.0.0.99", "10.0.0.4", RouteDrop.SPOOFED_SOURCE),  # unassigned
        (1, "1.2.3.4", "10.0.0.4", RouteDrop.SPOOFED_SOURCE),
        (3, "192.168.7.9", "10.0.0.1", RouteDrop.SPOOFED_SOURCE),
        (9, "10.0.0.2", "10.0.0.1", RouteDrop.SPOOFED_SOURCE),  # unknown peer
        (LOCAL, "10.0.0.1", "10.0.0.2", RouteDrop.SPOOFED_SOURCE),  # not a client
        (2, "10.0.0.3", "192.168.7.1", RouteDrop.HAIRPIN),
        (1, "10.0.0.2", "10.0.0.2", RouteDrop.HAIRPIN),
        (1, "fd00::2", "fd00::1", LOCAL),
        (1, "fd00::2", "fd00::abcd", LOCAL),
        (1, "fd00::2", "2001:db8::1", LOCAL),
        (1, "fd00::2", "fd00::3", 2),
        (1, "fd00::2", "2001:db8:7:1::1", 2),
        (2, "2001:db8:7:ffff::9", "fd00::2", 1),
        (1, "fd00::3", "fd00::1", RouteDrop.SPOOFED_SOURCE),
        (3, "fd00::4", "fd00::1", RouteDrop.SPOOFED_SOURCE),  # peer 3 has no IPv6
        (1, "::ffff:10.0.0.2", "fd00::1", RouteDrop.SPOOFED_SOURCE),
    ],
)
def test_route_from_peer(table: RouteTable, peer: int, src: str, dst: str, decision: int) -> None:
    assert table.route_from_peer(peer, mk(src, dst)) == decision


@pytest.mark.parametrize(
    ("dst", "decision"),
    [
        ("10.0.0.2", 1),
        ("10.0.0.3", 2),
        ("192.168.7.4", 2),
        ("10.0.0.1", RouteDrop.NO_ROUTE),
        ("10.0.0.50", RouteDrop.NO_ROUTE),
        ("8.8.8.8", RouteDrop.NO_ROUTE),
        ("fd00::2", 1),
        ("2001:db8:7::1", 2),
        ("fd00::1", RouteDrop.NO_ROUTE),
        ("2001:db8:8::1", RouteDrop.NO_ROUTE),
    ],
)
def test_route_from_tun(table: RouteTable, dst: str, decision: int) -> None:
    src = "fd00::1" if ":" in dst else "10.0.0.1"
    assert table.route_from_tun(mk(src, dst)) == decision


def test_without_gateway_unrouted_destinations_are_dropped() -> None:
    table = RouteTable.from_config(["10.0.0.1/24"], {1: ["10.0.0.2"]}, gateway=False)
    assert table.route_from_peer(1, mk4("10.0.0.2", "8.8.8.8")) == RouteDrop.NO_ROUTE
    assert table.route_from_peer(1, mk4("10.0.0.2", "10.0.0.9")) == LOCAL
    assert table.route_from_peer(1, mk6("fd00::2", "fd00::1")) == RouteDrop.SPOOFED_SOURCE


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x45" * 19,
        mk4("10.0.0.2", "10.0.0.3")[:-1],
        mk4("10.0.0.2", "10.0.0.3") + b"\0",
        b"\x44" + mk4("10.0.0.2", "10.0.0.3")[1:],
        b"\x4f" + mk4("10.0.0.2", "10.0.0.3", 40)[1:],
        mk6("fd00::2", "fd00::3")[:-1],
        mk6("fd00::2", "fd00::3")[:39],
        b"\x50" + mk4("10.0.0.2", "10.0.0.3")[1:],
    ],
)
def test_malformed(table: RouteTable, packet: bytes) -> None:
    assert table.route_from_peer(1, packet) == RouteDrop.MALFORMED
    assert table.route_from_tun(packet) == RouteDrop.MALFORMED


def test_too_big(table: RouteTable) -> None:
    assert table.route_from_peer(1, mk4("10.0.0.2", "10.0.0.3", 1400)) == 2
    big = mk4("10.0.0.2", "10.0.0.3", 1401)
    assert table.route_from_peer(1, big) == RouteDrop.TOO_BIG
    assert table.route_from_peer(1, mk4("10.0.0.2", "10.0.0.1", 1401)) == RouteDrop.TOO_BIG
    assert table.route_from_tun(mk4("10.0.0.1", "10.0.0.3", 1401)) == RouteDrop.TOO_BIG
    # Spoofing is reported before size: no ICMP is due to a spoofed source.
    assert table.route_from_peer(3, big) == RouteDrop.SPOOFED_SOURCE
    reply = table.too_big_reply(big)
    assert reply is not None
    assert validate(reply) is None
    assert reply[12:16] == socket.inet_aton("10.0.0.1")
    assert reply[16:20] == socket.inet_aton("10.0.0.2")
    assert reply[20:22] == b"\x03\x04"
    assert int.from_bytes(reply[26:28], "big") == 1400
    # The reply itself routes back to the sender as a packet from the server.
    assert table.route_from_tun(reply) == 1
    big6 = mk6("fd00::2", "fd00::3", 1500)
    assert table.route_from_peer(1, big6) == RouteDrop.TOO_BIG
    reply6 = table.too_big_reply(big6)
    assert reply6 is not None
    assert reply6[8:24] == ipaddress.IPv6Address("fd00::1").packed
    assert reply6[24:40] == ipaddress.IPv6Address("fd00::2").packed
    assert table.route_from_tun(reply6) == 1
    assert table.too_big_reply(mk4("10.0.0.2", "10.0.0.3", 1401, df=False)) is None
    assert table.too_big_reply(mk4("10.0.0.2", "10.0.0.3", 1400)) is None


def test_too_big_reply_needs_a_server_address_of_that_family() -> None:
    table = RouteTable(["10.0.0.1/24"], mtu=1280)
    assert table.too_big_reply(mk6("fd00::2", "fd00::3", 1300)) is None
    assert table.too_big_reply(mk4("10.0.0.2", "10.0.0.3", 1300)) is not None
    assert RouteTable(["10.0.0.1/24"]).too_big_reply(mk4("10.0.0.2", "10.0.0.3", 1300)) is None


def test_no_mtu_means_no_size_check() -> None:
    table = RouteTable.from_config(["10.0.0.1/24"], {1: ["10.0.0.2"], 2: ["10.0.0.3"]})
    assert table.mtu is None
    assert table.route_from_peer(1, mk4("10.0.0.2", "10.0.0.3", 9000)) == 2


def test_drop_labels() -> None:
    assert RouteDrop.SPOOFED_SOURCE.label == "spoofed_source"
    assert RouteDrop(-3) is RouteDrop.NO_ROUTE
    assert all(member < 0 for member in RouteDrop)


# -- lookups and the source filter --------------------------------------------------


def test_lookup_and_may_send(table: RouteTable) -> None:
    assert table.lookup("10.0.0.2") == 1
    assert table.lookup(b"\x0a\x00\x00\x03") == 2
    assert table.lookup(ipaddress.IPv4Address("192.168.7.255")) == 2
    assert table.lookup("10.0.0.1") == LOCAL
    assert table.lookup("10.0.0.200") == LOCAL
    assert table.lookup("11.0.0.1") is None
    assert table.lookup("2001:db8:7::") == 2
    assert table.lookup("2001:db9::") is None
    assert table.may_send(2, "192.168.7.1")
    assert table.may_send(2, "fd00::3")
    assert not table.may_send(1, "192.168.7.1")
    assert not table.may_send(LOCAL, "10.0.0.1")
    assert not table.may_send(1, "10.0.0.99")


def test_inspection(table: RouteTable) -> None:
    assert table.mtu == 1400
    assert [str(i) for i in table.local] == ["10.0.0.1/24", "fd00::1/64"]
    assert table.peers[3] == (ipaddress.ip_network("10.0.0.4/32"),)
    assert set(table.peers) == {1, 2, 3}


def test_from_tunelo_vector() -> None:
    path = VECTORS_DIR / "tunelo" / "server.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    config = json.loads(path.read_text())
    table = RouteTable.from_tunelo(config["utun_vaddr"], config["mappings"], mtu=1400)
    assert table.lookup("10.0.0.2") == 1
    assert table.route_from_tun(mk4("10.0.0.1", "10.0.0.2")) == 1
    assert table.route_from_peer(1, mk4("10.0.0.2", "10.0.0.1")) == LOCAL


def test_from_tunelo_several_addresses_per_peer() -> None:
    table = RouteTable.from_tunelo("10.0.0.1/24", {"10.0.0.2": 1, "10.0.0.5": 1, "10.0.0.3": 2})
    assert table.peers[1] == (
        ipaddress.ip_network("10.0.0.2/32"),
        ipaddress.ip_network("10.0.0.5/32"),
    )
    assert table.route_from_peer(1, mk4("10.0.0.5", "10.0.0.3")) == 2


# -- configuration errors -----------------------------------------------------------


@pytest.mark.parametrize(
    ("peers", "match"),
    [
        (
            {1: ["10.0.0.2"], 2: ["10.0.0.2"]},
            r"10\.0\.0\.2/32 of peer 2 overlaps 10\.0\.0\.2/32 of peer 1",
        ),
        ({1: ["10.0.0.5"], 2: ["10.0.0.4/30"]}, r"10\.0\.0\.4/30 of peer 2 overlaps .*peer 1"),
        (
            {1: ["10.0.0.4/30"], 2: ["10.0.0.6"]},
            r"10\.0\.0\.6/32 of peer 2 overlaps 10\.0\.0\.4/30 of peer 1",
        ),
        ({1: ["192.168.0.0/16"], 2: ["192.168.7.0/24"]}, "of peer 2 overlaps .* of peer 1"),
        ({1: ["10.0.0.1"]}, "10.0.0.1/32 of peer 1 overlaps 10.0.0.1/32 of the server"),
        ({1: ["10.0.0.0/25"]}, "of the server's own address"),
        ({1: ["0.0.0.0/0"]}, "of the server's own address"),
        ({1: ["fd00::/8"]}, "fd00::1/128 of the server's own address"),
        ({1: ["fd00::3"], 2: ["fd00::2/127"]}, "peer 2 overlaps fd00::3/128 of peer 1"),
        ({1: ["10.0.0.5/24"]}, "host bits set"),
        ({1: ["not an address"]}, "not an IP address or prefix"),
        ({0: ["10.0.0.2"]}, "not in 1..65534"),
        ({65535: ["10.0.0.2"]}, "not in 1..65534"),
        ({True: ["10.0.0.2"]}, "not in 1..65534"),
    ],
)
def test_config_errors(peers: dict[int, list[str]], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RouteTable.from_config(["10.0.0.1/24", "fd00::1/64"], peers)


@pytest.mark.parametrize("local", ["10.0.0.0/24", "fd00::/64", "10.0.0.1/33", "nonsense"])
def test_bad_local_networks(local: str) -> None:
    with pytest.raises(ConfigError):
        RouteTable([local])


def test_point_to_point_local_networks_are_fine() -> None:
    assert RouteTable(["10.0.0.0/31"]).lookup("10.0.0.0") == LOCAL
    assert RouteTable(["10.0.0.7/32"]).lookup("10.0.0.7") == LOCAL


def test_same_peer_may_nest_and_repeat_prefixes() -> None:
    table = RouteTable(["10.0.0.1/24"])
    table.add_peer(1, ["172.16.0.0/16", "172.16.3.0/24", "172.16.3.9", "172.16.3.9"])
    assert table.peers[1] == tuple(
        ipaddress.ip_network(x) for x in ["172.16.0.0/16", "172.16.3.0/24", "172.16.3.9/32"]
    )
    assert table.lookup("172.16.3.9") == 1
    table.add_peer(1, ["172.16.3.9"])
    assert len(table.peers[1]) == 3


def test_failed_add_changes_nothing() -> None:
    table = RouteTable.from_config(["10.0.0.1/24"], {1: ["10.0.0.2"]})
    with pytest.raises(ConfigError):
        table.add_peer(2, ["10.0.0.3", "10.0.0.2"])
    assert table.lookup("10.0.0.3") == LOCAL
    assert set(table.peers) == {1}


def test_set_and_remove_peer_update_lookups_and_caches() -> None:
    table = RouteTable.from_config(["10.0.0.1/24"], {1: ["10.0.0.2", "172.16.0.0/16"]})
    assert table.lookup("172.16.5.5") == 1  # now cached
    assert table.lookup("172.17.0.1") is None  # a cached miss
    table.set_peer(1, ["10.0.0.2", "172.17.0.0/16"])
    assert table.lookup("172.16.5.5") is None
    assert table.lookup("172.17.0.1") == 1
    table.add_peer(2, ["172.16.0.0/16"])
    assert table.lookup("172.16.5.5") == 2
    # set_peer may keep a peer's own prefixes (no overlap with itself).
    table.set_peer(2, ["172.16.0.0/16", "172.16.9.0/24"])
    table.remove_peer(2)
    assert table.lookup("172.16.5.5") is None
    assert table.route_from_peer(2, mk4("172.16.5.5", "10.0.0.2")) == RouteDrop.SPOOFED_SOURCE
    table.remove_peer(2)  # idempotent
    table.remove_peer(1)
    assert table.peers == {}
    assert table.lookup("10.0.0.2") == LOCAL


def test_cache_stays_bounded() -> None:
    table = RouteTable.from_config(["10.0.0.1/24"], {1: ["10.0.0.2"], 2: ["172.16.0.0/12"]})
    for i in range(10_000):
        address = (0xAC100000 + i * 977).to_bytes(4, "big")
        expected = (
            2 if ipaddress.IPv4Address(address) in ipaddress.ip_network("172.16.0.0/12") else None
        )
        assert table.lookup(address) == expected
    assert len(table._v4.cache) <= 4096


def test_many_host_routes() -> None:
    base = int(ipaddress.IPv4Address("10.1.0.0"))
    peers = {p: [str(ipaddress.IPv4Address(base + p))] for p in range(1, 20_001)}
    table = RouteTable.from_config(["10.0.0.1/24"], peers)
    assert table.lookup(str(ipaddress.IPv4Address(base + 12345))) == 12345
    with pytest.raises(ConfigError, match=r"overlaps 10\.1\.0\.1/32 of peer 1"):
        table.add_peer(20_001, ["10.1.0.0/24"])


# -- agreement with a naive reference ------------------------------------------------


class Reference:
    """A route table as a plain list, searched with ``ipaddress`` containment."""

    def __init__(self, local: list[str], *, mtu: int, gateway: bool) -> None:
        self.entries: list[tuple[Net, int, bool]] = []  # (prefix, owner, is a claim)
        for text in local:
            interface = ipaddress.ip_interface(text)
            self.entries.append((interface.network, LOCAL, False))
            self.entries.append((ipaddress.ip_network(interface.ip), LOCAL, True))
        self.mtu = mtu
        self.gateway = gateway

    def conflicts(self, peer: int, net: Net) -> bool:
        return any(
            claim and owner != peer and net.version == other.version and net.overlaps(other)
            for other, owner, claim in self.entries
        )

    def add(self, peer: int, net: Net) -> None:
        self.entries.append((net, peer, True))

    def remove(self, peer: int) -> None:
        self.entries = [e for e in self.entries if e[1] != peer]

    def lookup(self, address: Address) -> int | None:
        best: tuple[int, int] | None = None
        for net, owner, _ in self.entries:
            matches = net.version == address.version and address in net
            if matches and (best is None or net.prefixlen > best[0]):
                best = (net.prefixlen, owner)
        return None if best is None else best[1]

    def from_peer(self, peer: int, src: Address, dst: Address, size: int) -> int:
        if self.lookup(src) != peer:
            return RouteDrop.SPOOFED_SOURCE
        target = self.lookup(dst)
        if target is None:
            if not self.gateway:
                return RouteDrop.NO_ROUTE
            target = LOCAL
        if size > self.mtu:
            return RouteDrop.TOO_BIG
        return RouteDrop.HAIRPIN if target == peer else target

    def from_tun(self, dst: Address, size: int) -> int:
        target = self.lookup(dst)
        if target is None or target == LOCAL:
            return RouteDrop.NO_ROUTE
        return RouteDrop.TOO_BIG if size > self.mtu else target


# Small address spaces so that prefixes collide often.
V4_BASE = int(ipaddress.IPv4Address("10.0.0.0"))
V6_BASE = int(ipaddress.IPv6Address("fd00::"))


@st.composite
def addresses(draw: st.DrawFn) -> Address:
    if draw(st.booleans()):
        return ipaddress.IPv4Address(
            V4_BASE + draw(st.integers(0, 1023)) * draw(st.sampled_from([1, 16, 4096]))
        )
    return ipaddress.IPv6Address(
        V6_BASE + draw(st.integers(0, 1023)) * draw(st.sampled_from([1, 1 << 64]))
    )


@st.composite
def prefixes(draw: st.DrawFn) -> Net:
    address = draw(addresses())
    bits = address.max_prefixlen
    length = draw(st.one_of(st.just(bits), st.integers(bits - 24, bits), st.integers(0, bits)))
    return ipaddress.ip_network((address, length), strict=False)


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 6), st.lists(prefixes(), min_size=1, max_size=3)),
        st.tuples(st.just("remove"), st.integers(1, 6), st.just([])),
        st.tuples(st.just("set"), st.integers(1, 6), st.lists(prefixes(), max_size=3)),
    ),
    max_size=15,
)


def draw_address(data: st.DataObject, reference: Reference) -> Address:
    """Mostly an address inside some configured prefix, so that routes get exercised."""
    if reference.entries and data.draw(st.integers(0, 3)) != 0:
        net = data.draw(st.sampled_from(reference.entries))[0]
        offset = data.draw(st.integers(0, net.num_addresses - 1))
        return ipaddress.ip_address(int(net.network_address) + offset)
    return data.draw(addresses())


@given(operations=OPERATIONS, gateway=st.booleans(), data=st.data())
def test_random_tables_agree_with_naive_lpm(
    operations: list[tuple[str, int, list[Net]]], gateway: bool, data: st.DataObject
) -> None:
    local = ["10.0.1.1/24", "fd00::100:1/120"]
    table = RouteTable(local, mtu=1400, gateway=gateway)
    reference = Reference(local, mtu=1400, gateway=gateway)
    for op, peer, nets in operations:
        if op == "remove":
            table.remove_peer(peer)
            reference.remove(peer)
            continue
        others = Reference([], mtu=1400, gateway=gateway)
        others.entries = [e for e in reference.entries if not (op == "set" and e[1] == peer)]
        change = table.add_peer if op == "add" else table.set_peer
        if any(others.conflicts(peer, net) for net in nets):
            with pytest.raises(ConfigError, match=f"of peer {peer} overlaps"):
                change(peer, nets)
            continue
        change(peer, nets)
        if op == "set":
            reference.remove(peer)
        for net in nets:
            reference.add(peer, net)
        # Lookups between changes catch stale caches.
        for _ in range(3):
            address = draw_address(data, reference)
            assert table.lookup(address) == reference.lookup(address)
    for _ in range(15):
        src = draw_address(data, reference)
        dst = draw_address(data, reference)
        owner = reference.lookup(src)
        # A random claimant, or the real owner of the source (a client, not the server).
        peer = data.draw(st.integers(1, 6)) if not owner or data.draw(st.booleans()) else owner
        size = data.draw(st.sampled_from([1300, 1400, 1401, 1500]))
        assert table.lookup(src) == owner
        assert table.may_send(peer, src) == (owner == peer)
        if src.version != dst.version:
            continue
        packet = mk(str(src), str(dst), size)
        assert table.route_from_peer(peer, packet) == reference.from_peer(peer, src, dst, size)
        assert table.route_from_tun(packet) == reference.from_tun(dst, size)


@given(st.integers(0, 65535), st.binary(max_size=100))
def test_random_bytes_never_raise(peer: int, data: bytes) -> None:
    table = RouteTable.from_config(["10.0.0.1/24", "fd00::1/64"], {1: ["10.0.0.2", "fd00::2"]})
    decision = table.route_from_peer(peer, data)
    assert decision in (LOCAL, 1) or RouteDrop(decision)
    tun = table.route_from_tun(data)
    assert tun == 1 or RouteDrop(tun)
    if validate(data) is not None:
        assert decision == tun == RouteDrop.MALFORMED
