"""The data codec (SPEC §2 "Data"): sealing and opening Data messages, the per-packet path.

A Data datagram is ``header(20) || nonce(12) || AES-256-GCM(tag || payload)``, where
``tag`` is the header tag of the 20 header bytes. :func:`seal_data` and
:func:`open_data` are the one implementation of each direction; a session's
:class:`DataCodec` holds what they need for one peer, built once, so that a packet
costs one struct pack or unpack, one AES-GCM call and one header tag.

Opening returns the payload or a :class:`~trio_sudp.protocol.errors.DropReason`: a
bad datagram from the network is an ordinary outcome, not an exception.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .clock import SystemClock, WallClock
from .constants import (
    GCM_TAG_SIZE,
    HEADER_SIZE,
    NONCE_SIZE,
    Kind,
    Version,
    data_overhead,
    max_payload,
    tag_size,
    timestamp_unit_us,
)
from .crypto import HeaderTagger, constant_time_equal
from .epochs import EpochKey
from .errors import DropReason, PayloadTooLarge

__all__ = [
    "DATA_HEAD",
    "MIN_DATA_BODY",
    "MIN_DATA_DATAGRAM",
    "DataCodec",
    "encode_data",
    "open_data",
    "seal_data",
]

#: The header and the nonce of a Data datagram as the data path reads and writes them:
#: (ver << 8 | kind, len, src << 16 | dst, epoch, time, nonce prefix, nonce counter).
DATA_HEAD: Final = struct.Struct(">HHIIQIQ")
#: A Data body holds at least a nonce and a GCM tag (SPEC §6: less crashes Go peers).
MIN_DATA_BODY: Final = NONCE_SIZE + GCM_TAG_SIZE
MIN_DATA_DATAGRAM: Final = HEADER_SIZE + MIN_DATA_BODY
_SEALED: Final = HEADER_SIZE + NONCE_SIZE
_NONCE: Final = struct.Struct(">IQ")
_U64_MAX: Final = (1 << 64) - 1


def seal_data(head: bytes, payload: bytes, aead: AESGCM, tagger: HeaderTagger) -> bytes:
    """The Data datagram of ``head`` (20 header bytes, then the 12-byte nonce) and ``payload``."""
    return head + aead.encrypt(head[HEADER_SIZE:], tagger(head[:HEADER_SIZE]) + payload, None)


def open_data(
    datagram: bytes, length: int, aead: AESGCM, tagger: HeaderTagger, tag_len: int
) -> bytes | DropReason:
    """Decrypt a Data datagram whose header ``len`` is ``length`` and check its inner tag.

    The caller checked the header: ``length`` is at least :data:`MIN_DATA_BODY` and
    fits the datagram. Returns the payload, or why the datagram is refused.
    """
    try:
        plaintext = aead.decrypt(
            datagram[HEADER_SIZE:_SEALED], datagram[_SEALED : HEADER_SIZE + length], None
        )
    except InvalidTag:
        return DropReason.GCM_AUTH_FAIL
    if len(plaintext) < tag_len:
        return DropReason.PLAINTEXT_TOO_SHORT
    if not constant_time_equal(plaintext[:tag_len], tagger(datagram[:HEADER_SIZE])):
        return DropReason.INNER_TAG_MISMATCH
    return plaintext[tag_len:]


def check_payload_size(version: Version, size: int) -> None:
    """Raise :class:`PayloadTooLarge` above what a Go peer reads: 1996 (v2) / 1976 (v3) bytes."""
    limit = max_payload(version)
    if size > limit:
        raise PayloadTooLarge(f"payload of {size} bytes exceeds the SUDP v{version} limit {limit}")


def encode_data(
    version: Version,
    *,
    src: int,
    dst: int,
    epoch: int,
    time: int,
    payload: bytes,
    tagger: HeaderTagger,
    aead: AESGCM,
    nonce: bytes,
) -> bytes:
    """A Data datagram from explicit fields (known answers, tests); every field is checked."""
    check_payload_size(version, len(payload))
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
    if not 0 <= time <= _U64_MAX:
        raise ValueError("time out of range")
    prefix, counter = _NONCE.unpack(nonce)
    try:
        head = DATA_HEAD.pack(
            version << 8 | Kind.DATA,
            len(payload) + data_overhead(version),
            src << 16 | dst,
            epoch,
            time,
            prefix,
            counter,
        )
    except struct.error as exc:
        raise ValueError(f"header field out of range: {exc}") from None
    return seal_data(head, payload, aead, tagger)


def _ns_clock(clock: WallClock) -> Callable[[], int]:
    """``clock`` in nanoseconds; the system clock without a Python call in between."""
    if type(clock) is SystemClock:
        return time.time_ns
    now_us = clock.now_us
    return lambda: now_us() * 1000


class DataCodec:
    """Data between us and one peer: header fields, header tag and limits, built once.

    ``kind``, ``rx_route`` and ``tx_route`` are header fields packed the way
    :data:`DATA_HEAD` unpacks them, so that the receive path compares whole integers.
    """

    __slots__ = (
        "_ns_per_unit",
        "_overhead",
        "kind",
        "max_payload",
        "rx_route",
        "tag_len",
        "tagger",
        "time_ns",
        "tx_route",
        "unit_us",
    )

    def __init__(
        self,
        version: Version,
        *,
        own_vaddr: int,
        peer_vaddr: int,
        tagger: HeaderTagger,
        clock: WallClock,
    ) -> None:
        self.kind = version << 8 | Kind.DATA
        self.rx_route = peer_vaddr << 16 | own_vaddr
        self.tx_route = own_vaddr << 16 | peer_vaddr
        self.tagger = tagger
        self.tag_len = tag_size(version)
        self.max_payload = max_payload(version)
        self._overhead = data_overhead(version)
        #: Microseconds per unit of the header ``time`` (1000 for v2, 1 for v3).
        self.unit_us = timestamp_unit_us(version)
        self._ns_per_unit = 1000 * self.unit_us
        #: The wall clock in nanoseconds.
        self.time_ns = _ns_clock(clock)

    def seal(self, key: EpochKey, payload: bytes) -> bytes:
        """``payload`` encrypted under ``key`` with our next nonce (its size is checked)."""
        counter = key.nonce_counter = key.nonce_counter + 1
        head = DATA_HEAD.pack(
            self.kind,
            len(payload) + self._overhead,
            self.tx_route,
            key.epoch,
            self.time_ns() // self._ns_per_unit,
            key.nonce_prefix,
            counter,
        )
        return seal_data(head, payload, key.aead, self.tagger)
