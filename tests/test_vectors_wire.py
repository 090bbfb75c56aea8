"""The codecs and crypto against the Go peers' known answers (../shared/vectors)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trio_sudp.protocol.constants import ControlFlag, Kind, Version, tag_size
from trio_sudp.protocol.crypto import EphemeralKey, PrivateKey, PublicKey, make_header_tagger
from trio_sudp.protocol.datapath import encode_data, open_data
from trio_sudp.protocol.errors import BadPacket, DropReason
from trio_sudp.protocol.wire import (
    ControlMessage,
    DataMessage,
    HandshakeMessage,
    decode_untrusted,
    encode_control,
    encode_handshake,
    encode_header,
    verify_signed,
)
from vectors import h, hmac_key, load

VERSIONS = [2, 3]


def keys(version: int) -> dict[str, PrivateKey]:
    return {
        name: PrivateKey.from_pem(entry["private_pem"])
        for name, entry in load(version)["static_keys"].items()
    }


def valid_messages(version: int) -> list[tuple[str, dict[str, Any]]]:
    return list(load(version)["messages"].items())


def message_ids() -> list[tuple[int, str]]:
    return [(v, name) for v in VERSIONS for name, _ in valid_messages(v)]


@pytest.mark.parametrize("version", VERSIONS)
def test_static_keys_match_their_raw_form(version: int) -> None:
    for entry in load(version)["static_keys"].values():
        private = PrivateKey.from_pem(entry["private_pem"])
        assert private.public_key.point == h(entry["public_point"])
        assert private.public_key == PublicKey.from_pem(entry["public_pem"])
        assert (
            private.public_key
            == PrivateKey.from_scalar(int(entry["private_scalar"], 16)).public_key
        )
        # We write the Go form: the same PEM block types the Go tools read.
        assert private.to_pem().startswith(b"-----BEGIN EC PRIVATE KEY-----")
        assert PrivateKey.from_pem(private.to_pem()).public_key == private.public_key
        assert private.public_key.to_pem().decode() == entry["public_pem"]


@pytest.mark.parametrize("version", VERSIONS)
def test_header_cases(version: int) -> None:
    for case in load(version)["headers"]:
        f = case["fields"]
        raw = encode_header(
            Version(f["ver"]), Kind(f["kind"]), f["len"], f["src"], f["dst"], f["epoch"], f["time"]
        )
        assert raw == h(case["bytes"]), case["name"]
        if version == 2:
            assert make_header_tagger(Version.V2)(raw) == h(case["tag"])
        else:
            keyed = make_header_tagger(Version.V3, case["tag_key"].encode())
            assert keyed(raw) == h(case["tag"])
            assert make_header_tagger(Version.V3)(raw) == h(case["tag_unkeyed"])


@pytest.mark.parametrize("version", VERSIONS)
def test_epoch_secrets_from_ephemeral_scalars(version: int) -> None:
    data = load(version)
    epochs = list(data["epochs"].values()) + list(
        data.get("unkeyed", {}).get("epochs", {}).values()
    )
    for epoch in epochs:
        client = EphemeralKey.from_scalar(int(epoch["client_ephemeral_private_scalar"], 16))
        server = EphemeralKey.from_scalar(int(epoch["server_ephemeral_private_scalar"], 16))
        assert client.public_bytes == h(epoch["client_ephemeral_public"])
        assert server.public_bytes == h(epoch["server_ephemeral_public"])
        secret = h(epoch["shared_secret"])
        assert client.exchange(server.public_bytes) == secret
        assert server.exchange(client.public_bytes) == secret


def _check_valid(version: int, msg: dict[str, Any], tag_key: bytes | None) -> None:
    static = keys(version)
    tagger = make_header_tagger(Version(version), tag_key)
    datagram = h(msg["datagram"])
    assert len(datagram) == msg["datagram_len"]
    decoded = decode_untrusted(datagram, version=Version(version))
    hdr = msg["header"]
    assert decoded.header.raw == h(hdr["bytes"])
    assert (decoded.header.kind, decoded.header.length) == (hdr["kind"], hdr["len"])
    assert (decoded.header.src, decoded.header.dst) == (hdr["src"], hdr["dst"])
    assert (decoded.header.epoch, decoded.header.time) == (hdr["epoch"], hdr["time"])
    if isinstance(decoded, DataMessage):
        payload = open_data(
            datagram, decoded.header.length, AESGCM(h(msg["key"])), tagger, tag_size(version)
        )
        assert payload == h(msg["payload"])
        return
    signer = static[msg["signed_by"]].public_key
    assert decoded.tag == h(hdr["tag"])
    if isinstance(decoded, HandshakeMessage):
        assert decoded.ephemeral_public == h(msg["body"]["ephemeral_public"])
    else:
        assert isinstance(decoded, ControlMessage)
        assert decoded.flags == msg["body"]["ctrl"]
    assert verify_signed(decoded, tagger, signer) is None
    # The other party's key must not verify it.
    other = static["client2"].public_key
    assert verify_signed(decoded, tagger, other) is DropReason.BAD_SIGNATURE


@pytest.mark.parametrize(("version", "name"), message_ids())
def test_valid_messages_decode_verify_and_decrypt(version: int, name: str) -> None:
    _check_valid(version, load(version)["messages"][name], hmac_key(version))


def test_unkeyed_v3_messages() -> None:
    unkeyed = load(3)["unkeyed"]
    assert unkeyed["messages"]
    for msg in unkeyed["messages"].values():
        _check_valid(3, msg, b"")


@pytest.mark.parametrize(("version", "name"), message_ids())
def test_our_encoder_is_accepted_by_the_same_checks(version: int, name: str) -> None:
    """Given the vector's inputs, our messages pass every check the vector passes."""
    msg = load(version)["messages"][name]
    static = keys(version)
    ver = Version(version)
    tagger = make_header_tagger(ver, hmac_key(version))
    hdr = msg["header"]
    fields = {"src": hdr["src"], "dst": hdr["dst"], "epoch": hdr["epoch"], "time": hdr["time"]}
    if hdr["kind"] == Kind.DATA:
        nonce = os.urandom(12)
        ours = encode_data(
            ver,
            **fields,
            payload=h(msg["payload"]),
            tagger=tagger,
            aead=AESGCM(h(msg["key"])),
            nonce=nonce,
        )
        assert ours[:20] == h(hdr["bytes"])
        assert len(ours) == msg["datagram_len"]
    elif hdr["kind"] == Kind.CONTROL:
        ours = encode_control(
            ver, **fields, flags=msg["body"]["ctrl"], tagger=tagger, signer=static[msg["signed_by"]]
        )
    else:
        ours = encode_handshake(
            ver,
            Kind(hdr["kind"]),
            **fields,
            ephemeral_public=h(msg["body"]["ephemeral_public"]),
            tagger=tagger,
            signer=static[msg["signed_by"]],
        )
    assert ours[:20] == h(hdr["bytes"])
    # Same length and same header as Go's; body checks like a Go receiver would do them.
    assert len(ours) == msg["datagram_len"]
    _check_valid(version, {**msg, "datagram": ours.hex()}, hmac_key(version))


STRUCTURAL = {
    DropReason.BAD_VERSION,
    DropReason.BAD_KIND,
    DropReason.DATAGRAM_TOO_SHORT,
    DropReason.LEN_EXCEEDS_DATAGRAM,
    DropReason.BODY_TOO_SHORT,
}


def classify(version: int, case: dict[str, Any]) -> DropReason | None:
    """A stateless receiver built from the codecs: the first check a datagram fails."""
    data = load(version)
    static = keys(version)
    tagger = make_header_tagger(Version(version), hmac_key(version))
    receiver_is_server = case["receiver"] == "server"
    own, peer = (0, 1000) if receiver_is_server else (1000, 0)
    signer = static["client" if receiver_is_server else "server"].public_key
    try:
        msg = decode_untrusted(h(case["datagram"]), version=Version(version))
        if msg.header.dst != own or msg.header.src != peer:
            return DropReason.WRONG_VADDR
        if isinstance(msg, DataMessage):
            if msg.header.epoch not in case["receiver_epochs"]:
                return DropReason.UNKNOWN_EPOCH
            secret = h(data["epochs"][str(msg.header.epoch)]["shared_secret"])
            opened = open_data(
                h(case["datagram"]),
                msg.header.length,
                AESGCM(secret),
                tagger,
                tag_size(Version(version)),
            )
            return opened if isinstance(opened, DropReason) else None
        reason = verify_signed(msg, tagger, signer, tolerate_v2_left_aligned=version == 2)
        if reason is not None:
            return reason
        if isinstance(msg, HandshakeMessage):
            EphemeralKey.generate().exchange(msg.ephemeral_public)
    except BadPacket as exc:
        return exc.reason
    return None


def invalid_ids() -> list[tuple[int, str]]:
    return [(v, case["name"]) for v in VERSIONS for case in load(v)["invalid"]]


@pytest.mark.parametrize(("version", "name"), invalid_ids())
def test_invalid_messages_rejected_for_their_reason(version: int, name: str) -> None:
    case = next(c for c in load(version)["invalid"] if c["name"] == name)
    got = classify(version, case)
    if case.get("tolerant_v2_receiver") == "accepted":
        # A genuine Go v2 signature, left-aligned by its signer: we accept it (SPEC §6) ...
        assert got is None
        # ... and a strict reader rejects it for the stated reason.
        msg = decode_untrusted(h(case["datagram"]))
        assert isinstance(msg, ControlMessage)
        reason = verify_signed(msg, make_header_tagger(Version.V2), keys(2)["client"].public_key)
        assert reason is not None
        assert reason.value == case["expect"]
        return
    assert got is not None, f"{name} was accepted"
    assert got.value == case["expect"], case["reason"]
    if got in STRUCTURAL:
        with pytest.raises(BadPacket):
            decode_untrusted(h(case["datagram"]), version=Version(version))


def test_v3_short_signature_field_is_read_as_fixed_width() -> None:
    msg = load(3)["messages"]["keepalive_short_signature_field"]
    assert msg["body"]["signature"]["s"].startswith("00")
    decoded = decode_untrusted(h(msg["datagram"]))
    assert isinstance(decoded, ControlMessage)
    assert decoded.flags == ControlFlag.KEEPALIVE
    tagger = make_header_tagger(Version.V3, hmac_key(3))
    assert verify_signed(decoded, tagger, keys(3)["client"].public_key) is None


def test_v2_crc_forgery_in_the_far_future_still_passes_the_codec() -> None:
    """The forged header keeps every cryptographic check (why sessions bound time)."""
    case = load(2)["crc_forgeries_accepted_by_go"][0]
    msg = decode_untrusted(h(case["datagram"]))
    assert isinstance(msg, DataMessage)
    assert msg.header.time == case["forged_time"]
    secret = h(load(2)["epochs"]["0"]["shared_secret"])
    opened = open_data(
        h(case["datagram"]), msg.header.length, AESGCM(secret), make_header_tagger(Version.V2), 4
    )
    assert opened == h(case["payload"])
