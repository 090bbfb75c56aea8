"""tunelo's JSON configuration files (SPEC §5): reading them as tunelo writes them,
and writing them so that tunelo reads ours.

tunelo always speaks SUDP v3. Keys are inline PEM (``"key_type": "string"``) or a
PEM file (``"key_type": "file"``, also when ``key_type`` is absent); a relative
key path is taken relative to the JSON file's directory (tunelo itself opens it
relative to its working directory: write absolute paths in files shared with
tunelo). Keys tunelo does not know are warned about, not refused: Go ignores them,
and ``null`` is taken as absent (Go's zero value). Files are edited as parsed JSON
documents and written back in tunelo's own layout.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import attrs

from ..protocol.constants import SERVER_VADDR, Version
from ..protocol.crypto import PrivateKey, PublicKey
from ..protocol.errors import ConfigError
from ..protocol.peers import Peer
from ..protocol.settings import SessionSettings
from ..runtime.udp import parse_host_port
from .model import (
    ClientConfig,
    IPAddress,
    IPInterface,
    PeerConfig,
    PeerFields,
    ServerConfig,
    ServerFields,
    check_client,
    check_server,
    parse_address,
    parse_client_vaddr,
    parse_endpoint,
    parse_interface,
    parse_listen,
    parse_shared_key,
)
from .schema import (
    Integer,
    ItemErrors,
    ParseContext,
    Text,
    Value,
    child,
    integer_value,
    structure,
    text_value,
    type_name,
)

__all__ = [
    "add_peer",
    "is_tunelo_client",
    "parse_client_document",
    "parse_server_document",
    "peer_entry",
    "remove_peer",
    "render_client",
    "render_document",
    "render_server",
    "server_document",
]


def is_tunelo_client(doc: dict[str, Any]) -> bool:
    """Whether a tunelo document is a client's (``sudp.host``) rather than a server's."""
    sudp = doc.get("sudp")
    if isinstance(sudp, dict):
        if "host" in sudp or "server" in sudp:
            return True
        if "local" in sudp or "peers" in sudp or "attributes" in sudp:
            return False
    return "utun_peer" in doc and "mappings" not in doc


# -- values --------------------------------------------------------------------------


@attrs.frozen
class _KeyText:
    """A key's raw text with its table's raw ``key_type`` (see :func:`_with_key_type`)."""

    key_type: object
    text: object


def _key_kind(key_type: object) -> str | None:
    """``"string"`` or ``"file"`` (the default, also for ``""``); ``None`` when invalid."""
    if key_type is None or key_type == "":
        return "file"
    return str(key_type) if key_type in ("string", "file") else None


@attrs.frozen
class _KeyType(Value):
    def structure(self, value: object, ctx: ParseContext) -> str:
        kind = _key_kind(value)
        if kind is None:
            raise ConfigError(f'must be "string" (inline PEM) or "file", not {value!r}')
        return kind


@attrs.frozen
class _Key(Value):
    """A key given, per its table's ``key_type``, as PEM text or as a file path."""

    private: bool
    #: Where a readable-by-others warning goes (the one private key of the file).
    field: str = ""

    def structure(self, value: object, ctx: ParseContext) -> PrivateKey | PublicKey | None:
        assert isinstance(value, _KeyText)
        text = text_value(value.text)
        kind = _key_kind(value.key_type)
        if kind is None:
            return None  # key_type itself is reported
        if kind == "string":
            if not self.private:
                return ctx.public_key_pem(text)
            key = ctx.private_key_pem(text)
            problem = ctx.readable_by_others()
            if problem is not None:
                # Only a warning: tunelo's files must be read as tunelo wrote them.
                ctx.issues.warn(self.field, problem)
            return key
        if "-----BEGIN" in text:
            raise ConfigError(
                'is PEM text, but key_type says a file name: set "key_type": "string"'
            )
        return ctx.private_key_file(text) if self.private else ctx.public_key_file(text)


def _with_key_type(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        k: _KeyText(raw.get("key_type"), v) if k in ("private_key", "public_key") else v
        for k, v in raw.items()
    }


def _server_vaddr(value: int) -> int:
    if value != SERVER_VADDR:
        raise ConfigError(f"the server's virtual address is 0, not {value}")
    return value


def _listen(text: str) -> tuple[str, int]:
    # Go listens on every address for ":port".
    return parse_listen("0.0.0.0" + text if text.startswith(":") else text)


@attrs.frozen
class _Mappings(Value):
    """``mappings``: tunnel IP → virtual address, as ``(address, vaddr, key)`` triples."""

    def structure(self, value: object, ctx: ParseContext) -> tuple[tuple[IPAddress, int, str], ...]:
        if not isinstance(value, dict):
            raise ConfigError(f"must be a table, not {type_name(value)}")
        out: list[tuple[IPAddress, int, str]] = []
        problems: list[tuple[int | str, Exception]] = []
        for text, vaddr in value.items():
            if vaddr is None:
                continue
            try:
                out.append((parse_address(text), integer_value(vaddr), text))
            except (ConfigError, ValueError) as exc:
                problems.append((text, exc))
        if problems:
            raise ItemErrors(problems)
        return tuple(out)


# -- the tables ----------------------------------------------------------------------

_SharedKey = Annotated[bytes | None, Text(parse_shared_key, empty=True)]
_KeyTypeField = Annotated[str, _KeyType()]


@attrs.frozen(kw_only=True)
class _Local:
    virtual_address: Annotated[int, Integer(_server_vaddr)] = SERVER_VADDR  # Go's zero value
    network_address: Annotated[tuple[str, int], Text(_listen)]
    key_type: _KeyTypeField = "file"
    private_key: Annotated[PrivateKey | None, _Key(True, "sudp.local.private_key")]
    prepare = staticmethod(_with_key_type)


@attrs.frozen(kw_only=True)
class _Attributes:
    public_ip: Annotated[str | None, Text()] = None
    listen_port: Annotated[int | None, Integer()] = None
    key_type: _KeyTypeField = "file"
    public_key: Annotated[PublicKey | None, _Key(False)] = None
    prepare = staticmethod(_with_key_type)


@attrs.frozen(kw_only=True)
class _PeerEntry:
    virtual_address: Annotated[int, Integer(parse_client_vaddr)]
    key_type: _KeyTypeField = "file"
    public_key: Annotated[PublicKey | None, _Key(False)]
    shared_hmac_key: _SharedKey = None
    prepare = staticmethod(_with_key_type)


@attrs.frozen(kw_only=True)
class _ServerSudp:
    local: _Local
    attributes: _Attributes = attrs.Factory(_Attributes)
    peers: tuple[_PeerEntry, ...] = ()


@attrs.frozen(kw_only=True)
class _ServerDocument:
    utun_vaddr: Annotated[IPInterface, Text(parse_interface)]
    sudp: _ServerSudp
    mappings: Annotated[tuple[tuple[IPAddress, int, str], ...], _Mappings()] = ()


@attrs.frozen(kw_only=True)
class _ServerRef:
    virtual_address: Annotated[int, Integer(_server_vaddr)] = SERVER_VADDR
    network_address: Annotated[str, Text(parse_endpoint)]
    key_type: _KeyTypeField = "file"
    public_key: Annotated[PublicKey | None, _Key(False)]
    shared_hmac_key: _SharedKey = None
    prepare = staticmethod(_with_key_type)


@attrs.frozen(kw_only=True)
class _Host:
    virtual_address: Annotated[int, Integer(parse_client_vaddr)]
    key_type: _KeyTypeField = "file"
    private_key: Annotated[PrivateKey | None, _Key(True, "sudp.host.private_key")]
    prepare = staticmethod(_with_key_type)


@attrs.frozen(kw_only=True)
class _ClientSudp:
    server: _ServerRef
    host: _Host


@attrs.frozen(kw_only=True)
class _ClientDocument:
    utun_peer: Annotated[IPAddress | None, Text(parse_address)] = None
    utun_vaddr: Annotated[IPInterface, Text(parse_interface)]
    sudp: _ClientSudp


# -- reading -------------------------------------------------------------------------


def _endpoint_of(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _public_endpoint(
    attributes: _Attributes, listen: tuple[str, int], ctx: ParseContext
) -> str | None:
    """``public_ip``:``listen_port`` (the listening port when it is not given)."""
    endpoint = None
    port = attributes.listen_port
    if attributes.public_ip is not None:
        try:
            endpoint = parse_endpoint(_endpoint_of(attributes.public_ip, port or listen[1]))
        except ConfigError as exc:
            ctx.issues.error("sudp.attributes.public_ip", str(exc))
    if port is not None and not 1 <= port <= 65535:
        ctx.issues.error(
            "sudp.attributes.listen_port", f"must be a port number 1..65535, not {port}"
        )
    return endpoint


def parse_server_document(doc: dict[str, Any], ctx: ParseContext) -> ServerConfig | None:
    """A server from tunelo's ``server.json``; problems go to ``ctx.issues``."""
    parsed = structure(doc, _ServerDocument, ctx)
    if parsed is None:
        return None
    issues = ctx.issues
    errors_before = len(issues.errors)
    local = parsed.sudp.local
    assert local.private_key is not None
    endpoint = _public_endpoint(parsed.sudp.attributes, local.network_address, ctx)
    advertised = parsed.sudp.attributes.public_key
    if advertised is not None and advertised != local.private_key.public_key:
        issues.warn(
            "sudp.attributes.public_key",
            "is not the public key of sudp.local.private_key (clients made from it will fail)",
        )
    known = {p.virtual_address for p in parsed.sudp.peers}
    addresses: dict[int, list[tuple[IPAddress, str]]] = {}
    for address, vaddr, text in parsed.mappings:
        field = child("mappings", text)
        if vaddr not in known:
            issues.error(field, f"no peer in sudp.peers has virtual address {vaddr}")
            continue
        addresses.setdefault(vaddr, []).append((address, field))
    if len(issues.errors) > errors_before:
        return None
    peers: list[PeerConfig] = []
    fields: list[PeerFields] = []
    seen: set[int] = set()
    for index, entry in enumerate(parsed.sudp.peers):
        assert entry.public_key is not None
        path = f"sudp.peers[{index}]"
        vaddr = entry.virtual_address
        # A second peer with the same vaddr is reported by check_server; give it no
        # addresses so that the overlap check does not report it twice.
        mapped = addresses.get(vaddr, []) if vaddr not in seen else []
        seen.add(vaddr)
        peer = Peer(vaddr, entry.public_key, Version.V3, entry.shared_hmac_key)
        peers.append(PeerConfig(peer=peer, addresses=tuple(a for a, _ in mapped)))
        fields.append(
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
        listen=local.network_address,
        private_key=local.private_key,
        addresses=(parsed.utun_vaddr,),
        peers=tuple(peers),
        endpoint=endpoint,
        default_version=Version.V3,
    )
    check_server(config, issues, ServerFields(addresses=("utun_vaddr",), mtu="mtu"), fields)
    return None if len(issues.errors) > errors_before else config


def parse_client_document(doc: dict[str, Any], ctx: ParseContext) -> ClientConfig | None:
    """A client from tunelo's ``client.json``; problems go to ``ctx.issues``."""
    parsed = structure(doc, _ClientDocument, ctx)
    if parsed is None:
        return None
    errors_before = len(ctx.issues.errors)
    server, host = parsed.sudp.server, parsed.sudp.host
    assert server.public_key is not None and host.private_key is not None
    config = ClientConfig(
        source=ctx.path,
        format="tunelo",
        private_key=host.private_key,
        vaddr=host.virtual_address,
        addresses=(parsed.utun_vaddr,),
        endpoint=server.network_address,
        server=Peer(SERVER_VADDR, server.public_key, Version.V3, server.shared_hmac_key),
        server_address=parsed.utun_peer,
    )
    check_client(
        config,
        ctx.issues,
        mtu="mtu",
        addresses=["utun_vaddr"],
        server_address="utun_peer",
        shared_key="sudp.server.shared_hmac_key",
    )
    return None if len(ctx.issues.errors) > errors_before else config


# -- writing -----------------------------------------------------------------------

#: What a trio-sudp server may have that tunelo's server.json cannot hold.
_SERVER_ONLY_TOML = (
    "mtu", "interface", "control_socket", "settings", "default_version", "handshake_rate",
    "masquerade", "forward", "hooks", "metrics",
)  # fmt: skip


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


def _refuse(config: ServerConfig | ClientConfig, names: tuple[str, ...], file: str) -> None:
    """Refuse ``config`` if one of these fields is not at its default."""
    fields = attrs.fields_dict(type(config))
    for name in names:
        default: Any = fields[name].default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        if getattr(config, name) != default:
            raise ConfigError(f"tunelo's {file} cannot hold {name}")


def _check_server_representable(config: ServerConfig) -> None:
    if len(config.addresses) != 1:
        raise ConfigError("tunelo's server.json holds exactly one tunnel address (utun_vaddr)")
    _refuse(config, _SERVER_ONLY_TOML, "server.json")


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
    _refuse(config, ("mtu", "interface", "control_socket"), "client.json")
    if config.settings != SessionSettings():
        raise ConfigError("tunelo's client.json cannot hold timers")
    _refuse(config, ("dns", "dns_search", "hooks", "metrics"), "client.json")
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


# -- editing a server.json document ----------------------------------------------------


def add_peer(doc: dict[str, Any], peer: PeerConfig) -> None:
    """Add ``peer`` to a parsed server.json: its ``sudp.peers`` entry and its mappings."""
    mappings = doc.get("mappings")
    if not isinstance(mappings, dict):
        mappings = doc["mappings"] = {}
    for address in peer.addresses:
        mappings[str(address)] = peer.vaddr
    sudp = doc["sudp"]
    if not isinstance(sudp.get("peers"), list):
        sudp["peers"] = []
    sudp["peers"].append(peer_entry(peer))


def remove_peer(doc: dict[str, Any], vaddr: int) -> None:
    """Remove the peer ``vaddr`` from a parsed server.json, with its mappings."""
    sudp = doc["sudp"]
    sudp["peers"] = [p for p in sudp.get("peers") or () if p.get("virtual_address") != vaddr]
    mappings = doc.get("mappings")
    if isinstance(mappings, dict):
        doc["mappings"] = {k: v for k, v in mappings.items() if v != vaddr}
