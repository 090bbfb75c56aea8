"""Cryptography of SUDP (SPEC §1-§3), Go-compatible.

- long-term ECDSA P-256 keys, PEM in the Go form (``EC PRIVATE KEY``, ``PUBLIC KEY``);
- signatures as ``r || s``, each a 32-byte big-endian integer, with an optional
  tolerant reading of the Go v2 signer's left-aligned short fields (SPEC §6);
- ephemeral ECDH P-256 with point validation; the raw X coordinate is the epoch key;
- header tags: CRC-32 (v2) and BLAKE2b-192 keyed with the per-peer shared key (v3).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from collections.abc import Callable
from typing import Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from .constants import EPK_SIZE, SIGNATURE_SIZE, Version
from .errors import BadPacket, ConfigError, DropReason, InvalidKey

__all__ = [
    "MAX_V3_KEY_SIZE",
    "EphemeralKey",
    "HeaderTagger",
    "PrivateKey",
    "PublicKey",
    "TagState",
    "blake2b_tag_state",
    "constant_time_equal",
    "make_header_tagger",
    "tagger_from_state",
]

_CURVE: Final = ec.SECP256R1()
_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())
_ECDH: Final = ec.ECDH()
#: BLAKE2b keys are at most 64 bytes; a longer v3 key crashes a Go peer (SPEC §6).
MAX_V3_KEY_SIZE: Final = 64
#: How many bytes a left-aligned Go v2 signature field may be shifted back when retrying.
_MAX_V2_SHIFT: Final = 2

HeaderTagger = Callable[[bytes], bytes]
"""Computes the header tag ("hb") over the 20 header bytes."""

constant_time_equal: Final = hmac.compare_digest


def _describe(key: object) -> str:
    name = type(key).__name__.replace("_", "")
    for word in ("RSA", "DSA", "Ed25519", "Ed448", "X25519", "X448", "DH"):
        if word.lower() in name.lower():
            return word
    return name


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode("ascii", "replace") if isinstance(data, str) else bytes(data)


def _require_p256(key: object, what: str) -> None:
    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        raise InvalidKey(f"{what}: expected an ECDSA P-256 key, got {_describe(key)}")
    if key.curve.name != _CURVE.name:
        raise InvalidKey(f"{what}: expected curve P-256 (secp256r1), got {key.curve.name}")


class PublicKey:
    """A long-term ECDSA P-256 public key (a peer's identity)."""

    __slots__ = ("_key", "_point")

    def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
        _require_p256(key, "public key")
        self._key = key
        self._point = key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    @classmethod
    def from_pem(cls, data: bytes | str, *, what: str = "public key") -> PublicKey:
        """Load a ``PUBLIC KEY`` (SPKI) PEM block, as the Go tools write it."""
        raw = _as_bytes(data)
        if b"PRIVATE KEY-----" in raw and b"PUBLIC KEY-----" not in raw:
            raise InvalidKey(f"{what}: this is a private key; a public key was expected")
        try:
            key = serialization.load_pem_public_key(raw)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise InvalidKey(f"{what}: not a PEM 'PUBLIC KEY' block ({_first_line(exc)})") from None
        _require_p256(key, what)
        assert isinstance(key, ec.EllipticCurvePublicKey)
        return cls(key)

    @classmethod
    def from_point(cls, point: bytes) -> PublicKey:
        """Load an uncompressed SEC1 point (``0x04 || X || Y``, 65 bytes)."""
        try:
            return cls(ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, bytes(point)))
        except ValueError:
            raise InvalidKey("public key: not a valid P-256 point") from None

    def to_pem(self) -> bytes:
        """The key as a ``PUBLIC KEY`` PEM block (SPKI), readable by Go."""
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def point(self) -> bytes:
        """The uncompressed SEC1 point, 65 bytes."""
        return self._point

    def fingerprint(self) -> str:
        """A short, stable identifier of the key (first 8 bytes of SHA-256 of the point)."""
        return hashlib.sha256(self._point).hexdigest()[:16]

    def verify(
        self, signature: bytes, data: bytes, *, tolerate_v2_left_aligned: bool = False
    ) -> bool:
        """Check an ``r || s`` signature over ``data``.

        With ``tolerate_v2_left_aligned``, a failed check is retried with each field
        that ends in zero bytes shifted right by 8 bits per zero byte: the Go v2 signer
        copies a short ``r`` or ``s`` left-aligned (SPEC §6).
        """
        if len(signature) != SIGNATURE_SIZE:
            return False
        r_field = signature[:32]
        s_field = signature[32:]
        r = int.from_bytes(r_field, "big")
        s = int.from_bytes(s_field, "big")
        if self._verify_rs(r, s, data):
            return True
        if not tolerate_v2_left_aligned:
            return False
        for r_try in _left_aligned_candidates(r, r_field):
            for s_try in _left_aligned_candidates(s, s_field):
                if (r_try, s_try) != (r, s) and self._verify_rs(r_try, s_try, data):
                    return True
        return False

    def _verify_rs(self, r: int, s: int, data: bytes) -> bool:
        if r == 0 or s == 0:
            return False
        try:
            self._key.verify(encode_dss_signature(r, s), data, _ECDSA_SHA256)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self._point == other._point

    def __hash__(self) -> int:
        return hash(self._point)

    def __repr__(self) -> str:
        return f"PublicKey({self.fingerprint()})"


def _left_aligned_candidates(value: int, field: bytes) -> list[int]:
    trailing = len(field) - len(field.rstrip(b"\0"))
    return [value >> (8 * shift) for shift in range(min(trailing, _MAX_V2_SHIFT) + 1)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class PrivateKey:
    """A long-term ECDSA P-256 private key. Its ``repr`` never shows the secret."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        _require_p256(key, "private key")
        self._key = key
        self._public = PublicKey(key.public_key())

    @classmethod
    def generate(cls) -> PrivateKey:
        """A fresh key from the operating system's CSPRNG."""
        return cls(ec.generate_private_key(_CURVE))

    @classmethod
    def from_pem(cls, data: bytes | str, *, what: str = "private key") -> PrivateKey:
        """Load ``EC PRIVATE KEY`` (SEC1, the Go form) or ``PRIVATE KEY`` (PKCS#8) PEM."""
        raw = _as_bytes(data)
        if b"ENCRYPTED PRIVATE KEY" in raw or b"Proc-Type: 4,ENCRYPTED" in raw:
            raise InvalidKey(f"{what}: encrypted private keys are not supported")
        if b"PRIVATE KEY-----" not in raw:
            if b"PUBLIC KEY-----" in raw:
                raise InvalidKey(f"{what}: this is a public key; a private key was expected")
            raise InvalidKey(f"{what}: no PEM 'EC PRIVATE KEY' or 'PRIVATE KEY' block found")
        try:
            key = serialization.load_pem_private_key(raw, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise InvalidKey(f"{what}: cannot be read ({_first_line(exc)})") from None
        _require_p256(key, what)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(key)

    @classmethod
    def from_scalar(cls, scalar: int) -> PrivateKey:
        """Build a key from its secret scalar (for known-answer tests)."""
        try:
            return cls(ec.derive_private_key(scalar, _CURVE))
        except ValueError:
            raise InvalidKey("private key: scalar out of range") from None

    def to_pem(self) -> bytes:
        """The key as an ``EC PRIVATE KEY`` PEM block (SEC1), readable by Go."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

    @property
    def public_key(self) -> PublicKey:
        """The matching public key."""
        return self._public

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256/SHA-256 signature as ``r || s``, each left-padded to 32 bytes."""
        r, s = decode_dss_signature(self._key.sign(data, _ECDSA_SHA256))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def __repr__(self) -> str:
        return f"PrivateKey(public={self._public.fingerprint()})"


def load_ephemeral_point(point: bytes) -> ec.EllipticCurvePublicKey:
    """Validate a peer's ephemeral ECDH point; raise ``BadPacket`` if it is not on P-256."""
    if len(point) != EPK_SIZE or point[0] != 4:
        raise BadPacket(DropReason.BAD_EPHEMERAL_POINT, "not an uncompressed P-256 point")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, bytes(point))
    except ValueError:
        raise BadPacket(DropReason.BAD_EPHEMERAL_POINT, "point is not on P-256") from None


class EphemeralKey:
    """A one-epoch ECDH P-256 key pair."""

    __slots__ = ("_key", "public_bytes")

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key
        #: Our uncompressed public point, as sent in a handshake.
        self.public_bytes: bytes = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    @classmethod
    def generate(cls) -> EphemeralKey:
        return cls(ec.generate_private_key(_CURVE))

    @classmethod
    def from_scalar(cls, scalar: int) -> EphemeralKey:
        """Rebuild a known ephemeral key (known-answer tests)."""
        return cls(ec.derive_private_key(scalar, _CURVE))

    def exchange(self, peer_point: bytes) -> bytes:
        """The shared secret with the peer's ephemeral point: the 32-byte X coordinate.

        Raises ``BadPacket(BAD_EPHEMERAL_POINT)`` for an invalid point.
        """
        return self._key.exchange(_ECDH, load_ephemeral_point(peer_point))

    def __repr__(self) -> str:
        return "EphemeralKey(...)"


_CRC_PACK: Final = struct.Struct(">I").pack


def _crc32_tag(header: bytes) -> bytes:
    return _CRC_PACK(zlib.crc32(header))


def check_v3_key(key: bytes) -> bytes:
    """Validate a v3 shared key; a key longer than 64 bytes is refused (SPEC §6)."""
    if len(key) > MAX_V3_KEY_SIZE:
        raise ConfigError(
            f"v3 shared key is {len(key)} bytes; BLAKE2b keys are at most {MAX_V3_KEY_SIZE} "
            "bytes (a longer key crashes Go peers)"
        )
    return bytes(key)


def make_header_tagger(version: Version, key: bytes | None = None) -> HeaderTagger:
    """The header tag function of a version: CRC-32 (v2) or BLAKE2b-192 keyed with ``key``.

    v2 takes no key. For v3, ``None`` or ``b""`` means unkeyed BLAKE2b-192.
    """
    if version == Version.V2:
        if key:
            raise ConfigError("protocol v2 has no shared key (its header tag is a plain CRC-32)")
        return _crc32_tag
    return tagger_from_state(blake2b_tag_state(key))


def tagger_from_state(fresh: TagState) -> HeaderTagger:
    """The v3 header tag function over a keyed state from :func:`blake2b_tag_state`."""

    def blake2b_tag(header: bytes) -> bytes:
        h = fresh()
        h.update(header)
        return h.digest()

    return blake2b_tag


TagState = Callable[[], "hashlib.blake2b"]
"""Returns a fresh copy of a keyed BLAKE2b-192 state."""


def blake2b_tag_state(key: bytes | None) -> TagState:
    """A function returning a fresh v3 tag state: BLAKE2b-192 keyed with ``key``.

    Copying a keyed state is cheaper than keying a new one (the key costs a
    compression); hot paths inline ``h = fresh(); h.update(header); h.digest()``.
    """
    return hashlib.blake2b(digest_size=24, key=check_v3_key(key or b"")).copy
