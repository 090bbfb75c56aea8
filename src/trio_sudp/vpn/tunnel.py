"""One end of a VPN: the UDP socket and the TUN device, and the two paths between them.

::

    inbound   UDP socket(s) → UDPReceiver → path (sessions) → sink → DeviceIO.write → TUN
    outbound  TUN → DeviceIO reader → on_packet (route, session.send) → UDPSender → UDP

Both paths run synchronously inside their read loop's batch: a batch of datagrams
read from the socket is one write batch of the device (TCP segments merged into GSO
writes) and one send batch of the socket (what the sessions answer leaves with UDP
GSO); a batch of packets read from the device is one send batch of the socket. The
:class:`Tunnel` owns both boundaries; the server and the client (``server.py``,
``client.py``) supply the path and ``on_packet``, and the sockets to read: the
client's one, or the server's lanes (``runtime/lanes.py``), a reader each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import trio

from ..runtime.batches import Boundary
from ..runtime.receive import DatagramPath, UDPReceiver
from ..runtime.send import UDPSender
from ..runtime.transport import DatagramTransport, UDPStats
from .device import DeviceIO

__all__ = ["Tunnel"]


class Tunnel:
    """Runs the inbound and outbound paths of one VPN end (see the module docstring)."""

    def __init__(
        self,
        receive_from: Sequence[DatagramTransport],
        stats: UDPStats,
        sender: UDPSender,
        device: DeviceIO,
        *,
        inbound: DatagramPath,
        outbound: Callable[[bytes, float], None],
        strangers: DatagramTransport | None = None,
    ) -> None:
        self.sender = sender
        self.device = device
        self._outbound = outbound
        inbound_batch = Boundary(self._begin_inbound, self._end_inbound)
        self._receivers = [
            UDPReceiver(
                transport,
                stats,
                inbound,
                boundary=lambda: inbound_batch,
                strangers=transport is strangers,
            )
            for transport in receive_from
        ]

    def _begin_inbound(self) -> None:
        # What a batch of datagrams makes the sessions send, and the packets it writes.
        self.device.begin_write_batch()
        self.sender.begin_batch()

    def _end_inbound(self) -> None:
        self.sender.end_batch()
        self.device.end_write_batch()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Both read loops and both writers, until cancelled or the socket or device closes."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.sender.run_writer)
            nursery.start_soon(self.device.run_writer)
            for receiver in self._receivers:
                nursery.start_soon(receiver.run)
            nursery.start_soon(self._run_outbound, nursery.cancel_scope)
            task_status.started()

    async def _run_outbound(self, scope: trio.CancelScope) -> None:
        await self.device.run_reader(self._outbound, boundary=self.sender.batch)
        scope.cancel()  # the device is gone: so is the tunnel
