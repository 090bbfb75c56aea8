"""The ``trio-sudp`` command line (typer)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from .. import __version__
from .config_commands import ConfigOption, register

app = typer.Typer(
    name="trio-sudp",
    help="SUDP (secure UDP) tunnels and a small VPN on Trio, compatible with Go sudp/tunelo.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)

LogLevelOption = Annotated[
    str,
    typer.Option("--log-level", "-l", help="debug, info, warning or error.", show_default=True),
]
SocketOption = Annotated[
    Path | None,
    typer.Option(
        "--socket",
        help="The daemon's control socket (default: from --config, else /run/trio-sudp/*.sock).",
        show_default=False,
    ),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line on stderr and exit with ``code``."""
    typer.echo(f"trio-sudp: error: {message}", err=True)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"trio-sudp {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_version, is_eager=True
        ),
    ] = False,
) -> None:
    """SUDP tunnels and VPN on Trio.

    Quick start: ``trio-sudp config init-server``, ``trio-sudp config add-client``,
    then ``trio-sudp serve -c server.toml`` on the server and
    ``trio-sudp connect -c client.toml`` on the client.
    """


def _load(path: Path, role: str) -> Any:
    from ..config import ClientConfig, ConfigFileError, ServerConfig, load_config

    try:
        config = load_config(path)
    except ConfigFileError as exc:
        fail(str(exc))
    wanted = ServerConfig if role == "server" else ClientConfig
    if not isinstance(config, wanted):
        other = "connect" if role == "server" else "serve"
        kind = "client" if role == "server" else "server"
        fail(f"{path}: this is a {kind} configuration (use `trio-sudp {other}`)")
    return config


@app.command()
def serve(config: ConfigOption, log_level: LogLevelOption = "info") -> None:
    """Run a VPN server in the foreground (for systemd; needs root for the TUN device).

    Stops cleanly on SIGINT/SIGTERM; SIGHUP (or `trio-sudp reload`) re-reads the
    client list. Example: ``trio-sudp serve -c /etc/trio-sudp/server.toml``
    """
    from ..daemon.main import serve_main
    from ..daemon.run import run_daemon, setup_logging

    _logging(setup_logging, log_level)
    server_config = _load(config, "server")
    main, reload = serve_main(server_config, config)
    raise typer.Exit(run_daemon(main, on_reload=reload))


@app.command()
def connect(config: ConfigOption, log_level: LogLevelOption = "info") -> None:
    """Connect to a VPN server and keep the tunnel up, in the foreground (needs root).

    Reports when the tunnel is up; exits non-zero with the reason if the first
    handshake fails (no answer, key mismatch, clock skew beyond 10 s).
    Example: ``trio-sudp connect -c /etc/trio-sudp/client.toml``
    """
    from ..daemon.main import connect_main
    from ..daemon.run import run_daemon, setup_logging

    _logging(setup_logging, log_level)
    client_config = _load(config, "client")
    raise typer.Exit(run_daemon(connect_main(client_config)))


def _logging(setup: Any, level: str) -> None:
    from ..protocol.errors import ConfigError

    try:
        setup(level)
    except ConfigError as exc:
        fail(str(exc))


def _control_path(config: Path | None, socket: Path | None) -> Path:
    if socket is not None:
        return socket
    from ..daemon.main import control_socket_for

    if config is not None:
        from ..config import ConfigFileError, load_config

        try:
            return control_socket_for(load_config(config))
        except ConfigFileError as exc:
            fail(str(exc))
    sockets = sorted(Path("/run/trio-sudp").glob("*.sock"))
    if len(sockets) == 1:
        return sockets[0]
    if not sockets:
        fail("no running daemon found in /run/trio-sudp (give --config or --socket)")
    fail("several daemons are running: choose one with --socket or --config")


@app.command()
def show(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="The daemon's configuration file.", show_default=False),
    ] = None,
    socket: SocketOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Show a running daemon's peers: endpoint, version, epoch, handshake age, traffic, drops.

    Example: ``trio-sudp show`` (one daemon running) or ``trio-sudp show -c server.toml --json``
    """
    from ..daemon.control import ControlError, request
    from ..daemon.show import format_status

    path = _control_path(config, socket)
    try:
        status = request(path, "show")
    except ControlError as exc:
        fail(str(exc), 1)
    typer.echo(json.dumps(status, indent=2, sort_keys=True) if as_json else format_status(status))


@app.command()
def reload(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="The daemon's configuration file.", show_default=False),
    ] = None,
    socket: SocketOption = None,
) -> None:
    """Make a running server re-read its configuration (same as SIGHUP).

    Added, removed and changed clients are applied; unchanged clients keep their
    sessions. A configuration with errors is refused and changes nothing.
    """
    from ..daemon.control import ControlError, request

    path = _control_path(config, socket)
    try:
        answer = request(path, "reload", timeout=30)
    except ControlError as exc:
        fail(str(exc), 1)
    parts = []
    for key in ("added", "removed", "changed"):
        vaddrs = ", ".join(str(v) for v in answer.get(key, [])) or "-"
        parts.append(f"{key} {vaddrs}")
    typer.echo("reloaded: " + "; ".join(parts))


@app.command()
def demo() -> None:
    """Run the demo: a real tunnel between two network namespaces (as root), else in memory."""
    from ..daemon.demo import main as demo_main

    raise typer.Exit(demo_main())


register(app)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
