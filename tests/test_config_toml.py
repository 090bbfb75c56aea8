"""trio-sudp's TOML configuration: round trips, and one clear line for every mistake."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import attrs
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from trio_sudp.config import (
    ClientConfig,
    ConfigFileError,
    PeerConfig,
    ServerConfig,
    check_config,
    inspect_config,
    load_client_config,
    load_config,
    load_server_config,
)
from trio_sudp.config.toml import TIMER_KINDS, render_client, render_server
from trio_sudp.protocol.constants import Version
from trio_sudp.protocol.crypto import PrivateKey
from trio_sudp.protocol.peers import Peer
from trio_sudp.protocol.settings import SessionSettings

SERVER_KEY = PrivateKey.generate()
CLIENT_KEYS = [PrivateKey.generate() for _ in range(3)]


def pem_block(data: bytes) -> str:
    return "'''\n" + data.decode() + "'''"


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    """server.key (0600), c0.pub .. c2.pub, c0.key (0600) in tmp_path."""
    (tmp_path / "server.key").write_bytes(SERVER_KEY.to_pem())
    (tmp_path / "server.key").chmod(0o600)
    (tmp_path / "server.pub").write_bytes(SERVER_KEY.public_key.to_pem())
    for i, key in enumerate(CLIENT_KEYS):
        (tmp_path / f"c{i}.pub").write_bytes(key.public_key.to_pem())
    (tmp_path / "c0.key").write_bytes(CLIENT_KEYS[0].to_pem())
    (tmp_path / "c0.key").chmod(0o600)
    return tmp_path


SERVER = """\
[server]
listen = "0.0.0.0:7000"
address = "10.0.0.1/24"
private_key = "server.key"

[[peer]]
name = "laptop"
vaddr = 1
address = "10.0.0.2"
public_key = "c0.pub"
shared_key = "Lkgd9wVOtCaFoTZacaDZ"

[[peer]]
name = "phone"
vaddr = 2
address = "10.0.0.3"
routes = ["192.168.7.0/24"]
public_key = "c1.pub"
shared_key = "abcdefghijabcdefghij"
"""

CLIENT = """\
[client]
private_key = "c0.key"
vaddr = 1
address = "10.0.0.2/24"

[server]
endpoint = "vpn.example.com:7000"
public_key = "server.pub"
shared_key = "Lkgd9wVOtCaFoTZacaDZ"
address = "10.0.0.1"
"""


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def only_error(path: Path) -> str:
    problems = check_config(path)
    assert len(problems) == 1, problems
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert str(info.value) == problems[0]
    assert "\n" not in problems[0]
    return problems[0].removeprefix(f"{path}: ")


# -- good files --------------------------------------------------------------------


def test_server_file_loads(keydir: Path) -> None:
    config = load_server_config(write(keydir / "server.toml", SERVER))
    assert config.format == "toml"
    assert config.source == keydir / "server.toml"
    assert config.listen == ("0.0.0.0", 7000)
    assert config.public_key == SERVER_KEY.public_key
    assert [p.name for p in config.peers] == ["laptop", "phone"]
    assert [p.vaddr for p in config.peers] == [1, 2]
    assert config.peers[0].public_key == CLIENT_KEYS[0].public_key
    assert config.peers[1].routes == (ipaddress.ip_network("192.168.7.0/24"),)
    assert config.peers[0].version == Version.V3
    assert config.settings == SessionSettings()
    assert config.handshake_rate == 20.0
    assert config.route_table().lookup("192.168.7.9") == 2
    assert inspect_config(keydir / "server.toml").warnings == ()


def test_client_file_loads(keydir: Path) -> None:
    config = load_client_config(write(keydir / "client.toml", CLIENT))
    assert config.vaddr == 1
    assert config.public_key == CLIENT_KEYS[0].public_key
    assert config.server == Peer(0, SERVER_KEY.public_key, 3, b"Lkgd9wVOtCaFoTZacaDZ")
    assert config.server_address == ipaddress.ip_address("10.0.0.1")
    assert config.endpoint_host_port == ("vpn.example.com", 7000)
    assert config.identity.vaddr == 1


def rich_server(source: Path) -> ServerConfig:
    return ServerConfig(
        source=source,
        format="toml",
        listen=("::", 7443),
        private_key=SERVER_KEY,
        addresses=(ipaddress.ip_interface("10.8.0.1/16"), ipaddress.ip_interface("fd00::1/64")),
        peers=(
            PeerConfig(
                peer=Peer(1, CLIENT_KEYS[0].public_key, Version.V3, b'q"uo\\te'),
                name='Zoë "the laptop"',
                addresses=(ipaddress.ip_address("10.8.0.2"), ipaddress.ip_address("fd00::2")),
                routes=(ipaddress.ip_network("192.168.1.0/24"),),
            ),
            PeerConfig(
                peer=Peer(9, CLIENT_KEYS[1].public_key, Version.V2),
                addresses=(ipaddress.ip_address("10.8.0.9"),),
            ),
        ),
        mtu=1300,
        interface="sudp%d",
        control_socket=source.parent / "s.sock",
        endpoint="[2001:db8::1]:7443",
        default_version=Version.V2,
        settings=SessionSettings(
            keepalive_interval=1.0,
            rekey_interval=None,
            handshake_retries=(1.0, 2.5),
            handshake_timeout=4.0,
            reconnect=False,
            replay_window=100,
        ),
        handshake_rate=None,
    )


def test_server_round_trip_inline_key(tmp_path: Path) -> None:
    config = rich_server(tmp_path / "server.toml")
    path = write(tmp_path / "server.toml", render_server(config), 0o600)
    assert load_config(path) == config
    assert render_server(load_server_config(path)) == path.read_text()


def test_server_round_trip_key_file(keydir: Path) -> None:
    config = rich_server(keydir / "server.toml")
    path = write(keydir / "server.toml", render_server(config, private_key_file="server.key"))
    assert load_config(path) == config


def test_client_round_trip(keydir: Path) -> None:
    config = ClientConfig(
        source=keydir / "client.toml",
        private_key=CLIENT_KEYS[0],
        vaddr=65534,
        addresses=(ipaddress.ip_interface("10.8.0.2/16"),),
        endpoint="vpn.example.com:7443",
        server=Peer(0, SERVER_KEY.public_key, Version.V2),
        server_address=ipaddress.ip_address("10.8.0.1"),
        mtu=1420,
        interface="tun7",
        control_socket=Path("/run/x.sock"),
        full_tunnel=True,
        routes=(ipaddress.ip_network("172.16.0.0/12"),),
        settings=SessionSettings(silence_rekey_after=None, dead_server_after=3),
    )
    inline = write(keydir / "client.toml", render_client(config), 0o600)
    assert load_config(inline) == config
    files = write(
        keydir / "client.toml",
        render_client(config, private_key_file="c0.key", server_public_key_file="server.pub"),
    )
    assert load_config(files) == config


def test_every_session_setting_has_a_timer_key() -> None:
    assert set(TIMER_KINDS) == {f.name for f in attrs.fields(SessionSettings)}


def test_timers_table(keydir: Path) -> None:
    text = SERVER + "\n[timers]\nrekey_interval = false\nidle_expiry = 30\nreconnect = false\n"
    config = load_server_config(write(keydir / "server.toml", text))
    assert config.settings == SessionSettings(rekey_interval=None, idle_expiry=30, reconnect=False)


def test_toml_string_escapes() -> None:
    import tomllib

    import tomlkit

    # the writers put every text value through tomlkit's string items
    for text in ['a"b', "back\\slash", "tab\tnew\nline", "\x7f\x00\x1f", "ünï 😀", "'''"]:
        assert tomllib.loads(f"k = {tomlkit.item(text).as_string()}")["k"] == text


def test_pkcs8_private_key_is_read(keydir: Path) -> None:
    raw = serialization.load_pem_private_key(SERVER_KEY.to_pem(), None)
    pkcs8 = raw.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (keydir / "server.key").write_bytes(pkcs8)
    assert load_server_config(write(keydir / "server.toml", SERVER)).public_key == (
        SERVER_KEY.public_key
    )


def test_warnings(keydir: Path) -> None:
    text = (
        SERVER.replace('shared_key = "abcdefghijabcdefghij"\n', "").replace(
            '"10.0.0.3"', '"10.9.0.3"'
        )
        + '\n[[peer]]\nvaddr = 3\npublic_key = "c0.pub"\nshared_key = "k"\n'
    )
    report = inspect_config(write(keydir / "server.toml", text))
    assert report.ok, report.problems
    assert [str(w).removeprefix(f"{keydir}/server.toml: ") for w in report.warnings] == [
        "peer[1].shared_key: no shared key: v3 header tags are unkeyed BLAKE2b",
        "peer[1].address: 10.9.0.3 is outside the tunnel network (10.0.0.0/24)",
        "peer[2].public_key: same public key as peer[0] (laptop)",
        "peer[2]: has no tunnel address: it cannot send any packet",
    ]


# -- one line per mistake ----------------------------------------------------------

SERVER_CASES = [
    # (old text, new text, expected "field: message" prefix)
    (
        'private_key = "server.key"',
        'privte_key = "server.key"',
        "server.privte_key: unknown key; did you mean 'private_key'?",
    ),
    (
        'listen = "0.0.0.0:7000"',
        'listen = "0.0.0.0:7000"\nlisten_port = 7000',
        "server.listen_port: unknown key; did you mean 'listen'?",
    ),
    (
        '[[peer]]\nname = "laptop"',
        '[[peers]]\nname = "laptop"',
        "peers: unknown key; did you mean 'peer'?",
    ),
    (
        'listen = "0.0.0.0:7000"',
        'listen = "0.0.0.0"',
        "server.listen: expected 'host:port', got '0.0.0.0'",
    ),
    (
        'listen = "0.0.0.0:7000"',
        'listen = "0.0.0.0:0"',
        "server.listen: port 0 is not a port clients can reach",
    ),
    (
        'listen = "0.0.0.0:7000"',
        'listen = "vpn.example.com:7000"',
        "server.listen: 'vpn.example.com' is not a numeric IP address (to listen on)",
    ),
    (
        'listen = "0.0.0.0:7000"',
        "listen = 7000",
        "server.listen: must be text, not an integer 7000",
    ),
    ('listen = "0.0.0.0:7000"\n', "", "server.listen: missing (required)"),
    (
        'address = "10.0.0.1/24"',
        'address = "10.0.0.0/24"',
        "server.address: 10.0.0.0/24 is the network address of 10.0.0.0/24, not a host address",
    ),
    (
        'address = "10.0.0.1/24"',
        'address = "10.0.0.1/24"\nendpoint = "x:y"',
        "server.endpoint: port must be a number from 0 to 65535, got 'y' in 'x:y'",
    ),
    (
        'address = "10.0.0.1/24"',
        'address = ["10.0.0.1/24", "10.0.0.200/25"]',
        "server.address[1]: 10.0.0.128/25 overlaps 10.0.0.0/24 of the server's address",
    ),
    (
        'private_key = "server.key"',
        'private_key = "missing.key"',
        "server.private_key: {dir}/missing.key: no such file",
    ),
    (
        'private_key = "server.key"',
        'private_key = "server.pub"',
        "server.private_key: {dir}/server.pub: this is a public key; a private key was expected",
    ),
    (
        'private_key = "server.key"',
        'private_key = "."',
        "server.private_key: {dir}: is a directory",
    ),
    (
        'private_key = "server.key"',
        'private_key = "server.key"\nprivate_key_pem = "x"',
        "server.private_key: give private_key (a file) or private_key_pem, not both",
    ),
    (
        'private_key = "server.key"',
        'private_key_pem = "-----BEGIN EC PRIVATE KEY-----\\nx"',
        "server.private_key_pem: cannot be read (damaged PEM framing)",
    ),
    (
        'private_key = "server.key"',
        'private_key = "rsa.key"',
        "server.private_key: {dir}/rsa.key: expected an ECDSA P-256 key, got RSA",
    ),
    (
        'private_key = "server.key"',
        'private_key = "p384.key"',
        "server.private_key: {dir}/p384.key: expected curve P-256 (secp256r1), got secp384r1",
    ),
    (
        'public_key = "c0.pub"',
        'public_key = "c0.key"',
        "peer[0].public_key: {dir}/c0.key: this is a private key; a public key was expected",
    ),
    (
        'public_key = "c0.pub"',
        "public_key_pem = '-----BEGIN PUBLIC KEY-----\\nAAAA\\n'",
        "peer[0].public_key_pem: not a PEM 'PUBLIC KEY' block (damaged PEM framing)",
    ),
    (
        'public_key = "c0.pub"\n',
        "",
        "peer[0].public_key: missing (required): a key file, or public_key_pem",
    ),
    (
        "vaddr = 2",
        "vaddr = 1",
        "peer[1].vaddr: virtual address 1 is already used by peer[0] (laptop)",
    ),
    (
        "vaddr = 2",
        "vaddr = 0",
        "peer[1].vaddr: a client's virtual address is 1..65534 (0 is the server), not 0",
    ),
    (
        "vaddr = 2",
        "vaddr = 65535",
        "peer[1].vaddr: a client's virtual address is 1..65534 (0 is the server), not 65535",
    ),
    ("vaddr = 2", "vaddr = 2.0", "peer[1].vaddr: must be an integer, not a number 2.0"),
    (
        'name = "phone"',
        'name = "laptop"',
        "peer[1].name: name 'laptop' is already used by peer[0] (laptop)",
    ),
    (
        'address = "10.0.0.3"',
        'address = "10.0.0.2"',
        "peer[1].address: 10.0.0.2/32 is the same as 10.0.0.2/32 of peer[0] (laptop)",
    ),
    (
        'address = "10.0.0.3"',
        'address = ["10.0.0.3", "10.0.0.1"]',
        "peer[1].address[1]: 10.0.0.1/32 is the same as 10.0.0.1/32 of the server's own address",
    ),
    (
        'address = "10.0.0.3"',
        'address = "10.0.0.255"',
        "peer[1].address: 10.0.0.255 is the broadcast address of 10.0.0.0/24",
    ),
    (
        'address = "10.0.0.3"',
        'address = "10.0.0.3/24"',
        "peer[1].address: '10.0.0.3/24' is not an IP address like 10.0.0.2",
    ),
    (
        'routes = ["192.168.7.0/24"]',
        'routes = ["10.0.0.0/31"]',
        "peer[1].routes[0]: 10.0.0.0/31 overlaps 10.0.0.1/32 of the server's own address",
    ),
    (
        'routes = ["192.168.7.0/24"]',
        'routes = ["192.168.7.1/24"]',
        "peer[1].routes[0]: 192.168.7.1/24 has host bits set; did you mean 192.168.7.0/24?",
    ),
    (
        'routes = ["192.168.7.0/24"]',
        'routes = ["10.0.0.2"]',
        "peer[1].routes[0]: 10.0.0.2/32 is the same as 10.0.0.2/32 of peer[0] (laptop)",
    ),
    (
        'shared_key = "abcdefghijabcdefghij"',
        'shared_key = "abcdefghijabcdefghij"\nversion = 2',
        "peer[1].shared_key: protocol v2 has no shared key (remove it, or use version 3)",
    ),
    (
        'shared_key = "abcdefghijabcdefghij"',
        f'shared_key = "{"k" * 65}"',
        "peer[1].shared_key: is 65 bytes; at most 64 (BLAKE2b's limit: a longer key crashes Go",
    ),
    (
        'shared_key = "abcdefghijabcdefghij"',
        'shared_key = "x"\nversion = 4',
        "peer[1].version: must be 2 or 3, not 4",
    ),
    (
        'address = "10.0.0.1/24"',
        'address = "10.0.0.1/24"\nmtu = 500',
        "server.mtu: tunnel MTU 500 is too small: IPv4 hosts must accept 576",
    ),
    (
        'address = "10.0.0.1/24"',
        'address = ["10.0.0.1/24", "fd00::1/64"]\nmtu = 1200',
        "server.mtu: tunnel MTU 1200 is too small: IPv6 needs at least 1280",
    ),
    (
        'address = "10.0.0.1/24"',
        'address = "10.0.0.1/24"\nmtu = 1990',
        "server.mtu: tunnel MTU 1990 is too large for SUDP v3: a Go peer reads at most 1976",
    ),
    (
        'address = "10.0.0.1/24"',
        'address = "10.0.0.1/24"\ninterface = "a-very-long-name0"',
        "server.interface: 'a-very-long-name0' is not an interface name",
    ),
    (
        'address = "10.0.0.1/24"',
        f'address = "10.0.0.1/24"\ncontrol_socket = "{"s" * 120}"',
        "server.control_socket: {dir}/sss",
    ),
    (
        'address = "10.0.0.1/24"',
        'address = "10.0.0.1/24"\nhandshake_rate = -1',
        "server.handshake_rate: must be 0 or more per second, not -1.0",
    ),
    (
        "",
        "[timers]\nkeepalive_interval = -1\n",
        "timers.keepalive_interval: must be a positive number of seconds, not -1.0",
    ),
    (
        "",
        "[timers]\nkeepalive_intreval = 1\n",
        "timers.keepalive_intreval: unknown key; did you mean 'keepalive_interval'?",
    ),
    (
        "",
        "[timers]\nrekey_interval = true\n",
        "timers.rekey_interval: must be a number, not a boolean True (false switches it off)",
    ),
    (
        "",
        "[timers]\nhandshake_retries = [5, 2]\n",
        "timers.handshake_retries: must be increasing positive numbers, not (5.0, 2.0)",
    ),
    (
        "",
        "[timers]\nhandshake_timeout = 1\n",
        "timers.handshake_timeout: handshake_timeout must come after the last handshake retry",
    ),
    (
        "",
        "[timers]\nreplay_window = 0\n",
        "timers.replay_window: must be a positive integer, not 0",
    ),
    ("[server]", "[server]\nextra = { a = 1 }", "server.extra: unknown key"),
    ("[server]", "[srever]", "has neither a [server] nor a [client] table"),
    ('listen = "0.0.0.0:7000"', 'listen = "0.0.0.0:7000', "not valid TOML: "),
]


@pytest.mark.parametrize(("old", "new", "expected"), SERVER_CASES)
def test_bad_server_toml(keydir: Path, old: str, new: str, expected: str) -> None:
    (keydir / "rsa.key").write_bytes(
        rsa.generate_private_key(65537, 1024).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    (keydir / "p384.key").write_bytes(
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    (keydir / "rsa.key").chmod(0o600)
    (keydir / "p384.key").chmod(0o600)
    if old:
        assert old in SERVER
        text = SERVER.replace(old, new, 1)
    else:
        text = SERVER + "\n" + new
    line = only_error(write(keydir / "server.toml", text))
    assert line.startswith(expected.format(dir=keydir)), line


CLIENT_CASES = [
    ('endpoint = "vpn.example.com:7000"\n', "", "server.endpoint: missing (required)"),
    (
        'endpoint = "vpn.example.com:7000"',
        'endpoint = "vpn example.com:7000"',
        "server.endpoint: 'vpn example.com' is neither an IP address nor a host name",
    ),
    (
        "vaddr = 1",
        "vaddr = 0",
        "client.vaddr: a client's virtual address is 1..65534 (0 is the server), not 0",
    ),
    (
        "vaddr = 1",
        'vaddr = 1\nfull_tunnel = "yes"',
        "client.full_tunnel: must be true or false, not text 'yes'",
    ),
    ('address = "10.0.0.1"', 'address = "10.0.0.2"', "server.address: 10.0.0.2 is our own address"),
    (
        'address = "10.0.0.2/24"',
        "address = []",
        'client.address: needs at least one address like "10.0.0.1/24"',
    ),
    (
        'address = "10.0.0.2/24"',
        'address = "10.0.0.2/24"\nroutes = "10.1.0.0/16"\nmtu = 9000',
        "client.mtu: tunnel MTU 9000 is too large for SUDP v3",
    ),
    (
        'shared_key = "Lkgd9wVOtCaFoTZacaDZ"',
        'shared_key = "Lkgd9wVOtCaFoTZacaDZ"\nversion = 2',
        "server.shared_key: protocol v2 has no shared key",
    ),
    (
        'public_key = "server.pub"',
        'public_key = "c0.key"',
        "server.public_key: {dir}/c0.key: this is a private key; a public key was expected",
    ),
    ("[client]", '[client]\nmode = "client"', "client.mode: unknown key"),
]


@pytest.mark.parametrize(("old", "new", "expected"), CLIENT_CASES)
def test_bad_client_toml(keydir: Path, old: str, new: str, expected: str) -> None:
    assert old in CLIENT
    line = only_error(write(keydir / "client.toml", CLIENT.replace(old, new, 1)))
    assert line.startswith(expected.format(dir=keydir)), line


def test_neither_server_nor_client(tmp_path: Path) -> None:
    line = only_error(write(tmp_path / "x.toml", "[peer]\nvaddr = 1\n"))
    assert line.startswith("has neither a [server] nor a [client] table")


def test_missing_config_file(tmp_path: Path) -> None:
    assert only_error(tmp_path / "nope.toml") == "no such file"


def test_config_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_bytes(b"[server]\nlisten = '\xff'\n")
    assert only_error(path) == "not UTF-8 text (byte 19)"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o700 | 0o020])
def test_private_key_readable_by_others_is_refused(keydir: Path, mode: int) -> None:
    (keydir / "server.key").chmod(mode)
    line = only_error(write(keydir / "server.toml", SERVER))
    key = keydir / "server.key"
    assert line == (
        f"server.private_key: {key}: private key is accessible by others "
        f"(mode {mode:04o}); fix it with: chmod 600 {key}"
    )


def test_inline_private_key_in_a_file_others_can_read(keydir: Path) -> None:
    text = CLIENT.replace('private_key = "c0.key"', "private_key_pem = " + pem_block(
        CLIENT_KEYS[0].to_pem()))  # fmt: skip
    path = write(keydir / "client.toml", text, 0o644)
    assert only_error(path) == (
        "client.private_key_pem: the file holds a private key and is accessible by others "
        f"(mode 0644); fix it with: chmod 600 {path}"
    )
    path.chmod(0o600)
    assert check_config(path) == []


def test_all_problems_are_listed(keydir: Path) -> None:
    text = (
        SERVER.replace('listen = "0.0.0.0:7000"', 'listen = "nowhere"')
        .replace("vaddr = 2", "vaddr = 1")
        .replace('public_key = "c0.pub"', 'public_key = "gone.pub"')
    )
    problems = check_config(write(keydir / "server.toml", text))
    fields = [p.removeprefix(f"{keydir}/server.toml: ").split(":")[0] for p in problems]
    assert fields == ["server.listen", "peer[0].public_key"]
    # cross-field checks run once the fields themselves are fine
    text = SERVER.replace("vaddr = 2", "vaddr = 1").replace('"10.0.0.3"', '"10.0.0.2"')
    problems = check_config(write(keydir / "server.toml", text))
    assert [p.removeprefix(f"{keydir}/server.toml: ").split(":")[0] for p in problems] == [
        "peer[1].vaddr",
        "peer[1].address",
    ]


def test_load_server_config_refuses_a_client(keydir: Path) -> None:
    path = write(keydir / "client.toml", CLIENT)
    with pytest.raises(ConfigFileError, match="this is a client configuration"):
        load_server_config(path)
    with pytest.raises(ConfigFileError, match="this is a server configuration"):
        load_client_config(write(keydir / "server.toml", SERVER))


def test_equality_compares_private_keys_by_value(keydir: Path) -> None:
    path = write(keydir / "server.toml", SERVER)
    assert load_config(path) == load_config(path)
    other = attrs.evolve(load_server_config(path), private_key=PrivateKey.generate())
    assert other != load_config(path)
