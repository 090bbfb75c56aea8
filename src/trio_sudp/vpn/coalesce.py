"""TCP receive offload for TUN writes: consecutive segments of a flow as one GSO write.

A Linux TUN device opened with ``IFF_VNET_HDR`` takes a 10-byte ``virtio_net_hdr``
before every packet, and with it a *GSO packet*: one IP+TCP header followed by the
payloads of many segments, which the kernel handles as one (as if its own GRO had
merged them: one pass through IP and TCP receive, one ACK instead of one per two
segments). wireguard-go does the same since 0.0.20230223.

:func:`coalesce` turns the packets one UDP batch decrypted into the writes for such
a device (:func:`pure_coalesce`, or the same in the compiled helper
``_offload.c`` where it was built; the tests hold both to one reference). It merges
only what Linux GRO itself would merge (``tcp_gro_receive``):
IPv4 without options and not fragmented, or IPv6 without extension headers; TCP
with only ACK (and PSH on the last segment); the same addresses, ports, TOS or
traffic class, TTL or hop limit, DF, ack number, window and options; sequence
numbers that follow each other; every payload the size of the first except a
shorter last one; at most 64 segments and 65,535 bytes. Everything else is written
as it came, with an all-zero header. Packets of one flow keep their order.

Segment checksums are not verified (that would cost more than the merge saves in
Python): every packet here came out of an authenticated tunnel, and the kernel of
the peer that sent it computed them. The merged packet carries the pseudo-header
sum and ``VIRTIO_NET_HDR_F_NEEDS_CSUM``, as a locally sent GSO packet does.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = [
    "MAX_SEGMENTS",
    "PLAIN_HEADER",
    "VNET_HEADER_SIZE",
    "Write",
    "coalesce",
    "native_coalesce",
    "pure_coalesce",
]

#: ``sizeof(struct virtio_net_hdr)``: the prefix of every read and write.
VNET_HEADER_SIZE: Final = 10
#: The header of a packet written as it is (no GSO, checksums complete).
PLAIN_HEADER: Final = bytes(VNET_HEADER_SIZE)
#: Segments merged into one write at most.
MAX_SEGMENTS: Final = 64

_NEEDS_CSUM: Final = 1
_GSO_TCPV4: Final = 1
_GSO_TCPV6: Final = 4
_MAX_IP_LENGTH: Final = 65535
_TCP_ACK: Final = 0x10
_TCP_PSH: Final = 0x08
_PROTO_TCP: Final = 6

# virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, in the
# host's byte order (a legacy TUN header is native-endian).
_VNET = struct.Struct("=BBHHHH")
_WORDS4 = struct.Struct("!4H")
_WORDS16 = struct.Struct("!16H")
# IPv4 (20 bytes, no options) + TCP up to the window: version/IHL, TOS, total length,
# (id), flags and fragment offset, TTL, protocol, (checksum), addresses and ports,
# seq, ack, data offset, flags, window, (checksum), urgent pointer.
_TCP4 = struct.Struct("!BBH2xHBB2x12sIIBBH2xH")
# IPv6 + TCP up to the window: version/class/label, payload length, next header,
# hop limit, addresses and ports, seq, ack, data offset, flags, window, urgent pointer.
_TCP6 = struct.Struct("!IHBB36sIIBBH2xH")

#: One write: the buffers of one ``writev`` (vnet header, then the packet's parts).
Write = list[bytes | memoryview]


class _Merge:
    """Segments of one flow being merged into one GSO packet."""

    __slots__ = (
        "ack",
        "first",
        "header_size",
        "ip_fields",
        "ip_size",
        "length",
        "next_seq",
        "open",
        "options",
        "payloads",
        "push",
        "segment",
        "window",
    )

    def __init__(
        self,
        first: bytes,
        ip_size: int,
        header_size: int,
        seq: int,
        ack: int,
        window: int,
        ip_fields: int,
        options: bytes,
    ) -> None:
        self.first = first
        self.ip_size = ip_size
        self.header_size = header_size
        self.segment = len(first) - header_size
        self.next_seq = (seq + self.segment) & 0xFFFFFFFF
        self.ack = ack
        self.window = window
        self.ip_fields = ip_fields
        self.options = options
        self.payloads: list[bytes] = []
        self.length = len(first)
        self.push = False
        self.open = True

    def write(self) -> Write:
        if not self.payloads:
            return [PLAIN_HEADER, self.first]
        first, ip_size, header_size = self.first, self.ip_size, self.header_size
        header = bytearray(first[:header_size])
        tcp_length = self.length - ip_size
        if ip_size == 20:
            struct.pack_into("!H", header, 2, self.length)
            header[10:12] = b"\0\0"
            header[10:12] = _checksum(bytes(header[:20])).to_bytes(2, "big")
            pseudo = sum(_WORDS4.unpack_from(first, 12)) + _PROTO_TCP + tcp_length
            gso_type = _GSO_TCPV4
        else:
            struct.pack_into("!H", header, 4, tcp_length)
            pseudo = sum(_WORDS16.unpack_from(first, 8)) + _PROTO_TCP + tcp_length
            gso_type = _GSO_TCPV6
        if self.push:
            header[ip_size + 13] |= _TCP_PSH
        struct.pack_into("!H", header, ip_size + 16, _fold(pseudo))
        vnet = _VNET.pack(_NEEDS_CSUM, gso_type, header_size, self.segment, ip_size, 16)
        return [vnet, bytes(header), memoryview(first)[header_size:], *self.payloads]


def _fold(total: int) -> int:
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _checksum(data: bytes) -> int:
    return ~_fold(sum(struct.unpack(f"!{len(data) // 2}H", data))) & 0xFFFF


def pure_coalesce(packets: list[bytes]) -> list[Write]:
    """The ``writev`` buffers that write ``packets`` to a ``IFF_VNET_HDR`` TUN device.

    Mergeable TCP segments of one flow become one GSO packet; every other packet is
    written alone, in the order given. Never raises on malformed packets: they are
    written as they are, for the kernel to judge.
    """
    items: list[_Merge | bytes] = []
    flows: dict[bytes, _Merge] = {}
    unpack4, unpack6 = _TCP4.unpack_from, _TCP6.unpack_from
    for packet in packets:
        # One unpack per packet. The dict key is the addresses and ports; what else
        # must be equal for two segments to merge is compared on a hit: TOS, DF and
        # TTL (IPv4) or traffic class, flow label and hop limit (IPv6), the ack
        # number, the window, the urgent pointer and the TCP options.
        size = len(packet)
        first = packet[0] if size > 40 else 0
        if first == 0x45:
            _, tos, total, frag, ttl, proto, key, seq, ack, offset, flags, window, urgent = unpack4(
                packet
            )
            if proto != _PROTO_TCP or frag & 0x3FFF or total != size:
                items.append(packet)
                continue
            ip = 20
            ip_fields = tos << 24 | frag << 8 | ttl
        elif first >> 4 == 6 and size > 60:
            ip_fields, length, proto, hops, key, seq, ack, offset, flags, window, urgent = unpack6(
                packet
            )
            if proto != _PROTO_TCP or length != size - 40:
                items.append(packet)
                continue
            ip = 40
            ip_fields = ip_fields << 8 | hops
        else:
            items.append(packet)
            continue
        window = window << 16 | urgent
        header = ip + (offset >> 4) * 4
        if offset & 0x0F or offset < 0x50 or header >= size or flags & ~_TCP_PSH != _TCP_ACK:
            items.append(packet)
            continue
        options = packet[ip + 20 : header] if header > ip + 20 else b""
        merge = flows.get(key)
        if merge is not None and merge.open:
            payload = size - header
            if (
                seq == merge.next_seq
                and payload <= merge.segment
                and ack == merge.ack
                and window == merge.window
                and ip_fields == merge.ip_fields
                and header == merge.header_size
                and options == merge.options
                and merge.length + payload <= _MAX_IP_LENGTH
                and len(merge.payloads) + 1 < MAX_SEGMENTS
            ):
                merge.payloads.append(packet[header:])
                merge.length += payload
                merge.next_seq = (seq + payload) & 0xFFFFFFFF
                if payload < merge.segment or flags & _TCP_PSH:
                    merge.open = False
                    merge.push = bool(flags & _TCP_PSH)
                continue
            merge.open = False
        merge = _Merge(packet, ip, header, seq, ack, window, ip_fields, options)
        if flags & _TCP_PSH:
            merge.open = False
        flows[key] = merge
        items.append(merge)
    return [[PLAIN_HEADER, item] if isinstance(item, bytes) else item.write() for item in items]


try:  # the optional compiled helper (vpn/_offload.c, built at install where possible)
    from . import _offload
except ImportError:  # pragma: no cover - exercised where no compiler was found
    _offload = None  # type: ignore[assignment]


def native_coalesce(packets: list[bytes]) -> list[Write]:
    """:func:`pure_coalesce` in the compiled helper (the same writes, as bytes)."""
    return _offload.coalesce(packets, PLAIN_HEADER)  # type: ignore[return-value]


#: The merging the TUN task uses: the compiled helper's where it is built.
coalesce = native_coalesce if _offload is not None else pure_coalesce
