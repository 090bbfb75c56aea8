"""How many signature verifications the server does per second, and for whom (SPEC §6).

An ECDSA verification costs about a hundred times a Data datagram, so an attacker who
can make the server verify (a v2 header tag is a public CRC; anyone can build a
well-formed handshake) owns its CPU unless verifications are budgeted:

- a message from a known client's current endpoint (or from where its pending
  handshake came from) draws on that client's own bucket and on the known-clients'
  global bucket: a flood from elsewhere cannot starve the keepalives and rekeys of
  established clients, and a flood spoofing one client's endpoint costs that client
  alone;
- any other source host has a bucket of signed datagrams it may send at all
  (:meth:`VerifyBudget.admit`, checked by ``ServerCore.route`` before anything is
  parsed: beyond it, a flood costs a lookup per datagram), and its verifications
  draw on the strangers' global bucket;
- refusals (the only answers to unauthenticated requests, never signed themselves)
  share one small global bucket, so the server is no reflector.

Buckets refill continuously; a refused verification is not attempted at all.
"""

from __future__ import annotations

from typing import Final

import attrs

from .bans import Bans
from .errors import ConfigError

__all__ = [
    "DEFAULT_HANDSHAKE_BURST",
    "DEFAULT_HANDSHAKE_RATE",
    "BudgetStats",
    "SourceBuckets",
    "TokenBucket",
    "VerifyBudget",
]

#: Signed datagrams per second (and at once) looked at from one source host that is no
#: client's current endpoint: ``open_server``'s ``handshake_rate`` and ``handshake_burst``.
DEFAULT_HANDSHAKE_RATE: Final = 20.0
DEFAULT_HANDSHAKE_BURST: Final = 20.0
#: Verifications per second for all known clients' endpoints together, and for all
#: other sources together (a P-256 verification is ~60-150 µs on these machines).
DEFAULT_KNOWN_RATE: Final = 4000.0
DEFAULT_STRANGER_RATE: Final = 1000.0
#: Verifications per second for one known client (a KeepAlive every 0.5 s is 2).
DEFAULT_PER_CLIENT_RATE: Final = 50.0
#: Refusals sent per second, for everyone together.
DEFAULT_REFUSAL_RATE: Final = 10.0


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._last = -1.0

    def take(self, now: float) -> bool:
        """Take one token; ``False`` (and nothing taken) if there is none."""
        if self._last >= 0:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class SourceBuckets:
    """A token bucket per source host, in bounded memory (full buckets are forgotten)."""

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


@attrs.define
class BudgetStats:
    """What the budget allowed and refused (for ``show`` and the metrics endpoint)."""

    verified_known: int = 0
    verified_strangers: int = 0
    refused_known: int = 0
    refused_strangers: int = 0
    refusals_sent: int = 0
    refusals_suppressed: int = 0


class VerifyBudget:
    """The server's signature verifications, budgeted (see the module docstring).

    ``per_source`` ``None`` lifts every limit (``open_server(handshake_rate=None)``).
    """

    def __init__(
        self,
        *,
        per_source: float | None = DEFAULT_HANDSHAKE_RATE,
        per_source_burst: float = DEFAULT_HANDSHAKE_BURST,
        known_rate: float = DEFAULT_KNOWN_RATE,
        stranger_rate: float = DEFAULT_STRANGER_RATE,
        per_client_rate: float = DEFAULT_PER_CLIENT_RATE,
        refusal_rate: float = DEFAULT_REFUSAL_RATE,
        bans: Bans | None = None,
    ) -> None:
        self.stats = BudgetStats()
        #: Told of every host refused at the door (``bans.py``).
        self._bans = bans
        self._limited = per_source is not None
        self._sources = SourceBuckets(per_source or 1.0, per_source_burst)
        # A second's worth of strangers at once: the whole fleet reconnecting after a
        # server restart is 2 verifications per client (handshake, EpochAck).
        self._known = TokenBucket(known_rate, known_rate / 4)
        self._strangers = TokenBucket(stranger_rate, stranger_rate)
        self._per_client_rate = per_client_rate
        self._clients: dict[int, TokenBucket] = {}
        self._refusals = TokenBucket(refusal_rate, refusal_rate)

    def admit(self, source: str, now: float) -> bool:
        """Whether to look at a signed datagram from host ``source``, which is no
        client's known endpoint (taking one of its tokens)."""
        if not self._limited or self._sources.allow(source, now):
            return True
        self.stats.refused_strangers += 1
        if self._bans is not None:
            self._bans.refused(source)
        return False

    def allow(self, vaddr: int, known: bool, now: float) -> bool:
        """Whether to verify a signed message for client ``vaddr``.

        ``known``: it came from that client's current endpoint (else its host was
        :meth:`admit`-ted).
        """
        stats = self.stats
        if not self._limited:
            stats.verified_known += known
            stats.verified_strangers += not known
            return True
        if known:
            bucket = self._clients.get(vaddr)
            if bucket is None:
                bucket = self._clients[vaddr] = TokenBucket(
                    self._per_client_rate, self._per_client_rate
                )
            if bucket.take(now) and self._known.take(now):
                stats.verified_known += 1
                return True
            stats.refused_known += 1
            return False
        if self._strangers.take(now):
            stats.verified_strangers += 1
            return True
        stats.refused_strangers += 1
        return False

    def forget_client(self, vaddr: int) -> None:
        """A client was removed: its bucket goes too."""
        self._clients.pop(vaddr, None)

    def allow_refusal(self, now: float) -> bool:
        """Whether a refusal may be sent now (all refusals share one small budget)."""
        if self._refusals.take(now):
            self.stats.refusals_sent += 1
            return True
        self.stats.refusals_suppressed += 1
        return False
