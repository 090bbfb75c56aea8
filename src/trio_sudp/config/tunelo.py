"""tunelo's JSON configuration files (SPEC §5): reading them as tunelo writes them,
and writing them so that tunelo reads ours.

tunelo always speaks SUDP v3. Keys are inline PEM (``"key_type": "string"``) or a
PEM file (``"key_type": "file"``, also when ``key_type`` is absent); a relative
key path is taken relative to the JSON file's directory (tunelo itself opens it
relative to its working directory: write absolute paths in files shared with
tunelo). Keys tunelo does not know are warned about, not refused: Go ignores them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from ..protocol.constants import SERVER_VADDR, Version
from ..protocol.crypto import PrivateKey, PublicKey
from ..protocol.errors import ConfigError
from ..protocol.peers import Peer
from ..protocol.settings import SessionSettings
from ..runtime.udp import parse_host_port
from .context import ParseContext
from .fields import (
    Table,
    parse_address,
    parse_client_vaddr,
    parse_endpoint,
    parse_interface,
    parse_listen,
)
from .model import (
    DEFAULT_HANDSHAKE_RATE,
    ClientConfig,
    IPAddress,
    PeerConfig,
    ServerConfig,
)
from .validate import PeerFields, ServerFields, check_client, check_server

__all__ = [
    "is_tunelo_client",
    "parse_client_document",
    "parse_server_document",
    "peer_entry",
    "render_client",
    "render_document",
    "render_server",
    "server_document",
]

_K = TypeVar("_K", PrivateKey, PublicKey)


def is_tunelo_client(doc: dict[str, Any]) -> bool:
    """Whether a tunelo document is a client's (``sudp.host``) rather than a server's."""
    sudp = doc.get("sudp")
    if isinstance(sudp, dict):
        if "host" in sudp or "server" in sudp:
            return True
        if "local" in sudp or "peers" in sudp or "attributes" in sudp:
            return False
    return "utun_peer" in doc and "mappings" not in doc


def _key_type(table: Table) -> str | None:
    """``"string"`` or ``"file"`` (the default); ``None`` when invalid."""
    value = table.raw("key_type")
    if value is None or value == "":
        return "file"
    if value in ("string", "file"):
        return str(value)
    table.error("key_type", f'must be "string" (inline PEM) or "file", not {value!r}')
    return None


def _looks_inline(table: Table, key: str, text: str) -> bool:
    if "-----BEGIN" in text:
        table.error(key, 'is PEM text, but key_type says a file name: set "key_type": "string"')
        return True
    return False


def _private_key(table: Table, ctx: ParseContext) -> PrivateKey | None:
    return _key(table, "private_key", ctx.private_key_inline, ctx.private_key_file, required=True)


def _public_key(table: Table, ctx: ParseContext, *, required: bool = True) -> PublicKey | None:
    return _key(table, "public_key", ctx.public_key_inline, ctx.public_key_file, required=required)


def _key(
    table: Table,
    field: str,
    inline: Callable[[Table, str, str], _K | None],
    from_file: Callable[[Table, str, str], _K | None],
    *,
    required: bool,
) -> _K | None:
    """A key given, per tunelo's ``key_type``, as PEM text or as a file path."""
    key_type = _key_type(table)
    text = table.string(field, required=required)
    if text is None or key_type is None:
        return None
    if key_type == "string":
        return inline(table, field, text)
    if _looks_inline(table, field, text):
        return None
    return from_file(table, field, text)


def _shared_key(table: Table) -> bytes | None:
    text = table.string("shared_hmac_key", empty=True)
    if text is None:
        return None
    key = text.encode()
    if len(key) > 64:
        table.error(
            "shared_hmac_key",
            f"is {len(key)} bytes; at most 64 (BLAKE2b's limit: a longer key crashes Go peers)",
        )
        return None
    return key or None


def _vaddr(table: Table, *, server: bool) -> int | None:
    value = table.integer("virtual_address")
    if value is None:
        if "virtual_address" in table:
            return None
        if server:
            return SERVER_VADDR  # Go's zero value
        table.missing("virtual_address", "missing (required)")
        return None
    if server and value != SERVER_VADDR:
        table.error("virtual_address", f"the server's virtual address is 0, not {value}")
        return None
    if not server:
        return table.convert("virtual_address", value, parse_client_vaddr)
    return value


def _listen(table: Table) -> tuple[str, int] | None:
    text = table.string("network_address", required=True)
    if text is not None and text.startswith(":"):
        text = "0.0.0.0" + text  # Go listens on every address for ":port"
    return table.convert("network_address", text, parse_listen)


def _endpoint_of(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _attributes(
    table: Table | None, ctx: ParseContext, listen: tuple[str, int] | None
) -> tuple[str | None, PublicKey | None]:
    """The public endpoint (``public_ip``:``listen_port``) and the advertised key."""
    if table is None:
        return None, None
    public_ip = table.string("public_ip")
    port = table.integer("listen_port")
    public_key = _public_key(table, ctx, required=False)
    table.finish()
    endpoint = None
    if public_ip is not None:
        if port is None and listen is not None and "listen_port" not in table:
            port = listen[1]
        if port is not None:
            endpoint = table.convert("public_ip", _endpoint_of(public_ip, port), parse_endpoint)
    if port is not None and not 1 <= port <= 65535:
        table.error("listen_port", f"must be a port number 1..65535, not {port}")
    return endpoint, public_key


def parse_server_document(doc: dict[str, Any], ctx: ParseContext) -> ServerConfig | None:
    """A server from tunelo's ``server.json``; problems go to ``ctx.issues``."""
    issues = ctx.issues
    errors_before = len(issues.errors)
    root = Table(doc, "", issues, strict=False)
    interface = root.convert(
        "utun_vaddr", root.string("utun_vaddr", required=True), parse_interface
    )
    mappings = root.table("mappings")
    sudp = root.table("sudp", required=True)
    root.finish()
    if sudp is None:
        return None
    local = sudp.table("local", required=True)
    listen = None
    private_key = None
    if local is not None:
        _vaddr(local, server=True)
        listen = _listen(local)
        private_key = _private_key(local, ctx)
        local.finish()
    endpoint, advertised = _attributes(sudp.table("attributes"), ctx, listen)
    errors_before_peers = len(issues.errors)
    peer_tables = sudp.tables("peers")
    sudp.finish()

    peers: list[tuple[int, Peer, str]] = []
    for table in peer_tables:
        vaddr = _vaddr(table, server=False)
        public_key = _public_key(table, ctx)
        shared_key = _shared_key(table)
        table.finish()
        if vaddr is not None and public_key is not None:
            peers.append((vaddr, Peer(vaddr, public_key, Version.V3, shared_key), table.path))

    # mappings: tunnel IP -> virtual address
    addresses: dict[int, list[tuple[IPAddress, str]]] = {}
    # Unknown vaddrs in mappings are only reported when every peer was understood.
    peers_ok = len(issues.errors) == errors_before_peers
    if mappings is not None:
        known = {vaddr for vaddr, _, _ in peers}
        for text in list(mappings.data):
            field = mappings.field(text)
            vaddr = mappings.integer(text)
            if vaddr is None:
                continue
            try:
                address = parse_address(text)
            except ConfigError as exc:
                issues.error(field, str(exc))
                continue
            if vaddr not in known and peers_ok:
                issues.error(field, f"no peer in sudp.peers has virtual address {vaddr}")
                continue
            addresses.setdefault(vaddr, []).append((address, field))
    if len(issues.errors) > errors_before:
        return None
    assert interface is not None and listen is not None and private_key is not None
    if advertised is not None and advertised != private_key.public_key:
        issues.warn(
            "sudp.attributes.public_key",
            "is not the public key of sudp.local.private_key (clients made from it will fail)",
        )
    peer_configs: list[PeerConfig] = []
    peer_fields: list[PeerFields] = []
    for vaddr, peer, path in peers:
        # A second peer with the same vaddr is reported by check_server; give it no
        # addresses so that the overlap check does not report it twice.
        first = next(p for v, _, p in peers if v == vaddr) == path
        mapped = addresses.get(vaddr, []) if first else []
        peer_configs.append(PeerConfig(peer=peer, addresses=tuple(a for a, _ in mapped)))
        peer_fields.append(
            PeerFields(
                base=path,
                vaddr=f"{path}.virtual_address",
                addresses=tuple(f for _, f in mapped),
                routes=(),
                public_key=f"{path}.public_key",
                shared_key=f"{path}.shared_hmac_key",
            )
        )
    config = ServerConfig(
        source=ctx.path,
        format="tunelo",
        listen=listen,
        private_key=private_key,
        addresses=(interface,),
        peers=tuple(peer_configs),
        endpoint=endpoint,
        default_version=Version.V3,
    )
    check_server(config, issues, ServerFields(addresses=("utun_vaddr",), mtu="mtu"), peer_fields)
    return None if len(issues.errors) > errors_before else config


def parse_client_document(doc: dict[str, Any], ctx: ParseContext) -> ClientConfig | None:
    """A client from tunelo's ``client.json``; problems go to ``ctx.issues``."""
    issues = ctx.issues
    errors_before = len(issues.errors)
    root = Table(doc, "", issues, strict=False)
    server_address = root.convert("utun_peer", root.string("utun_peer"), parse_address)
    interface = root.convert(
        "utun_vaddr", root.string("utun_vaddr", required=True), parse_interface
    )
    sudp = root.table("sudp", required=True)
    root.finish()
    if sudp is None:
        return None
    server = sudp.table("server", required=True)
    host = sudp.table("host", required=True)
    sudp.finish()
    endpoint = public_key = shared_key = None
    if server is not None:
        _vaddr(server, server=True)
        endpoint = server.convert(
            "network_address", server.string("network_address", required=True), parse_endpoint
        )
        public_key = _public_key(server, ctx)
        shared_key = _shared_key(server)
        server.finish()
    vaddr = private_key = None
    if host is not None:
        vaddr = _vaddr(host, server=False)
        private_key = _private_key(host, ctx)
        host.finish()
    if len(issues.errors) > errors_before:
        return None
    assert interface is not None and endpoint is not None and public_key is not None
    assert vaddr is not None and private_key is not None
    config = ClientConfig(
        source=ctx.path,
        format="tunelo",
        private_key=private_key,
        vaddr=vaddr,
        addresses=(interface,),
        endpoint=endpoint,
        server=Peer(SERVER_VADDR, public_key, Version.V3, shared_key),
        server_address=server_address,
    )
    check_client(
        config,
        issues,
        mtu="mtu",
        addresses=["utun_vaddr"],
        server_address="utun_peer",
        shared_key="sudp.server.shared_hmac_key",
    )
    return None if len(issues.errors) > errors_before else config


# -- writing -----------------------------------------------------------------------


def _pem(key: PublicKey | PrivateKey) -> str:
    return key.to_pem().decode("ascii")


def _shared_text(key: bytes | None, where: str) -> str:
    try:
        return (key or b"").decode()
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: the shared key is not text; tunelo cannot hold it") from None


def _dump(doc: dict[str, Any]) -> str:
    # Go's json.MarshalIndent with four spaces; it escapes <, > and & too.
    text = json.dumps(doc, indent=4, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") + "\n"


def peer_entry(peer: PeerConfig) -> dict[str, Any]:
    """One element of ``sudp.peers``, in tunelo's key order."""
    if peer.version != Version.V3:
        raise ConfigError(f"{peer.label}: tunelo speaks only SUDP v3, not v{int(peer.version)}")
    if peer.routes:
        raise ConfigError(f"{peer.label}: tunelo's server.json cannot hold routes")
    if peer.name is not None:
        raise ConfigError(f"{peer.label}: tunelo's server.json cannot hold peer names")
    return {
        "virtual_address": peer.vaddr,
        "shared_hmac_key": _shared_text(peer.peer.shared_key, peer.label),
        "key_type": "string",
        "public_key": _pem(peer.public_key),
    }


def _check_server_representable(config: ServerConfig) -> None:
    if len(config.addresses) != 1:
        raise ConfigError("tunelo's server.json holds exactly one tunnel address (utun_vaddr)")
    default = ServerConfig(listen=config.listen, private_key=config.private_key, addresses=())
    for name in ("mtu", "interface", "control_socket", "settings", "default_version"):
        if getattr(config, name) != getattr(default, name):
            raise ConfigError(f"tunelo's server.json cannot hold {name}")
    if config.handshake_rate != DEFAULT_HANDSHAKE_RATE:
        raise ConfigError("tunelo's server.json cannot hold handshake_rate")


def server_document(config: ServerConfig) -> dict[str, Any]:
    """``config`` as tunelo's server.json document (keys inline, tunelo's key order).

    Raises ``ConfigError`` if ``config`` uses something tunelo cannot express
    (v2 peers, routes, names, several tunnel addresses, MTU, timers, ...).
    """
    _check_server_representable(config)
    host, port = config.listen
    public_host, public_port = host, port
    if config.endpoint is not None:
        public_host, public_port = parse_host_port(config.endpoint)
    mappings: dict[str, int] = {}
    for peer in config.peers:
        for address in peer.addresses:
            mappings[str(address)] = peer.vaddr
    return {
        "utun_vaddr": str(config.addresses[0]),
        "mappings": mappings,
        "sudp": {
            "attributes": {
                "listen_port": public_port,
                "public_ip": public_host,
                "public_key": _pem(config.public_key),
                "key_type": "string",
            },
            "local": {
                "virtual_address": SERVER_VADDR,
                "network_address": _endpoint_of(host, port),
                "key_type": "string",
                "private_key": _pem(config.private_key),
            },
            "peers": [peer_entry(p) for p in config.peers],
        },
    }


def render_server(config: ServerConfig) -> str:
    """tunelo's server.json for ``config`` (see :func:`server_document`)."""
    return _dump(server_document(config))


def render_document(doc: dict[str, Any]) -> str:
    """A tunelo document as tunelo writes it."""
    return _dump(doc)


def render_client(config: ClientConfig) -> str:
    """tunelo's client.json for ``config``, keys inline. Raises ``ConfigError`` for
    what tunelo cannot express (v2, routes, full tunnel, several addresses, ...)."""
    if config.version != Version.V3:
        raise ConfigError(f"tunelo speaks only SUDP v3, not v{int(config.version)}")
    if len(config.addresses) != 1:
        raise ConfigError("tunelo's client.json holds exactly one tunnel address (utun_vaddr)")
    if config.routes:
        raise ConfigError("tunelo's client.json cannot hold routes")
    if config.full_tunnel:
        raise ConfigError(
            "tunelo's client.json cannot hold full_tunnel (tunelo takes -peergw instead)"
        )
    for name in ("mtu", "interface", "control_socket"):
        if getattr(config, name) is not None:
            raise ConfigError(f"tunelo's client.json cannot hold {name}")
    if config.settings != SessionSettings():
        raise ConfigError("tunelo's client.json cannot hold timers")
    doc: dict[str, Any] = {}
    if config.server_address is not None:
        doc["utun_peer"] = str(config.server_address)
    doc["utun_vaddr"] = str(config.addresses[0])
    doc["sudp"] = {
        "server": {
            "virtual_address": SERVER_VADDR,
            "network_address": config.endpoint,
            "shared_hmac_key": _shared_text(config.server.shared_key, "server"),
            "key_type": "string",
            "public_key": _pem(config.server.public_key),
        },
        "host": {
            "virtual_address": config.vaddr,
            "key_type": "string",
            "private_key": _pem(config.private_key),
        },
    }
    return _dump(doc)
