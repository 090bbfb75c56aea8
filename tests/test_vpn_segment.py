"""Reads from a TSO TUN cut into packets (vpn/segment.py), against a slow reference.

``reference_split`` is the kernel's side written plainly: ``tcp_gso_segment`` with
``inet_gso_segment`` / ``ipv6_gso_segment`` for a GSO read, ``skb_checksum_help``
for a partial checksum, every checksum summed word by word with ``struct``. The
segmenter must give exactly its bytes, with the pure-Python and the numpy sums.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import sys
import sysconfig
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_sudp.vpn.segment as segment_module
from test_vpn_coalesce import interleaved_flows
from trio_sudp.testing.packets import tcp_segment
from trio_sudp.vpn.coalesce import coalesce
from trio_sudp.vpn.segment import (
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP_L4,
    NATIVE,
    NEEDS_CSUM,
    SegmentDrop,
    Segmenter,
    best_segmenter,
    best_sums,
    native_sums,
    numpy_sums,
    pure_sums,
)

VNET = struct.Struct("=BBHHHH")
FIN, PSH, CWR = 0x01, 0x08, 0x80

try:
    import numpy  # noqa: F401
except ImportError:
    HAVE_NUMPY = False
else:
    HAVE_NUMPY = True

needs_native = pytest.mark.skipif(not NATIVE, reason="the compiled helper was not built")

#: Every way of cutting: the pure fallback, numpy's sums, the compiled helper.
SEGMENTERS = [
    pytest.param(lambda: Segmenter(pure_sums), id="pure"),
    pytest.param(
        lambda: Segmenter(numpy_sums),
        id="numpy",
        marks=pytest.mark.skipif(not HAVE_NUMPY, reason="numpy is not installed (fast extra)"),
    ),
    pytest.param(lambda: Segmenter(native=True), id="native", marks=needs_native),
]
Make = Callable[[], Segmenter]


def slow_sum(data: bytes) -> int:
    """The folded ones' complement sum of ``data``, word by word."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def reference_split(data: bytes) -> list[bytes]:
    """What the kernel would have sent for one read, computed the slow way."""
    flags, gso_type, _, gso_size, csum_start, csum_offset = VNET.unpack_from(data)
    packet = data[10:]
    if gso_type == GSO_NONE:
        if not flags & NEEDS_CSUM:
            return [packet]
        at = csum_start + csum_offset
        check = ~slow_sum(packet[csum_start:]) & 0xFFFF or 0xFFFF
        return [packet[:at] + struct.pack("!H", check) + packet[at + 2 :]]
    v4 = packet[0] >> 4 == 4
    ip = csum_start
    hdr = ip + (packet[ip + 12] >> 4) * 4
    header, payload = packet[:hdr], packet[hdr:]
    chunks = [payload[i : i + gso_size] for i in range(0, len(payload), gso_size)]
    seq = struct.unpack_from("!I", header, ip + 4)[0]
    ident = struct.unpack_from("!H", header, 4)[0]
    out = []
    for i, chunk in enumerate(chunks):
        h = bytearray(header)
        struct.pack_into("!I", h, ip + 4, (seq + i * gso_size) % 2**32)
        if i < len(chunks) - 1:
            h[ip + 13] &= ~(FIN | PSH)
        if i > 0:
            h[ip + 13] &= ~CWR
        tcp_length = len(h) - ip + len(chunk)
        if v4:
            struct.pack_into("!HH", h, 2, len(h) + len(chunk), (ident + i) % 2**16)
            h[10:12] = b"\0\0"
            h[10:12] = struct.pack("!H", ~slow_sum(bytes(h[:ip])) & 0xFFFF)
            pseudo = bytes(h[12:20]) + struct.pack("!HH", 6, tcp_length)
        else:
            struct.pack_into("!H", h, 4, len(h) - 40 + len(chunk))
            pseudo = bytes(h[8:40]) + struct.pack("!IxxxB", tcp_length, 6)
        h[ip + 16 : ip + 18] = b"\0\0"
        check = ~slow_sum(pseudo + bytes(h[ip:]) + chunk) & 0xFFFF
        if len(chunks) == 1:
            check = check or 0xFFFF  # not cut: completed like a partial checksum
        h[ip + 16 : ip + 18] = struct.pack("!H", check)
        out.append(bytes(h) + chunk)
    return out


def valid_tcp(packet: bytes) -> bool:
    """Whether both checksums of an IPv4/IPv6 TCP packet verify (slow sums)."""
    if packet[0] >> 4 == 4:
        ip = (packet[0] & 15) * 4
        if slow_sum(packet[:ip]) != 0xFFFF:
            return False
        pseudo = packet[12:20] + struct.pack("!HH", 6, len(packet) - ip)
    else:
        ip = 40 if packet[6] == 6 else 48
        pseudo = packet[8:40] + struct.pack("!IxxxB", len(packet) - ip, 6)
    return slow_sum(pseudo + packet[ip:]) == 0xFFFF


@st.composite
def gso_reads(draw: st.DrawFn) -> bytes:
    """A GSO read as a TSO TUN gives it: vnet header, IP + TCP header, payload."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    v4 = draw(st.booleans())
    tcp_options = rng.randbytes(4 * draw(st.integers(0, 10)))
    offset = (20 + len(tcp_options)) // 4
    mss = draw(st.one_of(st.integers(1, 1500), st.sampled_from([536, 1220, 1448, 1460])))
    length = draw(st.one_of(st.integers(1, 3 * mss), st.integers(1, min(60000, 100 * mss))))
    tcp = struct.pack(
        "!HHIIBBHHH", rng.getrandbits(16), rng.getrandbits(16),
        draw(st.one_of(st.integers(0, 2**32 - 1), st.just(2**32 - 100))), rng.getrandbits(32),
        offset << 4, draw(st.integers(0, 255)), rng.getrandbits(16), rng.getrandbits(16),
        rng.getrandbits(16),
    )  # fmt: skip
    tcp += tcp_options
    payload = rng.randbytes(length)
    if v4:
        ip_options = rng.randbytes(4 * draw(st.integers(0, 10)))
        ip = 20 + len(ip_options)
        header = struct.pack(
            "!BBHHHBBH4s4s", 0x40 | ip // 4, rng.getrandbits(8), ip + len(tcp) + length,
            draw(st.one_of(st.integers(0, 0xFFFF), st.just(0xFFFF))), rng.getrandbits(16),
            rng.getrandbits(8), 6, rng.getrandbits(16), rng.randbytes(4), rng.randbytes(4),
        ) + ip_options  # fmt: skip
        gso_type = GSO_TCPV4
    else:
        extension = b""
        if draw(st.booleans()):  # destination options, then TCP
            extension = bytes([6, 0]) + rng.randbytes(6)
        ip = 40 + len(extension)
        header = struct.pack(
            "!IHBB16s16s", 6 << 28 | rng.getrandbits(28), len(extension) + len(tcp) + length,
            60 if extension else 6, rng.getrandbits(8), rng.randbytes(16), rng.randbytes(16),
        ) + extension  # fmt: skip
        gso_type = GSO_TCPV6
    if draw(st.booleans()):
        gso_type |= GSO_ECN
    hdr_len = draw(st.sampled_from([ip + len(tcp), ip + len(tcp) + min(mss, length), 0]))
    vnet = VNET.pack(NEEDS_CSUM, gso_type, hdr_len, mss, ip, 16)
    return vnet + header + tcp + payload


@pytest.mark.parametrize("make", SEGMENTERS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gso_reads())
def test_super_packets_are_cut_as_the_kernel_cuts_them(make: Make, data: bytes) -> None:
    segmenter = make()
    packets = segmenter.split(data)
    assert packets == reference_split(data)
    _, _, _, mss, ip, _ = VNET.unpack_from(data)
    hdr = ip + (data[10 + ip + 12] >> 4) * 4
    assert len(packets) == -(-(len(data) - 10 - hdr) // mss)
    assert all(len(p) <= hdr + mss for p in packets)
    assert all(valid_tcp(p) for p in packets)
    assert segmenter.stats.gso_reads == 1 and segmenter.stats.segments == len(packets)


@st.composite
def partial_checksum_reads(draw: st.DrawFn) -> bytes:
    """A NEEDS_CSUM read: any packet, with the pseudo-header sum at csum_start + offset."""
    packet = draw(st.binary(min_size=2, max_size=3000))
    at = draw(st.integers(0, len(packet) - 2))
    start = draw(st.integers(0, at))
    return VNET.pack(NEEDS_CSUM, GSO_NONE, 0, 0, start, at - start) + packet


@pytest.mark.parametrize("make", SEGMENTERS)
@settings(max_examples=500, deadline=None)
@given(partial_checksum_reads())
def test_partial_checksums_are_completed(make: Make, data: bytes) -> None:
    segmenter = make()
    assert segmenter.split(data) == reference_split(data)
    assert segmenter.stats.checksums == 1


def udp_read(v6: bool, payload: bytes) -> tuple[bytes, bytes]:
    """A NEEDS_CSUM UDP read as the kernel hands it over, and the completed packet."""
    length = 8 + len(payload)
    if v6:
        src, dst = bytes(15) + b"\1", bytes(15) + b"\2"
        pseudo = src + dst + struct.pack("!IxxxB", length, 17)
        header = struct.pack("!IHBB16s16s", 6 << 28, length, 17, 64, src, dst)
    else:
        src, dst = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
        pseudo = src + dst + struct.pack("!xBH", 17, length)
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 0, 0, 64, 17, 0, src, dst)
    partial = slow_sum(pseudo)  # what the kernel leaves in the field
    udp = struct.pack("!HHHH", 1000, 2000, length, partial) + payload
    check = ~slow_sum(pseudo + udp[:6] + b"\0\0" + udp[8:]) & 0xFFFF or 0xFFFF
    read = VNET.pack(NEEDS_CSUM, GSO_NONE, 0, 0, len(header), 6) + header + udp
    return read, header + udp[:6] + struct.pack("!H", check) + payload


@pytest.mark.parametrize("make", SEGMENTERS)
@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("size", [0, 1, 2, 99, 1200, 1401])
def test_udp_checksum_is_completed(make: Make, v6: bool, size: int) -> None:
    read, expected = udp_read(v6, random.Random(size).randbytes(size))
    assert make().split(read) == [expected]


@pytest.mark.parametrize("make", SEGMENTERS)
def test_a_zero_checksum_is_written_as_ffff(make: Make) -> None:
    # A payload that makes the sum 0xFFFF: the checksum is 0, which UDP reserves for
    # "none"; skb_checksum_help writes CSUM_MANGLED_0 (0xFFFF) instead.
    pseudo = bytes([10, 0, 0, 1, 10, 0, 0, 2]) + struct.pack("!xBH", 17, 10)
    total = slow_sum(pseudo + struct.pack("!HHHH", 1000, 2000, 10, 0))
    read, expected = udp_read(False, struct.pack("!H", 0xFFFF - total))
    assert expected[26:28] == b"\xff\xff"
    assert make().split(read) == [expected]


def test_plain_reads_come_back_as_they_are() -> None:
    packet = tcp_segment("10.0.0.1", "10.0.0.2", b"x" * 100, seq=1)
    assert Segmenter().split(bytes(10) + packet) == [packet]


@pytest.mark.parametrize("make", SEGMENTERS)
@settings(max_examples=200, deadline=None)
@given(interleaved_flows())
def test_coalesce_then_split_gives_back_every_packet(make: Make, packets: list[bytes]) -> None:
    """vpn/coalesce.py merges as GRO does; splitting its writes is the inverse."""
    segmenter = make()
    again = []
    for write in coalesce(packets):
        again.extend(segmenter.split(b"".join(bytes(part) for part in write)))
    assert again == [p for write in coalesce(packets) for p in _packets_of(write)]
    assert sorted(again) == sorted(packets)


def _packets_of(write: list[bytes | memoryview]) -> list[bytes]:
    return reference_split(b"".join(bytes(part) for part in write))


UNSUPPORTED, MALFORMED = SegmentDrop.GSO_UNSUPPORTED, SegmentDrop.GSO_MALFORMED
DROPPED = {
    "udp gso": (VNET.pack(1, GSO_UDP_L4, 28, 100, 20, 6), 4, UNSUPPORTED),
    "unknown gso": (VNET.pack(1, 3, 40, 100, 20, 16), 4, UNSUPPORTED),
    "v6 header, v4 type": (VNET.pack(1, GSO_TCPV4, 60, 100, 40, 16), 6, MALFORMED),
    "v4 header, v6 type": (VNET.pack(1, GSO_TCPV6, 40, 100, 20, 16), 4, MALFORMED),
    "csum_start": (VNET.pack(1, GSO_TCPV4, 40, 100, 24, 16), 4, MALFORMED),
    "csum_offset": (VNET.pack(1, GSO_TCPV4, 40, 100, 20, 6), 4, MALFORMED),
    "gso_size 0": (VNET.pack(1, GSO_TCPV4, 40, 0, 20, 16), 4, MALFORMED),
    "csum outside": (VNET.pack(1, GSO_NONE, 0, 0, 20, 5000), 4, SegmentDrop.CSUM_MALFORMED),
}


@pytest.mark.parametrize(("vnet", "version", "reason"), DROPPED.values(), ids=DROPPED.keys())
def test_what_the_kernel_never_sends_is_dropped_and_counted(
    vnet: bytes, version: int, reason: SegmentDrop
) -> None:
    src, dst = ("fd00::1", "fd00::2") if version == 6 else ("10.0.0.1", "10.0.0.2")
    segmenter = Segmenter()
    assert segmenter.split(vnet + tcp_segment(src, dst, b"y" * 300, seq=5)) == []
    assert segmenter.stats.drops == {reason: 1}


def test_a_gso_read_without_payload_or_with_a_short_tcp_header_is_dropped() -> None:
    segmenter = Segmenter()
    bare = tcp_segment("10.0.0.1", "10.0.0.2", seq=5)
    assert segmenter.split(VNET.pack(1, GSO_TCPV4, 40, 100, 20, 16) + bare) == []
    short = bytearray(tcp_segment("10.0.0.1", "10.0.0.2", b"z" * 50, seq=5))
    short[32] = 0x40  # data offset 4 words
    assert segmenter.split(VNET.pack(1, GSO_TCPV4, 40, 10, 20, 16) + bytes(short)) == []
    assert segmenter.split(b"") == segmenter.split(bytes(10)) == []
    assert segmenter.stats.drops == {SegmentDrop.GSO_MALFORMED: 2, SegmentDrop.SHORT: 2}


@st.composite
def garbage_reads(draw: st.DrawFn) -> bytes:
    """Reads with a plausible vnet header and IP version, the rest anything."""
    vnet = VNET.pack(
        draw(st.integers(0, 3)),
        draw(st.sampled_from([GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_TCPV4 | GSO_ECN, 3, 5])),
        draw(st.integers(0, 100)),
        draw(st.integers(0, 2000)),
        draw(st.sampled_from([0, 20, 24, 40, 48, draw(st.integers(0, 0xFFFF))])),
        draw(st.sampled_from([6, 16, draw(st.integers(0, 0xFFFF))])),
    )
    first = draw(st.sampled_from([b"", b"\x45", b"\x46", b"\x60", b"\x00"]))
    return vnet + first + draw(st.binary(max_size=300))


@pytest.mark.parametrize("make", SEGMENTERS)
@settings(max_examples=2000, deadline=None)
@given(garbage_reads())
def test_garbage_never_raises_and_every_drop_is_counted(make: Make, data: bytes) -> None:
    segmenter = make()
    packets = segmenter.split(data)
    assert bool(packets) != (sum(segmenter.stats.drops.values()) == 1)


@pytest.mark.skipif(not HAVE_NUMPY, reason="numpy is not installed (fast extra)")
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=9000), st.integers(1, 1500), st.integers(0, 7))
def test_numpy_and_pure_sums_agree(data: bytes, size: int, start: int) -> None:
    data = bytes(start) + data
    count = (len(data) - start) // size
    fast, pure = numpy_sums(data, start, size, count), pure_sums(data, start, size, count)
    assert [s % 0xFFFF for s in fast] == [s % 0xFFFF for s in pure]
    for i, s in enumerate(pure):
        chunk = data[start + i * size : start + (i + 1) * size]
        assert s % 0xFFFF == slow_sum(chunk) % 0xFFFF


@needs_native
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=9000), st.integers(1, 1500), st.integers(0, 7))
def test_native_and_pure_sums_agree(data: bytes, size: int, start: int) -> None:
    data = bytes(start) + data
    count = (len(data) - start) // size
    native, pure = native_sums(data, start, size, count), pure_sums(data, start, size, count)
    assert [s % 0xFFFF for s in native] == [s % 0xFFFF for s in pure]


def test_best_sums_prefers_the_compiled_helper_then_numpy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    best = native_sums if NATIVE else numpy_sums if HAVE_NUMPY else pure_sums
    assert best_sums() is best
    monkeypatch.setattr(segment_module, "NATIVE", False)
    assert best_sums() is (numpy_sums if HAVE_NUMPY else pure_sums)
    monkeypatch.setitem(sys.modules, "numpy", None)  # import numpy now raises
    assert best_sums() is pure_sums
    assert best_segmenter().split(bytes(10) + b"x") == [b"x"]


def _zero_sum_segment(payload: bytes, seq: int) -> bytes:
    """A segment whose payload ends in the two bytes that make its checksum 0."""
    segment = tcp_segment("10.0.0.1", "10.0.0.2", payload + b"\0\0", seq=seq)
    total = ~struct.unpack_from("!H", segment, 36)[0] & 0xFFFF
    filler = struct.pack("!H", 0xFFFF - total)
    return tcp_segment("10.0.0.1", "10.0.0.2", payload + filler, seq=seq)


@pytest.mark.parametrize("make", SEGMENTERS)
def test_a_zero_tcp_checksum_stays_zero_when_cut_and_not_otherwise(make: Make) -> None:
    # Cut segments get csum_fold (0 stays 0, as gso_make_checksum), a super-packet
    # of one segment is completed as a partial checksum (0 becomes 0xFFFF).
    first = _zero_sum_segment(b"a" * 98, seq=1000)
    assert first[36:38] == b"\0\0"
    second = tcp_segment("10.0.0.1", "10.0.0.2", b"b" * 40, seq=1100, ident=2)
    (write,) = coalesce([first, second])
    assert make().split(b"".join(bytes(part) for part in write)) == [first, second]
    alone = VNET.pack(NEEDS_CSUM, GSO_TCPV4, 40, 1400, 20, 16) + first
    (packet,) = make().split(alone)
    assert packet == first[:36] + b"\xff\xff" + first[38:]
    assert [packet] == reference_split(alone) and valid_tcp(packet)


def test_the_compiled_helper_is_built_where_a_compiler_is() -> None:
    """Where the build could compile it, it was compiled: no silent fallback in CI."""
    compiler = sysconfig.get_config_var("CC")
    if compiler is None or shutil.which(compiler.split()[0]) is None:
        pytest.skip("no C compiler here: the pure Python path is the one in use")
    if os.environ.get("TRIO_SUDP_NATIVE") == "0":
        pytest.skip("TRIO_SUDP_NATIVE=0: built without the compiled helper")
    assert NATIVE, "the compiled helper was not built (see hatch_build.py)"
