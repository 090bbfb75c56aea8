"""Tunnel MTU defaults and limits, and the drop-and-answer rule for oversized packets."""

from __future__ import annotations

import functools
import re
import socket
import struct
from pathlib import Path

import pytest
import trio
import trio.testing
import typer
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from trio_sudp.cli.config_commands import register
from trio_sudp.config import add_client, init_server, load_server_config
from trio_sudp.protocol.constants import Version
from trio_sudp.protocol.errors import ConfigError
from trio_sudp.testing import FakeNetwork, MemoryNetBackend, MemoryTun, memory_tun_pair
from trio_sudp.vpn.mtu import (
    check_mtu,
    default_tunnel_mtu,
    max_tunnel_mtu,
    too_big_reply,
    validate_tunnel_mtu,
)
from trio_sudp.vpn.packet import validate
from trio_sudp.vpn.server import run_server

ROUTER4 = socket.inet_aton("10.0.0.1")
ROUTER6 = socket.inet_pton(socket.AF_INET6, "fd00::1")


def v4(size: int, *, df: bool = True) -> bytes:
    header = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, size, 1, 0x4000 if df else 0, 64, 17, 0,
        socket.inet_aton("10.0.0.2"), socket.inet_aton("10.0.0.3"),
    )  # fmt: skip
    return header + bytes(size - 20)


def v6(size: int) -> bytes:
    addr = socket.inet_pton(socket.AF_INET6, "fd00::2")
    return struct.pack(">IHBB16s16s", 0x60000000, size - 40, 17, 64, addr, addr) + bytes(size - 40)


def test_default_mtu_matches_spec_arithmetic() -> None:
    # SPEC §2/§5: data overhead is 32 (v2) / 52 (v3) bytes after the 20-byte header.
    assert default_tunnel_mtu(Version.V2) == 1500 - 20 - 8 - 20 - 32 == 1420
    assert default_tunnel_mtu(Version.V3) == 1500 - 20 - 8 - 20 - 52 == 1400
    assert default_tunnel_mtu(Version.V2, outer_ipv6=True) == 1400
    assert default_tunnel_mtu(Version.V3, outer_ipv6=True) == 1380


def test_max_mtu_is_what_a_go_peer_can_read() -> None:
    assert max_tunnel_mtu(Version.V2) == 2048 - 20 - 32 == 1996
    assert max_tunnel_mtu(Version.V3) == 2048 - 20 - 52 == 1976


@pytest.mark.parametrize("version", [Version.V2, Version.V3])
def test_validate_accepts_defaults_and_limits(version: Version) -> None:
    assert validate_tunnel_mtu(default_tunnel_mtu(version), version) == default_tunnel_mtu(version)
    assert validate_tunnel_mtu(1280, version) == 1280
    assert validate_tunnel_mtu(576, version, ipv6=False) == 576
    assert validate_tunnel_mtu(max_tunnel_mtu(version), version) == max_tunnel_mtu(version)


@pytest.mark.parametrize(
    ("mtu", "ipv6", "match"),
    [
        (1279, True, "at least 1280"),
        (575, False, "576"),
        (1977, True, "too large for SUDP v3"),
        (True, True, "integer"),
        ("1400", True, "integer"),
    ],
)
def test_validate_rejects(mtu: object, ipv6: bool, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        validate_tunnel_mtu(mtu, Version.V3, ipv6=ipv6)  # type: ignore[arg-type]


def test_check_mtu_fits() -> None:
    assert check_mtu(v4(1400), 1400, source_v4=ROUTER4) == (True, None)
    assert check_mtu(v6(1400), 1400, source_v6=ROUTER6) == (True, None)


def test_check_mtu_too_big_ipv4_df_gets_frag_needed() -> None:
    fits, reply = check_mtu(v4(1401), 1400, source_v4=ROUTER4, source_v6=ROUTER6)
    assert not fits
    assert reply is not None
    assert validate(reply) is None
    assert reply[12:16] == ROUTER4
    assert reply[16:20] == socket.inet_aton("10.0.0.2")
    assert reply[20:22] == b"\x03\x04"
    assert reply[26:28] == (1400).to_bytes(2, "big")


def test_check_mtu_too_big_ipv4_without_df_is_just_dropped() -> None:
    assert check_mtu(v4(1401, df=False), 1400, source_v4=ROUTER4) == (False, None)


def test_check_mtu_too_big_ipv6_gets_packet_too_big() -> None:
    fits, reply = check_mtu(v6(1500), 1400, source_v4=ROUTER4, source_v6=ROUTER6)
    assert not fits
    assert reply is not None
    assert reply[8:24] == ROUTER6
    assert reply[40] == 2
    assert int.from_bytes(reply[44:48], "big") == 1400


def test_no_reply_without_a_router_address_of_that_family() -> None:
    assert check_mtu(v4(1500), 1400, source_v6=ROUTER6) == (False, None)
    assert check_mtu(v6(1500), 1400, source_v4=ROUTER4) == (False, None)
    assert too_big_reply(b"", 1400, source_v4=ROUTER4) is None
    assert too_big_reply(b"\x50" * 1500, 1400, source_v4=ROUTER4, source_v6=ROUTER6) is None


@given(st.binary(max_size=1600), st.integers(576, 1976))
def test_check_mtu_never_raises(data: bytes, mtu: int) -> None:
    fits, reply = check_mtu(data, mtu, source_v4=ROUTER4, source_v6=ROUTER6)
    assert fits == (len(data) <= mtu)
    assert reply is None or (not fits and validate(reply) is None)


@pytest.mark.parametrize(("version", "clients"), [(2, 0), (2, 1), (3, 0), (3, 1)])
async def test_check_prints_the_mtu_that_serve_sets(
    tmp_path: Path, version: int, clients: int, autojump_clock: trio.testing.MockClock
) -> None:
    """One owner for the tunnel MTU: what ``check`` prints is what ``serve`` configures."""
    path = tmp_path / "server.toml"
    init_server(path, listen="192.0.2.1:7000", endpoint="192.0.2.1:7000", version=version)
    for i in range(clients):
        add_client(path, tmp_path / f"client{i}.toml", version=version)
    result = CliRunner().invoke(check_app(), ["check", "-c", str(path)])
    assert result.exit_code == 0, result.output
    match = re.search(r"MTU (\d+)", result.output)
    assert match is not None, result.output
    checked = int(match.group(1))
    assert checked == default_tunnel_mtu(Version(version))

    config = load_server_config(path)
    opened: list[int | None] = []
    device, _kernel = memory_tun_pair(names=("srv0", "kernel"))

    def open_device(name: str | None, *, mtu: int | None) -> MemoryTun:
        opened.append(mtu)
        return device

    backend = MemoryNetBackend()
    async with trio.open_nursery() as nursery:
        vpn = await nursery.start(
            functools.partial(
                run_server, config, network=FakeNetwork(), open_device=open_device, backend=backend
            )
        )
        assert opened == [checked]
        assert backend.mtu == {"srv0": checked}
        assert vpn.status()["mtu"] == checked
        nursery.cancel_scope.cancel()


def check_app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app
