"""The server side: a session per configured client, and the dispatcher in front of them.

- :class:`ServerPeerSession` is the passive side's view of one client: it answers
  handshakes and KeepAlives, promotes epochs, follows the client's endpoint and
  forgets it when idle.
- :class:`ServerCore` finds the session of a datagram by the header's ``src`` (not by
  UDP address, SPEC §4). :meth:`ServerCore.route` makes the cheap checks every
  datagram gets before any session sees it — size, known ``src``, and a per-source
  rate limit on ClientHandshakes, because each one costs an ECDSA verification, an
  ECDH and a signature (SPEC §6 "Denial of service") — and hands back the client's
  virtual address. A refused datagram is counted by reason in ``ServerCore.drops``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Final

from .address import Address
from .clock import SystemClock, WallClock
from .constants import HEADER_SIZE, SERVER_VADDR, ControlFlag, Kind
from .crypto import EphemeralKey
from .errors import BadPacket, ConfigError, DropReason
from .events import Expired
from .handshake import RefusalCode, SignedMessage
from .liveness import IdleExpiry
from .peers import LocalIdentity, Peer
from .session import Session, SessionState
from .settings import SessionSettings
from .wire import ControlMessage, HandshakeMessage

__all__ = [
    "DEFAULT_HANDSHAKE_BURST",
    "DEFAULT_HANDSHAKE_RATE",
    "NO_PEER",
    "HandshakeRateLimiter",
    "ServerCore",
    "ServerPeerSession",
]

#: :meth:`ServerCore.route`'s answer for a datagram that belongs to no session.
NO_PEER: Final = -1
#: ClientHandshakes accepted per second per source host, and at once.
DEFAULT_HANDSHAKE_RATE: Final = 20.0
DEFAULT_HANDSHAKE_BURST: Final = 20.0


class ServerPeerSession(Session):
    """The server's session with one configured client."""

    __slots__ = ("_expiry",)

    _handshake_kind = Kind.CLIENT_HANDSHAKE
    _server_side = True

    def __init__(
        self,
        *,
        local: LocalIdentity,
        client: Peer,
        settings: SessionSettings | None = None,
        clock: WallClock | None = None,
    ) -> None:
        if local.vaddr != SERVER_VADDR:
            raise ValueError(f"the server's virtual address is {SERVER_VADDR}, not {local.vaddr}")
        settings = settings or SessionSettings()
        super().__init__(local=local, peer=client, settings=settings, clock=clock or SystemClock())
        self._expiry = IdleExpiry(settings)

    @property
    def state(self) -> SessionState:
        if self.epochs.current is not None:
            return SessionState.ESTABLISHED
        if self.epochs.pending is not None:
            return SessionState.HANDSHAKING
        return SessionState.IDLE

    def _server_handshake(self, epoch: int, server_public: bytes, address: Address) -> None:
        self._emit(self._signed.handshake(Kind.SERVER_HANDSHAKE, epoch, server_public), address)

    def _on_handshake(self, message: HandshakeMessage, address: Address, now: float) -> None:
        epoch = message.header.epoch
        client_public = message.ephemeral_public
        for key in (self.epochs.pending, self.epochs.current):
            if key is not None and key.epoch == epoch and key.client_public == client_public:
                # A resend of a handshake we answered: the same answer again (SPEC §4.2).
                self._authenticated_from(address, now)
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
        self._authenticated_from(address, now)
        self._server_handshake(epoch, ephemeral.public_bytes, address)
        self.timers_changed = True

    def _on_control(self, message: ControlMessage, address: Address, now: float) -> None:
        epoch = message.header.epoch
        key = self.epochs.by_epoch.get(epoch)
        if key is not None:
            if key is self.epochs.pending:
                self._promote(now)
            self._authenticated_from(address, now)
            self.timers_changed = True
        if message.flags & ControlFlag.KEEPALIVE:
            flags = ControlFlag.KEEPALIVE_ACK
            if key is None:
                flags |= ControlFlag.NO_SESSION
            self._control(epoch, flags, address)
        elif key is None:
            self._drop(DropReason.UNKNOWN_EPOCH)

    def _refuse(self, message: SignedMessage, code: RefusalCode, address: Address) -> None:
        if isinstance(message, HandshakeMessage):
            self._control(message.header.epoch, ControlFlag.NO_SESSION, address, data=int(code))

    def _on_unauthentic(
        self, message: SignedMessage, reason: DropReason, address: Address, now: float
    ) -> None:
        if reason is DropReason.BAD_SIGNATURE:
            self._refuse(message, RefusalCode.BAD_SIGNATURE, address)
        elif reason is DropReason.HEADER_TAG_MISMATCH:
            self._refuse(message, RefusalCode.HEADER_TAG_MISMATCH, address)

    def _on_untimely(
        self, message: SignedMessage, reason: DropReason, address: Address, now: float
    ) -> None:
        if reason is DropReason.CLOCK_SKEW:
            self._refuse(message, RefusalCode.CLOCK_SKEW, address)

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
        """Drop all session state with this client (as an idle expiry does)."""
        self.epochs.clear()
        self._previous.until = None
        self.endpoint = None
        self._peer_clock.offset_us = None
        self.last_received_at = None
        self._ever_connected = False
        self._signatures.clear()
        self.timers_changed = True


class HandshakeRateLimiter:
    """A token bucket per source host: ``rate`` handshakes per second, ``burst`` at once."""

    __slots__ = ("_buckets", "_max_sources", "burst", "rate")

    def __init__(self, rate: float, burst: float, max_sources: int = 65536) -> None:
        if rate <= 0 or burst < 1:
            raise ConfigError("handshake rate must be > 0 per second with a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._max_sources = max_sources
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, source: str, now: float) -> bool:
        """Take a token from ``source``'s bucket; ``False`` if it has none."""
        tokens, last = self._buckets.get(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[source] = (tokens, now)
            return False
        if source not in self._buckets and len(self._buckets) >= self._max_sources:
            self._prune(now)
        self._buckets[source] = (tokens - 1, now)
        return True

    def _prune(self, now: float) -> None:
        # Buckets that have refilled carry no information: drop them first.
        full_after = self.burst / self.rate
        self._buckets = {s: b for s, b in self._buckets.items() if now - b[1] < full_after}
        while len(self._buckets) >= self._max_sources:
            del self._buckets[next(iter(self._buckets))]


class ServerCore:
    """All of a server's peer sessions, and the routing of datagrams to them."""

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
        self._limiter = (
            HandshakeRateLimiter(handshake_rate, handshake_burst) if handshake_rate else None
        )
        for peer in peers:
            self.add_peer(peer)

    def add_peer(self, peer: Peer) -> ServerPeerSession:
        """Configure a client; raises ``ConfigError`` if its virtual address is taken."""
        if peer.vaddr == self.local.vaddr:
            raise ConfigError(f"peer {peer.vaddr}: that is the server's own virtual address")
        if peer.vaddr in self.sessions:
            raise ConfigError(f"peer {peer.vaddr} is configured twice")
        session = ServerPeerSession(
            local=self.local, client=peer, settings=self.settings, clock=self.clock
        )
        self.sessions[peer.vaddr] = session
        return session

    def remove_peer(self, vaddr: int) -> ServerPeerSession:
        """Forget a client and its session."""
        return self.sessions.pop(vaddr)

    def route(self, datagram: bytes, address: Address, now: float) -> int:
        """The virtual address of the client a datagram belongs to, or :data:`NO_PEER`."""
        if len(datagram) < HEADER_SIZE:
            self.drops[DropReason.DATAGRAM_TOO_SHORT] += 1
            return NO_PEER
        src = (datagram[4] << 8) | datagram[5]
        if src not in self.sessions:
            self.drops[DropReason.UNKNOWN_PEER] += 1
            return NO_PEER
        limiter = self._limiter
        if (
            datagram[1] == Kind.CLIENT_HANDSHAKE
            and limiter is not None
            and not limiter.allow(address[0], now)
        ):
            self.drops[DropReason.RATE_LIMITED] += 1
            return NO_PEER
        return src
