"""Key files: reading them safely, writing them in the Go form.

Private keys are refused when their file is readable, writable or executable by
anyone but the owner (``mode & 0o077``), as ssh and WireGuard do: the message
says which ``chmod`` fixes it. New private key files are created ``0600``,
public key files ``0644``, both atomically. PEM is written in the form the Go
tools read (``EC PRIVATE KEY``, ``PUBLIC KEY``); ``PRIVATE KEY`` (PKCS#8) is read too.
"""

from __future__ import annotations

import os
import secrets
import stat
import string
from pathlib import Path

from ..protocol.crypto import PrivateKey, PublicKey
from ..protocol.errors import ConfigError, InvalidKey
from .files import atomic_write, read_limited

__all__ = [
    "PRIVATE_KEY_MODE",
    "PUBLIC_KEY_MODE",
    "SHARED_KEY_ALPHABET",
    "SHARED_KEY_LENGTH",
    "check_private_mode",
    "generate_shared_key",
    "read_key_text",
    "read_private_key",
    "read_public_key",
    "write_private_key",
    "write_public_key",
]

PRIVATE_KEY_MODE = 0o600
PUBLIC_KEY_MODE = 0o644
#: tunelo's config tool makes 20-character shared keys of letters and digits.
SHARED_KEY_LENGTH = 20
SHARED_KEY_ALPHABET = string.ascii_letters + string.digits
#: A PEM key is a few hundred bytes.
_MAX_KEY_FILE = 64 * 1024


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
