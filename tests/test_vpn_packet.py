"""Raw IP packet helpers and the ICMP "too big" replies, checked against Linux itself.

The ``KERNEL_REPLIES`` were captured from Linux 6.18: in a fresh network namespace,
the input packets below were written into a TUN device (10.0.0.1/24, fd00::1/64)
with forwarding on and a route to 10.9.0.0/24 and fd09::/64 through a second TUN of
MTU 1280; the kernel's ICMP answers were read back from the first TUN. What Linux
picks at random (IPv4 identification, IPv6 flow label) is passed to our builder.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import itertools
import socket
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_sudp.protocol.errors import SUDPError
from trio_sudp.vpn.packet import (
    BadIPPacket,
    IPDropReason,
    check_untrusted,
    destination_address,
    destination_raw,
    dont_fragment,
    icmpv4_frag_needed,
    icmpv6_checksum,
    icmpv6_packet_too_big,
    internet_checksum,
    ip_version,
    source_address,
    source_raw,
    to_raw_address,
    total_length,
    validate,
)

ROUTER4 = socket.inet_aton("10.0.0.1")
ROUTER6 = socket.inet_pton(socket.AF_INET6, "fd00::1")


# -- an independent implementation of the checksums and packet layouts -------------


def naive_sum(data: bytes) -> int:
    """Ones' complement sum of 16-bit words, folding carries word by word."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) + data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def naive_checksum(data: bytes) -> int:
    return 0xFFFF ^ naive_sum(data)


def a4(text: str) -> bytes:
    return socket.inet_aton(text)


def a6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def v4(
    proto: int,
    payload: bytes,
    *,
    tos: int = 0,
    df: bool = True,
    ident: int = 0x1234,
    src: str = "10.0.0.2",
    dst: str = "10.9.0.5",
) -> bytes:
    header = struct.pack(
        ">BBHHHBBH4s4s", 0x45, tos, 20 + len(payload), ident, 0x4000 if df else 0, 64, proto, 0,
        a4(src), a4(dst),
    )  # fmt: skip
    header = header[:10] + naive_checksum(header).to_bytes(2, "big") + header[12:]
    return header + payload


def v6(
    next_header: int,
    payload: bytes,
    *,
    src: str = "fd00::2",
    dst: str = "fd09::5",
    tc: int = 0,
    flow: int = 0x12345,
) -> bytes:
    first = 0x60000000 | (tc << 20) | flow
    return struct.pack(">IHBB16s16s", first, len(payload), next_header, 64, a6(src), a6(dst)) + (
        payload
    )


def udp4_payload(n: int) -> bytes:
    return struct.pack(">HHHH", 40000, 9, n, 0) + bytes((i * 7) & 0xFF for i in range(n - 8))


def udp6_payload(src: str, dst: str, n: int) -> bytes:
    udp = struct.pack(">HHHH", 40000, 9, n, 0) + bytes((i * 7) & 0xFF for i in range(n - 8))
    pseudo = a6(src) + a6(dst) + n.to_bytes(4, "big") + b"\0\0\0\x11"
    checksum = naive_checksum(pseudo + udp) or 0xFFFF
    return udp[:6] + checksum.to_bytes(2, "big") + udp[8:]


def echo4_payload(n: int) -> bytes:
    message = struct.pack(">BBHHH", 8, 0, 0, 77, 1) + bytes(i & 0xFF for i in range(n - 8))
    return message[:2] + naive_checksum(message).to_bytes(2, "big") + message[4:]


def icmp4_payload(icmp_type: int, n: int) -> bytes:
    message = struct.pack(">BBHI", icmp_type, 1, 0, 0) + bytes(n - 8)
    return message[:2] + naive_checksum(message).to_bytes(2, "big") + message[4:]


def icmp6_payload(icmp_type: int, n: int, src: str = "fd00::2", dst: str = "fd09::5") -> bytes:
    message = struct.pack(">BBHI", icmp_type, 0, 0, 0) + bytes(n - 8)
    pseudo = a6(src) + a6(dst) + n.to_bytes(4, "big") + b"\0\0\0\x3a"
    return message[:2] + naive_checksum(pseudo + message).to_bytes(2, "big") + message[4:]


HOP_BY_HOP_PADN = bytes([58, 0, 1, 4, 0, 0, 0, 0])
LATER_FRAGMENT = bytes([58, 0]) + (185 << 3).to_bytes(2, "big") + b"\0\0\0\x07"
FIRST_FRAGMENT = bytes([58, 0, 0, 1]) + b"\0\0\0\x08"


def with_fragment_offset(packet: bytes, flags_offset: int) -> bytes:
    header = packet[:6] + flags_offset.to_bytes(2, "big") + packet[8:10] + b"\0\0" + packet[12:20]
    header = header[:10] + naive_checksum(header).to_bytes(2, "big") + header[12:]
    return header + packet[20:]


KERNEL_INPUTS: dict[str, Callable[[], bytes]] = {
    "v4_udp_df": lambda: v4(17, udp4_payload(1380)),
    "v4_udp_tos": lambda: v4(17, udp4_payload(1380), tos=0xB9),
    "v4_echo_df": lambda: v4(1, echo4_payload(1380)),
    "v4_udp_nodf": lambda: v4(17, udp4_payload(1380), df=False),
    "v4_icmperr": lambda: v4(1, icmp4_payload(3, 1380)),
    "v4_frag_df_off": lambda: with_fragment_offset(v4(17, udp4_payload(1380)), 0x4010),
    "v6_udp": lambda: v6(17, udp6_payload("fd00::2", "fd09::5", 1360)),
    "v6_udp_tc": lambda: v6(17, udp6_payload("fd00::2", "fd09::5", 1360), tc=0xB8),
    "v6_echo": lambda: v6(58, icmp6_payload(128, 1360)),
    "v6_icmperr": lambda: v6(58, icmp6_payload(1, 1360)),
    "v6_hbh_icmperr": lambda: v6(0, HOP_BY_HOP_PADN + icmp6_payload(1, 1352)),
    "v6_frag_icmp": lambda: v6(44, LATER_FRAGMENT + bytes(1352)),
    "v6_frag0_icmperr": lambda: v6(44, FIRST_FRAGMENT + icmp6_payload(1, 1352)),
}

# name → (kernel's IP + ICMP header, SHA-256 of the kernel's whole reply); None: no reply.
KERNEL_REPLIES: dict[str, tuple[str, str] | None] = {
    "v4_udp_df": (
        "45c00240f3cf00004001702b0a0000010a0000020304815e00000500",
        "40794ba11d3a79b4cc75807822af8dfd9b49e7502687ce17b75dc41710b719b0",
    ),
    "v4_udp_tos": (
        "45d80240f3fa000040016fe80a0000010a0000020304815e00000500",
        "36e6f939e872609ae41e1edd493333ff33f5fc6215fe569043b2812b99be66f3",
    ),
    "v4_echo_df": (
        "45c00240f44b000040016faf0a0000010a00000203044af700000500",
        "8fb7c15377cc2a37f3f440023a48e0ffe759cbc70a2e381083ed333c0a43f81a",
    ),
    "v4_udp_nodf": None,
    "v4_icmperr": None,
    "v4_frag_df_off": None,
    "v6_udp": (
        "600e5d7804d83a40fd000000000000000000000000000001"
        "fd0000000000000000000000000000020200b50e00000500",
        "905fc7dc366f1a4d157734e1e825daa38774fed6d72f63dede8bc6ea6f9310cc",
    ),
    "v6_udp_tc": (
        "600e5d7804d83a40fd000000000000000000000000000001"
        "fd0000000000000000000000000000020200a98e00000500",
        "a4cc801556593a6b2e86a87230812aa1a6cb1c642c568bba1b32648038563df5",
    ),
    "v6_echo": (
        "600e5d7804d83a40fd000000000000000000000000000001"
        "fd00000000000000000000000000000202003c9c00000500",
        "97ca63d0f90839516bcff2bcc8d8cc0936dcecb6694491833ca3c07061482f77",
    ),
    "v6_icmperr": None,
    "v6_hbh_icmperr": None,
    "v6_frag_icmp": (
        "600e5d7804d83a40fd000000000000000000000000000001"
        "fd00000000000000000000000000000202000b3100000500",
        "140f4eae22af47dfe3f55d921b6041e0cbe4c186069cc7dc12721399315321fc",
    ),
    "v6_frag0_icmperr": None,
}


@pytest.mark.parametrize("name", sorted(KERNEL_INPUTS))
def test_replies_match_linux_byte_for_byte(name: str) -> None:
    packet = KERNEL_INPUTS[name]()
    assert validate(packet) is None
    expected = KERNEL_REPLIES[name]
    if packet[0] >> 4 == 4:
        ident = int(expected[0][8:12], 16) if expected else 0
        reply = icmpv4_frag_needed(packet, 1280, ROUTER4, ident=ident)
    else:
        flow = int(expected[0][1:8], 16) & 0xFFFFF if expected else 0
        reply = icmpv6_packet_too_big(packet, 1280, ROUTER6, flow_label=flow)
    if expected is None:
        assert reply is None
        return
    assert reply is not None
    header = bytes.fromhex(expected[0])
    assert reply[: len(header)] == header
    assert reply[len(header) :] == packet[: len(reply) - len(header)]
    assert hashlib.sha256(reply).hexdigest() == expected[1]


# -- checksums ----------------------------------------------------------------------


@given(st.binary(max_size=1500))
def test_internet_checksum_matches_word_by_word_sum(data: bytes) -> None:
    assert internet_checksum(data) == naive_checksum(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0xFFFF),
        (b"\0\0", 0xFFFF),
        (b"\xff\xff", 0x0000),
        (b"\xff\xff\xff\xff", 0x0000),
        (b"\x00\x01\xf2\x03\xf4\xf5\xf6\xf7", 0x220D),  # RFC 1071 §3 example, sum ddf2
        (b"\x01", 0xFEFF),
    ],
)
def test_internet_checksum_known_values(data: bytes, expected: int) -> None:
    assert internet_checksum(data) == expected


# -- validation ---------------------------------------------------------------------

GOOD4 = v4(17, udp4_payload(100))
GOOD6 = v6(17, udp6_payload("fd00::2", "fd09::5", 100))


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"", IPDropReason.TOO_SHORT),
        (GOOD4[:19], IPDropReason.TOO_SHORT),
        (GOOD6[:39], IPDropReason.TOO_SHORT),
        (b"\x00" + GOOD4[1:], IPDropReason.BAD_VERSION),
        (b"\x55" + GOOD4[1:], IPDropReason.BAD_VERSION),
        (b"\xf0" * 40, IPDropReason.BAD_VERSION),
        (b"\x44" + GOOD4[1:], IPDropReason.BAD_HEADER_LENGTH),
        (b"\x4f" + GOOD4[1:20] + b"\0" * 20, IPDropReason.BAD_HEADER_LENGTH),
        (GOOD4[:-1], IPDropReason.BAD_TOTAL_LENGTH),
        (GOOD4 + b"\0", IPDropReason.BAD_TOTAL_LENGTH),
        (GOOD4[:2] + b"\0\x10" + GOOD4[4:], IPDropReason.BAD_TOTAL_LENGTH),
        (GOOD6[:-1], IPDropReason.BAD_TOTAL_LENGTH),
        (GOOD6 + b"\0", IPDropReason.BAD_TOTAL_LENGTH),
        (GOOD6[:4] + b"\0\0" + GOOD6[6:], IPDropReason.BAD_TOTAL_LENGTH),  # jumbogram
    ],
)
def test_validation_rejects(packet: bytes, reason: IPDropReason) -> None:
    assert validate(packet) is reason
    with pytest.raises(BadIPPacket) as info:
        check_untrusted(packet)
    assert info.value.reason is reason
    assert isinstance(info.value, SUDPError)
    assert str(info.value).startswith(reason.value)


def test_validation_accepts() -> None:
    assert validate(GOOD4) is None
    assert validate(GOOD6) is None
    assert check_untrusted(GOOD4) == 4
    assert check_untrusted(GOOD6) == 6
    assert check_untrusted(v6(59, b"")) == 6  # bare 40-byte header
    header = struct.pack(
        ">BBHHHBBH4s4s", 0x46, 0, 28, 0, 0, 64, 17, 0, a4("1.2.3.4"), a4("5.6.7.8")
    )
    with_options = header + b"\x01\x01\x01\x00" + b"abcd"
    assert check_untrusted(with_options) == 4


@given(st.binary(max_size=120))
def test_random_bytes_only_raise_the_typed_error(data: bytes) -> None:
    reason = validate(data)
    if reason is not None:
        with pytest.raises(BadIPPacket) as info:
            check_untrusted(data)
        assert info.value.reason is reason
        return
    version = check_untrusted(data)
    assert version in (4, 6)
    assert total_length(data) == len(data)
    assert len(source_raw(data)) == len(destination_raw(data)) == (4 if version == 4 else 16)


@given(st.binary(min_size=1, max_size=100), st.sampled_from([0x45, 0x46, 0x60, 0x4F]))
def test_random_bodies_with_plausible_first_byte(rest: bytes, first: int) -> None:
    data = bytes([first]) + rest
    with contextlib.suppress(BadIPPacket):
        assert check_untrusted(data) == first >> 4


# -- accessors ----------------------------------------------------------------------


def test_accessors_ipv4() -> None:
    packet = v4(6, b"x" * 30, src="192.0.2.7", dst="198.51.100.9")
    assert ip_version(packet) == 4
    assert source_raw(packet) == a4("192.0.2.7") == packet[12:16]
    assert destination_raw(packet) == a4("198.51.100.9") == packet[16:20]
    assert source_address(packet) == ipaddress.IPv4Address("192.0.2.7")
    assert destination_address(packet) == ipaddress.IPv4Address("198.51.100.9")
    assert total_length(packet) == 50
    assert dont_fragment(packet)
    assert not dont_fragment(v4(6, b"x", df=False))


def test_accessors_ipv6() -> None:
    packet = v6(6, b"y" * 12, src="2001:db8::1", dst="2001:db8::2")
    assert ip_version(packet) == 6
    assert source_raw(packet) == a6("2001:db8::1") == packet[8:24]
    assert destination_raw(packet) == a6("2001:db8::2") == packet[24:40]
    assert source_address(packet) == ipaddress.IPv6Address("2001:db8::1")
    assert destination_address(packet) == ipaddress.IPv6Address("2001:db8::2")
    assert total_length(packet) == 52
    assert dont_fragment(packet)


def test_to_raw_address() -> None:
    assert to_raw_address("10.0.0.1") == b"\x0a\0\0\x01"
    assert to_raw_address(ipaddress.IPv6Address("::1")) == bytes(15) + b"\x01"
    assert to_raw_address(b"\1\2\3\4") == b"\1\2\3\4"
    with pytest.raises(ValueError, match="4 or 16"):
        to_raw_address(b"\1\2\3")


# -- ICMPv4 Fragmentation Needed ----------------------------------------------------


def parse_v4_reply(reply: bytes) -> dict[str, int | bytes]:
    assert validate(reply) is None
    fields = struct.unpack(">BBHHHBBH4s4s", reply[:20])
    icmp = reply[20:]
    icmp_type, code, _checksum, unused, mtu = struct.unpack(">BBHHH", icmp[:8])
    return {
        "ver_ihl": fields[0],
        "tos": fields[1],
        "total": fields[2],
        "ident": fields[3],
        "flags_offset": fields[4],
        "ttl": fields[5],
        "proto": fields[6],
        "src": fields[8],
        "dst": fields[9],
        "header_sum": naive_sum(reply[:20]),
        "icmp_sum": naive_sum(icmp),
        "type": icmp_type,
        "code": code,
        "unused": unused,
        "mtu": mtu,
        "quote": icmp[8:],
    }


def test_frag_needed_fields() -> None:
    packet = v4(6, bytes(1480), src="10.0.0.2", dst="10.0.0.3", tos=0x10)
    reply = icmpv4_frag_needed(packet, 1400, ROUTER4, ttl=55, ident=0xBEEF)
    assert reply is not None
    f = parse_v4_reply(reply)
    assert f["ver_ihl"] == 0x45
    assert f["tos"] == 0xD0
    assert f["total"] == len(reply) == 576
    assert f["ident"] == 0xBEEF
    assert f["flags_offset"] == 0  # no DF on the error itself, as Linux
    assert f["ttl"] == 55
    assert f["proto"] == 1
    assert f["src"] == ROUTER4
    assert f["dst"] == a4("10.0.0.2")
    assert f["header_sum"] == 0xFFFF
    assert f["icmp_sum"] == 0xFFFF
    assert (f["type"], f["code"], f["unused"], f["mtu"]) == (3, 4, 0, 1400)
    assert f["quote"] == packet[:548]


def test_frag_needed_small_mtu_limits_quote() -> None:
    packet = v4(17, bytes(700))
    reply = icmpv4_frag_needed(packet, 300, ROUTER4)
    assert reply is not None
    assert len(reply) == 300


@pytest.mark.parametrize(
    "packet",
    [
        v4(17, bytes(1500), df=False),
        with_fragment_offset(v4(17, bytes(1500)), 0x4001),
        v4(1, icmp4_payload(3, 1500)),  # destination unreachable
        v4(1, icmp4_payload(4, 1500)),  # source quench
        v4(1, icmp4_payload(5, 1500)),  # redirect
        v4(1, icmp4_payload(11, 1500)),  # time exceeded
        v4(1, icmp4_payload(12, 1500)),  # parameter problem
        v4(1, icmp4_payload(19, 1500)),  # unknown type: assumed an error
        v4(1, b""),  # ICMP without even a type byte
        v4(17, bytes(1500), dst="224.0.0.5"),
        v4(17, bytes(1500), dst="255.255.255.255"),
        v4(17, bytes(1500), dst="0.0.0.0"),
        v4(17, bytes(1500), src="0.0.0.0"),
        v4(17, bytes(1500), src="127.0.0.1"),
        v4(17, bytes(1500), src="239.1.2.3"),
        v4(17, bytes(1500), src="255.255.255.255"),
        v4(17, bytes(1500))[:-1],  # malformed
        GOOD6,
        b"",
    ],
)
def test_frag_needed_not_sent(packet: bytes) -> None:
    assert icmpv4_frag_needed(packet, 1400, ROUTER4) is None


@pytest.mark.parametrize("icmp_type", [0, 8, 13, 14, 17, 18])
def test_frag_needed_sent_for_icmp_queries(icmp_type: int) -> None:
    assert icmpv4_frag_needed(v4(1, icmp4_payload(icmp_type, 1500)), 1400, ROUTER4) is not None


def test_frag_needed_bad_router_address() -> None:
    assert icmpv4_frag_needed(v4(17, bytes(1500)), 1400, ROUTER6) is None


# -- ICMPv6 Packet Too Big ----------------------------------------------------------


def check_v6_reply(reply: bytes, packet: bytes, mtu: int, router: bytes) -> None:
    assert validate(reply) is None
    first, payload_length, next_header, hop_limit = struct.unpack(">IHBB", reply[:8])
    assert first >> 28 == 6
    assert (first >> 20) & 0xFF == 0  # traffic class
    assert payload_length == len(reply) - 40
    assert next_header == 58
    assert hop_limit == 64
    assert reply[8:24] == router
    assert reply[24:40] == packet[8:24]
    message = reply[40:]
    assert message[0] == 2
    assert message[1] == 0
    assert int.from_bytes(message[4:8], "big") == mtu
    pseudo = router + packet[8:24] + len(message).to_bytes(4, "big") + b"\0\0\0\x3a"
    assert naive_sum(pseudo + message) == 0xFFFF
    assert icmpv6_checksum(router, packet[8:24], message[:2] + b"\0\0" + message[4:]) == (
        int.from_bytes(message[2:4], "big")
    )
    assert message[8:] == packet[: len(message) - 8]
    assert len(reply) == min(1280, 48 + len(packet))


def test_packet_too_big_fields() -> None:
    packet = v6(6, bytes(1500))
    reply = icmpv6_packet_too_big(packet, 1400, ROUTER6)
    assert reply is not None
    assert len(reply) == 1280
    check_v6_reply(reply, packet, 1400, ROUTER6)
    labelled = icmpv6_packet_too_big(packet, 1400, ROUTER6, hop_limit=9, flow_label=0xABCDE)
    assert labelled is not None
    assert labelled[:4] == b"\x60\x0a\xbc\xde"
    assert labelled[7] == 9


def test_packet_too_big_for_multicast_destination() -> None:
    packet = v6(17, bytes(1500), dst="ff0e::1")
    reply = icmpv6_packet_too_big(packet, 1400, ROUTER6)
    assert reply is not None
    check_v6_reply(reply, packet, 1400, ROUTER6)


def test_packet_too_big_skips_extension_headers() -> None:
    routing = bytes([60, 0, 0, 0, 0, 0, 0, 0])  # routing header, then destination options
    dest_opts = bytes([58, 0, 1, 4, 0, 0, 0, 0])
    assert (
        icmpv6_packet_too_big(v6(43, routing + dest_opts + icmp6_payload(3, 1500)), 1400, ROUTER6)
        is None
    )
    assert icmpv6_packet_too_big(
        v6(43, routing + dest_opts + icmp6_payload(129, 1500)), 1400, ROUTER6
    )
    auth = bytes([58, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])  # AH: (1 + 2) * 4 = 12 bytes
    assert icmpv6_packet_too_big(v6(51, auth + icmp6_payload(4, 1500)), 1400, ROUTER6) is None
    assert icmpv6_packet_too_big(v6(59, bytes(1500)), 1400, ROUTER6) is not None


@pytest.mark.parametrize(
    "packet",
    [
        v6(17, bytes(1500), src="ff02::1"),
        v6(17, bytes(1500), src="::"),
        v6(58, icmp6_payload(1, 1500)),
        v6(58, icmp6_payload(4, 1500)),
        v6(58, icmp6_payload(127, 1500)),
        v6(58, b""),  # ICMPv6 header missing: Linux treats it as ineligible
        v6(17, bytes(1500))[:-1],
        GOOD4,
    ],
)
def test_packet_too_big_not_sent(packet: bytes) -> None:
    assert icmpv6_packet_too_big(packet, 1400, ROUTER6) is None


def test_packet_too_big_bad_router_address() -> None:
    assert icmpv6_packet_too_big(v6(17, bytes(1500)), 1400, ROUTER4) is None


# -- properties ---------------------------------------------------------------------

V4_ADDR = st.integers(min_value=0x01000000, max_value=0xDFFFFFFF).filter(lambda a: a >> 24 != 127)
V6_ADDR = st.integers(min_value=1, max_value=(1 << 128) - 1).filter(lambda a: a >> 120 != 0xFF)


@given(
    src=V4_ADDR,
    dst=V4_ADDR,
    tos=st.integers(0, 255),
    proto=st.integers(0, 255).filter(lambda p: p != 1),
    size=st.integers(0, 2000),
    mtu=st.integers(576, 1500),
    ttl=st.integers(1, 255),
    ident=st.integers(0, 0xFFFF),
)
def test_built_frag_needed_always_parses_and_checksums(
    src: int, dst: int, tos: int, proto: int, size: int, mtu: int, ttl: int, ident: int
) -> None:
    payload = bytes((i * 31 + size) & 0xFF for i in range(size))
    packet = v4(
        proto, payload, tos=tos,
        src=str(ipaddress.IPv4Address(src)), dst=str(ipaddress.IPv4Address(dst)),
    )  # fmt: skip
    reply = icmpv4_frag_needed(packet, mtu, ROUTER4, ttl=ttl, ident=ident)
    assert reply is not None
    f = parse_v4_reply(reply)
    assert f["header_sum"] == f["icmp_sum"] == 0xFFFF
    assert (f["type"], f["code"], f["mtu"], f["ttl"], f["ident"]) == (3, 4, mtu, ttl, ident)
    assert f["tos"] == (tos & 0x1E) | 0xC0
    assert f["dst"] == packet[12:16]
    assert f["quote"] == packet[:548]
    assert len(reply) <= 576


@given(
    src=V6_ADDR,
    dst=st.integers(min_value=0, max_value=(1 << 128) - 1),
    next_header=st.sampled_from([6, 17, 47, 50, 132]),
    size=st.integers(0, 2000),
    mtu=st.integers(1280, 1500),
)
def test_built_packet_too_big_always_parses_and_checksums(
    src: int, dst: int, next_header: int, size: int, mtu: int
) -> None:
    payload = bytes((i * 13 + size) & 0xFF for i in range(size))
    packet = v6(
        next_header, payload,
        src=str(ipaddress.IPv6Address(src)), dst=str(ipaddress.IPv6Address(dst)),
    )  # fmt: skip
    reply = icmpv6_packet_too_big(packet, mtu, ROUTER6)
    assert reply is not None
    check_v6_reply(reply, packet, mtu, ROUTER6)


@given(st.binary(max_size=1600), st.integers(0, 70000))
def test_builders_never_raise_on_garbage(data: bytes, mtu: int) -> None:
    for reply in (
        icmpv4_frag_needed(data, mtu, ROUTER4),
        icmpv6_packet_too_big(data, mtu, ROUTER6),
    ):
        assert reply is None or validate(reply) is None


@given(
    st.lists(st.sampled_from([0, 43, 60, 51, 44]), max_size=5),
    st.integers(0, 255),
    st.integers(0, 64),
)
def test_extension_header_chains_never_raise(chain: list[int], last: int, pad: int) -> None:
    # Build a chain of headers (some truncated by the pad choice) ending in ``last``.
    body = b""
    kinds = [*chain, last]
    for kind, following in itertools.pairwise(kinds):
        if kind == 44:
            body += bytes([following, 0, 0, 0, 0, 0, 0, 1])
        elif kind == 51:
            body += bytes([following, 1]) + bytes(10)
        else:
            body += bytes([following, 0]) + bytes(6)
    packet = v6(kinds[0], body + bytes(pad))
    reply = icmpv6_packet_too_big(packet, 1280, ROUTER6)
    assert reply is None or validate(reply) is None
