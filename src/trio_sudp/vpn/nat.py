"""Forwarding and NAT on the VPN server, undone on exit.

``server_forwarding`` is the entry point, entered once the tunnel device exists::

    async with server_forwarding("sudp0", [IPv4Network("10.0.0.0/24")], masquerade=True):
        ...  # serve: clients reach the hosts beyond the server, as the server

What it sets up:

- IP forwarding for the tunnel and the egress interface only (see
  :mod:`trio_sudp.vpn.ipforward` for why IPv6 differs), switches that were off only.
- An nftables table of its own, ``inet trio-sudp-<tunnel>``: a ``forward`` chain
  that accepts tunnel → egress and, with masquerade, egress → tunnel only for
  established connections (nothing outside opens one into the NATed tunnel);
  a ``postrouting`` chain that masquerades the tunnel networks out of the egress
  interface. The table also records which forwarding switches it turned on.

On exit (normal, error or cancellation, shielded and bounded in time) the switches
are turned off again and the table is deleted. A table left by a killed server is
found at the next start: the switches it recorded are taken over (so they are still
turned off at the end) and the table is replaced in one transaction.

Accepting in this table does not override a drop in another one (nftables runs
every base chain of a hook): a host firewall that drops forwarded packets (Docker,
firewalld, ufw) must allow the tunnel itself.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from trio_sudp.protocol.errors import ConfigError
from trio_sudp.tun.errors import NetConfigError
from trio_sudp.tun.netconfig import IPNetwork, NetBackend, default_backend
from trio_sudp.vpn.ipforward import ForwardingError, IPForwarding, SysctlKey
from trio_sudp.vpn.nftables import Nftables, NftablesMissing

__all__ = [
    "FAMILY",
    "UNDO_TIMEOUT",
    "Forwarding",
    "ForwardingError",
    "NftablesMissing",
    "forwarding_ruleset",
    "server_forwarding",
    "table_name",
]

logger = logging.getLogger("trio_sudp.vpn.nat")

#: The nftables family of the table: one table for IPv4 and IPv6.
FAMILY = "inet"
#: Seconds the undo on exit may take before it gives up.
UNDO_TIMEOUT = 15.0

_RESTORE_SET = "restore-ipv{version}-{name}"


def table_name(tunnel: str) -> str:
    """The nftables table of the server on ``tunnel``: ``trio-sudp-<tunnel>``."""
    return f"trio-sudp-{tunnel}"


@attrs.frozen
class Forwarding:
    """What :func:`server_forwarding` set up.

    ``egress`` maps IP version (4, 6) to the interface tunnel traffic leaves by;
    ``turned_on`` lists the switches that will be turned off again at exit;
    ``replaced_stale`` says whether a table left by a killed server was replaced.
    """

    tunnel: str
    networks: tuple[IPNetwork, ...]
    egress: Mapping[int, str]
    masquerade: bool
    table: str
    turned_on: frozenset[SysctlKey]
    replaced_stale: bool = False


def _meta(key: str, value: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": {"meta": {"key": key}}, "right": value}}


def _rule(table: str, chain: str, *expr: dict[str, Any]) -> dict[str, Any]:
    return {"add": {"rule": {"family": FAMILY, "table": table, "chain": chain, "expr": list(expr)}}}


def _saddr(version: int, networks: Iterable[IPNetwork]) -> dict[str, Any]:
    prefixes = [
        {"prefix": {"addr": str(n.network_address), "len": n.prefixlen}}
        for n in networks
        if n.version == version
    ]
    protocol = "ip" if version == 4 else "ip6"
    return {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": protocol, "field": "saddr"}},
            "right": {"set": prefixes},
        }
    }


def forwarding_ruleset(
    tunnel: str,
    networks: Iterable[IPNetwork],
    egress: Mapping[int, str],
    *,
    masquerade: bool,
    turned_on: Iterable[SysctlKey] = (),
) -> list[dict[str, Any]]:
    """The nftables JSON commands that (re)create the table of the server on ``tunnel``.

    The batch first deletes a table of that name if one exists, so applying it
    replaces a stale table atomically. ``turned_on`` is recorded in sets named
    ``restore-ipv<version>-<switch>`` holding interface names.
    """
    networks = tuple(networks)
    table = table_name(tunnel)
    ident = {"family": FAMILY, "name": table}
    in_table = {"family": FAMILY, "table": table}
    commands: list[dict[str, Any]] = [
        {"add": {"table": ident}},  # so that the delete cannot fail
        {"delete": {"table": ident}},
        {"add": {"table": ident}},
    ]
    by_set: dict[str, list[str]] = {}
    for key in sorted(turned_on):
        by_set.setdefault(_RESTORE_SET.format(version=key.version, name=key.name), [])
        by_set[_RESTORE_SET.format(version=key.version, name=key.name)].append(key.interface)
    for name, interfaces in by_set.items():
        commands.append(
            {"add": {"set": {**in_table, "name": name, "type": "ifname", "elem": interfaces}}}
        )
    commands += [
        {"add": {"chain": {**in_table, "name": "forward", "type": "filter",
                           "hook": "forward", "prio": 0, "policy": "accept"}}},
        {"add": {"chain": {**in_table, "name": "postrouting", "type": "nat",
                           "hook": "postrouting", "prio": 100, "policy": "accept"}}},
    ]  # fmt: skip
    accept, drop, count = {"accept": None}, {"drop": None}, {"counter": None}
    established = {
        "match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}
    }
    for version, out in sorted(egress.items()):
        family = _meta("nfproto", f"ipv{version}")
        outbound = (family, _meta("iifname", tunnel), _meta("oifname", out))
        inbound = (family, _meta("iifname", out), _meta("oifname", tunnel))
        commands.append(_rule(table, "forward", *outbound, count, accept))
        if masquerade:
            commands.append(_rule(table, "forward", *inbound, established, count, accept))
            commands.append(_rule(table, "forward", *inbound, count, drop))
            commands.append(
                _rule(table, "postrouting", _saddr(version, networks), _meta("oifname", out),
                      count, {"masquerade": None})
            )  # fmt: skip
        else:
            commands.append(_rule(table, "forward", *inbound, count, accept))
    if SysctlKey(6, "all", "forwarding") in set(turned_on) and 6 in egress:
        # IPv6 forwarding was off and had to be switched on for all interfaces:
        # forward only what arrives on ours, as the per-interface switch would.
        ours = {"set": sorted({tunnel, egress[6]})}
        commands.append(
            _rule(table, "forward", _meta("nfproto", "ipv6"), _meta("iifname", ours, "!="),
                  count, drop)
        )  # fmt: skip
    return commands


def _recorded(objects: list[dict[str, Any]]) -> frozenset[SysctlKey]:
    """The switches a table made by :func:`forwarding_ruleset` says were turned on."""
    found = set()
    for obj in objects:
        found_set = obj.get("set")
        if not isinstance(found_set, dict):
            continue
        name = str(found_set.get("name", ""))
        for version in (4, 6):
            for switch in ("forwarding", "force_forwarding"):
                if name != _RESTORE_SET.format(version=version, name=switch):
                    continue
                elements = found_set.get("elem", [])
                found |= {SysctlKey(version, e, switch) for e in elements if isinstance(e, str)}
    return frozenset(found)


async def _default_egress(backend: NetBackend, version: int) -> str:
    try:
        routes = await backend.default_routes(version)
    except NetConfigError as exc:
        raise ForwardingError(f"cannot find the IPv{version} default route: {exc}") from exc
    candidates = sorted((r.metric or 0, r.interface) for r in routes if r.interface is not None)
    if not candidates:
        raise ForwardingError(
            f"no IPv{version} default route, so no interface to forward and masquerade"
            f" IPv{version} tunnel traffic to: name the egress interface"
        )
    return candidates[0][1]


@asynccontextmanager
async def server_forwarding(
    tunnel: str,
    tunnel_networks: Iterable[IPNetwork | str],
    *,
    egress: str | None = None,
    masquerade: bool = True,
    nftables: Nftables | None = None,
    ip_forwarding: IPForwarding | None = None,
    backend: NetBackend | None = None,
) -> AsyncIterator[Forwarding]:
    """Forward (and with ``masquerade``, NAT) between ``tunnel`` and ``egress``; undo on exit.

    ``tunnel_networks`` are the tunnel's networks (their IP versions are the ones
    forwarded). ``egress`` ``None`` means the interface of the default route of each
    IP version, looked up now through ``backend`` (pyroute2 on Linux). Raises
    :class:`NftablesMissing` (a ``ConfigError``: exit code 2) without ``nft``, and
    :class:`ForwardingError` (exit code 1) when something cannot be set.
    Needs root (``CAP_NET_ADMIN``).
    """
    networks = tuple(ipaddress.ip_network(n, strict=False) for n in tunnel_networks)
    versions = sorted({n.version for n in networks})
    if not versions:
        raise ConfigError(f"forwarding for {tunnel}: the tunnel has no networks to forward")
    nft = nftables if nftables is not None else Nftables()
    nft.program()  # fail before touching anything
    sysctls = ip_forwarding if ip_forwarding is not None else IPForwarding()
    out: dict[int, str]
    if egress is None:
        routes = backend if backend is not None else default_backend()
        out = {v: await _default_egress(routes, v) for v in versions}
    else:
        out = dict.fromkeys(versions, egress)
    for version, name in out.items():
        if name == tunnel:
            raise ConfigError(f"the egress interface for IPv{version} is the tunnel {tunnel}")
    table = table_name(tunnel)

    stale = await nft.table(FAMILY, table)
    inherited = _recorded(stale) if stale is not None else frozenset()
    if stale is not None:
        logger.warning("replacing nftables table %s %s left by a previous run", FAMILY, table)
    needed = {key for v in versions for key in sysctls.keys_for(v, sorted({tunnel, out[v]}))}
    turn_on = (await sysctls.to_turn_on(needed)) | (inherited & needed)
    state = Forwarding(
        tunnel, networks, out, masquerade, table, frozenset(turn_on), stale is not None
    )
    # The table records what it is about to turn on before anything is turned on,
    # so that a kill at any point leaves a record of it for the next start.
    await nft.apply(forwarding_ruleset(tunnel, networks, out, masquerade=masquerade,
                                       turned_on=turn_on))  # fmt: skip
    try:
        await _turn_off(sysctls, inherited - needed)  # a previous run's, not needed now
        await sysctls.turn_on(turn_on)
        logger.info(
            "forwarding %s: %s%s (nftables table %s %s)",
            tunnel,
            ", ".join(f"IPv{v} via {name}" for v, name in sorted(out.items())),
            ", masquerading" if masquerade else "",
            FAMILY,
            table,
        )
        yield state
    except BaseException:
        await _undo(nft, sysctls, state)
        raise
    failures = await _undo(nft, sysctls, state)
    if failures:
        raise ForwardingError("; ".join(str(f) for f in failures))


async def _turn_off(sysctls: IPForwarding, keys: Iterable[SysctlKey]) -> None:
    failures = await sysctls.turn_off(keys)
    if failures:
        raise failures[0]


@trio.lowlevel.enable_ki_protection
async def _undo(nft: Nftables, sysctls: IPForwarding, state: Forwarding) -> list[Exception]:
    """Turn the switches off, then delete the table; log and return what failed."""
    failures: list[Exception] = []
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + UNDO_TIMEOUT
        failures += await sysctls.turn_off(state.turned_on)
        ident = {"family": FAMILY, "name": state.table}
        try:
            await nft.apply([{"add": {"table": ident}}, {"delete": {"table": ident}}])
        except ForwardingError as exc:
            failures.append(exc)
    if scope.cancelled_caught:
        failures.append(ForwardingError(f"undoing forwarding for {state.tunnel} timed out"))
    for failure in failures:
        logger.warning("%s", failure)
    return failures
