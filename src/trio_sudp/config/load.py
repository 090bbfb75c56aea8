"""Loading and checking configuration files of either format.

The format is told by the content: a JSON object (``{`` first) is one of tunelo's
files, anything else is trio-sudp's TOML. The role (server or client) is told by
the tables: TOML ``[client]`` or tunelo's ``sudp.host`` make a client.

:func:`load_config` raises one :class:`ConfigFileError` (the first problem);
:func:`inspect_config` and :func:`check_config` find every problem.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import attrs
import tomlkit
import tomlkit.exceptions

from ..protocol.errors import ConfigError
from . import toml, tunelo
from .model import ClientConfig, ConfigFormat, ServerConfig
from .schema import ConfigFileError, Issue, Issues, ParseContext
from .storage import MAX_FILE_SIZE, read_limited

__all__ = [
    "ConfigReport",
    "check_config",
    "detect_format",
    "inspect_config",
    "load_client_config",
    "load_config",
    "load_server_config",
    "parse_config",
]

Config = ServerConfig | ClientConfig


@attrs.frozen
class ConfigReport:
    """Everything ``trio-sudp check`` says about a file."""

    path: Path
    #: The configuration, when there were no errors.
    config: Config | None
    errors: tuple[Issue, ...]
    warnings: tuple[Issue, ...]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def problems(self) -> list[str]:
        """One line per error: ``"server.toml: peer[2].vaddr: ..."``."""
        return [str(issue) for issue in self.errors]


def detect_format(text: str) -> ConfigFormat:
    """``"tunelo"`` for a JSON object, else ``"toml"``."""
    return "tunelo" if text.lstrip("\ufeff \t\r\n").startswith("{") else "toml"


def _decode(data: bytes, issues: Issues) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        issues.error(None, f"not UTF-8 text (byte {exc.start})")
        return None
    return text.removeprefix("\ufeff")


def _json_error(exc: json.JSONDecodeError) -> str:
    return f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"


def _parse_document(text: str, fmt: ConfigFormat, issues: Issues) -> dict[str, Any] | None:
    try:
        if fmt == "tunelo":
            doc = json.loads(text, parse_constant=_no_constant)
        else:
            # The standard library's parser is the strict one, and its messages name
            # the line and column; tomlkit, which edits the file, reads its values.
            tomllib.loads(text)
            doc = tomlkit.parse(text).unwrap()
    except json.JSONDecodeError as exc:
        issues.error(None, _json_error(exc))
        return None
    except (tomllib.TOMLDecodeError, tomlkit.exceptions.TOMLKitError) as exc:
        issues.error(None, f"not valid TOML: {exc}")
        return None
    except (ValueError, RecursionError) as exc:
        issues.error(None, f"cannot be parsed ({exc})")
        return None
    if not isinstance(doc, dict):
        issues.error(None, "must be a JSON object")
        return None
    return doc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_config(
    data: bytes | str,
    path: str | os.PathLike[str],
    *,
    issues: Issues | None = None,
    file_mode: int | None = None,
    pending: dict[Path, tuple[bytes, int]] | None = None,
) -> Config | None:
    """Parse a configuration held in memory as if it were the file ``path``.

    Problems are recorded in ``issues`` (``None`` is returned when there are errors).
    ``file_mode`` is the file's mode (for files that hold a private key inline);
    ``pending`` maps paths of key files not yet written to ``(content, mode)``.
    """
    path = Path(path)
    issues = Issues(path) if issues is None else issues
    text = data if isinstance(data, str) else _decode(data, issues)
    if text is None:
        return None
    fmt = detect_format(text)
    doc = _parse_document(text, fmt, issues)
    if doc is None:
        return None
    ctx = ParseContext(path, issues, strict=fmt == "toml", file_mode=file_mode, pending=pending)
    errors_before = len(issues.errors)
    try:
        if fmt == "tunelo":
            if tunelo.is_tunelo_client(doc):
                return tunelo.parse_client_document(doc, ctx)
            return tunelo.parse_server_document(doc, ctx)
        if "client" in doc:
            return toml.parse_client_document(doc, ctx)
        if "server" in doc:
            return toml.parse_server_document(doc, ctx)
        issues.error(
            None,
            "has neither a [server] nor a [client] table: not a trio-sudp configuration "
            "(see docs/configuration.md)",
        )
        return None
    except ConfigError as exc:
        # A check the parsers missed: still one line, still a ConfigFileError.
        if len(issues.errors) == errors_before:
            issues.error(None, str(exc))
        return None


def _read(path: Path, issues: Issues) -> tuple[bytes, int] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        issues.error(None, "no such file")
        return None
    except IsADirectoryError:
        issues.error(None, "is a directory, not a configuration file")
        return None
    except OSError as exc:
        issues.error(None, f"cannot open ({exc.strerror or exc})")
        return None
    except ValueError:
        issues.error(None, "not a valid file name")
        return None
    try:
        return read_limited(fd, path, MAX_FILE_SIZE), os.fstat(fd).st_mode
    except ConfigError as exc:
        issues.error(None, str(exc).removeprefix(f"{path}: "))
        return None
    except OSError as exc:
        issues.error(None, f"cannot read ({exc.strerror or exc})")
        return None
    finally:
        os.close(fd)


def inspect_config(path: str | os.PathLike[str]) -> ConfigReport:
    """Read and validate ``path`` (keys included), collecting every problem."""
    path = Path(path)
    issues = Issues(path)
    config = None
    read = _read(path, issues)
    if read is not None:
        config = parse_config(read[0], path, issues=issues, file_mode=read[1])
    if issues.errors:
        config = None
    return ConfigReport(path, config, tuple(issues.errors), tuple(issues.warnings))


def check_config(path: str | os.PathLike[str]) -> list[str]:
    """Every problem of ``path``, one line each (empty: the file is fine)."""
    return inspect_config(path).problems


def load_config(path: str | os.PathLike[str]) -> Config:
    """Load a server or client configuration; raise :class:`ConfigFileError` if it has
    a problem (the first one: run ``trio-sudp check`` for all of them)."""
    report = inspect_config(path)
    if report.errors:
        raise ConfigFileError.from_issue(report.errors[0])
    assert report.config is not None
    return report.config


def load_server_config(path: str | os.PathLike[str]) -> ServerConfig:
    """Like :func:`load_config`, refusing a client configuration."""
    config = load_config(path)
    if not isinstance(config, ServerConfig):
        raise ConfigFileError(path, None, "this is a client configuration, not a server's")
    return config


def load_client_config(path: str | os.PathLike[str]) -> ClientConfig:
    """Like :func:`load_config`, refusing a server configuration."""
    config = load_config(path)
    if not isinstance(config, ClientConfig):
        raise ConfigFileError(path, None, "this is a server configuration, not a client's")
    return config
