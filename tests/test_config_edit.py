"""config init-server / add-client: consistent files, both formats, all or nothing."""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_sudp.config import (
    ClientConfig,
    ConfigFileError,
    ServerConfig,
    add_client,
    check_config,
    init_server,
    load_client_config,
    load_config,
    load_server_config,
    remove_client,
)
from trio_sudp.config import edit as edit_module
from trio_sudp.config.storage import SHARED_KEY_ALPHABET, StagedWrites
from trio_sudp.protocol.constants import Version
from trio_sudp.protocol.crypto import PrivateKey
from trio_sudp.protocol.errors import ConfigError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), mode(p)) for p in sorted(directory.iterdir())}


def assert_consistent(server: ServerConfig, client: ClientConfig) -> None:
    peer = server.peer(client.vaddr)
    assert peer is not None
    assert client.server.public_key == server.public_key
    assert peer.public_key == client.public_key
    assert peer.peer.shared_key == client.server.shared_key
    assert peer.version == client.version
    assert tuple(a.ip for a in client.addresses) == peer.addresses
    for iface in client.addresses:
        assert any(iface.network == own.network for own in server.addresses)
    assert client.server_address in [a.ip for a in server.addresses]


# -- init-server -------------------------------------------------------------------


def test_init_server_toml(tmp_path: Path) -> None:
    result = init_server(tmp_path / "server.toml", endpoint="vpn.example.com:7000")
    assert result.key_path == tmp_path / "server.key"
    assert mode(tmp_path / "server.key") == 0o600
    assert mode(tmp_path / "server.toml") == 0o600
    assert 'private_key = "server.key"' in (tmp_path / "server.toml").read_text()
    config = load_server_config(tmp_path / "server.toml")
    assert config == result.config
    assert config.listen == ("0.0.0.0", 7000)
    assert config.addresses == (ipaddress.ip_interface("10.0.0.1/24"),)
    assert config.endpoint == "vpn.example.com:7000"
    assert config.peers == ()
    assert check_config(tmp_path / "server.toml") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server.key", "server.toml"]


def test_init_server_tunelo(tmp_path: Path) -> None:
    result = init_server(tmp_path / "server.json", format="tunelo", endpoint="172.31.250.1:7000")
    assert result.key_path is None
    assert mode(tmp_path / "server.json") == 0o600
    doc = json.loads((tmp_path / "server.json").read_text())
    assert list(doc) == ["utun_vaddr", "mappings", "sudp"]
    assert doc["sudp"]["local"]["key_type"] == "string"
    assert doc["sudp"]["attributes"]["public_ip"] == "172.31.250.1"
    config = load_server_config(tmp_path / "server.json")
    assert config.format == "tunelo" and config.public_key == result.config.public_key
    assert check_config(tmp_path / "server.json") == []


def test_init_server_options(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "srv.key"
    key.parent.mkdir()
    result = init_server(
        tmp_path / "s.toml",
        listen="[::]:7443",
        networks=["10.8.0.0/16", "fd00:1::/64"],
        version=2,
        key_path=key,
        mtu=1420,
        interface="sudp0",
        control_socket=tmp_path / "server.sock",
    )
    config = load_server_config(tmp_path / "s.toml")
    assert config == result.config
    assert config.control_socket == tmp_path / "server.sock"
    client = add_client(
        tmp_path / "s.toml", tmp_path / "c.toml", endpoint="h:1", control_socket="c.sock"
    ).client
    assert client.control_socket == Path.cwd() / "c.sock"
    assert load_client_config(tmp_path / "c.toml").control_socket == Path.cwd() / "c.sock"
    assert config.listen == ("::", 7443)
    assert config.addresses == (
        ipaddress.ip_interface("10.8.0.1/16"),
        ipaddress.ip_interface("fd00:1::1/64"),
    )
    assert config.default_version == Version.V2
    assert config.mtu == 1420 and config.interface == "sudp0"
    assert f'private_key = "{key}"' in (tmp_path / "s.toml").read_text()


def test_init_server_tunelo_with_a_key_file(tmp_path: Path) -> None:
    result = init_server(
        tmp_path / "server.json", format="tunelo", endpoint="1.2.3.4:7000",
        key_path=tmp_path / "server.key",
    )  # fmt: skip
    assert mode(tmp_path / "server.key") == 0o600
    local = json.loads((tmp_path / "server.json").read_text())["sudp"]["local"]
    assert local == {
        "virtual_address": 0,
        "network_address": "0.0.0.0:7000",
        "key_type": "file",
        "private_key": str(tmp_path / "server.key"),
    }
    assert load_server_config(tmp_path / "server.json").public_key == result.config.public_key
    add_client(tmp_path / "server.json", tmp_path / "c.json")
    doc = json.loads((tmp_path / "server.json").read_text())
    assert doc["sudp"]["local"] == local
    assert doc["mappings"] == {"10.0.0.2": 1}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"listen": "0.0.0.0"}, "expected 'host:port'"),
        ({"networks": ["10.0.0.255/24"]}, "broadcast address"),
        ({"networks": ["banana"]}, "is not a network like 10.0.0.1/24"),
        ({"networks": []}, "needs a tunnel network"),
        ({"endpoint": "x:99999"}, "port must be a number"),
        ({"version": 4}, "must be 2 or 3"),
        ({"format": "yaml"}, "format must be 'toml' or 'tunelo'"),
        ({"format": "tunelo"}, "give --endpoint IP:PORT"),
        ({"format": "tunelo", "endpoint": "1.2.3.4:7000", "version": 2}, "only SUDP v3"),
        ({"format": "tunelo", "endpoint": "1.2.3.4:7000", "mtu": 1300}, "cannot hold mtu"),
        ({"mtu": 100}, "tunnel MTU 100 is too small"),
        ({"interface": "way-too-long-a-name"}, "is not an interface name"),
    ],
)
def test_init_server_bad_input_writes_nothing(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        init_server(tmp_path / "server.toml", **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_init_server_never_replaces_without_force(tmp_path: Path) -> None:
    first = init_server(tmp_path / "server.toml")
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError, match="already exists"):
        init_server(tmp_path / "server.toml")
    assert snapshot(tmp_path) == before
    second = init_server(tmp_path / "server.toml", force=True)
    assert second.config.public_key != first.config.public_key
    assert load_server_config(tmp_path / "server.toml").public_key == second.config.public_key


# -- add-client --------------------------------------------------------------------


@pytest.mark.parametrize("server_format", ["toml", "tunelo"])
@pytest.mark.parametrize("client_format", ["toml", "tunelo"])
def test_add_clients(tmp_path: Path, server_format: str, client_format: str) -> None:
    ext = "json" if server_format == "tunelo" else "toml"
    server_path = tmp_path / f"server.{ext}"
    init_server(server_path, format=server_format, endpoint="203.0.113.7:7000")
    clients = []
    for i in range(3):
        path = tmp_path / f"c{i}.{'json' if client_format == 'tunelo' else 'toml'}"
        result = add_client(server_path, path, format=client_format)
        assert mode(path) == 0o600
        assert result.client.format == client_format
        clients.append(path)
    server = load_server_config(server_path)
    assert [p.vaddr for p in server.peers] == [1, 2, 3]
    assert [p.addresses for p in server.peers] == [
        (ipaddress.ip_address(f"10.0.0.{i}"),) for i in (2, 3, 4)
    ]
    keys = {p.public_key for p in server.peers}
    assert len(keys) == 3
    for path in clients:
        assert check_config(path) == []
        client = load_client_config(path)
        assert_consistent(server, client)
        assert client.endpoint == "203.0.113.7:7000"
        assert client.server_address == ipaddress.ip_address("10.0.0.1")
        shared = client.server.shared_key
        assert shared is not None and len(shared) == 20
        assert set(shared.decode()) <= set(SHARED_KEY_ALPHABET)
    assert check_config(server_path) == []
    assert len({load_client_config(p).server.shared_key for p in clients}) == 3
    # the route table the daemon builds from it accepts the result
    table = server.route_table()
    assert table.lookup("10.0.0.4") == 3


def test_add_client_result_matches_files(tmp_path: Path) -> None:
    init_server(tmp_path / "server.toml", endpoint="vpn.example.com:7000")
    result = add_client(tmp_path / "server.toml", tmp_path / "laptop.toml", name="laptop")
    assert result.server == load_config(tmp_path / "server.toml")
    assert result.client == load_config(tmp_path / "laptop.toml")
    assert result.peer.name == "laptop"
    assert result.peer == result.server.peers[0]


def test_add_client_keeps_the_rest_of_a_toml_file(tmp_path: Path) -> None:
    init_server(tmp_path / "server.toml", endpoint="vpn.example.com:7000")
    path = tmp_path / "server.toml"
    text = path.read_text().replace("[server]", "# my own comment\n[server]")
    text += "\n[timers]\nidle_expiry = 9.5  # why not\n"
    path.write_text(text)
    add_client(path, tmp_path / "c.toml", name="laptop", routes=["192.168.7.0/24"])
    new = path.read_text()
    assert new.startswith(text)
    server = load_server_config(path)
    assert server.settings.idle_expiry == 9.5
    assert server.peers[0].routes == (ipaddress.ip_network("192.168.7.0/24"),)


def test_add_client_fills_gaps(tmp_path: Path) -> None:
    init_server(tmp_path / "server.toml", endpoint="vpn.example.com:7000")
    server_path = tmp_path / "server.toml"
    add_client(server_path, tmp_path / "a.toml", vaddr=1, addresses=["10.0.0.2"])
    add_client(server_path, tmp_path / "b.toml", vaddr=3, addresses=["10.0.0.4"],
               routes=["10.0.0.5/32", "10.0.0.6/31"])  # fmt: skip
    result = add_client(server_path, tmp_path / "c.toml")
    assert result.peer.vaddr == 2
    assert result.peer.addresses == (ipaddress.ip_address("10.0.0.3"),)
    result = add_client(server_path, tmp_path / "d.toml")
    assert result.peer.vaddr == 4
    assert result.peer.addresses == (ipaddress.ip_address("10.0.0.8"),)


def test_add_client_dual_stack_and_v2(tmp_path: Path) -> None:
    init_server(
        tmp_path / "server.toml",
        networks=["10.0.0.1/24", "fd00::1/64"],
        endpoint="vpn.example.com:7000",
        version=2,
    )
    result = add_client(tmp_path / "server.toml", tmp_path / "c.toml")
    assert result.peer.version == Version.V2 and result.peer.peer.shared_key is None
    assert result.client.addresses == (
        ipaddress.ip_interface("10.0.0.2/24"),
        ipaddress.ip_interface("fd00::2/64"),
    )
    result = add_client(tmp_path / "server.toml", tmp_path / "d.toml", version=3)
    assert result.peer.version == Version.V3 and result.peer.peer.shared_key
    assert result.client.tunnel_mtu == 1400
    server = load_server_config(tmp_path / "server.toml")
    assert server.tunnel_mtu == 1400  # the smallest default of v2 and v3
    assert_consistent(server, load_client_config(tmp_path / "d.toml"))


def test_tiny_network_runs_out(tmp_path: Path) -> None:
    init_server(tmp_path / "server.toml", networks=["10.0.0.1/30"], endpoint="h:1")
    add_client(tmp_path / "server.toml", tmp_path / "a.toml")
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError, match="no free address left in the tunnel network"):
        add_client(tmp_path / "server.toml", tmp_path / "b.toml")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vaddr": 1}, "--vaddr: virtual address 1 is already used"),
        ({"vaddr": 0}, "1..65534"),
        ({"addresses": ["10.0.0.2"]}, r"--address: 10.0.0.2 is already used by another client"),
        ({"addresses": ["10.0.0.1"]}, "already used by the server"),
        ({"addresses": ["10.9.0.1"]}, "is not a host address of 10.0.0.0/24"),
        ({"addresses": ["fd00::5"]}, "the server has no IPv6 tunnel network"),
        ({"routes": ["10.0.0.2/32"]}, "is the same as 10.0.0.2/32 of peer"),
        ({"routes": ["192.168.0.1/24"]}, "has host bits set"),
        ({"name": "laptop"}, "--name: 'laptop' is already used by laptop"),
        ({"name": "two\nlines"}, "is not a printable name"),
        ({"version": 5}, "must be 2 or 3"),
        ({"endpoint": "0.0.0.0:7000"}, "not an address clients can reach"),
        ({"format": "tunelo", "version": 2}, "tunelo speaks only SUDP v3"),
        ({"format": "tunelo", "full_tunnel": True}, "cannot hold full_tunnel"),
    ],
)
def test_add_client_bad_input_changes_nothing(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    init_server(tmp_path / "server.toml", endpoint="vpn.example.com:7000")
    add_client(tmp_path / "server.toml", tmp_path / "laptop.toml", name="laptop")
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError, match=message) as info:
        add_client(tmp_path / "server.toml", tmp_path / "new.toml", **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    assert snapshot(tmp_path) == before


def test_add_client_needs_an_endpoint(tmp_path: Path) -> None:
    init_server(tmp_path / "server.toml")
    with pytest.raises(ConfigError, match="has no endpoint: give --endpoint"):
        add_client(tmp_path / "server.toml", tmp_path / "c.toml")
    result = add_client(tmp_path / "server.toml", tmp_path / "c.toml", endpoint="h.example:7")
    assert result.client.endpoint == "h.example:7"


def test_add_client_to_tunelo_server_refuses_names(tmp_path: Path) -> None:
    init_server(tmp_path / "server.json", format="tunelo", endpoint="1.2.3.4:7000")
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError, match="cannot hold client names"):
        add_client(tmp_path / "server.json", tmp_path / "c.json", name="x")
    with pytest.raises(ConfigError, match="cannot hold routes"):
        add_client(tmp_path / "server.json", tmp_path / "c.json", routes=["10.1.0.0/16"])
    assert snapshot(tmp_path) == before


def test_add_client_to_a_broken_server_file(tmp_path: Path) -> None:
    init_server(tmp_path / "server.toml", endpoint="vpn.example.com:7000")
    path = tmp_path / "server.toml"
    path.write_text(path.read_text().replace("listen =", "lisen ="))
    before = snapshot(tmp_path)
    with pytest.raises(ConfigFileError) as info:
        add_client(path, tmp_path / "c.toml")
    assert str(info.value) == f"{path}: server.lisen: unknown key; did you mean 'listen'?"
    assert snapshot(tmp_path) == before


def test_add_client_refuses_existing_client_file_and_client_configs(tmp_path: Path) -> None:
    init_server(tmp_path / "server.toml", endpoint="vpn.example.com:7000")
    add_client(tmp_path / "server.toml", tmp_path / "c.toml")
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError, match=r"c\.toml: already exists"):
        add_client(tmp_path / "server.toml", tmp_path / "c.toml")
    with pytest.raises(ConfigError, match="must not be the server's"):
        add_client(tmp_path / "server.toml", tmp_path / "server.toml")
    with pytest.raises(ConfigFileError, match="this is a client configuration"):
        add_client(tmp_path / "c.toml", tmp_path / "d.toml")
    assert snapshot(tmp_path) == before
    result = add_client(tmp_path / "server.toml", tmp_path / "c.toml", force=True)
    assert result.peer.vaddr == 2


@pytest.mark.parametrize("server_format", ["toml", "tunelo"])
def test_failure_while_writing_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server_format: str
) -> None:
    server_path = tmp_path / ("server.json" if server_format == "tunelo" else "server.toml")
    init_server(server_path, format=server_format, endpoint="1.2.3.4:7000")
    add_client(server_path, tmp_path / "a.toml", format="toml")
    before = snapshot(tmp_path)

    # 1. the disk fills up while the second temporary file is written
    real_add = StagedWrites.add

    def failing_add(self: StagedWrites, path: Path, *args: object, **kwargs: object) -> None:
        if path == server_path:
            raise OSError(28, "No space left on device")
        real_add(self, path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(StagedWrites, "add", failing_add)
    with pytest.raises(OSError, match="No space"):
        add_client(server_path, tmp_path / "b.toml", format="toml")
    monkeypatch.undo()
    assert snapshot(tmp_path) == before

    # 2. renaming the server file into place fails after the client's was renamed
    real_install = StagedWrites._install

    def failing_install(self: StagedWrites, staged: object) -> None:
        if getattr(staged, "path") == server_path:  # noqa: B009
            raise OSError(5, "Input/output error")
        real_install(self, staged)  # type: ignore[arg-type]

    monkeypatch.setattr(StagedWrites, "_install", failing_install)
    with pytest.raises(OSError, match="Input/output"):
        add_client(server_path, tmp_path / "b.toml", format="toml")
    monkeypatch.undo()
    assert snapshot(tmp_path) == before

    # 3. rendering the client file fails half way through
    def broken_render(*args: object, **kwargs: object) -> str:
        raise ConfigError("simulated failure")

    monkeypatch.setattr(edit_module.toml, "render_client", broken_render)
    with pytest.raises(ConfigError, match="simulated"):
        add_client(server_path, tmp_path / "b.toml", format="toml")
    monkeypatch.undo()
    assert snapshot(tmp_path) == before

    # and afterwards it works
    add_client(server_path, tmp_path / "b.toml", format="toml")
    assert [p.vaddr for p in load_server_config(server_path).peers] == [1, 2]


def test_init_server_failure_while_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_install = StagedWrites._install

    def failing_install(self: StagedWrites, staged: object) -> None:
        if getattr(staged, "path").name == "server.toml":  # noqa: B009
            raise OSError(5, "Input/output error")
        real_install(self, staged)  # type: ignore[arg-type]

    monkeypatch.setattr(StagedWrites, "_install", failing_install)
    with pytest.raises(OSError, match="Input/output error"):
        init_server(tmp_path / "server.toml")
    assert list(tmp_path.iterdir()) == []


# -- comments survive edits --------------------------------------------------------

COMMENTED_SERVER = """\
# my server, set up by hand
[server]  # the server itself
listen = "0.0.0.0:7000"
endpoint = "vpn.example.com:7000"
address = "10.0.0.1/24"
private_key = "server.key"  # chmod 600

# before peer 1
[[peer]]
# inside peer 1
name = "one"
vaddr = 1
address = "10.0.0.2"  # one's address
public_key_pem = '''
{pem1}'''

# before peer 2
[[peer]]
name = "two"  # inside peer 2
vaddr = 2
address = "10.0.0.3"
public_key_pem = '''
{pem2}'''

# before peer 3
[[peer]]
name = "three"
# inside peer 3
vaddr = 3
address = "10.0.0.4"
public_key_pem = '''
{pem3}'''

# the timers, tuned
[timers]
idle_expiry = 9.5  # why not
"""


def commented_server(tmp_path: Path) -> Path:
    init_server(tmp_path / "server.toml", endpoint="vpn.example.com:7000")
    pems = {f"pem{i}": PrivateKey.generate().public_key.to_pem().decode() for i in (1, 2, 3)}
    path = tmp_path / "server.toml"
    path.write_text(COMMENTED_SERVER.format(**pems))
    return path


#: The comments inside each [[peer]] table of COMMENTED_SERVER.
INSIDE = {1: {"inside peer 1", "one's address"}, 2: {"inside peer 2"}, 3: {"inside peer 3"}}


def comments(text: str) -> list[str]:
    return [line.partition("#")[2].strip() for line in text.splitlines() if "#" in line]


def test_add_client_before_a_later_table_keeps_every_comment(tmp_path: Path) -> None:
    path = commented_server(tmp_path)
    before = path.read_text()
    result = add_client(path, tmp_path / "four.toml", name="four")
    text = path.read_text()
    assert comments(text) == comments(before)
    # the new table goes after the last [[peer]]; the [timers] comment stays above [timers]
    assert text.index('name = "four"') > text.index('name = "three"')
    assert "# the timers, tuned\n[timers]" in text
    assert text.startswith(before.split("# the timers")[0].rstrip("\n"))
    server = load_server_config(path)
    assert [p.name for p in server.peers] == ["one", "two", "three", "four"]
    assert server.settings.idle_expiry == 9.5
    assert result.peer == server.peers[3]


@pytest.mark.parametrize(
    ("client", "gone"), [("one", 1), ("2", 2), ("three", 3)], ids=["first", "middle", "last"]
)
def test_remove_client_keeps_every_other_comment(tmp_path: Path, client: str, gone: int) -> None:
    path = commented_server(tmp_path)
    path.chmod(0o640)
    before = load_server_config(path)
    text_before = path.read_text()
    result = remove_client(path, client)
    text = path.read_text()
    assert result.peer == before.peer(gone)
    assert comments(text) == [c for c in comments(text_before) if c not in INSIDE[gone]]
    assert "\n\n\n" not in text
    assert "# the timers, tuned\n[timers]" in text
    for kept in {1, 2, 3} - {gone}:
        assert text.index(f"# before peer {kept}") < text.index(f"vaddr = {kept}")
    server = load_server_config(path)
    assert server == result.server
    assert server.peers == tuple(p for p in before.peers if p.vaddr != gone)
    assert server.settings.idle_expiry == 9.5
    assert mode(path) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server.key", "server.toml"]


def test_remove_every_client(tmp_path: Path) -> None:
    path = commented_server(tmp_path)
    for name in ("two", "one", "three"):
        remove_client(path, name)
    text = path.read_text()
    assert "peer" not in tomllib.loads(text)
    assert "[[peer]]" not in text and "peer = " not in text
    assert comments(text) == [
        "my server, set up by hand", "the server itself", "chmod 600", "before peer 1",
        "before peer 2", "before peer 3", "the timers, tuned", "why not",
    ]  # fmt: skip
    assert load_server_config(path).peers == ()
    # and clients can be added again
    add_client(path, tmp_path / "c.toml")
    assert [p.vaddr for p in load_server_config(path).peers] == [1]


def test_remove_client_from_a_file_written_by_the_commands(tmp_path: Path) -> None:
    init_server(tmp_path / "server.toml", endpoint="vpn.example.com:7000")
    for name in ("a", "b", "c"):
        add_client(tmp_path / "server.toml", tmp_path / f"{name}.toml", name=name)
    remove_client(tmp_path / "server.toml", "b")
    text = (tmp_path / "server.toml").read_text()
    assert "\n\n\n" not in text and text.endswith("'''\n")
    assert [p.name for p in load_server_config(tmp_path / "server.toml").peers] == ["a", "c"]
    # the removed client's own file is left alone
    assert check_config(tmp_path / "b.toml") == []


def test_remove_client_from_tunelo(tmp_path: Path) -> None:
    init_server(tmp_path / "server.json", format="tunelo", endpoint="1.2.3.4:7000")
    for name in ("a", "b", "c"):
        add_client(tmp_path / "server.json", tmp_path / f"{name}.json")
    result = remove_client(tmp_path / "server.json", "2")
    assert result.peer.vaddr == 2
    doc = json.loads((tmp_path / "server.json").read_text())
    assert doc["mappings"] == {"10.0.0.2": 1, "10.0.0.4": 3}
    assert [p["virtual_address"] for p in doc["sudp"]["peers"]] == [1, 3]
    assert list(doc) == ["utun_vaddr", "mappings", "sudp"]
    assert check_config(tmp_path / "server.json") == []
    assert [p.vaddr for p in load_server_config(tmp_path / "server.json").peers] == [1, 3]


def test_remove_client_keeps_what_tunelo_wrote(tmp_path: Path) -> None:
    init_server(tmp_path / "server.json", format="tunelo", endpoint="1.2.3.4:7000")
    add_client(tmp_path / "server.json", tmp_path / "a.json")
    add_client(tmp_path / "server.json", tmp_path / "b.json")
    path = tmp_path / "server.json"
    doc = json.loads(path.read_text())
    doc["comment"] = "an unknown key tunelo ignores"
    doc["sudp"]["peers"][1]["extra"] = 1
    path.write_text(json.dumps(doc, indent=2))
    remove_client(path, "1")
    new = json.loads(path.read_text())
    assert new["comment"] == "an unknown key tunelo ignores"
    assert new["sudp"]["peers"] == [doc["sudp"]["peers"][1]]


@pytest.mark.parametrize(
    ("client", "message"),
    [
        ("laptop", "no client has name 'laptop' (see: trio-sudp config list -c"),
        ("7", "no client has virtual address 7"),
        ("", "no client has name ''"),
    ],
)
def test_remove_unknown_client_changes_nothing(tmp_path: Path, client: str, message: str) -> None:
    path = commented_server(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        remove_client(path, client)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"{path}: ")
    assert snapshot(tmp_path) == before


def test_remove_client_refuses_broken_and_client_files(tmp_path: Path) -> None:
    path = commented_server(tmp_path)
    add_client(path, tmp_path / "c.toml")
    with pytest.raises(ConfigFileError, match="this is a client configuration"):
        remove_client(tmp_path / "c.toml", "1")
    path.write_text(path.read_text().replace("listen =", "lisen ="))
    before = snapshot(tmp_path)
    with pytest.raises(ConfigFileError, match=r"server\.lisen: unknown key"):
        remove_client(path, "one")
    assert snapshot(tmp_path) == before


def test_remove_client_failure_while_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = commented_server(tmp_path)
    before = snapshot(tmp_path)
    real_install = StagedWrites._install

    def failing_install(self: StagedWrites, staged: object) -> None:
        if getattr(staged, "path") == path:  # noqa: B009
            raise OSError(5, "Input/output error")
        real_install(self, staged)  # type: ignore[arg-type]

    monkeypatch.setattr(StagedWrites, "_install", failing_install)
    with pytest.raises(OSError, match="Input/output"):
        remove_client(path, "two")
    monkeypatch.undo()
    assert snapshot(tmp_path) == before


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(order=st.permutations([1, 2, 3]), count=st.integers(1, 3), adds=st.integers(0, 2))
def test_edits_in_any_order_keep_the_file_and_its_comments(
    tmp_path_factory: pytest.TempPathFactory, order: list[int], count: int, adds: int
) -> None:
    tmp_path = tmp_path_factory.mktemp("edits")
    path = commented_server(tmp_path)
    original = comments(path.read_text())
    removed = order[:count]
    for vaddr in removed:
        remove_client(path, str(vaddr))
    for i in range(adds):
        add_client(path, tmp_path / f"new{i}.toml", name=f"new{i}")
    text = path.read_text()
    assert comments(text) == [c for c in original if not any(c in INSIDE[v] for v in removed)]
    data = tomllib.loads(text)
    kept = [v for v in (1, 2, 3) if v not in removed]
    names = ["one", "two", "three"]
    assert [p["name"] for p in data.get("peer", [])] == [names[v - 1] for v in kept] + [
        f"new{i}" for i in range(adds)
    ]
    assert data["timers"] == {"idle_expiry": 9.5}
    assert "\n\n\n" not in text
    assert check_config(path) == []


SPLIT = "[timers]\nidle_expiry = 1.0\n\n[[peer]]"
TIMERS = "# the timers, tuned\n[timers]\nidle_expiry = 9.5  # why not\n"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # [[peer]] tables split by another table: tomlkit would move [timers]
        (lambda text: text.replace("# before peer 2\n[[peer]]", SPLIT).replace(TIMERS, ""),
         "cannot be edited without moving its tables (are the [[peer]] tables split by "
         "another table?): put them one after the other"),
        (lambda text: 'peer = [{vaddr = 1, public_key = "c0.pub"}]\n'
         + text.split("# before peer 1")[0],
         "peer: only [[peer]] tables can be edited, not an inline array"),
    ],
)  # fmt: skip
def test_files_tomlkit_cannot_edit_in_place_are_refused(
    tmp_path: Path, edit: Any, message: str
) -> None:
    path = commented_server(tmp_path)
    (tmp_path / "c0.pub").write_bytes(PrivateKey.generate().public_key.to_pem())
    path.write_text(edit(path.read_text()))
    assert check_config(path) == []
    before = snapshot(tmp_path)
    for change in (lambda: add_client(path, tmp_path / "new.toml"),
                   lambda: remove_client(path, "1")):  # fmt: skip
        with pytest.raises(ConfigError) as info:
            change()
        assert str(info.value) == f"{path}: {message}"
        assert snapshot(tmp_path) == before


def test_edits_of_the_commented_example_keep_its_comments(tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parents[1] / "contrib" / "examples"
    path = tmp_path / "server.toml"
    shutil.copy(examples / "server.toml", path)
    for name in ("server", "laptop"):
        (tmp_path / f"{name}.key").write_bytes(PrivateKey.generate().to_pem())
        (tmp_path / f"{name}.key").chmod(0o600)
    (tmp_path / "laptop.pub").write_bytes(PrivateKey.generate().public_key.to_pem())
    before = path.read_text()
    add_client(path, tmp_path / "phone.toml", name="phone")
    remove_client(path, "office-router")
    text = path.read_text()
    inside_router = {"Networks behind this client: the server routes them to it, and accepts",
                     "packets from them."}  # fmt: skip
    assert comments(text) == [c for c in comments(before) if c not in inside_router]
    server = load_server_config(path)
    assert [p.name for p in server.peers] == ["laptop", "old-sensor", "phone"]
    assert text.startswith(before.split("[[peer]]")[0])
