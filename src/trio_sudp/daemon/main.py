"""What ``serve`` and ``connect`` run: the VPN and what is set up around it (forwarding,
NAT, DNS, hooks: ``lifecycle.py``), its metrics, its control socket, and reload."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..config import ClientConfig, ConfigFileError, ServerConfig, load_config
from ..protocol.errors import ConfigError
from ..vpn.client import VpnClient, run_client
from ..vpn.server import VpnServer, run_server
from .control import ControlError, default_socket_path, serve_control
from .hooks import run_hooks
from .lifecycle import (
    check_client_tools,
    check_server_tools,
    client_while_up,
    hook_interface,
    server_while_up,
)
from .watchdog import watch_daemon

if TYPE_CHECKING:
    from .metrics import MetricsEndpoint

__all__ = ["connect_main", "control_socket_for", "serve_main"]

log = logging.getLogger("trio_sudp")

Main = Callable[[], Awaitable[None]]

#: Seconds between "still waiting" lines while connect waits for the first handshake.
PROGRESS_INTERVAL = 2.0


def control_socket_for(config: ServerConfig | ClientConfig) -> Path:
    """The control socket of a configuration: its own setting, else one per interface
    name (or per configuration file when the interface name is a pattern)."""
    if config.control_socket is not None:
        return config.control_socket
    name = config.interface
    if name is None or "%" in name:
        name = config.source.stem if config.source is not None else "trio-sudp"
    return default_socket_path(name)


def serve_main(config: ServerConfig, path: Path) -> tuple[Main, Callable[[], Awaitable[None]]]:
    """The server's main function and its SIGHUP handler."""
    running: list[VpnServer] = []
    current = [config]  # the configuration in use, for what a reload cannot change

    async def reload() -> dict[str, Any]:
        if not running:
            raise ControlError("the server is still starting")
        try:
            new = load_config(path)
        except ConfigFileError as exc:
            log.error("reload refused: %s", exc)
            raise ControlError(f"reload refused: {exc}") from None
        if not isinstance(new, ServerConfig):
            raise ControlError(f"reload refused: {path} is not a server configuration")
        try:
            answer = await running[0].reload(new)
        except ConfigError as exc:
            log.error("reload refused: %s", exc)
            raise ControlError(f"reload refused: {exc}") from None
        _warn_restart_needed(current[0], new)
        current[0] = new
        return answer

    async def on_sighup() -> None:
        log.info("SIGHUP: reloading %s", path)
        with contextlib.suppress(ControlError):  # already logged
            await reload()

    async def handle(command: str, args: dict[str, Any]) -> dict[str, Any]:
        if command == "show":
            if not running:
                raise ControlError("the server is still starting")
            return running[0].status()
        if command == "reload":
            return await reload()
        raise ControlError(f"unknown command {command!r}")

    async def main() -> None:
        check_server_tools(config)
        interface, hooks_name = hook_interface(config.interface, config.hooks)
        async with (
            _metrics(config.metrics) as metrics,
            run_hooks(config.hooks, hooks_name) as hooks,
            trio.open_nursery() as nursery,
        ):
            vpn = await nursery.start(
                functools.partial(
                    run_server,
                    config,
                    interface=interface,
                    while_up=server_while_up(config, hooks),
                )
            )
            running.append(vpn)
            if metrics is not None:
                await nursery.start(metrics.serve, vpn.status)
            socket = await nursery.start(serve_control, control_socket_for(config), handle)
            log.info("control socket %s", socket)
            nursery.start_soon(watch_daemon, socket, config.listen)

    return main, on_sighup


def _warn_restart_needed(old: ServerConfig, new: ServerConfig) -> None:
    changed = [
        key
        for key in ("forward", "masquerade", "hooks", "metrics")
        if getattr(old, key) != getattr(new, key)
    ]
    if changed:
        log.warning("reload: a change of %s needs a restart", ", ".join(changed))


@asynccontextmanager
async def _metrics(address: tuple[str, int] | None) -> AsyncIterator[MetricsEndpoint | None]:
    """The metrics endpoint, listening from now on, if configured."""
    if address is None:
        yield None
        return
    from .metrics import metrics_endpoint  # prometheus-client: checked by check_*_tools

    async with metrics_endpoint(address) as endpoint:
        yield endpoint


def connect_main(config: ClientConfig) -> Main:
    """The client's main function."""
    running: list[VpnClient] = []

    async def handle(command: str, args: dict[str, Any]) -> dict[str, Any]:
        if command == "show":
            if not running:
                raise ControlError("the client is still connecting")
            return running[0].status()
        raise ControlError(f"unknown command {command!r} (a client cannot reload)")

    async def main() -> None:
        dns = check_client_tools(config)
        interface, hooks_name = hook_interface(config.interface, config.hooks)
        async with (
            _metrics(config.metrics) as metrics,
            run_hooks(config.hooks, hooks_name) as hooks,
            trio.open_nursery() as nursery,
        ):
            progress = trio.CancelScope()
            nursery.start_soon(_report_progress, progress, config.endpoint)
            vpn = await nursery.start(
                functools.partial(
                    run_client,
                    config,
                    interface=interface,
                    while_up=client_while_up(config, hooks, dns),
                )
            )
            progress.cancel()
            running.append(vpn)
            if metrics is not None:
                await nursery.start(metrics.serve, vpn.status)
            socket = await nursery.start(serve_control, control_socket_for(config), handle)
            nursery.start_soon(watch_daemon, socket)

    return main


async def _report_progress(scope: trio.CancelScope, endpoint: str) -> None:
    """While the first handshake is under way, say so every couple of seconds."""
    with scope:
        started = trio.current_time()
        while True:
            await trio.sleep(PROGRESS_INTERVAL)
            waited = trio.current_time() - started
            log.info("no answer from %s yet after %.0f s; retrying the handshake", endpoint, waited)
