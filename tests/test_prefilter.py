"""The server's prefilter: its rules, the Python check, and the kernel socket filter.

The Python check is compared with an oracle written out from SPEC §1-§2; the kernel
filter is compared with the Python check by sending datagrams over loopback to a
filtered socket and seeing which arrive. What a UDP socket filter sees (offsets,
length, coalesced GRO buffers) is tested directly, with hand-written programs.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import sys
from collections import Counter
from collections.abc import Iterator, Sequence

import pytest
import trio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcap import read_udp
from runtime_helpers import needs_ipv6
from trio_sudp.protocol import Kind, PrivateKey, Version
from trio_sudp.protocol.crypto import make_header_tagger
from trio_sudp.protocol.datapath import encode_data
from trio_sudp.protocol.errors import DropReason
from trio_sudp.protocol.wire import encode_control, encode_handshake
from trio_sudp.runtime.prefilter import (
    PrefilterRules,
    SocketFilter,
    attach_filter,
    build_server_filter,
    detach_filter,
    prefilter_reason,
    replace_filter,
)
from trio_sudp.runtime.transport import Address, split_segments
from trio_sudp.runtime.udp import UDPNetwork, UDPTransport
from vectors import load, require_vectors

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux socket filter")

VERSIONS = (2, 3)
VADDR_MIN, VADDR_MAX = 5, 300
RULES = PrefilterRules.for_clients(VERSIONS, [VADDR_MIN, 17, VADDR_MAX])
HEADER = struct.Struct(">BBHHHIQ")
#: SPEC §2, as literal numbers: the body of a handshake / control, the least data body.
EXACT_LEN = {(2, 1): 133, (3, 1): 153, (2, 3): 80, (3, 3): 100}
DATA_MIN_LEN = {2: 32, 3: 52}
#: The largest UDP payload over IPv4.
UDP_MAX = 65507


def reference_reason(
    datagram: bytes,
    versions: Sequence[int] = VERSIONS,
    vaddrs: tuple[int, int] = (VADDR_MIN, VADDR_MAX),
    max_size: int = 2048,
) -> DropReason | None:
    """The oracle: SPEC §1-§2's header rules for a datagram to the server, plainly."""
    if len(datagram) < 20:
        return DropReason.DATAGRAM_TOO_SHORT
    if len(datagram) > max_size:
        return DropReason.DATAGRAM_TOO_LONG
    ver, kind, length, src, dst = struct.unpack_from(">BBHHH", datagram)
    if ver not in versions:
        return DropReason.BAD_VERSION
    if kind not in (1, 2, 3, 4):
        return DropReason.BAD_KIND
    if kind == 2:  # a ServerHandshake never comes from a client
        return DropReason.UNEXPECTED_KIND
    if 20 + length > len(datagram):
        return DropReason.LEN_EXCEEDS_DATAGRAM
    if kind == 4:
        if length < DATA_MIN_LEN[ver]:
            return DropReason.BODY_TOO_SHORT
    elif length != EXACT_LEN[ver, kind]:
        short = length < EXACT_LEN[ver, kind]
        return DropReason.BODY_TOO_SHORT if short else DropReason.BODY_TOO_LONG
    if dst != 0:
        return DropReason.WRONG_VADDR
    if not vaddrs[0] <= src <= vaddrs[1]:
        return DropReason.UNKNOWN_PEER
    return None


def datagram(ver: int, kind: int, length: int, src: int, dst: int = 0, extra: int = 0) -> bytes:
    return HEADER.pack(ver, kind, length, src, dst, 7, 1234) + b"\xa5" * (length + extra)


@st.composite
def valid_datagrams(draw: st.DrawFn) -> bytes:
    ver = draw(st.sampled_from(VERSIONS))
    kind = draw(st.sampled_from([1, 3, 4]))
    exact = EXACT_LEN.get((ver, kind))
    length = exact or draw(st.integers(DATA_MIN_LEN[ver], 2028))
    extra = draw(st.integers(0, 2028 - length) | st.just(0))  # Go ignores bytes after len
    src = draw(st.integers(VADDR_MIN, VADDR_MAX))
    return datagram(ver, kind, length, src, 0, extra)


@st.composite
def mutated_datagrams(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_datagrams()))
    how = draw(st.sampled_from(["byte", "field", "truncate", "extend"]))
    if how == "byte":
        data[draw(st.integers(0, 7))] = draw(st.integers(0, 255))
    elif how == "field":
        offset = draw(st.sampled_from([2, 4, 6]))
        data[offset : offset + 2] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
    elif how == "truncate":
        del data[draw(st.integers(0, len(data))) :]
    else:
        data += draw(st.binary(min_size=1, max_size=80))
    return bytes(data)


datagrams = st.one_of(
    st.binary(max_size=2100), valid_datagrams(), mutated_datagrams(), st.binary(min_size=2040)
)


# ------------------------------------------------------------------- rules


def test_rules_from_configured_clients() -> None:
    assert (RULES.vaddr_min, RULES.vaddr_max) == (VADDR_MIN, VADDR_MAX)
    assert RULES.versions == {Version.V2, Version.V3}
    assert RULES.body_lengths()[Version.V3, Kind.CLIENT_HANDSHAKE] == (153, 153)
    assert RULES.body_lengths()[Version.V2, Kind.DATA] == (32, 0xFFFF)
    assert (Version.V2, Kind.SERVER_HANDSHAKE) not in RULES.body_lengths()
    nobody = PrefilterRules.for_clients(VERSIONS, [])
    assert prefilter_reason(datagram(2, 4, 40, 5), nobody) is DropReason.UNKNOWN_PEER
    only_v3 = PrefilterRules.for_clients([3], [5])
    assert prefilter_reason(datagram(2, 4, 40, 5), only_v3) is DropReason.BAD_VERSION
    assert prefilter_reason(datagram(3, 4, 52, 5), only_v3) is None


@pytest.mark.parametrize(
    ("versions", "low", "high"), [([2], 0, 5), ([2], 1, 65535), ([4], 1, 5), ([2, 1], 1, 5)]
)
def test_rules_refuse_what_no_server_has(versions: list[int], low: int, high: int) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - enum and range errors alike
        PrefilterRules(versions, low, high)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x03\x04" + bytes(17), DropReason.DATAGRAM_TOO_SHORT),
        (datagram(3, 4, 52, 5, extra=2048 - 72 + 1), DropReason.DATAGRAM_TOO_LONG),
        (datagram(4, 4, 52, 5), DropReason.BAD_VERSION),
        (datagram(3, 5, 52, 5), DropReason.BAD_KIND),
        (datagram(3, 0, 52, 5), DropReason.BAD_KIND),
        (datagram(3, 2, 153, 5), DropReason.UNEXPECTED_KIND),
        (datagram(3, 4, 52, 5)[:-1], DropReason.LEN_EXCEEDS_DATAGRAM),
        (datagram(3, 1, 152, 5, extra=1), DropReason.BODY_TOO_SHORT),
        (datagram(2, 3, 81, 5), DropReason.BODY_TOO_LONG),
        (datagram(3, 4, 51, 5, extra=10), DropReason.BODY_TOO_SHORT),
        (datagram(2, 4, 31, 5), DropReason.BODY_TOO_SHORT),
        (datagram(3, 4, 52, 5, dst=1), DropReason.WRONG_VADDR),
        (datagram(3, 4, 52, 0), DropReason.UNKNOWN_PEER),
        (datagram(3, 4, 52, 4), DropReason.UNKNOWN_PEER),
        (datagram(3, 4, 52, 301), DropReason.UNKNOWN_PEER),
        (datagram(3, 4, 52, 300, extra=1996 - 52), None),
        (datagram(2, 1, 133, 5, extra=9), None),
        (datagram(3, 3, 100, 17), None),
    ],
)
def test_prefilter_reason_names_the_first_failed_check(
    data: bytes, reason: DropReason | None
) -> None:
    assert prefilter_reason(data, RULES) is reason
    assert reference_reason(data) is reason


@settings(max_examples=600)
@given(datagrams)
def test_prefilter_reason_is_the_spec(data: bytes) -> None:
    assert prefilter_reason(data, RULES) is reference_reason(data)


@given(valid_datagrams())
def test_every_well_formed_datagram_passes(data: bytes) -> None:
    assert prefilter_reason(data, RULES) is None


@pytest.mark.parametrize("version", [Version.V2, Version.V3])
def test_what_trio_sudp_clients_send_passes(version: Version) -> None:
    key, tagger = (
        PrivateKey.generate(),
        make_header_tagger(version, b"k" * 20 if version == Version.V3 else None),
    )
    common = {"src": VADDR_MAX, "dst": 0, "epoch": 9, "time": 123, "tagger": tagger}
    point = b"\x04" + bytes(64)  # only its size matters here
    handshake = encode_handshake(
        version, Kind.CLIENT_HANDSHAKE, ephemeral_public=point, signer=key, **common
    )
    control = encode_control(version, flags=1, signer=key, **common)
    aead = AESGCM(bytes(32))
    data = [
        encode_data(version, payload=b"x" * n, aead=aead, nonce=bytes(12), **common)
        for n in (0, 1, 1400, 1996 if version == 2 else 1976)
    ]
    for message in [handshake, control, *data]:
        assert prefilter_reason(message, RULES) is None
    reply = encode_handshake(
        version, Kind.SERVER_HANDSHAKE, ephemeral_public=point, signer=key, **common
    )
    assert prefilter_reason(reply, RULES) is DropReason.UNEXPECTED_KIND


@pytest.mark.parametrize("version", [2, 3])
def test_real_go_sessions_pass_to_the_server_only(version: int) -> None:
    """Every datagram of a Go-to-Go capture to the server passes; none to the client."""
    records = read_udp(require_vectors() / load(version)["capture"]["file"])
    rules = PrefilterRules.for_clients([version], [1000])
    to_server = [r.payload for r in records if r.payload[6:8] == b"\0\0"]
    to_client = [r.payload for r in records if r.payload[6:8] != b"\0\0"]
    assert len(to_server) > 50
    assert len(to_client) > 50
    assert [prefilter_reason(p, rules) for p in to_server] == [None] * len(to_server)
    assert None not in {prefilter_reason(p, rules) for p in to_client}


# ------------------------------------------------- what a socket filter sees

# Hand-written classic BPF: (code, jt, jf, k).
LDH_ABS, LDB_ABS, LD_LEN, JEQ_K, JGT_K, RET_K = 0x28, 0x30, 0x80, 0x15, 0x25, 0x06
KEEP = (RET_K, 0, 0, 0xFFFFFFFF)
DROP = (RET_K, 0, 0, 0)
SOL_UDP, UDP_SEGMENT, UDP_GRO = 17, 103, 104


@contextlib.contextmanager
def udp_socket(family: int, host: str, *, v6only: bool = False) -> Iterator[socket.socket]:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        sock.bind((host, 0))
        yield sock
    finally:
        sock.close()


def drain(sock: socket.socket, until: bytes) -> list[tuple[bytes, int]]:
    """The buffers (and GRO segment sizes, 0 if none) that arrive before ``until``.

    Every test sends ``until`` last, a datagram its filter keeps: once it is read,
    whatever else the filter kept has been read too.
    """
    got: list[tuple[bytes, int]] = []
    while True:
        assert select.select([sock], [], [], 5)[0], "the last datagram never arrived"
        data, ancdata, _, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(4))
        if data == until:
            return got
        sizes = [struct.unpack("=i", d)[0] for _, kind, d in ancdata if kind == UDP_GRO]
        got.append((data, sizes[0] if sizes else 0))


FAMILIES = [
    pytest.param(socket.AF_INET, "127.0.0.1", "127.0.0.1", id="ipv4"),
    pytest.param(socket.AF_INET6, "::1", "::1", id="ipv6", marks=needs_ipv6),
    pytest.param(socket.AF_INET6, "::", "127.0.0.1", id="ipv4-on-dual-stack", marks=needs_ipv6),
]


@linux_only
@pytest.mark.parametrize(("family", "bind", "peer"), FAMILIES)
def test_filter_offset_0_is_the_udp_header_and_len_counts_it(
    family: int, bind: str, peer: str
) -> None:
    """Keep datagrams from one source port (UDP header bytes 0-1) of 8 + 100 bytes."""
    peer_family = socket.AF_INET if "." in peer else socket.AF_INET6
    with (
        udp_socket(family, bind) as receiver,
        udp_socket(peer_family, peer) as chosen,
        udp_socket(peer_family, peer) as other,
    ):
        port = chosen.getsockname()[1]
        program = SocketFilter(
            (
                (LDH_ABS, 0, 0, 0),  # UDP source port
                (JEQ_K, 0, 3, port),
                (LD_LEN, 0, 0, 0),
                (JEQ_K, 0, 1, 8 + 100),
                KEEP,
                DROP,
            )
        )
        assert attach_filter(receiver, program)
        address = (peer, receiver.getsockname()[1])
        for sender in (other, chosen):
            for size in (99, 100, 101):
                sender.sendto(bytes([size]) * size, address)
        chosen.sendto(b"\xee" * 100, address)
        assert drain(receiver, until=b"\xee" * 100) == [(bytes([100]) * 100, 0)]


def gso_send(sock: socket.socket, segments: Sequence[bytes], address: Address) -> None:
    cmsg = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", len(segments[0])))]
    sock.sendmsg([b"".join(segments)], cmsg, 0, address)


@linux_only
@pytest.mark.parametrize("gro", [True, False], ids=["gro", "no-gro"])
def test_with_gro_the_filter_runs_once_per_coalesced_buffer(gro: bool) -> None:
    """A GSO send of 10 x 1000 + 500 bytes: with UDP_GRO the filter sees one buffer,
    its first datagram's header and the length of the whole run; without, each."""
    segments = [bytes([i]) * 1000 for i in range(10)] + [b"\x09" * 500]
    # Keep a buffer longer than any one datagram; keep one whose first byte is 3.
    longer = SocketFilter(((LD_LEN, 0, 0, 0), (JGT_K, 0, 1, 8 + 2048), KEEP, DROP))
    first_is_3 = SocketFilter(((LDB_ABS, 0, 0, 8), (JEQ_K, 0, 1, 3), KEEP, DROP))
    last = b"\x03" * 3000  # one datagram both keep
    results = []
    for program in (longer, first_is_3):
        with udp_socket(socket.AF_INET, "127.0.0.1") as receiver:
            if gro:
                receiver.setsockopt(SOL_UDP, UDP_GRO, 1)
            assert attach_filter(receiver, program)
            with udp_socket(socket.AF_INET, "127.0.0.1") as sender:
                gso_send(sender, segments, receiver.getsockname())
                gso_send(sender, segments[3:], receiver.getsockname())
                sender.sendto(last, receiver.getsockname())
            results.append(drain(receiver, until=last))
    if gro:
        whole, rest = b"".join(segments), b"".join(segments[3:])
        assert results[0] == [(whole, 1000), (rest, 1000)]
        assert results[1] == [(rest, 1000)]  # judged by its first datagram, all kept
    else:
        assert results[0] == []
        assert (
            results[1] == [(segments[3], 0)] * 2
        )  # the 4th of the first run, the 1st of the second


# ---------------------------------------- the kernel filter against the check


@contextlib.contextmanager
def filtered_pair(
    program: SocketFilter, *, gro: bool
) -> Iterator[tuple[socket.socket, socket.socket]]:
    with (
        udp_socket(socket.AF_INET, "127.0.0.1") as receiver,
        udp_socket(socket.AF_INET, "127.0.0.1") as sender,
    ):
        if gro:
            receiver.setsockopt(SOL_UDP, UDP_GRO, 1)
        assert attach_filter(receiver, program)
        yield sender, receiver


def sentinel(n: int) -> bytes:
    """A datagram every rule set here passes, told apart by its body."""
    return datagram(3, 4, 52, VADDR_MIN) + n.to_bytes(8, "big")


def arrivals(
    sender: socket.socket, receiver: socket.socket, batch: list[bytes], n: int
) -> Counter[bytes]:
    """Send ``batch``, then a sentinel; what arrived before the sentinel did."""
    address = receiver.getsockname()
    for data in batch:
        sender.sendto(data, address)
    sender.sendto(sentinel(n), address)
    got: Counter[bytes] = Counter()
    while True:
        ready = select.select([receiver], [], [], 5)[0]
        assert ready, "the sentinel never arrived"
        data = receiver.recv(1 << 16)
        if data == sentinel(n):
            return got
        got[data] += 1


@linux_only
@pytest.mark.parametrize("coalesced", [False, True], ids=["plain", "gro"])
def test_kernel_filter_keeps_exactly_what_the_check_passes(coalesced: bool) -> None:
    """Random, well-formed and mutated datagrams over loopback to a filtered socket.

    A socket with UDP_GRO gets the ``coalesced`` filter, which has no upper size bound
    (single datagrams are never coalesced on loopback, so each is judged alone here).
    """
    program = build_server_filter(RULES, coalesced=coalesced)
    limit = UDP_MAX if coalesced else 2048
    counter = iter(range(1 << 30))
    with filtered_pair(program, gro=coalesced) as (sender, receiver):

        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(st.lists(datagrams, max_size=25))
        def check(batch: list[bytes]) -> None:
            expected = Counter(d for d in batch if reference_reason(d, max_size=limit) is None)
            assert arrivals(sender, receiver, batch, next(counter)) == expected

        check()


@linux_only
def test_kernel_filter_over_ipv6_and_dual_stack() -> None:
    program = build_server_filter(RULES)
    batch = [datagram(3, 4, 60, 9), datagram(4, 4, 60, 9), datagram(2, 1, 133, 301)]
    batch += [datagram(2, 3, 80, 5, extra=3), datagram(3, 3, 80, 5)]
    for family, bind, peer in [
        (socket.AF_INET6, "::1", "::1"),
        (socket.AF_INET6, "::", "127.0.0.1"),
    ]:
        if not socket.has_ipv6:
            pytest.skip("no IPv6")
        peer_family = socket.AF_INET if "." in peer else socket.AF_INET6
        with udp_socket(family, bind) as receiver, udp_socket(peer_family, peer) as sender:
            assert attach_filter(receiver, program)
            for data in [*batch, sentinel(0)]:
                sender.sendto(data, (peer, receiver.getsockname()[1]))
            assert [d for d, _ in drain(receiver, until=sentinel(0))] == [batch[0], batch[3]]


# ------------------------------------------------- attach, refuse, replace

#: A program the kernel's checker refuses: it does not end with a return.
INVALID = SocketFilter(((LDH_ABS, 0, 0, 0),))
#: Keeps only datagrams that start with 0xEE.
ONLY_EE = SocketFilter(((LDB_ABS, 0, 0, 8), (JEQ_K, 0, 1, 0xEE), KEEP, DROP))


@linux_only
def test_refused_filter_keeps_the_old_one_and_replace_removes_it() -> None:
    with filtered_pair(ONLY_EE, gro=False) as (sender, receiver):
        address = receiver.getsockname()

        def arrived(data: bytes, mark: bytes) -> bool:
            sender.sendto(data, address)
            sender.sendto(mark, address)
            return drain(receiver, until=mark) == [(data, 0)]

        assert not attach_filter(receiver, INVALID)
        assert not arrived(b"still filtered", b"\xee1")
        assert not replace_filter(receiver, INVALID)
        assert arrived(b"unfiltered", b"\xee2")
        assert not detach_filter(receiver)  # nothing left to remove
        assert replace_filter(receiver, ONLY_EE)
        assert not arrived(b"filtered again", b"\xee3")
        assert detach_filter(receiver)
        assert arrived(b"unfiltered again", b"\xee4")


def test_filter_code_is_struct_sock_filter() -> None:
    program = SocketFilter(((0x28, 1, 2, 0x01020304), KEEP))
    assert program.code == struct.pack("=HBBIHBBI", 0x28, 1, 2, 0x01020304, *KEEP)
    built = build_server_filter(RULES)
    assert built.instructions[-2:] == (DROP, KEEP)
    assert all(0 <= jt <= 255 and 0 <= jf <= 255 for _, jt, jf, _ in built.instructions)
    assert (
        len(build_server_filter(RULES, coalesced=True).instructions) == len(built.instructions) - 1
    )


# -------------------------------------------- the transport, GRO and GSO


def valid_run(count: int, size: int, start: int = 0) -> list[bytes]:
    """``count`` Data datagrams of ``size`` bytes, told apart by their last 8 bytes."""
    base = datagram(3, 4, size - 20, VADDR_MIN)[:-8]
    return [base + i.to_bytes(8, "big") for i in range(start, start + count)]


async def receive_until(transport: UDPTransport, last: bytes) -> tuple[list[bytes], int]:
    """The datagrams that arrive before ``last``, and how many buffers came coalesced."""
    got: list[bytes] = []
    coalesced = 0
    with trio.fail_after(5):
        while True:
            try:
                buffer, segment_size, _ = transport.recv_segments_nowait()
            except BlockingIOError:
                await transport.wait_readable()
                continue
            if buffer == last:
                return got, coalesced
            if segment_size:
                coalesced += 1
                got += split_segments(buffer, segment_size)
            else:
                got.append(buffer)


@linux_only
async def test_coalesced_runs_of_valid_datagrams_pass_the_kernel_filter() -> None:
    network = UDPNetwork()
    server, client = network.bind(("127.0.0.1", 0)), network.bind(("127.0.0.1", 0))
    try:
        if not (server.gro and client.max_segment_size):
            pytest.skip("no UDP GSO/GRO here")
        assert server.attach_prefilter(RULES)
        assert server.prefilter_in_kernel
        drops = server.kernel_drops()
        sent: list[bytes] = []
        for count, size in [(40, 1200), (30, 1400), (5, 200), (20, 2048)]:
            # Over 2048 bytes in all, and a shorter last datagram, as GSO allows.
            run = valid_run(count, size) + valid_run(1, size - 100, start=count)
            client.send_segments_nowait(run, server.local_address)
            sent += run
        client.send_nowait(sentinel(0), server.local_address)
        got, coalesced = await receive_until(server, sentinel(0))
        assert got == sent
        assert coalesced == 4  # the kernel really handed over coalesced buffers
        assert server.kernel_drops() == drops
    finally:
        server.close()
        client.close()


@linux_only
async def test_a_coalesced_run_is_judged_by_its_first_datagram() -> None:
    """A bad first datagram drops the whole run (one kernel drop); bad later ones
    reach userspace, where ``prefilter_reason`` is what refuses them."""
    network = UDPNetwork()
    server, client = network.bind(("127.0.0.1", 0)), network.bind(("127.0.0.1", 0))
    try:
        if not (server.gro and client.max_segment_size):
            pytest.skip("no UDP GSO/GRO here")
        assert server.attach_prefilter(RULES)
        drops = server.kernel_drops()
        assert drops is not None
        bad_first = valid_run(10, 500)
        bad_first[0] = b"\xff" + bad_first[0][1:]
        client.send_segments_nowait(bad_first, server.local_address)
        bad_later = valid_run(10, 500)
        bad_later[4] = b"\xff" + bad_later[4][1:]
        client.send_segments_nowait(bad_later, server.local_address)
        client.send_nowait(sentinel(0), server.local_address)
        got, _ = await receive_until(server, sentinel(0))
        assert got == bad_later
        assert server.kernel_drops() == drops + 1
        assert [prefilter_reason(d, RULES) for d in got].count(DropReason.BAD_VERSION) == 1
    finally:
        server.close()
        client.close()


@linux_only
async def test_attach_prefilter_again_applies_new_rules() -> None:
    network = UDPNetwork(gro=False)
    server, client = network.bind(("127.0.0.1", 0)), network.bind(("127.0.0.1", 0))
    try:
        newcomer = datagram(3, 4, 52, 400)
        assert server.attach_prefilter(RULES)
        for data in (newcomer, b"garbage" * 10, sentinel(1)):
            client.send_nowait(data, server.local_address)
        assert await receive_until(server, sentinel(1)) == ([], 0)
        assert server.kernel_drops() == 2
        assert server.attach_prefilter(PrefilterRules.for_clients(VERSIONS, [5, 400]))
        for data in (newcomer, b"garbage" * 10, sentinel(2)):
            client.send_nowait(data, server.local_address)
        assert await receive_until(server, sentinel(2)) == ([newcomer], 0)
        assert server.kernel_drops() == 3
    finally:
        server.close()
        client.close()


def test_prefilter_reason_accepts_any_buffer() -> None:
    data = datagram(3, 3, 100, 17)
    assert prefilter_reason(memoryview(data), RULES) is None
    assert prefilter_reason(bytearray(data), RULES) is None
