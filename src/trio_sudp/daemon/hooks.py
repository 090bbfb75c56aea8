"""``pre_up``, ``post_up``, ``pre_down`` and ``post_down`` commands, as wg-quick runs them.

The phases follow wg-quick (Linux): ``pre_up`` before the interface is created,
``post_up`` once it is up with its addresses, routes and DNS, ``pre_down`` before
it is removed, ``post_down`` after. Usage, around the interface's life::

    async with run_hooks(hooks, "sudp0") as hooks_run:   # pre_up
        async with open_tun("sudp0") ..., configure_interface(...):
            async with hooks_run.up():                  # post_up ... pre_down
                ...  # run the VPN
    # post_down

A failing ``pre_up`` or ``post_up`` command stops the start with :class:`HookFailed`
(its exit code and last line of stderr); the commands after it in that phase do
not run, and what was set up is undone as the blocks unwind. As in wg-quick, a
start that fails runs neither ``pre_down`` nor ``post_down``: those run only for an
interface that came up. A failing down command is logged and the others still run
(the interface is going away regardless). Down phases run shielded from
cancellation, so Ctrl-C and SIGTERM run them too.

``%i`` is the same name in all four phases. The configured name can be a pattern
(``sudp%d``) that the kernel numbers only when the interface is created, after
``pre_up``: a daemon with hooks therefore picks the name first
(:func:`interface_for_hooks`: the first free number, as the kernel would) and
creates the interface with exactly that name.

Each command is run with ``/bin/sh -c`` rather than bash as wg-quick does: ``/bin/sh``
is on every Unix (bash is not, on Alpine, BusyBox or minimal images); a command
that needs bash can say ``bash -c '...'``. ``%i`` is replaced by the interface name.
Commands get the daemon's environment and working directory and no standard input;
each line they print goes to the daemon's log (``trio_sudp.hooks``).
"""

from __future__ import annotations

import functools
import itertools
import logging
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager

import trio

from trio_sudp.config import Hooks
from trio_sudp.protocol.errors import SUDPError

__all__ = [
    "HOOK_TIME_LIMIT",
    "SHELL",
    "HookFailed",
    "HookRun",
    "interface_for_hooks",
    "run_hooks",
]

logger = logging.getLogger("trio_sudp.hooks")

#: The shell commands are run with (``SHELL -c COMMAND``).
SHELL = "/bin/sh"
#: Seconds one command may run before it is killed and counts as failed.
HOOK_TIME_LIMIT = 60.0
#: Seconds a command's output is still read after it exited (a child it left in the
#: background may hold the pipes open).
DRAIN_TIME = 1.0
#: Longest part of one output line that is logged.
MAX_LOGGED_LINE = 1000


def interface_for_hooks(
    name: str, existing: Collection[str], *, platform: str = sys.platform
) -> str:
    """The interface name ``%i`` stands for, known before the interface exists.

    ``name`` itself, or for a pattern holding ``%d`` the first number that no
    interface in ``existing`` has, as Linux numbers a new device. On macOS, where
    tunnel devices are always ``utunN``, a pattern is numbered as ``utun%d``.
    """
    if "%d" not in name:
        return name
    if platform == "darwin":
        name = "utun%d"
    for number in itertools.count():
        candidate = name.replace("%d", str(number), 1)
        if candidate not in existing:
            return candidate
    raise AssertionError("unreachable")


class HookFailed(SUDPError):
    """A hook command failed: ``returncode`` (``None`` if it was killed for taking too
    long) and ``last_line``, the last line it wrote to stderr. The message is one line."""

    def __init__(self, phase: str, command: str, returncode: int | None, last_line: str):
        self.phase = phase
        self.command = command
        self.returncode = returncode
        self.last_line = last_line
        if returncode is None:
            status = "was killed after running too long"
        elif returncode < 0:
            status = f"was killed by {signal.Signals(-returncode).name}"
        else:
            status = f"failed with exit code {returncode}"
        detail = last_line or " ".join(command.split())
        super().__init__(f"{phase} hook {status}: {detail}")


class HookRun:
    """The hooks of one interface; made by :func:`run_hooks`."""

    def __init__(self, hooks: Hooks, interface: str, *, time_limit: float) -> None:
        self.hooks = hooks
        self.interface = interface
        self.time_limit = time_limit
        self.came_up = False

    @asynccontextmanager
    async def up(self) -> AsyncIterator[None]:
        """Run ``post_up`` now and ``pre_down`` when the block exits (however it exits)."""
        await self.run_phase("post_up", self.hooks.post_up)
        self.came_up = True
        try:
            yield
        finally:
            await self.run_down_phase("pre_down", self.hooks.pre_down)

    async def run_phase(self, phase: str, commands: Sequence[str]) -> None:
        """Run ``commands`` in order; the first failure raises :class:`HookFailed`."""
        for command in commands:
            await self.run(phase, command)

    async def run_down_phase(self, phase: str, commands: Sequence[str]) -> None:
        """Run every command, shielded from cancellation; failures are logged."""
        with trio.CancelScope(shield=True):
            for command in commands:
                try:
                    await self.run(phase, command)
                except HookFailed as exc:
                    logger.error("%s", exc)

    async def run(self, phase: str, command: str) -> None:
        """Run one command with ``%i`` replaced; :class:`HookFailed` unless it exits 0."""
        shown = command.replace("%i", self.interface)
        logger.info("%s: %s", phase, shown)
        last_error = ""

        async def pump(stream: trio.abc.ReceiveStream, is_stderr: bool) -> None:
            nonlocal last_error
            async for line in _lines(stream):
                logger.info("%s: %s", phase, line)
                if is_stderr:
                    last_error = line

        run_process = functools.partial(
            trio.run_process,
            [SHELL, "-c", shown],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            check=False,
        )
        with trio.move_on_after(self.time_limit) as limit:
            async with trio.open_nursery() as nursery:
                process: trio.Process = await nursery.start(run_process)
                async with trio.open_nursery() as pumps:
                    assert process.stdout is not None and process.stderr is not None
                    pumps.start_soon(pump, process.stdout, False)
                    pumps.start_soon(pump, process.stderr, True)
                    await process.wait()
                    pumps.cancel_scope.deadline = trio.current_time() + DRAIN_TIME
        if limit.cancelled_caught:
            raise HookFailed(phase, shown, None, f"still running after {self.time_limit:g} s")
        if process.returncode != 0:
            raise HookFailed(phase, shown, process.returncode, last_error)


async def _lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[str]:
    """Lines of text from ``stream``, each cut to :data:`MAX_LOGGED_LINE` characters."""
    pending = b""
    async for chunk in stream:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line[:MAX_LOGGED_LINE].decode(errors="replace").rstrip()
        pending = pending[: MAX_LOGGED_LINE * 4]
    if pending:
        yield pending[:MAX_LOGGED_LINE].decode(errors="replace").rstrip()


@asynccontextmanager
async def run_hooks(
    hooks: Hooks, interface: str, *, time_limit: float = HOOK_TIME_LIMIT
) -> AsyncIterator[HookRun]:
    """Run ``pre_up`` now, and ``post_down`` at exit if the interface came up.

    Enter :meth:`HookRun.up` once the interface is up for ``post_up``/``pre_down``.
    Each command is killed after ``time_limit`` seconds.
    """
    run = HookRun(hooks, interface, time_limit=time_limit)
    await run.run_phase("pre_up", hooks.pre_up)
    try:
        yield run
    finally:
        if run.came_up:
            await run.run_down_phase("post_down", hooks.post_down)
