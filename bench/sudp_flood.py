"""One flooding process, flat out, and a plain receive loop to compare a server with.

    python bench/sudp_flood.py attack --mode garbage --target 10.201.0.1:7003 --seconds 10
    python bench/sudp_flood.py sink --bind 0.0.0.0:7999 --seconds 10

The attacker of ``bench_hostile.py`` (which runs it inside its namespaces; never point
it at anything else). Its datagrams are built before the loop starts and sent with
``sendmmsg(2)`` (through ctypes: one system call for a batch of ``--batch``
datagrams, each its own packet on the wire, none merged), from one connected UDP
socket per source address; without ``sendmmsg`` a tight ``send`` loop. Modes (the SUDP
wire format of SPEC.md, built here byte by byte):

garbage
    random bytes, 1..1400 long (1024 different datagrams, sent in turn);
handshake
    well-formed ClientHandshakes from the client's virtual address to the server:
    a fresh timestamp, random epochs, a valid P-256 point and a well-formed ECDSA
    signature made with the wrong key (so the header tag is right and only the
    signature check fails; for v3 the attacker is given the client's header key,
    the worst case: without it v3 handshakes fail the cheap tag check);
replay
    one captured datagram (``--replay HEX``: a real client's ClientHandshake), as is;
control
    Control(KeepAlive) messages for the client's current epoch (``--epoch``), fresh
    timestamps, a well-formed wrong signature;
handshake64
    ``handshake`` from every ``--source`` address in turn (bench_hostile gives 64).

Timestamps are refreshed every 50 ms (in place, between batches). On SIGTERM or
after ``--seconds`` it prints one JSON line: datagrams sent, seconds, rate, send
errors, and how it sent them.

``sink`` is the comparison for a server's receive loop: a plain Python loop
(``recv_into`` on a blocking UDP socket, counting) on a socket like the server's
(``--rcvbuf`` bytes of receive buffer, ``--gro`` for ``UDP_GRO``). It prints
``ready``, then on SIGTERM or after ``--seconds`` a JSON line with what it read.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import hashlib
import json
import os
import random
import signal
import socket
import struct
import sys
import time
import zlib
from collections.abc import Callable, Sequence

CLIENT_HANDSHAKE = 1
CONTROL = 3
KEEPALIVE = 0x1
SOL_UDP = 17
UDP_GRO = 104
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
MODES = ("garbage", "handshake", "replay", "control", "handshake64")
#: Send errors that an ICMP error or a full queue cause: counted, and sending goes on.
TRANSIENT = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EAGAIN, errno.ENOBUFS)


class Stop(Exception):
    """Raised by the signal handler and the alarm: ends the loop at once."""


def _stop(signum: int, frame: object) -> None:
    raise Stop


# ----------------------------------------------------------------------------- datagrams


def header_tag(version: int, header: bytes, key: bytes) -> bytes:
    """hb: CRC-32 (v2) or BLAKE2b-192 keyed with the peer's shared key (v3)."""
    if version == 2:
        return struct.pack(">I", zlib.crc32(header))
    return hashlib.blake2b(header, digest_size=24, key=key).digest()


def clock(version: int) -> int:
    """The header time: ms (v2) or µs (v3) since the epoch."""
    return time.time_ns() // (1_000_000 if version == 2 else 1_000)


def wrong_signature_parts() -> tuple[bytes, bytes]:
    """A valid uncompressed P-256 point and a well-formed r || s from an unrelated key."""
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    except ImportError:  # a point on the curve (the generator) and random r, s
        point = bytes.fromhex(
            "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
            "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"
        )
        return point, os.urandom(64)
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    r, s = decode_dss_signature(key.sign(os.urandom(32), ec.ECDSA(hashes.SHA256())))
    return point, r.to_bytes(32, "big") + s.to_bytes(32, "big")


def build_handshakes(
    version: int, key: bytes, src: int, dst: int, count: int
) -> Callable[[], list[bytes]]:
    """A function making ``count`` fresh ClientHandshakes (random epochs, wrong signatures)."""
    point, signature = wrong_signature_parts()
    tag_len = 4 if version == 2 else 24
    length = tag_len + 65 + 64
    epochs = [random.getrandbits(32) for _ in range(count)]

    def make() -> list[bytes]:
        now = clock(version)
        out = []
        for epoch in epochs:
            header = struct.pack(
                ">BBHHHIQ", version, CLIENT_HANDSHAKE, length, src, dst, epoch, now
            )
            out.append(header + header_tag(version, header, key) + point + signature)
        return out

    return make


def build_controls(
    version: int, key: bytes, src: int, dst: int, epoch: int, count: int
) -> Callable[[], list[bytes]]:
    """A function making ``count`` fresh Control(KeepAlive) messages with wrong signatures."""
    _, signature = wrong_signature_parts()
    tag_len = 4 if version == 2 else 24
    length = tag_len + 12 + 64

    def make() -> list[bytes]:
        now = clock(version)
        out = []
        for i in range(count):
            # Distinct times (µs/ms apart) so no two datagrams of a batch are identical.
            header = struct.pack(">BBHHHIQ", version, CONTROL, length, src, dst, epoch, now - i)
            body = struct.pack(">IQ", KEEPALIVE, 0)
            out.append(header + header_tag(version, header, key) + body + signature)
        return out

    return make


def build_garbage(count: int) -> list[bytes]:
    rng = random.Random(1234)
    return [rng.randbytes(rng.randint(1, 1400)) for _ in range(count)]


# ----------------------------------------------------------------------------- sending


class IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(IOVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint)]


class Batch:
    """Datagrams in ctypes buffers, ready for one ``sendmmsg`` on a connected socket."""

    def __init__(self, datagrams: Sequence[bytes]) -> None:
        self.count = len(datagrams)
        self.datagrams = list(datagrams)
        self.buffers = [ctypes.create_string_buffer(d, len(d)) for d in datagrams]
        self.iovecs = (IOVec * self.count)()
        self.msgs = (MMsgHdr * self.count)()
        for i, buf in enumerate(self.buffers):
            self.iovecs[i].iov_base = ctypes.addressof(buf)
            self.iovecs[i].iov_len = len(datagrams[i])
            hdr = self.msgs[i].msg_hdr
            hdr.msg_iov = ctypes.pointer(self.iovecs[i])
            hdr.msg_iovlen = 1

    def refill(self, datagrams: Sequence[bytes]) -> None:
        """New contents of the same lengths (fresh timestamps), in place."""
        for buf, data in zip(self.buffers, datagrams, strict=True):
            ctypes.memmove(buf, data, len(data))
        self.datagrams = list(datagrams)


def _sendmmsg() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function: Callable[..., int] = libc.sendmmsg
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.POINTER(MMsgHdr), ctypes.c_uint, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


def attack(args: argparse.Namespace) -> dict[str, object]:
    host, _, port = args.target.rpartition(":")
    target = (host, int(port))
    key = bytes.fromhex(args.shared_key)
    sources = args.source or [""]
    refresh: Callable[[], list[bytes]] | None = None
    if args.mode == "garbage":
        datagrams = build_garbage(1024)
    elif args.mode == "replay":
        datagrams = [bytes.fromhex(args.replay)] * args.batch
    elif args.mode in ("handshake", "handshake64"):
        refresh = build_handshakes(args.version, key, args.src_vaddr, args.dst_vaddr, args.batch)
        datagrams = refresh()
    else:
        refresh = build_controls(
            args.version, key, args.src_vaddr, args.dst_vaddr, args.epoch, args.batch
        )
        datagrams = refresh()
    if args.mode != "handshake64":
        sources = sources[:1]
    socks = []
    for source in sources:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        sock.bind((source, 0))
        sock.connect(target)
        socks.append(sock)
    batches = [Batch(datagrams[i : i + args.batch]) for i in range(0, len(datagrams), args.batch)]
    sendmmsg = None if args.no_sendmmsg else _sendmmsg()
    fds = [s.fileno() for s in socks]
    sent = errors = 0
    start = time.monotonic()
    next_refresh = start + 0.05
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.setitimer(signal.ITIMER_REAL, args.seconds)
    signal.signal(signal.SIGALRM, _stop)
    i = 0
    try:
        while True:
            batch = batches[i % len(batches)]
            if sendmmsg is not None:
                done = sendmmsg(fds[i % len(fds)], batch.msgs, batch.count, 0)
                if done < 0:
                    errors += 1
                    if ctypes.get_errno() not in TRANSIENT:
                        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
                else:
                    sent += done
            else:
                sock = socks[i % len(socks)]
                for data in batch.datagrams:
                    try:
                        sock.send(data)
                        sent += 1
                    except OSError as exc:
                        if exc.errno not in TRANSIENT:
                            raise
                        errors += 1
            i += 1
            if refresh is not None and (i & 7) == 0:
                now = time.monotonic()
                if now >= next_refresh:
                    fresh = refresh()
                    for b in batches:
                        b.refill(fresh[: b.count])
                    next_refresh = now + 0.05
    except Stop:
        pass
    seconds = time.monotonic() - start
    signal.setitimer(signal.ITIMER_REAL, 0)
    return {
        "mode": args.mode,
        "sent": sent,
        "seconds": round(seconds, 3),
        "rate": round(sent / seconds) if seconds > 0 else 0,
        "errors": errors,
        "sources": len(socks),
        "method": "sendmmsg" if sendmmsg is not None else "send loop",
        "batch": args.batch,
        "sizes": sorted({len(d) for d in datagrams})[:3],
    }


def sink(args: argparse.Namespace) -> dict[str, object]:
    host, _, port = args.bind.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if args.rcvbuf:
        try:  # the kernel doubles what it is asked for; FORCE ignores rmem_max (root)
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, args.rcvbuf // 2)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf // 2)
    if args.gro:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    sock.bind((host, int(port)))
    rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGALRM, _stop)
    signal.setitimer(signal.ITIMER_REAL, args.seconds)
    print("ready", flush=True)
    buf = bytearray(65536)
    recv_into = sock.recv_into
    received = 0
    start = time.monotonic()
    try:
        while True:
            recv_into(buf)
            received += 1
    except Stop:
        pass
    seconds = time.monotonic() - start
    return {"received": received, "seconds": round(seconds, 3), "rcvbuf": rcvbuf}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("attack", help="flood a target")
    a.add_argument("--mode", choices=MODES, required=True)
    a.add_argument("--target", required=True, help="IP:PORT")
    a.add_argument("--source", action="append", help="source address (repeatable)")
    a.add_argument("--version", type=int, choices=(2, 3), default=3)
    a.add_argument("--shared-key", default="", help="v3 header key, hex")
    a.add_argument("--src-vaddr", type=int, default=1)
    a.add_argument("--dst-vaddr", type=int, default=0)
    a.add_argument("--epoch", type=int, default=0, help="epoch of Control messages")
    a.add_argument("--replay", default="", help="the datagram to replay, hex")
    a.add_argument("--batch", type=int, default=256, help="datagrams per sendmmsg")
    a.add_argument("--seconds", type=float, default=10.0)
    a.add_argument("--no-sendmmsg", action="store_true", help="a send() loop instead")
    s = sub.add_parser("sink", help="a plain Python receive loop")
    s.add_argument("--bind", required=True, help="IP:PORT")
    s.add_argument("--rcvbuf", type=int, default=0, help="receive buffer, bytes (as ss shows)")
    s.add_argument("--gro", action="store_true", help="set UDP_GRO like the server's socket")
    s.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.command == "attack" and args.mode == "replay" and not args.replay:
        parser.error("--mode replay needs --replay HEX")
    result = attack(args) if args.command == "attack" else sink(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
