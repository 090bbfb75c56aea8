"""Files: reading them safely, writing them atomically, and key files.

Writes go to a temporary file in the same directory (created with its final
mode), are fsynced, then renamed into place. :class:`StagedWrites` groups several
files: every file is written to a temporary file first; only when all of them are
written are they renamed into place. If anything fails before that, nothing was
changed; if a rename fails (it hardly can: same directory, same file system), the
files already renamed are put back.

Private keys are refused when their file is readable, writable or executable by
anyone but the owner (``mode & 0o077``), as ssh and WireGuard do: the message
says which ``chmod`` fixes it. New private key files are created ``0600``,
public key files ``0644``. PEM is written in the form the Go tools read
(``EC PRIVATE KEY``, ``PUBLIC KEY``); ``PRIVATE KEY`` (PKCS#8) is read too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import string
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from ..protocol.crypto import PrivateKey, PublicKey
from ..protocol.errors import ConfigError, InvalidKey

__all__ = [
    "MAX_FILE_SIZE",
    "PRIVATE_KEY_MODE",
    "PUBLIC_KEY_MODE",
    "SHARED_KEY_ALPHABET",
    "SHARED_KEY_LENGTH",
    "StagedWrites",
    "atomic_write",
    "check_private_mode",
    "generate_shared_key",
    "locked_directory",
    "read_key_text",
    "read_limited",
    "read_private_key",
    "read_public_key",
    "write_private_key",
    "write_public_key",
]

#: Configuration and key files are small; refuse to read anything larger.
MAX_FILE_SIZE = 1 << 20
PRIVATE_KEY_MODE = 0o600
PUBLIC_KEY_MODE = 0o644
#: tunelo's config tool makes 20-character shared keys of letters and digits.
SHARED_KEY_LENGTH = 20
SHARED_KEY_ALPHABET = string.ascii_letters + string.digits
#: A PEM key is a few hundred bytes.
_MAX_KEY_FILE = 64 * 1024


def read_limited(fd: int, path: Path | str, limit: int = MAX_FILE_SIZE) -> bytes:
    """Read a whole regular file from ``fd``, refusing other file types and huge files."""
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{path}: is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path}: not a regular file")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise ConfigError(f"{path}: file is larger than {limit} bytes")
        chunks.append(chunk)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Staged:
    __slots__ = ("backup", "existed", "overwrite", "path", "temp")

    def __init__(self, path: Path, temp: Path, overwrite: bool) -> None:
        self.path = path
        self.temp = temp
        self.overwrite = overwrite
        self.existed = False
        self.backup: Path | None = None


class StagedWrites:
    """Write several files all at once, or none of them.

    ::

        with StagedWrites() as staged:
            staged.add(key_path, pem, mode=0o600, overwrite=False)
            staged.add(config_path, text.encode(), mode=0o644)
            # ... anything raising here leaves every file untouched
        # leaving the block without an error renames all temporary files into place

    ``mode`` ``None`` keeps the mode of the file being replaced (``0o644`` for a new
    file). ``overwrite=False`` refuses to replace an existing file.
    """

    def __init__(self) -> None:
        self._staged: list[_Staged] = []
        self._done = False

    def add(self, path: Path, data: bytes, *, mode: int | None, overwrite: bool = True) -> None:
        """Write ``data`` to a temporary file next to ``path`` (created with ``mode``)."""
        if self._done:
            raise RuntimeError("these writes were already committed or aborted")
        path = Path(path)
        if any(s.path == path for s in self._staged):
            raise ConfigError(f"{path}: written twice")
        if not overwrite and os.path.lexists(path):
            raise ConfigError(f"{path}: already exists (use --force to replace it)")
        if mode is None:
            try:
                mode = stat.S_IMODE(os.stat(path).st_mode)
            except FileNotFoundError:
                mode = 0o644
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        # O_EXCL: never follow or reuse anything already there. The mode is set at
        # creation (a secret is never readable by others, not even for a moment)
        # and again with fchmod, which the umask does not touch.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode & 0o600)
        staged = _Staged(path, temp, overwrite)
        self._staged.append(staged)
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)

    def commit(self) -> None:
        """Rename every temporary file into place (in the order they were added)."""
        if self._done:
            return
        self._done = True
        renamed: list[_Staged] = []
        try:
            for staged in self._staged:
                self._install(staged)
                renamed.append(staged)
        except BaseException:
            for staged in reversed(renamed):
                self._undo(staged)
            for staged in self._staged:
                # The backup of the file whose rename failed: its original is intact.
                if staged.backup is not None and staged not in renamed:
                    with contextlib.suppress(OSError):
                        os.unlink(staged.backup)
            self._remove_temps()
            raise
        for staged in renamed:
            if staged.backup is not None:
                with contextlib.suppress(OSError):
                    os.unlink(staged.backup)
        for directory in {s.path.parent for s in self._staged}:
            _fsync_directory(directory)

    def _install(self, staged: _Staged) -> None:
        path = staged.path
        if staged.overwrite:
            if os.path.lexists(path):
                staged.existed = True
                # Keep the old file under a hard link until everything is in place.
                backup = path.with_name(f".{path.name}.{secrets.token_hex(6)}.old")
                with contextlib.suppress(OSError):
                    os.link(path, backup)
                    staged.backup = backup
            os.replace(staged.temp, path)
            return
        try:
            # link() fails if the target exists: an atomic "create, never replace".
            os.link(staged.temp, path)
        except FileExistsError:
            raise ConfigError(f"{path}: already exists (use --force to replace it)") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            if os.path.lexists(path):
                raise ConfigError(f"{path}: already exists (use --force to replace it)") from None
            os.replace(staged.temp, path)
        else:
            os.unlink(staged.temp)

    @staticmethod
    def _undo(staged: _Staged) -> None:
        with contextlib.suppress(OSError):
            if staged.backup is not None:
                os.replace(staged.backup, staged.path)
            elif not staged.existed:
                os.unlink(staged.path)

    def _remove_temps(self) -> None:
        for staged in self._staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged.temp)

    def abort(self) -> None:
        """Remove every temporary file; nothing is changed."""
        if not self._done:
            self._done = True
            self._remove_temps()

    def __enter__(self) -> StagedWrites:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def atomic_write(path: Path, data: bytes, *, mode: int | None, overwrite: bool = True) -> None:
    """Write one file atomically (see :class:`StagedWrites`)."""
    with StagedWrites() as staged:
        staged.add(path, data, mode=mode, overwrite=overwrite)


@contextlib.contextmanager
def locked_directory(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` (serialises concurrent edits)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- keys --------------------------------------------------------------------------


def generate_shared_key(length: int = SHARED_KEY_LENGTH) -> str:
    """A fresh v3 shared key: ``length`` letters and digits from the OS CSPRNG."""
    return "".join(secrets.choice(SHARED_KEY_ALPHABET) for _ in range(length))


def check_private_mode(path: Path | str, mode: int) -> None:
    """Refuse a private key file that anyone but its owner may access."""
    if os.name != "posix":  # pragma: no cover - trio-sudp runs on Linux and macOS
        return
    if stat.S_IMODE(mode) & 0o077:
        raise InvalidKey(
            f"{path}: private key is accessible by others (mode "
            f"{stat.S_IMODE(mode):04o}); fix it with: chmod 600 {path}"
        )


def _read(path: Path) -> tuple[bytes, int]:
    try:
        # O_NONBLOCK: a FIFO must not hang us; read_limited refuses anything irregular.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a key file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot open ({exc.strerror or exc})") from None
    except ValueError:  # a name the file system cannot encode
        raise ConfigError(f"{path!r}: not a valid file name") from None
    try:
        mode = os.fstat(fd).st_mode
        return read_limited(fd, path, _MAX_KEY_FILE), mode
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def read_key_text(path: Path) -> bytes:
    """The raw bytes of a key file (no checks beyond size and file type)."""
    return _read(Path(path))[0]


def read_private_key(path: Path, *, check_mode: bool = True) -> PrivateKey:
    """Load a private key file, refusing one readable by others (see module doc)."""
    path = Path(path)
    data, mode = _read(path)
    key = PrivateKey.from_pem(data, what=str(path))
    if check_mode:
        # The mode of the file that was read (fstat): no window between check and read.
        check_private_mode(path, mode)
    return key


def read_public_key(path: Path) -> PublicKey:
    """Load a ``PUBLIC KEY`` PEM file; a private key here is refused (wrong file?)."""
    path = Path(path)
    return PublicKey.from_pem(_read(path)[0], what=str(path))


def write_private_key(path: Path, key: PrivateKey, *, overwrite: bool = False) -> None:
    """Write ``key`` as ``EC PRIVATE KEY`` PEM, mode 0600, atomically."""
    atomic_write(Path(path), key.to_pem(), mode=PRIVATE_KEY_MODE, overwrite=overwrite)


def write_public_key(path: Path, key: PublicKey, *, overwrite: bool = False) -> None:
    """Write ``key`` as ``PUBLIC KEY`` PEM, mode 0644, atomically."""
    atomic_write(Path(path), key.to_pem(), mode=PUBLIC_KEY_MODE, overwrite=overwrite)
