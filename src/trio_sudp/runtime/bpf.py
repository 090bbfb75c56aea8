"""Classic BPF: the few instructions the server's kernel programs use, and attaching them.

Two programs run in the kernel for a server (Linux): the socket filter that drops
garbage before it is queued (``prefilter.py``), and the reuseport program that
puts known peers' datagrams on their own socket (``lanes.py``). Both are classic
BPF (``struct sock_filter`` arrays), built with :class:`Assembler` and handed to the
kernel with :func:`set_program`.

Offsets: a UDP socket filter's offset 0 is the UDP header; a reuseport program's
offset 0 is the UDP payload. Either reaches the IP header at :data:`NET` (the
kernel's ``SKF_NET_OFF``) plus the offset into that header.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
import sys
from collections.abc import Sequence
from typing import Final

import attrs

__all__ = [
    "ADD_K",
    "AND_K",
    "DROP",
    "JA",
    "JEQ_K",
    "JGE_K",
    "JGT_K",
    "JGT_X",
    "KEEP_ALL",
    "LDB_ABS",
    "LDH_ABS",
    "LD_LEN",
    "LD_W_ABS",
    "LINUX",
    "NET",
    "RET_K",
    "TAX",
    "TXA",
    "Assembler",
    "SocketFilter",
    "Source",
    "match_sources",
    "set_program",
    "source_of",
]

# <linux/bpf_common.h>: class | size | mode, class | op | source.
LD_LEN: Final = 0x00 | 0x00 | 0x80  # BPF_LD | BPF_W | BPF_LEN: A = packet length
LD_W_ABS: Final = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS: A = u32 at k
LDH_ABS: Final = 0x00 | 0x08 | 0x20  # BPF_LD | BPF_H | BPF_ABS: A = u16 at k
LDB_ABS: Final = 0x00 | 0x10 | 0x20  # BPF_LD | BPF_B | BPF_ABS: A = u8 at k
ADD_K: Final = 0x04 | 0x00 | 0x00  # BPF_ALU | BPF_ADD | BPF_K
AND_K: Final = 0x04 | 0x50 | 0x00  # BPF_ALU | BPF_AND | BPF_K
JEQ_K: Final = 0x05 | 0x10 | 0x00  # BPF_JMP | BPF_JEQ | BPF_K
JGT_K: Final = 0x05 | 0x20 | 0x00
JGE_K: Final = 0x05 | 0x30 | 0x00
JGT_X: Final = 0x05 | 0x20 | 0x08  # A > X
JA: Final = 0x05 | 0x00  # BPF_JMP | BPF_JA: jump k instructions forward
RET_K: Final = 0x06
TAX: Final = 0x07 | 0x00  # BPF_MISC | BPF_TAX: X = A
TXA: Final = 0x07 | 0x80  # BPF_MISC | BPF_TXA: A = X
#: ``SKF_NET_OFF``: loads at ``NET + k`` read the IP header at offset k.
NET: Final = -0x100000
#: A socket filter returns how many bytes to keep: all of them, or 0 to drop.
KEEP_ALL: Final = 0xFFFFFFFF
DROP: Final = 0
LINUX: Final = sys.platform.startswith("linux")

_SOCK_FILTER = struct.Struct("=HBBI")  # struct sock_filter {u16 code; u8 jt, jf; u32 k}


@attrs.frozen(slots=True)
class SocketFilter:
    """A classic BPF program: ``(code, jt, jf, k)`` instructions, jumps resolved."""

    instructions: tuple[tuple[int, int, int, int], ...]

    @property
    def code(self) -> bytes:
        """The program as the kernel reads it: an array of ``struct sock_filter``."""
        return b"".join(
            _SOCK_FILTER.pack(code, jt, jf, k & 0xFFFFFFFF) for code, jt, jf, k in self.instructions
        )


class Assembler:
    """Classic BPF with labels: a jump target is a label name, or ``None`` for the next."""

    def __init__(self) -> None:
        self._code: list[tuple[int, str | None, str | None, int]] = []
        self._labels: dict[str, int] = {}
        self._gotos: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._code)

    def op(self, code: int, k: int = 0) -> None:
        self._code.append((code, None, None, k))

    def jump(self, code: int, k: int, true: str | None, false: str | None) -> None:
        self._code.append((code, true, false, k))

    def goto(self, target: str) -> None:
        """An unconditional jump, as far forward as needed (conditional ones reach 255)."""
        self._code.append((JA, None, None, 0))
        self._gotos[len(self._code) - 1] = target

    def label(self, name: str) -> None:
        self._labels[name] = len(self._code)

    def program(self) -> SocketFilter:
        def offset(here: int, target: str | None) -> int:
            jump = 0 if target is None else self._labels[target] - here - 1
            if not 0 <= jump <= 255:  # classic BPF jumps forward, at most 255 instructions
                raise ValueError(f"jump from {here} to {target!r} out of range")
            return jump

        gotos = self._gotos
        return SocketFilter(
            tuple(
                (code, 0, 0, self._labels[gotos[i]] - i - 1)
                if i in gotos
                else (code, offset(i, true), offset(i, false), k)
                for i, (code, true, false, k) in enumerate(self._code)
            )
        )


class _SockFprog(ctypes.Structure):
    """``struct sock_fprog { unsigned short len; struct sock_filter *filter; }``."""

    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def set_program(sock: socket.socket, option: int, program: SocketFilter) -> None:
    """Hand ``program`` to the kernel with ``setsockopt(SOL_SOCKET, option)``.

    Raises ``OSError`` if the kernel refuses it (not Linux: ``ENOPROTOOPT``).
    """
    if not LINUX:
        raise OSError(92, "classic BPF programs need Linux")  # ENOPROTOOPT
    code = ctypes.create_string_buffer(program.code, len(program.instructions) * 8)
    fprog = _SockFprog(len(program.instructions), ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, option, bytes(fprog))


#: A source to match: IP version (4 or 6), packed address, and port (``None``: any).
Source = tuple[int, bytes, "int | None"]
_U32 = struct.Struct("!I")


def source_of(host: str, port: int | None = None) -> Source:
    """``host`` (and ``port``) as an IP header shows it; an IPv4-mapped IPv6 address
    (a dual-stack socket's view of an IPv4 peer) is the IPv4 address it maps."""
    ip = ipaddress.ip_address(host.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.version, ip.packed, port


def match_sources(asm: Assembler, sources: Sequence[Source], *, matched: int, name: str) -> None:
    """Code that returns ``matched`` for a datagram from one of ``sources`` and falls
    through to what follows otherwise (registers clobbered; ``name`` keeps the labels
    apart). The IP header is read at :data:`NET`: IPv4 with options and IPv6 with
    extension headers match by address only where no port is asked for."""
    v4 = [(packed, port) for version, packed, port in sources if version == 4]
    v6 = [(packed, port) for version, packed, port in sources if version == 6]
    done = f"{name}-done"
    asm.op(LDB_ABS, NET)  # version << 4 | IHL
    asm.op(AND_K, 0xF0)
    asm.jump(JEQ_K, 0x40, None, f"{name}-not-v4")
    asm.goto(f"{name}-v4")
    asm.label(f"{name}-not-v4")
    asm.jump(JEQ_K, 0x60, None, f"{name}-not-v6")
    asm.goto(f"{name}-v6")
    asm.label(f"{name}-not-v6")
    asm.goto(done)

    asm.label(f"{name}-v4")
    if any(port is not None for _, port in v4):
        asm.op(LDB_ABS, NET)
        asm.jump(JEQ_K, 0x45, None, f"{name}-v4-options")
        asm.op(LDH_ABS, NET + 20)  # the UDP source port
        asm.op(TAX)
        asm.label(f"{name}-v4-options")  # X stays 0: no port matches
    asm.op(LD_W_ABS, NET + 12)  # the source address
    for i, (packed, port) in enumerate(v4):
        skip = f"{name}-v4-{i}"
        asm.jump(JEQ_K, _U32.unpack(packed)[0], None, skip)
        if port is None:
            asm.op(RET_K, matched)
        else:
            asm.op(TXA)
            asm.jump(JEQ_K, port, None, f"{skip}-reload")
            asm.op(RET_K, matched)
            asm.label(f"{skip}-reload")
            asm.op(LD_W_ABS, NET + 12)
        asm.label(skip)
    asm.goto(done)

    asm.label(f"{name}-v6")
    if any(port is not None for _, port in v6):
        asm.op(LDB_ABS, NET + 6)  # next header: UDP, or the ports are elsewhere
        asm.jump(JEQ_K, socket.IPPROTO_UDP, None, f"{name}-v6-no-port")
        asm.op(LDH_ABS, NET + 40)
        asm.op(TAX)
        asm.label(f"{name}-v6-no-port")  # X stays 0: no port matches
    for i, (packed, port) in enumerate(v6):
        skip = f"{name}-v6-{i}"
        for word in range(4):
            asm.op(LD_W_ABS, NET + 8 + 4 * word)
            asm.jump(JEQ_K, _U32.unpack_from(packed, 4 * word)[0], None, skip)
        if port is not None:
            asm.op(TXA)
            asm.jump(JEQ_K, port, None, skip)
        asm.op(RET_K, matched)
        asm.label(skip)
    asm.label(done)
