"""The signed half of SUDP (SPEC §2, §4): handshakes and Control messages.

- :class:`SignedCodec` builds and checks the signed messages between us and one peer:
  header tag first (cheap), then the ECDSA signature (costly).
- :class:`SignatureMemory` remembers signed messages already accepted, so that a
  replay moves nothing.
- :class:`ClientHandshake` is the initiator's schedule: which epoch the next
  ClientHandshake names, when it is resent, when it is given up, when to try again.
- :class:`RefusalCode` is the reason a trio-sudp server puts in a refusal.

What a handshake *does* to a session's keys is the session's business
(``session.py``); this module decides nothing about epochs.
"""

from __future__ import annotations

import enum
import math
import secrets
from collections.abc import Callable
from typing import Final

from .constants import ControlFlag, Kind, Version
from .crypto import EphemeralKey, HeaderTagger, PrivateKey, PublicKey
from .settings import SessionSettings
from .wire import ControlMessage, HandshakeMessage, encode_control, encode_handshake, tag_matches

__all__ = [
    "REFUSAL_TEXT",
    "Attempt",
    "ClientHandshake",
    "RefusalCode",
    "SignatureMemory",
    "SignedCodec",
    "SignedMessage",
]

SignedMessage = HandshakeMessage | ControlMessage
_EPOCH_MOD: Final = 1 << 32


class RefusalCode(enum.IntEnum):
    """Why a trio-sudp server refused a ClientHandshake (Control ``data`` with NoSession).

    A trio-sudp extension in the spirit of SPEC §7: the server answers a refused
    handshake with a Control carrying the NoSession flag and one of these codes in the
    epoch of the handshake. Go clients ignore it.
    """

    BAD_SIGNATURE = 1
    CLOCK_SKEW = 2
    HEADER_TAG_MISMATCH = 3


REFUSAL_TEXT: Final = {
    RefusalCode.BAD_SIGNATURE: (
        "the server refused our handshake: it does not accept this client's key (key mismatch)"
    ),
    RefusalCode.CLOCK_SKEW: (
        "the server refused our handshake: our clocks differ by more than the allowed skew"
    ),
    RefusalCode.HEADER_TAG_MISMATCH: (
        "the server refused our handshake: header tag mismatch (wrong v3 shared key?)"
    ),
}


class SignedCodec:
    """Handshakes and Control messages between us and one peer: built, signed, checked."""

    __slots__ = (
        "_own",
        "_peer",
        "_peer_key",
        "_private_key",
        "_stamp",
        "_tolerant",
        "_version",
        "tagger",
    )

    def __init__(
        self,
        version: Version,
        *,
        own_vaddr: int,
        peer_vaddr: int,
        tagger: HeaderTagger,
        private_key: PrivateKey,
        peer_key: PublicKey,
        stamp: Callable[[], int],
        tolerate_v2_left_aligned: bool,
    ) -> None:
        self._version = version
        self._own = own_vaddr
        self._peer = peer_vaddr
        self.tagger = tagger
        self._private_key = private_key
        self._peer_key = peer_key
        #: Our wall clock in the header time unit of the version.
        self._stamp = stamp
        self._tolerant = tolerate_v2_left_aligned and version == Version.V2

    def handshake(self, kind: Kind, epoch: int, ephemeral_public: bytes) -> bytes:
        """A signed ClientHandshake or ServerHandshake for ``epoch``."""
        return encode_handshake(
            self._version,
            kind,
            src=self._own,
            dst=self._peer,
            epoch=epoch,
            time=self._stamp(),
            ephemeral_public=ephemeral_public,
            tagger=self.tagger,
            signer=self._private_key,
        )

    def control(self, epoch: int, flags: ControlFlag | int, data: int = 0) -> bytes:
        """A signed Control message in ``epoch``."""
        return encode_control(
            self._version,
            src=self._own,
            dst=self._peer,
            epoch=epoch,
            time=self._stamp(),
            flags=flags,
            data=data,
            tagger=self.tagger,
            signer=self._private_key,
        )

    def unsigned_refusal(self, epoch: int, code: RefusalCode) -> bytes:
        """A refusal of a handshake we could not authenticate: no signature (all zeros).

        Never a signed answer to an unauthenticated request; the client treats it as a
        hint only, since anyone could have sent it.
        """
        return encode_control(
            self._version,
            src=self._own,
            dst=self._peer,
            epoch=epoch,
            time=self._stamp(),
            flags=ControlFlag.NO_SESSION,
            data=int(code),
            tagger=self.tagger,
            signer=None,
        )

    def tag_ok(self, message: SignedMessage) -> bool:
        """Whether the header tag matches (cheap; for v3 it proves the shared key)."""
        return tag_matches(message, self.tagger)

    def signature_ok(self, message: SignedMessage) -> bool:
        """Whether the peer's long-term key signed ``message`` (costly: ECDSA)."""
        return self._peer_key.verify(
            message.signature, message.signed_bytes, tolerate_v2_left_aligned=self._tolerant
        )


class SignatureMemory:
    """Signed messages already accepted, so that a replay cannot move anything.

    Keyed by the signature's ``r`` without leading or trailing zero bytes, which is
    the same for its Go v2 left-aligned form and for the malleable ``(r, n - s)``.
    A signature is looked up before it is verified (a replay costs no ECDSA) and
    remembered only once it verified (garbage cannot push real entries out). The
    memory outlives a session (a server's :meth:`forget`): a replay of an old
    session's handshake is refused after an expiry too.
    """

    __slots__ = ("_entries", "_limit")

    def __init__(self, limit: int = 64) -> None:
        self._entries: dict[bytes, float] = {}
        self._limit = limit

    def seen(self, signature: bytes, now: float) -> bool:
        """Whether ``signature`` was accepted within its memory time."""
        until = self._entries.get(signature[:32].strip(b"\0"))
        return until is not None and until >= now

    def remember(self, signature: bytes, now: float, keep_for: float) -> None:
        """Remember an accepted signature for ``keep_for`` seconds."""
        entries = self._entries
        # Every entry is kept equally long, so insertion order is expiry order: the
        # expired ones are at the front. A few live entries suffice (a keepalive
        # every 0.5 s), so the memory of an idle peer stays small.
        for old, until in list(entries.items()):
            if until >= now and len(entries) < self._limit:
                break
            del entries[old]
        entries[signature[:32].strip(b"\0")] = now + keep_for


class Attempt:
    """A ClientHandshake in flight: its epoch, ephemeral key and resend count."""

    __slots__ = ("ephemeral", "epoch", "reason", "retries_sent", "started_at", "tag_probes")

    def __init__(self, epoch: int, started_at: float, reason: str) -> None:
        self.epoch = epoch
        self.ephemeral = EphemeralKey.generate()
        self.started_at = started_at
        self.reason = reason
        self.retries_sent = 0
        #: Signatures checked on messages with a bad header tag during this attempt.
        self.tag_probes = 0


class ClientHandshake:
    """When the client sends ClientHandshakes, for which epoch, and when it gives up.

    Resends follow the Go schedule of the version (or the settings'); a failed
    attempt is retried after a back-off of 0.5 s doubling up to 5 s when
    ``reconnect`` is on. Epochs count up from a random first one and are never reused
    (a Go server may still hold an earlier attempt's epoch pending).
    """

    __slots__ = (
        "_first_epoch",
        "_last_epoch",
        "_retries",
        "_timeout",
        "attempt",
        "failures",
        "reconnect_at",
    )

    def __init__(
        self,
        settings: SessionSettings,
        version: Version,
        first_epoch: Callable[[], int] | None = None,
    ) -> None:
        self._retries, self._timeout = settings.retry_schedule(version)
        self._first_epoch = first_epoch or (lambda: secrets.randbelow(65536))
        self._last_epoch: int | None = None
        #: The handshake in flight, if any.
        self.attempt: Attempt | None = None
        #: Failed attempts since the last success.
        self.failures = 0
        #: When to start again after a failure (``None``: not waiting).
        self.reconnect_at: float | None = None

    def start(self, now: float, reason: str) -> Attempt:
        """Begin an attempt for the next epoch."""
        if self._last_epoch is None:
            epoch = self._first_epoch() % _EPOCH_MOD
        else:
            epoch = (self._last_epoch + 1) % _EPOCH_MOD
        self._last_epoch = epoch
        attempt = self.attempt = Attempt(epoch, now, reason)
        self.reconnect_at = None
        return attempt

    def resend_at(self) -> float:
        """When the attempt in flight is resent or given up (inf without one)."""
        attempt = self.attempt
        if attempt is None:
            return math.inf
        if attempt.retries_sent < len(self._retries):
            return attempt.started_at + self._retries[attempt.retries_sent]
        return attempt.started_at + self._timeout

    def timed_out(self, now: float) -> bool:
        """Whether the attempt in flight has waited for an answer long enough."""
        attempt = self.attempt
        return attempt is not None and now >= attempt.started_at + self._timeout

    def resend_due(self, now: float) -> bool:
        """Whether the attempt in flight is due a resend; counts it if so."""
        attempt = self.attempt
        if attempt is None or attempt.retries_sent >= len(self._retries):
            return False
        if now < attempt.started_at + self._retries[attempt.retries_sent]:
            return False
        attempt.retries_sent += 1
        return True

    def succeeded(self) -> None:
        """The attempt's ServerHandshake was accepted."""
        self.attempt = None
        self.failures = 0

    def failed(self, now: float, *, reconnect: bool) -> Attempt:
        """The attempt is given up; with ``reconnect``, the next one starts after a back-off."""
        attempt = self.attempt
        assert attempt is not None
        self.attempt = None
        self.failures += 1
        if reconnect:
            self.reconnect_at = now + min(0.5 * 2 ** (self.failures - 1), 5.0)
        return attempt

    def stop(self) -> None:
        """No attempt and no reconnect any more (the client closed)."""
        self.attempt = None
        self.reconnect_at = None
