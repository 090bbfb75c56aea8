"""The real UDP transport over loopback (127.0.0.1 and ::1) and its address helpers."""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from runtime_helpers import needs_ipv6
from trio_sudp.runtime.prefilter import PrefilterRules
from trio_sudp.runtime.transport import RECV_SIZE, Address
from trio_sudp.runtime.udp import (
    UDPNetwork,
    UDPTransport,
    address_family,
    format_address,
    parse_host_port,
    resolve_address,
    sockaddr_for,
)


async def receive(transport: UDPTransport, count: int) -> list[tuple[bytes, Address]]:
    """The UDP task's pattern: drain with recv_nowait, then wait_readable."""
    received: list[tuple[bytes, Address]] = []
    while len(received) < count:
        try:
            received.append(transport.recv_nowait())
        except BlockingIOError:
            await transport.wait_readable()
    return received


@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=needs_ipv6)])
async def test_round_trip_drains_every_datagram(host: str) -> None:
    network = UDPNetwork()
    with trio.fail_after(5):
        a, b = network.bind((host, 0)), network.bind((host, 0))
        try:
            assert a.local_address[0] == host
            assert a.local_address[1] != 0
            expected = [i.to_bytes(4, "big") * 100 for i in range(200)]
            for data in expected:
                a.send_nowait(data, b.local_address)
            received = await receive(b, len(expected))
            assert [data for data, _ in received] == expected
            assert {source for _, source in received} == {a.local_address}
            b.send_nowait(b"reply", received[0][1])
            assert await receive(a, 1) == [(b"reply", b.local_address)]
        finally:
            a.close()
            b.close()


async def test_recv_nowait_raises_blocking_when_empty() -> None:
    transport = UDPNetwork().bind(("127.0.0.1", 0))
    with pytest.raises(BlockingIOError):
        transport.recv_nowait()
    transport.close()


async def test_oversized_datagram_is_seen_truncated_to_recv_size() -> None:
    network = UDPNetwork()
    a, b = network.bind(("127.0.0.1", 0)), network.bind(("127.0.0.1", 0))
    with trio.fail_after(5):
        a.send_nowait(b"x" * (RECV_SIZE + 100), b.local_address)
        [(data, _)] = await receive(b, 1)
    assert len(data) == RECV_SIZE
    a.close()
    b.close()


async def test_wait_writable_returns_for_an_idle_socket() -> None:
    transport = UDPNetwork().bind(("127.0.0.1", 0))
    with trio.fail_after(5):
        await transport.wait_writable()
    transport.close()


async def test_close_wakes_waiter_and_is_idempotent() -> None:
    transport = UDPNetwork().bind(("127.0.0.1", 0))
    woken: list[type[BaseException]] = []

    async def waiter() -> None:
        try:
            await transport.wait_readable()
        except trio.ClosedResourceError as exc:
            woken.append(type(exc))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            transport.close()
            transport.close()
    assert woken == [trio.ClosedResourceError]
    assert transport.closed
    with pytest.raises(trio.ClosedResourceError):
        transport.recv_nowait()
    with pytest.raises(trio.ClosedResourceError):
        transport.send_nowait(b"x", ("127.0.0.1", 9))
    with pytest.raises(trio.ClosedResourceError):
        await transport.wait_readable()
    with pytest.raises(trio.ClosedResourceError):
        await transport.wait_writable()


def test_close_outside_trio() -> None:
    transport = UDPNetwork().bind(("127.0.0.1", 0))
    transport.close()
    assert transport.closed


def test_port_in_use_names_the_address() -> None:
    network = UDPNetwork()
    first = network.bind(("127.0.0.1", 0))
    port = first.local_address[1]
    with pytest.raises(OSError, match=rf"127\.0\.0\.1:{port}") as info:
        network.bind(("127.0.0.1", port))
    assert info.value.errno == errno.EADDRINUSE
    first.close()


def test_bind_needs_a_numeric_host() -> None:
    with pytest.raises(OSError, match="numeric IP") as info:
        UDPNetwork().bind(("localhost", 0))
    assert info.value.errno == errno.EINVAL


def test_address_family() -> None:
    assert address_family("") == socket.AF_INET
    assert address_family("0.0.0.0") == socket.AF_INET
    assert address_family("::") == socket.AF_INET6
    assert address_family("fe80::1%lo") == socket.AF_INET6


@needs_ipv6
async def test_dual_stack_socket_talks_to_ipv4_with_mapped_addresses() -> None:
    network = UDPNetwork()
    server = network.bind(("::", 0))
    client = network.bind(("127.0.0.1", 0))
    with trio.fail_after(5):
        client.send_nowait(b"hello", ("127.0.0.1", server.local_address[1]))
        [(_, source)] = await receive(server, 1)
        expected = await resolve_address(f"127.0.0.1:{client.local_address[1]}", server.family)
        assert source == expected == ("::ffff:127.0.0.1", client.local_address[1], 0, 0)
        server.send_nowait(b"reply", expected)
        assert [data for data, _ in await receive(client, 1)] == [b"reply"]
    server.close()
    client.close()


@needs_ipv6
def test_v6only_when_asked() -> None:
    for dual_stack, v6only in [(True, 0), (False, 1)]:
        transport = UDPNetwork(dual_stack=dual_stack).bind(("::", 0))
        with socket.socket(fileno=socket.dup(transport.fileno())) as view:
            assert view.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == v6only
        transport.close()


def test_sockaddr_for_each_family() -> None:
    assert sockaddr_for("127.0.0.1", 5, socket.AF_INET) == ("127.0.0.1", 5)
    assert sockaddr_for("::ffff:10.1.2.3", 5, socket.AF_INET) == ("10.1.2.3", 5)
    assert sockaddr_for("10.1.2.3", 5, socket.AF_INET6) == ("::ffff:10.1.2.3", 5, 0, 0)
    assert sockaddr_for("2001:DB8:0::1", 5, socket.AF_INET6) == ("2001:db8::1", 5, 0, 0)
    with pytest.raises(OSError, match="IPv4 socket") as info:
        sockaddr_for("::1", 5, socket.AF_INET)
    assert info.value.errno == errno.EAFNOSUPPORT
    with pytest.raises(ValueError, match="does not appear"):
        sockaddr_for("example.com", 5, socket.AF_INET)


async def test_resolve_address_forms() -> None:
    assert await resolve_address("192.0.2.1:443", socket.AF_INET) == ("192.0.2.1", 443)
    assert await resolve_address(("192.0.2.1", 443), socket.AF_INET6) == (
        "::ffff:192.0.2.1",
        443,
        0,
        0,
    )
    with trio.fail_after(10):
        host, port = await resolve_address("localhost:53", socket.AF_INET)
    assert host.startswith("127.")
    assert port == 53


def test_format_and_parse_host_port() -> None:
    assert format_address(("1.2.3.4", 5)) == "1.2.3.4:5"
    assert format_address(("::1", 5, 0, 0)) == "[::1]:5"
    assert parse_host_port("[::1]:5") == ("::1", 5)
    assert parse_host_port("example.com:65535") == ("example.com", 65535)
    assert parse_host_port(":4000") == ("", 4000)
    for bad in ["1.2.3.4", "::1:5", "[::1]5", "[::1", "h:65536", "h:", "h:-1", "h:٣"]:
        with pytest.raises(ValueError, match=r"expected|brackets|port must"):
            parse_host_port(bad)


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@given(host=ipv4 | ipv6, port=ports)
def test_parse_inverts_format(host: str, port: int) -> None:
    assert parse_host_port(format_address((host, port))) == (host, port)


@given(st.text(max_size=40))
def test_parse_rejects_garbage_with_value_error_only(text: str) -> None:
    try:
        host, port = parse_host_port(text)
    except ValueError:
        return
    assert 0 <= port <= 65535
    assert format_address((host, port)).endswith(f":{port}")


@given(host=ipv4, port=ports)
def test_ipv4_maps_into_ipv6_and_back(host: str, port: int) -> None:
    mapped = sockaddr_for(host, port, socket.AF_INET6)
    assert mapped == (f"::ffff:{host}", port, 0, 0)
    assert sockaddr_for(mapped[0], port, socket.AF_INET) == (host, port)


# ------------------------------------------------ kernel drops, receive buffer

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux socket API")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CAP_NET_ADMIN)")


def _rmem_max() -> int:
    return int(Path("/proc/sys/net/core/rmem_max").read_text())


@linux_only
async def test_kernel_drops_counts_receive_queue_overflows() -> None:
    receiver = UDPNetwork(buffer_size=4096, gro=False).bind(("127.0.0.1", 0))
    sender = UDPNetwork().bind(("127.0.0.1", 0))
    try:
        assert receiver.kernel_drops() == 0
        for _ in range(200):
            sender.send_nowait(bytes(1000), receiver.local_address)
        received = 0
        with trio.fail_after(5):
            # Each datagram is either read or dropped; wait until all are accounted for.
            while received + (receiver.kernel_drops() or 0) < 200:
                try:
                    receiver.recv_nowait()
                    received += 1
                except BlockingIOError:
                    await trio.sleep(0.001)
        assert received + (receiver.kernel_drops() or 0) == 200
        assert 0 < received < 100  # a 4 KiB buffer holds a few 1000-byte datagrams
    finally:
        receiver.close()
        sender.close()


@linux_only
@needs_root
def test_grow_receive_buffer_goes_beyond_rmem_max_as_root() -> None:
    if _rmem_max() > 1 << 28:
        pytest.skip("net.core.rmem_max is too large to go beyond")
    transport = UDPNetwork(buffer_size=None).bind(("127.0.0.1", 0))
    try:
        size = 2 * _rmem_max() + 4096
        granted = transport.grow_receive_buffer(size)
        assert granted == transport.receive_buffer_size == 2 * size  # the kernel doubles it
        assert transport.grow_receive_buffer(4096) == granted  # never shrinks
    finally:
        transport.close()


@linux_only
@needs_root
def test_grow_receive_buffer_stops_at_rmem_max_without_privilege() -> None:
    """In a child process that gave up root: SO_RCVBUFFORCE is refused, SO_RCVBUF used."""
    if _rmem_max() > 1 << 28:
        pytest.skip("net.core.rmem_max is too large")
    transport = UDPNetwork(buffer_size=None).bind(("127.0.0.1", 0))
    before = transport.receive_buffer_size
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.setuid(65534)
            granted = transport.grow_receive_buffer(4 * _rmem_max())
            os.write(write_end, str(granted).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        _, status = os.waitpid(pid, 0)
        granted = int(os.read(read_end, 64))
    finally:
        os.close(read_end)
        transport.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert granted == 2 * _rmem_max()
    assert granted >= before


def test_socket_counters_after_close_raise_closed() -> None:
    transport = UDPNetwork().bind(("127.0.0.1", 0))
    transport.close()
    with pytest.raises(trio.ClosedResourceError):
        transport.kernel_drops()
    with pytest.raises(trio.ClosedResourceError):
        transport.grow_receive_buffer()
    with pytest.raises(trio.ClosedResourceError):
        _ = transport.receive_buffer_size
    with pytest.raises(trio.ClosedResourceError):
        transport.attach_prefilter(PrefilterRules.for_clients([3], [1]))
