"""Property-based tests of the codecs and of the sessions' receive path."""

from __future__ import annotations

import contextlib
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from pair import CLIENT_ADDR, SERVER_ADDR, Pair
from trio_sudp.protocol import ControlFlag, EphemeralKey, Kind, PrivateKey, Version, max_payload
from trio_sudp.protocol.constants import tag_size
from trio_sudp.protocol.crypto import make_header_tagger
from trio_sudp.protocol.datapath import encode_data, open_data
from trio_sudp.protocol.errors import BadPacket, DropReason
from trio_sudp.protocol.wire import (
    ControlMessage,
    DataMessage,
    HandshakeMessage,
    decode_untrusted,
    encode_control,
    encode_handshake,
    verify_signed,
)

SIGNER = PrivateKey.generate()
EPK = EphemeralKey.generate().public_bytes
AEAD_KEY = os.urandom(32)
AEAD = AESGCM(AEAD_KEY)

versions = st.sampled_from([Version.V2, Version.V3])
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 2**64 - 1)
v3_keys = st.one_of(st.none(), st.binary(max_size=64))


def tagger_for(version: Version, key: bytes | None) -> object:
    return make_header_tagger(version, key if version == Version.V3 else None)


@given(
    versions,
    st.sampled_from([Kind.CLIENT_HANDSHAKE, Kind.SERVER_HANDSHAKE]),
    u16,
    u16,
    u32,
    u64,
    v3_keys,
)
def test_handshake_round_trip(
    version: Version, kind: Kind, src: int, dst: int, epoch: int, time: int, key: bytes | None
) -> None:
    tagger = make_header_tagger(version, key if version == Version.V3 else None)
    datagram = encode_handshake(
        version,
        kind,
        src=src,
        dst=dst,
        epoch=epoch,
        time=time,
        ephemeral_public=EPK,
        tagger=tagger,
        signer=SIGNER,
    )
    message = decode_untrusted(datagram, version=version)
    assert isinstance(message, HandshakeMessage)
    h = message.header
    assert (h.version, h.kind, h.src, h.dst, h.epoch, h.time) == (
        version,
        kind,
        src,
        dst,
        epoch,
        time,
    )
    assert message.ephemeral_public == EPK
    assert verify_signed(message, tagger, SIGNER.public_key) is None


@given(versions, u16, u16, u32, u64, st.integers(0, 0x1F), u64, v3_keys)
def test_control_round_trip(
    version: Version,
    src: int,
    dst: int,
    epoch: int,
    time: int,
    flags: int,
    data: int,
    key: bytes | None,
) -> None:
    tagger = make_header_tagger(version, key if version == Version.V3 else None)
    datagram = encode_control(
        version,
        src=src,
        dst=dst,
        epoch=epoch,
        time=time,
        flags=flags,
        data=data,
        tagger=tagger,
        signer=SIGNER,
    )
    message = decode_untrusted(datagram, version=version)
    assert isinstance(message, ControlMessage)
    assert (message.header.epoch, message.header.time) == (epoch, time)
    assert message.flags == ControlFlag(flags)
    assert message.data == data
    assert verify_signed(message, tagger, SIGNER.public_key) is None


@given(versions, u16, u16, u32, u64, st.data(), v3_keys)
def test_data_round_trip(
    version: Version,
    src: int,
    dst: int,
    epoch: int,
    time: int,
    data: st.DataObject,
    key: bytes | None,
) -> None:
    tagger = make_header_tagger(version, key if version == Version.V3 else None)
    payload = data.draw(st.binary(max_size=max_payload(version)))
    datagram = encode_data(
        version,
        src=src,
        dst=dst,
        epoch=epoch,
        time=time,
        payload=payload,
        tagger=tagger,
        aead=AEAD,
        nonce=os.urandom(12),
    )
    assert len(datagram) <= 2048
    message = decode_untrusted(datagram, version=version)
    assert isinstance(message, DataMessage)
    length = message.header.length
    assert open_data(datagram, length, AEAD, tagger, tag_size(version)) == payload


@given(st.binary(max_size=2100))
def test_random_bytes_only_raise_bad_packet(datagram: bytes) -> None:
    with contextlib.suppress(BadPacket):
        decode_untrusted(datagram)


def _valid_datagrams() -> list[bytes]:
    tag2 = make_header_tagger(Version.V2)
    tag3 = make_header_tagger(Version.V3, b"k")
    out = []
    for version, tagger in ((Version.V2, tag2), (Version.V3, tag3)):
        fields = {"src": 7, "dst": 0, "epoch": 5, "time": 123456789}
        out.append(
            encode_handshake(
                version,
                Kind.CLIENT_HANDSHAKE,
                **fields,
                ephemeral_public=EPK,
                tagger=tagger,
                signer=SIGNER,
            )
        )
        out.append(encode_control(version, **fields, flags=1, tagger=tagger, signer=SIGNER))
        out.append(
            encode_data(
                version, **fields, payload=b"x" * 40, tagger=tagger, aead=AEAD, nonce=bytes(12)
            )
        )
    return out


VALID = _valid_datagrams()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        choice = draw(st.integers(0, 3))
        if choice == 0 and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif choice == 1:
            cut = draw(st.integers(0, len(data)))
            del data[cut:]
        elif choice == 2:
            data += draw(st.binary(max_size=64))
        else:
            i = draw(st.integers(0, max(0, len(data) - 1)))
            del data[i : i + draw(st.integers(1, 8))]
    return bytes(data)


@given(mutated())
def test_mutated_datagrams_only_raise_bad_packet(datagram: bytes) -> None:
    try:
        message = decode_untrusted(datagram)
    except BadPacket:
        return
    tagger = make_header_tagger(
        message.header.version, b"k" if message.header.version == 3 else None
    )
    if isinstance(message, DataMessage):
        opened = open_data(datagram, message.header.length, AEAD, tagger, len(tagger(bytes(20))))
        assert isinstance(opened, bytes | DropReason)
        return
    reason = verify_signed(message, tagger, SIGNER.public_key, tolerate_v2_left_aligned=True)
    assert reason in (None, DropReason.HEADER_TAG_MISMATCH, DropReason.BAD_SIGNATURE)
    if isinstance(message, HandshakeMessage):
        with contextlib.suppress(BadPacket):
            EphemeralKey.generate().exchange(message.ephemeral_public)


PAIRS = {version: Pair(version) for version in (Version.V2, Version.V3)}
for _pair in PAIRS.values():
    _pair.connect()


@st.composite
def session_input(draw: st.DrawFn) -> tuple[Version, bytes]:
    version = draw(versions)
    pair = PAIRS[version]
    real = [*pair.wire_c2s[:4], *pair.wire_s2c[:4]]
    base = bytearray(draw(st.sampled_from(real)))
    if draw(st.booleans()):
        return version, draw(st.binary(max_size=2100))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(base) - 1))
        base[i] ^= draw(st.integers(1, 255))
    return version, bytes(base)


@given(session_input())
def test_sessions_never_raise_on_hostile_datagrams(case: tuple[Version, bytes]) -> None:
    version, datagram = case
    pair = PAIRS[version]
    before_server = pair.server.epochs.current
    assert pair.client.receive(datagram, SERVER_ADDR, pair.now) is None
    session = pair.core.sessions.get(pair.core.route(datagram, CLIENT_ADDR, pair.now))
    if session is not None:
        assert session.receive(datagram, CLIENT_ADDR, pair.now) is None
    # Nothing hostile changes the keys or the endpoint.
    assert pair.server.epochs.current is before_server
    assert pair.server.endpoint == CLIENT_ADDR
    pair.client.take_events()
    pair.server.take_events()
    pair.server.take_datagrams()
    pair.client.take_datagrams()
