"""Typed, validated descriptions of the local identity and of peers."""

from __future__ import annotations

import attrs

from .constants import MAX_CLIENT_VADDR, SERVER_VADDR, Version
from .crypto import (
    HeaderTagger,
    PrivateKey,
    PublicKey,
    TagState,
    blake2b_tag_state,
    check_v3_key,
    make_header_tagger,
    tagger_from_state,
)
from .errors import ConfigError


def check_vaddr(value: object, *, what: str = "virtual address") -> int:
    """A virtual address is an integer 0..65535 (0 is the server)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ConfigError(f"{what} must be an integer 0..65535, not {value!r}")
    return value


def _vaddr(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    check_vaddr(value, what=attr.name)


def _to_version(value: object) -> Version:
    try:
        return Version(int(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ConfigError(f"protocol version must be 2 or 3, not {value!r}") from None


def _to_key(value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise ConfigError(f"shared key must be bytes or text, not {type(value).__name__}")


def _public_key(_inst: object, attr: attrs.Attribute[PublicKey], value: PublicKey) -> None:
    if not isinstance(value, PublicKey):
        raise ConfigError(f"{attr.name} must be a PublicKey, not {type(value).__name__}")


@attrs.frozen
class Peer:
    """A remote SUDP peer: its virtual address, long-term public key and wire version.

    ``shared_key`` is the v3 header key (tunelo's ``shared_hmac_key``, used as raw
    bytes; text is UTF-8 encoded). ``None`` or empty means unkeyed BLAKE2b. v2 has none.
    """

    vaddr: int = attrs.field(validator=_vaddr)
    public_key: PublicKey = attrs.field(validator=_public_key)
    version: Version = attrs.field(default=Version.V3, converter=_to_version)
    shared_key: bytes | None = attrs.field(default=None, converter=_to_key, repr=False)
    tagger: HeaderTagger = attrs.field(init=False, repr=False, eq=False)
    #: v3: a function returning a fresh keyed BLAKE2b state (shared with ``tagger``, so
    #: the per-packet paths can inline it); ``None`` for v2.
    tag_state: TagState | None = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.version == Version.V2 and self.shared_key:
            raise ConfigError(f"peer {self.vaddr}: protocol v2 takes no shared key")
        if self.shared_key is not None:
            check_v3_key(self.shared_key)
        if self.version == Version.V3:
            state = blake2b_tag_state(self.shared_key)
            object.__setattr__(self, "tag_state", state)
            object.__setattr__(self, "tagger", tagger_from_state(state))
        else:
            object.__setattr__(self, "tag_state", None)
            object.__setattr__(self, "tagger", make_header_tagger(self.version))


def _private_key(_inst: object, attr: attrs.Attribute[PrivateKey], value: PrivateKey) -> None:
    if not isinstance(value, PrivateKey):
        raise ConfigError(f"{attr.name} must be a PrivateKey, not {type(value).__name__}")


@attrs.frozen
class LocalIdentity:
    """Who we are: our virtual address and long-term private key."""

    vaddr: int = attrs.field(validator=_vaddr)
    private_key: PrivateKey = attrs.field(validator=_private_key, repr=False)


def check_client_vaddr(vaddr: int, *, what: str = "client virtual address") -> int:
    """Clients use 1..65534; 0 is the server's."""
    check_vaddr(vaddr, what=what)
    if not 1 <= vaddr <= MAX_CLIENT_VADDR:
        raise ConfigError(f"{what} must be 1..{MAX_CLIENT_VADDR} (0 is the server), not {vaddr}")
    return vaddr


__all__ = ["SERVER_VADDR", "LocalIdentity", "Peer", "check_client_vaddr", "check_vaddr"]
