"""The Trio runtime: the UDP task, per-peer nurseries, and the library API."""

from __future__ import annotations

from .client import SUDPClient, open_client, serve_client
from .endpoint import Endpoint, EndpointStats
from .peer import PeerRunner, PeerStatistics
from .server import SUDPServer, open_server, serve_server
from .transport import Address, DatagramNetwork, DatagramTransport
from .udp import UDPNetwork, UDPTransport

__all__ = [
    "Address",
    "DatagramNetwork",
    "DatagramTransport",
    "Endpoint",
    "EndpointStats",
    "PeerRunner",
    "PeerStatistics",
    "SUDPClient",
    "SUDPServer",
    "UDPNetwork",
    "UDPTransport",
    "open_client",
    "open_server",
    "serve_client",
    "serve_server",
]
