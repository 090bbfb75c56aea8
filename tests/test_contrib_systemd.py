"""The systemd units in contrib/ are valid, hardened, and run commands that exist."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trio_sudp.cli.app import app

UNITS = Path(__file__).resolve().parents[1] / "contrib" / "systemd"
NAMES = ["trio-sudp-server@.service", "trio-sudp-client@.service"]


def read_unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return parser


@pytest.mark.parametrize("name", NAMES)
def test_unit_is_hardened_to_what_a_tun_device_needs(name: str) -> None:
    service = read_unit(name)["Service"]
    assert service["CapabilityBoundingSet"] == "CAP_NET_ADMIN"
    assert service["AmbientCapabilities"] == "CAP_NET_ADMIN"
    assert service["NoNewPrivileges"] == "yes"
    assert service["DeviceAllow"] == "/dev/net/tun rw"
    assert service["DevicePolicy"] == "closed"
    assert service["ProtectSystem"] == "strict"
    assert service["ProtectHome"] == "yes"
    assert service["RuntimeDirectory"] == "trio-sudp"
    assert service["UMask"] == "0077"
    # The forwarding switches (server), resolvconf's records (client), nothing else.
    writable = {NAMES[0]: "/proc/sys/net", NAMES[1]: "-/run/resolvconf"}[name]
    assert service["ReadWritePaths"] == writable


@pytest.mark.parametrize(("name", "command"), [(NAMES[0], "serve"), (NAMES[1], "connect")])
def test_unit_commands_exist(name: str, command: str) -> None:
    service = read_unit(name)["Service"]
    start = shlex.split(service["ExecStart"])
    assert start[-3:] == [command, "--config", "${CONFIG}"]
    check = shlex.split(service["ExecStartPre"])
    assert check[-3:] == ["check", "--config", "${CONFIG}"]
    runner = CliRunner()
    for sub in (command, "check"):
        result = runner.invoke(app, [sub, "--help"])
        assert result.exit_code == 0, result.output
        assert "--config" in result.output
    if command == "serve":
        assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"


@pytest.mark.parametrize("name", NAMES)
def test_systemd_analyze_verify(name: str, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    instance = tmp_path / name.replace("@.", "@example.")
    instance.write_text((UNITS / name).read_text())
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(instance)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = [line for line in done.stderr.splitlines() if instance.name in line]
    assert done.returncode == 0 and not problems, done.stderr
