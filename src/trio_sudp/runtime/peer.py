"""One peer's runtime: its session, its nursery of timer tasks, and what it emits.

The protocol session is a plain object the UDP task calls synchronously for every
datagram (see ``endpoint.py``). The peer's nursery runs its timer tasks — keepalive,
rekey/handshake and expiry for a client; expiry for a server-side peer — each
sleeping until its own deadline in a cancel scope. When a datagram moves a deadline
earlier (a NoSession hint, a completed handshake), the session raises
``timers_changed`` and :meth:`PeerRunner.service` lowers the deadline of the sleeping
timer's scope; a deadline that moved later is noticed when the sleep ends. So a
datagram never wakes a timer task that has nothing to do (a server-side peer's expiry
deadline only ever moves later), and a sleeping timer holds no parking lot.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from ..protocol import events as ev
from ..protocol.session import Session
from .endpoint import Endpoint
from .transport import Address, format_address

__all__ = ["PeerRunner", "PeerStatistics", "Timer"]

log = logging.getLogger("trio_sudp")

#: A timer of a session: when it is next due, and what to call then.
Timer = tuple[Callable[[], float], Callable[[float], None]]


@attrs.frozen
class PeerStatistics:
    """A snapshot of one peer, for ``show`` and for library users."""

    vaddr: int
    version: int
    state: str
    endpoint: Address | None
    current_epoch: int | None
    #: Seconds since the latest completed handshake (``None``: never).
    last_handshake_age: float | None
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int
    handshakes: int
    #: Dropped datagrams and payloads by reason code.
    drops: dict[str, int]
    public_key: str

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the endpoint as ``"host:port"`` or ``"[v6]:port"``)."""
        data = attrs.asdict(self)
        endpoint = self.endpoint
        data["endpoint"] = None if endpoint is None else format_address(endpoint)
        return data


#: Task names, given so that Trio does not build one string per task (memory per peer).
_RUN_NAME = "trio_sudp.runtime.peer.PeerRunner.run"
_TIMER_NAME = "trio_sudp.runtime.peer.PeerRunner._timer"


def _abort(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.SUCCEEDED


class _Timer:
    """One timer task's state: its deadline function and, while asleep, its cancel scope."""

    __slots__ = ("next_at", "scope")

    def __init__(self, next_at: Callable[[], float]) -> None:
        self.next_at = next_at
        self.scope: trio.CancelScope | None = None


class _Run:
    """One start of a peer's nursery (a runner may be started again after it stopped)."""

    __slots__ = ("nursery", "stopped", "timers")

    def __init__(self) -> None:
        self.nursery: trio.Nursery | None = None
        self.stopped = False
        self.timers: list[_Timer] = []


class PeerRunner:
    """Drives one session: delivers its payloads, sends its datagrams, runs its timers."""

    def __init__(
        self,
        session: Session,
        endpoint: Endpoint,
        *,
        on_payload: Callable[[PeerRunner, bytes], None],
        on_event: Callable[[PeerRunner, ev.Event], None] | None = None,
    ) -> None:
        self.session = session
        self.vaddr = session.peer.vaddr
        self.endpoint = endpoint
        self.on_payload = on_payload
        self.on_event = on_event
        #: Drops the runtime adds to the session's own (e.g. a full receive queue).
        self.drops: Counter[str] = Counter()
        self._run: _Run | None = None

    @property
    def running(self) -> bool:
        """Whether the peer's nursery was started and not stopped since."""
        run = self._run
        return run is not None and not run.stopped

    # ----------------------------------------------------------------- per packet

    def handle(self, datagram: bytes, address: Address, now: float) -> None:
        """Feed one received datagram to the session (the UDP task's per-packet call)."""
        session = self.session
        payload = session.receive(datagram, address, now)
        if payload is not None:
            self.on_payload(self, payload)
        if session.outbox or session.events or session.timers_changed:
            self.service()

    def handle_many(self, datagrams: list[bytes], address: Address, now: float) -> None:
        """Feed datagrams that arrived together from ``address`` to the session, in order.

        What :meth:`handle` does for each, through ``Session.receive_many`` (cheaper
        per datagram); the payloads are delivered after the whole run is processed.
        """
        session = self.session
        on_payload = self.on_payload
        for payload in session.receive_many(zip(datagrams, itertools.repeat(address)), now):
            on_payload(self, payload)
        if session.outbox or session.events or session.timers_changed:
            self.service()

    def send(self, payload: bytes, now: float) -> None:
        """Encrypt and send one payload (raises ``NotConnected``, ``PayloadTooLarge``)."""
        session = self.session
        self.endpoint.send(session.send(payload, now), session.endpoint)
        if session.timers_changed:  # e.g. a silence deadline the send started
            self.service()

    def service(self) -> None:
        """Send what the session queued, report its events, wake timers it moved."""
        session = self.session
        if session.outbox:
            send = self.endpoint.send
            for datagram, address in session.take_datagrams():
                send(datagram, address)
        if session.events:
            on_event = self.on_event
            for event in session.take_events():
                self._log(event)
                if on_event is not None:
                    on_event(self, event)
        if session.timers_changed:
            session.timers_changed = False
            run = self._run
            if run is not None:
                # Only a deadline that moved earlier needs its task woken: lower the
                # deadline of its sleep. A later one is noticed when the sleep ends.
                for timer in run.timers:
                    scope = timer.scope
                    if scope is not None:
                        deadline = timer.next_at()
                        if deadline < scope.deadline:
                            scope.deadline = deadline

    def _log(self, event: ev.Event) -> None:
        peer = self.vaddr
        if isinstance(event, ev.PacketDropped):
            log.debug("peer %d: dropped a datagram: %s %s", peer, event.reason.value, event.detail)
        elif isinstance(event, ev.Connected):
            log.info(
                "peer %d: connected (epoch %d, endpoint %r)", peer, event.epoch, event.endpoint
            )
        elif isinstance(event, ev.Rekeyed):
            log.debug("peer %d: rekeyed to epoch %d", peer, event.epoch)
        elif isinstance(event, ev.HandshakeStarted):
            log.debug("peer %d: handshake for epoch %d (%s)", peer, event.epoch, event.reason)
        elif isinstance(event, ev.HandshakeFailed):
            log.warning("peer %d: handshake failed: %s", peer, event.reason)
        elif isinstance(event, ev.SessionLost):
            log.info("peer %d: session lost: %s", peer, event.reason)
        elif isinstance(event, ev.Roamed):
            log.info("peer %d: endpoint moved from %r to %r", peer, event.old, event.new)
        elif isinstance(event, ev.Expired):
            log.info("peer %d: expired after %.1f s idle", peer, event.idle_for)

    # ----------------------------------------------------------------- timers

    async def run(
        self,
        timers: Sequence[Timer],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The peer's nursery: one task per timer, until :meth:`stop` or cancellation."""
        run = self._run = _Run()
        await self._run_in(run, timers, task_status)

    def start_in(self, nursery: trio.Nursery, timers: Sequence[Timer]) -> None:
        """Start :meth:`run` in ``nursery`` (from synchronous code); running at once."""
        run = self._run = _Run()
        nursery.start_soon(self._run_in, run, timers, trio.TASK_STATUS_IGNORED, name=_RUN_NAME)

    async def _run_in(
        self, run: _Run, timers: Sequence[Timer], task_status: trio.TaskStatus[None]
    ) -> None:
        # The nursery's own cancel scope is the one stop() cancels: no extra scope.
        try:
            async with trio.open_nursery() as nursery:
                run.nursery = nursery
                if run.stopped:
                    nursery.cancel_scope.cancel()
                for next_at, fire in timers:
                    timer = _Timer(next_at)
                    run.timers.append(timer)
                    nursery.start_soon(self._timer, timer, fire, name=_TIMER_NAME)
                del timers  # the tasks hold what they need
                task_status.started()
        finally:
            run.nursery = None
            run.timers.clear()

    def stop(self) -> None:
        """Cancel the peer's nursery (its timer tasks)."""
        run = self._run
        if run is not None:
            run.stopped = True
            if run.nursery is not None:
                run.nursery.cancel_scope.cancel()

    async def _timer(self, timer: _Timer, fire: Callable[[float], None]) -> None:
        next_at = timer.next_at
        current_time = trio.current_time
        while True:
            deadline = next_at()
            if deadline > current_time():
                # Sleep until the deadline; service() lowers it when the session moves it
                # earlier, so a wakeup costs nothing unless a timer is really due.
                with trio.CancelScope(deadline=deadline) as scope:
                    timer.scope = scope
                    try:
                        # trio.sleep_forever() without its own coroutine frame (memory).
                        await trio.lowlevel.wait_task_rescheduled(_abort)
                    finally:
                        timer.scope = None
                continue
            now = current_time()
            fire(now)
            self.service()
            if next_at() <= now:
                # The session did not move its own deadline: never spin on it.
                log.error("peer %d: a timer did not advance; backing off", self.vaddr)
                await trio.sleep(0.05)
            else:
                await trio.lowlevel.checkpoint()

    # ----------------------------------------------------------------- status

    def statistics(self, now: float) -> PeerStatistics:
        session = self.session
        stats = session.stats
        current = session.epochs.current
        drops = {reason.value: count for reason, count in stats.drops.items()}
        drops.update(self.drops)
        last = session.last_handshake_at
        return PeerStatistics(
            vaddr=self.vaddr,
            version=int(session.version),
            state=session.state.value,
            endpoint=session.endpoint,
            current_epoch=None if current is None else current.epoch,
            last_handshake_age=None if last is None else max(0.0, now - last),
            rx_packets=stats.rx_packets,
            rx_bytes=stats.rx_bytes,
            tx_packets=stats.tx_packets,
            tx_bytes=stats.tx_bytes,
            handshakes=stats.handshakes,
            drops=drops,
            public_key=session.peer.public_key.fingerprint(),
        )
