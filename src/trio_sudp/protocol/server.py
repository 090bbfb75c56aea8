"""The server side's dispatcher: one session per configured client, found by ``src``.

The server finds the peer by the header's ``src`` (not by UDP address, SPEC §4),
refuses datagrams from unknown virtual addresses cheaply, and rate-limits
ClientHandshakes per source host, because each one costs an ECDSA verification, an
ECDH and a signature (SPEC §6 "Denial of service").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from .clock import SystemClock, WallClock
from .constants import HEADER_SIZE, Kind
from .errors import ConfigError, DropReason
from .events import PacketDropped
from .peers import LocalIdentity, Peer
from .session import ServerPeerSession
from .settings import SessionSettings

__all__ = ["HandshakeRateLimiter", "ServerCore"]


class HandshakeRateLimiter:
    """A token bucket per source host: ``rate`` handshakes per second, ``burst`` at once."""

    __slots__ = ("_buckets", "_max_sources", "burst", "rate")

    def __init__(self, rate: float, burst: float, max_sources: int = 65536) -> None:
        if rate <= 0 or burst < 1:
            raise ConfigError("handshake rate must be > 0 per second with a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._max_sources = max_sources
        self._buckets: dict[Any, tuple[float, float]] = {}

    def allow(self, source: Any, now: float) -> bool:
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
        handshake_rate: float | None = 20.0,
        handshake_burst: float = 20.0,
    ) -> None:
        self.local = local
        self.settings = settings or SessionSettings()
        self.clock = clock or SystemClock()
        self.sessions: dict[int, ServerPeerSession] = {}
        self.drops: Counter[DropReason] = Counter()
        #: Drops that belong to no session, not yet taken by the driver.
        self.events: list[PacketDropped] = []
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

    def session_for(self, datagram: bytes, address: Any, now: float) -> ServerPeerSession | None:
        """The session a datagram belongs to, or ``None`` (counted) if it belongs to none."""
        if len(datagram) < HEADER_SIZE:
            self._drop(DropReason.DATAGRAM_TOO_SHORT, f"{len(datagram)} bytes")
            return None
        src = (datagram[4] << 8) | datagram[5]
        session = self.sessions.get(src)
        if session is None:
            self._drop(DropReason.UNKNOWN_PEER, f"src {src}")
            return None
        limiter = self._limiter
        if (
            datagram[1] == Kind.CLIENT_HANDSHAKE
            and limiter is not None
            and not limiter.allow(address[0] if isinstance(address, tuple) else address, now)
        ):
            self._drop(DropReason.RATE_LIMITED, f"handshakes from {address!r}")
            return None
        return session

    def _drop(self, reason: DropReason, detail: str) -> None:
        self.drops[reason] += 1
        self.events.append(PacketDropped(reason, detail))

    def take_events(self) -> list[PacketDropped]:
        """Drops that belong to no session, since the last call."""
        out = self.events
        self.events = []
        return out
