"""What a parser needs beyond the document: the file's place, its mode, and its keys.

Paths inside a config file (key files, the control socket) are relative to the
directory of the config file. A :class:`ParseContext` may hold *pending* files
(written but not yet renamed into place by :mod:`.edit`) that it reads instead of
the file system, so that a new configuration is validated before anything is
written.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from ..protocol.crypto import PrivateKey, PublicKey
from ..protocol.errors import ConfigError
from .errors import Issues
from .fields import Table
from .keys import check_private_mode, read_private_key, read_public_key
from .model import ConfigFormat

__all__ = ["ParseContext", "clean_key_message"]

_WHAT = "<key>"


def clean_key_message(message: str) -> str:
    """Shorten the library's wordy key errors to what a user can act on."""
    message = message.removeprefix(f"{_WHAT}: ")
    for marker, short in (
        (" (Unable to load PEM", " (damaged PEM framing)"),
        (" (Could not deserialize", " (damaged key data, or not an EC key)"),
    ):
        index = message.find(marker)
        if index >= 0:
            message = message[:index] + short
    return message


class ParseContext:
    """The config file being parsed: where it is, its mode, and its problem list."""

    def __init__(
        self,
        path: Path,
        issues: Issues,
        *,
        format: ConfigFormat,
        file_mode: int | None = None,
        pending: Mapping[Path, tuple[bytes, int]] | None = None,
    ) -> None:
        self.path = Path(path)
        self.directory = self.path.parent
        self.issues = issues
        self.format: ConfigFormat = format
        #: The config file's own mode (``None``: not read from a file).
        self.file_mode = file_mode
        self._pending = {Path(os.path.abspath(p)): v for p, v in (pending or {}).items()}

    def resolve(self, text: str) -> Path:
        """A path from the file: ``~`` expanded, relative to the config file's directory."""
        path = Path(text)
        with contextlib.suppress(RuntimeError):  # "~nosuchuser/..." stays (and is not found)
            path = path.expanduser()
        return path if path.is_absolute() else self.directory / path

    def _pending_file(self, path: Path) -> tuple[bytes, int] | None:
        return self._pending.get(Path(os.path.abspath(path)))

    # -- keys --------------------------------------------------------------------

    def private_key_file(self, table: Table, key: str, text: str) -> PrivateKey | None:
        path = self.resolve(text)
        try:
            pending = self._pending_file(path)
            if pending is not None:
                private = PrivateKey.from_pem(pending[0], what=str(path))
                check_private_mode(path, pending[1])
                return private
            return read_private_key(path)
        except ConfigError as exc:
            table.error(key, clean_key_message(str(exc)))
            return None

    def public_key_file(self, table: Table, key: str, text: str) -> PublicKey | None:
        path = self.resolve(text)
        try:
            pending = self._pending_file(path)
            if pending is not None:
                return PublicKey.from_pem(pending[0], what=str(path))
            return read_public_key(path)
        except ConfigError as exc:
            table.error(key, clean_key_message(str(exc)))
            return None

    def private_key_inline(self, table: Table, key: str, pem: str) -> PrivateKey | None:
        try:
            private = PrivateKey.from_pem(pem, what=_WHAT)
        except ConfigError as exc:
            table.error(key, clean_key_message(str(exc)))
            return None
        self._check_inline_secret(table, key)
        return private

    def public_key_inline(self, table: Table, key: str, pem: str) -> PublicKey | None:
        try:
            return PublicKey.from_pem(pem, what=_WHAT)
        except ConfigError as exc:
            table.error(key, clean_key_message(str(exc)))
            return None

    def _check_inline_secret(self, table: Table, key: str) -> None:
        """A file holding a private key inline must be private itself.

        trio-sudp's own format refuses it, like a key file; tunelo's files are only
        warned about, since they must be read as tunelo wrote them.
        """
        if self.file_mode is None or os.name != "posix":
            return
        mode = stat.S_IMODE(self.file_mode)
        if not mode & 0o077:
            return
        message = (
            f"the file holds a private key and is accessible by others (mode {mode:04o}); "
            f"fix it with: chmod 600 {self.path}"
        )
        if self.format == "toml":
            table.error(key, message)
        else:
            table.warn(key, message)
