"""The server's cheapest checks: in the kernel as a socket filter, else in Python.

:func:`build_server_filter` turns the header rules every correct client's datagram
passes (:class:`PrefilterRules`: ``protocol/prefilter.py`` says what they are) into
a classic BPF program that :func:`attach_filter` attaches to the UDP socket
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

import logging
import socket
from collections.abc import Iterable
from typing import Final

from ..protocol.constants import (
    HEADER_SIZE,
    MAX_DATAGRAM,
    SERVER_VADDR,
)
from ..protocol.prefilter import MAX_LEN, PrefilterRules, prefilter_reason
from .bpf import (
    ADD_K,
    DROP,
    JEQ_K,
    JGE_K,
    JGT_K,
    JGT_X,
    KEEP_ALL,
    LD_LEN,
    LDH_ABS,
    LINUX,
    RET_K,
    TAX,
    Assembler,
    SocketFilter,
    match_sources,
    set_program,
    source_of,
)

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

#: Where a UDP socket filter's offset 0 is: the UDP header, before the SUDP header.
_UDP_HEADER: Final = 8
# <asm-generic/socket.h> (the value on x86, ARM, RISC-V; Python does not name them).
_SO_ATTACH_FILTER: Final = getattr(socket, "SO_ATTACH_FILTER", 26)
_SO_DETACH_FILTER: Final = getattr(socket, "SO_DETACH_FILTER", 27)


def build_server_filter(
    rules: PrefilterRules, *, coalesced: bool = False, banned: Iterable[str] = ()
) -> SocketFilter:
    """The socket filter that keeps exactly the datagrams ``prefilter_reason`` passes.

    ``coalesced``: for a socket with ``UDP_GRO`` on, where one filter run sees a whole
    coalesced buffer (its first header, the length of all): no upper size bound, so
    that a run of valid datagrams is never refused. ``banned``: source hosts whose
    datagrams are all dropped (``protocol/bans.py``).
    """
    asm = Assembler()
    if banned:
        match_sources(asm, sorted(source_of(h) for h in banned), matched=DROP, name="banned")
    base = _UDP_HEADER
    asm.op(LD_LEN)
    asm.jump(JGE_K, base + HEADER_SIZE, None, "drop")
    if not coalesced:
        asm.jump(JGT_K, base + MAX_DATAGRAM, "drop", None)
    asm.op(TAX)  # X = UDP header + SUDP datagram
    asm.op(LDH_ABS, base + 6)  # dst
    asm.jump(JEQ_K, SERVER_VADDR, None, "drop")
    asm.op(LDH_ABS, base + 4)  # src
    asm.jump(JGE_K, rules.vaddr_min, None, "drop")
    asm.jump(JGT_K, rules.vaddr_max, "drop", None)
    asm.op(LDH_ABS, base + 2)  # len
    asm.op(ADD_K, base + HEADER_SIZE)
    asm.jump(JGT_X, 0, "drop", None)  # len > size - 20
    asm.op(LDH_ABS, base)  # ver << 8 | kind
    bodies = sorted(rules.body_lengths().items())
    for i, ((version, kind), _) in enumerate(bodies):
        last = i == len(bodies) - 1
        asm.jump(JEQ_K, version << 8 | kind, f"{version}.{kind}", "drop" if last else None)
    for (version, kind), (lowest, highest) in bodies:
        asm.label(f"{version}.{kind}")
        asm.op(LDH_ABS, base + 2)
        if lowest == highest:
            asm.jump(JEQ_K, lowest, "keep", "drop")
        elif highest >= MAX_LEN:
            asm.jump(JGE_K, lowest, "keep", "drop")
        else:
            asm.jump(JGE_K, lowest, None, "drop")
            asm.jump(JGT_K, highest, "drop", "keep")
    asm.label("drop")
    asm.op(RET_K, DROP)
    asm.label("keep")
    asm.op(RET_K, KEEP_ALL)
    return asm.program()


def attach_filter(sock: socket.socket, program: SocketFilter) -> bool:
    """Attach ``program`` to ``sock`` (replacing its filter); ``False`` if the kernel refuses.

    A refusal leaves any earlier filter in place (see :func:`replace_filter`).
    """
    try:
        set_program(sock, _SO_ATTACH_FILTER, program)
    except OSError as exc:
        log.debug("socket filter refused (%s): datagrams are checked in userspace", exc)
        return False
    return True


def detach_filter(sock: socket.socket) -> bool:
    """Remove ``sock``'s filter; ``False`` if it had none."""
    if not LINUX:
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
