"""Builders for library-API tests: keys, peers, client/server pairs (FakeNetwork, loopback)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
import trio

import trio_sudp
from trio_sudp import LocalIdentity, Peer, PrivateKey, SessionSettings, Version
from trio_sudp.testing import FakeNetwork, TrioWallClock


def _ipv6_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _ipv6_available(), reason="IPv6 loopback unavailable")


@asynccontextmanager
async def loopback_pair(
    version: Version, vaddr: int = 5
) -> AsyncIterator[tuple[trio_sudp.SUDPServer, trio_sudp.SUDPClient]]:
    """A server on 127.0.0.1 (real UDP) and one connected client of it."""
    server_private, client_private = PrivateKey.generate(), PrivateKey.generate()
    shared = b"loopback-shared" if version == Version.V3 else None
    async with trio_sudp.open_server(
        "127.0.0.1:0",
        local=LocalIdentity(0, server_private),
        peers=[Peer(vaddr, client_private.public_key, version, shared)],
    ) as server:
        host, port = server.local_address[:2]
        async with trio_sudp.open_client(
            f"{host}:{port}",
            local=LocalIdentity(vaddr, client_private),
            server=Peer(0, server_private.public_key, version, shared),
        ) as client:
            yield server, client


SERVER_HOST = "10.0.0.1"
SERVER = (SERVER_HOST, 7000)


@cache
def server_key() -> PrivateKey:
    return PrivateKey.generate()


@cache
def client_key(vaddr: int) -> PrivateKey:
    return PrivateKey.generate()


def shared_key(vaddr: int, version: Version) -> bytes | None:
    return f"shared-key-{vaddr:05d}".encode() if version == Version.V3 else None


def client_peer(vaddr: int, version: Version) -> Peer:
    return Peer(vaddr, client_key(vaddr).public_key, version, shared_key(vaddr, version))


def server_peer(vaddr: int, version: Version) -> Peer:
    return Peer(0, server_key().public_key, version, shared_key(vaddr, version))


def client_host(vaddr: int) -> str:
    return f"10.1.{vaddr // 250}.{vaddr % 250 + 1}"


@dataclass
class Setup:
    net: FakeNetwork
    version: Version
    settings: SessionSettings | None = None

    def server_kwargs(self, vaddrs: list[int], **extra: Any) -> dict[str, Any]:
        return {
            "local": LocalIdentity(0, server_key()),
            "peers": [client_peer(v, self.version) for v in vaddrs],
            "network": self.net,
            "clock": TrioWallClock(),
            "settings": self.settings,
            **extra,
        }

    def client_kwargs(self, vaddr: int, **extra: Any) -> dict[str, Any]:
        return {
            "local": LocalIdentity(vaddr, client_key(vaddr)),
            "server": server_peer(vaddr, self.version),
            "network": self.net,
            "bind": (client_host(vaddr), 0),
            "clock": TrioWallClock(),
            "settings": self.settings,
            **extra,
        }

    @asynccontextmanager
    async def server(self, vaddrs: list[int], **extra: Any) -> AsyncIterator[trio_sudp.SUDPServer]:
        async with trio_sudp.open_server(SERVER, **self.server_kwargs(vaddrs, **extra)) as server:
            yield server

    @asynccontextmanager
    async def client(self, vaddr: int = 1, **extra: Any) -> AsyncIterator[trio_sudp.SUDPClient]:
        async with trio_sudp.open_client(SERVER, **self.client_kwargs(vaddr, **extra)) as client:
            yield client


async def echo(server: trio_sudp.SUDPServer) -> None:
    """Echo every payload back to its sender."""
    async for vaddr, payload in server:
        with contextlib.suppress(trio_sudp.NotConnected):
            server.send_nowait(vaddr, payload)


async def wait_for(predicate: Any, limit: float = 30.0, step: float = 0.01) -> None:
    """Poll ``predicate`` in (virtual) time until it holds; fail after ``limit`` seconds.

    Statistics have no event to wait on, so this polls, with a bounded deadline.
    """
    with trio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(step)
