"""tunelo's JSON files: the vectors written by tunelo's own tool load as they are,
and what we write reads back (and matches tunelo's layout byte for byte)."""

from __future__ import annotations

import ipaddress
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from trio_sudp.config import (
    ClientConfig,
    ConfigFileError,
    ServerConfig,
    check_config,
    inspect_config,
    load_client_config,
    load_config,
    load_server_config,
    tunelo,
)
from trio_sudp.protocol.constants import Version
from trio_sudp.protocol.crypto import PrivateKey
from vectors import VECTORS_DIR

VECTORS = VECTORS_DIR / "tunelo"
if not VECTORS.is_dir():  # pragma: no cover - the vectors live next to the repository
    VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "tunelo"

pytestmark = pytest.mark.skipif(not VECTORS.is_dir(), reason="tunelo vectors not available")


def write_json(path: Path, doc: dict[str, Any], mode: int = 0o600) -> Path:
    path.write_text(json.dumps(doc, indent=4))
    path.chmod(mode)
    return path


def vector(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return doc


def only_error(path: Path) -> str:
    problems = check_config(path)
    assert len(problems) == 1, problems
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert str(info.value) == problems[0]
    assert "\n" not in problems[0]
    return problems[0]


# -- the vectors -------------------------------------------------------------------


def test_vector_server_loads_as_written() -> None:
    config = load_server_config(VECTORS / "server.json")
    assert config.format == "tunelo"
    assert config.listen == ("0.0.0.0", 7000)
    assert config.endpoint == "172.31.250.1:7000"
    assert config.addresses == (ipaddress.ip_interface("10.0.0.1/24"),)
    assert config.networks == (ipaddress.ip_network("10.0.0.0/24"),)
    assert config.mtu is None and config.tunnel_mtu == 1400
    assert config.identity.vaddr == 0
    assert len(config.peers) == 1
    peer = config.peers[0]
    assert peer.vaddr == 1
    assert peer.version == Version.V3
    assert peer.peer.shared_key == b"Lkgd9wVOtCaFoTZacaDZ"
    assert peer.addresses == (ipaddress.ip_address("10.0.0.2"),)
    assert peer.routes == ()
    # the advertised key (sudp.attributes) is the server's own
    doc = vector("server.json")
    assert config.public_key.to_pem().decode() == doc["sudp"]["attributes"]["public_key"]
    table = config.route_table()
    assert table.lookup("10.0.0.2") == 1
    assert table.lookup("10.0.0.1") == 0


def test_vector_client_loads_as_written() -> None:
    config = load_client_config(VECTORS / "client.json")
    assert config.format == "tunelo"
    assert config.vaddr == 1
    assert config.addresses == (ipaddress.ip_interface("10.0.0.2/24"),)
    assert config.server_address == ipaddress.ip_address("10.0.0.1")
    assert config.endpoint == "172.31.250.1:7000"
    assert config.endpoint_host_port == ("172.31.250.1", 7000)
    assert config.server.vaddr == 0
    assert config.server.version == Version.V3
    assert config.server.shared_key == b"Lkgd9wVOtCaFoTZacaDZ"
    assert config.full_tunnel is False
    assert config.tunnel_mtu == 1400


def test_vector_keys_match_each_other() -> None:
    server = load_server_config(VECTORS / "server.json")
    client = load_client_config(VECTORS / "client.json")
    assert client.server.public_key == server.public_key
    peer = server.peer(client.vaddr)
    assert peer is not None
    assert peer.public_key == client.public_key
    assert peer.peer.shared_key == client.server.shared_key
    assert client.addresses[0].ip in peer.addresses
    assert client.server_address == server.addresses[0].ip


def test_vectors_render_back_byte_for_byte() -> None:
    server = load_server_config(VECTORS / "server.json")
    client = load_client_config(VECTORS / "client.json")
    assert tunelo.render_server(server).rstrip("\n") == (VECTORS / "server.json").read_text()
    assert tunelo.render_client(client).rstrip("\n") == (VECTORS / "client.json").read_text()


def test_inline_key_readable_by_others_is_only_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "server.json"
    shutil.copy(VECTORS / "server.json", path)
    path.chmod(0o644)
    report = inspect_config(path)
    assert report.ok
    assert [w.field for w in report.warnings] == ["sudp.local.private_key"]
    assert "chmod 600" in str(report.warnings[0])
    path.chmod(0o600)
    assert inspect_config(path).warnings == ()


# -- key_type "file" ---------------------------------------------------------------


def _file_keys(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    server = vector("server.json")
    client = vector("client.json")
    server_key = PrivateKey.from_pem(server["sudp"]["local"]["private_key"])
    client_key = PrivateKey.from_pem(client["sudp"]["host"]["private_key"])
    (tmp_path / "server.key").write_bytes(server_key.to_pem())
    (tmp_path / "server.key").chmod(0o600)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "client.key").write_bytes(client_key.to_pem())
    (tmp_path / "keys" / "client.key").chmod(0o600)
    (tmp_path / "server.pub").write_bytes(server_key.public_key.to_pem())
    (tmp_path / "client.pub").write_bytes(client_key.public_key.to_pem())
    local = server["sudp"]["local"]
    local["key_type"] = "file"
    local["private_key"] = "server.key"
    del server["sudp"]["attributes"]["key_type"]  # absent means "file"
    server["sudp"]["attributes"]["public_key"] = str(tmp_path / "server.pub")
    server["sudp"]["peers"][0]["key_type"] = "file"
    server["sudp"]["peers"][0]["public_key"] = "client.pub"
    client["sudp"]["server"]["key_type"] = "file"
    client["sudp"]["server"]["public_key"] = "server.pub"
    del client["sudp"]["host"]["key_type"]
    client["sudp"]["host"]["private_key"] = "keys/client.key"
    return server, client


def test_key_type_file_relative_to_the_config(tmp_path: Path) -> None:
    server_doc, client_doc = _file_keys(tmp_path)
    server = load_config(write_json(tmp_path / "server.json", server_doc, 0o644))
    client = load_config(write_json(tmp_path / "client.json", client_doc, 0o644))
    assert isinstance(server, ServerConfig) and isinstance(client, ClientConfig)
    assert server == attrs_evolve_source(load_config(VECTORS / "server.json"), server)
    assert client.server.public_key == server.public_key
    # a key file is private: no warning about the JSON file's mode
    assert inspect_config(tmp_path / "server.json").warnings == ()


def attrs_evolve_source(config: Any, like: Any) -> Any:
    import attrs

    return attrs.evolve(config, source=like.source)


def test_key_type_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    server_doc, _ = _file_keys(tmp_path)
    (tmp_path / "server.key").chmod(0o644)
    line = only_error(write_json(tmp_path / "server.json", server_doc))
    assert line == (
        f"{tmp_path}/server.json: sudp.local.private_key: {tmp_path}/server.key: private key is "
        f"accessible by others (mode 0644); fix it with: chmod 600 {tmp_path}/server.key"
    )


def test_key_type_file_missing(tmp_path: Path) -> None:
    server_doc, _ = _file_keys(tmp_path)
    (tmp_path / "client.pub").unlink()
    line = only_error(write_json(tmp_path / "server.json", server_doc))
    assert line.endswith(f"sudp.peers[0].public_key: {tmp_path}/client.pub: no such file")


# -- bad files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (lambda d: d["sudp"]["local"].update(key_type="pem"), "sudp.local.key_type",
         "must be \"string\" (inline PEM) or \"file\", not 'pem'"),
        (lambda d: d["sudp"]["local"].update(virtual_address=3), "sudp.local.virtual_address",
         "the server's virtual address is 0, not 3"),
        (lambda d: d["sudp"]["local"].update(network_address="0.0.0.0"),
         "sudp.local.network_address", "expected 'host:port', got '0.0.0.0'"),
        (lambda d: d["sudp"]["local"].update(network_address="0.0.0.0:70000"),
         "sudp.local.network_address", "port must be a number from 0 to 65535"),
        (lambda d: d.update(utun_vaddr="10.0.0.0/24"), "utun_vaddr",
         "10.0.0.0/24 is the network address of 10.0.0.0/24"),
        (lambda d: d.update(utun_vaddr="banana"), "utun_vaddr", "'banana' is not an address"),
        (lambda d: d.update(mappings={"10.0.0.2": 7}), 'mappings["10.0.0.2"]',
         "no peer in sudp.peers has virtual address 7"),
        (lambda d: d.update(mappings={"10.0.0.300": 1}), 'mappings["10.0.0.300"]',
         "'10.0.0.300' is not an IP address"),
        (lambda d: d.update(mappings={"10.0.0.1": 1}), 'mappings["10.0.0.1"]',
         "10.0.0.1/32 is the same as 10.0.0.1/32 of the server's own address"),
        (lambda d: d.update(mappings={"10.0.0.255": 1}), 'mappings["10.0.0.255"]',
         "10.0.0.255 is the broadcast address of 10.0.0.0/24"),
        (lambda d: d["sudp"]["peers"][0].update(shared_hmac_key="x" * 65),
         "sudp.peers[0].shared_hmac_key", "is 65 bytes; at most 64"),
        (lambda d: d["sudp"]["peers"][0].update(virtual_address=0),
         "sudp.peers[0].virtual_address", "a client's virtual address is 1..65534"),
        (lambda d: d["sudp"]["peers"][0].update(virtual_address=65535),
         "sudp.peers[0].virtual_address", "a client's virtual address is 1..65534"),
        (lambda d: d["sudp"]["peers"][0].update(virtual_address="1"),
         "sudp.peers[0].virtual_address", "must be an integer, not text '1'"),
        (lambda d: d["sudp"]["peers"][0].update(public_key=d["sudp"]["local"]["private_key"]),
         "sudp.peers[0].public_key", "this is a private key; a public key was expected"),
        (lambda d: d["sudp"]["peers"][0].update(public_key="-----BEGIN PUBLIC KEY-----\nx\n"),
         "sudp.peers[0].public_key", "not a PEM 'PUBLIC KEY' block"),
        (lambda d: d["sudp"]["local"].update(private_key=d["sudp"]["attributes"]["public_key"]),
         "sudp.local.private_key", "this is a public key; a private key was expected"),
        (lambda d: d["sudp"].pop("local"), "sudp.local", "missing (required)"),
        (lambda d: d["sudp"].update(peers={}), "sudp.peers", "must be a list of tables"),
        (lambda d: d["sudp"]["peers"].append(dict(d["sudp"]["peers"][0])),
         "sudp.peers[1].virtual_address", "virtual address 1 is already used by sudp.peers[0]"),
    ],
)  # fmt: skip
def test_bad_server_json(tmp_path: Path, edit: Any, field: str, message: str) -> None:
    doc = vector("server.json")
    edit(doc)
    line = only_error(write_json(tmp_path / "server.json", doc))
    assert line.startswith(f"{tmp_path}/server.json: {field}: {message}"), line


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (lambda d: d["sudp"]["server"].update(virtual_address=1), "sudp.server.virtual_address",
         "the server's virtual address is 0, not 1"),
        (lambda d: d["sudp"]["server"].update(network_address="bad host:7000"),
         "sudp.server.network_address", "'bad host' is neither an IP address nor a host name"),
        (lambda d: d["sudp"]["host"].update(virtual_address=0), "sudp.host.virtual_address",
         "a client's virtual address is 1..65534"),
        (lambda d: d["sudp"]["host"].pop("virtual_address"), "sudp.host.virtual_address",
         "missing (required)"),
        (lambda d: d.update(utun_peer="10.0.0.2"), "utun_peer", "10.0.0.2 is our own address"),
        (lambda d: d["sudp"]["server"].update(shared_hmac_key="é" * 33),
         "sudp.server.shared_hmac_key", "is 66 bytes; at most 64"),
    ],
)  # fmt: skip
def test_bad_client_json(tmp_path: Path, edit: Any, field: str, message: str) -> None:
    doc = vector("client.json")
    edit(doc)
    line = only_error(write_json(tmp_path / "client.json", doc))
    assert line.startswith(f"{tmp_path}/client.json: {field}: {message}"), line


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "server.json"
    path.write_text('{"utun_vaddr": }')
    assert only_error(path) == (f"{path}: not valid JSON: Expecting value at line 1 column 16")


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    doc = vector("server.json")
    doc["utun_vaddr"] = "nope"
    doc["sudp"]["local"]["network_address"] = "x"
    doc["sudp"]["peers"][0]["virtual_address"] = -1
    problems = check_config(write_json(tmp_path / "server.json", doc))
    fields = [p.split(": ")[1] for p in problems]
    assert fields == ["utun_vaddr", "sudp.local.network_address", "sudp.peers[0].virtual_address"]


def test_unknown_keys_are_warnings(tmp_path: Path) -> None:
    doc = vector("server.json")
    doc["sudp"]["local"]["private_kye"] = "x"
    doc["extra"] = 1
    report = inspect_config(write_json(tmp_path / "server.json", doc))
    assert report.ok
    assert [str(w).split(": ", 1)[1] for w in report.warnings] == [
        "extra: unknown key, ignored",
        "sudp.local.private_kye: unknown key, ignored; did you mean 'private_key'?",
    ]


def test_listen_without_host_means_every_address(tmp_path: Path) -> None:
    doc = vector("server.json")
    doc["sudp"]["local"]["network_address"] = ":7000"
    config = load_server_config(write_json(tmp_path / "server.json", doc))
    assert config.listen == ("0.0.0.0", 7000)


def test_server_without_clients(tmp_path: Path) -> None:
    doc = vector("server.json")
    del doc["mappings"]
    doc["sudp"]["peers"] = []
    report = inspect_config(write_json(tmp_path / "server.json", doc))
    assert report.ok
    assert isinstance(report.config, ServerConfig) and report.config.peers == ()
    assert any("no peers" in str(w) for w in report.warnings)


def test_writer_refuses_what_tunelo_cannot_hold(tmp_path: Path) -> None:
    import attrs

    from trio_sudp.protocol.errors import ConfigError

    server = load_server_config(VECTORS / "server.json")
    client = load_client_config(VECTORS / "client.json")
    with pytest.raises(ConfigError, match="cannot hold mtu"):
        tunelo.render_server(attrs.evolve(server, mtu=1300))
    with pytest.raises(ConfigError, match="cannot hold full_tunnel"):
        tunelo.render_client(attrs.evolve(client, full_tunnel=True))
    with pytest.raises(ConfigError, match="cannot hold routes"):
        tunelo.render_client(attrs.evolve(client, routes=(ipaddress.ip_network("192.168.0.0/24"),)))
