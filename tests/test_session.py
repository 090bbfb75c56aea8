"""Two protocol-core state machines in memory, with fake time: SPEC §4, §6, §7."""

from __future__ import annotations

from typing import Any

import pytest

from pair import CLIENT_ADDR, CLIENT_VADDR, SERVER_ADDR, Pair
from trio_sudp.protocol import (
    NO_PEER,
    ClientSession,
    Connected,
    ControlFlag,
    DropReason,
    EphemeralKey,
    Expired,
    HandshakeFailed,
    HandshakeStarted,
    Kind,
    NotConnected,
    PayloadTooLarge,
    Rekeyed,
    Roamed,
    SessionLost,
    SessionSettings,
    SessionState,
    Version,
    max_payload,
)
from trio_sudp.protocol.wire import (
    ControlMessage,
    HandshakeMessage,
    decode_untrusted,
    encode_handshake,
)

VERSIONS = [Version.V2, Version.V3]


def kinds(datagrams: list[bytes]) -> list[Kind]:
    return [Kind(d[1]) for d in datagrams]


def control_flags(datagrams: list[bytes]) -> list[ControlFlag]:
    out = []
    for d in datagrams:
        msg = decode_untrusted(d)
        if isinstance(msg, ControlMessage):
            out.append(msg.flags)
    return out


def exchange(pair: Pair, count: int = 3) -> None:
    for i in range(count):
        pair.send_c2s(b"up %d" % i)
        pair.send_s2c(b"down %d" % i)
    pair.run_for(0.1)


@pytest.mark.parametrize("version", VERSIONS)
def test_connect_and_data_both_ways(version: Version) -> None:
    pair = Pair(version)
    assert pair.client.state is SessionState.IDLE
    pair.connect()
    assert pair.client.state is SessionState.ESTABLISHED
    assert pair.server.state is SessionState.ESTABLISHED
    assert kinds(pair.wire_c2s) == [Kind.CLIENT_HANDSHAKE, Kind.CONTROL]
    assert kinds(pair.wire_s2c) == [Kind.SERVER_HANDSHAKE]
    assert control_flags(pair.wire_c2s) == [ControlFlag.EPOCH_ACK]
    (connected,) = pair.events_of("client", Connected)
    assert pair.events_of("server", Connected) == [Connected(connected.epoch, CLIENT_ADDR)]
    assert pair.server.endpoint == CLIENT_ADDR
    exchange(pair, 5)
    assert pair.to_server == [b"up %d" % i for i in range(5)]
    assert pair.to_client == [b"down %d" % i for i in range(5)]
    # The wire sizes are the SPEC's: 20-byte header plus the version's data overhead.
    overhead = 52 if version == Version.V2 else 72
    assert len(pair.wire_c2s[-1]) == len(b"up 4") + overhead


@pytest.mark.parametrize("version", VERSIONS)
def test_largest_payload_a_go_peer_reads(version: Version) -> None:
    pair = Pair(version)
    pair.connect()
    limit = max_payload(version)
    assert limit == (1996 if version == Version.V2 else 1976)
    pair.send_c2s(bytes(limit))
    pair.run_for(0.1)
    assert pair.to_server == [bytes(limit)]
    assert len(pair.wire_c2s[-1]) == 2048
    with pytest.raises(PayloadTooLarge):
        pair.client.send(bytes(limit + 1), pair.now)


def test_send_before_connect_is_a_local_error() -> None:
    pair = Pair()
    with pytest.raises(NotConnected):
        pair.client.send(b"x", 0.0)
    with pytest.raises(NotConnected):
        pair.server.send(b"x", 0.0)


@pytest.mark.parametrize("version", VERSIONS)
def test_first_epoch_is_random(version: Version) -> None:
    epochs = set()
    for _ in range(8):
        pair = Pair(version)
        pair.connect()
        epochs.add(pair.client.epochs.current.epoch)  # type: ignore[union-attr]
    assert len(epochs) > 1


@pytest.mark.parametrize("version", VERSIONS)
def test_keepalives_every_half_second_acked_by_the_server(version: Version) -> None:
    pair = Pair(version)
    pair.connect()
    start = len(pair.wire_c2s)
    pair.run_for(5.0)
    sent = control_flags(pair.wire_c2s[start:])
    acks = control_flags(pair.wire_s2c)
    assert sent == [ControlFlag.KEEPALIVE] * 10
    assert acks.count(ControlFlag.KEEPALIVE_ACK) == 10
    assert pair.server.state is SessionState.ESTABLISHED


def test_keepalive_skipped_while_data_flows() -> None:
    pair = Pair()
    pair.connect()
    start = len(pair.wire_c2s)
    for _ in range(40):
        pair.send_c2s(b"data")
        pair.send_s2c(b"reply")
        pair.run_for(0.1)
    assert ControlFlag.KEEPALIVE not in control_flags(pair.wire_c2s[start:])
    pair.run_for(2.0)
    assert ControlFlag.KEEPALIVE in control_flags(pair.wire_c2s[start:])


@pytest.mark.parametrize("version", VERSIONS)
def test_one_hundred_rekeys(version: Version) -> None:
    settings = SessionSettings(rekey_interval=1.0)
    pair = Pair(version, settings=settings)
    pair.connect()
    first = pair.client.epochs.current.epoch  # type: ignore[union-attr]
    sent = 0
    for _ in range(300):
        if len(pair.events_of("client", Rekeyed)) == 100:
            break
        pair.send_c2s(b"%d" % sent)
        pair.send_s2c(b"%d" % sent)
        sent += 1
        pair.run_for(0.5)
    pair.run_for(0.1)
    assert len(pair.events_of("client", Rekeyed)) == 100
    assert len(pair.events_of("server", Rekeyed)) == 100
    assert pair.client.epochs.current.epoch == (first + 100) % 2**32  # type: ignore[union-attr]
    assert pair.server.epochs.current.epoch == pair.client.epochs.current.epoch  # type: ignore[union-attr]
    assert pair.to_server == pair.to_client == [b"%d" % i for i in range(sent)]
    assert not pair.client.stats.drops
    assert not pair.server.stats.drops


@pytest.mark.parametrize("version", VERSIONS)
def test_data_crossing_a_rekey_in_both_directions(version: Version) -> None:
    pair = Pair(version, latency=0.05)
    pair.connect()
    old = pair.client.epochs.current.epoch  # type: ignore[union-attr]
    pair.client.rekey(pair.now)
    pair.flush()
    # The ClientHandshake is in flight: data in the old epoch both ways.
    pair.send_c2s(b"old epoch up")
    pair.send_s2c(b"old epoch down")
    pair.run_for(0.06)  # server got the handshake, answered; data arrived
    assert pair.server.epochs.pending is not None
    pair.send_s2c(b"server still in old epoch")
    pair.run_for(0.045)  # client just promoted the new epoch
    assert pair.client.epochs.current.epoch == old + 1  # type: ignore[union-attr]
    pair.send_c2s(b"new epoch up")
    pair.run_for(0.2)
    assert pair.server.epochs.current.epoch == old + 1  # type: ignore[union-attr]
    pair.send_s2c(b"new epoch down")
    pair.run_for(0.2)
    assert pair.to_server == [b"old epoch up", b"new epoch up"]
    assert pair.to_client == [b"old epoch down", b"server still in old epoch", b"new epoch down"]
    assert not pair.client.stats.drops
    assert not pair.server.stats.drops


@pytest.mark.parametrize("version", VERSIONS)
def test_data_in_the_previous_epoch_still_accepted_after_promotion(version: Version) -> None:
    pair = Pair(version)
    pair.connect()
    late = pair.client.send(b"late", pair.now)
    pair.client.rekey(pair.now)
    pair.run_for(0.2)
    assert pair.server.epochs.previous is not None
    assert pair.deliver_to_server(late, CLIENT_ADDR) == b"late"


@pytest.mark.parametrize("version", VERSIONS)
def test_duplicate_and_reordered_handshakes(version: Version) -> None:
    pair = Pair(version, latency=0.02, seed=3)
    pair.duplicate = 1.0  # every datagram twice
    pair.jitter = 0.03  # and reordered
    pair.connect()
    pair.run_for(1.0)
    assert pair.client.state is SessionState.ESTABLISHED
    assert pair.server.state is SessionState.ESTABLISHED
    assert pair.server.epochs.current.epoch == pair.client.epochs.current.epoch  # type: ignore[union-attr]
    for i in range(20):
        pair.send_c2s(b"%d" % i)
        pair.send_s2c(b"%d" % i)
    pair.run_for(0.5)
    # Every payload delivered exactly once despite duplication and reordering.
    assert sorted(pair.to_server) == sorted(b"%d" % i for i in range(20))
    assert sorted(pair.to_client) == sorted(b"%d" % i for i in range(20))
    assert pair.server.stats.drops[DropReason.REPLAY] >= 20
    assert len(pair.events_of("client", Connected)) == 1
    assert len(pair.events_of("server", Connected)) == 1


def test_stale_duplicate_client_handshake_after_promotion_is_harmless() -> None:
    pair = Pair()
    pair.connect()
    first = pair.wire_c2s[0]
    # Replayed byte-for-byte: refused, nothing answered, nothing changed.
    pair.deliver_to_server(first, CLIENT_ADDR)
    pair.flush()
    assert pair.server.stats.drops[DropReason.REPLAY] == 1
    epoch = pair.server.epochs.current.epoch  # type: ignore[union-attr]
    exchange(pair)
    assert pair.server.epochs.current.epoch == epoch  # type: ignore[union-attr]
    assert len(pair.to_server) == 3


def test_handshake_retry_restamps_and_resigns_and_gets_the_same_server_key() -> None:
    pair = Pair(Version.V3)
    lost = [True, True]
    pair.lose_s2c = lambda d: d[1] == Kind.SERVER_HANDSHAKE and bool(lost) and lost.pop()
    pair.client.connect(pair.now)
    pair.run_for(5.0)
    hs = [d for d in pair.wire_c2s if d[1] == Kind.CLIENT_HANDSHAKE]
    assert len(hs) == 3  # first send, retries at 2 s and 4.5 s
    decoded = [decode_untrusted(d) for d in hs]
    assert all(isinstance(m, HandshakeMessage) for m in decoded)
    assert len({m.header.epoch for m in decoded}) == 1
    assert len({m.header.time for m in decoded}) == 3  # re-stamped
    assert len({m.signature for m in decoded}) == 3  # re-signed
    assert len({m.ephemeral_public for m in decoded}) == 1  # same ephemeral key
    answers = [decode_untrusted(d) for d in pair.wire_s2c if d[1] == Kind.SERVER_HANDSHAKE]
    assert len({m.ephemeral_public for m in answers}) == 1  # type: ignore[union-attr]
    assert pair.client.state is SessionState.ESTABLISHED


@pytest.mark.parametrize(
    ("version", "retries", "timeout"),
    [(Version.V2, [2.5, 4.5, 7.0], 9.0), (Version.V3, [2.0, 4.5, 7.0, 9.0], 11.5)],
)
def test_go_retry_schedule_and_failure_reason(
    version: Version, retries: list[float], timeout: float
) -> None:
    pair = Pair(version, settings=SessionSettings(reconnect=False))
    pair.server_down = True
    times: list[float] = []
    pair.lose_c2s = lambda d: times.append(pair.now) or False  # type: ignore[func-returns-value]
    pair.client.connect(pair.now)
    pair.run_for(30.0)
    assert times == pytest.approx([0.0, *retries])
    (failed,) = pair.events_of("client", HandshakeFailed)
    assert failed.reason == "no answer from the server"
    assert pair.client.state is SessionState.FAILED
    assert pair.client.next_deadline() == float("inf")
    assert [e.reason for e in pair.events_of("client", HandshakeStarted)] == ["connect"]
    (failed_at,) = pair.times_of("client", HandshakeFailed)
    assert failed_at == pytest.approx(timeout)


def test_reconnects_after_failed_attempts_with_fresh_epochs() -> None:
    pair = Pair(Version.V3)
    pair.server_down = True
    pair.client.connect(pair.now)
    pair.run_for(30.0)
    started = pair.events_of("client", HandshakeStarted)
    assert len(started) >= 2
    epochs = [e.epoch for e in started]
    assert epochs == [(epochs[0] + i) % 2**32 for i in range(len(epochs))]
    pair.server_down = False
    pair.run_for(15.0)
    assert pair.client.state is SessionState.ESTABLISHED
    exchange(pair)
    assert len(pair.to_server) == 3


@pytest.mark.parametrize("version", VERSIONS)
def test_lost_epoch_ack_promoted_by_the_next_keepalive(version: Version) -> None:
    pair = Pair(version)
    pair.lose_c2s = lambda d: d[1] == Kind.CONTROL and control_flags([d]) == [ControlFlag.EPOCH_ACK]
    pair.connect()
    assert pair.server.state is SessionState.HANDSHAKING
    pair.run_for(0.6)  # first KeepAlive carries the epoch
    assert pair.server.state is SessionState.ESTABLISHED
    exchange(pair)
    assert len(pair.to_client) == 3


def test_lost_epoch_ack_promoted_by_data() -> None:
    pair = Pair()
    pair.lose_c2s = lambda d: control_flags([d]) == [ControlFlag.EPOCH_ACK]
    pair.connect()
    pair.send_c2s(b"promotes")
    pair.run_for(0.05)
    assert pair.server.state is SessionState.ESTABLISHED
    assert pair.to_server == [b"promotes"]


@pytest.mark.parametrize("version", VERSIONS)
def test_idle_client_expires_then_reconnects(version: Version) -> None:
    pair = Pair(version)
    pair.connect()
    pair.client.close()  # a stopped client just goes quiet
    pair.run_for(5.5)
    (expired,) = pair.events_of("server", Expired)
    assert expired.idle_for >= 5.0
    assert pair.server.state is SessionState.IDLE
    assert pair.server.endpoint is None
    assert pair.server.offset_us is None
    pair.client = pair.new_client()
    pair.connect()
    exchange(pair)
    assert len(pair.to_server) == 3
    assert len(pair.to_client) == 3


def test_v2_stale_epoch_trap() -> None:
    """A reconnect whose epoch equals the server's stale previous epoch keeps its new key."""
    first_epochs = iter([41, 41])
    pair = Pair(Version.V2, first_epoch=lambda: next(first_epochs))
    pair.connect()
    pair.client.rekey(pair.now)
    pair.run_for(0.2)
    # Server holds previous 41 and current 42; a restarted client comes back at 41.
    assert pair.server.epochs.previous.epoch == 41  # type: ignore[union-attr]
    assert pair.server.epochs.current.epoch == 42  # type: ignore[union-attr]
    pair.client = pair.new_client(lambda: next(first_epochs))
    pair.client_addr = ("198.51.100.7", 40001)
    pair.connect()
    assert pair.client.epochs.current.epoch == 41  # type: ignore[union-attr]
    exchange(pair)
    assert pair.to_server == [b"up 0", b"up 1", b"up 2"]
    assert pair.to_client == [b"down 0", b"down 1", b"down 2"]


def test_client_silent_beyond_expiry_recovers() -> None:
    pair = Pair()
    pair.connect()
    pair.lose_c2s = lambda _d: True  # the client's traffic stops reaching the server
    pair.run_for(6.0)
    assert pair.events_of("server", Expired)
    pair.lose_c2s = lambda _d: False
    pair.run_for(3.0)
    exchange(pair)
    assert len(pair.to_server) == 3
    assert len(pair.to_client) == 3


@pytest.mark.parametrize("version", VERSIONS)
def test_replayed_data_refused(version: Version) -> None:
    pair = Pair(version)
    pair.connect()
    pair.send_c2s(b"once")
    pair.run_for(0.1)
    datagram = pair.wire_c2s[-1]
    assert pair.deliver_to_server(datagram, CLIENT_ADDR) is None
    assert pair.deliver_to_server(datagram, ("203.0.113.66", 1234)) is None
    assert pair.to_server == [b"once"]
    assert pair.server.stats.drops[DropReason.REPLAY] == 2
    assert pair.server.endpoint == CLIENT_ADDR  # a replay moves nothing
    # Old data, replayed after its key is gone, names an unknown epoch.
    for _ in range(3):
        pair.client.rekey(pair.now)
        pair.run_for(0.2)
    assert pair.deliver_to_server(datagram, CLIENT_ADDR) is None
    assert pair.server.stats.drops[DropReason.UNKNOWN_EPOCH] == 1


def test_replayed_control_cannot_move_the_endpoint() -> None:
    pair = Pair()
    pair.connect()
    pair.run_for(0.6)
    keepalive = pair.wire_c2s[-1]
    assert control_flags([keepalive]) == [ControlFlag.KEEPALIVE]
    pair.deliver_to_server(keepalive, ("203.0.113.66", 1234))
    pair.flush()
    assert pair.server.endpoint == CLIENT_ADDR
    assert pair.server.stats.drops[DropReason.REPLAY] == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_roaming_follows_authenticated_messages_only(version: Version) -> None:
    pair = Pair(version)
    pair.connect()
    # Garbage and forged datagrams from elsewhere move nothing.
    intruder = ("203.0.113.66", 999)
    forged = bytearray(pair.client.send(b"x", pair.now))
    forged[-1] ^= 1
    pair.deliver_to_server(bytes(forged), intruder)
    pair.deliver_to_server(b"\x03\x04" + bytes(60), intruder)
    assert pair.server.endpoint == CLIENT_ADDR
    # NAT rebinding: the next authenticated message comes from a new address.
    pair.client_addr = ("198.51.100.7", 50000)
    pair.send_c2s(b"after rebinding")
    pair.run_for(0.1)
    assert pair.server.endpoint == ("198.51.100.7", 50000)
    assert pair.events_of("server", Roamed) == [Roamed(CLIENT_ADDR, ("198.51.100.7", 50000))]
    assert pair.server.stats.endpoint_changes == 1
    pair.send_s2c(b"follows")
    pair.run_for(0.1)
    assert pair.to_client == [b"follows"]


def test_client_drops_datagrams_not_from_its_server() -> None:
    pair = Pair()
    pair.connect()
    datagram = pair.server.send(b"hi", pair.now)
    assert pair.client.receive(datagram, ("203.0.113.66", 7000), pair.now) is None
    assert pair.client.stats.drops[DropReason.WRONG_SOURCE] == 1
    assert pair.client.receive(datagram, SERVER_ADDR, pair.now) == b"hi"


@pytest.mark.parametrize("version", VERSIONS)
def test_clock_skew_of_nine_seconds_is_fine(version: Version) -> None:
    pair = Pair(version, client_skew=9.0)
    pair.connect()
    assert pair.client.state is SessionState.ESTABLISHED
    exchange(pair)
    pair.run_for(35.0)  # keepalives and a rekey under the same offset
    exchange(pair)
    assert len(pair.to_server) == 6
    assert len(pair.to_client) == 6
    assert pair.server.offset_us == pytest.approx(-9_000_000, abs=50_000)


@pytest.mark.parametrize(("version", "skew"), [(Version.V2, 11.0), (Version.V3, -11.0)])
def test_clock_skew_of_eleven_seconds_is_refused_clearly(version: Version, skew: float) -> None:
    pair = Pair(version, client_skew=skew, settings=SessionSettings(reconnect=False))
    pair.connect()
    assert pair.client.state is SessionState.FAILED
    assert pair.server.stats.drops[DropReason.CLOCK_SKEW] == 1
    (failed,) = pair.events_of("client", HandshakeFailed)
    assert failed.reason.startswith("clock skew: peer clock differs from ours by")
    assert f"{-skew:+.1f} s" in failed.reason
    assert "limit ±10 s" in failed.reason


def test_wrong_server_key_reported_as_key_mismatch() -> None:
    from trio_sudp.protocol import Peer, PrivateKey

    pair = Pair(settings=SessionSettings(reconnect=False))
    wrong = Peer(0, PrivateKey.generate().public_key, Version.V3, pair.server_peer.shared_key)
    pair.server_peer = wrong
    pair.client = pair.new_client()
    pair.client.connect(pair.now)
    pair.run_for(15.0)
    (failed,) = pair.events_of("client", HandshakeFailed)
    assert "wrong server public key" in failed.reason


def test_server_not_knowing_our_key_refuses_clearly() -> None:
    from trio_sudp.protocol import LocalIdentity, PrivateKey

    pair = Pair(settings=SessionSettings(reconnect=False))
    pair.client = ClientSession(
        local=LocalIdentity(7, PrivateKey.generate()),
        server=pair.server_peer,
        server_address=SERVER_ADDR,
        settings=pair.client_settings,
        clock=pair.client_clock,
    )
    pair.connect()
    pair.run_for(15.0)
    (failed,) = pair.events_of("client", HandshakeFailed)
    assert failed.reason.startswith("no answer from the server; last problem:")
    assert "key mismatch" in failed.reason
    sent = len(pair.wire_c2s)  # the first ClientHandshake and its resends
    assert sent == 5
    assert pair.server.stats.drops[DropReason.BAD_SIGNATURE] == sent
    # Never a signed answer to an unauthenticated request: only unsigned refusals.
    refusals = [decode_untrusted(d) for d in pair.wire_s2c]
    assert len(refusals) == sent
    for refusal in refusals:
        assert isinstance(refusal, ControlMessage)
        assert refusal.flags == ControlFlag.NO_SESSION
        assert refusal.signature == bytes(64)


def test_wrong_shared_key_refused_clearly() -> None:
    from trio_sudp.protocol import Peer

    pair = Pair(Version.V3, settings=SessionSettings(reconnect=False))
    pair.server_peer = Peer(0, pair.server_key.public_key, Version.V3, b"another key")
    pair.client = pair.new_client()
    pair.connect()
    (failed,) = pair.events_of("client", HandshakeFailed)
    assert "shared key" in failed.reason
    assert pair.server.stats.drops[DropReason.HEADER_TAG_MISMATCH] == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_server_restart_detected_by_no_session_hint_within_3_seconds(version: Version) -> None:
    pair = Pair(version)
    pair.connect()
    exchange(pair)
    pair.restart_server()
    lost_at = pair.now
    delivered = len(pair.to_server)
    for _ in range(30):
        pair.send_c2s(b"tick")
        pair.run_for(0.1)
        if len(pair.to_server) > delivered:
            break
    assert len(pair.to_server) > delivered
    assert pair.now - lost_at <= 3.0
    (lost,) = pair.events_of("client", SessionLost)
    assert "no session" in lost.reason


@pytest.mark.parametrize("version", VERSIONS)
def test_go_like_server_restart_detected_by_silence_rule(
    version: Version, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarted Go server acks KeepAlives without any hint: the silence rule recovers."""
    pair = Pair(version)
    pair.connect()
    pair.restart_server()
    # Make the new server behave like Go: strip nothing, but hide the hint by answering
    # KeepAlives for unknown epochs as Go does (plain KeepAliveAck).
    go_like_acks(pair, monkeypatch)
    lost_at = pair.now
    delivered = len(pair.to_server)
    for _ in range(40):
        pair.send_c2s(b"tick")
        pair.run_for(0.1)
        if len(pair.to_server) > delivered:
            break
    assert pair.now - lost_at <= 3.0
    assert any("no reply" in e.reason for e in pair.events_of("client", SessionLost))


def go_like_acks(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """Patch the server session so that it never sets the NoSession hint (as Go)."""
    session = pair.server
    cls = type(session)
    original = cls._control

    def control(self: Any, epoch: int, flags: ControlFlag, address: object, data: int = 0) -> None:
        if self is session:
            flags &= ~ControlFlag.NO_SESSION
        original(self, epoch, flags, address, data)

    monkeypatch.setattr(cls, "_control", control)


def test_rekey_every_30_seconds_by_default() -> None:
    pair = Pair()
    pair.connect()
    pair.run_for(95.0)
    assert len(pair.events_of("client", Rekeyed)) == 3
    assert len(pair.events_of("server", Rekeyed)) == 3


def test_unknown_peer_and_rate_limit_counted_by_the_server_core() -> None:
    pair = Pair(handshake_rate=1.0)
    pair.client.connect(pair.now)
    pair.flush()
    handshake = pair.wire_c2s[0]
    forged_src = handshake[:4] + b"\x00\x63" + handshake[6:]
    assert pair.core.route(forged_src, CLIENT_ADDR, pair.now) == NO_PEER
    assert pair.core.drops[DropReason.UNKNOWN_PEER] == 1
    # 40 distinct, well-signed handshakes from ports of one host that is no client's
    # endpoint: the host's burst of 20 gets past the door and is verified; the rest
    # are refused at the door, before anything is parsed.
    hellos = [signed_hello(pair, epoch) for epoch in range(100, 140)]
    routed = []
    for port, hello in enumerate(hellos, 40000):
        source = (CLIENT_ADDR[0], port)
        vaddr = pair.core.route(hello, source, pair.now)
        routed.append(vaddr)
        if vaddr == CLIENT_VADDR:
            assert pair.server.receive(hello, source, pair.now) is None
    assert routed == [CLIENT_VADDR] * 20 + [NO_PEER] * 20
    assert pair.core.drops[DropReason.RATE_LIMITED] == 20
    assert DropReason.RATE_LIMITED not in pair.server.stats.drops
    budget = pair.core.budget.stats
    assert (budget.verified_strangers, budget.refused_strangers) == (20, 20)
    # Another source host has its own bucket.
    other = ("198.51.100.99", 1)
    assert pair.core.route(signed_hello(pair, 200), other, pair.now) == CLIENT_VADDR


def test_a_clients_own_endpoint_is_never_held_at_the_door() -> None:
    pair = Pair(handshake_rate=1.0)
    pair.connect()
    for port in range(40000, 40100):  # its host's bucket, from other ports, runs dry
        pair.core.route(signed_hello(pair, port), (CLIENT_ADDR[0], port), pair.now)
    assert pair.core.drops[DropReason.RATE_LIMITED] == 80
    for epoch in range(300, 330):
        assert pair.core.route(signed_hello(pair, epoch), CLIENT_ADDR, pair.now) == CLIENT_VADDR
    pair.client.rekey(pair.now)
    pair.run_for(1.0)
    assert pair.server.state.value == "established"
    assert pair.server.stats.handshakes == 2


def signed_hello(pair: Pair, epoch: int) -> bytes:
    """A ClientHandshake of the pair's client for ``epoch``, signed afresh."""
    return encode_handshake(
        pair.version,
        Kind.CLIENT_HANDSHAKE,
        src=CLIENT_VADDR,
        dst=0,
        epoch=epoch,
        time=pair.client_clock.now_us() // (1000 if pair.version == Version.V2 else 1),
        ephemeral_public=EphemeralKey.generate().public_bytes,
        tagger=pair.client_peer.tagger,
        signer=pair.client_key,
    )


def test_previous_key_dropped_once_its_data_cannot_be_fresh() -> None:
    pair = Pair(settings=SessionSettings(previous_key_lifetime=10.0))
    pair.connect()
    late = pair.client.send(b"late", pair.now)
    pair.client.rekey(pair.now)
    pair.run_for(0.2)
    assert pair.server.epochs.previous is not None
    assert pair.client.epochs.previous is not None
    pair.run_for(9.0)
    assert pair.server.epochs.previous is not None  # still crossing: kept
    pair.run_for(1.5)
    assert pair.server.epochs.previous is None
    assert pair.client.epochs.previous is None
    assert pair.deliver_to_server(late, CLIENT_ADDR) is None
    assert pair.server.stats.drops[DropReason.UNKNOWN_EPOCH] == 1
    exchange(pair)
    assert len(pair.to_server) == 3


def test_signature_memory_stays_small_on_an_idle_session() -> None:
    pair = Pair()
    pair.connect()
    pair.run_for(300.0)  # 600 keepalives, 10 rekeys
    memory = pair.server._signatures._entries
    assert len(memory) <= 25  # ~ the last 10 s of signed messages, not all of them
    assert pair.server.stats.drops[DropReason.REPLAY] == 0
