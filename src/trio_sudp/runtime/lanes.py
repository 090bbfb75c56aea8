"""Known peers first: a server's two receive sockets, and the kernel program between them.

A flood fills a socket's receive queue, and the kernel then drops whatever comes
next: a client's keepalive as likely as the attacker's junk, so that a session dies
although the server never fell behind on *its* traffic. A server on Linux therefore
binds two UDP sockets to its port (``SO_REUSEPORT``) and gives the pair a classic BPF
program (``SO_ATTACH_REUSEPORT_CBPF``) that picks the socket for each datagram:

- the **known lane** (the first socket, which also sends) takes datagrams whose
  source is the current endpoint of an established client;
- the **strangers' lane** takes everything else: new and roaming clients, and any
  flood from elsewhere, which now fills this queue only.

Both are read, by a task each; the program is rebuilt when an endpoint changes
(:meth:`ServerLanes.steer`, at most :data:`MAX_STEERED` endpoints: the rest share
the strangers' lane). Where the kernel takes no such program, or a second socket
cannot be bound, the server runs on one socket as before.

The port is taken exclusively first (a socket without ``SO_REUSEPORT``, closed
again), so that a second server on the same port still fails with "address in use"
instead of quietly sharing it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final, cast

from ..protocol.prefilter import PrefilterRules
from .bpf import RET_K, Assembler, SocketFilter, match_sources, source_of
from .transport import Address, DatagramNetwork, DatagramTransport, ServerSocket
from .udp import UDPNetwork, UDPTransport

__all__ = [
    "BAN_LOOK_INTERVAL",
    "KNOWN",
    "MAX_STEERED",
    "STEER_INTERVAL",
    "STRANGERS",
    "ServerLanes",
    "bind_lanes",
    "build_lane_program",
]

log = logging.getLogger("trio_sudp")

#: The reuseport program's answers: an index into the group, in the order of binding.
KNOWN: Final = 0
STRANGERS: Final = 1
#: Endpoints steered to the known lane at most (the kernel takes 4096 instructions).
MAX_STEERED: Final = 300
#: Seconds between two rebuilds of the program at most.
STEER_INTERVAL: Final = 0.05
#: Seconds between two looks at who floods the door (``protocol/bans.py``).
BAN_LOOK_INTERVAL: Final = 1.0


def build_lane_program(endpoints: Iterable[Address]) -> tuple[SocketFilter, int]:
    """The reuseport program sending ``endpoints`` to :data:`KNOWN`, the rest to
    :data:`STRANGERS`; and how many endpoints it steers (at most :data:`MAX_STEERED`).

    IPv4 with options and IPv6 with extension headers go to the strangers' lane (their
    ports are not where the program looks). An IPv4 endpoint of a dual-stack socket
    (``::ffff:a.b.c.d``) is matched as the IPv4 header it arrives in.
    """
    sources = sorted({source_of(str(a[0]), int(a[1])) for a in endpoints})[:MAX_STEERED]
    asm = Assembler()
    match_sources(asm, sources, matched=KNOWN, name="known")
    asm.op(RET_K, STRANGERS)
    return asm.program(), len(sources)


class ServerLanes:
    """A server's receive sockets: :attr:`known` (which also sends) and, where the
    kernel steers, :attr:`strangers` (see the module docstring).

    It also applies the protection a real UDP socket offers to each of them: the
    prefilter, a large receive buffer, the kernel's drop counters.
    """

    def __init__(self, known: DatagramTransport, strangers: UDPTransport | None = None) -> None:
        self.known = known
        self.strangers = strangers
        #: How many endpoints the kernel steers to the known lane now.
        self.steered = 0
        #: The hosts whose datagrams the strangers' lane drops in the kernel.
        self.banned: frozenset[str] = frozenset()
        self._steering = strangers is not None
        self._rules: PrefilterRules | None = None

    @property
    def transports(self) -> tuple[DatagramTransport, ...]:
        """Every lane's transport, the known lane first: each needs a reader."""
        return (self.known,) if self.strangers is None else (self.known, self.strangers)

    @property
    def steering(self) -> bool:
        """Whether the kernel sends known endpoints to their own socket."""
        return self._steering

    def _protected(self) -> list[ServerSocket]:
        return [cast("ServerSocket", t) for t in self.transports if hasattr(t, "attach_prefilter")]

    def steer(self, endpoints: Iterable[Address]) -> int:
        """Send datagrams from ``endpoints`` to the known lane from now on; how many it
        steers. If the kernel refuses, both sockets go on taking a share of everything."""
        if not self._steering or self.strangers is None:
            return 0
        program, steered = build_lane_program(endpoints)
        try:
            self.strangers.set_group_program(program)
        except OSError as exc:
            log.debug("reuseport program refused (%s): one queue for everyone", exc)
            self._steering = False
            self.steered = 0
            return 0
        self.steered = steered
        return steered

    def attach_prefilter(self, rules: PrefilterRules) -> bool:
        """The kernel's prefilter on every lane (the strangers' with the ban list);
        whether every lane took it."""
        self._rules = rules
        taken = [
            lane.attach_prefilter(rules, self.banned if lane is self.strangers else ())
            for lane in self._protected()
        ]
        return bool(taken) and all(taken)

    def ban(self, hosts: Iterable[str]) -> bool:
        """Have the kernel drop everything from ``hosts`` on the strangers' lane (the
        known lane is never filtered by host); whether it took the filter."""
        self.banned = frozenset(hosts)
        if self.strangers is None or self._rules is None:
            return False
        return self.strangers.attach_prefilter(self._rules, self.banned)

    @property
    def prefilter_in_kernel(self) -> bool:
        sockets = self._protected()
        return bool(sockets) and all(s.prefilter_in_kernel for s in sockets)

    def grow_receive_buffers(self) -> None:
        """A large receive buffer on every lane that has one."""
        for lane in self._protected():
            lane.grow_receive_buffer()

    @property
    def receive_buffer_size(self) -> int | None:
        """The known lane's receive buffer (each lane has one that size)."""
        sockets = self._protected()
        return sockets[0].receive_buffer_size if sockets else None

    def kernel_drops(self) -> tuple[int | None, int | None]:
        """What the kernel dropped for the known lane and for the strangers' lane."""
        known = getattr(self.known, "kernel_drops", None)
        strangers = None if self.strangers is None else self.strangers.kernel_drops()
        return (None if known is None else known()), strangers

    def known_drops(self) -> int | None:
        """The known lane's kernel drops: a client's keepalives may be among them."""
        return self.kernel_drops()[0]

    def close(self) -> None:
        """Close every lane (idempotent)."""
        self.known.close()
        if self.strangers is not None:
            self.strangers.close()


def bind_lanes(
    network: DatagramNetwork | None, address: Address, *, steer: bool = True
) -> ServerLanes:
    """A server's sockets on ``address``: two lanes on the real network (Linux), else
    one. Raises ``OSError`` naming the address if the port is taken."""
    network = network if network is not None else UDPNetwork()
    if not steer or not isinstance(network, UDPNetwork) or not network.can_share_port:
        return ServerLanes(network.bind(address))
    probe = network.bind(address)  # exclusive: refused if anything holds the port
    bound: Address = (address[0], probe.local_address[1], *address[2:])
    probe.close()
    known = network.bind(bound, reuse_port=True)
    try:
        strangers = network.bind(bound, reuse_port=True)
    except OSError as exc:
        log.debug("no second socket for strangers (%s): one queue for everyone", exc)
        return ServerLanes(known)
    lanes = ServerLanes(known, strangers)
    lanes.steer(())
    return lanes
