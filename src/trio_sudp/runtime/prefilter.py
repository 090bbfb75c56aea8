"""The server's cheapest checks: in the kernel as a socket filter, else in Python.

A datagram a correct client sends to the server always passes the header checks of
:class:`PrefilterRules` (SPEC §1-§2): its size is 20..2048 bytes, its version is one
the server speaks, its kind is ClientHandshake, Control or Data, its dst is the
server (0), its src lies in the range of configured client addresses, and its ``len``
fits the datagram and is the exact body size of a handshake or control of that
version (a data body is at least its overhead). Anything else is garbage.

:func:`build_server_filter` turns the rules (``protocol/prefilter.py``) into a
classic BPF program that :func:`attach_filter` attaches to the UDP socket
(``SO_ATTACH_FILTER``), so that the kernel drops garbage before it is queued: no
wakeup, no system call, no Python per datagram. :func:`prefilter_reason` applies the
same rules in Python where the kernel refuses the filter (not Linux, no classic BPF),
returning a :class:`DropReason`.

What a UDP socket filter sees (Linux, verified by tests/test_prefilter.py): offset 0
is the UDP header, so the SUDP header starts at offset 8, and the packet length is 8
plus the UDP payload; the same for IPv4, IPv6, and IPv4 arriving on a dual-stack IPv6
socket. With ``UDP_GRO`` on, the filter runs once per *coalesced* buffer: it sees the
first datagram's header and the length of the whole run (up to 64 KiB). A filter for
such a socket (``coalesced=True``) therefore checks no upper size bound, and the
datagrams after the first of a coalesced buffer are not checked by the kernel at all.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct
import sys
from typing import Final

import attrs

from ..protocol.constants import (
    HEADER_SIZE,
    MAX_DATAGRAM,
    SERVER_VADDR,
)
from ..protocol.prefilter import MAX_LEN, PrefilterRules, prefilter_reason

__all__ = [
    "PrefilterRules",
    "SocketFilter",
    "attach_filter",
    "build_server_filter",
    "detach_filter",
    "prefilter_reason",
    "replace_filter",
]

log = logging.getLogger("trio_sudp")

# ---------------------------------------------------------------- classic BPF

# <linux/bpf_common.h>: class | size | mode, class | op | source.
_LD_LEN: Final = 0x00 | 0x00 | 0x80  # BPF_LD | BPF_W | BPF_LEN: A = packet length
_LDH_ABS: Final = 0x00 | 0x08 | 0x20  # BPF_LD | BPF_H | BPF_ABS: A = u16 at k
_ADD_K: Final = 0x04 | 0x00 | 0x00  # BPF_ALU | BPF_ADD | BPF_K
_JEQ_K: Final = 0x05 | 0x10 | 0x00  # BPF_JMP | BPF_JEQ | BPF_K
_JGT_K: Final = 0x05 | 0x20 | 0x00
_JGE_K: Final = 0x05 | 0x30 | 0x00
_JGT_X: Final = 0x05 | 0x20 | 0x08  # A > X
_RET_K: Final = 0x06
_TAX: Final = 0x07 | 0x00  # BPF_MISC | BPF_TAX: X = A
#: A filter returns how many bytes to keep: all of them, or 0 to drop.
_KEEP_ALL: Final = 0xFFFFFFFF
_DROP: Final = 0
#: Where a UDP socket filter's offset 0 is: the UDP header, before the SUDP header.
_UDP_HEADER: Final = 8
_SOCK_FILTER = struct.Struct("=HBBI")  # struct sock_filter {u16 code; u8 jt, jf; u32 k}


@attrs.frozen(slots=True)
class SocketFilter:
    """A classic BPF program: ``(code, jt, jf, k)`` instructions, jumps resolved."""

    instructions: tuple[tuple[int, int, int, int], ...]

    @property
    def code(self) -> bytes:
        """The program as the kernel reads it: an array of ``struct sock_filter``."""
        return b"".join(_SOCK_FILTER.pack(*insn) for insn in self.instructions)


class _Assembler:
    """Classic BPF with labels: a jump target is a label name, or ``None`` for the next."""

    def __init__(self) -> None:
        self._code: list[tuple[int, str | None, str | None, int]] = []
        self._labels: dict[str, int] = {}

    def op(self, code: int, k: int = 0) -> None:
        self._code.append((code, None, None, k))

    def jump(self, code: int, k: int, true: str | None, false: str | None) -> None:
        self._code.append((code, true, false, k))

    def label(self, name: str) -> None:
        self._labels[name] = len(self._code)

    def program(self) -> SocketFilter:
        def offset(here: int, target: str | None) -> int:
            jump = 0 if target is None else self._labels[target] - here - 1
            if not 0 <= jump <= 255:  # classic BPF jumps forward, at most 255 instructions
                raise ValueError(f"jump from {here} to {target!r} out of range")
            return jump

        return SocketFilter(
            tuple(
                (code, offset(i, true), offset(i, false), k)
                for i, (code, true, false, k) in enumerate(self._code)
            )
        )


def build_server_filter(rules: PrefilterRules, *, coalesced: bool = False) -> SocketFilter:
    """The socket filter that keeps exactly the datagrams ``prefilter_reason`` passes.

    ``coalesced``: for a socket with ``UDP_GRO`` on, where one filter run sees a whole
    coalesced buffer (its first header, the length of all): no upper size bound, so
    that a run of valid datagrams is never refused.
    """
    asm = _Assembler()
    base = _UDP_HEADER
    asm.op(_LD_LEN)
    asm.jump(_JGE_K, base + HEADER_SIZE, None, "drop")
    if not coalesced:
        asm.jump(_JGT_K, base + MAX_DATAGRAM, "drop", None)
    asm.op(_TAX)  # X = UDP header + SUDP datagram
    asm.op(_LDH_ABS, base + 6)  # dst
    asm.jump(_JEQ_K, SERVER_VADDR, None, "drop")
    asm.op(_LDH_ABS, base + 4)  # src
    asm.jump(_JGE_K, rules.vaddr_min, None, "drop")
    asm.jump(_JGT_K, rules.vaddr_max, "drop", None)
    asm.op(_LDH_ABS, base + 2)  # len
    asm.op(_ADD_K, base + HEADER_SIZE)
    asm.jump(_JGT_X, 0, "drop", None)  # len > size - 20
    asm.op(_LDH_ABS, base)  # ver << 8 | kind
    bodies = sorted(rules.body_lengths().items())
    for i, ((version, kind), _) in enumerate(bodies):
        last = i == len(bodies) - 1
        asm.jump(_JEQ_K, version << 8 | kind, f"{version}.{kind}", "drop" if last else None)
    for (version, kind), (lowest, highest) in bodies:
        asm.label(f"{version}.{kind}")
        asm.op(_LDH_ABS, base + 2)
        if lowest == highest:
            asm.jump(_JEQ_K, lowest, "keep", "drop")
        elif highest >= MAX_LEN:
            asm.jump(_JGE_K, lowest, "keep", "drop")
        else:
            asm.jump(_JGE_K, lowest, None, "drop")
            asm.jump(_JGT_K, highest, "drop", "keep")
    asm.label("drop")
    asm.op(_RET_K, _DROP)
    asm.label("keep")
    asm.op(_RET_K, _KEEP_ALL)
    return asm.program()


class _SockFprog(ctypes.Structure):
    """``struct sock_fprog { unsigned short len; struct sock_filter *filter; }``."""

    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


# <asm-generic/socket.h> (the value on x86, ARM, RISC-V; Python does not name them).
_SO_ATTACH_FILTER: Final = getattr(socket, "SO_ATTACH_FILTER", 26)
_SO_DETACH_FILTER: Final = getattr(socket, "SO_DETACH_FILTER", 27)
_LINUX: Final = sys.platform.startswith("linux")


def attach_filter(sock: socket.socket, program: SocketFilter) -> bool:
    """Attach ``program`` to ``sock`` (replacing its filter); ``False`` if the kernel refuses.

    A refusal leaves any earlier filter in place (see :func:`replace_filter`).
    """
    if not _LINUX:
        return False
    code = ctypes.create_string_buffer(program.code, len(program.instructions) * 8)
    fprog = _SockFprog(len(program.instructions), ctypes.addressof(code))
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, bytes(fprog))
    except OSError as exc:
        log.debug("socket filter refused (%s): datagrams are checked in userspace", exc)
        return False
    return True


def detach_filter(sock: socket.socket) -> bool:
    """Remove ``sock``'s filter; ``False`` if it had none."""
    if not _LINUX:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_DETACH_FILTER, 0)
    except OSError:
        return False
    return True


def replace_filter(sock: socket.socket, program: SocketFilter) -> bool:
    """Attach ``program``, or, if the kernel refuses it, remove the earlier filter.

    Never leaves a stale filter (one of older rules, which might refuse a client
    added since) in place. Return whether ``program`` is now in the kernel.
    """
    if attach_filter(sock, program):
        return True
    detach_filter(sock)
    return False
