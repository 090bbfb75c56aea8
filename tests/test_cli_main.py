"""The main CLI: version, log level, serve/connect argument errors, exit codes."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

import trio_sudp
from trio_sudp.cli.app import app
from trio_sudp.config import add_client, init_server

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"trio-sudp {trio_sudp.__version__}"


def test_unknown_log_level_is_one_line_and_exit_2(tmp_path: Path) -> None:
    init_server(tmp_path / "server.toml")
    result = runner.invoke(
        app, ["serve", "-c", str(tmp_path / "server.toml"), "--log-level", "chatty"]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "trio-sudp: error: unknown log level 'chatty' (debug, info, warning, error)"
    ]


def test_serve_refuses_a_client_configuration(tmp_path: Path) -> None:
    init_server(tmp_path / "server.toml", endpoint="192.0.2.1:7000")
    add_client(tmp_path / "server.toml", tmp_path / "laptop.toml")
    result = runner.invoke(app, ["serve", "-c", str(tmp_path / "laptop.toml")])
    assert result.exit_code == 2
    assert "this is a client configuration (use `trio-sudp connect`)" in result.output
    result = runner.invoke(app, ["connect", "-c", str(tmp_path / "server.toml")])
    assert result.exit_code == 2
    assert "this is a server configuration (use `trio-sudp serve`)" in result.output


def test_missing_configuration_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["connect", "-c", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("trio-sudp: error: ")
    assert "nope.toml" in lines[0]


def test_show_without_a_daemon_says_so(tmp_path: Path) -> None:
    result = runner.invoke(app, ["show", "--socket", str(tmp_path / "x.sock")])
    assert result.exit_code == 1
    assert "no such control socket (is the daemon running?)" in result.output
