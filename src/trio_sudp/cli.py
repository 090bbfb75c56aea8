"""The ``trio-sudp`` command line."""

from __future__ import annotations

import typer

app = typer.Typer(help="SUDP tunnels and VPN on Trio.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the version."""
    from . import __version__

    typer.echo(__version__)


def main() -> None:
    app()
