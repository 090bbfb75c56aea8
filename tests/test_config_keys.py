"""Key files (modes, types) and atomic writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from trio_sudp.config.storage import (
    SHARED_KEY_ALPHABET,
    StagedWrites,
    atomic_write,
    generate_shared_key,
    read_private_key,
    read_public_key,
    write_private_key,
    write_public_key,
)
from trio_sudp.protocol.crypto import PrivateKey
from trio_sudp.protocol.errors import ConfigError, InvalidKey

KEY = PrivateKey.generate()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> object:
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.mark.usefixtures("open_umask")
def test_private_key_written_0600_public_0644(tmp_path: Path) -> None:
    write_private_key(tmp_path / "k", KEY)
    write_public_key(tmp_path / "k.pub", KEY.public_key)
    assert mode(tmp_path / "k") == 0o600
    assert mode(tmp_path / "k.pub") == 0o644
    assert (tmp_path / "k").read_bytes().startswith(b"-----BEGIN EC PRIVATE KEY-----\n")
    assert (tmp_path / "k.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert read_private_key(tmp_path / "k").public_key == KEY.public_key
    assert read_public_key(tmp_path / "k.pub") == KEY.public_key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k", "k.pub"]


def test_private_key_created_with_mode_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modes: list[int] = []
    real_open = os.open

    def spy(path: object, flags: int, mode: int = 0o777, *args: object) -> int:
        if flags & os.O_CREAT:
            modes.append(mode)
        return real_open(path, flags, mode)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", spy)
    write_private_key(tmp_path / "k", KEY)
    assert modes == [0o600]


def test_existing_key_is_not_replaced(tmp_path: Path) -> None:
    write_private_key(tmp_path / "k", KEY)
    other = PrivateKey.generate()
    with pytest.raises(ConfigError, match="already exists"):
        write_private_key(tmp_path / "k", other)
    assert read_private_key(tmp_path / "k").public_key == KEY.public_key
    write_private_key(tmp_path / "k", other, overwrite=True)
    assert read_private_key(tmp_path / "k").public_key == other.public_key
    assert mode(tmp_path / "k") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]


@pytest.mark.parametrize("bits", [0o644, 0o640, 0o604, 0o660, 0o601, 0o610])
def test_private_key_readable_by_others_refused(tmp_path: Path, bits: int) -> None:
    path = tmp_path / "k"
    path.write_bytes(KEY.to_pem())
    path.chmod(bits)
    with pytest.raises(InvalidKey) as info:
        read_private_key(path)
    assert str(info.value) == (
        f"{path}: private key is accessible by others (mode {bits:04o}); "
        f"fix it with: chmod 600 {path}"
    )


@pytest.mark.parametrize("bits", [0o600, 0o400, 0o700])
def test_private_key_owner_only_accepted(tmp_path: Path, bits: int) -> None:
    path = tmp_path / "k"
    path.write_bytes(KEY.to_pem())
    path.chmod(bits)
    assert read_private_key(path).public_key == KEY.public_key


def test_wrong_kinds_of_key_files(tmp_path: Path) -> None:
    pub = tmp_path / "k.pub"
    pub.write_bytes(KEY.public_key.to_pem())
    pub.chmod(0o600)
    with pytest.raises(InvalidKey, match="this is a public key; a private key was expected"):
        read_private_key(pub)
    priv = tmp_path / "k"
    priv.write_bytes(KEY.to_pem())
    with pytest.raises(InvalidKey, match="this is a private key; a public key was expected"):
        read_public_key(priv)
    with pytest.raises(ConfigError, match="no such file"):
        read_public_key(tmp_path / "missing")
    raw = serialization.load_pem_private_key(KEY.to_pem(), None)
    encrypted = tmp_path / "enc"
    encrypted.write_bytes(
        raw.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    encrypted.chmod(0o600)
    with pytest.raises(InvalidKey, match="encrypted private keys are not supported"):
        read_private_key(encrypted)
    huge = tmp_path / "huge"
    huge.write_bytes(b"x" * 100_000)
    huge.chmod(0o600)
    with pytest.raises(ConfigError, match="larger than"):
        read_private_key(huge)


def test_shared_keys() -> None:
    keys = {generate_shared_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert len(key) == 20
        assert set(key) <= set(SHARED_KEY_ALPHABET)
    assert len(generate_shared_key(64)) == 64


# -- atomic writes -----------------------------------------------------------------


def test_atomic_write_keeps_mode_of_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write(path, b"new", mode=None)
    assert path.read_text() == "new"
    assert mode(path) == 0o640


def test_staged_writes_failure_before_commit_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("A")

    def write_then_fail() -> None:
        with StagedWrites() as staged:
            staged.add(tmp_path / "a", b"new A", mode=None)
            staged.add(tmp_path / "b", b"new B", mode=0o600)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    assert (tmp_path / "a").read_text() == "A"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_staged_writes_failed_rename_puts_everything_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").write_text("A")
    (tmp_path / "c").write_text("C")
    real_replace = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        if Path(dst).name == "c":
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    staged = StagedWrites()
    staged.add(tmp_path / "a", b"new A", mode=None)
    staged.add(tmp_path / "b", b"new B", mode=0o600, overwrite=False)
    staged.add(tmp_path / "c", b"new C", mode=None)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space"):
        staged.commit()
    monkeypatch.undo()
    assert (tmp_path / "a").read_text() == "A"
    assert (tmp_path / "c").read_text() == "C"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c"]


def test_staged_writes_no_clobber(tmp_path: Path) -> None:
    staged = StagedWrites()
    staged.add(tmp_path / "x", b"1", mode=0o600, overwrite=False)
    (tmp_path / "x").write_text("someone else")  # appears between staging and commit
    with pytest.raises(ConfigError, match="already exists"):
        staged.commit()
    assert (tmp_path / "x").read_text() == "someone else"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]
