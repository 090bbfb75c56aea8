"""Errors and drop reasons of the protocol core.

Every problem with a datagram from the network is a :class:`BadPacket` carrying a
:class:`DropReason`; problems caused by the local caller are
:class:`LocalProtocolError`; bad keys and settings are :class:`ConfigError`.
"""

from __future__ import annotations

import enum


class DropReason(enum.Enum):
    """Why an incoming datagram was not accepted. Values are stable, machine-readable codes."""

    # Structural problems (wire.decode_untrusted)
    DATAGRAM_TOO_SHORT = "datagram_too_short"
    DATAGRAM_TOO_LONG = "datagram_too_long"
    BAD_VERSION = "bad_version"
    BAD_KIND = "bad_kind"
    LEN_EXCEEDS_DATAGRAM = "len_exceeds_datagram"
    BODY_TOO_SHORT = "body_too_short"
    BODY_TOO_LONG = "body_too_long"
    # Addressing
    WRONG_VADDR = "wrong_vaddr"
    UNKNOWN_PEER = "unknown_peer"
    WRONG_SOURCE = "wrong_source"
    UNEXPECTED_KIND = "unexpected_kind"
    # Authentication
    HEADER_TAG_MISMATCH = "header_tag_mismatch"
    BAD_SIGNATURE = "bad_signature"
    BAD_EPHEMERAL_POINT = "bad_ephemeral_point"
    UNKNOWN_EPOCH = "unknown_epoch"
    GCM_AUTH_FAIL = "gcm_auth_fail"
    PLAINTEXT_TOO_SHORT = "plaintext_too_short"
    INNER_TAG_MISMATCH = "inner_tag_mismatch"
    # Time and replay
    CLOCK_SKEW = "clock_skew"
    STALE = "stale"
    FUTURE = "future"
    REPLAY = "replay"
    # Handshake flow
    RATE_LIMITED = "rate_limited"
    UNEXPECTED_HANDSHAKE = "unexpected_handshake"
    NOT_CONNECTED = "not_connected"

    # Members are singletons: identity hashing is C-level, where Enum's own __hash__
    # is a Python call (a drop is a counter increment, twice hashed, per datagram).
    __hash__ = object.__hash__


class SUDPError(Exception):
    """Base class of every error trio-sudp raises on purpose."""


class BadPacket(SUDPError):
    """A datagram from the network was malformed, unauthentic, stale or unexpected."""

    def __init__(self, reason: DropReason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


class LocalProtocolError(SUDPError):
    """The local caller asked for something the protocol cannot do right now."""


class NotConnected(LocalProtocolError):
    """Data was sent before a session key exists."""


class UnknownPeer(LocalProtocolError, KeyError):
    """No peer with that virtual address is configured."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown peer"


class PayloadTooLarge(LocalProtocolError, ValueError):
    """A payload does not fit in one datagram a Go peer can read (SPEC §6)."""


class ConfigError(SUDPError, ValueError):
    """A key, address or setting is invalid. The message names what and why."""


class InvalidKey(ConfigError):
    """A key could not be loaded, has the wrong type or curve, or is unsafe to use."""


class HandshakeError(SUDPError):
    """A handshake did not complete: no answer, key mismatch or clock skew."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
