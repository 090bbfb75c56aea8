"""The client (initiator) side of a session with one server (SPEC §4, §7).

It handshakes (``handshake.ClientHandshake`` schedules the attempts), sends
KeepAlives, rekeys every ``rekey_interval``, and notices a server that lost its state:
a NoSession hint on a KeepAliveAck, the silence rule, or a server gone quiet
(``liveness.ClientLiveness``). Failures carry one human-readable reason.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Final

from .address import Address
from .clock import SystemClock, WallClock
from .constants import SERVER_VADDR, ControlFlag, Kind
from .errors import BadPacket, DropReason
from .events import HandshakeFailed, HandshakeStarted, SessionLost
from .handshake import REFUSAL_TEXT, Attempt, ClientHandshake, RefusalCode, SignedMessage
from .liveness import ClientLiveness
from .peers import LocalIdentity, Peer
from .session import Session, SessionState
from .settings import SessionSettings
from .wire import ControlMessage, HandshakeMessage

__all__ = ["ClientSession"]

#: Signatures a handshake attempt checks on messages with a bad header tag, to tell a
#: server with another shared key (its signature verifies) from noise.
_TAG_PROBES: Final = 3

_INF: Final = math.inf


class ClientSession(Session):
    """The client (initiator) side of a session with one server."""

    __slots__ = ("_closed", "_failed", "_handshake", "_last_problem", "_liveness", "_started")

    _handshake_kind = Kind.SERVER_HANDSHAKE
    _server_side = False

    def __init__(
        self,
        *,
        local: LocalIdentity,
        server: Peer,
        server_address: Address,
        settings: SessionSettings | None = None,
        clock: WallClock | None = None,
        first_epoch: Callable[[], int] | None = None,
    ) -> None:
        if server.vaddr != SERVER_VADDR:
            raise ValueError(f"the server's virtual address is {SERVER_VADDR}, not {server.vaddr}")
        settings = settings or SessionSettings()
        super().__init__(local=local, peer=server, settings=settings, clock=clock or SystemClock())
        self.endpoint = server_address
        self._fixed_source = server_address
        self._watch_silence = settings.silence_rekey_after is not None
        self._handshake = ClientHandshake(settings, server.version, first_epoch)
        self._liveness = ClientLiveness(settings)
        self._started = False
        self._failed = False
        self._closed = False
        #: What went wrong with the attempt in flight, beyond its latest drop.
        self._last_problem: str | None = None

    @property
    def state(self) -> SessionState:
        if self._closed:
            return SessionState.CLOSED
        if self.epochs.current is not None:
            return SessionState.ESTABLISHED
        if self._failed:
            return SessionState.FAILED
        if self._started:
            return SessionState.HANDSHAKING
        return SessionState.IDLE

    @property
    def handshake_in_flight(self) -> bool:
        return self._handshake.attempt is not None

    def connect(self, now: float) -> None:
        """Start the first handshake."""
        if self._started:
            raise RuntimeError("connect() was already called")
        self._started = True
        self._start_attempt(now, "connect")

    def close(self) -> None:
        """Stop: no more timers. SUDP has no close message; the server just expires us."""
        self._closed = True
        self._handshake.stop()
        self._liveness.stop()
        self.epochs.clear()
        self.timers_changed = True

    def rekey(self, now: float, reason: str = "rekey") -> None:
        """Start a rekey now (no-op if a handshake is already in flight)."""
        if self._handshake.attempt is None and not self._closed:
            self._start_attempt(now, reason)

    # ---------------------------------------------------------------- handshake

    def _start_attempt(self, now: float, reason: str) -> None:
        attempt = self._handshake.start(now, reason)
        self._last_drop = self._last_problem = None
        self._send_client_handshake(attempt)
        self.events.append(HandshakeStarted(attempt.epoch, reason))
        self.timers_changed = True

    def _send_client_handshake(self, attempt: Attempt) -> None:
        assert self.endpoint is not None
        datagram = self._signed.handshake(
            Kind.CLIENT_HANDSHAKE, attempt.epoch, attempt.ephemeral.public_bytes
        )
        self._emit(datagram, self.endpoint)

    def _fail_attempt(self, now: float, reason: str) -> None:
        reconnect = self.settings.reconnect
        attempt = self._handshake.failed(now, reconnect=reconnect)
        self.events.append(HandshakeFailed(attempt.epoch, reason))
        # The next attempt learns the server's clock afresh.
        self._peer_clock.offset_us = None
        if not reconnect:
            self._failed = True
            self.epochs.clear()
            self._liveness.stop()
        self.timers_changed = True

    def _on_handshake(self, message: HandshakeMessage, address: Address, now: float) -> None:
        epoch = message.header.epoch
        attempt = self._handshake.attempt
        if attempt is None or attempt.epoch != epoch:
            current = self.epochs.current
            if (
                current is not None
                and current.epoch == epoch
                and current.server_public == message.ephemeral_public
            ):
                # Our EpochAck was lost and a retry crossed it: acknowledge again.
                self._control(epoch, ControlFlag.EPOCH_ACK, self.endpoint)
                return
            self._drop(DropReason.UNEXPECTED_HANDSHAKE)
            return
        try:
            secret = attempt.ephemeral.exchange(message.ephemeral_public)
        except BadPacket as exc:
            self._drop(exc.reason)
            return
        key = self._new_key(epoch, secret, attempt.ephemeral.public_bytes, message.ephemeral_public)
        self.epochs.install_current(key)
        self._handshake.succeeded()
        self.last_received_at = now
        self._unanswered_since = None
        self._control(epoch, ControlFlag.EPOCH_ACK, self.endpoint)
        self._key_in_use(key, now)
        self._liveness.connected(now)

    def _on_control(self, message: ControlMessage, address: Address, now: float) -> None:
        flags = message.flags
        epoch = message.header.epoch
        self.last_received_at = now
        if not flags & ControlFlag.KEEPALIVE_ACK:
            self._unanswered_since = None
        if not flags & ControlFlag.NO_SESSION:
            return
        attempt = self._handshake.attempt
        if attempt is not None and attempt.epoch == epoch and not flags & ControlFlag.KEEPALIVE_ACK:
            code = message.data
            try:
                text = REFUSAL_TEXT[RefusalCode(code)]
            except ValueError:
                text = f"the server refused our handshake (code {code})"
            self._fail_attempt(now, text)
            return
        current = self.epochs.current
        if attempt is None and current is not None and current.epoch == epoch:
            self.events.append(
                SessionLost("the server holds no session for us (restart or expiry)")
            )
            self._start_attempt(now, "server lost the session")

    def _on_untimely(
        self, message: SignedMessage, reason: DropReason, address: Address, now: float
    ) -> None:
        # An authentic answer from a server whose clock is too far off ours: no retry
        # will fix that, so fail now with the reason.
        if self._handshake.attempt is not None and reason is DropReason.CLOCK_SKEW:
            self._fail_attempt(now, f"clock skew: {self._peer_clock.describe_skew()}")

    def _on_unauthentic(
        self, message: SignedMessage, reason: DropReason, address: Address, now: float
    ) -> None:
        attempt = self._handshake.attempt
        if attempt is None:
            return
        if reason is DropReason.HEADER_TAG_MISMATCH and attempt.tag_probes < _TAG_PROBES:
            attempt.tag_probes += 1
            if self._signed.signature_ok(message):
                # Signed by the server, yet tagged with another key: the shared keys differ.
                self._fail_attempt(
                    now,
                    "the server tags its messages with another v3 shared key than ours "
                    "(shared key mismatch)",
                )
                return
        if (
            reason is DropReason.BAD_SIGNATURE
            and isinstance(message, ControlMessage)
            and message.flags & ControlFlag.NO_SESSION
            and message.header.epoch == attempt.epoch
        ):
            # An unsigned refusal: anyone could have sent it, so it is only a hint for
            # the failure message should no answer come.
            with contextlib.suppress(ValueError):
                self._last_problem = REFUSAL_TEXT[RefusalCode(message.data)]
            return
        if isinstance(message, HandshakeMessage):
            if reason is DropReason.BAD_SIGNATURE:
                self._last_problem = (
                    "the server's handshake signature does not verify "
                    "(wrong server public key in our configuration?)"
                )
            elif reason is DropReason.HEADER_TAG_MISMATCH:
                self._last_problem = (
                    "the server's handshake has a bad header tag (wrong v3 shared key?)"
                )

    def _drop(self, reason: DropReason) -> None:
        super()._drop(reason)
        self._last_problem = None

    def _proves_key(self, message: SignedMessage) -> bool:
        # The ServerHandshake answering our attempt: only it may fix the clock offset.
        attempt = self._handshake.attempt
        return (
            isinstance(message, HandshakeMessage)
            and attempt is not None
            and message.header.epoch == attempt.epoch
        )

    def _no_answer(self) -> str:
        """Why an attempt got no answer: the latest problem seen, if telling."""
        problem = self._last_problem
        if problem is None and self._last_drop not in (None, DropReason.WRONG_SOURCE):
            problem = self._last_drop.value
        reason = "no answer from the server"
        return f"{reason}; last problem: {problem}" if problem else reason

    # ---------------------------------------------------------------- timers

    def _handshake_deadline(self) -> float:
        handshake = self._handshake
        if handshake.attempt is not None:
            return handshake.resend_at()
        if handshake.reconnect_at is not None:
            return handshake.reconnect_at
        rekey = self.settings.rekey_interval
        if rekey is not None and self.last_handshake_at is not None and self.epochs.current:
            return self.last_handshake_at + rekey
        return _INF

    def _lost_deadline(self) -> float:
        """When the silence or dead-server rule would start a rekey."""
        if self._handshake.attempt is not None or self.epochs.current is None or self._closed:
            return _INF
        return self._liveness.lost_deadline(self._unanswered_since, self.last_received_at)

    def next_deadline(self) -> float:
        keepalive = self._liveness.next_keepalive if self.epochs.current is not None else _INF
        return min(
            self._handshake_deadline(),
            keepalive,
            self._lost_deadline(),
            self._previous.deadline(self.epochs),
        )

    def handle_timer(self, now: float) -> None:
        if self._closed:
            return
        if now >= self._handshake_deadline():
            self._handshake_timer(now)
        self._previous.run(now, self.epochs)
        if now >= self._lost_deadline():
            reason, text = self._liveness.lost_reason(now, self._unanswered_since)
            self.events.append(SessionLost(text))
            self._unanswered_since = None
            self._start_attempt(now, reason)
        current = self.epochs.current
        if current is not None and self._liveness.keepalive_due(
            now, self._data_sent_at, self._data_received_at
        ):
            self._control(current.epoch, ControlFlag.KEEPALIVE, self.endpoint)

    def _handshake_timer(self, now: float) -> None:
        handshake = self._handshake
        attempt = handshake.attempt
        if attempt is not None:
            if handshake.timed_out(now):
                self._fail_attempt(now, self._no_answer())
            elif handshake.resend_due(now):
                self._send_client_handshake(attempt)
            return
        if handshake.reconnect_at is not None:
            self._start_attempt(now, "reconnect")
            return
        self._start_attempt(now, "rekey")
