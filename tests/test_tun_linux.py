"""The Linux TUN device: error reporting here, real packets inside network namespaces.

The ``scenario_*`` functions run in a fresh Python inside a namespace the test
created (``python tests/test_tun_linux.py scenario_x``), so no device, address or
route ever appears in the host's root namespace.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import struct
import subprocess
from typing import Any

import pytest
import trio
import trio.testing

from netns import (
    PREFIX,
    Topology,
    cleanup_stale_namespaces,
    netns1,
    netns_topology,
    require_netns,
    run_in,
    run_scenario,
    scenario_main,
    wait_until,
)
from trio_sudp.testing.packets import TCP_ACK, tcp_segment
from trio_sudp.tun import TunError, open_tun
from trio_sudp.tun.linux import LinuxTun, check_ifname
from trio_sudp.tun.netconfig import configure_interface
from trio_sudp.vpn.coalesce import PLAIN_HEADER, coalesce
from trio_sudp.vpn.segment import (
    NATIVE,
    SegmentDrop,
    Segmenter,
    SegmentStats,
    best_segmenter,
    pure_sums,
)

__all__ = ["netns1"]  # the fixture, imported for pytest

THIS = os.path.abspath(__file__)
TIME_LIMIT = 60

# --- IP packets, built and parsed by hand --------------------------------------


def pseudo_header(src: str, dst: str, length: int, proto: int = 6) -> bytes:
    """The TCP/UDP checksum pseudo-header for IPv4 or IPv6 addresses."""
    a, b = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if len(a) == 4:
        return a + b + struct.pack("!xBH", proto, length)
    return a + b + struct.pack("!I3xB", length, proto)


def inet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def ip_packet(src: str, dst: str, proto: int, body: bytes) -> bytes:
    """An IPv4 or IPv6 packet around ``body`` (an upper-layer segment)."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        header = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0x1234, 0, 64, proto, 0, s.packed, d.packed
        )
        header = header[:10] + struct.pack("!H", inet_checksum(header)) + header[12:]
        return header + body
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), proto, 64, s.packed, d.packed) + body


def udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP datagram in an IPv4 or IPv6 packet, with a correct checksum."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    length = 8 + len(payload)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, 17, length)
    else:
        pseudo = s.packed + d.packed + struct.pack("!I3xB", length, 17)
    segment = struct.pack("!HHHH", sport, dport, length, 0) + payload
    checksum = inet_checksum(pseudo + segment) or 0xFFFF
    return ip_packet(src, dst, 17, segment[:6] + struct.pack("!H", checksum) + segment[8:])


def icmp_echo(src: str, dst: str, icmp_type: int, ident: int, seq: int, data: bytes) -> bytes:
    """An IPv4 ICMP echo request (type 8) or reply (type 0)."""
    body = struct.pack("!BBHHH", icmp_type, 0, 0, ident, seq) + data
    body = body[:2] + struct.pack("!H", inet_checksum(body)) + body[4:]
    return ip_packet(src, dst, 1, body)


def parse(packet: bytes) -> tuple[str, str, int, bytes]:
    """``(source, destination, protocol, upper-layer bytes)`` of an IPv4/IPv6 packet."""
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 0xF) * 4
        (total,) = struct.unpack_from("!H", packet, 2)
        assert total == len(packet), "IPv4 total length must match the packet read"
        assert inet_checksum(packet[:ihl]) == 0, "IPv4 header checksum"
        src, dst = ipaddress.IPv4Address(packet[12:16]), ipaddress.IPv4Address(packet[16:20])
        return str(src), str(dst), packet[9], packet[ihl:]
    assert packet[0] >> 4 == 6
    (length,) = struct.unpack_from("!H", packet, 4)
    assert length + 40 == len(packet), "IPv6 payload length must match the packet read"
    src6, dst6 = ipaddress.IPv6Address(packet[8:24]), ipaddress.IPv6Address(packet[24:40])
    return str(src6), str(dst6), packet[6], packet[40:]


async def read_matching(tun: LinuxTun, wanted: object, limit: float = 10) -> bytes:
    """Read packets until one whose ``parse`` starts with ``wanted``'s fields; bounded."""
    with trio.fail_after(limit):
        while True:
            try:
                packet = tun.read_nowait()
            except BlockingIOError:
                await tun.wait_readable()
                continue
            if _matches(packet, wanted):
                return packet


def _matches(packet: bytes, wanted: object) -> bool:
    src, dst, proto, _ = parse(packet)
    assert isinstance(wanted, tuple)
    return (src, dst, proto)[: len(wanted)] == wanted


# --- scenarios, run inside a namespace ------------------------------------------

V4_LOCAL, V4_PEER = "10.201.0.1", "10.201.0.2"
SYN = 0x02
V6_LOCAL, V6_PEER = "fd00:201::1", "fd00:201::2"


def _link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


async def scenario_kernel_to_tun() -> None:
    """UDP sent by the kernel to addresses routed into the TUN is read, byte for byte."""
    with trio.fail_after(30), open_tun("sudp%d", mtu=1400) as tun:
        assert isinstance(tun, LinuxTun)
        assert tun.name.startswith("sudp")
        assert tun.mtu == 1400
        addresses = [f"{V4_LOCAL}/24", f"{V6_LOCAL}/64"]
        async with configure_interface(tun.name, addresses=addresses, mtu=1400):
            for local, peer, family in (
                (V4_LOCAL, V4_PEER, socket.AF_INET),
                (V6_LOCAL, V6_PEER, socket.AF_INET6),
            ):
                sock = trio.socket.socket(family, socket.SOCK_DGRAM)
                await sock.bind((local, 40000))
                payload = os.urandom(200)
                await sock.sendto(payload, (peer, 9999))
                packet = await read_matching(tun, (local, peer, 17))
                expected = udp_packet(local, peer, 40000, 9999, payload)
                # Addresses, protocol and the whole UDP segment (header, checksum, payload);
                # the kernel picks the IPv4 ID and the IPv6 flow label.
                assert parse(packet) == parse(expected)
                sock.close()


async def scenario_tun_to_kernel() -> None:
    """UDP written into the TUN reaches a kernel socket, for IPv4 and IPv6."""
    with trio.fail_after(30), LinuxTun.open("sudp%d") as tun:
        addresses = [f"{V4_LOCAL}/24", f"{V6_LOCAL}/64"]
        async with configure_interface(tun.name, addresses=addresses):
            for local, peer, family in (
                (V4_LOCAL, V4_PEER, socket.AF_INET),
                (V6_LOCAL, V6_PEER, socket.AF_INET6),
            ):
                sock = trio.socket.socket(family, socket.SOCK_DGRAM)
                await sock.bind((local, 0))
                port = sock.getsockname()[1]
                payload = os.urandom(300)
                tun.write_nowait(udp_packet(peer, local, 5555, port, payload))
                data, source = await sock.recvfrom(2048)
                assert data == payload
                assert source[:2] == (peer, 5555)
                sock.close()


async def scenario_icmp_echo() -> None:
    """Ping both ways: the kernel answers an echo written into the TUN, and receives our reply."""
    with trio.fail_after(30), LinuxTun.open("sudp%d") as tun:
        async with configure_interface(tun.name, addresses=[f"{V4_LOCAL}/24"], peer=V4_PEER):
            # Into the kernel: an echo request from the peer gets an echo reply back.
            tun.write_nowait(icmp_echo(V4_PEER, V4_LOCAL, 8, 0x4242, 1, b"ping from the peer"))
            reply = await read_matching(tun, (V4_LOCAL, V4_PEER, 1))
            icmp = parse(reply)[3]
            assert icmp[0] == 0
            assert icmp[4:] == struct.pack("!HH", 0x4242, 1) + b"ping from the peer"
            assert inet_checksum(icmp) == 0

            # From the kernel: a raw-socket ping to the peer comes out; our reply goes in.
            raw = trio.socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            request = icmp_echo(V4_LOCAL, V4_PEER, 8, 0x1717, 7, b"ping from the kernel")[20:]
            await raw.sendto(request, (V4_PEER, 0))
            seen = parse(await read_matching(tun, (V4_LOCAL, V4_PEER, 1)))[3]
            assert seen == request
            tun.write_nowait(icmp_echo(V4_PEER, V4_LOCAL, 0, 0x1717, 7, b"ping from the kernel"))
            while True:
                data, (source, _) = await raw.recvfrom(2048)
                if source == V4_PEER and data[20] == 0:  # skip our own echo request
                    break
            assert data[24:28] == struct.pack("!HH", 0x1717, 7)
            raw.close()


async def scenario_drain_batch() -> None:
    """One wakeup, then every queued packet is read without awaiting (the TUN task's loop)."""
    count = 64
    with trio.fail_after(30), LinuxTun.open("sudp%d") as tun:
        async with configure_interface(tun.name, addresses=[f"{V4_LOCAL}/24"]):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for i in range(count):
                sock.sendto(struct.pack("!I", i), (V4_PEER, 9))
            sock.close()
            await tun.wait_readable()
            received = []
            while True:
                try:
                    packet = tun.read_nowait()
                except BlockingIOError:
                    break
                _, dst, proto, segment = parse(packet)
                if (dst, proto) == (V4_PEER, 17):
                    received.append(struct.unpack("!I", segment[8:])[0])
            assert received == list(range(count))


async def scenario_gso_write_reaches_a_tcp_socket() -> None:
    """With IFF_VNET_HDR, segments merged by ``coalesce`` are one write the kernel's TCP takes.

    The test plays the TCP peer by hand through the TUN: SYN in, SYN-ACK out, ACK in,
    then 20 data segments that ``coalesce`` merges into one GSO write; a kernel socket
    receives the bytes, and its ACK (read from the TUN) acknowledges all of them.
    """
    with trio.fail_after(30), LinuxTun.open("sudp%d", vnet_header=True) as tun:
        assert tun.vnet_header
        addresses = [f"{V4_LOCAL}/24", f"{V6_LOCAL}/64"]
        async with configure_interface(tun.name, addresses=addresses):
            for local, peer, family in (
                (V4_LOCAL, V4_PEER, socket.AF_INET),
                (V6_LOCAL, V6_PEER, socket.AF_INET6),
            ):
                listener = trio.socket.socket(family, socket.SOCK_STREAM)
                await listener.bind((local, 0))
                listener.listen(1)
                port = listener.getsockname()[1]
                mss = b"\x02\x04\x05\x00"  # MSS 1280
                tun.write_nowait(
                    tcp_segment(peer, local, seq=999, ack=0, flags=SYN, dport=port, options=mss)
                )
                syn_ack = await read_matching(tun, (local, peer, 6))
                tcp = parse(syn_ack)[3]
                assert tcp[13] == SYN | TCP_ACK
                # What the kernel hands a vnet-header TUN is complete: checksum included.
                assert inet_checksum(pseudo_header(local, peer, len(tcp)) + tcp) == 0
                their_seq = struct.unpack("!I", tcp[4:8])[0] + 1
                fields = {"ack": their_seq, "dport": port, "window": 4000}
                tun.write_nowait(tcp_segment(peer, local, seq=1000, **fields))
                conn, _ = await listener.accept()
                data = os.urandom(20 * 1200)
                segments = [
                    tcp_segment(peer, local, data[i : i + 1200], seq=1000 + i, ident=i, **fields)
                    for i in range(0, len(data), 1200)
                ]
                (write,) = coalesce(segments)
                assert write[0] != PLAIN_HEADER
                tun.write_vectored_nowait(write)
                received = b""
                while len(received) < len(data):
                    received += await conn.recv(65536)
                assert received == data
                while True:  # the kernel acknowledges everything
                    tcp = parse(await read_matching(tun, (local, peer, 6)))[3]
                    if struct.unpack("!I", tcp[8:12])[0] == 1000 + len(data):
                        break
                conn.close()
                listener.close()


def check_packet(packet: bytes) -> tuple[str, str, int, bytes]:
    """``parse``, and the TCP or UDP checksum verified (the slow sum of this module)."""
    src, dst, proto, body = parse(packet)
    if proto in (6, 17):
        assert inet_checksum(pseudo_header(src, dst, len(body), proto) + body) == 0, "checksum"
    return src, dst, proto, body


async def read_packets(tun: LinuxTun) -> list[bytes]:
    """The packets of the next read, waiting for one."""
    while True:
        try:
            return tun.read_packets_nowait()
        except BlockingIOError:
            await tun.wait_readable()


FIN = 0x01
TSO_MTU = 1500
# The options of our SYN-ACK: MSS 1460, NOP, window scale 7 (an 8 MB window).
SYN_ACK_OPTIONS = b"\x02\x04\x05\xb4\x01\x03\x03\x07"


async def bulk_tcp_into_tun(
    tun: LinuxTun, local: str, peer: str, family: int, data: bytes
) -> tuple[bytes, int]:
    """A kernel socket sends ``data`` to ``peer``, whose TCP this plays through the TUN.

    Every packet read is checked (``check_packet``, at most the MTU); returns the byte
    stream put back together from the segments, and the most data segments one
    read gave.
    """
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    await sock.bind((local, 0))
    sport = sock.getsockname()[1]
    ours = 70000  # our initial sequence number
    theirs = -1
    chunks: dict[int, bytes] = {}  # offset in the stream -> payload not yet in order
    stream = bytearray()
    fin_at = -1
    most = 0
    connected = trio.Event()

    async def sender() -> None:
        await sock.connect((peer, 5201))
        connected.set()
        view = memoryview(data)
        while view:
            view = view[await sock.send(view[:262144]) :]
        sock.shutdown(socket.SHUT_WR)

    def reply(flags: int = TCP_ACK, **fields: Any) -> None:
        ack = (theirs + 1 + len(stream) + (len(stream) == fin_at)) & 0xFFFFFFFF
        segment = tcp_segment(
            peer, local, seq=ours + (flags == TCP_ACK), ack=ack, flags=flags,
            sport=5201, dport=sport, window=65535, **fields,
        )  # fmt: skip
        tun.write_nowait(segment)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        while not (len(stream) == fin_at and connected.is_set()):
            packets = await read_packets(tun)
            data_segments = 0
            for packet in packets:
                assert len(packet) <= TSO_MTU
                src, dst, proto, tcp = check_packet(packet)
                if (src, dst, proto) != (local, peer, 6) or tcp[:2] != struct.pack("!H", sport):
                    continue
                seq, flags = struct.unpack_from("!I", tcp, 4)[0], tcp[13]
                if flags & SYN:
                    theirs = seq
                    reply(SYN | TCP_ACK, options=SYN_ACK_OPTIONS)
                    continue
                payload = tcp[(tcp[12] >> 4) * 4 :]
                offset = (seq - theirs - 1) & 0xFFFFFFFF
                if payload:
                    data_segments += 1
                    if offset >= len(stream):
                        chunks[offset] = payload
                if flags & FIN:
                    fin_at = offset + len(payload)
            most = max(most, data_segments)
            while len(stream) in chunks:
                stream += chunks.pop(len(stream))
            if data_segments or fin_at >= 0:
                reply()
    sock.close()
    print(f"{family.name}: {len(stream)} bytes, at most {most} segments in one read")
    return bytes(stream), most


async def scenario_tso_reads(sums: str) -> None:
    """With TSO on, the kernel's bulk TCP comes out as 64 KB super-packets, which
    ``read_packets_nowait`` cuts into valid packets carrying exactly the bytes sent."""
    with trio.fail_after(40):
        tun = LinuxTun.open(
            "sudp%d",
            mtu=TSO_MTU,
            tso=True,
            segmenter=Segmenter(pure_sums) if sums == "pure" else best_segmenter(),
        )
        with tun:
            assert tun.tso and tun.vnet_header
            addresses = [f"{V4_LOCAL}/24", f"{V6_LOCAL}/64"]
            async with configure_interface(tun.name, addresses=addresses):
                for local, peer, family in (
                    (V4_LOCAL, V4_PEER, socket.AF_INET),
                    (V6_LOCAL, V6_PEER, socket.AF_INET6),
                ):
                    data = os.urandom(3 << 20)
                    stream, most = await bulk_tcp_into_tun(tun, local, peer, family, data)
                    assert stream == data
                    assert most > 10, "reads of many segments: TSO super-packets"
            stats = tun.segment_stats
            assert isinstance(stats, SegmentStats)
            assert stats.gso_reads > 0 and stats.segments > 2 * stats.gso_reads
            assert stats.drops == {}


async def scenario_tso_partial_checksums() -> None:
    """With TUN_F_CSUM the kernel leaves UDP checksums to the device: they come out done."""
    with trio.fail_after(30), LinuxTun.open("sudp%d", tso=True) as tun:
        addresses = [f"{V4_LOCAL}/24", f"{V6_LOCAL}/64"]
        async with configure_interface(tun.name, addresses=addresses):
            for local, peer, family in (
                (V4_LOCAL, V4_PEER, socket.AF_INET),
                (V6_LOCAL, V6_PEER, socket.AF_INET6),
            ):
                sock = trio.socket.socket(family, socket.SOCK_DGRAM)
                await sock.bind((local, 40000))
                for size in (0, 1, 2, 333, 1200):
                    payload = os.urandom(size)
                    await sock.sendto(payload, (peer, 9999))
                    packet = await read_matching(tun, (local, peer, 17))  # read_nowait
                    expected = udp_packet(local, peer, 40000, 9999, payload)
                    assert check_packet(packet) == parse(expected)
                sock.close()
        stats = tun.segment_stats
        assert stats is not None and stats.checksums >= 10, "partial checksums were completed"


async def scenario_close() -> None:
    """close() wakes a waiting reader with ClosedResourceError and deletes the interface."""
    with trio.fail_after(30):
        tun = LinuxTun.open("sudpclose")
        assert _link_exists("sudpclose")
        async with trio.open_nursery() as nursery:
            ready = trio.Event()
            outcome: list[BaseException] = []

            async def reader() -> None:
                ready.set()
                try:
                    await tun.wait_readable()
                except trio.ClosedResourceError as exc:
                    outcome.append(exc)

            nursery.start_soon(reader)
            await ready.wait()
            await trio.testing.wait_all_tasks_blocked()
            tun.close()
        assert len(outcome) == 1
        assert isinstance(outcome[0], trio.ClosedResourceError)
        tun.close()  # idempotent
        assert tun.closed
        assert tun.fileno() == -1
        with pytest.raises(trio.ClosedResourceError):
            tun.read_nowait()
        with pytest.raises(trio.ClosedResourceError):
            tun.write_nowait(b"\x45")
        with pytest.raises(trio.ClosedResourceError):
            await tun.wait_readable()
        await wait_until(lambda: not _link_exists("sudpclose"))


async def scenario_errors() -> None:
    """Refusals come back as one-line TunErrors and leak no fd or device."""
    fds_before = len(os.listdir("/proc/self/fd"))
    with LinuxTun.open("sudpbusy") as first:
        with pytest.raises(TunError, match="used by another open TUN") as busy:
            LinuxTun.open("sudpbusy")
        assert busy.value.errno == errno.EBUSY
        assert first.name == "sudpbusy"
    with pytest.raises(TunError, match="not a TUN device"):
        LinuxTun.open("lo")
    with pytest.raises(TunError, match="cannot set MTU 20"):
        LinuxTun.open("sudpmtu", mtu=20)
    await wait_until(lambda: not _link_exists("sudpmtu"))
    assert len(os.listdir("/proc/self/fd")) == fds_before
    with LinuxTun.open("sudp%d") as tun:
        with pytest.raises(OSError, match="Invalid argument"):
            tun.write_nowait(b"\x00not an IP packet")
        with pytest.raises(BlockingIOError):
            tun.read_nowait()  # the interface is down: nothing is ever queued


# --- tests ----------------------------------------------------------------------


@pytest.mark.netns
@pytest.mark.parametrize(
    "scenario",
    [
        "scenario_kernel_to_tun",
        "scenario_tun_to_kernel",
        "scenario_icmp_echo",
        "scenario_drain_batch",
        "scenario_gso_write_reaches_a_tcp_socket",
        "scenario_tso_partial_checksums",
        "scenario_close",
        "scenario_errors",
    ],
)
async def test_in_namespace(netns1: Topology, scenario: str) -> None:
    with trio.fail_after(TIME_LIMIT):
        await run_scenario(netns1[0], THIS, scenario)


@pytest.mark.netns
@pytest.mark.parametrize("sums", ["pure", pytest.param("best", id="native" if NATIVE else "best")])
async def test_tso_reads_in_namespace(netns1: Topology, sums: str) -> None:
    with trio.fail_after(TIME_LIMIT):
        await run_scenario(netns1[0], THIS, "scenario_tso_reads", sums)


def _namespaces() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


@pytest.mark.netns
def test_namespaces_are_deleted_even_on_ctrl_c() -> None:
    require_netns()
    seen: dict[str, Any] = {}

    def interrupted_test() -> None:
        with netns_topology(3) as topo:
            seen["names"] = {node.ns for node in topo.nodes}
            assert seen["names"] <= _namespaces()
            assert topo[1].addr4(0) == "10.200.0.2"
            assert "10.200.0.2/24" in run_in(topo[1], ["ip", "-4", "addr"]).stdout
            seen["sleeper"] = topo.spawn(2, ["sleep", "60"])
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted_test()
    assert not seen["names"] & _namespaces()
    assert seen["sleeper"].poll() is not None


@pytest.mark.netns
def test_stale_namespaces_are_cleaned_up() -> None:
    require_netns()
    stale = f"{PREFIX}999999999-000000-0"  # no such pid
    subprocess.run(["ip", "netns", "add", stale], check=True, timeout=10)
    try:
        assert stale in cleanup_stale_namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True, timeout=10)
    assert stale not in _namespaces()


def test_missing_device_node() -> None:
    with pytest.raises(TunError, match=r"cannot open /nonexistent/tun: no such device") as info:
        LinuxTun.open("x", path="/nonexistent/tun")
    assert "modprobe tun" in info.value.reason
    assert info.value.errno == errno.ENOENT


def test_permission_denied(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(TunError) as info:
        LinuxTun.open("sudp0")
    assert info.value.reason == (
        "cannot open /dev/net/tun: permission denied (run as root or grant CAP_NET_ADMIN)"
    )


def test_setiff_not_permitted(monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl

    closed: list[int] = []
    monkeypatch.setattr(os, "open", lambda *args: 99)
    monkeypatch.setattr(os, "close", closed.append)

    def refuse(*args: object) -> bytes:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(fcntl, "ioctl", refuse)
    with pytest.raises(TunError, match=r"operation not permitted .*CAP_NET_ADMIN"):
        LinuxTun.open("sudp0")
    assert closed == [99]


class FakeTun:
    """``/dev/net/tun`` played by a SOCK_SEQPACKET pair (one read, one message).

    ``ioctl`` answers ``TUNSETIFF`` and takes or refuses ``TUNSETOFFLOAD``; ``send``
    is the kernel handing a read (vnet header first) to the device.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, offload_error: int | None) -> None:
        import fcntl

        from trio_sudp.tun import linux

        self.kernel, device = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        device.setblocking(False)
        self.fd = device.detach()
        self.offloads: list[int] = []

        def ioctl(fd: int, request: int, arg: Any, *rest: Any) -> Any:
            assert fd == self.fd
            if request == linux._TUNSETIFF:
                return b"sudpfake0".ljust(16, b"\0") + bytes(arg)[16:]
            assert request == linux._TUNSETOFFLOAD
            self.offloads.append(arg)
            if offload_error is not None:
                raise OSError(offload_error, os.strerror(offload_error))
            return 0

        monkeypatch.setattr(os, "open", lambda *args: self.fd)
        monkeypatch.setattr(fcntl, "ioctl", ioctl)

    def send(self, read: bytes) -> None:
        self.kernel.send(read)


def _gso_read(count: int) -> tuple[bytes, list[bytes]]:
    """A super-packet of ``count`` segments as a TSO TUN reads it, and its segments."""
    segments = [
        tcp_segment(V4_LOCAL, V4_PEER, bytes([i]) * 1000, seq=1000 * i, ident=i)
        for i in range(count)
    ]
    (write,) = coalesce(segments)
    return b"".join(bytes(part) for part in write), segments


def test_tso_reads_come_back_as_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTun(monkeypatch, offload_error=None)
    with LinuxTun.open("sudpfake%d", tso=True, segmenter=Segmenter(pure_sums)) as tun:
        assert tun.tso and tun.vnet_header
        assert fake.offloads == [0x01 | 0x02 | 0x04]  # TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
        read, segments = _gso_read(5)
        fake.send(read)
        assert tun.read_packets_nowait() == segments
        fake.send(read)
        assert [tun.read_nowait() for _ in segments] == segments  # one by one
        with pytest.raises(BlockingIOError):
            tun.read_nowait()
        fake.send(read)
        assert tun.read_nowait() == segments[0]
        assert tun.read_packets_nowait() == segments[1:]  # the rest of that read
        # A read the kernel would never send is dropped, counted, and the next taken.
        fake.send(b"\x01\x05" + read[2:])  # gso_type UDP_L4
        fake.send(bytes(10) + segments[0])
        assert tun.read_packets_nowait() == [segments[0]]
        with pytest.raises(BlockingIOError):
            tun.read_packets_nowait()
        stats = tun.segment_stats
        assert stats is not None
        assert (stats.gso_reads, stats.segments) == (3, 15)
        assert stats.drops == {SegmentDrop.GSO_UNSUPPORTED: 1}
    with pytest.raises(trio.ClosedResourceError):
        tun.read_packets_nowait()
    with pytest.raises(trio.ClosedResourceError):
        tun.read_nowait()


def test_a_kernel_that_refuses_offloads_leaves_plain_reads(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeTun(monkeypatch, offload_error=errno.EINVAL)
    with caplog.at_level(logging.DEBUG, logger="trio_sudp"):
        tun = LinuxTun.open("sudpfake%d", tso=True)
    with tun:
        assert not tun.tso and tun.vnet_header and tun.segment_stats is None
        assert [r.getMessage() for r in caplog.records] == [
            "sudpfake0: no TSO reads, the kernel refused TUNSETOFFLOAD: [Errno 22] Invalid argument"
        ]
        packet = tcp_segment(V4_LOCAL, V4_PEER, b"p" * 100, seq=1)
        fake.send(bytes(10) + packet)
        assert tun.read_packets_nowait() == [packet]
        fake.send(bytes(10) + packet)
        assert tun.read_nowait() == packet
        with pytest.raises(BlockingIOError):
            tun.read_packets_nowait()


@pytest.mark.parametrize("name", ["", "a" * 16, "bad/name", "sp ace", "é", "a:b", "%d%d"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(TunError, match="invalid interface name"):
        check_ifname(name)


def test_valid_names() -> None:
    assert check_ifname("sudp%d") == b"sudp%d"
    assert check_ifname("a" * 15) == b"a" * 15


if __name__ == "__main__":
    scenario_main(globals())
