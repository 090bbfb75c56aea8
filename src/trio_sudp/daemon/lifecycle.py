"""What ``serve`` and ``connect`` set up around the tunnel interface, in wg-quick's order.

::

    serve                                       connect
    check the tools the configuration needs     (the same)
    pre_up                                      pre_up
      TUN device, addresses, routes               TUN device, handshake, addresses, routes
        forwarding and NAT                          DNS
          post_up                                     post_up
            ... running ...                             ... running ...
          pre_down                                    pre_down
        forwarding and NAT undone                   DNS removed
      routes, addresses, device removed           routes, addresses, device removed
    post_down                                   post_down

The TUN device and its configuration are ``run_server`` / ``run_client``'s; what is
between the interface's configuration and ``post_up`` is their ``while_up``,
made here. Tools are checked before anything is touched, so that a missing one is
one line and nothing to undo.
"""

from __future__ import annotations

import importlib.util
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from ..config import MASQUERADE_DEFAULT_ROUTE, ClientConfig, Hooks, ServerConfig
from ..protocol.errors import ConfigError
from ..vpn.dns import DnsBackend, require_dns_backend, tunnel_dns
from ..vpn.nat import server_forwarding
from ..vpn.nftables import Nftables
from ..vpn.server import DEFAULT_INTERFACE, WhileUp
from .hooks import HookRun, interface_for_hooks

__all__ = [
    "check_client_tools",
    "check_server_tools",
    "client_while_up",
    "hook_interface",
    "server_while_up",
]


def _check_metrics(metrics: tuple[str, int] | None) -> None:
    if metrics is not None and importlib.util.find_spec("prometheus_client") is None:
        raise ConfigError(
            "metrics is configured but prometheus-client is not installed"
            " (pip install 'trio-sudp[metrics]')"
        )


def check_server_tools(config: ServerConfig) -> None:
    """``ConfigError`` (exit code 2) if ``nft`` or prometheus-client is needed and missing."""
    if config.forward:
        Nftables().program()
    _check_metrics(config.metrics)


def check_client_tools(config: ClientConfig) -> DnsBackend | None:
    """The DNS tool to use (``None``: no DNS configured); raises if a needed tool is missing.

    No ``resolvectl`` or ``resolvconf`` is ``DnsError`` (exit code 1), no
    prometheus-client ``ConfigError`` (exit code 2).
    """
    _check_metrics(config.metrics)
    if config.dns or config.dns_search:
        return require_dns_backend()
    return None


def hook_interface(
    configured: str | None,
    hooks: Hooks,
    existing: Callable[[], list[tuple[int, str]]] = socket.if_nameindex,
) -> tuple[str | None, str]:
    """The name to create the interface with, and the name ``%i`` stands for.

    Without hooks the configured name (or pattern) goes to the kernel as it is
    (``None``: the default). With hooks a pattern is numbered now, so that
    ``pre_up`` already knows the name (:func:`~trio_sudp.daemon.hooks.interface_for_hooks`).
    """
    name = configured or DEFAULT_INTERFACE
    if hooks.empty:
        return configured, name
    concrete = interface_for_hooks(name, {ifname for _, ifname in existing()})
    return concrete, concrete


def server_while_up(config: ServerConfig, hooks: HookRun) -> WhileUp:
    """Forwarding and NAT (``forward``, ``masquerade``), then ``post_up`` / ``pre_down``."""

    @asynccontextmanager
    async def while_up(interface: str) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if config.forward:
                egress = config.masquerade
                await stack.enter_async_context(
                    server_forwarding(
                        interface,
                        config.networks,
                        egress=None if egress == MASQUERADE_DEFAULT_ROUTE else egress,
                        masquerade=egress is not None,
                    )
                )
            await stack.enter_async_context(hooks.up())
            yield

    return while_up


def client_while_up(config: ClientConfig, hooks: HookRun, dns: DnsBackend | None) -> WhileUp:
    """DNS (``dns``, ``dns_search``) through ``dns``, then ``post_up`` / ``pre_down``."""

    @asynccontextmanager
    async def while_up(interface: str) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if dns is not None:
                await stack.enter_async_context(
                    tunnel_dns(
                        interface,
                        config.dns,
                        config.dns_search,
                        route_all=config.full_tunnel,
                        backend=dns,
                    )
                )
            await stack.enter_async_context(hooks.up())
            yield

    return while_up
