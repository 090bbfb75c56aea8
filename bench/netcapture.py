"""Capture IPv4 packets on interfaces with kernel timestamps (AF_PACKET), as JSON lines.

    ip netns exec NS python bench/netcapture.py --iface veth0 --iface sudp0 --seconds 10

A helper of the root benchmarks, run inside one of their namespaces. One
``AF_PACKET``/``SOCK_DGRAM`` socket per interface (so the link header is gone and
every record starts at the IP header), with ``SO_TIMESTAMPNS``: the kernel stamps
each packet where its packet taps see it — an outgoing packet when the device is
handed it (``dev_queue_xmit_nit``: for a TUN device, when the kernel queues it for
the process reading the device; for a veth, when the sending side transmits it), an
incoming one when the device delivers it to the stack (for a TUN device, when the
process's write reached the kernel). All sockets read the same clock
(``CLOCK_REALTIME``), in every namespace, so stamps from several captures compare.

Prints ``ready`` once every socket is bound, then one JSON object per ICMP or UDP
packet: ``{"if", "out" (sent by this host), "t" (ns), "proto", "src", "dst", "sport",
"dport", "len" (IP length), "icmp" ([type, id, seq]), "head" (hex of the first 48
bytes of the UDP payload), and with ``--payload`` "payload" (all of it)}``. The
sockets are read only once a second, so that the capture does not wake up per packet
and compete for the CPU with what it measures. Stops after ``--seconds`` or on
SIGTERM/SIGINT. With ``--udp-port`` only UDP packets to or from that port (and ICMP)
are printed.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SNAP = 128
#: How often the sockets are read (see :func:`capture`).
DRAIN_EVERY = 1.0


def parse(data: bytes, udp_port: int | None, payload: bool = False) -> dict[str, object] | None:
    """The fields of an IPv4 ICMP or UDP packet, or None for anything else."""
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    ihl = (data[0] & 0x0F) * 4
    total = struct.unpack_from("!H", data, 2)[0]
    proto = data[9]
    fields: dict[str, object] = {
        "proto": proto,
        "src": socket.inet_ntoa(data[12:16]),
        "dst": socket.inet_ntoa(data[16:20]),
        "len": total,
    }
    body = data[ihl:]
    if proto == 1 and len(body) >= 8:
        kind, _code, _sum, ident, seq = struct.unpack_from("!BBHHH", body)
        fields["icmp"] = [kind, ident, seq]
        return fields
    if proto == 17 and len(body) >= 8:
        sport, dport = struct.unpack_from("!HH", body)
        if udp_port is not None and udp_port not in (sport, dport):
            return None
        fields.update(sport=sport, dport=dport, head=body[8:56].hex())
        if payload:
            fields["payload"] = body[8:].hex()
        return fields
    return None


class Stop(Exception):
    """SIGTERM or SIGINT: drain what is queued, print it, and end."""


def _stop(signum: int, frame: object) -> None:
    raise Stop


def drain(
    socks: Sequence[tuple[socket.socket, str]], snap: int, udp_port: int | None, payload: bool
) -> None:
    """Print every packet queued on the sockets."""
    out = sys.stdout
    cmsg_space = socket.CMSG_SPACE(16)
    for sock, iface in socks:
        while True:
            try:
                data, ancillary, _flags, address = sock.recvmsg(snap, cmsg_space)
            except BlockingIOError:
                break
            fields = parse(data, udp_port, payload)
            if fields is None:
                continue
            stamp = 0
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", value[:16])
                    stamp = sec * 1_000_000_000 + nsec
            if not stamp:
                stamp = time.time_ns()
            fields.update({"if": iface, "out": address[2] == PACKET_OUTGOING, "t": stamp})
            out.write(json.dumps(fields) + "\n")
    out.flush()


def capture(
    ifaces: Sequence[str], seconds: float, udp_port: int | None, payload: bool = False
) -> None:
    """Capture until ``seconds`` passed or a signal came.

    The sockets are read only every DRAIN_EVERY seconds (the kernel stamped each
    packet when it queued it): a reader woken by every packet would compete for the
    CPU with the very processes whose timing is being measured.
    """
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    socks: list[tuple[socket.socket, str]] = []
    for iface in ifaces:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        sock.bind((iface, ETH_P_ALL))
        sock.setblocking(False)
        socks.append((sock, iface))
    # Packets queued between socket() and bind() may come from any interface: drop them.
    for sock, _ in socks:
        while True:
            try:
                sock.recv(1)
            except BlockingIOError:
                break
    snap = 65536 if payload else SNAP
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, DRAIN_EVERY))
            drain(socks, snap, udp_port, payload)
    except Stop:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    drain(socks, snap, udp_port, payload)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--iface", action="append", required=True, help="repeatable")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--udp-port", type=int, default=None)
    parser.add_argument("--payload", action="store_true", help="print whole UDP payloads")
    args = parser.parse_args(argv)
    capture(args.iface, args.seconds, args.udp_port, args.payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
