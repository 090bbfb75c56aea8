"""Running the system's network tools (``nft``, ``resolvectl``, ``resolvconf``).

One place for how a tool is found on ``PATH``, run without a shell with its input
on stdin, bounded in time, and how its failure becomes one line.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

import attrs
import trio

__all__ = ["TOOL_TIMEOUT", "ToolFailed", "ToolResult", "find_tool", "last_line", "run_tool"]

#: Seconds one tool invocation may take.
TOOL_TIMEOUT = 10.0


@attrs.frozen
class ToolResult:
    """What a finished tool printed and returned."""

    returncode: int
    stdout: str
    stderr: str

    def failure(self) -> str:
        """One line for a failed run: the tool's last line of stderr (or stdout), or its status."""
        return last_line(self.stderr) or last_line(self.stdout) or f"exit status {self.returncode}"


class ToolFailed(Exception):
    """A tool could not be started, timed out, or exited non-zero; the message is one line."""


def last_line(text: str) -> str:
    """The last non-blank line of ``text``, stripped (``""`` if there is none)."""
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return ""


def find_tool(name: str) -> str | None:
    """The full path of ``name`` on ``PATH`` (or ``name`` itself if it is a path), else ``None``."""
    return shutil.which(name)


async def run_tool(
    argv: Sequence[str],
    *,
    stdin: bytes = b"",
    check: bool = True,
) -> ToolResult:
    """Run ``argv`` without a shell, ``stdin`` on its standard input, capturing its output.

    Raises :class:`ToolFailed` naming the command when it cannot be started, takes
    longer than :data:`TOOL_TIMEOUT` seconds (it is killed), or, with ``check``, exits
    non-zero.
    """
    shown = " ".join(argv)
    try:
        with trio.fail_after(TOOL_TIMEOUT):
            done = await trio.run_process(
                list(argv), stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
            )
    except trio.TooSlowError:
        raise ToolFailed(f"{shown}: no answer within {TOOL_TIMEOUT:g} s") from None
    except OSError as exc:
        raise ToolFailed(f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
    result = ToolResult(
        done.returncode,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
    )
    if check and result.returncode != 0:
        raise ToolFailed(f"{shown}: {result.failure()}")
    return result
