"""Two protocol-core state machines wired in memory with fake time (no sockets, no Trio).

``Pair`` owns a monotonic ``now``, a wall clock per side (the client's may be skewed),
a ClientSession and a ServerCore with one configured client, and the datagrams in
flight between them. Tests drive it with ``run_for`` and inspect what was delivered,
sent, dropped and reported.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from functools import cache
from typing import Any

from trio_sudp.protocol import (
    ClientSession,
    Event,
    LocalIdentity,
    Peer,
    PrivateKey,
    ServerCore,
    ServerPeerSession,
    SessionSettings,
    Version,
)

SERVER_ADDR = ("192.0.2.1", 7000)
CLIENT_ADDR = ("198.51.100.7", 40000)
CLIENT_VADDR = 7
BASE_US = 1_795_571_950_000_000
SHARED_KEY = b"Lkgd9wVOtCaFoTZacaDZ"


@cache
def static_keys() -> tuple[PrivateKey, PrivateKey]:
    return PrivateKey.generate(), PrivateKey.generate()


class FollowClock:
    """A wall clock that follows the pair's fake monotonic time, plus a fixed skew."""

    def __init__(self, pair: Pair, skew: float) -> None:
        self.pair = pair
        self.skew_us = round(skew * 1e6)

    def now_us(self) -> int:
        return BASE_US + self.skew_us + round(self.pair.now * 1e6)


Filter = Callable[[bytes], bool]


class Pair:
    def __init__(
        self,
        version: Version = Version.V3,
        *,
        settings: SessionSettings | None = None,
        server_settings: SessionSettings | None = None,
        client_skew: float = 0.0,
        latency: float = 0.01,
        first_epoch: Callable[[], int] | None = None,
        seed: int = 0,
        handshake_rate: float | None = 20.0,
    ) -> None:
        self.now = 0.0
        self.version = version
        self.latency = latency
        self.rng = random.Random(seed)
        server_key, client_key = static_keys()
        shared = SHARED_KEY if version == Version.V3 else None
        self.server_key, self.client_key = server_key, client_key
        self.client_clock = FollowClock(self, client_skew)
        self.server_clock = FollowClock(self, 0.0)
        self.client_settings = settings or SessionSettings()
        self.server_settings = server_settings or settings or SessionSettings()
        self.server_peer = Peer(0, server_key.public_key, version, shared)
        self.client_peer = Peer(CLIENT_VADDR, client_key.public_key, version, shared)
        self.client = self.new_client(first_epoch)
        self.handshake_rate = handshake_rate
        self.core = self.new_server()
        self.client_addr: Any = CLIENT_ADDR
        self._queue: list[tuple[float, int, str, bytes, Any]] = []
        self._seq = itertools.count()
        #: Return True to lose a datagram in flight.
        self.lose_c2s: Filter = lambda _d: False
        self.lose_s2c: Filter = lambda _d: False
        self.duplicate = 0.0
        self.jitter = 0.0
        self.to_server: list[bytes] = []
        self.to_client: list[bytes] = []
        self.wire_c2s: list[bytes] = []
        self.wire_s2c: list[bytes] = []
        self.client_events: list[Event] = []
        self.server_events: list[Event] = []
        #: (time, side, event) of every event, in order.
        self.timeline: list[tuple[float, str, Event]] = []
        self.server_down = False

    def new_client(self, first_epoch: Callable[[], int] | None = None) -> ClientSession:
        return ClientSession(
            local=LocalIdentity(CLIENT_VADDR, self.client_key),
            server=self.server_peer,
            server_address=SERVER_ADDR,
            settings=self.client_settings,
            clock=self.client_clock,
            first_epoch=first_epoch,
        )

    def new_server(self) -> ServerCore:
        return ServerCore(
            LocalIdentity(0, self.server_key),
            [self.client_peer],
            settings=self.server_settings,
            clock=self.server_clock,
            handshake_rate=self.handshake_rate,
        )

    @property
    def server(self) -> ServerPeerSession:
        return self.core.sessions[CLIENT_VADDR]

    # ----------------------------------------------------------------- network

    def _schedule(self, direction: str, datagram: bytes, addr: Any) -> None:
        lose = self.lose_c2s if direction == "c2s" else self.lose_s2c
        (self.wire_c2s if direction == "c2s" else self.wire_s2c).append(datagram)
        if lose(datagram):
            return
        copies = 2 if self.duplicate and self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            delay = self.latency + (self.rng.uniform(0, self.jitter) if self.jitter else 0.0)
            heapq.heappush(
                self._queue, (self.now + delay, next(self._seq), direction, datagram, addr)
            )

    def flush(self) -> None:
        for datagram, addr in self.client.take_datagrams():
            assert addr == SERVER_ADDR
            self._schedule("c2s", datagram, self.client_addr)
        events = self.client.take_events()
        self.client_events += events
        self.timeline += [(self.now, "client", e) for e in events]
        for session in self.core.sessions.values():
            for datagram, addr in session.take_datagrams():
                self._schedule("s2c", datagram, addr)
            events = session.take_events()
            self.server_events += events
            self.timeline += [(self.now, "server", e) for e in events]

    def deliver_to_server(self, datagram: bytes, addr: Any) -> bytes | None:
        if self.server_down:
            return None
        vaddr = self.core.route(datagram, addr, self.now)
        session = self.core.sessions.get(vaddr)
        payload = None if session is None else session.receive(datagram, addr, self.now)
        if payload is not None:
            self.to_server.append(payload)
        return payload

    def deliver_to_client(self, datagram: bytes, addr: Any = SERVER_ADDR) -> bytes | None:
        payload = self.client.receive(datagram, addr, self.now)
        if payload is not None:
            self.to_client.append(payload)
        return payload

    def _deliver(self, direction: str, datagram: bytes, addr: Any) -> None:
        if direction == "c2s":
            self.deliver_to_server(datagram, addr)
        elif addr == self.client_addr:
            self.deliver_to_client(datagram)

    # ----------------------------------------------------------------- time

    def next_time(self) -> float:
        times = [self.client.next_deadline()]
        times += [s.next_deadline() for s in self.core.sessions.values()]
        if self._queue:
            times.append(self._queue[0][0])
        return min(times)

    def run_until(self, end: float, *, max_steps: int = 1_000_000) -> None:
        self.flush()
        for _ in range(max_steps):
            when = self.next_time()
            if when > end:
                self.now = end
                return
            self.now = max(self.now, when)
            while self._queue and self._queue[0][0] <= self.now:
                _, _, direction, datagram, addr = heapq.heappop(self._queue)
                self._deliver(direction, datagram, addr)
                self.flush()
            self.client.handle_timer(self.now)
            for session in self.core.sessions.values():
                session.handle_timer(self.now)
            self.flush()
        raise AssertionError("run_until did not converge")

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def connect(self) -> None:
        self.client.connect(self.now)
        self.run_for(0.2)

    # ----------------------------------------------------------------- data

    def send_c2s(self, payload: bytes) -> None:
        self._schedule("c2s", self.client.send(payload, self.now), self.client_addr)

    def send_s2c(self, payload: bytes) -> None:
        session = self.server
        assert session.endpoint is not None
        self._schedule("s2c", session.send(payload, self.now), session.endpoint)

    def times_of(self, side: str, kind: type) -> list[float]:
        return [t for t, s, e in self.timeline if s == side and isinstance(e, kind)]

    def events_of(self, side: str, kind: type) -> list[Any]:
        events = self.client_events if side == "client" else self.server_events
        return [e for e in events if isinstance(e, kind)]

    def restart_server(self) -> None:
        """The server process restarts: every session is lost."""
        self.core = self.new_server()
