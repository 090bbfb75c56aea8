"""The server side of the library API: ``open_server`` and ``serve_server``."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager

import attrs
import trio

from ..protocol import events as ev
from ..protocol.budget import DEFAULT_HANDSHAKE_BURST, DEFAULT_HANDSHAKE_RATE
from ..protocol.clock import WallClock
from ..protocol.constants import SERVER_VADDR
from ..protocol.errors import ConfigError, UnknownPeer
from ..protocol.peers import LocalIdentity, Peer, check_client_vaddr
from ..protocol.server import ServerCore, ServerPeerSession
from ..protocol.session import SessionState
from ..protocol.settings import SessionSettings
from . import health
from .common import (
    AddressLike,
    DrainingIterator,
    OneSocket,
    as_tuple,
    check_common,
    check_peer,
    collapse_exception_groups,
)
from .lanes import BAN_LOOK_INTERVAL, STEER_INTERVAL, ServerLanes, bind_lanes
from .peer import PeerRunner, PeerStatistics
from .receive import ServerPath, UDPReceiver
from .send import UDPSender
from .transport import Address, DatagramNetwork, UDPStats

__all__ = ["ReceiveQueue", "SUDPServer", "open_server", "serve_server"]

log = logging.getLogger("trio_sudp")

PeerObserver = Callable[[PeerRunner, ev.Event], None]


class ReceiveQueue:
    """The application's bounded queue of ``(vaddr, payload)``; full means dropped (counted)."""

    def __init__(self, size: int) -> None:
        self.send_channel, self.receive_channel = trio.open_memory_channel[tuple[int, bytes]](size)

    def put(self, runner: PeerRunner, payload: bytes) -> None:
        """A payload from ``runner``'s client (in the UDP task: never blocks)."""
        try:
            self.send_channel.send_nowait((runner.vaddr, payload))
        except trio.WouldBlock:
            runner.drops["receive_queue_full"] += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            runner.drops["closed"] += 1


class SUDPServer(OneSocket):
    """A running SUDP server: receive ``(vaddr, payload)`` from clients, send to a vaddr.

    Iterate with ``async for vaddr, payload in server``. As for the client, a full
    receive queue drops new payloads (counted per peer) and never stalls the
    control plane. Peers can be added, replaced and removed while it runs.

    The server's parts are built before it and given to it: the protocol core, the
    UDP sender, the nursery its peers' timers run in, and the queue its payloads go
    to (``None`` when something else takes them: the VPN reads :attr:`runners` and
    gets the payloads straight from the receive path).
    """

    def __init__(
        self,
        core: ServerCore,
        sender: UDPSender,
        lanes: ServerLanes,
        peers_nursery: trio.Nursery,
        *,
        queue: ReceiveQueue | None = None,
        on_event: PeerObserver | None = None,
    ) -> None:
        self.core = core
        self._sender = sender
        self._lanes = lanes
        self._nursery = peers_nursery
        self._queue = queue
        self._on_event = on_event
        self._runners: dict[int, PeerRunner] = {}
        self._closed = False
        # Set when a client's endpoint may have moved: the lanes follow (watch()).
        self._endpoints_moved = trio.Event()
        lanes.grow_receive_buffers()
        self._refilter()
        for session in core.sessions.values():
            self._attach(session)

    def _refilter(self) -> None:
        """The kernel's prefilter for the clients configured now (where it takes one)."""
        self._lanes.attach_prefilter(self.core.rules)

    def _endpoints(self) -> list[Address]:
        """The current endpoints of established clients: the kernel's known lane."""
        return [
            r.session.endpoint
            for r in self._runners.values()
            if r.session.endpoint is not None and r.session.state is SessionState.ESTABLISHED
        ]

    async def _enforce_bans(self) -> None:
        bans = self.core.bans
        while True:
            await trio.sleep(BAN_LOOK_INTERVAL)
            if bans.update(trio.current_time()):
                self._lanes.ban(bans.banned)

    async def _follow_endpoints(self) -> None:
        while True:
            await self._endpoints_moved.wait()
            self._endpoints_moved = trio.Event()
            self._lanes.steer(self._endpoints())
            # Many clients connecting at once cost one rebuild per interval, not each.
            await trio.sleep(STEER_INTERVAL)

    def _attach(self, session: ServerPeerSession) -> PeerRunner:
        runner = PeerRunner(session, self._sender, on_event=self._event)
        self._runners[runner.vaddr] = runner
        return runner

    def _event(self, runner: PeerRunner, event: ev.Event) -> None:
        timer = runner.timer
        if isinstance(event, ev.Connected | ev.Roamed | ev.Expired):
            self._endpoints_moved.set()
        if isinstance(event, ev.Expired):
            timer.stop()
        elif (
            not timer.running and runner.session.state is not SessionState.IDLE and not self._closed
        ):
            # A session begins: its timer (expiry) runs until it expires.
            timer.start_in(self._nursery)
        if self._on_event is not None:
            self._on_event(runner, event)

    # ----------------------------------------------------------------- API

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
        runner.send(payload, trio.current_time())

    async def send(self, vaddr: int, payload: bytes) -> None:
        """Like :meth:`send_nowait`, with a Trio checkpoint."""
        await trio.lowlevel.checkpoint()
        self.send_nowait(vaddr, payload)

    async def receive(self) -> tuple[int, bytes]:
        """The next ``(vaddr, payload)`` from any client. ``trio.EndOfChannel`` once closed."""
        return await self._channel().receive()

    def __aiter__(self) -> AsyncIterator[tuple[int, bytes]]:
        """``async for vaddr, payload in server``; checkpoints once per 64 ready payloads."""
        return DrainingIterator(self._channel())

    def _channel(self) -> trio.MemoryReceiveChannel[tuple[int, bytes]]:
        if self._queue is None:
            raise RuntimeError("this server's payloads go to its VPN, not to a receive queue")
        return self._queue.receive_channel

    def peers(self) -> list[int]:
        """The configured clients' virtual addresses."""
        return sorted(self._runners)

    def statistics(self) -> dict[int, PeerStatistics]:
        """Every configured client's session: state, epoch, endpoint, counters, drops."""
        now = trio.current_time()
        return {vaddr: r.statistics(now) for vaddr, r in sorted(self._runners.items())}

    def socket_status(self) -> dict[str, object]:
        """The sockets as the kernel sees them, and the UDP tasks' counters (for ``show``)."""
        lanes = self._lanes
        known, strangers = lanes.kernel_drops()
        return {
            "kernel_drops": None if known is None else known + (strangers or 0),
            "strangers_kernel_drops": strangers,
            "lanes": len(lanes.transports),
            "steering": lanes.steering,
            "steered": lanes.steered,
            "banned": len(lanes.banned),
            "receive_buffer": lanes.receive_buffer_size,
            "prefilter": "kernel" if lanes.prefilter_in_kernel else "userspace",
            **attrs.asdict(self._sender.stats),
        }

    def budget_status(self) -> dict[str, int]:
        """What the signature-verification budget allowed and refused."""
        return attrs.asdict(self.core.budget.stats)

    def drop_counts(self) -> Iterator[tuple[str, int]]:
        """Every drop counter of the server: no session's, each session's, the runtime's."""
        for reason, count in self.core.drops.items():
            yield reason.value, count
        for runner in self._runners.values():
            for reason, count in runner.session.stats.drops.items():
                yield reason.value, count
            yield from runner.drops.items()

    async def watch(self) -> None:
        """Once a second: the known lane's losses to the core, and a debug summary of the
        drops; and the kernel's lanes follow the clients' endpoints."""
        async with trio.open_nursery() as nursery:
            if self._lanes.steering:
                nursery.start_soon(self._follow_endpoints)
                nursery.start_soon(self._enforce_bans)
            await health.watch(
                self.drop_counts, kernel_drops=self._lanes.known_drops, loss=self.core.loss
            )

    def add_peer(self, peer: Peer) -> None:
        """Configure a new client (``ConfigError`` if its vaddr is taken)."""
        check_peer(peer, "peer")
        check_client_vaddr(peer.vaddr, what="peer vaddr")
        self._attach(self.core.add_peer(peer))
        self._refilter()

    def remove_peer(self, vaddr: int) -> None:
        """Forget a client and end its session."""
        runner = self.runner(vaddr)
        runner.timer.stop()
        self.core.remove_peer(vaddr).forget()
        del self._runners[vaddr]
        self._refilter()
        self._endpoints_moved.set()

    def replace_peer(self, peer: Peer) -> None:
        """Apply a changed key or version: the client's session starts over."""
        self.remove_peer(peer.vaddr)
        self.add_peer(peer)

    def close(self) -> None:
        """Stop serving: every peer's timer stops, the queue and the socket close."""
        if self._closed:
            return
        self._closed = True
        for runner in self._runners.values():
            runner.timer.stop()
        if self._queue is not None:
            self._queue.send_channel.close()
        self._lanes.close()


def make_core(
    local: LocalIdentity,
    peers: Iterable[Peer],
    *,
    settings: SessionSettings | None,
    clock: WallClock | None,
    handshake_rate: float | None,
    handshake_burst: float,
) -> ServerCore:
    """Check the arguments of a server and build its protocol core."""
    if local.vaddr != SERVER_VADDR:
        raise ConfigError(f"the server's virtual address is 0, not {local.vaddr}")
    peers = list(peers)
    for peer in peers:
        check_peer(peer, "each peer")
        check_client_vaddr(peer.vaddr, what="peer vaddr")
    return ServerCore(
        local,
        peers,
        settings=settings,
        clock=clock,
        handshake_rate=handshake_rate,
        handshake_burst=handshake_burst,
    )


def bind_server(network: DatagramNetwork | None, bind: AddressLike) -> ServerLanes:
    """The server's sockets: bound on ``network`` (real UDP by default; ``lanes.py``)."""
    return bind_lanes(network, as_tuple(bind, "bind"))


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
    handshake_rate: float | None = DEFAULT_HANDSHAKE_RATE,
    handshake_burst: float = DEFAULT_HANDSHAKE_BURST,
) -> AsyncIterator[SUDPServer]:
    """Serve SUDP clients on ``bind``; the block runs while the server lives.

    ``local`` is the server's identity (virtual address 0), ``peers`` the clients it
    accepts, each a :class:`~trio_sudp.Peer` with its own version and v3 shared key.
    A source host that is no client's endpoint may have ``handshake_rate`` signed
    datagrams a second looked at, ``handshake_burst`` at once (``None``: no limit).
    Leaving the block closes the sockets and cancels every peer's tasks.
    """
    check_common(local, settings, clock, network, receive_queue)
    core = make_core(
        local,
        peers,
        settings=settings,
        clock=clock,
        handshake_rate=handshake_rate,
        handshake_burst=handshake_burst,
    )
    lanes = bind_server(network, bind)
    try:
        async with collapse_exception_groups(), trio.open_nursery() as nursery:
            stats = UDPStats()
            sender = UDPSender(lanes.known, stats)
            queue = ReceiveQueue(receive_queue)
            server = SUDPServer(core, sender, lanes, nursery, queue=queue)
            path = ServerPath(core, server.runners, queue.put)
            nursery.start_soon(sender.run_writer)
            for transport in lanes.transports:
                strangers = transport is lanes.strangers
                receiver = UDPReceiver(
                    transport, stats, path, boundary=sender.batch, strangers=strangers
                )
                nursery.start_soon(receiver.run)
            nursery.start_soon(server.watch)
            try:
                yield server
            finally:
                server.close()
                nursery.cancel_scope.cancel()
    finally:
        lanes.close()


async def serve_server(
    bind: AddressLike,
    *,
    local: LocalIdentity,
    peers: Iterable[Peer],
    settings: SessionSettings | None = None,
    network: DatagramNetwork | None = None,
    clock: WallClock | None = None,
    receive_queue: int = 1024,
    handshake_rate: float | None = DEFAULT_HANDSHAKE_RATE,
    handshake_burst: float = DEFAULT_HANDSHAKE_BURST,
    task_status: trio.TaskStatus[SUDPServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """:func:`open_server` for ``nursery.start``: started with the server, runs until cancelled."""
    async with open_server(
        bind,
        local=local,
        peers=peers,
        settings=settings,
        network=network,
        clock=clock,
        receive_queue=receive_queue,
        handshake_rate=handshake_rate,
        handshake_burst=handshake_burst,
    ) as server:
        task_status.started(server)
        await trio.sleep(math.inf)
