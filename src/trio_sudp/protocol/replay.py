"""Refusal of replayed Data, with bounded memory (SPEC §6 "Replay", §7 "Unique nonces").

trio-sudp senders build nonces as a 32-bit per-key prefix plus a 64-bit counter that
starts at 1; Go senders use 12 random bytes. The filter learns the prefix of the first
nonce whose counter part is below 2**32 (as a counter's always is), and keeps a sliding window
(the highest counter and the missing counters below it) for nonces that share it; any
other nonce is remembered in a bounded FIFO set. Memory is bounded by
``window`` and ``memory`` entries whatever the traffic.
"""

from __future__ import annotations

from collections import deque

__all__ = ["ReplayFilter"]

_COUNTER_MASK = (1 << 64) - 1
#: Counters stay far below this within one epoch (30 s); a random 64-bit value
#: falls below it with probability 2**-32.
_MAX_COUNTER = 1 << 32


class ReplayFilter:
    """Accepts each authenticated nonce once."""

    __slots__ = ("_base", "_memory", "_missing", "_order", "_seen", "_top", "_window")

    def __init__(self, window: int = 8192, memory: int = 8192) -> None:
        self._window = window
        self._memory = memory
        self._base: int | None = None
        self._top = 0
        self._missing: set[int] = set()
        self._seen: set[bytes] | None = None
        self._order: deque[bytes] | None = None

    def accept(self, nonce: bytes) -> bool:
        """Record ``nonce``; return ``False`` if it was seen before (or is too old to tell)."""
        n = int.from_bytes(nonce, "big")
        base = self._base
        if base is None:
            if n & _COUNTER_MASK > _MAX_COUNTER:
                # A counter never gets this high within one epoch: a random nonce.
                return self._accept_random(nonce)
            # The first counter nonce: counters before it may still arrive late.
            self._base = n >> 64
            self._top = (n >> 64) << 64
            self._skip_to(n)
            return True
        if n >> 64 == base:
            top = self._top
            if n == top + 1:
                self._top = n
                return True
            if n > top:
                self._skip_to(n)
                return True
            if n in self._missing:
                self._missing.discard(n)
                return True
            return False
        return self._accept_random(nonce)

    def _skip_to(self, n: int) -> None:
        # Counters between the old top and n were lost or are late: remember them as
        # missing, within the window only.
        window = self._window
        missing = self._missing
        low = max(self._top + 1, n - window)
        missing.update(range(low, n))
        if len(missing) > window:
            floor = n - window
            self._missing = {m for m in missing if m >= floor}
        self._top = n

    def _accept_random(self, nonce: bytes) -> bool:
        seen = self._seen
        order = self._order
        if seen is None or order is None:
            seen = self._seen = set()
            order = self._order = deque()
        if nonce in seen:
            return False
        seen.add(nonce)
        order.append(nonce)
        if len(order) > self._memory:
            seen.discard(order.popleft())
        return True
