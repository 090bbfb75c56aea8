"""nftables through its JSON interface: ``nft -j -f -`` with the commands on stdin.

Only the ``nft`` command is needed (Debian/Ubuntu package ``nftables``); its
Python bindings are not on PyPI. Every batch is one transaction: it applies
completely or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from trio_sudp.protocol.errors import ConfigError
from trio_sudp.vpn.ipforward import ForwardingError
from trio_sudp.vpn.tools import ToolFailed, find_tool, run_tool

__all__ = ["Nftables", "NftablesMissing"]

Command = Mapping[str, Any]


class NftablesMissing(ConfigError):
    """Forwarding or masquerade is configured but the ``nft`` command is not installed.

    A :class:`~trio_sudp.protocol.errors.ConfigError`: the daemon exits with code 2.
    """


class Nftables:
    """Runs batches of nftables JSON commands with the ``nft`` program named ``command``."""

    def __init__(self, command: str = "nft") -> None:
        self.command = command

    def program(self) -> str:
        """The full path of ``nft``; :class:`NftablesMissing` if it is not installed."""
        found = find_tool(self.command)
        if found is None:
            raise NftablesMissing(
                f"forwarding and masquerade need nftables, but {self.command!r} was not found"
                " on PATH (install the nftables package)"
            )
        return found

    async def apply(self, commands: Sequence[Command]) -> None:
        """Run ``commands`` as one transaction (``nft -j -f -``)."""
        batch = json.dumps({"nftables": list(commands)}).encode()
        await self._run(["-j", "-f", "-"], batch)

    async def table(self, family: str, name: str) -> list[dict[str, Any]] | None:
        """The objects of table ``family name`` (chains, sets, rules), or ``None`` if absent."""
        tables = await self._list(["list", "tables", family])
        if not any(t.get("table", {}).get("name") == name for t in tables):
            return None
        return await self._list(["list", "table", family, name])

    async def _list(self, args: list[str]) -> list[dict[str, Any]]:
        output = await self._run(["-j", *args])
        try:
            objects = json.loads(output)["nftables"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ForwardingError(f"nft {' '.join(args)}: unreadable JSON output") from exc
        return [o for o in objects if isinstance(o, dict) and "metainfo" not in o]

    async def _run(self, args: list[str], stdin: bytes = b"") -> str:
        try:
            done = await run_tool([self.program(), *args], stdin=stdin)
        except ToolFailed as exc:
            raise ForwardingError(f"nftables: {exc}") from None
        return done.stdout
