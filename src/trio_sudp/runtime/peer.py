"""One peer's runtime: its session, its timer task, and what it emits.

The protocol session is a plain object the UDP task calls synchronously for every
datagram (``receive.py``) and the TUN task or the application for every payload it
sends. After each call, :meth:`PeerRunner.service` sends the datagrams the session
queued, reports its events and wakes its timer if a deadline moved earlier.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import attrs

from ..protocol import events as ev
from ..protocol.session import Session
from .send import UDPSender
from .timers import PeerTimer
from .transport import Address, format_address

__all__ = ["PeerRunner", "PeerStatistics"]

log = logging.getLogger("trio_sudp")


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
    #: Times the endpoint moved (NAT rebinding, roaming).
    endpoint_changes: int
    #: Dropped datagrams and payloads by reason code.
    drops: dict[str, int]
    public_key: str

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the endpoint as ``"host:port"`` or ``"[v6]:port"``)."""
        data = attrs.asdict(self)
        endpoint = self.endpoint
        data["endpoint"] = None if endpoint is None else format_address(endpoint)
        return data


class PeerRunner:
    """Drives one session: feeds it datagrams, sends its datagrams, runs its timer."""

    __slots__ = ("drops", "on_event", "sender", "session", "timer", "vaddr")

    def __init__(
        self,
        session: Session,
        sender: UDPSender,
        *,
        on_event: Callable[[PeerRunner, ev.Event], None] | None = None,
    ) -> None:
        self.session = session
        self.vaddr = session.peer.vaddr
        self.sender = sender
        self.on_event = on_event
        #: Drops the runtime adds to the session's own (e.g. a full receive queue).
        self.drops: Counter[str] = Counter()
        self.timer = PeerTimer(session, self.service)

    # ----------------------------------------------------------------- per packet

    def handle(self, datagram: bytes, address: Address, now: float) -> bytes | None:
        """Feed one received datagram to the session; its payload, if it carried one."""
        session = self.session
        payload = session.receive(datagram, address, now)
        if session.outbox or session.events or session.timers_changed:
            self.service()
        return payload

    def handle_many(self, datagrams: list[bytes], address: Address, now: float) -> list[bytes]:
        """:meth:`handle` for datagrams that arrived together from ``address``, in order.

        Through ``Session.receive_many`` (cheaper per datagram); the payloads in order.
        """
        session = self.session
        payloads = session.receive_many(zip(datagrams, itertools.repeat(address)), now)
        if session.outbox or session.events or session.timers_changed:
            self.service()
        return payloads

    def send(self, payload: bytes, now: float) -> None:
        """Encrypt and send one payload (raises ``NotConnected``, ``PayloadTooLarge``)."""
        session = self.session
        datagram = session.send(payload, now)
        self.sender.send(datagram, session.endpoint)  # type: ignore[arg-type]
        if session.timers_changed:  # e.g. a silence deadline the send started
            self.service()

    def service(self) -> None:
        """Send what the session queued, report its events, wake a timer it moved."""
        session = self.session
        if session.outbox:
            send = self.sender.send
            for datagram, address in session.take_datagrams():
                send(datagram, address)
        if session.events:
            on_event = self.on_event
            for event in session.take_events():
                _log(self.vaddr, event)
                if on_event is not None:
                    on_event(self, event)
        if session.timers_changed:
            session.timers_changed = False
            self.timer.reschedule()

    # ----------------------------------------------------------------- status

    def statistics(self, now: float) -> PeerStatistics:
        """A snapshot of the session at ``now``."""
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
            endpoint_changes=stats.endpoint_changes,
            drops=drops,
            public_key=session.peer.public_key.fingerprint(),
        )


def _log(peer: int, event: ev.Event) -> None:
    if isinstance(event, ev.Connected):
        log.info("peer %d: connected (epoch %d, endpoint %r)", peer, event.epoch, event.endpoint)
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
