"""Random documents never make the parsers fail with anything but one-line problems."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_sudp.config import ConfigFileError, load_config, parse_config
from trio_sudp.config.schema import Issues
from trio_sudp.protocol.crypto import PrivateKey
from vectors import VECTORS_DIR

KEY = PrivateKey.generate()


def toml_string(text: str) -> str:
    return tomlkit.string(text).as_string()


PEMS = [KEY.to_pem().decode(), KEY.public_key.to_pem().decode()]
VECTORS = VECTORS_DIR / "tunelo"

TOML_WORDS = [
    "server", "client", "peer", "timers", "listen", "endpoint", "address", "private_key",
    "private_key_pem", "public_key", "public_key_pem", "version", "mtu", "interface",
    "control_socket", "handshake_rate", "name", "vaddr", "shared_key", "routes",
    "full_tunnel", "keepalive_interval", "rekey_interval", "handshake_retries",
    "handshake_timeout", "idle_expiry", "reconnect", "replay_window", "forward",
    "masquerade", "dns", "dns_search", "pre_up", "post_up", "pre_down", "post_down", "metrics",
]  # fmt: skip
JSON_WORDS = [
    "utun_vaddr", "utun_peer", "mappings", "sudp", "attributes", "local", "peers", "server",
    "host", "public_ip", "listen_port", "public_key", "private_key", "key_type",
    "virtual_address", "network_address", "shared_hmac_key", "10.0.0.2",
]  # fmt: skip
TEXTS = [
    "0.0.0.0:7000", "[::]:7000", "10.0.0.1/24", "10.0.0.2", "fd00::1/64", "h.example:1",
    "string", "file", "server.key", "", "192.168.0.0/16", "sudp%d", "x" * 70, *PEMS,
    "eth0", "127.0.0.1:9586", "corp.example", "echo %i",
]  # fmt: skip

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-2, max_value=70000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(TEXTS),
    st.text(max_size=20),
)


def documents(words: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.one_of(st.sampled_from(words), st.text(min_size=1, max_size=8))
    values = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)
        ),
        max_leaves=25,
    )
    return st.dictionaries(keys, values, max_size=6)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(doc: dict[str, Any]) -> str:
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in doc.items())


def assert_parses_cleanly(data: bytes | str, path: Path) -> None:
    issues = Issues(path)
    config = parse_config(data, path, issues=issues, file_mode=0o600)
    assert (config is None) == bool(issues.errors)
    for issue in [*issues.errors, *issues.warnings]:
        line = str(issue)
        assert "\n" not in line and "\r" not in line
        assert line.startswith(f"{path}: ")


DIR = Path(tempfile.gettempdir()) / "trio-sudp-fuzz-does-not-exist"


@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    assert_parses_cleanly(data, DIR / "x.toml")


@given(st.text(max_size=300))
def test_random_text(text: str) -> None:
    assert_parses_cleanly(text, DIR / "x.toml")


@given(documents(TOML_WORDS))
def test_random_toml_documents(doc: dict[str, Any]) -> None:
    assert_parses_cleanly(to_toml(doc), DIR / "server.toml")


@given(st.fixed_dictionaries({
    "server": documents(TOML_WORDS),
    "peer": st.lists(documents(TOML_WORDS), max_size=3),
    "timers": documents(TOML_WORDS),
}))  # fmt: skip
def test_random_server_shaped_toml(doc: dict[str, Any]) -> None:
    assert_parses_cleanly(to_toml(doc), DIR / "server.toml")


@given(st.fixed_dictionaries({"client": documents(TOML_WORDS), "server": documents(TOML_WORDS)}))
def test_random_client_shaped_toml(doc: dict[str, Any]) -> None:
    assert_parses_cleanly(to_toml(doc), DIR / "client.toml")


@given(documents(JSON_WORDS))
def test_random_json_documents(doc: dict[str, Any]) -> None:
    text = json.dumps(doc)
    assert_parses_cleanly(text, DIR / "server.json")
    assert_parses_cleanly(json.dumps({"sudp": doc}), DIR / "server.json")


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            out.extend(_paths(value, (*prefix, index)))
    return out


@pytest.mark.skipif(not VECTORS.is_dir(), reason="tunelo vectors not available")
@given(data=st.data(), name=st.sampled_from(["server.json", "client.json"]))
def test_mutated_tunelo_vectors(data: st.DataObject, name: str) -> None:
    doc = json.loads((VECTORS / name).read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        path = data.draw(st.sampled_from(paths))
        target = doc
        for key in path[:-1]:
            target = target[key]
        if data.draw(st.booleans()) and isinstance(target, dict):
            del target[path[-1]]
        else:
            target[path[-1]] = data.draw(
                st.one_of(scalars, st.lists(scalars, max_size=2), st.just({}))
            )
    assert_parses_cleanly(json.dumps(doc), DIR / name)


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_load_config_raises_only_config_file_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(data)
    os.chmod(path, 0o600)
    try:
        load_config(path)
    except ConfigFileError as exc:
        error: ConfigFileError | None = exc
    else:
        error = None
    if error is not None:
        assert "\n" not in str(error)
        assert error.file == str(path)


# -- inputs the generators above do not make ----------------------------------------


@pytest.mark.skipif(not VECTORS.is_dir(), reason="tunelo vectors not available")
@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (("sudp", "peers", 0, "shared_hmac_key"), "\ud800",
         r"must be valid Unicode text \(it has a lone surrogate\)"),
        (("sudp", "local", "virtual_address"), 10**400, "the server's virtual address is 0"),
        (("sudp", "attributes", "listen_port"), 10**30, "port must be a number"),
        (("sudp", "local", "key_type"), None, None),
    ],
)  # fmt: skip
def test_odd_json_values(tmp_path: Path, where: tuple[Any, ...], value: Any, message: str) -> None:
    doc = json.loads((VECTORS / "server.json").read_text())
    target = doc
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    path = tmp_path / "server.json"
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    if message is None:
        # "key_type": null is Go's zero value: a file name, here a PEM text
        with pytest.raises(ConfigFileError, match="is PEM text, but key_type says a file name"):
            load_config(path)
        return
    with pytest.raises(ConfigFileError, match=message):
        load_config(path)


def test_key_paths_that_cannot_be_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    base = '[server]\nlisten = "0.0.0.0:1"\naddress = "10.0.0.1/24"\nprivate_key = "{}"\n'
    for key, message in [
        ("fifo", "not a regular file"),
        ("~nosuchuser-xyz/key", "no such file"),
        ("/dev/null", "not a regular file"),
        ("x" * 5000, r"cannot open \(File name too long\)"),
    ]:
        path = tmp_path / "server.toml"
        path.write_text(base.format(key))
        with pytest.raises(ConfigFileError, match=message):
            load_config(path)
    with pytest.raises(ConfigFileError, match="not a regular file"):
        load_config(tmp_path / "fifo")
