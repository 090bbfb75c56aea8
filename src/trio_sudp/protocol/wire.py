"""Codecs for the SUDP header and its four message kinds (SPEC §1-§2), versions 2 and 3.

``decode_untrusted`` treats its input as hostile: any malformed datagram raises
:class:`~trio_sudp.protocol.errors.BadPacket` with a :class:`DropReason`, and nothing
else. It checks structure only; :func:`verify_signed` authenticates handshakes and
Control messages (header tag, then signature), and ``datapath.open_data`` opens Data.

The encoders never build anything a Go peer would choke on (SPEC §6): no datagram
over 2048 bytes and no payload over 1996 (v2) / 1976 (v3) bytes.
"""

from __future__ import annotations

import struct
from typing import Final

import attrs

from .constants import (
    CONTROL_FIELDS_SIZE,
    EPK_SIZE,
    GCM_TAG_SIZE,
    HEADER_SIZE,
    MAX_DATAGRAM,
    NONCE_SIZE,
    SIGNATURE_SIZE,
    ControlFlag,
    Kind,
    Version,
    control_body_size,
    handshake_body_size,
    tag_size,
)
from .crypto import HeaderTagger, PrivateKey, PublicKey, constant_time_equal
from .errors import BadPacket, DropReason

__all__ = [
    "ControlMessage",
    "DataMessage",
    "HandshakeMessage",
    "Header",
    "Message",
    "decode_header_untrusted",
    "decode_untrusted",
    "encode_control",
    "encode_handshake",
    "encode_header",
    "tag_matches",
    "verify_signed",
]

HEADER_STRUCT: Final = struct.Struct(">BBHHHIQ")
_CONTROL_FIELDS: Final = struct.Struct(">IQ")
_NO_SIGNATURE: Final = bytes(SIGNATURE_SIZE)
_VERSIONS: Final = {int(v): v for v in Version}
_KINDS: Final = {int(k): k for k in Kind}
_ALL_FLAGS: Final = sum(ControlFlag)
#: Every combination of the known flag bits. Decoding never makes a new ControlFlag:
#: an IntFlag keeps each new value it is called with forever, and the sender chooses
#: the flags (decoding comes before authentication).
_KNOWN_FLAGS: Final = {
    value: ControlFlag(value) for value in range(_ALL_FLAGS + 1) if not value & ~_ALL_FLAGS
}


@attrs.frozen(slots=True)
class Header:
    """The 20-byte header. ``raw`` holds the exact bytes it was decoded from or encoded to."""

    version: Version
    kind: Kind
    length: int
    src: int
    dst: int
    epoch: int
    time: int
    raw: bytes = attrs.field(repr=False, eq=False)


@attrs.frozen(slots=True)
class HandshakeMessage:
    """ClientHandshake or ServerHandshake: ``tag || ephemeral_public || signature``."""

    header: Header
    tag: bytes
    ephemeral_public: bytes
    signature: bytes

    @property
    def signed_bytes(self) -> bytes:
        return self.tag + self.ephemeral_public


@attrs.frozen(slots=True)
class ControlMessage:
    """Control: ``tag || flags(u32) || data(u64) || signature``."""

    header: Header
    tag: bytes
    #: A :class:`ControlFlag` when only known bits are set, else the plain integer.
    flags: ControlFlag | int
    data: int
    signature: bytes

    @property
    def signed_bytes(self) -> bytes:
        return self.tag + _CONTROL_FIELDS.pack(self.flags, self.data)


@attrs.frozen(slots=True)
class DataMessage:
    """Data: ``nonce || AES-256-GCM(tag || payload)``; ``sealed`` includes the GCM tag."""

    header: Header
    nonce: bytes
    sealed: bytes


Message = HandshakeMessage | ControlMessage | DataMessage


def encode_header(
    version: Version, kind: Kind, length: int, src: int, dst: int, epoch: int, time: int
) -> bytes:
    """Pack a header; raises ``ValueError`` if a field does not fit its width."""
    try:
        return HEADER_STRUCT.pack(version, kind, length, src, dst, epoch, time)
    except struct.error as exc:
        raise ValueError(f"header field out of range: {exc}") from None


def decode_header_untrusted(datagram: bytes) -> Header:
    """Decode and check the header of a datagram (size, version, kind, ``len``)."""
    size = len(datagram)
    if size < HEADER_SIZE:
        raise BadPacket(DropReason.DATAGRAM_TOO_SHORT, f"{size} bytes, a header needs 20")
    if size > MAX_DATAGRAM:
        raise BadPacket(DropReason.DATAGRAM_TOO_LONG, f"{size} bytes, the limit is 2048")
    ver, kind, length, src, dst, epoch, time = HEADER_STRUCT.unpack_from(datagram)
    if ver != 2 and ver != 3:
        raise BadPacket(DropReason.BAD_VERSION, f"version {ver}")
    if not 1 <= kind <= 4:
        raise BadPacket(DropReason.BAD_KIND, f"kind {kind}")
    if length > size - HEADER_SIZE:
        raise BadPacket(
            DropReason.LEN_EXCEEDS_DATAGRAM,
            f"len {length} but {size - HEADER_SIZE} body bytes present",
        )
    return Header(
        _VERSIONS[ver], _KINDS[kind], length, src, dst, epoch, time, bytes(datagram[:HEADER_SIZE])
    )


def _check_body_size(length: int, needed: int, what: str) -> None:
    if length < needed:
        raise BadPacket(DropReason.BODY_TOO_SHORT, f"{what} body of {length} bytes, needs {needed}")
    if length > needed:
        raise BadPacket(DropReason.BODY_TOO_LONG, f"{what} body of {length} bytes, needs {needed}")


def decode_untrusted(datagram: bytes, *, version: Version | None = None) -> Message:
    """Decode one datagram, checking its structure only.

    Bytes after ``len`` are ignored, as Go ignores them. With ``version`` given, a
    datagram of the other version is refused as ``bad_version``.
    """
    header = decode_header_untrusted(datagram)
    if version is not None and header.version != version:
        raise BadPacket(DropReason.BAD_VERSION, f"version {header.version}, expected {version}")
    tlen = tag_size(header.version)
    body = bytes(datagram[HEADER_SIZE : HEADER_SIZE + header.length])
    if header.kind == Kind.DATA:
        if header.length < NONCE_SIZE + GCM_TAG_SIZE:
            raise BadPacket(
                DropReason.BODY_TOO_SHORT,
                f"data body of {header.length} bytes, needs at least {NONCE_SIZE + GCM_TAG_SIZE}",
            )
        return DataMessage(header, body[:NONCE_SIZE], body[NONCE_SIZE:])
    if header.kind == Kind.CONTROL:
        _check_body_size(header.length, control_body_size(header.version), "control")
        flags, data = _CONTROL_FIELDS.unpack_from(body, tlen)
        return ControlMessage(
            header,
            body[:tlen],
            _KNOWN_FLAGS.get(flags, flags),
            data,
            body[tlen + CONTROL_FIELDS_SIZE :],
        )
    _check_body_size(header.length, handshake_body_size(header.version), "handshake")
    return HandshakeMessage(
        header, body[:tlen], body[tlen : tlen + EPK_SIZE], body[-SIGNATURE_SIZE:]
    )


def tag_matches(message: HandshakeMessage | ControlMessage, tagger: HeaderTagger) -> bool:
    """Whether a signed message's header tag is the tag of its header (the cheap check)."""
    return constant_time_equal(tagger(message.header.raw), message.tag)


def verify_signed(
    message: HandshakeMessage | ControlMessage,
    tagger: HeaderTagger,
    signer: PublicKey,
    *,
    tolerate_v2_left_aligned: bool = False,
) -> DropReason | None:
    """Check a signed message's header tag (cheap) and then its signature (costly).

    Returns ``None`` when both hold, else ``HEADER_TAG_MISMATCH`` or ``BAD_SIGNATURE``.
    """
    if not tag_matches(message, tagger):
        return DropReason.HEADER_TAG_MISMATCH
    if not signer.verify(
        message.signature,
        message.signed_bytes,
        tolerate_v2_left_aligned=tolerate_v2_left_aligned,
    ):
        return DropReason.BAD_SIGNATURE
    return None


def encode_handshake(
    version: Version,
    kind: Kind,
    *,
    src: int,
    dst: int,
    epoch: int,
    time: int,
    ephemeral_public: bytes,
    tagger: HeaderTagger,
    signer: PrivateKey,
) -> bytes:
    """Build and sign a ClientHandshake or ServerHandshake."""
    if kind not in (Kind.CLIENT_HANDSHAKE, Kind.SERVER_HANDSHAKE):
        raise ValueError(f"{kind!r} is not a handshake kind")
    if len(ephemeral_public) != EPK_SIZE:
        raise ValueError(f"ephemeral public key must be {EPK_SIZE} bytes")
    header = encode_header(version, kind, handshake_body_size(version), src, dst, epoch, time)
    signed = tagger(header) + ephemeral_public
    return header + signed + signer.sign(signed)


def encode_control(
    version: Version,
    *,
    src: int,
    dst: int,
    epoch: int,
    time: int,
    flags: ControlFlag | int,
    tagger: HeaderTagger,
    signer: PrivateKey | None,
    data: int = 0,
) -> bytes:
    """Build and sign a Control message (``signer`` ``None``: an all-zero signature)."""
    header = encode_header(version, Kind.CONTROL, control_body_size(version), src, dst, epoch, time)
    try:
        fields = _CONTROL_FIELDS.pack(int(flags), data)
    except struct.error as exc:
        raise ValueError(f"control field out of range: {exc}") from None
    signed = tagger(header) + fields
    return header + signed + (signer.sign(signed) if signer is not None else _NO_SIGNATURE)
