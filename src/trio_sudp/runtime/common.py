"""Pieces the client and server runtimes share."""

from __future__ import annotations

import abc
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import trio

from ..protocol.clock import WallClock
from ..protocol.errors import ConfigError
from ..protocol.peers import LocalIdentity, Peer
from ..protocol.settings import SessionSettings
from .batches import ITERATOR_BATCH
from .send import UDPSender
from .transport import Address, DatagramNetwork, UDPStats
from .udp import UDPNetwork, parse_host_port, resolve_address

__all__ = [
    "AddressLike",
    "DrainingIterator",
    "OneSocket",
    "check_common",
    "collapse_exception_groups",
    "resolve_for",
    "wall_clock_for",
]

#: ``"host:port"``, ``"[v6]:port"`` or a ``(host, port)`` tuple.
AddressLike = str | tuple[Any, ...]

T = TypeVar("T")


class DrainingIterator(Generic[T]):
    """``async for`` over a memory channel, with one checkpoint per batch, not per item.

    Trio's own channel iterator awaits ``receive()`` for every item: a full checkpoint,
    about 4 µs, more than all the rest of the runtime's work for a packet. This one
    takes ready items with ``receive_nowait`` and checkpoints once every ``batch``
    items, and whenever it has to wait (DESIGN.md, the per-packet budget: drain what
    is ready, checkpoint once per batch). Cancellation is seen within ``batch`` items.
    """

    __slots__ = ("_batch", "_budget", "_channel")

    def __init__(self, channel: trio.MemoryReceiveChannel[T], batch: int = ITERATOR_BATCH) -> None:
        self._channel = channel
        self._batch = batch
        self._budget = batch

    def __aiter__(self) -> DrainingIterator[T]:
        return self

    async def __anext__(self) -> T:
        if self._budget > 0:
            try:
                item = self._channel.receive_nowait()
            except trio.WouldBlock:
                pass
            except trio.EndOfChannel:
                raise StopAsyncIteration from None
            else:
                self._budget -= 1
                return item
        self._budget = self._batch
        try:
            return await self._channel.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class OneSocket(abc.ABC):
    """What a client and a server share: the one UDP socket they send and receive on."""

    _sender: UDPSender

    @property
    def sender(self) -> UDPSender:
        """The UDP sender: ``with x.sender.batch(): ...`` sends what the block sends together
        (UDP GSO), in one synchronous run."""
        return self._sender

    @property
    def local_address(self) -> Address:
        """The local UDP address of the socket."""
        return self._sender.transport.local_address

    def endpoint_statistics(self) -> UDPStats:
        """The UDP task's counters (socket backlog drops, send errors, batching)."""
        return self._sender.stats

    @abc.abstractmethod
    def close(self) -> None:
        """Stop, and close the socket (as when the ``async with`` block exits)."""

    async def aclose(self) -> None:
        """:meth:`close`, with a Trio checkpoint."""
        self.close()
        await trio.lowlevel.checkpoint()


def check_common(
    local: object, settings: object, clock: object, network: object, receive_queue: object
) -> None:
    """Validate the arguments every entry point takes, before any socket opens."""
    if not isinstance(local, LocalIdentity):
        raise ConfigError(f"local must be a LocalIdentity, not {type(local).__name__}")
    if settings is not None and not isinstance(settings, SessionSettings):
        raise ConfigError(f"settings must be a SessionSettings, not {type(settings).__name__}")
    if clock is not None and not callable(getattr(clock, "now_us", None)):
        raise ConfigError("clock must have a now_us() method (see trio_sudp.WallClock)")
    if network is not None and not callable(getattr(network, "bind", None)):
        raise ConfigError("network must have a bind(address) method (see DatagramNetwork)")
    if isinstance(receive_queue, bool) or not isinstance(receive_queue, int) or receive_queue < 1:
        raise ConfigError(f"receive_queue must be a positive integer, not {receive_queue!r}")


def check_peer(peer: object, what: str) -> Peer:
    if not isinstance(peer, Peer):
        raise ConfigError(f"{what} must be a Peer, not {type(peer).__name__}")
    return peer


def as_tuple(address: AddressLike, what: str) -> tuple[Any, ...]:
    """Parse an address given as text; check a tuple's shape."""
    if isinstance(address, str):
        try:
            return parse_host_port(address)
        except ValueError as exc:
            raise ConfigError(f"{what}: {exc}") from None
    if (
        not isinstance(address, tuple)
        or len(address) < 2
        or not isinstance(address[0], str)
        or isinstance(address[1], bool)
        or not isinstance(address[1], int)
        or not 0 <= address[1] <= 65535
    ):
        raise ConfigError(f"{what} must be 'host:port' or (host, port), not {address!r}")
    return address


async def resolve_for(
    network: DatagramNetwork, destination: AddressLike, bind: AddressLike | None, what: str
) -> tuple[Address, Address]:
    """The destination as the transport will see it, and the local address to bind.

    On the real network a name is resolved and the socket family follows the
    destination; other networks (the fake one) take addresses as given.
    """
    dest = as_tuple(destination, what)
    if not isinstance(network, UDPNetwork):
        if bind is None:
            raise ConfigError("bind=(host, port) is required on a network other than UDP")
        return dest, as_tuple(bind, "bind")
    if bind is not None:
        local = as_tuple(bind, "bind")
        family = socket.AF_INET6 if ":" in str(local[0]) else socket.AF_INET
    else:
        family = await _family_of(str(dest[0]), int(dest[1]))
        local = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)
    try:
        return await resolve_address((str(dest[0]), int(dest[1])), family), local
    except OSError as exc:
        raise OSError(exc.errno, f"{what}: cannot resolve {dest[0]!r}: {exc.strerror}") from None


async def _family_of(host: str, port: int) -> socket.AddressFamily:
    if ":" in host:
        return socket.AF_INET6
    try:
        socket.inet_aton(host)
    except OSError:
        pass
    else:
        return socket.AF_INET
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot resolve {host!r}: {exc.strerror or exc}") from None
    families = {info[0] for info in infos}
    return socket.AF_INET if socket.AF_INET in families else socket.AF_INET6


def wall_clock_for(clock: WallClock | None) -> WallClock:
    from ..protocol.clock import SystemClock

    return clock if clock is not None else SystemClock()


@asynccontextmanager
async def collapse_exception_groups() -> AsyncIterator[None]:
    """Re-raise a lone exception out of the nursery's ExceptionGroup.

    Our context managers run a nursery around the user's block; Trio wraps anything
    raised there in an ExceptionGroup. A single error (ours or the user's) is more
    useful unwrapped, so ``except HandshakeError`` works as documented. The error
    keeps its own traceback, cause and context.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        inner: BaseException = group
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        if inner is group:
            raise
        context = inner.__context__
        try:
            raise inner
        finally:
            # Raising here would make the group its context: give it back its own.
            inner.__context__ = context
            del inner, group
