"""CLI commands for keys and configuration: ``genkey``, ``pubkey``, ``check`` and
``config init-server`` / ``add-client`` / ``remove-client`` / ``list``.

:func:`register` mounts them on the main ``trio-sudp`` app. Every failure prints
one line on stderr and exits with status 2; nothing prints a traceback.
Run standalone with ``python -m trio_sudp.cli.config_commands ...``.
"""

from __future__ import annotations

import enum
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, ParamSpec, TypeVar

import typer

from ..config.edit import (
    DEFAULT_LISTEN,
    DEFAULT_NETWORK,
    add_client,
    init_server,
    remove_client,
)
from ..config.load import ConfigReport, inspect_config, load_server_config
from ..config.model import MASQUERADE_DEFAULT_ROUTE, ClientConfig, PeerConfig, ServerConfig
from ..config.storage import PRIVATE_KEY_MODE, write_private_key, write_public_key
from ..protocol.crypto import PrivateKey
from ..protocol.errors import ConfigError

__all__ = ["ConfigOption", "check", "config_app", "genkey", "main", "pubkey", "register"]

P = ParamSpec("P")
R = TypeVar("R")

#: Exit status for bad input, bad files and failed checks.
EXIT_BAD_INPUT = 2
#: ``--masquerade`` for the interface of the default route (``masquerade = true``).
DEFAULT_ROUTE = "default-route"


#: ``--config`` / ``-c`` of the commands that read one configuration file.
ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        help="Configuration file: trio-sudp TOML, or tunelo's server.json / client.json.",
        show_default=False,
    ),
]


class Format(enum.StrEnum):
    toml = "toml"
    tunelo = "tunelo"


def fail(message: str) -> NoReturn:
    """One line on stderr, exit status 2."""
    typer.echo(f"trio-sudp: error: {' '.join(message.split())}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def _os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def _one_line_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn configuration and file errors into one line on stderr and exit 2."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(_os_error(exc))

    return wrapper


# -- genkey / pubkey -----------------------------------------------------------------


@_one_line_errors
def genkey(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write the private key to this file (mode 0600) instead of stdout.",
            show_default=False,
        ),
    ] = None,
    pub: Annotated[
        Path | None,
        typer.Option(
            "--pub", help="Also write the public key to this file (mode 0644).", show_default=False
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace existing files.")] = False,
) -> None:
    """Generate a private key (ECDSA P-256, PEM 'EC PRIVATE KEY', readable by Go tunelo).

    Without --out the key goes to stdout: pipe it into 'trio-sudp pubkey'.
    """
    key = PrivateKey.generate()
    if out is None:
        if pub is not None:
            write_public_key(pub, key.public_key, overwrite=force)
        sys.stdout.buffer.write(key.to_pem())
        sys.stdout.flush()
        return
    if pub is not None and os.path.abspath(pub) == os.path.abspath(out):
        fail("--out and --pub must be different files")
    write_private_key(out, key, overwrite=force)
    if pub is not None:
        write_public_key(pub, key.public_key, overwrite=force)
    typer.echo(f"wrote {out} (private key, mode {PRIVATE_KEY_MODE:04o})", err=True)


@_one_line_errors
def pubkey(
    key_file: Annotated[
        str,
        typer.Argument(help="Private key file ('-' or nothing: read stdin).", show_default=False),
    ] = "-",
) -> None:
    """Print the public key (PEM 'PUBLIC KEY') of a private key read from a file or stdin."""
    if key_file == "-":
        if sys.stdin.isatty():
            fail(
                "no key on stdin: give a key file, or pipe one: trio-sudp genkey | trio-sudp pubkey"
            )
        data = sys.stdin.buffer.read(65536)
        what = "stdin"
    else:
        path = Path(key_file)
        try:
            data = path.read_bytes()
        except OSError as exc:
            fail(_os_error(exc))
        what = str(path)
    key = PrivateKey.from_pem(data, what=what)
    sys.stdout.buffer.write(key.public_key.to_pem())
    sys.stdout.flush()


# -- check -------------------------------------------------------------------------


def _summary(report: ConfigReport) -> str:
    config = report.config
    name = report.path
    if isinstance(config, ServerConfig):
        host, port = config.listen
        versions = "/".join(f"v{int(v)}" for v in sorted({p.version for p in config.peers}))
        clients = f"{len(config.peers)} client{'s' if len(config.peers) != 1 else ''}"
        if versions:
            clients += f" ({versions})"
        tunnel = ", ".join(str(a) for a in config.addresses)
        if config.masquerade == MASQUERADE_DEFAULT_ROUTE:
            clients += ", forward, masquerade via the default route"
        elif config.masquerade is not None:
            clients += f", forward, masquerade via {config.masquerade}"
        elif config.forward:
            clients += ", forward"
        return (
            f"{name}: OK: server ({config.format}), listen {host}:{port}, tunnel {tunnel}, "
            f"MTU {config.tunnel_mtu}, {clients}, key {config.public_key.fingerprint()}"
        )
    assert isinstance(config, ClientConfig)
    tunnel = ", ".join(str(a) for a in config.addresses)
    dns = f"DNS {', '.join(str(a) for a in config.dns)}, " if config.dns else ""
    return (
        f"{name}: OK: client {config.vaddr} ({config.format}), tunnel {tunnel}, server "
        f"{config.endpoint} (v{int(config.version)}), MTU {config.tunnel_mtu}, {dns}"
        f"key {config.public_key.fingerprint()}"
    )


def check(
    config: ConfigOption,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print nothing when the file is fine.")
    ] = False,
) -> None:
    """Validate a configuration file and its keys, without touching the network.

    Prints every problem on its own line (file: field: what is wrong) and exits
    with status 2; prints a one-line summary and exits 0 when all is well.
    Warnings (for example a tunelo file with an inline key that others can read)
    are printed but do not fail the check.
    """
    report = inspect_config(config)
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if report.errors:
        for issue in report.errors:
            typer.echo(str(issue), err=True)
        count = len(report.errors)
        typer.echo(f"{config}: {count} problem{'s' if count != 1 else ''}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    if not quiet:
        typer.echo(_summary(report))


# -- config init-server / add-client -----------------------------------------------

config_app = typer.Typer(
    name="config",
    help="Create and edit configurations: a server, then one file per client.",
    no_args_is_help=True,
)


@config_app.command("init-server")
@_one_line_errors
def init_server_command(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Server configuration to create (default: server.toml, or server.json "
            "with --format tunelo).",
            show_default=False,
        ),
    ] = None,
    listen: Annotated[
        str, typer.Option("--listen", help="UDP address to listen on, IP:PORT.")
    ] = DEFAULT_LISTEN,
    network: Annotated[
        list[str] | None,
        typer.Option(
            "--network",
            help="The server's tunnel address and network, like 10.0.0.1/24 (10.0.0.0/24: "
            "the server takes .1). Repeat for an IPv6 network too.",
            show_default=DEFAULT_NETWORK,
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            help="HOST:PORT clients connect to (written into client files by add-client; "
            "required with --format tunelo).",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        Format, typer.Option("--format", help="trio-sudp TOML, or tunelo's JSON.")
    ] = Format.toml,
    version: Annotated[
        int,
        typer.Option("--version", min=2, max=3, help="SUDP version of clients added later."),
    ] = 3,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help="Private key file to create (default: the config's name with .key; "
            "tunelo: inline in the JSON).",
            show_default=False,
        ),
    ] = None,
    mtu: Annotated[
        int | None,
        typer.Option(
            "--mtu", help="Tunnel MTU (default: 1400 for v3, 1420 for v2).", show_default=False
        ),
    ] = None,
    interface: Annotated[
        str | None,
        typer.Option("--interface", help="TUN interface name (like sudp0).", show_default=False),
    ] = None,
    control_socket: Annotated[
        Path | None,
        typer.Option(
            "--control-socket",
            help="Unix socket for show/reload (default: /run/trio-sudp/<interface>.sock).",
            show_default=False,
        ),
    ] = None,
    masquerade: Annotated[
        str | None,
        typer.Option(
            "--masquerade",
            metavar="IFNAME",
            help="Forward the clients' traffic to the host's other networks and NAT it "
            f"behind this interface ('{DEFAULT_ROUTE}': the one of the default route).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace existing files.")] = False,
) -> None:
    """Create a server: a new private key (mode 0600) and a configuration with no clients.

    Example: trio-sudp config init-server -c server.toml --endpoint vpn.example.com:7000
    --masquerade default-route
    """
    path = config or Path("server.json" if fmt == Format.tunelo else "server.toml")
    result = init_server(
        path,
        listen=listen,
        networks=network or [DEFAULT_NETWORK],
        endpoint=endpoint,
        format=fmt.value,
        version=version,
        key_path=key,
        mtu=mtu,
        interface=interface,
        control_socket=control_socket,
        masquerade=MASQUERADE_DEFAULT_ROUTE if masquerade == DEFAULT_ROUTE else masquerade,
        force=force,
    )
    if result.key_path is not None:
        typer.echo(f"wrote {result.key_path} (private key, mode 0600)")
    typer.echo(
        f"wrote {result.config_path} (server, {result.config.format}), "
        f"public key {result.config.public_key.fingerprint()}"
    )
    client = "client.json" if result.config.format == "tunelo" else "client.toml"
    typer.echo(f"next: trio-sudp config add-client -c {result.config_path} --out {client}")


@config_app.command("add-client")
@_one_line_errors
def add_client_command(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="The server configuration to add the client to.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="The client configuration to write (mode 0600).", show_default=False
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="A name for the client (TOML servers only).", show_default=False
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            help="HOST:PORT the client connects to (default: the server config's endpoint).",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        Format | None,
        typer.Option(
            "--format",
            help="Format of the client file (default: the server's).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        int | None,
        typer.Option(
            "--version",
            min=2,
            max=3,
            help="SUDP version (default: the server's).",
            show_default=False,
        ),
    ] = None,
    vaddr: Annotated[
        int | None,
        typer.Option(
            "--vaddr",
            help="Virtual address 1..65534 (default: the lowest free).",
            show_default=False,
        ),
    ] = None,
    address: Annotated[
        list[str] | None,
        typer.Option(
            "--address",
            help="Tunnel address for the client (default: the next "
            "free one in each tunnel network).",
            show_default=False,
        ),
    ] = None,
    route: Annotated[
        list[str] | None,
        typer.Option(
            "--route", help="A prefix behind the client (repeatable).", show_default=False
        ),
    ] = None,
    full_tunnel: Annotated[
        bool,
        typer.Option("--full-tunnel", help="The client sends all its traffic through the tunnel."),
    ] = False,
    dns: Annotated[
        list[str] | None,
        typer.Option(
            "--dns",
            metavar="IP",
            help="A DNS server for the client to use while connected (repeatable).",
            show_default=False,
        ),
    ] = None,
    control_socket: Annotated[
        Path | None,
        typer.Option(
            "--control-socket",
            help="The client's Unix socket for show (default: /run/trio-sudp/<interface>.sock).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the client file.")] = False,
) -> None:
    """Add a client to a server configuration and write the client's own file.

    The client gets a new private key, a v3 shared key, the lowest free virtual
    address and the next free tunnel address. The client file holds its private
    key (mode 0600): it is all the client needs.

    Example: trio-sudp config add-client -c server.toml --out laptop.toml --name laptop
    """
    result = add_client(
        config,
        out,
        name=name,
        endpoint=endpoint,
        format=fmt.value if fmt is not None else None,
        version=version,
        vaddr=vaddr,
        addresses=address or (),
        routes=route or (),
        full_tunnel=full_tunnel,
        dns=dns or (),
        control_socket=control_socket,
        force=force,
    )
    peer = result.peer
    addresses = ", ".join(str(a) for a in peer.addresses)
    typer.echo(f"added {peer.label} at {addresses} (SUDP v{int(peer.version)}) to {config}")
    typer.echo(f"wrote {out} (client, {result.client.format}, mode 0600): copy it to the client")
    typer.echo(f"a running server picks it up with: trio-sudp reload -c {config}")


@config_app.command("remove-client")
@_one_line_errors
def remove_client_command(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="The server configuration to remove the client from.",
            show_default=False,
        ),
    ],
    client: Annotated[
        str,
        typer.Argument(help="The client's name, or its virtual address.", show_default=False),
    ],
) -> None:
    """Remove a client from a server configuration (its comments and the rest stay).

    In tunelo's server.json its mappings go too. The file is replaced atomically;
    a running server drops the client on 'trio-sudp reload'.

    Example: trio-sudp config remove-client -c server.toml laptop
    """
    result = remove_client(config, client)
    typer.echo(f"removed {result.peer.label} from {config}")
    typer.echo(f"a running server drops it with: trio-sudp reload -c {config}")


def _client_record(peer: PeerConfig) -> dict[str, object]:
    return {
        "name": peer.name,
        "vaddr": peer.vaddr,
        "addresses": [str(a) for a in peer.addresses],
        "routes": [str(r) for r in peer.routes],
        "version": int(peer.version),
        "fingerprint": peer.public_key.fingerprint(),
    }


def _client_lines(peers: tuple[PeerConfig, ...]) -> list[str]:
    """One line per client, in aligned columns."""
    rows = []
    for peer in peers:
        tunnel = ", ".join(str(a) for a in peer.addresses) or "-"
        if peer.routes:
            tunnel += " routes " + ", ".join(str(r) for r in peer.routes)
        rows.append(
            (
                peer.name or "-",
                f"vaddr {peer.vaddr}",
                tunnel,
                f"v{int(peer.version)}",
                f"key {peer.public_key.fingerprint()}",
            )
        )
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


@config_app.command("list")
@_one_line_errors
def list_command(
    config: Annotated[
        Path,
        typer.Option("--config", "-c", help="The server configuration.", show_default=False),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """List a server's clients: name, virtual address, tunnel addresses (and routes),
    SUDP version and public-key fingerprint, one line each.

    Example: trio-sudp config list -c server.toml
    """
    server = load_server_config(config)
    if as_json:
        typer.echo(json.dumps([_client_record(p) for p in server.peers], indent=2))
        return
    for line in _client_lines(server.peers):
        typer.echo(line)
    if not server.peers:
        typer.echo(f"{config}: no clients (add one with: trio-sudp config add-client)", err=True)


_GENKEY_EPILOG = """\
Examples:

  trio-sudp genkey --out server.key --pub server.pub

  (umask 077; trio-sudp genkey | tee client.key | trio-sudp pubkey > client.pub)
"""
_PUBKEY_EPILOG = """\
Examples:

  trio-sudp pubkey server.key > server.pub

  trio-sudp genkey | tee client.key | trio-sudp pubkey > client.pub
"""
_CHECK_EPILOG = """\
Examples:

  trio-sudp check -c /etc/trio-sudp/server.toml

  trio-sudp check -c client.json
"""


def register(app: typer.Typer) -> None:
    """Add ``genkey``, ``pubkey``, ``check`` and the ``config`` group to ``app``."""
    app.command("genkey", epilog=_GENKEY_EPILOG)(genkey)
    app.command("pubkey", epilog=_PUBKEY_EPILOG)(pubkey)
    app.command("check", epilog=_CHECK_EPILOG)(check)
    app.add_typer(config_app, name="config")


def main() -> None:
    """Run these commands on their own (``python -m trio_sudp.cli.config_commands``)."""
    app = typer.Typer(name="trio-sudp", no_args_is_help=True, pretty_exceptions_enable=False)
    register(app)
    app()


if __name__ == "__main__":
    main()
