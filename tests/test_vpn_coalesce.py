"""TCP segments merged into GSO writes for a vnet-header TUN (vpn/coalesce.py).

The reference here is the kernel's side: ``resegment`` splits a GSO write the way
``tcp_gso_segment`` does (header copied, sequence advanced, PSH only on the last
segment, IPv4 identification incremented, checksums computed), so merging and
splitting again must give back exactly the packets that went in.
"""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sudp.testing.packets import tcp_segment, udp4
from trio_sudp.vpn import coalesce as coalesce_module
from trio_sudp.vpn.coalesce import MAX_SEGMENTS, PLAIN_HEADER, Write, coalesce, pure_coalesce
from trio_sudp.vpn.packet import internet_checksum

ACK, PSH, SYN, FIN = 0x10, 0x08, 0x02, 0x01
VNET = struct.Struct("=BBHHHH")


IMPLEMENTATIONS = [pytest.param(pure_coalesce, id="pure")]
if coalesce_module._offload is not None:
    IMPLEMENTATIONS.append(pytest.param(coalesce_module.native_coalesce, id="native"))


@pytest.fixture(params=IMPLEMENTATIONS, autouse=True, scope="module")
def implementation(request: pytest.FixtureRequest) -> Any:
    """Every test of this module runs against the pure merging and the compiled one."""
    global coalesce
    saved = coalesce
    coalesce = request.param
    yield request.param
    coalesce = saved


def resegment(write: Write) -> list[bytes]:
    """Split one write as the kernel does; check the header a GSO packet needs."""
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = VNET.unpack(write[0])
    data = b"".join(bytes(part) for part in write[1:])
    if gso_type == 0:
        assert bytes(write[0]) == PLAIN_HEADER
        return [data]
    v4 = data[0] >> 4 == 4
    ip = 20 if v4 else 40
    assert (flags, gso_type, csum_start, csum_offset) == (1, 1 if v4 else 4, ip, 16)
    assert hdr_len == ip + (data[ip + 12] >> 4) * 4
    if v4:
        assert struct.unpack_from("!H", data, 2)[0] == len(data)
        assert internet_checksum(data[:20]) == 0, "IPv4 header checksum"
    else:
        assert struct.unpack_from("!H", data, 4)[0] == len(data) - 40
    # NEEDS_CSUM: the kernel sums from csum_start over the rest, including the field
    # as written (the pseudo-header sum), and stores the complement there.
    tcp = data[ip:]
    stored = internet_checksum(tcp)
    expected = tcp_checksum(data[:ip], tcp[:16] + b"\0\0" + tcp[18:])
    assert stored == expected, "pseudo-header sum in the TCP checksum field"
    header, payload = data[:hdr_len], data[hdr_len:]
    assert len(payload) > gso_size
    chunks = [payload[i : i + gso_size] for i in range(0, len(payload), gso_size)]
    seq = struct.unpack_from("!I", header, ip + 4)[0]
    ident = struct.unpack_from("!H", header, 4)[0] if v4 else 0
    tcp_flags = header[ip + 13]
    packets = []
    for i, chunk in enumerate(chunks):
        h = bytearray(header)
        struct.pack_into("!I", h, ip + 4, (seq + i * gso_size) & 0xFFFFFFFF)
        h[ip + 13] = tcp_flags if i == len(chunks) - 1 else tcp_flags & ~(PSH | FIN)
        if v4:
            struct.pack_into("!HH", h, 2, len(h) + len(chunk), (ident + i) & 0xFFFF)
            h[10:12] = b"\0\0"
            h[10:12] = internet_checksum(bytes(h[:20])).to_bytes(2, "big")
        else:
            struct.pack_into("!H", h, 4, len(h) - 40 + len(chunk))
        h[ip + 16 : ip + 18] = b"\0\0"
        segment = bytes(h[ip:]) + chunk
        h[ip + 16 : ip + 18] = tcp_checksum(bytes(h[:ip]), segment).to_bytes(2, "big")
        packets.append(bytes(h) + chunk)
    return packets


def tcp_checksum(ip_header: bytes, segment: bytes) -> int:
    if ip_header[0] >> 4 == 4:
        pseudo = ip_header[12:20] + struct.pack("!HH", 6, len(segment))
    else:
        pseudo = ip_header[8:40] + struct.pack("!IxxxB", len(segment), 6)
    return internet_checksum(pseudo + segment)


def flow(
    src: str,
    dst: str,
    sizes: list[int],
    *,
    seq: int = 1000,
    sport: int = 40000,
    push_last: bool = False,
) -> list[bytes]:
    packets = []
    for i, size in enumerate(sizes):
        last = i == len(sizes) - 1
        packets.append(
            tcp_segment(
                src, dst, bytes([i % 251]) * size, seq=seq, sport=sport, ident=100 + i,
                flags=ACK | (PSH if last and push_last else 0),
            )
        )  # fmt: skip
        seq += size
    return packets


def roundtrip(packets: list[bytes]) -> list[bytes]:
    return [p for write in coalesce(packets) for p in resegment(write)]


def test_a_bulk_run_becomes_one_gso_write() -> None:
    packets = flow("10.0.0.2", "10.0.0.1", [1360] * 10 + [500])
    (write,) = coalesce(packets)
    flags, gso_type, hdr_len, gso_size, start, offset = VNET.unpack(write[0])
    assert (flags, gso_type, hdr_len, gso_size, start, offset) == (1, 1, 40, 1360, 20, 16)
    assert roundtrip(packets) == packets


def test_ipv6_run_with_push_on_the_last_segment() -> None:
    packets = flow("fd00::2", "fd00::1", [1200] * 5, push_last=True)
    (write,) = coalesce(packets)
    assert VNET.unpack(write[0])[:4] == (1, 4, 60, 1200)
    assert bytes(write[1])[53] & PSH
    assert roundtrip(packets) == packets


def test_a_single_segment_is_written_as_it_is() -> None:
    packets = flow("10.0.0.2", "10.0.0.1", [1360])
    assert coalesce(packets) == [[PLAIN_HEADER, packets[0]]]


def seg(size: int, seq: int, **fields: Any) -> bytes:
    """A 10.0.0.2 -> 10.0.0.1 segment of ``size`` payload bytes."""
    return tcp_segment("10.0.0.2", "10.0.0.1", bytes([seq % 251]) * size, seq=seq, **fields)


TIMESTAMPS = b"\x01\x01\x08\x0a" + bytes(8)
NOT_MERGED = {
    "seq gap": [seg(100, 0), seg(100, 101)],
    "window": [seg(100, 0), seg(100, 100, window=9)],
    "ack": [seg(100, 0), seg(100, 100, ack=1)],
    "ttl": [seg(100, 0), seg(100, 100, ttl=3)],
    "options": [seg(100, 0, options=TIMESTAMPS), seg(100, 100, options=TIMESTAMPS[:-1] + b"\1")],
    "bigger second": [seg(100, 0), seg(101, 100)],
    "after push": [seg(100, 0, flags=ACK | PSH), seg(100, 100)],
    "fin": [seg(100, 0), seg(100, 100, flags=ACK | FIN)],
    "syn": [seg(100, 0, flags=SYN), seg(100, 100, flags=SYN)],
    "pure acks": [seg(0, 0), seg(0, 0)],
    "other ports": [seg(100, 0), seg(100, 100, sport=1)],
    "udp": [udp4("10.0.0.2", "10.0.0.1", 1, 2, b"x" * 100)] * 2,
}


@pytest.mark.parametrize("packets", NOT_MERGED.values(), ids=NOT_MERGED.keys())
def test_what_linux_gro_would_not_merge_is_written_alone(packets: list[bytes]) -> None:
    assert coalesce(packets) == [[PLAIN_HEADER, p] for p in packets]


def test_nothing_merges_after_a_short_segment() -> None:
    packets = [seg(100, 0, ident=1), seg(50, 100, ident=2), seg(50, 150, ident=3)]
    writes = coalesce(packets)
    assert len(writes) == 2 and writes[1] == [PLAIN_HEADER, packets[2]]
    assert roundtrip(packets) == packets


def test_fragments_and_ip_options_are_not_merged() -> None:
    packets = flow("10.0.0.2", "10.0.0.1", [100, 100])
    fragment = [p[:6] + b"\x20\x00" + p[8:] for p in packets]  # MF set
    with_options = [b"\x46" + p[1:20] + bytes(4) + p[20:] for p in packets]
    for case in (fragment, with_options):
        assert coalesce(case) == [[PLAIN_HEADER, p] for p in case]


def test_limits_segments_and_length() -> None:
    packets = flow("10.0.0.2", "10.0.0.1", [100] * (MAX_SEGMENTS + 5))
    writes = coalesce(packets)
    assert [len(w) - 2 for w in writes] == [MAX_SEGMENTS, 5]
    assert roundtrip(packets) == packets
    packets = flow("10.0.0.2", "10.0.0.1", [1400] * 50)
    writes = coalesce(packets)
    assert all(sum(len(p) for p in w[1:]) <= 65535 for w in writes)
    assert len(writes) == 2
    assert roundtrip(packets) == packets


def test_sequence_numbers_wrap() -> None:
    packets = flow("10.0.0.2", "10.0.0.1", [1000] * 4, seq=0xFFFFFFFF - 1500)
    assert len(coalesce(packets)) == 1
    assert roundtrip(packets) == packets


@st.composite
def interleaved_flows(draw: st.DrawFn) -> list[bytes]:
    rng = random.Random(draw(st.integers(0, 2**32)))
    streams = []
    for i in range(draw(st.integers(1, 4))):
        v6 = draw(st.booleans())
        src, dst = ("fd00::2", "fd00::1") if v6 else ("10.0.0.2", "10.0.0.1")
        size = draw(st.integers(1, 1400))
        count = draw(st.integers(1, 80))
        sizes = [size] * count
        if draw(st.booleans()):
            sizes[-1] = draw(st.integers(1, size))
        packets = flow(src, dst, sizes, sport=1000 + i, seq=draw(st.integers(0, 2**32 - 1)),
                       push_last=draw(st.booleans()))  # fmt: skip
        if count > 2 and draw(st.booleans()):  # a retransmission or a gap
            packets.insert(rng.randrange(count), packets[rng.randrange(count)])
        streams.append(packets)
    if draw(st.booleans()):
        streams.append([udp4("10.0.0.2", "10.0.0.9", 1, 2, b"u" * n) for n in range(3)])
    out = []
    while streams:
        stream = rng.choice(streams)
        out.append(stream.pop(0))
        if not stream:
            streams.remove(stream)
    return out


def _by_flow(packets: list[bytes]) -> dict[bytes, list[bytes]]:
    groups: dict[bytes, list[bytes]] = {}
    for p in packets:
        ip = 20 if p[0] >> 4 == 4 else 40
        groups.setdefault(p[:1] + p[ip : ip + 4], []).append(p)
    return groups


@settings(max_examples=300, deadline=None)
@given(interleaved_flows())
def test_merge_then_split_gives_back_every_packet_in_flow_order(packets: list[bytes]) -> None:
    again = roundtrip(packets)
    assert _by_flow(again) == _by_flow(packets)
    assert sorted(again) == sorted(packets)


def _normalized(packet: bytes) -> bytes:
    """The packet without the fields a merge may recompute (IPv4 id and checksums)."""
    if len(packet) < 41 or packet[0] not in (0x45, 0x60):
        return packet
    p = bytearray(packet)
    ip = 20 if p[0] == 0x45 else 40
    if ip == 20:
        p[4:6] = p[10:12] = b"\0\0"
    p[ip + 16 : ip + 18] = b"\0\0"
    return bytes(p)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=8), st.data())
def test_malformed_packets_never_raise_and_nothing_is_lost(
    garbage: list[bytes], data: st.DataObject
) -> None:
    good = flow("10.0.0.2", "10.0.0.1", [60, 60, 60])
    mutated = bytearray(data.draw(st.sampled_from(good)))
    for _ in range(data.draw(st.integers(0, 4))):
        mutated[data.draw(st.integers(0, len(mutated) - 1))] = data.draw(st.integers(0, 255))
    packets = [*garbage, *good, bytes(mutated)]
    rng = random.Random(data.draw(st.integers(0, 1000)))
    rng.shuffle(packets)
    again = roundtrip(packets)
    assert sorted(map(_normalized, again)) == sorted(map(_normalized, packets))
    for write in coalesce(packets):
        if bytes(write[0]) == PLAIN_HEADER:
            assert len(write) == 2 and write[1] in packets
