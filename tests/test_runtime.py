"""The library API over the fake network, in virtual time (autojump_clock, no sleeps)."""

from __future__ import annotations

import contextlib

import pytest
import trio
import trio.testing

import trio_sudp
from runtime_helpers import SERVER, Setup, client_host, echo, wait_for
from trio_sudp import (
    ConfigError,
    HandshakeError,
    LocalIdentity,
    NotConnected,
    PayloadTooLarge,
    Peer,
    PrivateKey,
    SessionSettings,
    SessionState,
    UnknownPeer,
    Version,
)
from trio_sudp.testing import FakeNetwork, LinkConfig

VERSIONS = [Version.V2, Version.V3]


@pytest.fixture(params=VERSIONS, ids=["v2", "v3"])
def setup(request: pytest.FixtureRequest) -> Setup:
    net = FakeNetwork(seed=7, default_link=LinkConfig(delay=0.005))
    return Setup(net, request.param)


async def test_connect_and_echo(setup: Setup, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(30):
        async with setup.server([1]) as server, trio.open_nursery() as nursery:
            nursery.start_soon(echo, server)
            async with setup.client(1) as client:
                assert client.state is SessionState.ESTABLISHED
                for i in range(10):
                    await client.send(b"ping %d" % i)
                    assert await client.receive() == b"ping %d" % i
                stats = client.statistics()
                assert stats.current_epoch is not None
                assert stats.rx_packets >= 10
                assert stats.tx_packets >= 10
                peer = server.statistics()[1]
                assert peer.state == "established"
                assert peer.endpoint == client.local_address
                assert peer.current_epoch == stats.current_epoch
                assert peer.version == int(setup.version)
            nursery.cancel_scope.cancel()


async def test_ten_minutes_with_twenty_rekeys_lose_nothing(
    setup: Setup, autojump_clock: trio.testing.MockClock
) -> None:
    received: list[bytes] = []
    with trio.fail_after(900):
        async with setup.server([1]) as server, trio.open_nursery() as nursery:
            nursery.start_soon(echo, server)
            async with setup.client(1) as client:

                async def collect() -> None:
                    async for payload in client:
                        received.append(payload)

                nursery.start_soon(collect)
                start = trio.current_time()
                sent = 0
                while trio.current_time() - start < 600:
                    await client.send(b"%d" % sent)
                    sent += 1
                    await trio.sleep(0.2)
                await wait_for(lambda: len(received) == sent)
                assert received == [b"%d" % i for i in range(sent)]
                assert sent >= 2900
                stats = client.statistics()
                assert 19 <= stats.handshakes <= 21  # the connect plus ~20 rekeys
                assert server.statistics()[1].handshakes == stats.handshakes
                assert not stats.drops
                assert not server.statistics()[1].drops
            nursery.cancel_scope.cancel()


async def test_thirty_percent_loss_both_ways(
    setup: Setup, autojump_clock: trio.testing.MockClock
) -> None:
    setup.net.default_link = LinkConfig(
        delay=0.01, loss=0.3, duplicate=0.1, reorder=0.2, jitter=0.01
    )
    received: list[bytes] = []
    with trio.fail_after(300):
        async with setup.server([1]) as server, trio.open_nursery() as nursery:

            async def collect() -> None:
                async for _vaddr, payload in server:
                    received.append(payload)

            nursery.start_soon(collect)
            async with setup.client(1) as client:
                sent = [b"%d" % i for i in range(500)]
                for payload in sent:
                    with contextlib.suppress(NotConnected):  # while it rekeys
                        await client.send(payload)
                    await trio.sleep(0.05)
                await trio.sleep(1.0)
            nursery.cancel_scope.cancel()
    # Lossy, so not everything arrives; but nothing twice, and most of it.
    assert len(received) == len(set(received))
    assert set(received) <= set(sent)
    assert len(received) > 250
    assert setup.net.statistics().duplicated > 0


async def test_nat_rebinding_followed_after_authenticated_message(
    setup: Setup, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        async with setup.server([1]) as server, trio.open_nursery() as nursery:
            nursery.start_soon(echo, server)
            async with setup.client(1) as client:
                transport = client.sender.transport
                public = setup.net.add_nat(transport, ("192.0.2.50", 4000))  # type: ignore[arg-type]
                await client.send(b"through the nat")
                assert await client.receive() == b"through the nat"
                assert server.statistics()[1].endpoint == public
                # An unauthenticated datagram from elsewhere moves nothing.
                forged = bytearray(b"\x03\x04\x00\x40\x00\x01\x00\x00" + bytes(12 + 64))
                setup.net.inject(bytes(forged), src=("198.51.100.99", 5555), dst=SERVER)
                await trio.sleep(0.1)
                assert server.statistics()[1].endpoint == public
                # The NAT rebinds: the next authenticated message moves the endpoint.
                new = setup.net.rebind(transport, ("192.0.2.50", 4999))  # type: ignore[arg-type]
                await client.send(b"after rebinding")
                assert await client.receive() == b"after rebinding"
                assert server.statistics()[1].endpoint == new
            nursery.cancel_scope.cancel()


async def test_server_restart_recovered_within_three_seconds(
    setup: Setup, autojump_clock: trio.testing.MockClock
) -> None:
    received: list[bytes] = []
    with trio.fail_after(120):
        async with trio.open_nursery() as outer:
            server_scope = trio.CancelScope()

            async def run_server(task_status: trio.TaskStatus[None]) -> None:
                with server_scope:
                    async with setup.server([1]) as server, trio.open_nursery() as nursery:
                        nursery.start_soon(echo, server)
                        task_status.started()
                        await trio.sleep_forever()

            await outer.start(run_server)
            async with setup.client(1) as client:
                outer.start_soon(lambda: _collect(client, received))
                await client.send(b"before")
                await wait_for(lambda: received == [b"before"])
                server_scope.cancel()  # the server process dies, with all its state
                await trio.sleep(0.5)
                server_scope = trio.CancelScope()
                await outer.start(run_server)
                restarted = trio.current_time()
                # Traffic resumes by itself: keep sending until a reply comes back.
                while len(received) == 1:
                    with contextlib.suppress(NotConnected):
                        await client.send(b"after")
                    await trio.sleep(0.1)
                assert trio.current_time() - restarted <= 3.0
                assert client.state is SessionState.ESTABLISHED
            outer.cancel_scope.cancel()


async def _collect(client: trio_sudp.SUDPClient, into: list[bytes]) -> None:
    async for payload in client:
        into.append(payload)


async def test_idle_client_expires_and_reconnects(
    setup: Setup, autojump_clock: trio.testing.MockClock
) -> None:
    setup.settings = SessionSettings(idle_expiry=3.0)
    with trio.fail_after(120):
        async with setup.server([1]) as server, trio.open_nursery() as nursery:
            nursery.start_soon(echo, server)
            async with setup.client(1) as client:
                await client.send(b"hello")
                assert await client.receive() == b"hello"
                # The client's path goes silent (a laptop lid closes).
                setup.net.partition(client_host(1), SERVER[0])
                await wait_for(lambda: server.statistics()[1].state == "idle", limit=10)
                expired_at = trio.current_time()
                stats = server.statistics()[1]
                assert stats.endpoint is None
                assert stats.current_epoch is None
                # The lid opens: the client reconnects by itself.
                setup.net.heal()
                await wait_for(lambda: server.statistics()[1].state == "established", limit=30)
                await wait_for(lambda: client.state is SessionState.ESTABLISHED)
                await client.send(b"again")
                assert await client.receive() == b"again"
                assert trio.current_time() - expired_at < 30
            nursery.cancel_scope.cancel()


async def test_application_that_never_reads(
    setup: Setup, autojump_clock: trio.testing.MockClock
) -> None:
    setup.settings = SessionSettings(rekey_interval=5.0)
    with trio.fail_after(120):
        async with setup.server([1]) as server, setup.client(1, receive_queue=10) as client:
            await wait_for(lambda: server.statistics()[1].state == "established")
            epoch = client.statistics().current_epoch
            for _ in range(200):
                server.send_nowait(1, b"unread")
                await trio.sleep(0.1)
            stats = client.statistics()
            # Keepalives and rekeys went on; the payloads beyond the queue dropped.
            assert stats.current_epoch != epoch
            assert stats.handshakes >= 4
            assert stats.drops["receive_queue_full"] == 190
            assert client.state is SessionState.ESTABLISHED
            # Reading now gets the ten queued payloads.
            for _ in range(10):
                assert await client.receive() == b"unread"


async def test_a_thousand_clients(autojump_clock: trio.testing.MockClock) -> None:
    # Socket queues as deep as a real server's 4 MiB buffer: all 1000 connect at once.
    net = FakeNetwork(seed=3, default_link=LinkConfig(delay=0.002), queue_size=8192)
    setup = Setup(net, Version.V3)
    count = 1000
    replies: dict[int, bytes] = {}
    with trio.fail_after(120):
        async with (
            setup.server(list(range(1, count + 1))) as server,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(echo, server)

            async def one(vaddr: int) -> None:
                async with setup.client(vaddr) as client:
                    for _ in range(5):  # datagrams may be lost: an application retries
                        await client.send(b"from %d" % vaddr)
                        with trio.move_on_after(1.0):
                            replies[vaddr] = await client.receive()
                            return

            async with trio.open_nursery() as clients:
                for vaddr in range(1, count + 1):
                    clients.start_soon(one, vaddr)
            stats = server.statistics()
            assert sum(s.handshakes >= 1 for s in stats.values()) == count
            nursery.cancel_scope.cancel()
    assert replies == {v: b"from %d" % v for v in range(1, count + 1)}


async def test_wrong_key_fails_with_a_clear_reason(
    setup: Setup, autojump_clock: trio.testing.MockClock
) -> None:
    settings = SessionSettings(reconnect=False)
    with trio.fail_after(60):
        async with setup.server([1]):
            impostor = LocalIdentity(1, PrivateKey.generate())
            with pytest.raises(HandshakeError, match="key mismatch"):
                async with setup.client(1, local=impostor, settings=settings):
                    pytest.fail("connected with the wrong key")


async def test_no_server_fails_after_the_go_retry_schedule(
    setup: Setup, autojump_clock: trio.testing.MockClock
) -> None:
    start = trio.current_time()
    with trio.fail_after(60), pytest.raises(HandshakeError, match="no answer"):
        async with setup.client(1):
            pytest.fail("connected to nobody")
    expected = 9.0 if setup.version == Version.V2 else 11.5
    assert trio.current_time() - start == pytest.approx(expected, abs=0.1)


async def test_exit_closes_socket_and_cancels_every_task(
    setup: Setup, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        before = len(trio.lowlevel.current_root_task().child_nurseries[0].child_tasks)
        async with setup.server([1]) as server:
            async with setup.client(1) as client:
                await client.send(b"x")
            client_address = client.local_address
            with pytest.raises(trio.ClosedResourceError):
                await client.send(b"after close")
            # The client's address is free again: its socket was closed.
            setup.net.bind(client_address).close()
            assert server.peers() == [1]
        server_address = server.local_address
        setup.net.bind(server_address).close()
        with pytest.raises(trio.ClosedResourceError):
            server.send_nowait(1, b"after close")
        after = len(trio.lowlevel.current_root_task().child_nurseries[0].child_tasks)
        assert after == before


async def test_bad_arguments_fail_before_any_socket(
    setup: Setup, autojump_clock: trio.testing.MockClock
) -> None:
    good = setup.client_kwargs(1)
    cases = [
        ({"local": "not an identity"}, "local must be a LocalIdentity"),
        ({"server": "key"}, "server must be a Peer"),
        ({"local": LocalIdentity(0, good["local"].private_key)}, "1..65534"),
        ({"receive_queue": 0}, "receive_queue"),
        ({"settings": {"keepalive_interval": 1}}, "settings must be a SessionSettings"),
    ]
    for change, message in cases:
        with pytest.raises(ConfigError, match=message):
            async with trio_sudp.open_client(SERVER, **{**good, **change}):
                pass
    with pytest.raises(ConfigError, match="host:port"):
        async with trio_sudp.open_client("no-port", **good):
            pass
    with pytest.raises(ConfigError, match="server's virtual address is 0"):
        async with trio_sudp.open_server(
            SERVER, **setup.server_kwargs([1], local=LocalIdentity(3, PrivateKey.generate()))
        ):
            pass
    # Nothing was bound: the addresses are still free.
    setup.net.bind(SERVER).close()
    with pytest.raises(ConfigError):
        Peer(70000, PrivateKey.generate().public_key)
    with pytest.raises(ConfigError, match="at most 64 bytes"):
        Peer(1, PrivateKey.generate().public_key, Version.V3, b"k" * 65)
    with pytest.raises(ConfigError):
        SessionSettings(keepalive_interval=-1)


async def test_local_errors_are_typed(setup: Setup, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(30):
        async with setup.server([1, 2]) as server, setup.client(1) as client:
            with pytest.raises(PayloadTooLarge):
                await client.send(bytes(trio_sudp.max_payload(setup.version) + 1))
            with pytest.raises(UnknownPeer):
                await server.send(99, b"x")
            with pytest.raises(NotConnected):
                await server.send(2, b"never connected")


async def test_serve_entries_for_nursery_start(
    setup: Setup, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: trio_sudp.serve_server(
                    SERVER, task_status=task_status, **setup.server_kwargs([1])
                )
            )
            nursery.start_soon(echo, server)
            client = await nursery.start(
                lambda task_status: trio_sudp.serve_client(
                    SERVER, task_status=task_status, **setup.client_kwargs(1)
                )
            )
            await client.send(b"started")
            assert await client.receive() == b"started"
            nursery.cancel_scope.cancel()


async def test_add_and_remove_peers_while_running(
    setup: Setup, autojump_clock: trio.testing.MockClock
) -> None:
    from runtime_helpers import client_peer

    with trio.fail_after(60):
        async with setup.server([1]) as server, trio.open_nursery() as nursery:
            nursery.start_soon(echo, server)
            async with setup.client(1) as first:
                server.add_peer(client_peer(2, setup.version))
                async with setup.client(2) as second:
                    await second.send(b"new peer")
                    assert await second.receive() == b"new peer"
                    await first.send(b"old peer")
                    assert await first.receive() == b"old peer"
                    assert first.statistics().handshakes == 1  # untouched
                    server.remove_peer(2)
                    assert server.peers() == [1]
                    with pytest.raises(ConfigError):
                        server.add_peer(client_peer(1, setup.version))
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("endpoint", "shown"),
    [
        (("192.0.2.7", 7000), "192.0.2.7:7000"),
        (("2001:db8::7", 7000, 0, 0), "[2001:db8::7]:7000"),
        (None, None),
    ],
)
def test_peer_statistics_as_json_formats_the_endpoint(
    endpoint: tuple[str, int] | None, shown: str | None
) -> None:
    from trio_sudp.runtime.peer import PeerStatistics

    stats = PeerStatistics(
        vaddr=2, version=3, state="established", endpoint=endpoint, current_epoch=1,
        last_handshake_age=0.5, rx_packets=1, rx_bytes=2, tx_packets=3, tx_bytes=4,
        handshakes=1, endpoint_changes=0, drops={"stale": 1}, public_key="ab:cd",
    )  # fmt: skip
    data = stats.as_json()
    assert data["endpoint"] == shown
    assert data["drops"] == {"stale": 1} and data["vaddr"] == 2


async def test_a_lone_error_leaves_the_block_unwrapped_with_its_own_context(
    setup: Setup, autojump_clock: trio.testing.MockClock
) -> None:
    class AppError(Exception):
        pass

    async def serve_and_fail() -> None:
        async with setup.server([1]):
            try:
                raise KeyError("what the handler was handling")
            except KeyError:
                raise AppError("raised while handling it") from None

    with trio.fail_after(30), pytest.raises(AppError) as info:
        await serve_and_fail()
    error = info.value
    assert not isinstance(error, BaseExceptionGroup)
    assert isinstance(error.__context__, KeyError)  # its own context, not the nursery's group
    assert error.__suppress_context__


async def test_unsendable_packets_are_counted_by_what_went_wrong(
    setup: Setup, autojump_clock: trio.testing.MockClock
) -> None:
    from trio_sudp.vpn.server import send_or_count

    with trio.fail_after(30):
        async with setup.server([1, 2]) as server, setup.client(1) as client:
            await client.send(b"connected")
            await server.receive()
            now = trio.current_time()
            send_or_count(server.runners[2], b"no session with 2", now)
            send_or_count(server.runners[1], bytes(4000), now)
            assert server.runners[2].drops == {"no_session": 1}
            assert server.runners[1].drops == {"too_big": 1}
