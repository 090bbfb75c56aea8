"""No lock-out by replay (issue: hostile load).

The attack, as it was seen against a live server: a real client's ClientHandshake is
captured; the client goes quiet and the server idle-expires it; the captured
handshake is replayed from another address. The server used to accept it: it moved
the client's endpoint to the attacker, answered it, fixed the clock offset from it,
and refused the real client's next handshake as "from the future" until that state
expired. Now nothing a replay does can move an endpoint or an offset, the replay is
refused, and the real client reconnects at once.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from pair import CLIENT_ADDR, Pair
from runtime_helpers import SERVER, Setup
from trio_sudp import SessionSettings, Version
from trio_sudp.protocol import ControlFlag, DropReason, Kind
from trio_sudp.protocol.wire import ControlMessage, decode_untrusted
from trio_sudp.testing import FakeNetwork, LinkConfig

VERSIONS = [Version.V2, Version.V3]
ATTACKER = ("203.0.113.66", 6666)


def kinds(datagrams: list[bytes]) -> list[Kind]:
    return [Kind(d[1]) for d in datagrams]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("session_length", [0.5, 40.0])
async def test_a_captured_handshake_replayed_after_expiry_locks_nobody_out(
    version: Version, session_length: float, autojump_clock: trio.testing.MockClock
) -> None:
    """The exact sequence: capture, expiry, replay from elsewhere, real reconnect.

    A short session: the replay comes while the server still remembers the
    handshake's signature. A long one: it does not any more, but the handshake is far
    older than what the client sent since.
    """
    net = FakeNetwork(seed=1, default_link=LinkConfig(delay=0.005))
    setup = Setup(net, version)
    capture = net.capture()
    with trio.fail_after(120):
        async with setup.server([1]) as server:
            async with setup.client(1) as client:
                await client.send(b"hello")
                await server.receive()
                await trio.sleep(session_length)
            hello = next(r.data for r in capture if r.data[1] == Kind.CLIENT_HANDSHAKE)
            # The client is gone: the server expires it 5 s after its last message.
            await trio.sleep(6.0)
            assert server.statistics()[1].state == "idle"
            capture.clear()
            net.inject(hello, src=ATTACKER, dst=SERVER)
            await trio.sleep(0.5)
            stats = server.statistics()[1]
            assert stats.drops.get("replay") == 1
            assert stats.endpoint is None
            assert server.core.sessions[1].offset_us is None
            assert [r for r in capture if r.dst[0] == ATTACKER[0]] == []  # no answer
            # The real client comes back and connects at once.
            started = trio.current_time()
            async with setup.client(1) as client:
                assert trio.current_time() - started < 0.1
                await client.send(b"back")
                assert await server.receive() == (1, b"back")


@pytest.mark.parametrize("version", VERSIONS)
def test_a_handshake_moves_neither_endpoint_nor_offset_the_epoch_ack_does(
    version: Version,
) -> None:
    pair = Pair(version)
    pair.client.connect(pair.now)
    pair.flush()
    (hello,) = pair.wire_c2s
    pair.deliver_to_server(hello, CLIENT_ADDR)
    server = pair.server
    assert server.epochs.pending is not None  # answered ...
    assert (server.endpoint, server.offset_us) == (None, None)  # ... and nothing moved
    pair.flush()
    pair.run_for(0.2)  # the ServerHandshake, then the client's EpochAck
    assert server.epochs.current is not None
    assert server.endpoint == CLIENT_ADDR
    assert server.offset_us is not None
    # A rekey from a new address: answered there, but the endpoint stays until the
    # EpochAck proves the new key.
    pair.client_addr = ("198.51.100.7", 50000)
    pair.lose_c2s = lambda d: d[1] == Kind.CONTROL
    pair.client.rekey(pair.now)
    pair.run_for(0.2)
    assert server.epochs.pending is not None
    assert server.endpoint == CLIENT_ADDR
    pair.lose_c2s = lambda d: False
    pair.run_for(1.0)  # the next KeepAlive in the new epoch promotes it
    assert server.epochs.pending is None
    assert server.endpoint == ("198.51.100.7", 50000)


@pytest.mark.parametrize("version", VERSIONS)
def test_signature_memory_and_newest_time_survive_an_expiry(version: Version) -> None:
    pair = Pair(version)
    pair.connect()
    pair.run_for(20.0)  # keepalives; the handshake's signature is long forgotten
    (hello,) = [d for d in pair.wire_c2s if d[1] == Kind.CLIENT_HANDSHAKE]
    keepalive = [d for d in pair.wire_c2s if d[1] == Kind.CONTROL][-1]
    pair.client.close()
    pair.run_for(6.0)
    server = pair.server
    assert server.epochs.current is None  # expired
    drops = server.stats.drops
    # The latest KeepAlive again: its signature is still remembered.
    pair.deliver_to_server(keepalive, ATTACKER)
    assert drops[DropReason.REPLAY] == 1
    # The first handshake again: signed, within the skew limit, but 20 s older than
    # the client's newest message.
    pair.deliver_to_server(hello, ATTACKER)
    assert drops[DropReason.REPLAY] == 2
    assert server.take_datagrams() == []
    assert (server.endpoint, server.epochs.pending) == (None, None)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_client_fixes_its_offset_only_from_the_server_handshake(version: Version) -> None:
    pair = Pair(version, client_skew=3.0)
    pair.connect()
    old_ack = [d for d in pair.wire_s2c if d[1] == Kind.CONTROL]
    pair.run_for(2.0)
    old_ack = [d for d in pair.wire_s2c if d[1] == Kind.CONTROL]
    assert old_ack
    # A new client (the old one restarted): a replayed KeepAliveAck of the old session
    # comes first, from the server's address. It verifies, yet fixes nothing.
    pair.client = pair.new_client()
    pair.client.connect(pair.now)
    pair.flush()
    pair.deliver_to_client(old_ack[0])
    assert pair.client.offset_us is None
    pair.run_for(0.5)  # the ServerHandshake does
    assert pair.client.offset_us == pytest.approx(3_000_000, abs=50_000)
    assert pair.client.state.value == "established"


@pytest.mark.parametrize("version", VERSIONS)
def test_unauthenticated_handshakes_get_only_unsigned_rate_limited_refusals(
    version: Version,
) -> None:
    pair = Pair(version)
    pair.client.connect(pair.now)
    pair.flush()
    hello = bytearray(pair.wire_c2s[0])
    hello[-50] ^= 1  # a bad signature
    for port in range(100):
        pair.deliver_to_server(bytes(hello), (ATTACKER[0], 20000 + port))
    refusals = [decode_untrusted(d) for d, _ in pair.server.take_datagrams()]
    budget = pair.core.budget.stats
    # The host's burst of verifications, each a bad signature; the rest not verified.
    assert (budget.verified_strangers, budget.refused_strangers) == (20, 80)
    assert len(refusals) == budget.refusals_sent == 10  # one small global budget
    assert budget.refusals_suppressed == 10
    for refusal in refusals:
        assert isinstance(refusal, ControlMessage)
        assert refusal.flags == ControlFlag.NO_SESSION
        assert refusal.signature == bytes(64)  # never signed


async def test_a_flood_of_bad_signatures_cannot_starve_a_known_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Well-formed handshakes with a bad signature from many sources, flat out: the
    strangers' budget runs dry, the established client's keepalives still verify."""
    net = FakeNetwork(seed=2, default_link=LinkConfig(delay=0.005), queue_size=100_000)
    setup = Setup(net, Version.V2, SessionSettings(keepalive_skip_after_data=False))
    capture = net.capture(limit=20)
    with trio.fail_after(120):
        async with setup.server([1]) as server, setup.client(1) as client:
            await client.send(b"connected")
            await server.receive()
            hello = bytearray(next(r.data for r in capture if r.data[1] == 1))
            hello[-50] ^= 1  # a bad signature (its r: not a replay of the real one)
            for second in range(10):
                for i in range(3000):  # 3000 a second, from 256 hosts
                    source = (f"198.18.{i % 256}.{second}", 1000 + i)
                    net.inject(bytes(hello), src=source, dst=SERVER, delay=i / 3000)
                await trio.sleep(1.0)
            stats = server.statistics()[1]
            assert stats.state == "established"
            budget = server.core.budget.stats
            # The strangers' global budget (1000 a second, a second's worth at once)
            # bounded what the flood cost; the rest was refused unverified.
            # Once the copies were older than the freshness window they were refused
            # as stale before any verification.
            drops = stats.drops
            assert drops["bad_signature"] + drops["rate_limited"] + drops["stale"] == 30_000
            assert budget.verified_strangers == drops["bad_signature"] + 1  # + the client's hello
            assert budget.verified_strangers <= 1000 + 1000 * 10
            assert drops["rate_limited"] == budget.refused_strangers > 0
            assert budget.verified_known >= 18  # 2 keepalives a second got through
            assert client.statistics().drops.get("no_session", 0) == 0
