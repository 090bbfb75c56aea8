"""trio-sudp's own configuration format (TOML): reading and writing.

A server file has a ``[server]`` table, a ``[[peer]]`` table per client and an
optional ``[timers]`` table; a client file has ``[client]``, ``[server]`` (the
server it talks to) and optional ``[timers]``. Every key is documented in
``docs/configuration.md``. Unknown keys are errors (a typo must not be ignored).
Paths are relative to the config file's directory.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..protocol.constants import Version
from ..protocol.crypto import PrivateKey, PublicKey
from ..protocol.errors import ConfigError
from ..protocol.peers import Peer
from ..protocol.settings import SessionSettings
from .context import ParseContext
from .fields import (
    Table,
    parse_address,
    parse_client_vaddr,
    parse_endpoint,
    parse_interface,
    parse_listen,
    parse_prefix,
)
from .model import (
    DEFAULT_HANDSHAKE_RATE,
    ClientConfig,
    IPAddress,
    IPInterface,
    IPNetwork,
    PeerConfig,
    ServerConfig,
)
from .timers import parse_timers, timers_items
from .validate import PeerFields, ServerFields, check_client, check_server

__all__ = [
    "CLIENT_HEADER",
    "SERVER_HEADER",
    "parse_client_document",
    "parse_server_document",
    "render_client",
    "render_peer",
    "render_server",
    "toml_string",
]

SERVER_HEADER = """\
# trio-sudp server configuration (TOML).
# Every key is explained in docs/configuration.md; check it with:
#     trio-sudp check --config {name}
# Add clients with:
#     trio-sudp config add-client --config {name} --out client.toml
"""

CLIENT_HEADER = """\
# trio-sudp client configuration (TOML).
# It holds this client's private key: keep it private (mode 0600).
# Every key is explained in docs/configuration.md; check it with:
#     trio-sudp check --config {name}
"""

_MAX_SOCKET_PATH = 103 if sys.platform == "darwin" else 107
_INTERFACE_NAME = re.compile(r"^[A-Za-z0-9_.%-]{1,15}$")


# -- shared field readers ----------------------------------------------------------


def _version(table: Table, default: Version) -> Version | None:
    value = table.integer("version")
    if value is None:
        return None if "version" in table else default
    if value not in (2, 3):
        table.error("version", f"must be 2 or 3, not {value}")
        return None
    return Version(value)


def _mtu(table: Table) -> int | None:
    return table.integer("mtu")


def _interface(table: Table) -> str | None:
    name = table.string("interface")
    if name is not None and (not _INTERFACE_NAME.match(name) or name in (".", "..")):
        table.error(
            "interface",
            f"{name!r} is not an interface name (1-15 letters, digits, '_', '-', '.', '%')",
        )
        return None
    return name


def _control_socket(table: Table, ctx: ParseContext) -> Path | None:
    text = table.string("control_socket")
    if text is None:
        return None
    path = ctx.resolve(text)
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
        table.error(
            "control_socket", f"{path} is too long for a Unix socket (at most "
            f"{_MAX_SOCKET_PATH} bytes)"
        )  # fmt: skip
        return None
    return path


def _private_key(table: Table, ctx: ParseContext) -> PrivateKey | None:
    """``private_key`` (a file) or ``private_key_pem`` (inline): exactly one."""
    path = table.string("private_key")
    pem = table.string("private_key_pem")
    if path is not None and pem is not None:
        table.error("private_key", "give private_key (a file) or private_key_pem, not both")
        return None
    if path is not None:
        return ctx.private_key_file(table, "private_key", path)
    if pem is not None:
        return ctx.private_key_inline(table, "private_key_pem", pem)
    if "private_key" not in table and "private_key_pem" not in table:
        table.missing("private_key", "missing (required): a key file, or private_key_pem")
    return None


def _public_key(table: Table, ctx: ParseContext) -> tuple[PublicKey | None, str]:
    """``public_key`` (a file) or ``public_key_pem`` (inline), and the key's field name."""
    path = table.string("public_key")
    pem = table.string("public_key_pem")
    if path is not None and pem is not None:
        table.error("public_key", "give public_key (a file) or public_key_pem, not both")
        return None, table.field("public_key")
    if path is not None:
        return ctx.public_key_file(table, "public_key", path), table.field("public_key")
    if pem is not None:
        return ctx.public_key_inline(table, "public_key_pem", pem), table.field("public_key_pem")
    if "public_key" not in table and "public_key_pem" not in table:
        table.missing("public_key", "missing (required): a key file, or public_key_pem")
    return None, table.field("public_key")


def _shared_key(table: Table, version: Version | None) -> tuple[bool, bytes | None]:
    """``(ok, key)``: the v3 shared key as bytes (``None``: unkeyed)."""
    text = table.string("shared_key", empty=True)
    if text is None:
        return "shared_key" not in table, None
    key = text.encode()
    if version == Version.V2 and key:
        table.error("shared_key", "protocol v2 has no shared key (remove it, or use version 3)")
        return False, None
    if len(key) > 64:
        table.error(
            "shared_key",
            f"is {len(key)} bytes; at most 64 (BLAKE2b's limit: a longer key crashes Go peers)",
        )
        return False, None
    return True, key or None


def _listed(table: Table, key: str) -> tuple[list[str] | None, list[str]]:
    """A string-or-list value and the field name of each item."""
    values = table.strings(key)
    if values is None:
        return None, []
    if len(values) == 1 and isinstance(table.data.get(key), str):
        return values, [table.field(key)]
    return values, [f"{table.field(key)}[{i}]" for i in range(len(values))]


def _interfaces(table: Table, *, required: bool) -> tuple[list[IPInterface] | None, list[str]]:
    values, fields = _listed(table, "address")
    if values is None:
        if required and "address" not in table:
            table.missing("address", 'missing (required): like "10.0.0.1/24"')
        return None, []
    if required and not values:
        table.error("address", 'needs at least one address like "10.0.0.1/24"')
        return None, []
    return table.convert_all("address", values, parse_interface), fields


# -- server ------------------------------------------------------------------------


def _handshake_rate(table: Table) -> tuple[bool, float | None]:
    raw = table.raw("handshake_rate")
    if raw is None:
        return True, DEFAULT_HANDSHAKE_RATE
    if raw is False:
        return True, None
    value = table.number("handshake_rate")
    if value is None:
        return False, None
    if value < 0:
        table.error("handshake_rate", f"must be 0 or more per second, not {value}")
        return False, None
    return True, (value or None)


def _parse_peer(
    table: Table, ctx: ParseContext, default_version: Version
) -> tuple[PeerConfig, PeerFields] | None:
    errors_before = len(ctx.issues.errors)
    name = table.string("name")
    if name is not None and not name.isprintable():
        table.error("name", "must be printable text on one line")
    vaddr = table.integer("vaddr", required=True)
    table.convert("vaddr", vaddr, parse_client_vaddr)
    public_key, key_field = _public_key(table, ctx)
    version = _version(table, default_version)
    _, shared_key = _shared_key(table, version)
    address_texts, address_fields = _listed(table, "address")
    addresses: list[IPAddress] | None = table.convert_all("address", address_texts, parse_address)
    route_texts, route_fields = _listed(table, "routes")
    routes: list[IPNetwork] | None = table.convert_all("routes", route_texts, parse_prefix)
    table.finish()
    if len(ctx.issues.errors) > errors_before:
        return None
    assert vaddr is not None and public_key is not None and version is not None
    try:
        peer = Peer(vaddr, public_key, version, shared_key)
    except ConfigError as exc:  # pragma: no cover - every case is checked above
        table.error(None, str(exc))
        return None
    config = PeerConfig(
        peer=peer, name=name, addresses=tuple(addresses or ()), routes=tuple(routes or ())
    )
    fields = PeerFields(
        base=table.path,
        vaddr=table.field("vaddr"),
        addresses=tuple(address_fields),
        routes=tuple(route_fields),
        public_key=key_field,
        shared_key=table.field("shared_key"),
    )
    return config, fields


def parse_server_document(doc: dict[str, Any], ctx: ParseContext) -> ServerConfig | None:
    """A server from a parsed TOML document; problems go to ``ctx.issues``."""
    issues = ctx.issues
    root = Table(doc, "", issues)
    errors_before = len(issues.errors)
    server = root.table("server", required=True)
    peer_tables = root.tables("peer")
    timers = parse_timers(root.table("timers"))
    root.finish()
    if server is None:
        return None
    listen = server.convert("listen", server.string("listen", required=True), parse_listen)
    endpoint = server.convert("endpoint", server.string("endpoint"), parse_endpoint)
    private_key = _private_key(server, ctx)
    addresses, address_fields = _interfaces(server, required=True)
    mtu = _mtu(server)
    interface = _interface(server)
    control_socket = _control_socket(server, ctx)
    default_version = _version(server, Version.V3)
    _, handshake_rate = _handshake_rate(server)
    server.finish()
    peers: list[tuple[PeerConfig, PeerFields]] = []
    for table in peer_tables:
        parsed = _parse_peer(table, ctx, default_version or Version.V3)
        if parsed is not None:
            peers.append(parsed)
    if len(issues.errors) > errors_before:
        return None
    assert listen is not None and private_key is not None and addresses is not None
    assert default_version is not None and timers is not None
    config = ServerConfig(
        source=ctx.path,
        format="toml",
        listen=listen,
        private_key=private_key,
        addresses=tuple(addresses),
        peers=tuple(p for p, _ in peers),
        mtu=mtu,
        interface=interface,
        control_socket=control_socket,
        endpoint=endpoint,
        default_version=default_version,
        settings=timers,
        handshake_rate=handshake_rate,
    )
    check_server(
        config,
        issues,
        ServerFields(addresses=tuple(address_fields), mtu=server.field("mtu")),
        [f for _, f in peers],
    )
    return None if len(issues.errors) > errors_before else config


# -- client ------------------------------------------------------------------------


def parse_client_document(doc: dict[str, Any], ctx: ParseContext) -> ClientConfig | None:
    """A client from a parsed TOML document; problems go to ``ctx.issues``."""
    issues = ctx.issues
    root = Table(doc, "", issues)
    errors_before = len(issues.errors)
    client = root.table("client", required=True)
    server = root.table("server", required=True)
    timers = parse_timers(root.table("timers"))
    root.finish()
    if client is None or server is None:
        return None
    private_key = _private_key(client, ctx)
    vaddr = client.integer("vaddr", required=True)
    client.convert("vaddr", vaddr, parse_client_vaddr)
    addresses, address_fields = _interfaces(client, required=True)
    mtu = _mtu(client)
    interface = _interface(client)
    control_socket = _control_socket(client, ctx)
    full_tunnel = client.boolean("full_tunnel")
    route_texts, _ = _listed(client, "routes")
    routes: list[IPNetwork] | None = client.convert_all("routes", route_texts, parse_prefix)
    client.finish()

    endpoint = server.convert("endpoint", server.string("endpoint", required=True), parse_endpoint)
    public_key, _ = _public_key(server, ctx)
    version = _version(server, Version.V3)
    _, shared_key = _shared_key(server, version)
    server_address = server.convert("address", server.string("address"), parse_address)
    server.finish()
    if len(issues.errors) > errors_before:
        return None
    assert private_key is not None and vaddr is not None and addresses is not None
    assert endpoint is not None and public_key is not None and version is not None
    assert timers is not None
    config = ClientConfig(
        source=ctx.path,
        format="toml",
        private_key=private_key,
        vaddr=vaddr,
        addresses=tuple(addresses),
        endpoint=endpoint,
        server=Peer(0, public_key, version, shared_key),
        server_address=server_address,
        mtu=mtu,
        interface=interface,
        control_socket=control_socket,
        full_tunnel=bool(full_tunnel),
        routes=tuple(routes or ()),
        settings=timers,
    )
    check_client(
        config,
        issues,
        mtu=client.field("mtu"),
        addresses=address_fields,
        server_address=server.field("address"),
        shared_key=server.field("shared_key"),
    )
    return None if len(issues.errors) > errors_before else config


# -- writing -----------------------------------------------------------------------

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")  # pragma: no cover


def _pem(key: str, pem: bytes) -> str:
    text = pem.decode("ascii")
    return f"{key} = '''\n{text}'''"


def _one_or_list(items: Iterable[object]) -> object:
    values = [str(v) for v in items]
    return values[0] if len(values) == 1 else values


def _path_text(path: Path) -> str:
    return os.fspath(path)


def _shared_key_text(key: bytes | None, where: str) -> str | None:
    if not key:
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: the shared key is not text and cannot be written") from None


def _timers(settings: SessionSettings) -> list[str]:
    items = timers_items(settings)
    if not items:
        return []
    return ["", "[timers]", *(f"{key} = {_value(value)}" for key, value in items)]


def render_peer(peer: PeerConfig, *, public_key_file: str | None = None) -> str:
    """One ``[[peer]]`` table (to append to a server file)."""
    lines = ["[[peer]]"]
    if peer.name is not None:
        lines.append(f"name = {toml_string(peer.name)}")
    lines.append(f"vaddr = {peer.vaddr}")
    if peer.addresses:
        lines.append(f"address = {_value(_one_or_list(peer.addresses))}")
    if peer.routes:
        lines.append(f"routes = {_value([str(r) for r in peer.routes])}")
    lines.append(f"version = {int(peer.version)}")
    shared = _shared_key_text(peer.peer.shared_key, f"peer {peer.vaddr}")
    if shared is not None:
        lines.append(f"shared_key = {toml_string(shared)}")
    if public_key_file is not None:
        lines.append(f"public_key = {toml_string(public_key_file)}")
    else:
        lines.append(_pem("public_key_pem", peer.public_key.to_pem()))
    return "\n".join(lines) + "\n"


def render_server(
    config: ServerConfig,
    *,
    private_key_file: str | None = None,
    header: str | None = None,
) -> str:
    """A server file for ``config``. The private key is written inline unless
    ``private_key_file`` names the file it is in (relative to the config file)."""
    name = config.source.name if config.source is not None else "server.toml"
    lines = [(SERVER_HEADER if header is None else header).format(name=name).rstrip("\n"), ""]
    lines.append("[server]")
    host, port = config.listen
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines.append(f"listen = {toml_string(listen)}")
    if config.endpoint is not None:
        lines.append(f"endpoint = {toml_string(config.endpoint)}")
    lines.append(f"address = {_value(_one_or_list(config.addresses))}")
    if private_key_file is not None:
        lines.append(f"private_key = {toml_string(private_key_file)}")
    else:
        lines.append(_pem("private_key_pem", config.private_key.to_pem()))
    lines.append(f"version = {int(config.default_version)}")
    if config.mtu is not None:
        lines.append(f"mtu = {config.mtu}")
    if config.interface is not None:
        lines.append(f"interface = {toml_string(config.interface)}")
    if config.control_socket is not None:
        lines.append(f"control_socket = {toml_string(_path_text(config.control_socket))}")
    if config.handshake_rate != DEFAULT_HANDSHAKE_RATE:
        rate = config.handshake_rate
        lines.append(f"handshake_rate = {_value(False if rate is None else rate)}")
    lines.extend(_timers(config.settings))
    text = "\n".join(lines) + "\n"
    for peer in config.peers:
        text += "\n" + render_peer(peer)
    return text


def render_client(
    config: ClientConfig,
    *,
    private_key_file: str | None = None,
    server_public_key_file: str | None = None,
    header: str | None = None,
) -> str:
    """A client file for ``config``; keys inline unless a file is named."""
    name = config.source.name if config.source is not None else "client.toml"
    lines = [(CLIENT_HEADER if header is None else header).format(name=name).rstrip("\n"), ""]
    lines.append("[client]")
    lines.append(f"vaddr = {config.vaddr}")
    lines.append(f"address = {_value(_one_or_list(config.addresses))}")
    if config.full_tunnel:
        lines.append("full_tunnel = true")
    if config.routes:
        lines.append(f"routes = {_value([str(r) for r in config.routes])}")
    if config.mtu is not None:
        lines.append(f"mtu = {config.mtu}")
    if config.interface is not None:
        lines.append(f"interface = {toml_string(config.interface)}")
    if config.control_socket is not None:
        lines.append(f"control_socket = {toml_string(_path_text(config.control_socket))}")
    if private_key_file is not None:
        lines.append(f"private_key = {toml_string(private_key_file)}")
    else:
        lines.append(_pem("private_key_pem", config.private_key.to_pem()))
    lines.append("")
    lines.append("[server]")
    lines.append(f"endpoint = {toml_string(config.endpoint)}")
    if config.server_address is not None:
        lines.append(f"address = {toml_string(str(config.server_address))}")
    lines.append(f"version = {int(config.server.version)}")
    shared = _shared_key_text(config.server.shared_key, "server")
    if shared is not None:
        lines.append(f"shared_key = {toml_string(shared)}")
    if server_public_key_file is not None:
        lines.append(f"public_key = {toml_string(server_public_key_file)}")
    else:
        lines.append(_pem("public_key_pem", config.server.public_key.to_pem()))
    lines.extend(_timers(config.settings))
    return "\n".join(lines) + "\n"
