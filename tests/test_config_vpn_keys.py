"""The keys of the VPN features: forward and masquerade, DNS, hooks, metrics.

Each key: its default, its valid values, one line for each kind of bad value, the
round trip through the writers and the config commands, and tunelo's refusal.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import attrs
import pytest
from typer.testing import CliRunner

from test_config_toml import CLIENT, CLIENT_KEYS, SERVER, SERVER_KEY, only_error, write
from trio_sudp.cli.app import app
from trio_sudp.config import (
    ClientConfig,
    ServerConfig,
    add_client,
    check_config,
    init_server,
    inspect_config,
    load_client_config,
    load_server_config,
    tunelo,
)
from trio_sudp.config.model import MASQUERADE_DEFAULT_ROUTE, Hooks
from trio_sudp.config.toml import render_client, render_server
from trio_sudp.protocol.errors import ConfigError
from vectors import VECTORS_DIR

VECTORS = VECTORS_DIR / "tunelo"
runner = CliRunner()


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    """The key files SERVER and CLIENT name."""
    (tmp_path / "server.key").write_bytes(SERVER_KEY.to_pem())
    (tmp_path / "server.key").chmod(0o600)
    (tmp_path / "server.pub").write_bytes(SERVER_KEY.public_key.to_pem())
    for i, key in enumerate(CLIENT_KEYS[:2]):
        (tmp_path / f"c{i}.pub").write_bytes(key.public_key.to_pem())
    (tmp_path / "c0.key").write_bytes(CLIENT_KEYS[0].to_pem())
    (tmp_path / "c0.key").chmod(0o600)
    return tmp_path


def server_with(keydir: Path, lines: str) -> Path:
    return write(keydir / "server.toml", SERVER.replace("[server]\n", f"[server]\n{lines}\n", 1))


def client_with(keydir: Path, lines: str) -> Path:
    return write(keydir / "client.toml", CLIENT.replace("[client]\n", f"[client]\n{lines}\n", 1))


# -- defaults and good values ------------------------------------------------------


def test_defaults(keydir: Path) -> None:
    server = load_server_config(write(keydir / "server.toml", SERVER))
    assert (server.forward, server.masquerade, server.hooks, server.metrics) == (
        False, None, Hooks(), None,
    )  # fmt: skip
    client = load_client_config(write(keydir / "client.toml", CLIENT))
    assert (client.dns, client.dns_search, client.hooks, client.metrics) == ((), (), Hooks(), None)


@pytest.mark.parametrize(
    ("lines", "forward", "masquerade"),
    [
        ("forward = true", True, None),
        ("forward = false", False, None),
        ('masquerade = "eth0"', True, "eth0"),
        ('forward = true\nmasquerade = "enp0s31f6"', True, "enp0s31f6"),
        ("masquerade = true", True, MASQUERADE_DEFAULT_ROUTE),
        ("masquerade = false", False, None),
        ("masquerade = false\nforward = true", True, None),
    ],
)
def test_forward_and_masquerade(
    keydir: Path, lines: str, forward: bool, masquerade: str | None
) -> None:
    config = load_server_config(server_with(keydir, lines))
    assert (config.forward, config.masquerade) == (forward, masquerade)


def test_hooks_and_metrics_on_both_sides(keydir: Path) -> None:
    hooks = (
        'pre_up = "echo pre %i"\n'
        'post_up = ["ip link set %i txqueuelen 1000", "logger up"]\n'
        "pre_down = []\n"
        "post_down = ['logger \"down %i\"']"
    )
    server = load_server_config(server_with(keydir, hooks + '\nmetrics = "127.0.0.1:9586"'))
    expected = Hooks(
        pre_up=("echo pre %i",),
        post_up=("ip link set %i txqueuelen 1000", "logger up"),
        post_down=('logger "down %i"',),
    )
    assert server.hooks == expected
    assert server.metrics == ("127.0.0.1", 9586)
    client = load_client_config(client_with(keydir, hooks + '\nmetrics = "[::1]:9587"'))
    assert client.hooks == expected
    assert client.metrics == ("::1", 9587)


def test_dns(keydir: Path) -> None:
    config = load_client_config(
        client_with(keydir, 'dns = ["10.0.0.1", "fd00::1"]\ndns_search = ["corp.example", "lab."]')
    )
    assert config.dns == (ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("fd00::1"))
    assert config.dns_search == ("corp.example", "lab.")
    one = load_client_config(client_with(keydir, 'dns = "10.0.0.1"\ndns_search = "corp.example"'))
    assert one.dns == (ipaddress.ip_address("10.0.0.1"),) and one.dns_search == ("corp.example",)


def test_dns_outside_the_tunnel_is_a_warning(keydir: Path) -> None:
    path = client_with(keydir, 'dns = ["10.0.0.1", "192.0.2.53"]')
    report = inspect_config(path)
    assert report.ok
    assert [str(w).removeprefix(f"{path}: ") for w in report.warnings] == [
        "client.dns[1]: 192.0.2.53 is not reached through the tunnel (not in the tunnel "
        "network or the routes, and no full_tunnel): queries for it go around the VPN"
    ]
    for lines in ('dns = "192.0.2.53"\nfull_tunnel = true',
                  'dns = "192.0.2.53"\nroutes = "192.0.2.0/24"'):  # fmt: skip
        assert inspect_config(client_with(keydir, lines)).warnings == ()


# -- one line per mistake ----------------------------------------------------------

IFNAME = "is not an interface name (1-15 bytes, no '/', ':' or spaces)"

SERVER_MISTAKES = [
    ('forward = "yes"', "server.forward: must be true or false, not text 'yes'"),
    ("masquerade = 5", "server.masquerade: must be an interface name, true (the interface "
     "of the default route) or false, not an integer 5"),
    ('masquerade = "eth/0"', f"server.masquerade: 'eth/0' {IFNAME}"),
    ('masquerade = "eth:0"', f"server.masquerade: 'eth:0' {IFNAME}"),
    ('masquerade = "eth 0"', f"server.masquerade: 'eth 0' {IFNAME}"),
    ('masquerade = "a-very-long-name0"', f"server.masquerade: 'a-very-long-name0' {IFNAME}"),
    ('masquerade = ".."', f"server.masquerade: '..' {IFNAME}"),
    ('masquerade = ""', "server.masquerade: must not be empty"),
    ('forward = false\nmasquerade = "eth0"', "server.masquerade: needs forwarding, but "
     "forward = false (remove that line, or set it to true)"),
    ("pre_up = 5", "server.pre_up: must be text or a list of text, not 5"),
    ('post_up = ["ok", ""]', "server.post_up[1]: must not be empty"),
    ('pre_down = "  "', "server.pre_down: must not be empty"),
    ('post_down = ["a\\u0000b"]', "server.post_down[0]: must not contain NUL characters"),
    ("post_down = [[\"x\"]]", "server.post_down: must be text or a list of text, not [['x']]"),
    ('metrics = "localhost:9586"',
     "server.metrics: 'localhost' is not a numeric IP address (to serve metrics on)"),
    ('metrics = "127.0.0.1"', "server.metrics: expected 'host:port', got '127.0.0.1'"),
    ('metrics = "127.0.0.1:0"', "server.metrics: port 0 is not a port a scraper can reach"),
    ('metrics = ":9586"', "server.metrics: ':9586' has no address; like 127.0.0.1:9586"),
    ('metrics = "::1:9586"', "server.metrics: an IPv6 address needs brackets: '[ipv6]:port'"),
    ("metrics = 9586", "server.metrics: must be text, not an integer 9586"),
    ('metric = "127.0.0.1:9586"', "server.metric: unknown key; did you mean 'metrics'?"),
    ('masqerade = "eth0"', "server.masqerade: unknown key; did you mean 'masquerade'?"),
    ('dns = "10.0.0.1"', "server.dns: unknown key"),
]  # fmt: skip


@pytest.mark.parametrize(("lines", "expected"), SERVER_MISTAKES)
def test_bad_server_keys(keydir: Path, lines: str, expected: str) -> None:
    line = only_error(server_with(keydir, lines))
    assert line.startswith(expected), line


CLIENT_MISTAKES = [
    ('dns = "10.0.0.300"', "client.dns: '10.0.0.300' is not an IP address like 10.0.0.1"),
    ('dns = ["10.0.0.1", "x"]', "client.dns[1]: 'x' is not an IP address like 10.0.0.1"),
    ('dns = "10.0.0.0/24"', "client.dns: '10.0.0.0/24' is not an IP address like 10.0.0.1"),
    ("dns = 10", "client.dns: must be text or a list of text, not 10"),
    ('dns_search = ["corp.example", "bad domain"]',
     "client.dns_search[1]: 'bad domain' is not a domain name like corp.example"),
    ('dns_search = "-x.example"', "client.dns_search: '-x.example' is not a domain name"),
    ('dns_search = "a..b"', "client.dns_search: 'a..b' is not a domain name"),
    ('dns_search = "."', "client.dns_search: '.' is not a domain name"),
    ('dns_search = "bücher.example"', "client.dns_search: 'bücher.example' is not a domain "
     "name like corp.example (write an international name in its xn-- form)"),
    (f'dns_search = "{"a" * 64}.example"', "client.dns_search: 'aaaa"),
    ("post_up = [1]", "client.post_up: must be text or a list of text, not [1]"),
    ('pre_up = ""', "client.pre_up: must not be empty"),
    ('metrics = "[::1]:x"', "client.metrics: port must be a number from 0 to 65535"),
    ('dsn = "10.0.0.1"', "client.dsn: unknown key; did you mean 'dns'?"),
    ("masquerade = true", "client.masquerade: unknown key"),
]  # fmt: skip


@pytest.mark.parametrize(("lines", "expected"), CLIENT_MISTAKES)
def test_bad_client_keys(keydir: Path, lines: str, expected: str) -> None:
    line = only_error(client_with(keydir, lines))
    assert line.startswith(expected), line


def test_the_model_keeps_masquerade_with_forward(keydir: Path) -> None:
    config = load_server_config(write(keydir / "server.toml", SERVER))
    with pytest.raises(ConfigError, match="masquerade needs forward"):
        attrs.evolve(config, masquerade="eth0")
    assert attrs.evolve(config, forward=True, masquerade="eth0").masquerade == "eth0"


# -- round trips -------------------------------------------------------------------

HOOKS = Hooks(
    pre_up=("iptables -A x -i %i",),
    post_up=("echo 'up' > /tmp/x", 'logger "%i up"'),
    pre_down=(),
    post_down=("echo down",),
)


@pytest.mark.parametrize("masquerade", ["eth0", MASQUERADE_DEFAULT_ROUTE, None])
def test_server_round_trip(keydir: Path, masquerade: str | None) -> None:
    config = attrs.evolve(
        load_server_config(write(keydir / "server.toml", SERVER)),
        forward=True,
        masquerade=masquerade,
        hooks=HOOKS,
        metrics=("::1", 9586),
    )
    text = render_server(config, private_key_file="server.key")
    loaded = load_server_config(write(keydir / "server.toml", text))
    assert loaded == config
    assert "forward = true" in text
    assert 'metrics = "[::1]:9586"' in text
    if masquerade == MASQUERADE_DEFAULT_ROUTE:
        assert "masquerade = true" in text


def test_client_round_trip(keydir: Path) -> None:
    config = attrs.evolve(
        load_client_config(write(keydir / "client.toml", CLIENT)),
        dns=(ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("fd00::1")),
        dns_search=("corp.example",),
        hooks=HOOKS,
        metrics=("127.0.0.1", 9587),
        full_tunnel=True,
    )
    loaded = load_client_config(write(keydir / "client.toml", render_client(config), 0o600))
    assert loaded == config


@pytest.mark.parametrize(
    ("masquerade", "written", "model"),
    [("eth0", 'masquerade = "eth0"', "eth0"),
     (MASQUERADE_DEFAULT_ROUTE, "masquerade = true", MASQUERADE_DEFAULT_ROUTE)],
)  # fmt: skip
def test_init_server_masquerade(tmp_path: Path, masquerade: str, written: str, model: str) -> None:
    result = init_server(tmp_path / "server.toml", endpoint="h:1", masquerade=masquerade)
    text = (tmp_path / "server.toml").read_text()
    assert "forward = true\n" in text and f"{written}\n" in text
    config = load_server_config(tmp_path / "server.toml")
    assert config == result.config
    assert (config.forward, config.masquerade) == (True, model)
    assert check_config(tmp_path / "server.toml") == []


def test_add_client_dns(tmp_path: Path) -> None:
    init_server(tmp_path / "server.toml", endpoint="h:1", networks=["10.0.0.1/24", "fd00::1/64"])
    result = add_client(tmp_path / "server.toml", tmp_path / "c.toml", dns=["10.0.0.1", "fd00::1"])
    client = load_client_config(tmp_path / "c.toml")
    assert client == result.client
    assert client.dns == (ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("fd00::1"))
    assert 'dns = ["10.0.0.1", "fd00::1"]' in (tmp_path / "c.toml").read_text()
    assert inspect_config(tmp_path / "c.toml").warnings == ()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"masquerade": "eth/0"}, f"--masquerade: 'eth/0' {IFNAME}"),
        ({"format": "tunelo", "endpoint": "1.2.3.4:1", "masquerade": "eth0"},
         "tunelo's server.json cannot hold masquerade"),
    ],
)  # fmt: skip
def test_init_server_bad_masquerade_writes_nothing(
    tmp_path: Path, kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        init_server(tmp_path / "server.toml", **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("server", "kwargs", "message"),
    [
        ("server.toml", {"dns": ["10.0.0.1", "nameserver"]},
         "--dns: 'nameserver' is not an IP address like 10.0.0.1"),
        ("server.toml", {"dns": ["10.0.0.1"], "format": "tunelo"},
         "tunelo's client.json cannot hold dns"),
        ("server.json", {"dns": ["10.0.0.1"]}, "tunelo's client.json cannot hold dns"),
    ],
)  # fmt: skip
def test_add_client_bad_dns_changes_nothing(
    tmp_path: Path, server: str, kwargs: dict[str, object], message: str
) -> None:
    fmt = "tunelo" if server.endswith(".json") else "toml"
    init_server(tmp_path / server, endpoint="1.2.3.4:7000", format=fmt)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ConfigError) as info:
        add_client(tmp_path / server, tmp_path / "c.toml", **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# -- the commands ------------------------------------------------------------------


def test_commands(tmp_path: Path) -> None:
    server = tmp_path / "server.toml"
    done = runner.invoke(app, ["config", "init-server", "-c", str(server), "--endpoint",
                               "h.example:7000", "--masquerade", "default-route"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "masquerade = true\n" in server.read_text()
    done = runner.invoke(app, ["config", "add-client", "-c", str(server), "-o",
                               str(tmp_path / "c.toml"), "--dns", "10.0.0.1", "--dns",
                               "10.0.0.2"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert load_client_config(tmp_path / "c.toml").dns == (
        ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.2"),
    )  # fmt: skip
    done = runner.invoke(app, ["check", "-c", str(server)])
    assert ", forward, masquerade via the default route, key " in done.stdout
    done = runner.invoke(app, ["check", "-c", str(tmp_path / "c.toml")])
    assert ", DNS 10.0.0.1, 10.0.0.2, key " in done.stdout
    for args, text in (
        (["config", "init-server", "-c", str(tmp_path / "s2.toml"), "--masquerade", "e:0"],
         f"--masquerade: 'e:0' {IFNAME}"),
        (["config", "add-client", "-c", str(server), "-o", str(tmp_path / "d.toml"),
          "--dns", "x"], "--dns: 'x' is not an IP address like 10.0.0.1"),
    ):  # fmt: skip
        done = runner.invoke(app, args)
        assert done.exit_code == 2
        assert done.stderr.splitlines() == [f"trio-sudp: error: {text}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "server.key", "server.toml"]


# -- tunelo ------------------------------------------------------------------------


@pytest.mark.skipif(not VECTORS.is_dir(), reason="tunelo vectors not available")
def test_tunelo_files_have_none_of_these_keys(tmp_path: Path) -> None:
    doc = json.loads((VECTORS / "server.json").read_text())
    doc["masquerade"] = "eth0"
    doc["sudp"]["metrics"] = "127.0.0.1:9586"
    path = tmp_path / "server.json"
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    report = inspect_config(path)
    assert report.ok
    assert [str(w).split(": ", 1)[1] for w in report.warnings] == [
        "masquerade: unknown key, ignored",
        "sudp.metrics: unknown key, ignored",
    ]
    assert isinstance(report.config, ServerConfig)
    assert (report.config.forward, report.config.masquerade, report.config.metrics) == (
        False, None, None,
    )  # fmt: skip
    client = load_client_config(VECTORS / "client.json")
    assert (client.dns, client.hooks, client.metrics) == ((), Hooks(), None)


@pytest.mark.skipif(not VECTORS.is_dir(), reason="tunelo vectors not available")
@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"forward": True}, "forward"),
        ({"forward": True, "masquerade": "eth0"}, "masquerade"),
        ({"hooks": Hooks(post_up=("x",))}, "hooks"),
        ({"metrics": ("127.0.0.1", 9586)}, "metrics"),
    ],
)
def test_tunelo_server_writer_refuses(changes: dict[str, object], name: str) -> None:
    server = load_server_config(VECTORS / "server.json")
    with pytest.raises(ConfigError, match=f"^tunelo's server.json cannot hold {name}$"):
        tunelo.render_server(attrs.evolve(server, **changes))


@pytest.mark.skipif(not VECTORS.is_dir(), reason="tunelo vectors not available")
@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"dns": (ipaddress.ip_address("10.0.0.1"),)}, "dns"),
        ({"dns_search": ("corp.example",)}, "dns_search"),
        ({"hooks": Hooks(pre_down=("x",))}, "hooks"),
        ({"metrics": ("127.0.0.1", 9586)}, "metrics"),
    ],
)
def test_tunelo_client_writer_refuses(changes: dict[str, object], name: str) -> None:
    client: ClientConfig = load_client_config(VECTORS / "client.json")
    with pytest.raises(ConfigError, match=f"^tunelo's client.json cannot hold {name}$"):
        tunelo.render_client(attrs.evolve(client, **changes))
