"""The client side of the library API: ``open_client`` and ``serve_client``."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import attrs
import trio

from ..protocol import events as ev
from ..protocol.client import ClientSession
from ..protocol.clock import WallClock
from ..protocol.constants import SERVER_VADDR
from ..protocol.errors import ConfigError, HandshakeError
from ..protocol.peers import LocalIdentity, Peer, check_client_vaddr
from ..protocol.session import SessionState
from ..protocol.settings import SessionSettings
from . import health
from .common import (
    AddressLike,
    DrainingIterator,
    OneSocket,
    check_common,
    check_peer,
    collapse_exception_groups,
    resolve_for,
)
from .peer import PeerRunner, PeerStatistics
from .receive import ClientPath, UDPReceiver
from .send import UDPSender
from .transport import Address, DatagramNetwork, DatagramTransport, UDPStats
from .udp import UDPNetwork

__all__ = ["SUDPClient", "open_client", "serve_client"]

PeerObserver = Callable[[PeerRunner, ev.Event], None]


class SUDPClient(OneSocket):
    """A connected SUDP client: send payloads to the server, receive its payloads.

    Iterate with ``async for payload in client``. Received payloads wait in a bounded
    queue; when the application does not keep up, new ones are dropped and counted
    (``statistics().drops["receive_queue_full"]``) while keepalives, handshakes and
    rekeys go on. Use it from the Trio run that opened it.

    ``receive_queue`` ``0`` means no queue: something else takes the payloads (the
    VPN writes them to its TUN device, straight from the receive path).
    """

    def __init__(
        self,
        session: ClientSession,
        sender: UDPSender,
        *,
        receive_queue: int,
        on_event: PeerObserver | None = None,
    ) -> None:
        self._session = session
        self._sender = sender
        self._runner = PeerRunner(session, sender, on_event=self._event)
        self._on_event = on_event
        self._channels = trio.open_memory_channel[bytes](receive_queue) if receive_queue else None
        self._closed = False
        self._connected = trio.Event()
        self._first_failure: str | None = None
        self._first_result = trio.Event()

    def deliver(self, payload: bytes) -> None:
        """Queue a payload from the server for the application (in the UDP task)."""
        assert self._channels is not None
        try:
            self._channels[0].send_nowait(payload)
        except trio.WouldBlock:
            self._runner.drops["receive_queue_full"] += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._runner.drops["closed"] += 1

    def _event(self, runner: PeerRunner, event: ev.Event) -> None:
        if isinstance(event, ev.Connected | ev.Rekeyed):
            self._connected.set()
            self._first_result.set()
        elif isinstance(event, ev.HandshakeFailed) and not self._connected.is_set():
            self._first_failure = event.reason
            self._first_result.set()
        if self._on_event is not None:
            self._on_event(runner, event)

    # ----------------------------------------------------------------- API

    @property
    def runner(self) -> PeerRunner:
        """The session's runner (``runner.send(payload, now)`` is the per-packet path)."""
        return self._runner

    @property
    def server_address(self) -> Address:
        """The server's UDP address as the transport sees it."""
        address = self._session.endpoint
        assert address is not None  # a client always knows its server's address
        return address

    @property
    def state(self) -> SessionState:
        return self._session.state

    @property
    def vaddr(self) -> int:
        return self._session.local.vaddr

    def start(self, nursery: trio.Nursery) -> None:
        """Start the session: its timer task in ``nursery``, and the first handshake."""
        self._runner.timer.start_in(nursery)
        self._session.connect(trio.current_time())
        self._runner.service()

    async def wait_connected(self) -> None:
        """Wait for the first handshake; raise ``HandshakeError`` if it fails."""
        await self._first_result.wait()
        if not self._connected.is_set():
            raise HandshakeError(self._first_failure or "handshake failed")

    def send_nowait(self, payload: bytes) -> None:
        """Encrypt and send ``payload`` to the server without waiting.

        Raises ``trio.ClosedResourceError`` after close, ``NotConnected`` while no
        session key exists (connecting or reconnecting), ``PayloadTooLarge`` above the
        version's limit (1996 bytes for v2, 1976 for v3).
        """
        if self._closed:
            raise trio.ClosedResourceError("the client is closed")
        self._runner.send(payload, trio.current_time())

    async def send(self, payload: bytes) -> None:
        """Like :meth:`send_nowait`, with a Trio checkpoint."""
        await trio.lowlevel.checkpoint()
        self.send_nowait(payload)

    async def receive(self) -> bytes:
        """The next payload from the server. ``trio.EndOfChannel`` once closed."""
        return await self._receive_channel().receive()

    def __aiter__(self) -> AsyncIterator[bytes]:
        """``async for payload in client``; checkpoints once per 64 ready payloads."""
        return DrainingIterator(self._receive_channel())

    def _receive_channel(self) -> trio.MemoryReceiveChannel[bytes]:
        if self._channels is None:
            raise RuntimeError("this client's payloads go to its VPN, not to a receive queue")
        return self._channels[1]

    def drop_counts(self) -> Iterator[tuple[str, int]]:
        """Every drop counter of the client: the session's and the runtime's."""
        for reason, count in self._session.stats.drops.items():
            yield reason.value, count
        yield from self._runner.drops.items()

    async def watch(self) -> None:
        """Once a second (with debug logging): a summary of the drops."""
        await health.watch(self.drop_counts)

    def socket_status(self) -> dict[str, object]:
        """The socket as the kernel sees it, and the UDP task's counters (for ``show``)."""
        kernel_drops = getattr(self._sender.transport, "kernel_drops", None)
        return {
            "kernel_drops": None if kernel_drops is None else kernel_drops(),
            **attrs.asdict(self._sender.stats),
        }

    def statistics(self) -> PeerStatistics:
        """The session with the server: state, epoch, endpoint, counters, drops."""
        return self._runner.statistics(trio.current_time())

    def close(self) -> None:
        """Stop the session and its timer, close the queue and the socket."""
        if self._closed:
            return
        self._closed = True
        self._session.close()
        self._runner.timer.stop()
        if self._channels is not None:
            self._channels[0].close()
        self._sender.transport.close()


async def prepare_client(
    server_address: AddressLike,
    *,
    local: LocalIdentity,
    server: Peer,
    settings: SessionSettings | None,
    network: DatagramNetwork | None,
    bind: AddressLike | None,
    clock: WallClock | None,
) -> tuple[ClientSession, DatagramTransport]:
    """Check a client's arguments, resolve the server and bind the socket."""
    check_peer(server, "server")
    if server.vaddr != SERVER_VADDR:
        raise ConfigError(f"the server's virtual address is 0, not {server.vaddr}")
    check_client_vaddr(local.vaddr, what="local.vaddr")
    network = network if network is not None else UDPNetwork()
    destination, local_address = await resolve_for(network, server_address, bind, "server_address")
    session = ClientSession(
        local=local, server=server, server_address=destination, settings=settings, clock=clock
    )
    return session, network.bind(local_address)


@asynccontextmanager
async def open_client(
    server_address: AddressLike,
    *,
    local: LocalIdentity,
    server: Peer,
    settings: SessionSettings | None = None,
    network: DatagramNetwork | None = None,
    bind: AddressLike | None = None,
    clock: WallClock | None = None,
    receive_queue: int = 1024,
    wait_connected: bool = True,
) -> AsyncIterator[SUDPClient]:
    """Connect to an SUDP server; the block runs while the session lives.

    ``local`` is our identity (virtual address 1..65534 and private key), ``server``
    the server's :class:`~trio_sudp.Peer` (virtual address 0, public key, version 2 or
    3, v3 shared key). ``network`` defaults to real UDP; pass a
    :class:`~trio_sudp.testing.FakeNetwork` (and ``bind``) in tests.

    With ``wait_connected`` (the default) the block starts once the first handshake
    completed, and :class:`~trio_sudp.HandshakeError` is raised if it fails (no
    answer, key mismatch, clock skew). Afterwards the session reconnects by itself.
    Leaving the block closes the socket and cancels every task of the client.
    """
    check_common(local, settings, clock, network, receive_queue)
    session, transport = await prepare_client(
        server_address,
        local=local,
        server=server,
        settings=settings,
        network=network,
        bind=bind,
        clock=clock,
    )
    try:
        async with collapse_exception_groups(), trio.open_nursery() as nursery:
            stats = UDPStats()
            sender = UDPSender(transport, stats)
            client = SUDPClient(session, sender, receive_queue=receive_queue)
            receiver = UDPReceiver(
                transport, stats, ClientPath(client.runner, client.deliver), boundary=sender.batch
            )
            nursery.start_soon(sender.run_writer)
            nursery.start_soon(receiver.run)
            nursery.start_soon(client.watch)
            client.start(nursery)
            try:
                if wait_connected:
                    await client.wait_connected()
                yield client
            finally:
                client.close()
                nursery.cancel_scope.cancel()
    finally:
        transport.close()


async def serve_client(
    server_address: AddressLike,
    *,
    local: LocalIdentity,
    server: Peer,
    settings: SessionSettings | None = None,
    network: DatagramNetwork | None = None,
    bind: AddressLike | None = None,
    clock: WallClock | None = None,
    receive_queue: int = 1024,
    wait_connected: bool = True,
    task_status: trio.TaskStatus[SUDPClient] = trio.TASK_STATUS_IGNORED,
) -> None:
    """:func:`open_client` for ``nursery.start``: started with the client, runs until cancelled."""
    async with open_client(
        server_address,
        local=local,
        server=server,
        settings=settings,
        network=network,
        bind=bind,
        clock=clock,
        receive_queue=receive_queue,
        wait_connected=wait_connected,
    ) as client:
        task_status.started(client)
        await trio.sleep(math.inf)
