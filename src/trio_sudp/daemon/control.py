"""The control socket: how ``trio-sudp show`` and ``reload`` talk to a running daemon.

A Unix stream socket, created owner-only (the directory 0700, the socket 0600): a
client sends one JSON line ``{"command": "show"}`` (or ``"reload"``) and reads one
JSON document back, then both sides close. Requests are bounded in size and time,
and a malformed one gets ``{"error": "..."}``, never a crash. The daemon removes the
socket file on the way out, unless it is no longer the file it made.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from ..protocol.errors import SUDPError

__all__ = [
    "ControlError",
    "ControlSocket",
    "Handler",
    "default_socket_path",
    "request",
    "serve_control",
]

log = logging.getLogger("trio_sudp")

MAX_REQUEST = 4096
MAX_RESPONSE = 16 * 1024 * 1024
REQUEST_TIMEOUT = 5.0
RUN_DIRECTORY = Path("/run/trio-sudp")

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(SUDPError):
    """The control socket could not be created or reached, or the daemon said no."""


@attrs.frozen
class ControlSocket:
    """The socket file :func:`serve_control` made: where, and which file it is."""

    path: Path
    #: ``st_dev`` and ``st_ino`` of the file made.
    dev: int
    ino: int

    def __str__(self) -> str:
        return str(self.path)

    def is_ours(self) -> bool:
        """Whether ``path`` is still the file made: not removed, not replaced."""
        try:
            info = self.path.lstat()
        except (FileNotFoundError, NotADirectoryError):
            return False
        return (info.st_dev, info.st_ino) == (self.dev, self.ino)


def default_socket_path(interface: str) -> Path:
    """``/run/trio-sudp/<interface>.sock``."""
    return RUN_DIRECTORY / f"{interface}.sock"


def _prepare(path: Path) -> None:
    directory = path.parent
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
    info = directory.stat()
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise ControlError(
            f"{directory}: control socket directory must be owned by us and not writable by others"
        )
    try:
        existing = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(existing.st_mode):
        raise ControlError(f"{path}: exists and is not a socket")
    # A socket file: in use by a running daemon, or left by one that died.
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
    else:
        raise ControlError(f"{path}: another trio-sudp daemon is using this control socket")
    finally:
        probe.close()


async def serve_control(
    path: Path,
    handler: Handler,
    *,
    task_status: trio.TaskStatus[ControlSocket] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer control requests on ``path`` until cancelled, started with the
    :class:`ControlSocket` made; its file is removed then, if still the one made."""
    _prepare(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        await sock.bind(str(path))
    finally:
        os.umask(old_umask)
    made: ControlSocket | None = None
    try:
        os.chmod(path, 0o600)
        info = path.lstat()
        made = ControlSocket(path, info.st_dev, info.st_ino)
        sock.listen(16)
        listener = trio.SocketListener(sock)
        task_status.started(made)
        await trio.serve_listeners(functools.partial(_handle, handler=handler), [listener])
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            if made is None or made.is_ours():
                path.unlink()


async def _handle(stream: trio.SocketStream, handler: Handler) -> None:
    async with stream:
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                data = b""
                while b"\n" not in data:
                    chunk = await stream.receive_some(MAX_REQUEST)
                    if not chunk:
                        break
                    data += chunk
                    if len(data) > MAX_REQUEST:
                        raise ValueError("request too long")
                request = json.loads(data.decode("utf-8").strip() or "null")
                if not isinstance(request, dict) or not isinstance(request.get("command"), str):
                    raise ValueError('expected {"command": "..."}')
                command = request.pop("command")
                response = await handler(command, request)
        except trio.TooSlowError:
            response = {"error": "request timed out"}
        except (ValueError, UnicodeDecodeError) as exc:
            response = {"error": f"bad request: {exc}"}
        except SUDPError as exc:
            response = {"error": str(exc)}
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(json.dumps(response, default=str).encode() + b"\n")


def request(path: Path, command: str, *, timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
    """Send one command to a daemon (blocking; for the CLI) and return its answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise ControlError(f"{path}: no such control socket (is the daemon running?)") from None
        except PermissionError:
            raise ControlError(f"{path}: permission denied (run as the daemon's user)") from None
        except OSError as exc:
            if exc.errno == errno.ECONNREFUSED:
                raise ControlError(f"{path}: no daemon is listening") from None
            raise ControlError(f"{path}: {exc.strerror or exc}") from None
        sock.sendall(json.dumps({"command": command}).encode() + b"\n")
        chunks = []
        size = 0
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_RESPONSE:
                raise ControlError(f"{path}: answer too large")
    except TimeoutError:
        raise ControlError(f"{path}: the daemon did not answer in {timeout:g} s") from None
    finally:
        sock.close()
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        raise ControlError(f"{path}: the daemon's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ControlError(f"{path}: unexpected answer")
    if "error" in answer:
        raise ControlError(str(answer["error"]))
    return answer
