"""The server side of the library API: ``open_server`` and ``serve_server``."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

import trio

from ..protocol import events as ev
from ..protocol.clock import WallClock
from ..protocol.constants import HEADER_SIZE, SERVER_VADDR, Kind
from ..protocol.errors import ConfigError, UnknownPeer
from ..protocol.peers import LocalIdentity, Peer, check_client_vaddr
from ..protocol.server import ServerCore
from ..protocol.session import ServerPeerSession, SessionState
from ..protocol.settings import SessionSettings
from .common import (
    AddressLike,
    DrainingIterator,
    as_tuple,
    check_common,
    check_peer,
    collapse_exception_groups,
)
from .endpoint import RECEIVE_MANY_MIN, Endpoint, EndpointStats
from .peer import PeerRunner, PeerStatistics
from .transport import Address, DatagramNetwork
from .udp import UDPNetwork

__all__ = ["SUDPServer", "open_server", "serve_server"]

log = logging.getLogger("trio_sudp")

PayloadHandler = Callable[[PeerRunner, bytes], None]

_DATA = int(Kind.DATA)


class SUDPServer:
    """A running SUDP server: receive ``(vaddr, payload)`` from clients, send to a vaddr.

    Iterate with ``async for vaddr, payload in server``. As for the client, a full
    receive queue drops new payloads (counted per peer) and never stalls the
    control plane. Peers can be added, replaced and removed while it runs.
    """

    def __init__(
        self,
        core: ServerCore,
        endpoint: Endpoint,
        peers_nursery: trio.Nursery,
        receive_queue: int,
    ) -> None:
        self.core = core
        self._endpoint = endpoint
        self._nursery = peers_nursery
        self._runners: dict[int, PeerRunner] = {}
        self._send_channel, self._receive_channel = trio.open_memory_channel[tuple[int, bytes]](
            receive_queue
        )
        self._closed = False
        self._on_payload: PayloadHandler = self._deliver
        #: Extra observer of every peer event (the VPN and the control socket use it).
        self.on_event: Callable[[PeerRunner, ev.Event], None] | None = None
        for session in core.sessions.values():
            self._attach(session)

    # ----------------------------------------------------------------- wiring

    @property
    def on_payload(self) -> PayloadHandler:
        """Where payloads go: the receive queue, unless replaced (the VPN takes them).

        Called in the UDP task as ``on_payload(runner, payload)``, so it must not block.
        Setting it applies to every peer's runner, present and future (the runners
        call it directly: no indirection per packet).
        """
        return self._on_payload

    @on_payload.setter
    def on_payload(self, handler: PayloadHandler) -> None:
        self._on_payload = handler
        for runner in self._runners.values():
            runner.on_payload = handler

    def _attach(self, session: ServerPeerSession) -> PeerRunner:
        runner = PeerRunner(
            session, self._endpoint, on_payload=self._on_payload, on_event=self._event
        )
        session.owner = runner
        self._runners[session.peer.vaddr] = runner
        return runner

    def _receive(self, datagram: bytes, address: Address, now: float) -> None:
        # The per-packet path: Data from a configured client goes straight to its
        # runner's session (what ServerCore.session_for and PeerRunner.handle do, inlined).
        if len(datagram) >= HEADER_SIZE and datagram[1] == _DATA:
            runner = self._runners.get((datagram[4] << 8) | datagram[5])
            if runner is not None:
                session = runner.session
                payload = session.receive(datagram, address, now)
                if payload is not None:
                    runner.on_payload(runner, payload)
                if session.outbox or session.events or session.timers_changed:
                    runner.service()
                return
        core = self.core
        found = core.session_for(datagram, address, now)
        if found is None:
            for event in core.take_events():
                log.debug(
                    "dropped a datagram from %r: %s %s", address, event.reason.value, event.detail
                )
            return
        found.owner.handle(datagram, address, now)

    def _receive_many(self, datagrams: list[bytes], address: Address, now: float) -> None:
        # The datagrams of one coalesced receive (one source): runs of Data from one
        # configured client go to its session at once (if long enough to be worth
        # it), anything else one by one.
        runners = self._runners
        count = len(datagrams)
        i = 0
        while i < count:
            datagram = datagrams[i]
            if len(datagram) >= HEADER_SIZE and datagram[1] == _DATA:
                high = datagram[4]
                low = datagram[5]
                end = i + 1
                while end < count:
                    other = datagrams[end]
                    if (
                        len(other) < HEADER_SIZE
                        or other[1] != _DATA
                        or other[5] != low
                        or other[4] != high
                    ):
                        break
                    end += 1
                runner = runners.get((high << 8) | low) if end - i >= RECEIVE_MANY_MIN else None
                if runner is not None:
                    runner.handle_many(
                        datagrams if end - i == count else datagrams[i:end], address, now
                    )
                else:
                    for j in range(i, end):
                        self._receive(datagrams[j], address, now)
                i = end
                continue
            self._receive(datagram, address, now)
            i += 1

    def _deliver(self, runner: PeerRunner, payload: bytes) -> None:
        try:
            self._send_channel.send_nowait((runner.vaddr, payload))
        except trio.WouldBlock:
            runner.drops["receive_queue_full"] += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            runner.drops["closed"] += 1

    def _event(self, runner: PeerRunner, event: ev.Event) -> None:
        session = runner.session
        if isinstance(event, ev.Expired):
            runner.stop()
        elif not runner.running and session.state is not SessionState.IDLE and not self._closed:
            # A session begins: its nursery (the expiry timer) lives until it expires.
            runner.start_in(self._nursery, [(session.next_expiry_at, session.on_expiry_timer)])
        if self.on_event is not None:
            self.on_event(runner, event)

    # ----------------------------------------------------------------- API

    @property
    def endpoint(self) -> Endpoint:
        """The UDP task (the VPN brackets its TUN batches with its ``begin_batch``)."""
        return self._endpoint

    @property
    def local_address(self) -> Address:
        """The UDP address the server listens on."""
        return self._endpoint.local_address

    @property
    def runners(self) -> dict[int, PeerRunner]:
        """Each configured client's runner by vaddr (read-only; the per-packet lookup)."""
        return self._runners

    def runner(self, vaddr: int) -> PeerRunner:
        try:
            return self._runners[vaddr]
        except KeyError:
            raise UnknownPeer(f"no peer with virtual address {vaddr}") from None

    def send_nowait(self, vaddr: int, payload: bytes) -> None:
        """Encrypt and send ``payload`` to the client ``vaddr`` without waiting.

        Raises ``trio.ClosedResourceError`` after close, ``UnknownPeer`` for an
        unconfigured vaddr, ``NotConnected`` if that client has no session now, and
        ``PayloadTooLarge`` above the version's limit.
        """
        if self._closed:
            raise trio.ClosedResourceError("the server is closed")
        runner = self._runners.get(vaddr)
        if runner is None:
            raise UnknownPeer(f"no peer with virtual address {vaddr}")
        session = runner.session
        self._endpoint.send(session.send(payload, trio.current_time()), session.endpoint)
        if session.timers_changed:
            runner.service()

    async def send(self, vaddr: int, payload: bytes) -> None:
        """Like :meth:`send_nowait`, with a Trio checkpoint."""
        await trio.lowlevel.checkpoint()
        self.send_nowait(vaddr, payload)

    async def receive(self) -> tuple[int, bytes]:
        """The next ``(vaddr, payload)`` from any client. ``trio.EndOfChannel`` once closed."""
        return await self._receive_channel.receive()

    def __aiter__(self) -> AsyncIterator[tuple[int, bytes]]:
        """``async for vaddr, payload in server``; checkpoints once per 64 ready payloads."""
        return DrainingIterator(self._receive_channel)

    def peers(self) -> list[int]:
        """The configured clients' virtual addresses."""
        return sorted(self._runners)

    def statistics(self) -> dict[int, PeerStatistics]:
        """Every configured client's session: state, epoch, endpoint, counters, drops."""
        now = trio.current_time()
        return {vaddr: r.statistics(now) for vaddr, r in sorted(self._runners.items())}

    def endpoint_statistics(self) -> EndpointStats:
        return self._endpoint.stats

    def add_peer(self, peer: Peer) -> None:
        """Configure a new client (``ConfigError`` if its vaddr is taken)."""
        check_peer(peer, "peer")
        check_client_vaddr(peer.vaddr, what="peer vaddr")
        self._attach(self.core.add_peer(peer))

    def remove_peer(self, vaddr: int) -> None:
        """Forget a client and end its session."""
        runner = self.runner(vaddr)
        runner.stop()
        self.core.remove_peer(vaddr).forget()
        del self._runners[vaddr]

    def replace_peer(self, peer: Peer) -> None:
        """Apply a changed key or version: the client's session starts over."""
        self.remove_peer(peer.vaddr)
        self.add_peer(peer)

    async def aclose(self) -> None:
        """Stop serving (as when the block exits)."""
        self._close()
        await trio.lowlevel.checkpoint()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for runner in self._runners.values():
            runner.stop()
        self._send_channel.close()
        self._endpoint.transport.close()


@asynccontextmanager
async def open_server(
    bind: AddressLike,
    *,
    local: LocalIdentity,
    peers: Iterable[Peer],
    settings: SessionSettings | None = None,
    network: DatagramNetwork | None = None,
    clock: WallClock | None = None,
    receive_queue: int = 1024,
    handshake_rate: float | None = 20.0,
    handshake_burst: float = 20.0,
) -> AsyncIterator[SUDPServer]:
    """Serve SUDP clients on ``bind``; the block runs while the server lives.

    ``local`` is the server's identity (virtual address 0), ``peers`` the clients it
    accepts, each a :class:`~trio_sudp.Peer` with its own version and v3 shared key.
    ClientHandshakes are rate-limited to ``handshake_rate`` per second per source
    host (``None``: no limit). Leaving the block closes the socket and cancels every
    peer's tasks.
    """
    check_common(local, settings, clock, network, receive_queue)
    if local.vaddr != SERVER_VADDR:
        raise ConfigError(f"the server's virtual address is 0, not {local.vaddr}")
    peers = list(peers)
    for peer in peers:
        check_peer(peer, "each peer")
        check_client_vaddr(peer.vaddr, what="peer vaddr")
    core = ServerCore(
        local,
        peers,
        settings=settings,
        clock=clock,
        handshake_rate=handshake_rate,
        handshake_burst=handshake_burst,
    )
    network = network if network is not None else UDPNetwork()
    transport = network.bind(as_tuple(bind, "bind"))
    try:
        async with collapse_exception_groups(), trio.open_nursery() as nursery:
            endpoint = Endpoint(transport, None)
            server = SUDPServer(core, endpoint, nursery, receive_queue)
            endpoint.receiver = server._receive
            endpoint.receive_many = server._receive_many
            await nursery.start(endpoint.run)
            try:
                yield server
            finally:
                server._close()
                nursery.cancel_scope.cancel()
    finally:
        transport.close()


async def serve_server(
    bind: AddressLike,
    *,
    local: LocalIdentity,
    peers: Iterable[Peer],
    task_status: trio.TaskStatus[SUDPServer] = trio.TASK_STATUS_IGNORED,
    **kwargs: object,
) -> None:
    """``open_server`` for ``nursery.start``: started with the server, runs until cancelled.

    Takes the same keyword arguments as :func:`open_server`.
    """
    async with open_server(bind, local=local, peers=peers, **kwargs) as server:  # type: ignore[arg-type]
        task_status.started(server)
        await trio.sleep(math.inf)
