"""Tiny IP packet builders for tests and demos: ICMP echo, UDP, TCP segments."""

from __future__ import annotations

import ipaddress
import struct

from ..vpn.packet import internet_checksum

__all__ = ["TCP_ACK", "echo_reply_for", "icmp_echo", "ipv4", "tcp_segment", "udp4"]

ICMP = 1
TCP = 6
UDP = 17
TCP_ACK = 0x10


def ipv4(src: str, dst: str, payload: bytes = b"", *, proto: int = ICMP, df: bool = True) -> bytes:
    """An IPv4 packet (20-byte header with a valid checksum) around ``payload``."""
    header = struct.pack(
        ">BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        0x1234,
        0x4000 if df else 0,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    checksum = struct.pack(">H", internet_checksum(header))
    return header[:10] + checksum + header[12:] + payload


def icmp_echo(
    src: str, dst: str, *, sequence: int = 1, size: int = 56, reply: bool = False
) -> bytes:
    """An ICMP echo request (or reply) with ``size`` bytes of data."""
    body = struct.pack(">BBHHH", 0 if reply else 8, 0, 0, 0x5344, sequence) + bytes(size)
    body = body[:2] + struct.pack(">H", internet_checksum(body)) + body[4:]
    return ipv4(src, dst, body)


def echo_reply_for(request: bytes) -> bytes:
    """The reply a host would send to an IPv4 ICMP echo request."""
    src = str(ipaddress.IPv4Address(request[12:16]))
    dst = str(ipaddress.IPv4Address(request[16:20]))
    sequence = struct.unpack(">H", request[26:28])[0]
    return icmp_echo(dst, src, sequence=sequence, size=len(request) - 28, reply=True)


def udp4(src: str, dst: str, sport: int, dport: int, data: bytes) -> bytes:
    """An IPv4 UDP datagram (checksum 0, which IPv4 allows)."""
    return ipv4(src, dst, struct.pack(">HHHH", sport, dport, 8 + len(data), 0) + data, proto=UDP)


def tcp_segment(
    src: str,
    dst: str,
    payload: bytes = b"",
    *,
    seq: int,
    sport: int = 40000,
    dport: int = 5201,
    ack: int = 7777,
    flags: int = TCP_ACK,
    window: int = 502,
    ident: int = 1,
    options: bytes = b"",
    ttl: int = 64,
) -> bytes:
    """An IPv4 or IPv6 (by the addresses) TCP segment with valid checksums."""
    source, destination = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    offset = (20 + len(options)) // 4
    tcp = struct.pack(
        "!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack, offset << 4, flags, window, 0, 0
    )
    tcp += options + payload
    if source.version == 4:
        pseudo = source.packed + destination.packed + struct.pack("!HH", TCP, len(tcp))
    else:
        pseudo = source.packed + destination.packed + struct.pack("!IxxxB", len(tcp), TCP)
    tcp = tcp[:16] + struct.pack("!H", internet_checksum(pseudo + tcp)) + tcp[18:]
    if source.version == 4:
        header = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), ident & 0xFFFF, 0x4000, ttl, TCP, 0,
            source.packed, destination.packed,
        )  # fmt: skip
        header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    else:
        header = struct.pack(
            "!IHBB16s16s", 6 << 28, len(tcp), TCP, ttl, source.packed, destination.packed
        )
    return header + tcp
