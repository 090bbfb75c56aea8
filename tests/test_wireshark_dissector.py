"""The Wireshark dissector (contrib/wireshark/sudp.lua) run by tshark on the Go captures.

Every value tshark reports is compared with what this file decodes independently
from the same pcap (a small pcap/Ethernet/IPv4/UDP reader and struct), so the
dissector is checked against the capture itself, not against its own idea of it.
"""

from __future__ import annotations

import calendar
import os
import re
import shutil
import struct
import subprocess
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from vectors import VECTORS_DIR

ROOT = Path(__file__).resolve().parents[1]
VECTORS = VECTORS_DIR
DISSECTOR = ROOT / "contrib" / "wireshark" / "sudp.lua"
TSHARK = shutil.which("tshark")
TIMEOUT = 120  # seconds, per tshark run (each takes well under one)

pytestmark = [
    pytest.mark.skipif(
        TSHARK is None, reason="tshark is not installed (Debian/Ubuntu: apt-get install tshark)"
    ),
    pytest.mark.skipif(not VECTORS.is_dir(), reason=f"SUDP vectors not found at {VECTORS}"),
]

CAPTURES = {2: ("v2.pcap", 17102), 3: ("v3.pcap", 17103)}
HB_LEN = {2: 4, 3: 24}
TICKS_PER_SEC = {2: 1_000, 3: 1_000_000}
KIND_NAMES = {1: "ClientHandshake", 2: "ServerHandshake", 3: "Control", 4: "Data"}
FLAG_NAMES = [(0x01, "KeepAlive"), (0x02, "RTT"), (0x04, "KeepAliveAck"), (0x08, "EpochAck")]
FLAG_NAMES += [(0x10, "NoSession")]
FLAG_FIELDS = ["keepalive", "rtt", "keepalive_ack", "epoch_ack", "no_session"]

# Wireshark's expert-info groups (epan/proto.h) as tshark prints _ws.expert.group.
PI_CHECKSUM = 0x01000000
PI_PROTOCOL = 0x09000000
PI_MALFORMED = 0x07000000
PI_UNDECODED = 0x05000000  # where a Lua error in a dissector is reported

FIELDS = [
    "frame.number",
    "frame.protocols",
    "frame.time_epoch",
    "udp.srcport",
    "udp.dstport",
    "sudp.ver",
    "sudp.kind",
    "sudp.len",
    "sudp.src",
    "sudp.dst",
    "sudp.epoch",
    "sudp.time",
    "sudp.time.date",
    "sudp.hb.status",
    "sudp.hb.crc32",
    "sudp.hb.crc32.computed",
    "sudp.control.flags",
    *(f"sudp.control.flags.{name}" for name in FLAG_FIELDS),
    "sudp.handshake.epk",
    "sudp.sig.r",
    "sudp.sig.s",
    "sudp.data.nonce",
    "sudp.data.payload_len",
    "sudp.data.gcm_tag",
    "_ws.expert.group",
    "_ws.expert.message",
    "_ws.malformed",
]


# -- an independent reader: pcap -> Ethernet -> IPv4 -> UDP -> SUDP header --------------------


@dataclass(frozen=True)
class Datagram:
    sport: int
    dport: int
    payload: bytes


@dataclass(frozen=True)
class Sudp:
    ver: int
    kind: int
    len: int
    src: int
    dst: int
    epoch: int
    time: int
    body: bytes

    @classmethod
    def parse(cls, payload: bytes) -> Sudp:
        ver, kind, length, src, dst, epoch, stamp = struct.unpack_from(">BBHHHIQ", payload)
        return cls(ver, kind, length, src, dst, epoch, stamp, payload[20 : 20 + length])

    @property
    def hb(self) -> bytes:  # in clear in handshakes and control only
        return self.body[: HB_LEN[self.ver]]

    @property
    def flags(self) -> int:
        return int.from_bytes(self.body[HB_LEN[self.ver] :][:4], "big")

    def crc_ok(self, payload: bytes) -> bool:
        return int.from_bytes(self.hb, "big") == zlib.crc32(payload[:20])


def read_pcap(path: Path) -> list[Datagram]:
    """UDP payloads of a classic libpcap file of Ethernet frames (IPv4 only)."""
    data = path.read_bytes()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a libpcap file")
    (linktype,) = struct.unpack_from(endian + "I", data, 20)
    assert linktype == 1, f"{path}: link type {linktype}, expected Ethernet"
    datagrams, offset = [], 24
    while offset < len(data):
        _, _, incl_len, _ = struct.unpack_from(endian + "IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + incl_len]
        offset += 16 + incl_len
        if frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        (total_len,) = struct.unpack_from(">H", ip, 2)
        if ip[9] != 17:
            continue
        udp = ip[ihl:total_len]
        sport, dport, udp_len = struct.unpack_from(">HHH", udp)
        datagrams.append(Datagram(sport, dport, udp[8:udp_len]))
    return datagrams


def write_pcap(path: Path, frames: Iterable[tuple[bytes, int, int | None]]) -> None:
    """Frames (UDP payload, port, snaplen) as Ethernet/IPv4/UDP 127.0.0.1:40000 -> :port;
    a snaplen cuts the frame's UDP payload in the capture (not on the wire)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for number, (payload, dport, snaplen) in enumerate(frames):
        udp = struct.pack(">HHHH", 40000, dport, 8 + len(payload), 0) + payload
        loopback = bytes([127, 0, 0, 1])
        ip = struct.pack(">BBHHHBBH", 0x45, 0, 20 + len(udp), number, 0, 64, 17, 0)
        ip += loopback + loopback
        frame = bytes(12) + b"\x08\x00" + ip + udp
        captured = frame if snaplen is None else frame[: 14 + 20 + 8 + snaplen]
        out.append(struct.pack("<IIII", 1_800_000_000 + number, 0, len(captured), len(frame)))
        out.append(captured)
    path.write_bytes(b"".join(out))


# -- tshark -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty profile, so no personal preference or installed plugin interferes."""
    return tmp_path_factory.mktemp("wireshark-home")


def tshark(home: Path, pcap: Path, *args: str) -> str:
    assert TSHARK is not None
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    env["WIRESHARK_CONFIG_DIR"] = str(home / "wireshark")
    env.pop("WIRESHARK_PLUGIN_DIR", None)
    proc = subprocess.run(
        [TSHARK, "-n", "-X", f"lua_script:{DISSECTOR}", "-r", str(pcap), *args],
        capture_output=True,
        encoding="utf-8",
        env=env,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # A script that fails to load or run is reported on stderr ("Lua: Error during loading").
    assert "lua" not in proc.stderr.lower(), proc.stderr
    return proc.stdout


def fields(home: Path, pcap: Path, *args: str) -> list[dict[str, list[str]]]:
    """One dict per frame: field name -> every occurrence of it."""
    argv = ["-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=\x1f"]
    for name in FIELDS:
        argv += ["-e", name]
    rows = []
    for line in tshark(home, pcap, *argv, *args).splitlines():
        values = line.split("\t")
        assert len(values) == len(FIELDS), line
        pairs = zip(FIELDS, values, strict=True)
        rows.append({name: value.split("\x1f") if value else [] for name, value in pairs})
    return rows


def info_column(home: Path, pcap: Path, *args: str) -> list[str]:
    # The column preference is stable across tshark versions (the _ws.col.* names are not).
    out = tshark(home, pcap, "-o", 'gui.column.format:"No.","%m","Info","%i"', *args)
    return [line.strip().split(" ", 1)[1] for line in out.splitlines()]


def one(row: dict[str, list[str]], name: str) -> str:
    values = row[name]
    assert len(values) == 1, (name, values)
    return values[0]


def sudp_rows(rows: Sequence[dict[str, list[str]]]) -> list[dict[str, list[str]]]:
    return [row for row in rows if row["sudp.ver"]]


def parse_date_ns(text: str) -> int:
    """Nanoseconds since the Unix epoch from tshark's absolute time, e.g.
    'Nov 25, 2026 01:23:42.411000000 UTC' (or ISO 8601, as newer versions may print)."""
    match = re.fullmatch(r"(\w{3}) +(\d+), (\d{4}) (\d\d:\d\d:\d\d)\.(\d{9}) UTC", text)
    if match:
        month, day, year, hms, frac = match.groups()
        parsed = time.strptime(f"{year} {month} {day} {hms}", "%Y %b %d %H:%M:%S")
    else:
        match = re.fullmatch(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)\.(\d{9})Z", text)
        assert match, text
        day_iso, hms, frac = match.groups()
        parsed = time.strptime(f"{day_iso} {hms}", "%Y-%m-%d %H:%M:%S")
    return calendar.timegm(parsed) * 1_000_000_000 + int(frac)


def flag_names(flags: int) -> str:
    names = [name for mask, name in FLAG_NAMES if flags & mask]
    if flags & ~0x1F:
        names.append(f"unknown:0x{flags & ~0x1F:x}")
    return ",".join(names) if names else "(no flags)"


def expected_info(msg: Sudp) -> str:
    detail, note = "", ""
    if msg.kind == 3:
        detail = " " + flag_names(msg.flags)
    elif msg.kind == 4:
        note = f", {msg.len - 12 - 16 - HB_LEN[msg.ver]}-byte payload"
    return f"v{msg.ver} {KIND_NAMES[msg.kind]}{detail} {msg.src}→{msg.dst} epoch {msg.epoch}{note}"


# -- the real captures --------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[2, 3], ids=["v2", "v3"])
def capture(request: pytest.FixtureRequest, home: Path) -> tuple[int, list[Datagram], list, list]:
    version: int = request.param
    pcap = VECTORS / CAPTURES[version][0]
    return version, read_pcap(pcap), fields(home, pcap), info_column(home, pcap)


def test_every_datagram_is_decoded_with_the_header_python_reads(capture) -> None:
    version, datagrams, rows, _ = capture
    port = CAPTURES[version][1]
    assert len(datagrams) > 100
    assert all(port in (d.sport, d.dport) for d in datagrams)
    decoded = sudp_rows(rows)
    assert len(decoded) == len(rows) == len(datagrams)  # heuristic, no configuration
    for row, datagram in zip(decoded, datagrams, strict=True):
        msg = Sudp.parse(datagram.payload)
        assert (int(one(row, "udp.srcport")), int(one(row, "udp.dstport"))) == (
            datagram.sport,
            datagram.dport,
        )
        got = [int(one(row, f"sudp.{name}")) for name in ("ver", "kind", "len", "src", "dst")]
        assert got == [version, msg.kind, msg.len, msg.src, msg.dst]
        assert int(one(row, "sudp.epoch")) == msg.epoch
        assert int(one(row, "sudp.time")) == msg.time
        # The date is the right unit (ms in v2, µs in v3), exactly ...
        date_ns = parse_date_ns(one(row, "sudp.time.date"))
        assert date_ns == msg.time * (1_000_000_000 // TICKS_PER_SEC[version])
        # ... and it is when the Go peer sent the datagram, close to its capture time.
        assert abs(date_ns / 1e9 - float(one(row, "frame.time_epoch"))) < 5


def test_kinds_epochs_and_addresses_match_the_capture(capture) -> None:
    version, datagrams, rows, _ = capture
    messages = [Sudp.parse(d.payload) for d in datagrams]
    decoded = sudp_rows(rows)
    kinds = Counter(KIND_NAMES[int(one(row, "sudp.kind"))] for row in decoded)
    assert kinds == Counter(KIND_NAMES[m.kind] for m in messages)
    # Each capture is one session with a rekey: two handshakes each way, data in both epochs.
    assert kinds["ClientHandshake"] == kinds["ServerHandshake"] == 2
    assert kinds["Data"] > 0
    assert kinds["Control"] > 100
    epochs = {int(one(row, "sudp.epoch")) for row in decoded}
    assert epochs == {m.epoch for m in messages}
    assert len(epochs) == 2
    if version == 2:
        assert epochs == {0, 1}  # Go v2 clients start at epoch 0
    pairs = {(int(one(row, "sudp.src")), int(one(row, "sudp.dst"))) for row in decoded}
    assert pairs == {(m.src, m.dst) for m in messages} == {(1000, 0), (0, 1000)}


def test_body_fields(capture) -> None:
    version, datagrams, rows, _ = capture
    for row, datagram in zip(sudp_rows(rows), datagrams, strict=True):
        msg = Sudp.parse(datagram.payload)
        hb_len = HB_LEN[version]
        if msg.kind in (1, 2):
            epk = msg.body[hb_len : hb_len + 65]
            assert one(row, "sudp.handshake.epk") == epk.hex()
            assert epk[0] == 0x04
        if msg.kind in (1, 2, 3):
            sig = msg.body[-64:]
            assert one(row, "sudp.sig.r") == sig[:32].hex()
            assert one(row, "sudp.sig.s") == sig[32:].hex()
        else:
            assert not row["sudp.sig.r"]
        if msg.kind == 4:
            assert one(row, "sudp.data.nonce") == msg.body[:12].hex()
            assert one(row, "sudp.data.gcm_tag") == msg.body[-16:].hex()
            assert int(one(row, "sudp.data.payload_len")) == msg.len - 28 - hb_len
            assert not row["sudp.hb.status"]  # the data hb is inside the ciphertext


def test_control_flags(capture) -> None:
    _, datagrams, rows, _ = capture
    seen = Counter()
    for row, datagram in zip(sudp_rows(rows), datagrams, strict=True):
        msg = Sudp.parse(datagram.payload)
        if msg.kind != 3:
            assert not row["sudp.control.flags"]
            continue
        assert int(one(row, "sudp.control.flags"), 16) == msg.flags
        bits = [one(row, f"sudp.control.flags.{name}") for name in FLAG_FIELDS]
        assert [b in ("1", "True") for b in bits] == [bool(msg.flags & m) for m, _ in FLAG_NAMES]
        seen[flag_names(msg.flags)] += 1
        # The client sends keepalives, the server acks them.
        assert (msg.src, msg.dst) == ((0, 1000) if msg.flags == 0x04 else (1000, 0))
    assert set(seen) == {"KeepAlive", "KeepAliveAck", "EpochAck"}
    assert seen["EpochAck"] == 2  # one per handshake


def test_header_tag(capture) -> None:
    version, datagrams, rows, _ = capture
    for row, datagram in zip(sudp_rows(rows), datagrams, strict=True):
        msg = Sudp.parse(datagram.payload)
        if msg.kind == 4:
            continue
        if version == 2:
            assert msg.crc_ok(datagram.payload)  # Python's own check of the Go capture
            assert one(row, "sudp.hb.status") == "1"  # Good
            crc = f"0x{zlib.crc32(datagram.payload[:20]):08x}"
            assert one(row, "sudp.hb.crc32") == one(row, "sudp.hb.crc32.computed") == crc
        else:
            assert one(row, "sudp.hb.status") == "2"  # Unverified: keyed BLAKE2b
            assert not row["sudp.hb.crc32"]


def test_info_column(capture) -> None:
    _, datagrams, _, info = capture
    assert info == [expected_info(Sudp.parse(d.payload)) for d in datagrams]


def test_no_expert_info_and_no_lua_error(capture) -> None:
    _, _, rows, _ = capture
    for row in rows:
        assert not row["_ws.expert.message"], row["_ws.expert.message"]
        assert not row["_ws.malformed"]


def test_full_tree_has_no_lua_error(home: Path) -> None:
    for name, _ in CAPTURES.values():
        tree = tshark(home, VECTORS / name, "-V", "-O", "sudp")
        assert tree.count("Secure UDP (SUDP), ") > 100
        assert "Lua Error" not in tree
        assert "Malformed" not in tree


@pytest.mark.parametrize("version", [2, 3])
def test_port_preference_and_decode_as(home: Path, version: int) -> None:
    name, port = CAPTURES[version]
    pcap = VECTORS / name
    total = len(read_pcap(pcap))
    no_heuristic = ("--disable-heuristic", "sudp_udp")
    assert sudp_rows(fields(home, pcap, *no_heuristic)) == []
    decode_as = fields(home, pcap, *no_heuristic, "-d", f"udp.port=={port},sudp")
    assert len(sudp_rows(decode_as)) == total
    by_pref = fields(home, pcap, *no_heuristic, "-o", f"sudp.udp_port:{port}")
    assert len(sudp_rows(by_pref)) == total


# -- crafted, malformed or unusual datagrams on the default port 7000 ----------------------------


def first(version: int, kind: int, flags: int | None = None) -> bytes:
    for datagram in read_pcap(VECTORS / CAPTURES[version][0]):
        msg = Sudp.parse(datagram.payload)
        if msg.kind == kind and (flags is None or msg.flags == flags):
            return datagram.payload
    raise LookupError((version, kind, flags))


def with_crc(header_and_body: bytes | bytearray, hb_offset: int = 20) -> bytes:
    crc = zlib.crc32(header_and_body[:20]).to_bytes(4, "big")
    return header_and_body[:hb_offset] + crc + header_and_body[hb_offset + 4 :]


def crafted() -> list[tuple[str, bytes, int | None, str, set[int]]]:
    """(name, payload, snaplen, expected Info fragment, expected expert groups)."""
    v2_control, v3_control = first(2, 3, 0x01), first(3, 3, 0x01)
    v3_data, v2_hs = first(3, 4), first(2, 1)
    bad_crc = bytearray(v2_control)
    bad_crc[11] ^= 0x01  # epoch changed, CRC kept: the v2 tag is unkeyed, so this is detectable
    no_session = bytearray(v2_control)
    no_session[24:28] = (0x14 | 0x20).to_bytes(4, "big")  # KeepAliveAck, NoSession, unknown bit
    data_too_short = bytes([3, 4, 0, 30]) + v3_data[4:20] + bytes(30)
    wrong_len = with_crc(v2_control[:2] + b"\x00\x4f" + v2_control[4:99])
    malformed, protocol = {PI_MALFORMED}, {PI_PROTOCOL}
    return [
        ("short", b"\x03\x03\x00\x64\x03\xe8\x00", None, "Malformed: 7-byte datagram", malformed),
        ("header only", v3_control[:20], None, "[Malformed: len 100 > 0", malformed),
        ("bad version", b"\x09" + v3_control[1:], None, "[Malformed: bad version 9]", malformed),
        ("bad kind", v3_control[:1] + b"\x07" + v3_control[2:], None, "bad kind 7]", malformed),
        ("len beyond data", v3_control[:60], None, "[Malformed: len 100 > 40", malformed),
        ("len wrong for kind", wrong_len, None, "[Malformed: len 79, expected 80]", malformed),
        ("data below minimum", data_too_short, None, "[Malformed: len 30 < 52]", malformed),
        ("bad crc", bytes(bad_crc), None, "[bad CRC]", {PI_CHECKSUM}),
        ("flags", with_crc(no_session), None, " KeepAliveAck,NoSession,unknown:0x20 ", protocol),
        ("trailing bytes", v3_control + b"xyz", None, "v3 Control KeepAlive 1000→0", protocol),
        ("cut by snaplen", v2_hs, 60, "[truncated by the capture]", {PI_UNDECODED}),
    ]


def test_crafted_datagrams(home: Path, tmp_path: Path) -> None:
    cases = crafted()
    pcap = tmp_path / "crafted.pcap"
    write_pcap(pcap, [(payload, 7000, snaplen) for _, payload, snaplen, _, _ in cases])
    rows = fields(home, pcap)
    info = info_column(home, pcap)
    tree = tshark(home, pcap, "-V")
    assert "Lua Error" not in tree
    assert len(rows) == len(info) == len(cases)
    for (name, _, _, info_part, groups), row, line in zip(cases, rows, info, strict=True):
        assert one(row, "frame.protocols").endswith(":udp:sudp"), name  # port 7000
        assert info_part in line, (name, line)
        got = {int(group, 0) for group in row["_ws.expert.group"]}
        assert got == groups, (name, row["_ws.expert.message"])
        assert not any("Lua Error" in m for m in row["_ws.expert.message"]), name
        # Wireshark marks a frame malformed (_ws.malformed) for expert info of that group.
        assert bool(row["_ws.malformed"]) == (PI_MALFORMED in groups), name
        if name == "bad crc":
            assert one(row, "sudp.hb.status") == "0"  # Bad
        if name == "flags":
            assert one(row, "sudp.control.flags.no_session") in ("1", "True")


def test_heuristic_wants_a_consistent_header(home: Path, tmp_path: Path) -> None:
    """Off port 7000 only a self-consistent header is taken for SUDP. Each datagram goes to
    its own port: once the heuristic accepts one, the dissector keeps its UDP conversation."""
    v2_control, v3_handshake, v3_data = first(2, 3), first(3, 1), first(3, 4)
    cases = [
        (v2_control, True),
        (v3_handshake, True),
        (v3_data, True),
        (v2_control + b"x", False),  # len one short of the datagram
        (v2_control[:-1], False),  # len runs past it
        (b"\x03" + v2_control[1:], False),  # v2 control length under version 3
        (v3_handshake[:1] + b"\x02" + v3_handshake[2:], True),  # ServerHandshake: same size
        (v3_handshake[:1] + b"\x05" + v3_handshake[2:], False),  # kind 5
        (b"\x04" + v3_handshake[1:], False),  # version 4
        (v3_data[:2] + (27).to_bytes(2, "big") + v3_data[4:47], False),  # data under 12 + 16
        (bytes(20), False),
    ]
    pcap = tmp_path / "heuristic.pcap"
    write_pcap(pcap, [(payload, 20000 + n, None) for n, (payload, _) in enumerate(cases)])
    rows = fields(home, pcap)
    assert len(rows) == len(cases)
    for (payload, accepted), row in zip(cases, rows, strict=True):
        assert one(row, "frame.protocols").endswith(":sudp") == accepted, payload[:4].hex()
