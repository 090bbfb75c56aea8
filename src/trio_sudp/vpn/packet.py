"""Fast helpers on raw IP packets (IPv4 and IPv6) carried inside the tunnel.

Everything here works on ``bytes`` and does no I/O. The accessors do not validate:
call :func:`check_untrusted` (or :func:`validate`) first on a packet from the network.
For the per-packet path prefer the raw forms, which are plain slices
(``packet[16:20]`` is an IPv4 destination, ``packet[24:40]`` an IPv6 one).

The ICMP builders answer an oversized packet the way Linux's forwarding path does
(``ip_forward`` → ``icmp_send`` and ``ip6_forward`` → ``icmp6_send``): same header
fields, same quoting limits (576 / 1280 bytes), same refusals (no error about an
ICMP error, about a non-unicast source, about a non-first IPv4 fragment...). What
the kernel picks at random (the IPv4 identification, the IPv6 flow label) is a
parameter here, and IP options of the original are not echoed back.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from typing import Final

from ..protocol.errors import SUDPError

__all__ = [
    "ICMPV4_ERROR_MAX",
    "ICMPV6_ERROR_MAX",
    "IPV4_HEADER_SIZE",
    "IPV6_HEADER_SIZE",
    "BadIPPacket",
    "IPAddress",
    "IPDropReason",
    "check_untrusted",
    "destination_address",
    "destination_raw",
    "dont_fragment",
    "icmpv4_frag_needed",
    "icmpv6_checksum",
    "icmpv6_packet_too_big",
    "internet_checksum",
    "ip_version",
    "source_address",
    "source_raw",
    "to_raw_address",
    "total_length",
    "validate",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

IPV4_HEADER_SIZE: Final = 20
IPV6_HEADER_SIZE: Final = 40
#: An ICMPv4 error, IP header included, is at most this long (RFC 1812 4.3.2.3).
ICMPV4_ERROR_MAX: Final = 576
#: An ICMPv6 error is at most the IPv6 minimum MTU (RFC 4443 2.4 (c)).
ICMPV6_ERROR_MAX: Final = 1280

PROTO_ICMP: Final = 1
PROTO_ICMPV6: Final = 58
ICMP_DEST_UNREACH: Final = 3
ICMP_FRAG_NEEDED: Final = 4
ICMPV6_PACKET_TOO_BIG: Final = 2
DEFAULT_TTL: Final = 64  # Linux net.ipv4.ip_default_ttl / net.ipv6.conf.*.hop_limit

_IP_DF: Final = 0x4000
_IP_OFFSET: Final = 0x1FFF
# ICMPv4 types Linux counts as errors (icmp_pointers[].error); types above 18
# (NR_ICMP_TYPES) are treated as errors too.
_ICMPV4_ERROR_TYPES: Final = frozenset({3, 4, 5, 11, 12})
_NR_ICMP_TYPES: Final = 18
# IPv6 extension headers ipv6_skip_exthdr walks: hop-by-hop, routing, fragment,
# authentication, no-next-header, destination options.
_IPV6_EXT_HEADERS: Final = frozenset({0, 43, 44, 51, 59, 60})

_PSEUDO_NEXT_HEADER: Final = bytes((0, 0, 0, PROTO_ICMPV6))
_V4_HEADER: Final = struct.Struct(">BBHHHBBH4s4s")
_V6_HEADER: Final = struct.Struct(">IHBB16s16s")
_ICMP_HEADER: Final = struct.Struct(">BBHI")


class IPDropReason(enum.Enum):
    """Why an inner packet is not a well-formed IP packet. Values are stable codes."""

    TOO_SHORT = "ip_too_short"
    BAD_VERSION = "ip_bad_version"
    BAD_HEADER_LENGTH = "ip_bad_header_length"
    BAD_TOTAL_LENGTH = "ip_bad_total_length"


class BadIPPacket(SUDPError):
    """An inner packet from the network or the TUN device is not a well-formed IP packet."""

    def __init__(self, reason: IPDropReason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


def _problem(packet: bytes) -> tuple[IPDropReason, str] | None:
    n = len(packet)
    if n == 0:
        return IPDropReason.TOO_SHORT, "empty packet"
    version = packet[0] >> 4
    if version == 4:
        if n < IPV4_HEADER_SIZE:
            return IPDropReason.TOO_SHORT, f"{n} bytes, an IPv4 header needs 20"
        ihl = (packet[0] & 0x0F) * 4
        if ihl < IPV4_HEADER_SIZE or ihl > n:
            return IPDropReason.BAD_HEADER_LENGTH, f"header length {ihl} in a {n}-byte packet"
        total = (packet[2] << 8) | packet[3]
        if total != n:
            return IPDropReason.BAD_TOTAL_LENGTH, f"total length {total}, packet has {n} bytes"
        return None
    if version == 6:
        if n < IPV6_HEADER_SIZE:
            return IPDropReason.TOO_SHORT, f"{n} bytes, an IPv6 header needs 40"
        total = IPV6_HEADER_SIZE + ((packet[4] << 8) | packet[5])
        if total != n:
            # Also refuses jumbograms (payload length 0): no tunnel MTU allows them.
            return IPDropReason.BAD_TOTAL_LENGTH, f"40 + payload length = {total}, packet has {n}"
        return None
    return IPDropReason.BAD_VERSION, f"IP version {version}"


def validate(packet: bytes) -> IPDropReason | None:
    """Return why ``packet`` is not a well-formed IPv4/IPv6 packet, or None if it is.

    Checks the version, that the header fits, and that the header's total length
    (IPv4) or 40 + payload length (IPv6) is exactly the packet's length. It does not
    verify the IPv4 header checksum (the receiving kernel does).
    """
    problem = _problem(packet)
    return None if problem is None else problem[0]


def check_untrusted(packet: bytes) -> int:
    """Return the IP version (4 or 6) of a well-formed packet; raise :class:`BadIPPacket`."""
    problem = _problem(packet)
    if problem is not None:
        raise BadIPPacket(*problem)
    return packet[0] >> 4


def ip_version(packet: bytes) -> int:
    """The version nibble of the first byte (4 or 6 in a valid packet)."""
    return packet[0] >> 4


def source_raw(packet: bytes) -> bytes:
    """The source address as 4 (IPv4) or 16 (IPv6) raw bytes."""
    return packet[12:16] if packet[0] >> 4 == 4 else packet[8:24]


def destination_raw(packet: bytes) -> bytes:
    """The destination address as 4 (IPv4) or 16 (IPv6) raw bytes."""
    return packet[16:20] if packet[0] >> 4 == 4 else packet[24:40]


def source_address(packet: bytes) -> IPAddress:
    """The source address as an :mod:`ipaddress` object (slower than :func:`source_raw`)."""
    return ipaddress.ip_address(source_raw(packet))


def destination_address(packet: bytes) -> IPAddress:
    """The destination address as an :mod:`ipaddress` object."""
    return ipaddress.ip_address(destination_raw(packet))


def total_length(packet: bytes) -> int:
    """The length the header claims: IPv4 total length, or 40 + IPv6 payload length."""
    if packet[0] >> 4 == 4:
        return (packet[2] << 8) | packet[3]
    return IPV6_HEADER_SIZE + ((packet[4] << 8) | packet[5])


def dont_fragment(packet: bytes) -> bool:
    """Whether routers may not fragment it: the DF bit for IPv4, always for IPv6."""
    return packet[0] >> 4 != 4 or bool(packet[6] & 0x40)


def to_raw_address(address: str | bytes | IPAddress) -> bytes:
    """An address as 4 or 16 raw bytes; accepts text, raw bytes or ``ipaddress`` objects."""
    if isinstance(address, bytes):
        if len(address) not in (4, 16):
            raise ValueError(f"a raw IP address has 4 or 16 bytes, not {len(address)}")
        return address
    if isinstance(address, str):
        address = ipaddress.ip_address(address)
    return address.packed


def internet_checksum(data: bytes) -> int:
    """The RFC 1071 checksum of ``data`` (ones' complement of the ones' complement sum).

    Uses 2**16 ≡ 1 (mod 0xFFFF): the big-endian integer of the data is congruent to
    the sum of its 16-bit words, so one big-int ``%`` replaces a loop over words.
    """
    if len(data) & 1:
        data += b"\x00"
    n = int.from_bytes(data, "big")
    folded = n % 0xFFFF
    if folded == 0 and n != 0:
        folded = 0xFFFF  # a nonzero sum with end-around carry is never 0
    return ~folded & 0xFFFF


def _unicast_v4(raw: bytes) -> bool:
    # Not 0/8, loopback, multicast or class E/broadcast. RFC 1122 3.2.2: no ICMP error
    # about a datagram whose source is not one host or that went to a multicast or
    # broadcast address; Linux never forwards such datagrams, so never answers them.
    first = raw[0]
    return first != 0 and first != 127 and first < 224


def icmpv4_frag_needed(
    packet: bytes, mtu: int, source: bytes, *, ttl: int = DEFAULT_TTL, ident: int = 0
) -> bytes | None:
    """Build ICMP Destination Unreachable / Fragmentation Needed (type 3 code 4) for
    an IPv4 ``packet`` too big for a next hop of ``mtu`` bytes, sent from ``source``
    (4 raw bytes, the router's address) back to the packet's source.

    Returns None where Linux sends nothing: malformed or non-IPv4 packet, DF clear
    (the packet may be fragmented instead), not the first fragment, an ICMP error
    (or unknown ICMP type) inside, a multicast/broadcast destination, or a source
    that is not a single unicast host.
    """
    if _problem(packet) is not None or packet[0] >> 4 != 4 or len(source) != 4:
        return None
    flags_offset = (packet[6] << 8) | packet[7]
    if not flags_offset & _IP_DF or flags_offset & _IP_OFFSET:
        return None
    if not (_unicast_v4(packet[12:16]) and _unicast_v4(packet[16:20])):
        return None  # Linux drops these as martians before any MTU check
    ihl = (packet[0] & 0x0F) * 4
    if packet[9] == PROTO_ICMP:
        if ihl >= len(packet):
            return None  # Linux: cannot read the inner type → no reply
        inner_type = packet[ihl]
        if inner_type > _NR_ICMP_TYPES or inner_type in _ICMPV4_ERROR_TYPES:
            return None
    room = max(min(mtu, ICMPV4_ERROR_MAX) - IPV4_HEADER_SIZE - 8, 0)
    quoted = packet[:room]
    icmp = _ICMP_HEADER.pack(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, 0, mtu & 0xFFFF) + quoted
    icmp = icmp[:2] + internet_checksum(icmp).to_bytes(2, "big") + icmp[4:]
    # TOS as Linux sets it for errors: original TOS bits (mask 0x1E) | precedence 0xC0.
    tos = (packet[1] & 0x1E) | 0xC0
    header = _V4_HEADER.pack(
        0x45, tos, IPV4_HEADER_SIZE + len(icmp), ident & 0xFFFF, 0, ttl, PROTO_ICMP, 0,
        source, packet[12:16],
    )  # fmt: skip
    header = header[:10] + internet_checksum(header).to_bytes(2, "big") + header[12:]
    return header + icmp


def _ipv6_upper_layer(packet: bytes) -> tuple[int, int, int]:
    """Skip IPv6 extension headers as Linux's ``ipv6_skip_exthdr`` does.

    Returns (next header, its offset, fragment offset field); offset -1 when the
    chain cannot be followed (truncated, or "no next header").
    """
    nexthdr = packet[6]
    start = IPV6_HEADER_SIZE
    frag_off = 0
    n = len(packet)
    while nexthdr in _IPV6_EXT_HEADERS:
        if nexthdr == 59 or start + 2 > n:
            return nexthdr, -1, frag_off
        if nexthdr == 44:
            if start + 4 > n:
                return nexthdr, -1, frag_off
            frag_off = (packet[start + 2] << 8) | packet[start + 3]
            if frag_off & ~0x7:
                break  # not the first fragment: the upper-layer header is elsewhere
            hdrlen = 8
        elif nexthdr == 51:
            hdrlen = (packet[start + 1] + 2) << 2
        else:
            hdrlen = (packet[start + 1] + 1) << 3
        nexthdr = packet[start]
        start += hdrlen
    return nexthdr, start, frag_off


def _icmpv6_ineligible(packet: bytes) -> bool:
    """Linux's ``is_ineligible``: True when the packet is (or may be) an ICMPv6 error."""
    nexthdr, start, frag_off = _ipv6_upper_layer(packet)
    if start < 0 or nexthdr != PROTO_ICMPV6:
        return False
    if start >= len(packet):
        return frag_off == 0
    return packet[start] < 128  # types below 128 are errors


def icmpv6_checksum(source: bytes, destination: bytes, message: bytes) -> int:
    """The ICMPv6 checksum of ``message`` (checksum field zero) with the pseudo-header."""
    pseudo = source + destination + len(message).to_bytes(4, "big") + _PSEUDO_NEXT_HEADER
    return internet_checksum(pseudo + message)


def icmpv6_packet_too_big(
    packet: bytes, mtu: int, source: bytes, *, hop_limit: int = DEFAULT_TTL, flow_label: int = 0
) -> bytes | None:
    """Build ICMPv6 Packet Too Big (type 2, code 0) for an IPv6 ``packet`` too big for
    a next hop of ``mtu`` bytes, sent from ``source`` (16 raw bytes) to its source.

    Unlike IPv4 this is due for multicast destinations and later fragments too.
    Returns None where Linux sends nothing: malformed or non-IPv6 packet, an
    unspecified or multicast source, or an ICMPv6 error inside.
    """
    if _problem(packet) is not None or packet[0] >> 4 != 6 or len(source) != 16:
        return None
    to = packet[8:24]
    if to[0] == 0xFF or to == bytes(16):
        return None
    if _icmpv6_ineligible(packet):
        return None
    quoted = packet[: ICMPV6_ERROR_MAX - IPV6_HEADER_SIZE - 8]
    message = _ICMP_HEADER.pack(ICMPV6_PACKET_TOO_BIG, 0, 0, mtu & 0xFFFFFFFF) + quoted
    checksum = icmpv6_checksum(source, to, message)
    message = message[:2] + checksum.to_bytes(2, "big") + message[4:]
    header = _V6_HEADER.pack(
        0x60000000 | (flow_label & 0xFFFFF), len(message), PROTO_ICMPV6, hop_limit,
        source, to,
    )  # fmt: skip
    return header + message
