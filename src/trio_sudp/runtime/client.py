"""The client side of the library API: ``open_client`` and ``serve_client``."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from ..protocol import events as ev
from ..protocol.clock import WallClock
from ..protocol.constants import SERVER_VADDR
from ..protocol.errors import ConfigError, HandshakeError
from ..protocol.peers import LocalIdentity, Peer, check_client_vaddr
from ..protocol.session import ClientSession, SessionState
from ..protocol.settings import SessionSettings
from .common import (
    AddressLike,
    DrainingIterator,
    check_common,
    check_peer,
    collapse_exception_groups,
    resolve_for,
)
from .endpoint import Endpoint, EndpointStats
from .peer import PeerRunner, PeerStatistics
from .transport import Address, DatagramNetwork
from .udp import UDPNetwork

__all__ = ["SUDPClient", "open_client", "serve_client"]


class SUDPClient:
    """A connected SUDP client: send payloads to the server, receive its payloads.

    Iterate with ``async for payload in client``. Received payloads wait in a bounded
    queue; when the application does not keep up, new ones are dropped and counted
    (``statistics().drops["receive_queue_full"]``) while keepalives, handshakes and
    rekeys go on. Use it from the Trio run that opened it.
    """

    def __init__(
        self, session: ClientSession, runner: PeerRunner, endpoint: Endpoint, receive_queue: int
    ) -> None:
        self._runner = runner
        self._session = session
        self._endpoint = endpoint
        self._send_channel, self._receive_channel = trio.open_memory_channel[bytes](receive_queue)
        self._closed = False
        self._on_payload: Callable[[PeerRunner, bytes], None] = self._deliver
        runner.on_payload = self._deliver
        #: Extra observer of every session event (the VPN and the control socket use it).
        self.on_event: Callable[[PeerRunner, ev.Event], None] | None = None
        self._connected = trio.Event()
        self._first_failure: str | None = None
        self._first_result = trio.Event()

    # Called by the runner (in the UDP task).
    def _deliver(self, runner: PeerRunner, payload: bytes) -> None:
        try:
            self._send_channel.send_nowait(payload)
        except trio.WouldBlock:
            runner.drops["receive_queue_full"] += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            runner.drops["closed"] += 1

    def _event(self, runner: PeerRunner, event: ev.Event) -> None:
        if isinstance(event, ev.Connected | ev.Rekeyed):
            self._connected.set()
            self._first_result.set()
        elif isinstance(event, ev.HandshakeFailed) and not self._connected.is_set():
            self._first_failure = event.reason
            self._first_result.set()
        if self.on_event is not None:
            self.on_event(runner, event)

    # ----------------------------------------------------------------- API

    @property
    def on_payload(self) -> Callable[[PeerRunner, bytes], None]:
        """Where payloads go: the receive queue, unless replaced (the VPN writes to TUN).

        Called in the UDP task as ``on_payload(runner, payload)``, so it must not block.
        Setting it sets the runner's own hook (no indirection per packet).
        """
        return self._on_payload

    @on_payload.setter
    def on_payload(self, handler: Callable[[PeerRunner, bytes], None]) -> None:
        self._on_payload = handler
        self._runner.on_payload = handler

    @property
    def runner(self) -> PeerRunner:
        """The session's runner (``runner.send(payload, now)`` is the per-packet path)."""
        return self._runner

    @property
    def endpoint(self) -> Endpoint:
        """The UDP task (the VPN brackets its TUN batches with its ``begin_batch``)."""
        return self._endpoint

    @property
    def local_address(self) -> Address:
        """The local UDP address the client sends from."""
        return self._endpoint.local_address

    @property
    def server_address(self) -> Address:
        """The server's UDP address as the transport sees it."""
        address: Address = self._session.endpoint
        return address

    @property
    def state(self) -> SessionState:
        return self._session.state

    @property
    def vaddr(self) -> int:
        return self._session.local.vaddr

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
        session = self._session
        self._endpoint.send(session.send(payload, trio.current_time()), session.endpoint)
        if session.timers_changed:  # e.g. a silence deadline the send started
            self._runner.service()

    async def send(self, payload: bytes) -> None:
        """Like :meth:`send_nowait`, with a Trio checkpoint."""
        await trio.lowlevel.checkpoint()
        self.send_nowait(payload)

    async def receive(self) -> bytes:
        """The next payload from the server. ``trio.EndOfChannel`` once closed."""
        return await self._receive_channel.receive()

    def __aiter__(self) -> AsyncIterator[bytes]:
        """``async for payload in client``; checkpoints once per 64 ready payloads."""
        return DrainingIterator(self._receive_channel)

    def statistics(self) -> PeerStatistics:
        """The session with the server: state, epoch, endpoint, counters, drops."""
        return self._runner.statistics(trio.current_time())

    def endpoint_statistics(self) -> EndpointStats:
        """The UDP task's counters (socket backlog drops, send errors)."""
        return self._endpoint.stats

    async def aclose(self) -> None:
        """Stop: the session's tasks end and the socket closes (as when the block exits)."""
        self._close()
        await trio.lowlevel.checkpoint()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._session.close()
        self._runner.stop()
        self._send_channel.close()
        self._endpoint.transport.close()


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
    check_peer(server, "server")
    if server.vaddr != SERVER_VADDR:
        raise ConfigError(f"the server's virtual address is 0, not {server.vaddr}")
    check_client_vaddr(local.vaddr, what="local.vaddr")
    network = network if network is not None else UDPNetwork()
    destination, local_address = await resolve_for(network, server_address, bind, "server_address")
    session = ClientSession(
        local=local, server=server, server_address=destination, settings=settings, clock=clock
    )
    transport = network.bind(local_address)
    client: SUDPClient | None = None
    try:
        async with collapse_exception_groups(), trio.open_nursery() as nursery:
            endpoint = Endpoint(transport)
            runner = PeerRunner(session, endpoint, on_payload=lambda r, p: None)
            endpoint.receiver = runner.handle
            endpoint.receive_many = runner.handle_many
            client = SUDPClient(session, runner, endpoint, receive_queue)
            runner.on_event = client._event
            await nursery.start(endpoint.run)
            timers = [
                (session.next_handshake_at, session.on_handshake_timer),
                (session.next_keepalive_at, session.on_keepalive_timer),
                (session.next_expiry_at, session.on_expiry_timer),
            ]
            await nursery.start(runner.run, timers)
            session.connect(trio.current_time())
            runner.service()
            try:
                if wait_connected:
                    await client.wait_connected()
                yield client
            finally:
                client._close()
                nursery.cancel_scope.cancel()
    finally:
        transport.close()


async def serve_client(
    server_address: AddressLike,
    *,
    local: LocalIdentity,
    server: Peer,
    task_status: trio.TaskStatus[SUDPClient] = trio.TASK_STATUS_IGNORED,
    **kwargs: object,
) -> None:
    """``open_client`` for ``nursery.start``: started with the client, runs until cancelled.

    Takes the same keyword arguments as :func:`open_client`.
    """
    async with open_client(server_address, local=local, server=server, **kwargs) as client:  # type: ignore[arg-type]
        task_status.started(client)
        await trio.sleep(math.inf)
