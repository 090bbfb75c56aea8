"""An in-memory datagram network for tests, simulations and benchmarks.

:class:`FakeNetwork` implements ``DatagramNetwork``: bind the library's clients and
servers on it instead of real sockets, then shape the links between hosts (loss,
delay, jitter, reordering, duplication, MTU, partitions), move hosts behind a NAT
that rebinds, inject datagrams and capture what was sent. It needs no background
task and works with Trio's ``MockClock``/``autojump_clock``::

    from trio_sudp.testing import FakeNetwork, LinkConfig

    async def test_lossy_path(autojump_clock):
        net = FakeNetwork(seed=1)
        server = net.bind(("10.0.0.1", 4000))
        client = net.bind(("10.0.0.2", 0))  # port 0: a free ephemeral port
        # Both directions; LinkConfig(loss=0.1) would drop 10%, the same ones every run.
        net.set_link("10.0.0.2", "10.0.0.1", LinkConfig(delay=0.02, jitter=0.005))
        with net.capture() as capture:
            client.send_nowait(b"hello", ("10.0.0.1", 4000))
            await server.wait_readable()  # the clock jumps 20-25 ms
            data, source = server.recv_nowait()
        assert source == client.local_address
        print(capture.records, net.link_statistics("10.0.0.2", "10.0.0.1"))

The model:

- Addresses are ``(host, port)``; hosts are strings (IP-looking ones read best).
- A link is one direction between two hosts, keyed by the hosts written in the
  datagram (so a NATed host's link is its *public* host). Links without their own
  :class:`LinkConfig` follow :attr:`FakeNetwork.default_link`.
- Every fate but the receive queue is decided when a datagram is sent: partition,
  MTU, loss, who is bound at the destination, duplication, delay. The datagram then
  lands in the receiver's bounded queue at ``send time + delay`` (Trio time), or
  at once for zero delay. A full queue drops it, as a socket buffer would.
- Randomness comes from ``seed`` only, through one generator per link: a link's
  fate does not depend on traffic on other links, whichever order Trio runs tasks in.
  A link gets its generator (about 3 KB) once its configuration is random.
- NAT (:meth:`FakeNetwork.add_nat`) is full-cone: anyone may send to the public
  address; a NATed transport is reachable only there. :meth:`FakeNetwork.rebind`
  moves it to a new public address; datagrams to the old one are dropped.
"""

from __future__ import annotations

import collections
import enum
import errno
import heapq
import itertools
import random
from collections.abc import Iterable, Iterator, Sequence
from math import inf
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs
import trio

from trio_sudp.runtime.transport import MAX_SEGMENT_BYTES, MAX_SEGMENTS, Address

if TYPE_CHECKING:
    from trio_sudp.runtime.transport import DatagramNetwork, DatagramTransport, SegmentSender

__all__ = [
    "Capture",
    "CapturedDatagram",
    "FakeNetwork",
    "FakeTransport",
    "Fate",
    "LinkConfig",
    "LinkStats",
    "TransportStats",
]

#: One host, an address (its host is used) or several hosts.
Hosts: TypeAlias = str | Address | Iterable[str]

_EPHEMERAL_FIRST = 49152
_EPHEMERAL_LAST = 65535
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
_now = trio.current_time


class Fate(enum.Enum):
    """What became of a datagram."""

    IN_FLIGHT = "in_flight"
    DELIVERED = "delivered"  # placed in the receiver's queue
    LOST = "lost"  # random loss
    TOO_BIG = "too_big"  # longer than the link's MTU
    PARTITIONED = "partitioned"
    NO_LISTENER = "no_listener"  # nobody bound (or transport closed before arrival)
    QUEUE_FULL = "queue_full"


def _probability(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be a probability in [0, 1], got {value!r}")


def _duration(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value < inf:
        raise ValueError(f"{attribute.name} must be a finite number of seconds >= 0")


def _mtu(_: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"mtu must be >= 0 or None, got {value!r}")


@attrs.frozen
class LinkConfig:
    """How one direction of a link treats datagrams.

    - ``loss``: probability a datagram is lost.
    - ``delay``: one-way delay in seconds; ``jitter`` adds a uniform ``[0, jitter)``.
    - ``reorder``: probability a datagram is held back ``reorder_delay`` more seconds,
      so later ones overtake it.
    - ``duplicate``: probability a second copy is delivered (with its own delay).
    - ``mtu``: largest datagram in bytes (UDP payload) that passes; ``None``: no limit.
      A 1500-byte Ethernet path over IPv4 is ``mtu=1472``.
    """

    loss: float = attrs.field(default=0.0, validator=_probability)
    delay: float = attrs.field(default=0.0, validator=_duration)
    jitter: float = attrs.field(default=0.0, validator=_duration)
    reorder: float = attrs.field(default=0.0, validator=_probability)
    reorder_delay: float = attrs.field(default=0.01, validator=_duration)
    duplicate: float = attrs.field(default=0.0, validator=_probability)
    mtu: int | None = attrs.field(default=None, validator=_mtu)

    @property
    def is_random(self) -> bool:
        """Whether this configuration draws random numbers."""
        return bool(self.loss or self.jitter or self.reorder or self.duplicate)


@attrs.define
class LinkStats:
    """Counters of one link (or of the whole network). Reading them returns a copy.

    ``reordered`` counts datagrams held back by ``reorder``; ``duplicated`` counts
    extra copies (each is then delivered or dropped like any datagram).
    """

    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    dropped_too_big: int = 0
    dropped_partitioned: int = 0
    dropped_queue_full: int = 0
    dropped_no_listener: int = 0

    @property
    def in_flight(self) -> int:
        """Datagrams (and copies) not yet delivered or dropped."""
        return (
            self.sent
            + self.duplicated
            - self.delivered
            - self.lost
            - self.dropped_too_big
            - self.dropped_partitioned
            - self.dropped_queue_full
            - self.dropped_no_listener
        )

    def _add(self, other: LinkStats) -> None:
        for field in attrs.fields(LinkStats):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


@attrs.frozen
class TransportStats:
    """Counters of one :class:`FakeTransport`."""

    sent: int
    received: int
    queued: int
    dropped_queue_full: int


@attrs.define
class CapturedDatagram:
    """One datagram seen by a :class:`Capture`; ``fate`` is updated when it lands."""

    time: float
    src: Address
    dst: Address
    data: bytes
    fate: Fate = Fate.IN_FLIGHT
    arrival: float | None = None  # when it lands or landed, if it got that far
    duplicate: bool = False
    injected: bool = False


class Capture:
    """A ring buffer of the datagrams sent while it is active.

    Use as ``with net.capture() as capture:``; the records stay readable afterwards.
    ``limit`` bounds memory: older records are forgotten (counted in ``overwritten``).
    """

    def __init__(self, network: FakeNetwork, limit: int | None) -> None:
        self._network = network
        self._records: collections.deque[CapturedDatagram] = collections.deque(maxlen=limit)
        self.total = 0

    @property
    def records(self) -> list[CapturedDatagram]:
        """The kept records, oldest first, with fates brought up to date."""
        self._network.flush()
        return list(self._records)

    @property
    def overwritten(self) -> int:
        """How many records the ring buffer has forgotten."""
        return self.total - len(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[CapturedDatagram]:
        return iter(self.records)

    def clear(self) -> None:
        """Forget all records."""
        self._records.clear()
        self.total = 0

    def stop(self) -> None:
        """Stop recording. Idempotent."""
        if self in self._network._captures:
            self._network._captures.remove(self)

    def __enter__(self) -> Capture:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _append(self, record: CapturedDatagram) -> None:
        self._records.append(record)
        self.total += 1


class _Link:
    __slots__ = ("config", "custom", "partitioned", "rng", "stats")

    def __init__(self, config: LinkConfig, custom: bool, rng: random.Random | None) -> None:
        self.config = config
        self.custom = custom
        self.partitioned = False
        self.stats = LinkStats()
        self.rng = rng


# (arrival time, sequence number, data, source, link stats, capture record)
_InFlight: TypeAlias = tuple[float, int, bytes, Address, LinkStats, "CapturedDatagram | None"]


class FakeTransport:
    """A socket on a :class:`FakeNetwork`, implementing ``DatagramTransport``.

    After :meth:`close` every method raises ``trio.ClosedResourceError``.
    """

    def __init__(self, network: FakeNetwork, address: Address, queue_size: int) -> None:
        self._network = network
        self._local_address = address
        self._public_address = address
        self._queue_size = queue_size
        self._ready: collections.deque[tuple[bytes, Address]] = collections.deque()
        self._in_flight: list[_InFlight] = []
        self._closed = False
        self._writable = True
        self._read_lot = trio.lowlevel.ParkingLot()
        self._write_lot = trio.lowlevel.ParkingLot()
        self._read_scope: trio.CancelScope | None = None
        self._sent = 0
        self._received = 0
        self._dropped_queue_full = 0

    def __repr__(self) -> str:
        host, port = self._local_address[:2]
        state = "closed" if self._closed else "open"
        nat = "" if self._public_address == self._local_address else f" as {self._public_address}"
        return f"<FakeTransport {host}:{port}{nat} {state}>"

    @property
    def network(self) -> FakeNetwork:
        """The network this transport is bound on."""
        return self._network

    @property
    def local_address(self) -> Address:
        """The address this transport is bound to."""
        return self._local_address

    @property
    def public_address(self) -> Address:
        """The source address others see: the NAT's public address, else the local one."""
        return self._public_address

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def kernel_drops(self) -> int:
        """Datagrams that found this transport's receive queue full (as a socket's
        kernel drop counter would count them)."""
        return self._dropped_queue_full

    def statistics(self) -> TransportStats:
        """This transport's counters."""
        self._land_due_if_running()
        return TransportStats(
            sent=self._sent,
            received=self._received,
            queued=len(self._ready),
            dropped_queue_full=self._dropped_queue_full,
        )

    def set_writable(self, writable: bool) -> None:
        """While False, ``send_nowait`` raises ``BlockingIOError`` and ``wait_writable`` sleeps."""
        self._writable = writable
        if writable:
            self._write_lot.unpark_all()

    def recv_nowait(self) -> tuple[bytes, Address]:
        """Return one datagram and its source; raise ``BlockingIOError`` when none is ready."""
        in_flight = self._in_flight
        if in_flight:
            now = _now()
            if in_flight[0][0] <= now:
                self._land_due(now)
        try:
            item = self._ready.popleft()
        except IndexError:
            if self._closed:
                raise trio.ClosedResourceError("fake transport was closed") from None
            raise BlockingIOError(errno.EAGAIN, "no datagram ready") from None
        self._received += 1
        return item

    def send_nowait(self, data: bytes, address: Address) -> None:
        """Send one datagram through the network; raise ``BlockingIOError`` if not writable."""
        if self._closed:
            raise trio.ClosedResourceError("fake transport was closed")
        if not self._writable:
            raise BlockingIOError(errno.EAGAIN, "fake transport is not writable")
        if type(data) is not bytes:
            data = bytes(data)
        self._sent += 1
        self._network._transmit(self._public_address, address, data)

    @property
    def max_segment_size(self) -> int:
        """The largest datagram :meth:`send_segments_nowait` takes (any SUDP datagram)."""
        return 0xFFFF

    def send_segments_nowait(self, datagrams: Sequence[bytes], address: Address) -> None:
        """Send several datagrams to one address at once, as UDP GSO would: all or none.

        Raise ``BlockingIOError`` if not writable, and ``ValueError`` when the batch
        breaks the rules of ``SegmentSender`` (sizes, count): a bug of the caller.
        """
        if self._closed:
            raise trio.ClosedResourceError("fake transport was closed")
        size = len(datagrams[0])
        last = len(datagrams[-1])
        if (
            len(datagrams) > MAX_SEGMENTS
            or sum(map(len, datagrams)) > MAX_SEGMENT_BYTES
            or not 0 < last <= size
            or any(len(data) != size for data in datagrams[:-1])
        ):
            raise ValueError("a batch of datagrams that UDP GSO could not send")
        if not self._writable:
            raise BlockingIOError(errno.EAGAIN, "fake transport is not writable")
        for data in datagrams:
            self.send_nowait(data, address)

    async def wait_readable(self) -> None:
        """Sleep until a datagram is ready (or the transport closes)."""
        slept = False
        while True:
            if self._closed:
                raise trio.ClosedResourceError("fake transport was closed")
            in_flight = self._in_flight
            if self._ready or (in_flight and in_flight[0][0] <= _now()):
                if not slept:
                    await trio.lowlevel.checkpoint()
                return
            if self._read_scope is not None:
                raise trio.BusyResourceError("another task is waiting to read this transport")
            with trio.CancelScope(deadline=in_flight[0][0] if in_flight else inf) as scope:
                self._read_scope = scope
                try:
                    await self._read_lot.park()
                finally:
                    self._read_scope = None
            slept = True

    async def wait_writable(self) -> None:
        """Sleep until ``send_nowait`` may succeed (at once unless ``set_writable(False)``)."""
        if self._closed:
            raise trio.ClosedResourceError("fake transport was closed")
        if self._writable:
            await trio.lowlevel.checkpoint()
            return
        while not self._writable:
            await self._write_lot.park()
            if self._closed:
                raise trio.ClosedResourceError("fake transport was closed")

    def close(self) -> None:
        """Unbind and close, waking waiters with ``trio.ClosedResourceError``. Idempotent.

        Datagrams still in flight to it are dropped (``NO_LISTENER``).
        """
        if self._closed:
            return
        self._land_due_if_running()
        self._closed = True
        for _, _, _, _, stats, record in self._in_flight:
            stats.dropped_no_listener += 1
            if record is not None:
                record.fate = Fate.NO_LISTENER
        self._in_flight.clear()
        self._ready.clear()
        self._network._unbind(self)
        self._read_lot.unpark_all()
        self._write_lot.unpark_all()

    # -- delivery, called by the network --------------------------------------------

    def _schedule(
        self,
        arrival: float,
        data: bytes,
        source: Address,
        stats: LinkStats,
        record: CapturedDatagram | None,
    ) -> None:
        in_flight = self._in_flight
        heapq.heappush(
            in_flight, (arrival, next(self._network._sequence), data, source, stats, record)
        )
        if len(in_flight) == 1:
            self._network._pending.add(self)
        scope = self._read_scope
        if scope is not None and arrival < scope.deadline:
            scope.deadline = arrival

    def _arrive(
        self, data: bytes, source: Address, stats: LinkStats, record: CapturedDatagram | None
    ) -> None:
        if self._in_flight:
            self._land_due(_now())  # earlier arrivals first
        self._enqueue(data, source, stats, record)

    def _enqueue(
        self, data: bytes, source: Address, stats: LinkStats, record: CapturedDatagram | None
    ) -> None:
        if len(self._ready) >= self._queue_size:
            stats.dropped_queue_full += 1
            self._dropped_queue_full += 1
            if record is not None:
                record.fate = Fate.QUEUE_FULL
            return
        self._ready.append((data, source))
        stats.delivered += 1
        if record is not None:
            record.fate = Fate.DELIVERED
        if self._read_scope is not None:
            self._read_lot.unpark_all()

    def _land_due(self, now: float) -> None:
        in_flight = self._in_flight
        while in_flight and in_flight[0][0] <= now:
            _, _, data, source, stats, record = heapq.heappop(in_flight)
            self._enqueue(data, source, stats, record)
        if not in_flight:
            self._network._pending.discard(self)

    def _land_due_if_running(self) -> None:
        if self._in_flight:
            try:
                now = _now()
            except RuntimeError:  # outside trio.run
                return
            self._land_due(now)


class FakeNetwork:
    """An in-memory datagram network (see the module docstring for the model).

    ``seed`` fixes every random decision. ``default_link`` applies to links without
    their own configuration. ``queue_size`` bounds each transport's receive queue in
    datagrams (``bind`` may override it).
    """

    def __init__(
        self,
        seed: int | str = 0,
        *,
        default_link: LinkConfig | None = None,
        queue_size: int = 1024,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.seed = seed
        self.queue_size = queue_size
        self._default_link = default_link or LinkConfig()
        self._links: dict[tuple[str, str], _Link] = {}
        self._bound: dict[Address, FakeTransport] = {}  # by local address
        self._routes: dict[Address, FakeTransport] = {}  # by public address
        self._next_port: dict[str, int] = {}
        self._pending: set[FakeTransport] = set()  # transports with datagrams in flight
        self._sequence = itertools.count()
        self._captures: list[Capture] = []
        self._injected = LinkStats()

    # -- binding ----------------------------------------------------------------

    def bind(self, address: Address, *, queue_size: int | None = None) -> FakeTransport:
        """Bind a transport to ``(host, port)``; port 0 picks a free ephemeral port.

        Raise ``OSError(EADDRINUSE)`` if the address is taken (also by a NAT's public
        address) and ``OSError(EADDRNOTAVAIL)`` for a wildcard host such as ``0.0.0.0``.
        """
        host, port = _split_address(address)
        if host in _WILDCARD_HOSTS:
            raise OSError(
                errno.EADDRNOTAVAIL, f"FakeNetwork binds need a concrete host, got {host!r}"
            )
        if port == 0:
            port = self._free_port(host)
        else:
            self._check_free((host, port))
        transport = FakeTransport(self, (host, port), queue_size or self.queue_size)
        self._bound[(host, port)] = transport
        self._routes[(host, port)] = transport
        return transport

    def _check_free(self, address: Address) -> None:
        if address in self._bound or address in self._routes:
            raise OSError(errno.EADDRINUSE, f"Address already in use: {address[0]}:{address[1]}")

    def _free_port(self, host: str) -> int:
        port = self._next_port.get(host, _EPHEMERAL_FIRST)
        for _ in range(_EPHEMERAL_LAST - _EPHEMERAL_FIRST + 1):
            candidate = port
            port = _EPHEMERAL_FIRST if port >= _EPHEMERAL_LAST else port + 1
            if (host, candidate) not in self._bound and (host, candidate) not in self._routes:
                self._next_port[host] = port
                return candidate
        raise OSError(errno.EADDRINUSE, f"no free ephemeral port left on {host}")

    def _unbind(self, transport: FakeTransport) -> None:
        del self._bound[transport.local_address]
        del self._routes[transport.public_address]
        self._pending.discard(transport)

    # -- NAT ----------------------------------------------------------------------

    def add_nat(self, transport: FakeTransport, public: str | Address) -> Address:
        """Put ``transport`` behind a NAT; return its public address.

        ``public`` is a host (a free port is picked) or a full address. From now on
        its datagrams come from the public address, and only that address reaches it.
        """
        self._check_own(transport)
        if transport.public_address != transport.local_address:
            raise ValueError(f"{transport!r} is already behind a NAT; use rebind()")
        return self._move(transport, self._public_address(public))

    def rebind(self, transport: FakeTransport, public: str | Address | None = None) -> Address:
        """Change a NATed transport's public address (default: same host, new port).

        Datagrams sent to the old public address are dropped from now on.
        """
        self._check_own(transport)
        if transport.public_address == transport.local_address:
            raise ValueError(f"{transport!r} is not behind a NAT; use add_nat() first")
        if public is None:
            public = transport.public_address[0]
        return self._move(transport, self._public_address(public))

    def remove_nat(self, transport: FakeTransport) -> None:
        """Make ``transport`` reachable at its own local address again."""
        self._check_own(transport)
        self._move(transport, transport.local_address)

    def _public_address(self, public: str | Address) -> Address:
        if isinstance(public, str):
            return (public, self._free_port(public))
        address = _split_address(public)
        self._check_free(address)
        return address

    def _move(self, transport: FakeTransport, public: Address) -> Address:
        del self._routes[transport.public_address]
        self._routes[public] = transport
        transport._public_address = public
        return public

    def _check_own(self, transport: FakeTransport) -> None:
        if transport.network is not self or transport.closed:
            raise ValueError(f"{transport!r} is not open on this network")

    # -- links --------------------------------------------------------------------

    @property
    def default_link(self) -> LinkConfig:
        """The configuration of every link not given its own."""
        return self._default_link

    @default_link.setter
    def default_link(self, config: LinkConfig) -> None:
        self._default_link = config
        for key, link in self._links.items():
            if not link.custom:
                self._configure(key, link, config, custom=False)

    def set_link(
        self, src: Hosts, dst: Hosts, config: LinkConfig, *, both_ways: bool = True
    ) -> None:
        """Configure the links from ``src`` to ``dst`` hosts (and back if ``both_ways``)."""
        for key in self._keys(src, dst, both_ways):
            self._configure(key, self._link(key), config, custom=True)

    def reset_link(self, src: Hosts, dst: Hosts, *, both_ways: bool = True) -> None:
        """Make these links follow :attr:`default_link` again."""
        for key in self._keys(src, dst, both_ways):
            self._configure(key, self._link(key), self._default_link, custom=False)

    def link_config(self, src: Hosts, dst: Hosts) -> LinkConfig:
        """The configuration of the link from host ``src`` to host ``dst``."""
        link = self._links.get((_one_host(src), _one_host(dst)))
        return self._default_link if link is None else link.config

    def partition(self, a: Hosts, b: Hosts, *, both_ways: bool = True) -> None:
        """Drop every datagram between hosts ``a`` and ``b`` until :meth:`heal`."""
        for key in self._keys(a, b, both_ways):
            self._link(key).partitioned = True

    def heal(
        self, a: Hosts | None = None, b: Hosts | None = None, *, both_ways: bool = True
    ) -> None:
        """Heal the partition between ``a`` and ``b``, or every partition if none given."""
        if a is None and b is None:
            for link in self._links.values():
                link.partitioned = False
            return
        if a is None or b is None:
            raise TypeError("heal() takes both host groups or none")
        for key in self._keys(a, b, both_ways):
            self._link(key).partitioned = False

    def _keys(self, src: Hosts, dst: Hosts, both_ways: bool) -> list[tuple[str, str]]:
        sources, destinations = _host_list(src), _host_list(dst)
        keys = [(s, d) for s in sources for d in destinations]
        if both_ways:
            keys += [(d, s) for s in sources for d in destinations]
        return keys

    def _link(self, key: tuple[str, str]) -> _Link:
        link = self._links.get(key)
        if link is None:
            link = _Link(self._default_link, False, None)
            self._configure(key, link, self._default_link, custom=False)
            self._links[key] = link
        return link

    def _configure(
        self, key: tuple[str, str], link: _Link, config: LinkConfig, custom: bool
    ) -> None:
        link.config = config
        link.custom = custom
        if config.is_random and link.rng is None:
            link.rng = random.Random(f"{self.seed}|{key[0]}|{key[1]}")

    # -- statistics and capture ------------------------------------------------------

    def link_statistics(self, src: Hosts, dst: Hosts) -> LinkStats:
        """A copy of the counters of the link from host ``src`` to host ``dst``."""
        self.flush()
        link = self._links.get((_one_host(src), _one_host(dst)))
        return LinkStats() if link is None else attrs.evolve(link.stats)

    def statistics(self) -> LinkStats:
        """Counters summed over every link and injected datagram."""
        self.flush()
        total = attrs.evolve(self._injected)
        for link in self._links.values():
            total._add(link.stats)
        return total

    def capture(self, limit: int | None = 10_000) -> Capture:
        """Start recording every datagram sent or injected (keeping the last ``limit``)."""
        capture = Capture(self, limit)
        self._captures.append(capture)
        return capture

    def flush(self) -> None:
        """Land every datagram whose arrival time has passed.

        Arrivals are processed lazily, when the receiver looks; counters and captures
        call this so that they are up to date. Does nothing outside ``trio.run``.
        """
        if self._pending:
            try:
                now = _now()
            except RuntimeError:
                return
            for transport in list(self._pending):
                transport._land_due(now)

    # -- the datagram path ----------------------------------------------------------

    def inject(self, data: bytes, *, src: Address, dst: Address, delay: float = 0.0) -> Fate:
        """Deliver a raw datagram from any ``src`` to ``dst`` after ``delay`` seconds.

        Links do not apply (no loss, MTU or partition); routing, NAT and the receive
        queue do. Return its fate, ``IN_FLIGHT`` if delayed.
        """
        src, dst = _split_address(src), _split_address(dst)
        data = bytes(data)
        stats = self._injected
        stats.sent += 1
        record = self._record(src, dst, data, injected=True) if self._captures else None
        target = self._routes.get(dst)
        if target is None:
            return _drop_no_listener(stats, record)
        if delay > 0:
            arrival = _now() + delay
            if record is not None:
                record.arrival = arrival
            target._schedule(arrival, data, src, stats, record)
            return Fate.IN_FLIGHT
        before = stats.delivered
        target._arrive(data, src, stats, record)
        return Fate.DELIVERED if stats.delivered > before else Fate.QUEUE_FULL

    def _transmit(self, src: Address, dst: Address, data: bytes) -> None:
        key = (src[0], dst[0])
        link = self._links.get(key)
        if link is None:
            link = self._link(key)
        stats = link.stats
        stats.sent += 1
        config = link.config
        record = self._record(src, dst, data) if self._captures else None
        if link.partitioned:
            stats.dropped_partitioned += 1
            if record is not None:
                record.fate = Fate.PARTITIONED
            return
        if config.mtu is not None and len(data) > config.mtu:
            stats.dropped_too_big += 1
            if record is not None:
                record.fate = Fate.TOO_BIG
            return
        rng = link.rng
        if rng is not None and config.loss and rng.random() < config.loss:
            stats.lost += 1
            if record is not None:
                record.fate = Fate.LOST
            return
        target = self._routes.get(dst)
        if target is None:
            _drop_no_listener(stats, record)
            return
        self._forward(target, src, data, link, record)
        if rng is not None and config.duplicate and rng.random() < config.duplicate:
            stats.duplicated += 1
            copy = None
            if record is not None:
                copy = self._record(src, dst, data)
                copy.duplicate = True
            self._forward(target, src, data, link, copy)

    def _forward(
        self,
        target: FakeTransport,
        src: Address,
        data: bytes,
        link: _Link,
        record: CapturedDatagram | None,
    ) -> None:
        config = link.config
        delay = config.delay
        rng = link.rng
        if rng is not None:
            if config.jitter:
                delay += rng.random() * config.jitter
            if config.reorder and rng.random() < config.reorder:
                delay += config.reorder_delay
                link.stats.reordered += 1
        if delay > 0:
            arrival = _now() + delay
            if record is not None:
                record.arrival = arrival
            target._schedule(arrival, data, src, link.stats, record)
        else:
            if record is not None:
                record.arrival = record.time
            target._arrive(data, src, link.stats, record)

    def _record(
        self, src: Address, dst: Address, data: bytes, *, injected: bool = False
    ) -> CapturedDatagram:
        record = CapturedDatagram(time=_now(), src=src, dst=dst, data=data, injected=injected)
        for capture in self._captures:
            capture._append(record)
        return record


def _drop_no_listener(stats: LinkStats, record: CapturedDatagram | None) -> Fate:
    stats.dropped_no_listener += 1
    if record is not None:
        record.fate = Fate.NO_LISTENER
    return Fate.NO_LISTENER


def _split_address(address: Any) -> tuple[str, int]:
    try:
        host, port = address
    except (TypeError, ValueError):
        raise ValueError(f"expected a (host, port) address, got {address!r}") from None
    if not isinstance(host, str) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"expected a (host: str, port: 0-65535) address, got {address!r}")
    return host, port


def _one_host(hosts: Hosts) -> str:
    found = _host_list(hosts)
    if len(found) != 1:
        raise ValueError(f"expected one host, got {hosts!r}")
    return found[0]


def _host_list(hosts: Hosts) -> list[str]:
    if isinstance(hosts, str):
        return [hosts]
    items: list[object] = list(hosts)
    if len(items) == 2 and isinstance(items[0], str) and isinstance(items[1], int):
        return [items[0]]  # an address
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"expected a host, an address or host names, got {hosts!r}")
        names.append(item)
    return names


if TYPE_CHECKING:
    _network: DatagramNetwork = FakeNetwork()
    _transport: DatagramTransport = _network.bind(("10.0.0.1", 0))
    _sender: SegmentSender = FakeNetwork().bind(("10.0.0.1", 0))
