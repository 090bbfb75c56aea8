"""Our state machines replay the Go peers' real sessions (../shared/vectors).

The ephemeral keys of the recorded sessions are known, so our server and client can be
made to pick the same ones: then every message they answer with must carry the same
points the Go peer sent, verify, and every message from the Go peer must be accepted.
The invalid vectors go through the sessions' receive path and must be dropped for the
reason the vector states.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from trio_sudp.protocol import (
    ClientSession,
    Connected,
    ControlFlag,
    DropReason,
    EphemeralKey,
    Kind,
    LocalIdentity,
    ManualClock,
    Peer,
    PrivateKey,
    Rekeyed,
    ServerCore,
    Session,
    SessionState,
    Version,
)
from trio_sudp.protocol.wire import (
    ControlMessage,
    HandshakeMessage,
    decode_untrusted,
    verify_signed,
)
from vectors import h, hmac_key, load

SERVER_ADDR = ("127.0.0.1", 17100)
CLIENT_ADDR = ("127.0.0.1", 40000)
VERSIONS = [2, 3]


class Setup:
    def __init__(self, version: int, monkeypatch: pytest.MonkeyPatch) -> None:
        self.data = load(version)
        self.version = Version(version)
        self.unit = 1000 if version == 2 else 1
        keys = self.data["static_keys"]
        self.server_key = PrivateKey.from_pem(keys["server"]["private_pem"])
        self.client_key = PrivateKey.from_pem(keys["client"]["private_pem"])
        self.shared = hmac_key(version)
        self.clock = ManualClock(self.data["reference_time"] * self.unit)
        self.epochs = sorted(self.data["epochs"].values(), key=lambda e: e["epoch"])
        self._ephemerals: list[EphemeralKey] = []
        self.events: list[Any] = []
        _SEEN_DROPS.clear()
        self._real_generate = EphemeralKey.generate
        monkeypatch.setattr(EphemeralKey, "generate", self._next_ephemeral)

    def _next_ephemeral(self) -> EphemeralKey:
        return self._ephemerals.pop(0) if self._ephemerals else self._real_generate()

    def will_generate(self, scalar_hex: str) -> None:
        self._ephemerals.append(EphemeralKey.from_scalar(int(scalar_hex, 16)))

    def at(self, message: dict[str, Any]) -> None:
        self.clock.us = message["header"]["time"] * self.unit + 300

    def message(self, name: str) -> dict[str, Any]:
        msg: dict[str, Any] = self.data["messages"][name]
        return msg

    def server(self) -> ServerCore:
        client = Peer(1000, self.client_key.public_key, self.version, self.shared)
        return ServerCore(LocalIdentity(0, self.server_key), [client], clock=self.clock)

    def client(self) -> ClientSession:
        server = Peer(0, self.server_key.public_key, self.version, self.shared)
        first = self.epochs[0]["epoch"]
        return ClientSession(
            local=LocalIdentity(1000, self.client_key),
            server=server,
            server_address=SERVER_ADDR,
            clock=self.clock,
            first_epoch=lambda: first,
        )

    def tagger(self) -> Any:
        return Peer(0, self.server_key.public_key, self.version, self.shared).tagger


#: What ``drops`` last saw of each session's drop counters, by ``id(session)``.
_SEEN_DROPS: dict[int, Counter[DropReason]] = {}


def drops(session: Session, keep: list[Any] | None = None) -> list[DropReason]:
    """The reasons of the datagrams the session dropped since the last call."""
    events = session.take_events()
    if keep is not None:
        keep += events
    now = Counter(session.stats.drops)
    new = now - _SEEN_DROPS.get(id(session), Counter())
    _SEEN_DROPS[id(session)] = now
    return sorted(new.elements(), key=lambda r: r.value)


def sent(session: Session) -> list[Any]:
    return [decode_untrusted(d) for d, _ in session.take_datagrams()]


def feed_server(setup: Setup, core: ServerCore, name: str, now: float = 1.0) -> Any:
    msg = setup.message(name)
    setup.at(msg)
    datagram = h(msg["datagram"])
    vaddr = core.route(datagram, CLIENT_ADDR, now)
    session = core.sessions[vaddr]
    payload = session.receive(datagram, CLIENT_ADDR, now)
    assert drops(session, setup.events) == [], name
    return payload


@pytest.mark.parametrize("version", VERSIONS)
def test_our_server_answers_the_go_client_session(
    version: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = Setup(version, monkeypatch)
    core = setup.server()
    session = core.sessions[1000]
    for epoch in setup.epochs:
        setup.will_generate(epoch["server_ephemeral_private_scalar"])

    feed_server(setup, core, "client_handshake")
    (answer,) = sent(session)
    go_answer = setup.message("server_handshake")
    assert isinstance(answer, HandshakeMessage)
    assert answer.header.kind == Kind.SERVER_HANDSHAKE
    assert answer.ephemeral_public == h(go_answer["body"]["ephemeral_public"])
    assert (answer.header.src, answer.header.dst, answer.header.epoch) == (
        0,
        1000,
        setup.epochs[0]["epoch"],
    )
    assert verify_signed(answer, setup.tagger(), setup.server_key.public_key) is None

    feed_server(setup, core, "epoch_ack")
    assert session.state is SessionState.ESTABLISHED
    assert any(isinstance(e, Connected) for e in setup.events)
    feed_server(setup, core, "keepalive")
    (ack,) = sent(session)
    assert isinstance(ack, ControlMessage)
    assert ack.flags == ControlFlag.KEEPALIVE_ACK
    assert verify_signed(ack, setup.tagger(), setup.server_key.public_key) is None

    for name in ("data_hello", "data_empty", "data_icmp_echo_request", "data_1400"):
        assert feed_server(setup, core, name) == h(setup.message(name)["payload"])

    feed_server(setup, core, "rekey_client_handshake")
    (rekey_answer,) = sent(session)
    assert rekey_answer.ephemeral_public == h(
        setup.message("rekey_server_handshake")["body"]["ephemeral_public"]
    )
    feed_server(setup, core, "rekey_epoch_ack")
    assert any(isinstance(e, Rekeyed) for e in setup.events)
    assert feed_server(setup, core, "data_after_rekey") == h(
        setup.message("data_after_rekey")["payload"]
    )
    if version == 3:
        # A KeepAlive in the previous epoch whose s field starts with a zero byte.
        feed_server(setup, core, "keepalive_short_signature_field")
        (ack,) = sent(session)
        assert ack.flags == ControlFlag.KEEPALIVE_ACK


@pytest.mark.parametrize("version", VERSIONS)
def test_our_client_talks_to_the_go_server_session(
    version: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = Setup(version, monkeypatch)
    client = setup.client()
    for epoch in setup.epochs:
        setup.will_generate(epoch["client_ephemeral_private_scalar"])

    setup.at(setup.message("client_handshake"))
    client.connect(0.0)
    (hello,) = sent(client)
    assert isinstance(hello, HandshakeMessage)
    assert hello.ephemeral_public == h(
        setup.message("client_handshake")["body"]["ephemeral_public"]
    )
    assert hello.header.epoch == setup.epochs[0]["epoch"]
    assert verify_signed(hello, setup.tagger(), setup.client_key.public_key) is None

    def feed(name: str) -> bytes | None:
        msg = setup.message(name)
        setup.at(msg)
        payload = client.receive(h(msg["datagram"]), SERVER_ADDR, 0.1)
        assert drops(client) == [], name
        return payload

    feed("server_handshake")
    assert client.state is SessionState.ESTABLISHED
    (ack,) = sent(client)
    assert isinstance(ack, ControlMessage)
    assert ack.flags == ControlFlag.EPOCH_ACK
    feed("keepalive_ack")
    assert feed("data_s2c_hello") == b"hello"
    assert feed("data_s2c_icmp_echo_reply") == h(
        setup.message("data_s2c_icmp_echo_reply")["payload"]
    )

    setup.at(setup.message("rekey_client_handshake"))
    client.rekey(0.2)
    (rekey,) = sent(client)
    assert rekey.header.epoch == setup.epochs[1]["epoch"]
    assert rekey.ephemeral_public == h(
        setup.message("rekey_client_handshake")["body"]["ephemeral_public"]
    )
    feed("rekey_server_handshake")
    assert client.epochs.current.epoch == setup.epochs[1]["epoch"]  # type: ignore[union-attr]
    # Data the Go client sent under the new key decrypts with ours.
    payload = h(setup.message("data_after_rekey")["payload"])
    ours = client.send(payload, 0.3)
    server = setup.server()
    for epoch in setup.epochs:
        setup.will_generate(epoch["server_ephemeral_private_scalar"])
    for name in ("client_handshake", "epoch_ack", "rekey_client_handshake", "rekey_epoch_ack"):
        feed_server(setup, server, name)
    assert server.sessions[1000].receive(ours, CLIENT_ADDR, 0.4) == payload


def invalid_cases() -> Iterator[tuple[int, str]]:
    for version in VERSIONS:
        for case in load(version)["invalid"]:
            yield version, case["name"]


def receiver_for(setup: Setup, case: dict[str, Any]) -> tuple[Session, Any]:
    """A session in the state the vector names: holding ``receiver_epochs``."""
    assert case["receiver_epochs"] == [setup.epochs[0]["epoch"]]
    if case["receiver"] == "server":
        core = setup.server()
        setup.will_generate(setup.epochs[0]["server_ephemeral_private_scalar"])
        feed_server(setup, core, "client_handshake")
        feed_server(setup, core, "epoch_ack")
        session: Session = core.sessions[1000]
        address = CLIENT_ADDR
    else:
        client = setup.client()
        setup.will_generate(setup.epochs[0]["client_ephemeral_private_scalar"])
        client.connect(0.0)
        msg = setup.message("server_handshake")
        setup.at(msg)
        client.receive(h(msg["datagram"]), SERVER_ADDR, 0.1)
        session = client
        address = SERVER_ADDR
    assert session.state is SessionState.ESTABLISHED
    session.take_events()
    session.take_datagrams()
    return session, address


@pytest.mark.parametrize(("version", "name"), list(invalid_cases()))
def test_invalid_vectors_dropped_by_the_session(
    version: int, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = Setup(version, monkeypatch)
    case = next(c for c in setup.data["invalid"] if c["name"] == name)
    session, address = receiver_for(setup, case)
    datagram = h(case["datagram"])
    if len(datagram) >= 20:
        setup.clock.us = int.from_bytes(datagram[12:20], "big") * setup.unit + 300
    assert session.receive(datagram, address, 2.0) is None
    events = drops(session)
    if case.get("tolerant_v2_receiver") == "accepted":
        assert events == []
        (ack,) = sent(session)
        assert ack.flags == ControlFlag.KEEPALIVE_ACK
        return
    assert [reason.value for reason in events] == [case["expect"]], case["reason"]
    assert session.stats.drops[DropReason(case["expect"])] == 1
    assert sent(session) == [] or case["expect"] in {"bad_signature", "header_tag_mismatch"}


def test_v2_crc_forgery_with_a_far_future_time_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    setup = Setup(2, monkeypatch)
    case = setup.data["crc_forgeries_accepted_by_go"][0]
    session, address = receiver_for(setup, {"receiver": "server", "receiver_epochs": [0]})
    setup.clock.us = case["original_time"] * 1000
    assert session.receive(h(case["datagram"]), address, 2.0) is None
    assert drops(session) == [DropReason.FUTURE]
    # The original, untouched, is accepted.
    assert session.receive(h(case["original_datagram"]), address, 2.0) == h(case["payload"])
