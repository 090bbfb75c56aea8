"""The control socket: owner-only, one JSON request and answer, hostile input survives."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sudp.daemon.control import ControlError, request, serve_control
from trio_sudp.daemon.show import format_status


async def answer(command: str, args: dict[str, Any]) -> dict[str, Any]:
    if command == "show":
        return {"ok": True, "args": args}
    raise ControlError(f"unknown command {command!r}")


def raw_exchange(path: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def with_server(path: Path, body: Any) -> Any:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, path, answer)
            result = await trio.to_thread.run_sync(body)
            nursery.cancel_scope.cancel()
    return result


def test_request_and_answer(tmp_path: Path) -> None:
    path = tmp_path / "run" / "sudp0.sock"

    def body() -> dict[str, Any]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        return request(path, "show")

    assert trio.run(with_server, path, body) == {"ok": True, "args": {}}
    assert not path.exists()  # removed on exit


def test_errors_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "sudp0.sock"

    def body() -> None:
        with pytest.raises(ControlError, match="unknown command 'explode'"):
            request(path, "explode")

    trio.run(with_server, path, body)
    with pytest.raises(ControlError, match="no such control socket"):
        request(path, "show")


def test_stale_socket_is_replaced_and_a_live_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "sudp0.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # a daemon that died left its socket file

    def body() -> None:
        assert request(path, "show")["ok"] is True

        async def second() -> None:
            await serve_control(path, answer)

        with pytest.raises(ControlError, match="another trio-sudp daemon"):
            trio.run(second)

    trio.run(with_server, path, body)


def test_world_writable_directory_refused(tmp_path: Path) -> None:
    directory = tmp_path / "open"
    directory.mkdir()
    os.chmod(directory, 0o777)

    async def main() -> None:
        await serve_control(directory / "x.sock", answer)

    with pytest.raises(ControlError, match="not writable by others"):
        trio.run(main)


@settings(max_examples=40, deadline=None)
@given(st.one_of(st.binary(max_size=6000), st.text(max_size=200).map(str.encode)))
def test_hostile_requests_get_an_error_and_the_server_survives(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.sock"

        def body() -> None:
            reply = json.loads(raw_exchange(path, data))
            assert isinstance(reply, dict)
            assert "error" in reply or reply.get("ok") is True
            assert request(path, "show")["ok"] is True  # still serving

        trio.run(with_server, path, body)


def test_format_status_reads_like_wg_show() -> None:
    text = format_status(
        {
            "role": "server",
            "interface": "sudp0",
            "listen": "0.0.0.0:7000",
            "public_key": "abcd",
            "tunnel": ["10.0.0.1/24"],
            "mtu": 1400,
            "device": {"offload": True, "rx_packets": 12, "tx_packets": 2000, "tx_gso_writes": 50},
            "udp": {
                "rx_datagrams": 2010,
                "tx_datagrams": 30,
                "rx_strangers": 1900,
                "kernel_drops": 123456,
                "strangers_kernel_drops": 123400,
                "steering": True,
                "steered": 1,
                "prefilter": "kernel",
                "receive_buffer": 64 * 1024 * 1024,
            },
            "budget": {
                "verified_known": 40,
                "verified_strangers": 1000,
                "refused_known": 0,
                "refused_strangers": 50000,
            },
            "drops": {"unknown_peer": 2},
            "peers": [
                {
                    "vaddr": 1,
                    "name": "laptop",
                    "public_key": "ef01",
                    "endpoint": "192.0.2.7:40000",
                    "addresses": ["10.0.0.2/32"],
                    "version": 3,
                    "state": "established",
                    "current_epoch": 17,
                    "last_handshake_age": 75.2,
                    "rx_bytes": 3 * 1024 * 1024,
                    "rx_packets": 2000,
                    "tx_bytes": 512,
                    "tx_packets": 4,
                    "drops": {"replay": 1, "spoofed_source": 0},
                }
            ],
        }
    )
    assert "interface: sudp0" in text
    assert "peer: 1 (laptop)" in text
    assert "protocol: SUDP v3, established, epoch 17" in text
    assert "latest handshake: 1 minute, 15 seconds ago" in text
    assert "3.00 MiB received (2000 packets), 512 B sent (4 packets)" in text
    assert "drops: replay 1" in text
    assert "spoofed_source" not in text
    assert "drops: unknown_peer 2" in text
    assert "device: 12 packets read, 2000 written, 50 GSO writes" in text
    assert (
        "socket: 2010 datagrams received, 30 sent, 1900 from strangers, 123456 dropped by the "
        "kernel (filtered or queue full; 123400 of them strangers'), own queue for 1 client, "
        "prefilter in kernel, receive buffer 64.00 MiB"
    ) in text
    assert (
        "signatures: 1040 verified, 50000 refused by the budget (0 from clients' endpoints)" in text
    )
