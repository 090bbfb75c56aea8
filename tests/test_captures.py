"""The two real Go-to-Go captures decode cleanly, and every tag and signature checks."""

from __future__ import annotations

from collections import Counter

import pytest

from pcap import read_udp
from trio_sudp.protocol import Kind, PrivateKey, Version
from trio_sudp.protocol.crypto import make_header_tagger
from trio_sudp.protocol.wire import (
    ControlMessage,
    DataMessage,
    decode_untrusted,
    verify_signed,
)
from vectors import load, require_vectors


@pytest.mark.parametrize("version", [2, 3])
def test_capture_decodes_and_authenticates(version: int) -> None:
    data = load(version)
    records = read_udp(require_vectors() / data["capture"]["file"])
    keys = {
        vaddr: PrivateKey.from_pem(data["static_keys"][name]["private_pem"]).public_key
        for vaddr, name in ((0, "server"), (1000, "client"))
    }
    shared = data["capture"].get("hmac_key")
    tagger = make_header_tagger(Version(version), shared.encode() if shared else None)
    kinds: Counter[Kind] = Counter()
    strict_failures = 0
    for record in records:
        message = decode_untrusted(record.payload, version=Version(version))
        header = message.header
        kinds[header.kind] += 1
        assert {header.src, header.dst} == {0, 1000}
        if isinstance(message, DataMessage):
            continue
        signer = keys[header.src]
        if verify_signed(message, tagger, signer) is not None:
            # The Go v2 signer's left-aligned short r/s: only the tolerant reading passes.
            assert version == 2
            assert isinstance(message, ControlMessage)
            assert verify_signed(message, tagger, signer, tolerate_v2_left_aligned=True) is None
            strict_failures += 1
    assert kinds[Kind.CLIENT_HANDSHAKE] == kinds[Kind.SERVER_HANDSHAKE] == 2  # connect + rekey
    assert kinds[Kind.DATA] == 16  # 8 messages, each echoed
    assert kinds[Kind.CONTROL] > 100
    assert strict_failures == (2 if version == 2 else 0)
