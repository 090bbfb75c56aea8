"""Details of the data path and of decoding that the protocol tests do not pin down."""

from __future__ import annotations

from pair import Pair
from trio_sudp.protocol import ControlFlag, PrivateKey, Version
from trio_sudp.protocol.crypto import make_header_tagger
from trio_sudp.protocol.wire import ControlMessage, decode_untrusted, encode_control


def test_a_client_send_that_starts_the_silence_window_flags_its_timers() -> None:
    pair = Pair(Version.V3)
    pair.connect()
    client, server = pair.client, pair.server
    client.timers_changed = server.timers_changed = False
    client.send(b"up", pair.now)
    assert client.timers_changed  # the silence deadline moved earlier
    client.timers_changed = False
    client.send(b"up", pair.now)
    assert not client.timers_changed  # it was already running
    server.send(b"down", pair.now)
    assert not server.timers_changed  # servers have no silence rule


def test_decoding_hostile_control_flags_makes_no_new_flag_members() -> None:
    members = dict(ControlFlag._value2member_map_)
    tagger = make_header_tagger(Version.V2)
    signer = PrivateKey.generate()
    for flags in (0x1F, 0x20, 0xFFFF_FFFF, 0x1234_5679):
        datagram = encode_control(
            Version.V2, src=1, dst=0, epoch=1, time=1, flags=flags, tagger=tagger, signer=signer
        )
        message = decode_untrusted(datagram)
        assert isinstance(message, ControlMessage)
        assert message.flags == flags
        assert bool(message.flags & ControlFlag.KEEPALIVE) == bool(flags & 1)
        assert message.signed_bytes[4:8] == flags.to_bytes(4, "big")
    known = decode_untrusted(
        encode_control(
            Version.V2, src=1, dst=0, epoch=1, time=1, flags=0x11, tagger=tagger, signer=signer
        )
    )
    assert isinstance(known, ControlMessage) and isinstance(known.flags, ControlFlag)
    assert ControlFlag._value2member_map_ == members
