"""``Session.receive_many`` does what ``receive`` does, datagram by datagram.

Two server sessions are given the same keys (the ephemeral ECDH key is pinned), then
the same stream of datagrams: one takes them one at a time with ``receive``, the
other in batches with ``receive_many``. Payloads, drops, events, counters, replies and
state must match after every batch. The stream mixes data, duplicates, corrupt and
truncated datagrams, signed Control, roaming, old and future times, and rekeys whose
new epoch is promoted by data.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_sudp.protocol import (
    ClientSession,
    ControlFlag,
    DropReason,
    EphemeralKey,
    Kind,
    LocalIdentity,
    ManualClock,
    Peer,
    PrivateKey,
    ServerPeerSession,
    Version,
)
from trio_sudp.protocol.wire import encode_control

SERVER_ADDR = ("192.0.2.1", 7000)
CLIENT_ADDR = ("198.51.100.7", 40000)
ROAMED_ADDR = ("203.0.113.9", 50000)
BASE_US = 1_795_571_950_000_000
SERVER_KEY, CLIENT_KEY = PrivateKey.generate(), PrivateKey.generate()
EPHEMERAL_SCALAR = 0x1234_5678_9ABC_DEF0_1122_3344_5566_7788


def observe(session: ServerPeerSession) -> dict[str, Any]:
    epochs = session.epochs
    return {
        "events": session.take_events(),
        "replies": [(d[:2], len(d), a) for d, a in session.take_datagrams()],
        "stats": session.stats,
        "endpoint": session.endpoint,
        "offset": session.offset_us,
        "last": session.last_received_at,
        "epochs": [
            k.epoch if k else None for k in (epochs.previous, epochs.current, epochs.pending)
        ],
    }


class Twins:
    """A client and two servers: ``one`` is fed one datagram at a time, ``many`` batches.

    A third server, ``gen``, answers the client's handshakes while the stream is built;
    the ephemeral key is pinned, so ``one`` and ``many`` derive the same keys from the
    recorded ClientHandshakes.
    """

    def __init__(self, version: Version) -> None:
        shared = b"twins shared key" if version == Version.V3 else None
        self.version = version
        self.clock = ManualClock(BASE_US)
        self.client = ClientSession(
            local=LocalIdentity(1, CLIENT_KEY),
            server=Peer(0, SERVER_KEY.public_key, version, shared),
            server_address=SERVER_ADDR,
            clock=self.clock,
        )
        client_peer = Peer(1, CLIENT_KEY.public_key, version, shared)
        self.gen, self.one, self.many = (
            ServerPeerSession(
                local=LocalIdentity(0, SERVER_KEY), client=client_peer, clock=self.clock
            )
            for _ in range(3)
        )
        self.now = 0.0
        self.sent: list[bytes] = []
        self.batches: list[tuple[float, int, bool, list[tuple[bytes, Any]]]] = []
        self.address = CLIENT_ADDR
        self.client.connect(self.now)
        hello = [(d, CLIENT_ADDR) for d in self.handshake()]
        self.batches.append((self.now, self.clock.us, False, hello))

    def handshake(self) -> list[bytes]:
        """The client's ClientHandshake, answered by ``gen``, and its EpochAck.

        Without the EpochAck when ``gen`` refused the handshake (the wall clock went
        back further than the freshness window since the client's newest message).
        """
        (hello,) = [d for d, _ in self.client.take_datagrams()]
        self.gen.receive(hello, self.address, self.now)
        for datagram, _ in self.gen.take_datagrams():
            self.client.receive(datagram, SERVER_ADDR, self.now)
        return [hello, *(d for d, _ in self.client.take_datagrams())]

    def data(self, size: int) -> bytes:
        datagram = self.client.send(bytes([size % 256]) * size, self.now)
        self.sent.append(datagram)
        return datagram

    def keepalive(self) -> bytes:
        key = self.client.epochs.current
        assert key is not None
        return encode_control(
            self.version,
            src=1,
            dst=0,
            epoch=key.epoch,
            time=self.clock.us // (1000 if self.version == Version.V2 else 1),
            flags=ControlFlag.KEEPALIVE,
            tagger=self.client.peer.tagger,
            signer=CLIENT_KEY,
        )


#: Wall clock steps between batches: some land exactly on the freshness limits (5 s
#: either way) or one timestamp unit beyond them.
STEPS = st.sampled_from([0.001, 0.5, 3.0, 5.0, 5.000001, 5.001, 6.0, -1.0, -5.0, -5.000001, -5.001])
ACTIONS = ["data", "data", "data", "lost", "old", "flip", "cut", "junk", "ctl", "roam", "rekey"]


def build(twins: Twins, draw: st.DrawFn) -> None:
    """Draw a stream of batches; the wall clock stands still within a batch."""
    for _ in range(draw(st.integers(1, 6))):
        twins.now += 1.0
        twins.clock.advance(draw(STEPS))
        batch: list[bytes] = []
        for _ in range(draw(st.integers(0, 12))):
            action = draw(st.sampled_from(ACTIONS))
            if action == "data":
                batch.append(twins.data(draw(st.integers(0, 1400))))
            elif action == "lost":  # it may come later, as "old"
                twins.data(draw(st.integers(0, 1400)))
            elif action == "old" and twins.sent:
                batch.append(draw(st.sampled_from(twins.sent[-8:])))
            elif action == "flip" and twins.sent:
                corrupt = bytearray(draw(st.sampled_from(twins.sent)))
                corrupt[draw(st.integers(0, len(corrupt) - 1))] ^= draw(st.integers(1, 255))
                batch.append(bytes(corrupt))
            elif action == "cut" and twins.sent:
                whole = draw(st.sampled_from(twins.sent))
                batch.append(whole[: draw(st.integers(0, len(whole) - 1))])
            elif action == "junk":
                batch.append(draw(st.binary(max_size=80)))
            elif action == "ctl":
                batch.append(twins.keepalive())
            elif action == "roam":
                twins.address = ROAMED_ADDR if twins.address == CLIENT_ADDR else CLIENT_ADDR
            elif action == "rekey" and twins.client.handshake_in_flight is False:
                twins.client.rekey(twins.now)
                hello, *ack = twins.handshake()
                # Without its EpochAck, the new epoch is promoted by the data after it.
                batch += [hello, *ack] if draw(st.booleans()) else [hello]
            twins.client.take_datagrams()
        # Sometimes the servers learn the client's clock afresh from this batch.
        relearn = draw(st.booleans())
        stream = [(d, twins.address) for d in batch]
        twins.batches.append((twins.now, twins.clock.us, relearn, stream))


@pytest.fixture(autouse=True)
def pinned_ephemeral(monkeypatch: pytest.MonkeyPatch) -> None:
    def generate() -> EphemeralKey:
        return EphemeralKey.from_scalar(EPHEMERAL_SCALAR)

    monkeypatch.setattr(EphemeralKey, "generate", generate)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([Version.V2, Version.V3]), st.data())
def test_receive_many_matches_receive(version: Version, data: st.DataObject) -> None:
    twins = Twins(version)
    build(twins, data.draw)
    # Replay the stream: each server alone, the clock where it was for each batch.
    for now, wall_us, relearn, batch in twins.batches:
        twins.clock.us = wall_us
        if relearn:
            twins.one.offset_us = twins.many.offset_us = None
        one = [p for d, a in batch if (p := twins.one.receive(d, a, now)) is not None]
        many = twins.many.receive_many(batch, now)
        assert many == one
        assert observe(twins.many) == observe(twins.one)


def test_receive_many_on_a_client_checks_the_source() -> None:
    twins = Twins(Version.V3)
    for datagram, address in twins.batches[0][3]:  # ClientHandshake and EpochAck
        twins.one.receive(datagram, address, 0.0)
    down = [twins.one.send(b"down %d" % i, 0.0) for i in range(3)]
    batch = [(down[0], SERVER_ADDR), (down[1], ROAMED_ADDR), (down[2], SERVER_ADDR)]
    assert twins.client.receive_many(batch, 0.0) == [b"down 0", b"down 2"]
    assert twins.client.stats.drops == {DropReason.WRONG_SOURCE: 1}
    assert twins.client.stats.rx_packets == 1 + 2  # the ServerHandshake and two data
    assert twins.client.receive_many([(down[0], SERVER_ADDR)], 0.0) == []
    assert Kind(down[0][1]) == Kind.DATA


@pytest.mark.parametrize("version", [Version.V2, Version.V3])
def test_freshness_limits_and_late_counters_are_the_same_both_ways(version: Version) -> None:
    twins = Twins(version)
    for datagram, address in twins.batches[0][3]:
        twins.one.receive(datagram, address, 0.0)
        twins.many.receive(datagram, address, 0.0)
    assert twins.one.offset_us == twins.many.offset_us == 0
    sent_at = twins.clock.us
    lost, *rest = (twins.data(100 + i) for i in range(6))
    expected = [
        (5_000_000, True),  # exactly as old as allowed
        (5_000_001, False),  # one microsecond older: stale
        (-5_000_000, True),  # exactly as far in the future as allowed
        (-5_000_001, False),  # beyond it
    ]
    for (age_us, accepted), datagram in zip(expected, rest, strict=False):
        twins.clock.us = sent_at + age_us
        one = twins.one.receive(datagram, CLIENT_ADDR, 1.0)
        assert twins.many.receive_many([(datagram, CLIENT_ADDR)], 1.0) == [one] * (one is not None)
        assert (one is not None) is accepted
        assert observe(twins.many) == observe(twins.one)
    # A counter that was skipped is accepted once when it comes late, then refused.
    twins.clock.us = sent_at
    for batch in ([(rest[-1], CLIENT_ADDR), (lost, CLIENT_ADDR)], [(lost, CLIENT_ADDR)]):
        one = [p for d, a in batch if (p := twins.one.receive(d, a, 2.0)) is not None]
        assert twins.many.receive_many(batch, 2.0) == one
        assert observe(twins.many) == observe(twins.one)
    assert twins.one.stats.drops[DropReason.REPLAY] == 1
