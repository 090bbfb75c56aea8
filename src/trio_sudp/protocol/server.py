"""The server side: a session per configured client, and the dispatcher in front of them.

- :class:`ServerPeerSession` is the passive side's view of one client: it answers
  handshakes and KeepAlives, promotes epochs, follows the client's endpoint and
  forgets it when idle.
- :class:`ServerCore` finds the session of a datagram by the header's ``src`` (not by
  UDP address, SPEC §4). :meth:`ServerCore.route` makes the cheap checks every
  datagram gets before any session sees it (the prefilter's header rules, a known
  ``src``) and hands back the client's virtual address; a refused datagram is
  counted by reason in ``ServerCore.drops``. Signature verifications — each costs
  as much as a hundred Data datagrams (SPEC §6 "Denial of service") — are budgeted
  per source and globally (``budget.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Final

from .address import Address
from .bans import Bans
from .budget import DEFAULT_HANDSHAKE_BURST, DEFAULT_HANDSHAKE_RATE, VerifyBudget
from .clock import SystemClock, WallClock
from .constants import HEADER_SIZE, SERVER_VADDR, ControlFlag, Kind
from .crypto import EphemeralKey
from .errors import BadPacket, ConfigError, DropReason
from .events import Expired
from .handshake import RefusalCode, SignedMessage
from .liveness import IdleExpiry, LossSignal
from .peers import LocalIdentity, Peer
from .prefilter import PrefilterRules, prefilter_reason
from .session import Session, SessionState
from .settings import SessionSettings
from .wire import ControlMessage, HandshakeMessage

__all__ = ["NO_PEER", "ServerCore", "ServerPeerSession"]

#: :meth:`ServerCore.route`'s answer for a datagram that belongs to no session.
NO_PEER: Final = -1
#: Kind.DATA as a plain int: an enum attribute costs a lookup per datagram on this path.
_DATA: Final = int(Kind.DATA)


class ServerPeerSession(Session):
    """The server's session with one configured client.

    A ClientHandshake is answered where it came from but moves nothing: the endpoint
    and the clock offset move on the message that proves the new key (the EpochAck,
    or Data in the new epoch), so that a replayed handshake can neither steal the
    client's endpoint nor lock it out (SPEC §6). Signature verifications draw on the
    server's :class:`~trio_sudp.protocol.budget.VerifyBudget`.
    """

    __slots__ = ("_answered", "_budget", "_expiry")

    _handshake_kind = Kind.CLIENT_HANDSHAKE
    _server_side = True

    def __init__(
        self,
        *,
        local: LocalIdentity,
        client: Peer,
        settings: SessionSettings | None = None,
        clock: WallClock | None = None,
        budget: VerifyBudget | None = None,
        loss: LossSignal | None = None,
    ) -> None:
        if local.vaddr != SERVER_VADDR:
            raise ValueError(f"the server's virtual address is {SERVER_VADDR}, not {local.vaddr}")
        settings = settings or SessionSettings()
        super().__init__(local=local, peer=client, settings=settings, clock=clock or SystemClock())
        self._budget = budget if budget is not None else VerifyBudget(per_source=None)
        self._expiry = IdleExpiry(settings, loss if loss is not None else LossSignal())
        #: Where the latest new handshake came from (and its answer went).
        self._answered: Address | None = None

    @property
    def state(self) -> SessionState:
        if self.epochs.current is not None:
            return SessionState.ESTABLISHED
        if self.epochs.pending is not None:
            return SessionState.HANDSHAKING
        return SessionState.IDLE

    def knows(self, address: Address) -> bool:
        """Whether ``address`` is this client's endpoint, or where its new handshake's
        answer went: a signed message from there is the client's to pay for."""
        return address == self.endpoint or address == self._answered

    def _may_verify(self, address: Address, now: float) -> bool:
        return self._budget.allow(self.peer.vaddr, self.knows(address), now)

    def _proves_key(self, message: SignedMessage) -> bool:
        # A Control in an epoch we hold a key for: the EpochAck, a KeepAlive.
        return isinstance(message, ControlMessage) and message.header.epoch in self.epochs.by_epoch

    def _server_handshake(self, epoch: int, server_public: bytes, address: Address) -> None:
        self._emit(self._signed.handshake(Kind.SERVER_HANDSHAKE, epoch, server_public), address)

    def _on_handshake(self, message: HandshakeMessage, address: Address, now: float) -> None:
        epoch = message.header.epoch
        client_public = message.ephemeral_public
        self.last_received_at = now
        for key in (self.epochs.pending, self.epochs.current):
            if key is not None and key.epoch == epoch and key.client_public == client_public:
                # A resend of a handshake we answered: the same answer again (SPEC §4.2).
                self._server_handshake(epoch, key.server_public, address)
                return
        ephemeral = EphemeralKey.generate()
        try:
            secret = ephemeral.exchange(client_public)
        except BadPacket as exc:
            self._drop(exc.reason)
            return
        self.epochs.install_pending(
            self._new_key(epoch, secret, client_public, ephemeral.public_bytes)
        )
        self._answered = address
        self._server_handshake(epoch, ephemeral.public_bytes, address)
        self.timers_changed = True

    def _on_control(self, message: ControlMessage, address: Address, now: float) -> None:
        epoch = message.header.epoch
        key = self.epochs.by_epoch.get(epoch)
        if key is not None:
            self._authenticated_from(address, now)
            if key is self.epochs.pending:
                self._promote(now)
            self.timers_changed = True
        if message.flags & ControlFlag.KEEPALIVE:
            flags = ControlFlag.KEEPALIVE_ACK
            if key is None:
                flags |= ControlFlag.NO_SESSION
            self._control(epoch, flags, address)
        elif key is None:
            self._drop(DropReason.UNKNOWN_EPOCH)

    def _on_unauthentic(
        self, message: SignedMessage, reason: DropReason, address: Address, now: float
    ) -> None:
        if not isinstance(message, HandshakeMessage):
            return
        epoch = message.header.epoch
        if reason is DropReason.BAD_SIGNATURE:
            # Unauthenticated: an unsigned hint at most, never a signed answer.
            if self._budget.allow_refusal(now):
                self._emit(self._signed.unsigned_refusal(epoch, RefusalCode.BAD_SIGNATURE), address)
            return
        # A bad header tag: the client's own signature says whether it is a client
        # with another shared key (then it deserves a signed refusal) or garbage.
        if (
            self._may_verify(address, now)
            and self._signed.signature_ok(message)
            and self._budget.allow_refusal(now)
        ):
            self._control(
                epoch, ControlFlag.NO_SESSION, address, data=RefusalCode.HEADER_TAG_MISMATCH
            )

    def _on_untimely(
        self, message: SignedMessage, reason: DropReason, address: Address, now: float
    ) -> None:
        # Authentic but with a clock too far off: a signed refusal tells the client why.
        if (
            reason is DropReason.CLOCK_SKEW
            and isinstance(message, HandshakeMessage)
            and self._budget.allow_refusal(now)
        ):
            self._control(
                message.header.epoch, ControlFlag.NO_SESSION, address, data=RefusalCode.CLOCK_SKEW
            )

    def next_deadline(self) -> float:
        return min(
            self._expiry.deadline(self.last_received_at), self._previous.deadline(self.epochs)
        )

    def handle_timer(self, now: float) -> None:
        self._previous.run(now, self.epochs)
        last = self.last_received_at
        if last is not None and now >= self._expiry.deadline(last):
            self.forget()
            self.events.append(Expired(now - last))

    def forget(self) -> None:
        """Drop the session with this client (as an idle expiry does): its keys, endpoint
        and clock offset. What it remembers of signed messages stays, so that a replay
        of this session's messages is refused later too."""
        self.epochs.clear()
        self._previous.until = None
        self.endpoint = self._answered = None
        self._peer_clock.offset_us = None
        self.last_received_at = None
        self._ever_connected = False
        self.timers_changed = True


class ServerCore:
    """All of a server's peer sessions, the routing of datagrams to them, the budget."""

    def __init__(
        self,
        local: LocalIdentity,
        peers: Iterable[Peer] = (),
        *,
        settings: SessionSettings | None = None,
        clock: WallClock | None = None,
        handshake_rate: float | None = DEFAULT_HANDSHAKE_RATE,
        handshake_burst: float = DEFAULT_HANDSHAKE_BURST,
    ) -> None:
        self.local = local
        self.settings = settings or SessionSettings()
        self.clock = clock or SystemClock()
        #: Each configured client's session by virtual address.
        self.sessions: dict[int, ServerPeerSession] = {}
        #: Datagrams that belonged to no session, by reason.
        self.drops: Counter[DropReason] = Counter()
        #: Signature verifications per second, per source and globally (``handshake_rate``
        #: ``None``: no limit).
        #: Hosts that flood the door, banned for a while (the runtime has the kernel
        #: drop their datagrams).
        self.bans = Bans()
        self.budget = VerifyBudget(
            per_source=handshake_rate, per_source_burst=handshake_burst, bans=self.bans
        )
        #: When the socket last lost datagrams (the runtime reports it): idle expiry
        #: waits, since a client's keepalives may have been among them.
        self.loss = LossSignal()
        #: The header checks every datagram of a configured client passes.
        self.rules = PrefilterRules.for_clients((), ())
        for peer in peers:
            self.add_peer(peer)

    def add_peer(self, peer: Peer) -> ServerPeerSession:
        """Configure a client; raises ``ConfigError`` if its virtual address is taken."""
        if peer.vaddr == self.local.vaddr:
            raise ConfigError(f"peer {peer.vaddr}: that is the server's own virtual address")
        if peer.vaddr in self.sessions:
            raise ConfigError(f"peer {peer.vaddr} is configured twice")
        session = ServerPeerSession(
            local=self.local,
            client=peer,
            settings=self.settings,
            clock=self.clock,
            budget=self.budget,
            loss=self.loss,
        )
        self.sessions[peer.vaddr] = session
        self._rules_changed()
        return session

    def remove_peer(self, vaddr: int) -> ServerPeerSession:
        """Forget a client and its session."""
        session = self.sessions.pop(vaddr)
        self.budget.forget_client(vaddr)
        self._rules_changed()
        return session

    def _rules_changed(self) -> None:
        sessions = self.sessions.values()
        self.rules = PrefilterRules.for_clients(
            {s.version for s in sessions}, [s.peer.vaddr for s in sessions]
        )

    def route(self, datagram: bytes, address: Address, now: float) -> int:
        """The virtual address of the client a datagram belongs to, or :data:`NO_PEER`.

        Data goes by its ``src`` alone (the session's data path checks the rest);
        anything else must pass the :class:`PrefilterRules` first, and, unless it
        comes from where the client is known to be, its source host's budget of
        signed datagrams (``VerifyBudget.admit``): a flood from one host costs a
        dictionary lookup per datagram, not a parse.
        """
        if len(datagram) < HEADER_SIZE:
            self.drops[DropReason.DATAGRAM_TOO_SHORT] += 1
            return NO_PEER
        data = datagram[1] == _DATA
        if not data:
            reason = prefilter_reason(datagram, self.rules)
            if reason is not None:
                self.drops[reason] += 1
                return NO_PEER
        src = (datagram[4] << 8) | datagram[5]
        session = self.sessions.get(src)
        if session is None:
            self.drops[DropReason.UNKNOWN_PEER] += 1
            return NO_PEER
        if not data and not session.knows(address) and not self.budget.admit(address[0], now):
            self.drops[DropReason.RATE_LIMITED] += 1
            return NO_PEER
        return src
