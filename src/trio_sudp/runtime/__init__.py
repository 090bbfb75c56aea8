"""The Trio runtime: the UDP task's two paths, per-peer timers, and the library API.

A datagram's way in is ``receive.py`` (the read loop and the client's or server's
path to the sessions), its way out ``send.py``; ``timers.py`` is each peer's timer
task and ``peer.py`` the runner that ties a session to them. ``client.py`` and
``server.py`` are the library API built from those parts.
"""

from __future__ import annotations

from .client import SUDPClient, open_client, serve_client
from .peer import PeerRunner, PeerStatistics
from .receive import ClientPath, ServerPath, UDPReceiver
from .send import UDPSender
from .server import SUDPServer, open_server, serve_server
from .transport import Address, DatagramNetwork, DatagramTransport, UDPStats
from .udp import UDPNetwork, UDPTransport

__all__ = [
    "Address",
    "ClientPath",
    "DatagramNetwork",
    "DatagramTransport",
    "PeerRunner",
    "PeerStatistics",
    "SUDPClient",
    "SUDPServer",
    "ServerPath",
    "UDPNetwork",
    "UDPReceiver",
    "UDPSender",
    "UDPStats",
    "UDPTransport",
    "open_client",
    "open_server",
    "serve_client",
    "serve_server",
]
