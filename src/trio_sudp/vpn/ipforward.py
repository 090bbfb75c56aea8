"""IP forwarding for chosen interfaces through ``/proc/sys/net``, and putting it back.

IPv4 forwarding is per interface: the kernel forwards a packet when
``net.ipv4.conf.<in>.forwarding`` is on for the interface it *arrived* on, so the
tunnel's and the egress interface's switches together carry both directions and
nothing else.

IPv6 is different. ``net.ipv6.conf.<if>.forwarding`` only switches that
interface's host/router behaviour (router advertisements, the router flag); the
forwarding decision reads ``net.ipv6.conf.all.forwarding`` alone (ip-sysctl.rst:
"IPv4 and IPv6 work differently here"). Linux 6.17 added
``net.ipv6.conf.<if>.force_forwarding``, which forwards what arrives on that
interface while the global switch is off: it is used when the kernel has it.
Older kernels need the global switch; writing it also rewrites every interface's
``forwarding`` (and on 6.17+ clears every ``force_forwarding`` when switched
off), so each write of ``all`` puts the per-interface values it clobbered back:
only the global switch changes, and routers' advertisements are still accepted.

Only switches that were off are turned on, and only those are turned off again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs
import trio

from trio_sudp.protocol.errors import SUDPError

__all__ = ["PROC_SYS_NET", "ForwardingError", "IPForwarding", "SysctlKey"]

logger = logging.getLogger("trio_sudp.vpn.ipforward")

#: Where the network sysctls of the current network namespace are.
PROC_SYS_NET = Path("/proc/sys/net")


class ForwardingError(SUDPError):
    """Forwarding or NAT could not be set up or removed. The message is one line."""


@attrs.frozen(order=True)
class SysctlKey:
    """One switch under ``net.ipv{version}.conf.{interface}``, e.g. ``forwarding``."""

    version: int
    interface: str
    name: str

    def path(self, root: Path) -> Path:
        """The file of this switch under ``root`` (``/proc/sys/net``)."""
        return root / f"ipv{self.version}" / "conf" / self.interface / self.name

    def __str__(self) -> str:
        return f"net.ipv{self.version}.conf.{self.interface}.{self.name}"


# What writing net.ipv6.conf.all.forwarding rewrites on every interface.
_CLOBBERED_BY_ALL = ("forwarding", "force_forwarding")


class IPForwarding:
    """Turns forwarding switches on and back off, under ``root`` (``/proc/sys/net``).

    ``force_forwarding`` chooses how IPv6 is enabled: ``None`` uses the per-interface
    ``force_forwarding`` switch where the kernel has it, else the global one;
    ``False`` always uses the global one (older kernels' way, also for tests).
    """

    def __init__(self, root: Path = PROC_SYS_NET, *, force_forwarding: bool | None = None):
        self.root = root
        self._force_forwarding = force_forwarding

    def keys_for(self, version: int, interfaces: Sequence[str]) -> list[SysctlKey]:
        """The switches that make IP ``version`` forward what arrives on ``interfaces``."""
        if version == 4:
            return [SysctlKey(4, name, "forwarding") for name in interfaces]
        forced = [SysctlKey(6, name, "force_forwarding") for name in interfaces]
        usable = self._force_forwarding is not False
        if usable and all(key.path(self.root).exists() for key in forced):
            return forced
        return [SysctlKey(6, "all", "forwarding")]

    async def read(self, key: SysctlKey) -> str:
        """The current value of ``key`` (e.g. ``"0"``)."""
        try:
            return (await trio.Path(key.path(self.root)).read_text()).strip()
        except OSError as exc:
            raise ForwardingError(f"cannot read {key}: {exc.strerror or exc}") from exc

    async def to_turn_on(self, keys: Iterable[SysctlKey]) -> frozenset[SysctlKey]:
        """Those of ``keys`` that are off now."""
        return frozenset([key for key in keys if await self.read(key) == "0"])

    async def write(self, key: SysctlKey, value: str) -> None:
        """Set ``key`` to ``value``; for ``all``, keep every interface's own values."""
        if key.interface != "all":
            await self._write(key, value)
            return
        kept = await self._per_interface_values(key.version)
        await self._write(key, value)
        for other, old in kept.items():
            try:
                if await self.read(other) != old:
                    await self._write(other, old)
            except ForwardingError:
                if other.path(self.root).parent.exists():
                    raise  # else the interface went away meanwhile

    async def turn_on(self, keys: Iterable[SysctlKey]) -> None:
        """Set every key to 1; if one fails, turn those already done back off and raise."""
        done: list[SysctlKey] = []
        try:
            for key in sorted(keys):
                await self.write(key, "1")
                done.append(key)
        except BaseException:
            await self.turn_off(done)
            raise

    async def turn_off(self, keys: Iterable[SysctlKey]) -> list[ForwardingError]:
        """Set every key back to 0 (skipping interfaces that are gone); return the failures."""
        failures = []
        for key in sorted(keys, reverse=True):
            if not key.path(self.root).parent.exists():
                continue  # the interface went away, and its switches with it
            try:
                await self.write(key, "0")
            except ForwardingError as exc:
                failures.append(exc)
        return failures

    async def _write(self, key: SysctlKey, value: str) -> None:
        try:
            await trio.Path(key.path(self.root)).write_text(value + "\n")
        except OSError as exc:
            raise ForwardingError(f"cannot set {key} = {value}: {exc.strerror or exc}") from exc
        logger.debug("%s = %s", key, value)

    async def _per_interface_values(self, version: int) -> dict[SysctlKey, str]:
        conf = trio.Path(self.root / f"ipv{version}" / "conf")
        values = {}
        for directory in sorted(await conf.iterdir()):
            if directory.name == "all":
                continue
            for name in _CLOBBERED_BY_ALL:
                key = SysctlKey(version, directory.name, name)
                # Skipped: not on this kernel, or the interface went away.
                with contextlib.suppress(ForwardingError):
                    values[key] = await self.read(key)
        return values
