"""When a session acts by itself: keepalives, the client's liveness rules, idle expiry and
the previous key's retirement (SPEC §4 timers, §7 silence rule).

A session records when the peer was last heard from and when data last flowed; the
classes here turn that into deadlines. :meth:`Session.next_deadline` is the earliest of them and
:meth:`Session.handle_timer` runs whatever is due: one timer per session, as in
aioquic's ``get_timer()`` / ``handle_timer()``.
"""

from __future__ import annotations

import math
from typing import Final

from .epochs import EpochSet
from .settings import SessionSettings

__all__ = ["ClientLiveness", "IdleExpiry", "LivenessRule", "LossSignal", "PreviousKeyTimer"]

_INF: Final = math.inf


class PreviousKeyTimer:
    """After a rekey the previous key lives on while its data can still be fresh."""

    __slots__ = ("_lifetime", "until")

    def __init__(self, settings: SessionSettings) -> None:
        self._lifetime = settings.previous_key_lifetime
        #: When the previous key is dropped (``None``: nothing scheduled).
        self.until: float | None = None

    def start(self, now: float) -> None:
        """A rekey happened at ``now``."""
        self.until = now + self._lifetime

    def deadline(self, epochs: EpochSet) -> float:
        until = self.until
        return _INF if until is None or epochs.previous is None else until

    def run(self, now: float, epochs: EpochSet) -> None:
        """Drop the previous key if its time has come."""
        if self.until is not None and now >= self.until:
            self.until = None
            epochs.drop_previous()


class LivenessRule:
    """Which client rule found the server gone (the reason of its early rekey)."""

    SILENCE: Final = "silence"
    SERVER_SILENT: Final = "server silent"


class ClientLiveness:
    """The client's keepalive schedule, and its two rules for a server that lost us.

    - KeepAlive every ``keepalive_interval`` once connected, skipped while data flows
      both ways (one-way data keeps probing, so that a lost server session shows up
      as a NoSession hint within one interval).
    - Silence rule (SPEC §7): data sent for ``silence_rekey_after`` with nothing but
      KeepAliveAcks coming back.
    - Dead server: nothing at all heard for ``dead_server_after``.
    """

    __slots__ = ("_dead", "_interval", "_silence", "_skip_after_data", "next_keepalive")

    def __init__(self, settings: SessionSettings) -> None:
        self._interval = settings.keepalive_interval
        self._skip_after_data = settings.keepalive_skip_after_data
        self._silence = settings.silence_rekey_after
        self._dead = settings.dead_server_after
        self.next_keepalive = _INF

    def connected(self, now: float) -> None:
        """A key was installed: the keepalives (re)start one interval from now."""
        self.next_keepalive = now + self._interval

    def stop(self) -> None:
        self.next_keepalive = _INF

    def keepalive_due(self, now: float, data_sent_at: float, data_received_at: float) -> bool:
        """Whether to send a KeepAlive now; moves the schedule on either way."""
        if now < self.next_keepalive:
            return False
        interval = self._interval
        skip_until = min(data_sent_at, data_received_at) + interval
        if self._skip_after_data and skip_until > now:
            self.next_keepalive = skip_until
            return False
        self.next_keepalive = now + interval
        return True

    def lost_deadline(self, unanswered_since: float | None, received_at: float | None) -> float:
        """When a rule would declare the server lost (inf: never).

        ``unanswered_since``: the first data sent since the server last sent anything
        but a KeepAliveAck; ``received_at``: its last authenticated message.
        """
        deadline = _INF
        if self._silence is not None and unanswered_since is not None:
            deadline = unanswered_since + self._silence
        if self._dead is not None and received_at is not None:
            deadline = min(deadline, received_at + self._dead)
        return deadline

    def lost_reason(self, now: float, unanswered_since: float | None) -> tuple[str, str]:
        """The rule that fired at ``now``: ``(handshake reason, SessionLost text)``."""
        silence = self._silence
        since = unanswered_since
        if silence is not None and since is not None and now >= since + silence:
            return LivenessRule.SILENCE, (
                f"data sent for {silence:g} s with no reply but keepalive acks"
            )
        return LivenessRule.SERVER_SILENT, "nothing heard from the server"

    @property
    def watches_silence(self) -> bool:
        """Whether the silence rule is on (a send may then start its deadline)."""
        return self._silence is not None


class LossSignal:
    """When the server's socket last lost datagrams (its queue overflowed), if ever.

    Shared by all of a server's sessions; the runtime reports losses (:meth:`note`).
    """

    __slots__ = ("last_loss_at",)

    def __init__(self) -> None:
        self.last_loss_at = -_INF

    def note(self, now: float) -> None:
        """Datagrams were lost by ``now``."""
        self.last_loss_at = now


class IdleExpiry:
    """The server forgets a client with no accepted message for ``idle_expiry`` (SPEC §4).

    Not while the socket loses datagrams: the client's keepalives may be among them
    (a flood must not expire the clients it drowns), so a loss counts as "maybe
    heard from" for the expiry.
    """

    __slots__ = ("_loss", "idle_expiry")

    def __init__(self, settings: SessionSettings, loss: LossSignal) -> None:
        self.idle_expiry = settings.idle_expiry
        self._loss = loss

    def deadline(self, received_at: float | None) -> float:
        """When a client last heard from at ``received_at`` expires."""
        if received_at is None:
            return _INF
        return max(received_at, self._loss.last_loss_at) + self.idle_expiry
