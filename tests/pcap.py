"""A minimal libpcap reader: UDP payloads of Ethernet/IPv4 captures (for the vectors)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import NamedTuple


class UdpRecord(NamedTuple):
    time: float
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


def _ip(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def read_udp(path: Path) -> list[UdpRecord]:
    data = path.read_bytes()
    magic = data[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        endian = "<"
    elif magic == b"\xa1\xb2\xc3\xd4":
        endian = ">"
    else:
        raise ValueError(f"{path}: not a libpcap file")
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    assert linktype == 1, "Ethernet captures only"
    out = []
    offset = 24
    while offset + 16 <= len(data):
        sec, usec, incl, _orig = struct.unpack_from(endian + "IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + incl]
        offset += 16 + incl
        if frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 17:
            continue
        total = struct.unpack_from(">H", ip, 2)[0]
        udp = ip[ihl:total]
        sport, dport, ulen = struct.unpack_from(">HHH", udp)
        out.append(
            UdpRecord(
                sec + usec / 1e6,
                (_ip(ip[12:16]), sport),
                (_ip(ip[16:20]), dport),
                udp[8:ulen],
            )
        )
    return out
