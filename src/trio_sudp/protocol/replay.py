"""Refusal of replayed Data, with bounded memory (SPEC §6 "Replay", §7 "Unique nonces").

trio-sudp senders build nonces as a 32-bit per-key prefix plus a 64-bit counter that
starts at 1; Go senders use 12 random bytes. The filter learns the prefix of the first
nonce whose counter part is below 2**32 (as a counter's always is), and keeps a sliding
window (the highest counter and the missing counters below it) for nonces that share
it; any other nonce is remembered in a bounded FIFO set. Memory is bounded by
``window`` and ``memory`` entries whatever the traffic.

The in-order case (the next counter under the learned prefix) is the per-packet one:
:meth:`ReplayFilter.check` tests it first and remembers nothing else for it.
"""

from __future__ import annotations

from collections import deque

__all__ = ["ReplayFilter"]

#: Counters stay far below this within one epoch (30 s); a random 64-bit value
#: falls below it with probability 2**-32.
_MAX_COUNTER = 1 << 32


class ReplayFilter:
    """Accepts each authenticated nonce once."""

    __slots__ = ("_memory", "_missing", "_order", "_seen", "_window", "next_counter", "prefix")

    def __init__(self, window: int = 8192, memory: int = 8192) -> None:
        self._window = window
        self._memory = memory
        #: The learned counter prefix (the nonce's first 4 bytes); -1 until learned.
        self.prefix = -1
        #: One above the highest counter accepted under ``prefix``.
        self.next_counter = 0
        self._missing: set[int] = set()
        #: Other nonces (as 96-bit integers), oldest first in ``_order``.
        self._seen: set[int] | None = None
        self._order: deque[int] | None = None

    def accept(self, nonce: bytes) -> bool:
        """Record ``nonce``; return ``False`` if it was seen before (or is too old to tell)."""
        return self.check(int.from_bytes(nonce[:4], "big"), int.from_bytes(nonce[4:12], "big"))

    def check(self, prefix: int, counter: int) -> bool:
        """:meth:`accept` for a nonce given as its 4-byte prefix and 8-byte counter."""
        if prefix == self.prefix:
            if counter == self.next_counter:
                self.next_counter = counter + 1
                return True
            top = self.next_counter - 1
            if counter > top:
                self._skip_to(counter, top)
                return True
            if counter in self._missing:
                self._missing.discard(counter)
                return True
            return False
        if self.prefix < 0 and counter <= _MAX_COUNTER:
            # The first counter nonce: counters before it may still arrive late.
            self.prefix = prefix
            self._skip_to(counter, 0)
            return True
        # A random nonce (a counter never gets above 2**32 within one epoch), or one
        # of another prefix.
        return self._accept_random(prefix << 64 | counter)

    def _skip_to(self, counter: int, top: int) -> None:
        # Counters between the old top and this one were lost or are late: remember
        # them as missing, within the window only.
        window = self._window
        missing = self._missing
        missing.update(range(max(top + 1, counter - window), counter))
        if len(missing) > window:
            floor = counter - window
            self._missing = {m for m in missing if m >= floor}
        self.next_counter = counter + 1

    def _accept_random(self, nonce: int) -> bool:
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
