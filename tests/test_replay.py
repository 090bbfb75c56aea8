"""The replay filter (SPEC §6 "Replay", §7 "Unique nonces"): once only, bounded memory."""

from __future__ import annotations

import os
from collections import deque

from hypothesis import given
from hypothesis import strategies as st

from trio_sudp.protocol.epochs import EpochKey
from trio_sudp.protocol.replay import ReplayFilter

PREFIX = 0x8123_4567


def counter_nonce(counter: int, prefix: int = PREFIX) -> bytes:
    return prefix.to_bytes(4, "big") + counter.to_bytes(8, "big")


class ReferenceFilter:
    """The filter's rules written plainly on 96-bit integers (its first implementation)."""

    def __init__(self, window: int, memory: int) -> None:
        self.window = window
        self.memory = memory
        self.base: int | None = None
        self.top = 0
        self.missing: set[int] = set()
        self.seen: set[bytes] = set()
        self.order: deque[bytes] = deque()

    def accept(self, nonce: bytes) -> bool:
        n = int.from_bytes(nonce, "big")
        if self.base is None:
            if n & ((1 << 64) - 1) > 1 << 32:
                return self.accept_random(nonce)
            self.base = n >> 64
            self.top = self.base << 64
            self.skip_to(n)
            return True
        if n >> 64 == self.base:
            if n > self.top:
                self.skip_to(n)
                return True
            if n in self.missing:
                self.missing.discard(n)
                return True
            return False
        return self.accept_random(nonce)

    def skip_to(self, n: int) -> None:
        self.missing.update(range(max(self.top + 1, n - self.window), n))
        if len(self.missing) > self.window:
            self.missing = {m for m in self.missing if m >= n - self.window}
        self.top = n

    def accept_random(self, nonce: bytes) -> bool:
        if nonce in self.seen:
            return False
        self.seen.add(nonce)
        self.order.append(nonce)
        if len(self.order) > self.memory:
            self.seen.discard(self.order.popleft())
        return True


def test_in_order_counters_are_accepted_once() -> None:
    f = ReplayFilter()
    assert all(f.accept(counter_nonce(c)) for c in range(1, 1000))
    assert f.prefix == PREFIX and f.next_counter == 1000
    assert not any(f.accept(counter_nonce(c)) for c in range(1, 1000))


def test_late_counters_within_the_window_are_accepted_once() -> None:
    f = ReplayFilter(window=64)
    assert f.accept(counter_nonce(10))
    assert f.accept(counter_nonce(100))
    assert f.accept(counter_nonce(50))
    assert not f.accept(counter_nonce(50))
    # 100 - 64 = 36 is the oldest counter still remembered as missing.
    assert not f.accept(counter_nonce(35))
    assert f.accept(counter_nonce(36))
    assert f.accept(counter_nonce(99))
    assert f.accept(counter_nonce(101))


def test_random_go_nonces_are_accepted_once_with_bounded_memory() -> None:
    f = ReplayFilter(window=16, memory=100)
    nonces = [os.urandom(12) for _ in range(1000)]
    assert all(f.accept(n) for n in nonces)
    assert not any(f.accept(n) for n in nonces[-100:])
    # Older nonces are forgotten: memory stays bounded whatever the traffic.
    assert f._seen is not None and len(f._seen) == 100
    assert len(f._missing) <= 16


def test_a_random_nonce_that_looks_like_a_counter_does_not_break_random_ones() -> None:
    f = ReplayFilter()
    assert f.accept(bytes(4) + (5).to_bytes(8, "big"))  # learns prefix 0 from a Go nonce
    nonces = [os.urandom(12) for _ in range(100)]
    assert all(f.accept(n) for n in nonces)
    assert not any(f.accept(n) for n in nonces)


def test_the_epoch_keys_nonces_are_what_the_filter_expects() -> None:
    client = EpochKey(7, os.urandom(32), server_side=False)
    server = EpochKey(7, os.urandom(32), server_side=True)
    a, b = client.next_nonce(), client.next_nonce()
    assert a[:4] == b[:4] and a[0] < 0x80 <= server.next_nonce()[0]
    assert int.from_bytes(a[4:], "big") == 1 and int.from_bytes(b[4:], "big") == 2
    f = ReplayFilter()
    assert f.accept(a) and f.accept(b) and not f.accept(a)


nonce_streams = st.lists(
    st.one_of(
        st.integers(0, 60).map(counter_nonce),  # a counter sender, in any order
        st.integers(0, 60).map(lambda c: counter_nonce(c, PREFIX ^ 1)),  # another prefix
        st.binary(min_size=12, max_size=12),  # random nonces
        st.sampled_from([counter_nonce(2**32), counter_nonce(2**32 + 1), counter_nonce(2**64 - 1)]),
    ),
    max_size=200,
)


@given(nonce_streams, st.integers(1, 20), st.integers(1, 20))
def test_the_filter_follows_its_reference_rules(
    nonces: list[bytes], window: int, memory: int
) -> None:
    f = ReplayFilter(window, memory)
    ref = ReferenceFilter(window, memory)
    for nonce in nonces:
        prefix = int.from_bytes(nonce[:4], "big")
        counter = int.from_bytes(nonce[4:], "big")
        if prefix == f.prefix and counter == f.next_counter:  # the data path's inline case
            f.next_counter = counter + 1
            got = True
        else:
            got = f.check(prefix, counter)
        assert got == ref.accept(nonce)
        assert len(f._missing) <= window
        assert f._seen is None or len(f._seen) <= memory
