"""TCP segmentation for reads from a TSO TUN: one super-packet back into ordinary packets.

A Linux TUN device opened with ``IFF_VNET_HDR`` and offloads on (``TUNSETOFFLOAD``
with ``TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6``, as wireguard-go does since
0.0.20230223) hands over, after the 10-byte ``virtio_net_hdr`` of every read:

- a *GSO packet* (``gso_type`` TCPv4 or TCPv6): one IP+TCP header and up to 64 KB
  of payload, to be cut into ``gso_size``-byte segments;
- a packet with ``VIRTIO_NET_HDR_F_NEEDS_CSUM``: its checksum at ``csum_start +
  csum_offset`` holds only the pseudo-header sum (TCP, UDP, IPv4 and IPv6 alike);
- anything else, complete.

:class:`Segmenter` turns one such read into the IP packets the kernel itself would
have sent on a device without offloads: ``tcp_gso_segment`` and ``inet_gso_segment``
/ ``ipv6_gso_segment`` cut a super-packet (the header copied; the sequence number
advanced by ``gso_size``; FIN and PSH kept on the last segment only, CWR on the
first only; the IPv4 identification incremented per segment, the total length or
IPv6 payload length and the IPv4 header checksum recomputed; every TCP checksum
computed from scratch), and ``skb_checksum_help`` completes a partial checksum
(a zero result written as 0xFFFF). The header's ``hdr_len`` is not trusted (on the
forwarding path it may cover the whole first segment): the TCP header length is read
from the TCP header, as wireguard-go does.

The cost is the checksum of every segment's payload (the kernel's partial sum
covers the pseudo-header only). What stays the same in the headers is summed once
per super-packet, only the fields that change per segment. The payloads: the
pure-Python path uses one big-integer conversion per segment
(``int.from_bytes(chunk) % 0xFFFF`` is the ones' complement sum, as 2**16 ≡ 1 mod
0xFFFF); with numpy installed (the ``fast`` extra) the sums of all full segments of
a super-packet come from one vectorised sum, about ten times cheaper (the whole
split about three times). :func:`numpy_sums` and :func:`pure_sums` give the same
numbers and both are tested. A single packet's partial checksum (every UDP packet
once ``TUN_F_CSUM`` is on) is summed in pure Python without the compiled helper:
numpy costs more than it saves on 1500 bytes.

Where a C compiler was found at install, the compiled helper ``_offload`` (``_offload.c``)
does all of it — the cut, the sums, the completed checksums — about four times
cheaper again than numpy; the tests hold all paths to one reference.

Reads the kernel would never produce (unknown GSO types, lengths that do not add up)
are dropped and counted by reason, without raising.
"""

from __future__ import annotations

import enum
import functools
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Final

import attrs

from .coalesce import VNET_HEADER_SIZE

__all__ = [
    "GSO_ECN",
    "GSO_NONE",
    "GSO_TCPV4",
    "GSO_TCPV6",
    "GSO_UDP_L4",
    "NATIVE",
    "NEEDS_CSUM",
    "VNET_HEADER",
    "VNET_HEADER_SIZE",
    "PayloadSums",
    "SegmentDrop",
    "SegmentStats",
    "Segmenter",
    "best_segmenter",
    "best_sums",
    "native_sums",
    "numpy_sums",
    "pure_sums",
]

try:  # the optional compiled helper (vpn/_offload.c, built at install where possible)
    from . import _offload
except ImportError:  # pragma: no cover - exercised where no compiler was found
    _offload = None  # type: ignore[assignment]

#: Whether the compiled helper is there.
NATIVE: Final = _offload is not None

#: ``struct virtio_net_hdr``: flags, gso_type, hdr_len, gso_size, csum_start,
#: csum_offset, in the host's byte order (a legacy TUN header is native-endian).
VNET_HEADER: Final = struct.Struct("=BBHHHH")
#: ``VIRTIO_NET_HDR_F_NEEDS_CSUM``: the checksum at csum_start + csum_offset is partial.
NEEDS_CSUM: Final = 1
GSO_NONE: Final = 0
GSO_TCPV4: Final = 1
GSO_TCPV6: Final = 4
GSO_UDP_L4: Final = 5
#: ``VIRTIO_NET_HDR_GSO_ECN``: the TCP header may carry CWR (``TUN_F_TSO_ECN`` only).
GSO_ECN: Final = 0x80

_LITTLE_ENDIAN: Final = sys.byteorder == "little"
_TCP_FIN: Final = 0x01
_TCP_PSH: Final = 0x08
_TCP_CWR: Final = 0x80
_PROTO_TCP: Final = 6
_MIN_TCP_HEADER: Final = 20

#: The payload sums of ``count`` chunks of ``size`` bytes of ``data`` from ``start``:
#: each an integer congruent modulo 0xFFFF to the chunk's ones' complement sum of
#: 16-bit big-endian words (an odd last byte padded with a zero).
PayloadSums = Callable[[bytes, int, int, int], Sequence[int]]


class SegmentDrop(enum.Enum):
    """Why a read from a TSO TUN gave no packet. Values are stable codes."""

    #: Nothing after the vnet header.
    SHORT = "vnet_short"
    #: A GSO type other than TCPv4 / TCPv6 (UDP GSO is never turned on).
    GSO_UNSUPPORTED = "gso_unsupported"
    #: A GSO packet whose IP version, header lengths or offsets do not add up.
    GSO_MALFORMED = "gso_malformed"
    #: ``NEEDS_CSUM`` with a checksum offset outside the packet.
    CSUM_MALFORMED = "csum_malformed"


@attrs.define
class SegmentStats:
    """Counters of one :class:`Segmenter`."""

    #: Reads split into segments (GSO packets).
    gso_reads: int = 0
    #: Segments those reads gave.
    segments: int = 0
    #: Packets whose partial checksum was completed (``NEEDS_CSUM``, no GSO).
    checksums: int = 0
    #: Reads dropped, by reason.
    drops: dict[SegmentDrop, int] = attrs.Factory(dict)


def pure_sums(data: bytes, start: int, size: int, count: int) -> list[int]:
    """:data:`PayloadSums` with one big-integer conversion per chunk (no numpy).

    ``int.from_bytes(chunk) % 0xFFFF`` is the sum (2**16 ≡ 1 mod 0xFFFF). Three folds
    first (``n = (n >> k) + (n & (2**k - 1))`` for k a multiple of 16 keeps ``n``
    modulo 0xFFFF) leave the slow single-digit division an eighth of the digits.
    """
    from_bytes = int.from_bytes
    k1, m1, k2, m2, k3, m3 = _folds(size)
    shift = 8 if size & 1 else 0  # an odd last byte is the high byte of a word
    sums = []
    for a in range(start, start + size * count, size):
        n = from_bytes(data[a : a + size]) << shift
        n = (n >> k1) + (n & m1)
        n = (n >> k2) + (n & m2)
        n = (n >> k3) + (n & m3)
        sums.append(n % 0xFFFF)
    return sums


def _sum(chunk: bytes) -> int:
    """The ones' complement sum of ``chunk`` modulo 0xFFFF (0 for a sum of 0xFFFF)."""
    size = len(chunk)
    n = int.from_bytes(chunk) << (8 if size & 1 else 0)
    k1, m1, k2, m2, k3, m3 = _folds(size) if size <= _CACHED_FOLDS else _fold_masks(size)
    n = (n >> k1) + (n & m1)
    n = (n >> k2) + (n & m2)
    n = (n >> k3) + (n & m3)
    return n % 0xFFFF


def _fold_masks(size: int) -> tuple[int, int, int, int, int, int]:
    """The widths and masks of the three folds of a ``size``-byte integer."""
    k1 = _half(size * 8)
    k2 = _half(k1)
    k3 = _half(k2)
    return k1, (1 << k1) - 1, k2, (1 << k2) - 1, k3, (1 << k3) - 1


# Masks of every size up to 2 KB, under 2 MB of them (larger ones are made per call).
_CACHED_FOLDS: Final = 2048
_folds = functools.lru_cache(maxsize=_CACHED_FOLDS)(_fold_masks)


def _half(bits: int) -> int:
    """Half of ``bits``, rounded up to a multiple of 16 (at least 16)."""
    return max(16, (bits // 2 + 15) // 16 * 16)


def numpy_sums(data: bytes, start: int, size: int, count: int) -> list[int]:
    """:data:`PayloadSums` with one vectorised numpy sum over all chunks.

    Sums 32-bit words when ``size`` allows (half the additions of 16-bit ones, and
    ``w32 = hi * 2**16 + lo ≡ hi + lo``) in the host's byte order (no byte swap: on a
    little-endian host the sum is that of the byte-swapped words, ≡ 256 × the
    big-endian sum, and 256 × 256 ≡ 1, so one more × 256 gives it back).
    """
    if size & 1:
        return pure_sums(data, start, size, count)
    import numpy as np

    width = 4 if size % 4 == 0 else 2
    words = np.frombuffer(data, dtype=f"=u{width}", count=size * count // width, offset=start)
    totals = words.reshape(count, size // width).sum(axis=1, dtype=np.uint64)
    if _LITTLE_ENDIAN:
        totals <<= np.uint64(8)
    sums: list[int] = totals.tolist()
    return sums


def native_sums(data: bytes, start: int, size: int, count: int) -> list[int]:
    """:data:`PayloadSums` in the compiled helper (:data:`NATIVE` must be true)."""
    return _offload.sums(data, start, size, count)


def best_sums() -> PayloadSums:
    """The compiled helper's sums, else :func:`numpy_sums` when numpy can be imported,
    else :func:`pure_sums`."""
    if NATIVE:
        return native_sums
    try:
        import numpy  # noqa: F401
    except ImportError:
        return pure_sums
    return numpy_sums


def best_segmenter() -> Segmenter:
    """A segmenter with the compiled helper where it is built, else the best sums."""
    return Segmenter(native=True) if NATIVE else Segmenter(best_sums())


class Segmenter:
    """Splits reads from a TSO TUN into IP packets (see the module docstring)."""

    __slots__ = ("_native", "_sums", "stats")

    def __init__(self, sums: PayloadSums = pure_sums, *, native: bool = False) -> None:
        """``sums`` computes the payload sums of the segments (see :func:`best_sums`);
        ``native`` cuts and completes checksums in the compiled helper instead."""
        if native and not NATIVE:
            raise RuntimeError("the compiled helper trio_sudp.vpn._offload is not built")
        self._sums = native_sums if native else sums
        self._native = native
        self.stats = SegmentStats()

    def split(self, data: bytes) -> list[bytes]:
        """The IP packets of one read ``data`` (vnet header first); ``[]`` if dropped."""
        if len(data) <= VNET_HEADER_SIZE:
            return self._drop(SegmentDrop.SHORT)
        flags, gso_type, _, gso_size, csum_start, csum_offset = VNET_HEADER.unpack_from(data)
        if gso_type == GSO_NONE:
            if flags & NEEDS_CSUM:
                return self._complete(data, csum_start, csum_offset)
            return [data[VNET_HEADER_SIZE:]]
        return self._segment(data, gso_type, gso_size, csum_start, csum_offset)

    def _drop(self, reason: SegmentDrop) -> list[bytes]:
        drops = self.stats.drops
        drops[reason] = drops.get(reason, 0) + 1
        return []

    def _complete(self, data: bytes, csum_start: int, csum_offset: int) -> list[bytes]:
        """``skb_checksum_help``: sum from csum_start to the end, store the complement."""
        start = VNET_HEADER_SIZE + csum_start
        at = start + csum_offset
        if at + 2 > len(data):
            return self._drop(SegmentDrop.CSUM_MALFORMED)
        self.stats.checksums += 1
        # 0xFFFF - s is never 0: a zero result is written as 0xFFFF (CSUM_MANGLED_0),
        # zero meaning "no checksum" to UDP over IPv4.
        checksum = 0xFFFF - (_offload.checksum(data, start) if self._native else _sum(data[start:]))
        return [data[VNET_HEADER_SIZE:at] + checksum.to_bytes(2) + data[at + 2 :]]

    def _segment(
        self, data: bytes, gso_type: int, mss: int, ip: int, csum_offset: int
    ) -> list[bytes]:
        o = VNET_HEADER_SIZE
        gso = gso_type & ~GSO_ECN
        if gso != GSO_TCPV4 and gso != GSO_TCPV6:
            return self._drop(SegmentDrop.GSO_UNSUPPORTED)
        size = len(data)
        v4 = gso == GSO_TCPV4
        first = data[o]
        if (
            ip < (20 if v4 else 40)
            or o + ip + _MIN_TCP_HEADER >= size
            or first >> 4 != (4 if v4 else 6)
            or (v4 and ((first & 0x0F) * 4 != ip or data[o + 9] != _PROTO_TCP))
            or csum_offset != 16
            or mss == 0
        ):
            return self._drop(SegmentDrop.GSO_MALFORMED)
        tcp_header = (data[o + ip + 12] >> 4) * 4
        hdr = ip + tcp_header
        payload = size - o - hdr
        if tcp_header < _MIN_TCP_HEADER or payload <= 0:
            return self._drop(SegmentDrop.GSO_MALFORMED)
        count = -(-payload // mss)
        stats = self.stats
        stats.gso_reads += 1
        stats.segments += count
        if self._native:
            return _offload.cut(data, v4, ip, hdr, mss)
        return _cut(data, v4, ip, hdr, mss, count, self._sums)


def _cut(
    data: bytes, v4: bool, ip: int, hdr: int, mss: int, count: int, sums: PayloadSums
) -> list[bytes]:
    """The ``count`` segments of a validated GSO packet (after its vnet header).

    Per super-packet: the sums of the header fields that stay the same, and one
    struct for the header around the fields that change. Per segment: the sequence
    number, the IPv4 identification, the two checksums, and the TCP flags of the
    first and last segments.
    """
    o = VNET_HEADER_SIZE
    end = len(data)
    p0 = o + hdr
    from_bytes = int.from_bytes
    header = data[o : o + hdr]
    t = ip  # where the TCP header starts
    seq0 = from_bytes(header[t + 4 : t + 8])
    flags = header[t + 13]
    # Word-aligned pieces of even length: the integer of their concatenation is
    # congruent to the sum of their 16-bit words.
    fixed = from_bytes(
        header[t : t + 4] + header[t + 8 : t + 12] + header[t + 14 : t + 16] + header[t + 18 : hdr]
    ) + (header[t + 12] << 8)
    fixed += from_bytes(header[12:20] if v4 else header[8:40]) + _PROTO_TCP  # pseudo-header
    ident0 = from_bytes(header[4:6]) if v4 else 0
    ip_fixed = from_bytes(header[:2] + header[6:10] + header[12:ip]) if v4 else 0
    middle, addresses = header[6:10], header[12 : t + 4]
    before, after, tail = header[t + 8 : t + 13], header[t + 14 : t + 16], header[t + 18 : hdr]

    def layout(n: int) -> tuple[Callable[..., bytes], bytes]:
        """How to pack a segment with ``n`` payload bytes, and its fixed start."""
        if v4:
            fmt = f"!4sH4sH{ip - 8}sI8sH{hdr - t - 18}s{n}s"
            return struct.Struct(fmt).pack, header[:2] + (hdr + n).to_bytes(2)
        fmt = f"!{t + 4}sI8sH{hdr - t - 18}s{n}s"
        return struct.Struct(fmt).pack, header[:4] + (hdr - 40 + n).to_bytes(2) + header[6 : t + 4]

    def one(i: int, n: int, tcp_flags: int, body: int) -> bytes:
        """Segment ``i``, of ``n`` payload bytes, whose payload sums to ``body``."""
        pack, start = layout(n)
        a = p0 + i * mss
        seq = (seq0 + i * mss) & 0xFFFFFFFF
        check = 0xFFFE - (fixed + hdr - ip + n + tcp_flags + seq + body - 1) % 0xFFFF
        if count == 1:
            check = check or 0xFFFF  # not cut: the kernel completes it (skb_checksum_help)
        piece = before + tcp_flags.to_bytes() + after
        if not v4:
            return pack(start, seq, piece, check, tail, data[a : a + n])
        ident = (ident0 + i) & 0xFFFF
        ip_check = 0xFFFE - (ip_fixed + hdr + n + ident - 1) % 0xFFFF
        return pack(
            start, ident, middle, ip_check, addresses, seq, piece, check, tail, data[a : a + n]
        )

    last = count - 1
    full = count if (end - p0) % mss == 0 else last  # segments of mss bytes
    body_sums = sums(data, p0, mss, full)
    if not last:
        return [one(0, end - p0, flags, body_sums[0] if full else _sum(data[p0:]))]
    out = [one(0, mss, flags & ~(_TCP_FIN | _TCP_PSH), body_sums[0])]
    # The middle segments, all alike: only what changes per segment is computed.
    middle_flags = flags & ~(_TCP_FIN | _TCP_PSH | _TCP_CWR)
    pack, start = layout(mss)
    piece = before + middle_flags.to_bytes() + after
    base = fixed + hdr - ip + mss + middle_flags - 1
    ip_base = ip_fixed + hdr + mss - 1
    append = out.append
    for i in range(1, last):
        a = p0 + i * mss
        seq = (seq0 + i * mss) & 0xFFFFFFFF
        check = 0xFFFE - (base + seq + body_sums[i]) % 0xFFFF
        if v4:
            ident = (ident0 + i) & 0xFFFF
            ip_check = 0xFFFE - (ip_base + ident) % 0xFFFF
            append(
                pack(
                    start, ident, middle, ip_check, addresses, seq, piece, check, tail,
                    data[a : a + mss],
                )
            )  # fmt: skip
        else:
            append(pack(start, seq, piece, check, tail, data[a : a + mss]))
    n = end - p0 - last * mss
    body = body_sums[last] if full == count else _sum(data[end - n :])
    out.append(one(last, n, flags & ~_TCP_CWR, body))
    return out
