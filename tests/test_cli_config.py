"""The genkey / pubkey / check / config commands, in process and as real processes."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from trio_sudp.cli.config_commands import register
from trio_sudp.config import load_client_config, load_server_config
from trio_sudp.protocol.crypto import PrivateKey, PublicKey
from vectors import VECTORS_DIR

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "contrib" / "examples"
VECTORS = VECTORS_DIR / "tunelo"


def make_app() -> typer.Typer:
    app = typer.Typer(name="trio-sudp", no_args_is_help=True, pretty_exceptions_enable=False)

    @app.command()
    def version() -> None:  # a second command, so that subcommands keep their names
        """Print the version."""

    register(app)
    return app


APP = make_app()
runner = CliRunner()


def run(*args: str, input: str | bytes | None = None) -> tuple[int, str, str]:
    result = runner.invoke(APP, [str(a) for a in args], input=input)
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code: int, stdout: str, stderr: str, text: str) -> None:
    assert code == 2, (stdout, stderr)
    assert "Traceback" not in stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("trio-sudp: error: "), lines[0]
    assert text in lines[0], lines[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- genkey / pubkey ---------------------------------------------------------------


def test_genkey_to_stdout_and_pubkey_from_stdin() -> None:
    code, out, _ = run("genkey")
    assert code == 0
    assert out.startswith("-----BEGIN EC PRIVATE KEY-----\n")
    key = PrivateKey.from_pem(out)
    code, pub, _ = run("pubkey", input=out)
    assert code == 0
    assert pub.startswith("-----BEGIN PUBLIC KEY-----\n")
    assert PublicKey.from_pem(pub) == key.public_key


def test_genkey_out_files(tmp_path: Path) -> None:
    code, out, err = run("genkey", "--out", tmp_path / "k", "--pub", tmp_path / "k.pub")
    assert code == 0 and out == ""
    assert "wrote" in err
    assert mode(tmp_path / "k") == 0o600
    assert mode(tmp_path / "k.pub") == 0o644
    key = PrivateKey.from_pem((tmp_path / "k").read_bytes())
    assert PublicKey.from_pem((tmp_path / "k.pub").read_bytes()) == key.public_key
    code, pub, _ = run("pubkey", tmp_path / "k")
    assert code == 0 and PublicKey.from_pem(pub) == key.public_key
    # never replaces a key by accident
    assert_one_line_error(*run("genkey", "-o", tmp_path / "k"), "already exists (use --force")
    assert PrivateKey.from_pem((tmp_path / "k").read_bytes()).public_key == key.public_key
    assert run("genkey", "-o", tmp_path / "k", "--force")[0] == 0
    assert_one_line_error(*run("genkey", "-o", tmp_path / "x", "--pub", tmp_path / "x"),
                          "must be different files")  # fmt: skip


def test_pubkey_bad_input(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    (tmp_path / "k.pub").write_bytes(key.public_key.to_pem())
    assert_one_line_error(
        *run("pubkey", tmp_path / "k.pub"), "this is a public key; a private key was expected"
    )
    assert_one_line_error(*run("pubkey", input="hello\n"), "stdin: no PEM 'EC PRIVATE KEY'")
    assert_one_line_error(*run("pubkey", tmp_path / "nope"), "No such file or directory")
    assert_one_line_error(*run("pubkey", tmp_path), "Is a directory")


# -- check -------------------------------------------------------------------------


def test_check_ok_and_problems(tmp_path: Path) -> None:
    assert run("config", "init-server", "-c", tmp_path / "server.toml",
               "--endpoint", "vpn.example.com:7000")[0] == 0  # fmt: skip
    code, out, err = run("check", "--config", tmp_path / "server.toml")
    assert code == 0, err
    assert out.startswith(f"{tmp_path}/server.toml: OK: server (toml), listen 0.0.0.0:7000")
    assert "warning: " in err and "no peers" in err
    assert run("check", "-c", tmp_path / "server.toml", "--quiet")[1] == ""

    text = (tmp_path / "server.toml").read_text()
    (tmp_path / "server.toml").write_text(
        text.replace('listen = "0.0.0.0:7000"', 'listen = "0.0.0.0:x"\nmut = 1400')
    )
    (tmp_path / "server.key").chmod(0o644)
    code, out, err = run("check", "-c", tmp_path / "server.toml")
    assert code == 2 and out == ""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if not line.startswith("warning: ")]
    path = f"{tmp_path}/server.toml"
    assert lines == [
        f"{path}: server.listen: port must be a number from 0 to 65535, got 'x' in '0.0.0.0:x'",
        f"{path}: server.private_key: {tmp_path}/server.key: private key is accessible by "
        f"others (mode 0644); fix it with: chmod 600 {tmp_path}/server.key",
        f"{path}: server.mut: unknown key; did you mean 'mtu'?",
        f"{path}: 3 problems",
    ]


def test_check_missing_file(tmp_path: Path) -> None:
    code, _, err = run("check", "-c", tmp_path / "none.toml")
    assert code == 2
    assert err.splitlines() == [
        f"{tmp_path}/none.toml: no such file",
        f"{tmp_path}/none.toml: 1 problem",
    ]


@pytest.mark.skipif(not VECTORS.is_dir(), reason="tunelo vectors not available")
def test_check_tunelo_vectors() -> None:
    for name in ("server.json", "client.json"):
        code, out, err = run("check", "-c", VECTORS / name)
        assert code == 0, err
        assert ": OK: " in out


# -- config init-server / add-client -----------------------------------------------


@pytest.mark.parametrize("fmt", ["toml", "tunelo"])
def test_init_server_and_add_clients(tmp_path: Path, fmt: str) -> None:
    ext = "json" if fmt == "tunelo" else "toml"
    server = tmp_path / f"server.{ext}"
    code, out, err = run("config", "init-server", "-c", server, "--format", fmt,
                         "--endpoint", "198.51.100.1:7000")  # fmt: skip
    assert code == 0, err
    assert f"wrote {server}" in out
    for i in (1, 2):
        code, out, err = run(
            "config", "add-client", "-c", server, "--out", tmp_path / f"c{i}.{ext}"
        )
        assert code == 0, err
        assert f"added vaddr {i} at 10.0.0.{i + 1} (SUDP v3) to {server}" in out
    for path in (server, tmp_path / f"c1.{ext}", tmp_path / f"c2.{ext}"):
        assert run("check", "-c", path)[0] == 0
        assert mode(path) == 0o600
    loaded = load_server_config(server)
    client = load_client_config(tmp_path / f"c2.{ext}")
    assert client.server.public_key == loaded.public_key
    assert loaded.peer(2) is not None and loaded.peer(2).public_key == client.public_key  # type: ignore[union-attr]


def test_config_bad_input(tmp_path: Path) -> None:
    server = tmp_path / "server.toml"
    assert_one_line_error(*run("config", "init-server", "-c", server, "--listen", "nowhere"),
                          "expected 'host:port'")  # fmt: skip
    assert_one_line_error(*run("config", "init-server", "-c", server, "--network", "10.0.0.0/33"),
                          "is not a network like 10.0.0.1/24")  # fmt: skip
    assert_one_line_error(*run("config", "init-server", "-c", tmp_path / "s.json",
                               "--format", "tunelo"), "give --endpoint IP:PORT")  # fmt: skip
    assert list(tmp_path.iterdir()) == []
    # typer's own checks: exit status 2 too, and no traceback
    code, out, err = run("config", "init-server", "-c", server, "--version", "4")
    assert code == 2 and "Traceback" not in out + err
    code, out, err = run("config", "init-server", "-c", server, "--format", "yaml")
    assert code == 2 and "Traceback" not in out + err
    assert list(tmp_path.iterdir()) == []

    assert run("config", "init-server", "-c", server, "--name-is-not-an-option")[0] == 2
    assert run("config", "init-server", "-c", server)[0] == 0
    assert_one_line_error(*run("config", "add-client", "-c", server, "-o", tmp_path / "c.toml"),
                          "has no endpoint: give --endpoint HOST:PORT")  # fmt: skip
    assert_one_line_error(*run("config", "add-client", "-c", tmp_path / "missing.toml",
                               "-o", tmp_path / "c.toml", "--endpoint", "h:1"),
                          "missing.toml: no such file")  # fmt: skip
    assert_one_line_error(*run("config", "init-server", "-c", server), "already exists")


def test_list_and_remove_clients(tmp_path: Path) -> None:
    server = tmp_path / "server.toml"
    assert run("config", "init-server", "-c", server, "--endpoint", "198.51.100.1:7000",
               "--network", "10.0.0.1/24", "--network", "fd00::1/64")[0] == 0  # fmt: skip
    code, out, err = run("config", "list", "-c", server)
    assert (code, out) == (0, "")
    assert "no clients" in err
    assert run("config", "add-client", "-c", server, "-o", tmp_path / "a.toml",
               "--name", "laptop", "--route", "192.168.7.0/24")[0] == 0  # fmt: skip
    assert run("config", "add-client", "-c", server, "-o", tmp_path / "b.toml",
               "--version", "2")[0] == 0  # fmt: skip
    keys = [p.public_key.fingerprint() for p in load_server_config(server).peers]
    code, out, err = run("config", "list", "-c", server)
    assert code == 0, err
    assert out.splitlines() == [
        f"laptop  vaddr 1  10.0.0.2, fd00::2 routes 192.168.7.0/24  v3  key {keys[0]}",
        f"-       vaddr 2  10.0.0.3, fd00::3                        v2  key {keys[1]}",
    ]
    code, out, _ = run("config", "list", "-c", server, "--json")
    assert code == 0
    assert json.loads(out) == [
        {"name": "laptop", "vaddr": 1, "addresses": ["10.0.0.2", "fd00::2"],
         "routes": ["192.168.7.0/24"], "version": 3, "fingerprint": keys[0]},
        {"name": None, "vaddr": 2, "addresses": ["10.0.0.3", "fd00::3"], "routes": [],
         "version": 2, "fingerprint": keys[1]},
    ]  # fmt: skip

    code, out, err = run("config", "remove-client", "-c", server, "laptop")
    assert code == 0, err
    assert out.splitlines() == [
        f"removed laptop (vaddr 1) from {server}",
        f"a running server drops it with: trio-sudp reload -c {server}",
    ]
    assert [p.vaddr for p in load_server_config(server).peers] == [2]
    assert_one_line_error(*run("config", "remove-client", "-c", server, "laptop"),
                          f"{server}: no client has name 'laptop'")  # fmt: skip
    assert_one_line_error(*run("config", "remove-client", "-c", server, "1"),
                          "no client has virtual address 1")  # fmt: skip
    assert run("config", "remove-client", "-c", server, "2")[0] == 0
    assert run("config", "list", "-c", server, "--json")[1].strip() == "[]"
    assert run("check", "-c", server)[0] == 0


def test_list_and_remove_client_bad_input(tmp_path: Path) -> None:
    server = tmp_path / "server.toml"
    assert run("config", "init-server", "-c", server, "--endpoint", "h:1")[0] == 0
    assert run("config", "add-client", "-c", server, "-o", tmp_path / "c.toml")[0] == 0
    for command in (["list"], ["remove-client"]):
        extra = [] if command == ["list"] else ["1"]
        assert_one_line_error(*run("config", *command, "-c", tmp_path / "c.toml", *extra),
                              "this is a client configuration")  # fmt: skip
        assert_one_line_error(*run("config", *command, "-c", tmp_path / "none.toml", *extra),
                              "none.toml: no such file")  # fmt: skip
    code, out, err = run("config", "remove-client", "-c", server)
    assert code == 2 and "Traceback" not in out + err
    assert [p.vaddr for p in load_server_config(server).peers] == [1]


def test_help_texts() -> None:
    for args in (["--help"], ["genkey", "--help"], ["pubkey", "--help"], ["check", "--help"],
                 ["config", "--help"], ["config", "init-server", "--help"],
                 ["config", "add-client", "--help"], ["config", "remove-client", "--help"],
                 ["config", "list", "--help"]):  # fmt: skip
        code, out, _ = run(*args)
        assert code == 0, args
        assert "Usage:" in out
    assert "trio-sudp genkey | tee client.key | trio-sudp pubkey" in run("pubkey", "--help")[1]


# -- the examples ------------------------------------------------------------------


def test_examples_pass_check(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    for directory in (tmp_path / "examples", tmp_path / "examples" / "tunelo"):
        for name in ("server", "laptop"):
            code, _, err = run("genkey", "-o", directory / f"{name}.key",
                               "--pub", directory / f"{name}.pub")  # fmt: skip
            assert code == 0, err
    results = {}
    for relative in ("server.toml", "client.toml", "tunelo/server.json", "tunelo/client.json"):
        code, out, err = run("check", "-c", tmp_path / "examples" / relative)
        assert code == 0, err
        assert "warning" not in err, err
        results[relative] = out
    for directory, server_name, client_name in (
        (tmp_path / "examples", "server.toml", "client.toml"),
        (tmp_path / "examples" / "tunelo", "server.json", "client.json"),
    ):
        server = load_server_config(directory / server_name)
        client = load_client_config(directory / client_name)
        peer = server.peer(client.vaddr)
        assert peer is not None
        assert peer.public_key == client.public_key
        assert client.server.public_key == server.public_key
        assert client.server.shared_key == peer.peer.shared_key
        assert tuple(a.ip for a in client.addresses) == peer.addresses


# -- real processes ----------------------------------------------------------------


def _commands() -> list[list[str]]:
    commands = [[sys.executable, "-m", "trio_sudp.cli.config_commands"]]
    script = Path(sys.executable).parent / "trio-sudp"
    if script.exists():
        from trio_sudp.cli import app as cli

        if any(c.name == "genkey" for c in cli.app.registered_commands):
            commands.append([str(script)])
    return commands


@pytest.mark.parametrize("command", _commands(), ids=lambda c: Path(c[-1]).name)
def test_genkey_pubkey_pipeline_in_real_processes(tmp_path: Path, command: list[str]) -> None:
    genkey = subprocess.Popen([*command, "genkey"], stdout=subprocess.PIPE)
    tee = subprocess.Popen(["tee", str(tmp_path / "client.key")], stdin=genkey.stdout,
                           stdout=subprocess.PIPE)  # fmt: skip
    assert genkey.stdout is not None
    genkey.stdout.close()
    pub = subprocess.run([*command, "pubkey"], stdin=tee.stdout, capture_output=True, check=False)
    assert tee.wait(10) == 0 and genkey.wait(10) == 0
    assert pub.returncode == 0, pub.stderr
    key = PrivateKey.from_pem((tmp_path / "client.key").read_bytes())
    assert PublicKey.from_pem(pub.stdout) == key.public_key

    bad = subprocess.run([*command, "pubkey"], input=pub.stdout, capture_output=True, check=False)
    assert bad.returncode == 2
    assert bad.stderr.decode().splitlines() == [
        "trio-sudp: error: stdin: this is a public key; a private key was expected"
    ]
    check = subprocess.run([*command, "check", "-c", str(tmp_path / "nope.toml")],
                           capture_output=True, check=False)  # fmt: skip
    assert check.returncode == 2
    assert b"Traceback" not in check.stderr


@pytest.mark.parametrize("command", _commands(), ids=lambda c: Path(c[-1]).name)
def test_client_management_in_real_processes(tmp_path: Path, command: list[str]) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *args], capture_output=True, text=True, cwd=tmp_path,
                              timeout=60, check=False)  # fmt: skip

    assert cli("config", "init-server", "--endpoint", "192.0.2.1:7000").returncode == 0
    for name in ("one", "two"):
        made = cli(
            "config", "add-client", "-c", "server.toml", "-o", f"{name}.toml", "--name", name
        )
        assert made.returncode == 0, made.stderr
    listed = cli("config", "list", "-c", "server.toml", "--json")
    assert [c["name"] for c in json.loads(listed.stdout)] == ["one", "two"]
    removed = cli("config", "remove-client", "-c", "server.toml", "one")
    assert removed.returncode == 0, removed.stderr
    listed = cli("config", "list", "-c", "server.toml")
    assert listed.returncode == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["two"]
    again = cli("config", "remove-client", "-c", "server.toml", "one")
    assert again.returncode == 2
    assert again.stderr.splitlines() == [
        "trio-sudp: error: server.toml: no client has name 'one' "
        "(see: trio-sudp config list -c server.toml)"
    ]
