"""``trio-sudp serve`` and ``trio-sudp connect``: foreground daemons suited to systemd.

Log lines go to stderr. SIGINT and SIGTERM stop cleanly (exit 0) after removing the
TUN device and every route that was added. A failure to start exits non-zero with
one line saying why: bad configuration (2), no root or ``/dev/net/tun``, port in
use, handshake refused or unanswered (1). So does losing, while running, the TUN
device, the control socket or the one address the server listens on (1, see
``watchdog.py``), after the same clean-up as on SIGTERM.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from ..protocol.errors import ConfigError, HandshakeError, SUDPError
from ..tun.errors import TunError

__all__ = ["EXIT_CONFIG", "EXIT_FAILURE", "run_daemon", "setup_logging"]

log = logging.getLogger("trio_sudp")

EXIT_FAILURE = 1
EXIT_CONFIG = 2

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def setup_logging(level: str = "info") -> None:
    """Log lines to stderr: ``trio-sudp: <level>: <message>``."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ConfigError(f"unknown log level {level!r} (debug, info, warning, error)")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("trio-sudp: %(levelname)s: %(message)s"))
    root = logging.getLogger("trio_sudp")
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    root.propagate = False


def _first_error(exc: BaseException) -> BaseException:
    """The innermost single exception of nested exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def describe_failure(exc: BaseException) -> tuple[int, str] | None:
    """Exit code and one-line reason for an expected failure; ``None`` for a bug."""
    exc = _first_error(exc)
    if isinstance(exc, BaseExceptionGroup):
        found = [describe_failure(e) for e in exc.exceptions]
        return next((f for f in found if f is not None), None)
    if isinstance(exc, HandshakeError):
        return EXIT_FAILURE, f"handshake failed: {exc.reason}"
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG, str(exc)
    if isinstance(exc, TunError | SUDPError):
        return EXIT_FAILURE, str(exc)
    if isinstance(exc, OSError):
        return EXIT_FAILURE, exc.strerror or str(exc)
    return None


async def _until_stopped(
    main: Callable[..., Awaitable[Any]],
    on_reload: Callable[[], Awaitable[None]] | None,
) -> None:
    with trio.open_signal_receiver(*_STOP_SIGNALS, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:

            async def run_main() -> None:
                await main()
                nursery.cancel_scope.cancel()

            nursery.start_soon(run_main)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    if on_reload is None:
                        log.warning("SIGHUP: reload is not supported here")
                    else:
                        await on_reload()
                    continue
                log.info("stopping on %s", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                return


def run_daemon(
    main: Callable[..., Awaitable[Any]],
    *,
    on_reload: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Run ``main()`` under Trio until it ends or a stop signal; return the exit code."""
    try:
        trio.run(_until_stopped, main, on_reload)
    except KeyboardInterrupt:
        log.info("stopping on SIGINT")
        return 0
    except BaseException as exc:
        failure = describe_failure(exc)
        if failure is None:
            raise
        code, reason = failure
        log.error("%s", reason)
        return code
    return 0


def config_path(path: Path) -> Path:
    """The configuration file, made absolute for messages."""
    return path.expanduser().resolve()
