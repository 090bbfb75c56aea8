"""Wire constants of SUDP protocol versions 2 and 3 (SPEC §1-§2, §7)."""

from __future__ import annotations

import enum
from typing import Final


class Version(enum.IntEnum):
    """SUDP wire version: 2 (CRC-32 header tag, ms timestamps) or 3 (keyed BLAKE2b, µs)."""

    V2 = 2
    V3 = 3


class Kind(enum.IntEnum):
    """Message kind, the second header byte."""

    CLIENT_HANDSHAKE = 1
    SERVER_HANDSHAKE = 2
    CONTROL = 3
    DATA = 4


class ControlFlag(enum.IntFlag):
    """Bits of a Control message's ``flags`` field."""

    KEEPALIVE = 0x01
    RTT = 0x02
    KEEPALIVE_ACK = 0x04
    EPOCH_ACK = 0x08
    #: trio-sudp extension (SPEC §7): "I hold no key for this epoch". Go peers ignore it.
    NO_SESSION = 0x10


HEADER_SIZE: Final = 20
#: Go peers read at most this many bytes per datagram; we never send more.
MAX_DATAGRAM: Final = 2048
EPK_SIZE: Final = 65
SIGNATURE_SIZE: Final = 64
NONCE_SIZE: Final = 12
GCM_TAG_SIZE: Final = 16
CONTROL_FIELDS_SIZE: Final = 12  # flags u32 + data u64

#: The server's virtual address; clients use 1..65534.
SERVER_VADDR: Final = 0
MAX_CLIENT_VADDR: Final = 65534


def tag_size(version: Version) -> int:
    """Size of the header tag ("hb"): 4 bytes of CRC-32 (v2) or 24 of BLAKE2b (v3)."""
    return 4 if version == Version.V2 else 24


def handshake_body_size(version: Version) -> int:
    """Body of a ClientHandshake or ServerHandshake: tag, ephemeral point, signature."""
    return tag_size(version) + EPK_SIZE + SIGNATURE_SIZE


def control_body_size(version: Version) -> int:
    """Body of a Control message: tag, flags, data, signature."""
    return tag_size(version) + CONTROL_FIELDS_SIZE + SIGNATURE_SIZE


def data_overhead(version: Version) -> int:
    """Body bytes a Data message adds to its payload: nonce, inner tag, GCM tag."""
    return NONCE_SIZE + tag_size(version) + GCM_TAG_SIZE


def max_payload(version: Version) -> int:
    """Largest Data payload a Go peer can receive: 1996 bytes (v2) or 1976 (v3)."""
    return MAX_DATAGRAM - HEADER_SIZE - data_overhead(version)


def timestamp_unit_us(version: Version) -> int:
    """Microseconds per unit of the header ``time``: v2 counts ms (1000 µs), v3 counts µs."""
    return 1000 if version == Version.V2 else 1
