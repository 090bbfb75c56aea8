"""trio-sudp's own configuration format (TOML): its tables, reading, writing, editing.

A server file has a ``[server]`` table, a ``[[peer]]`` table per client and an
optional ``[timers]`` table; a client file has ``[client]``, ``[server]`` (the
server it talks to) and optional ``[timers]``. Every key is documented in
``docs/configuration.md``. Unknown keys are errors (a typo must not be ignored).
Paths are relative to the config file's directory.

The tables are the attrs classes below (see :mod:`.schema`); ``[timers]`` is made
from the fields of :class:`~trio_sudp.SessionSettings`. Files are written and
edited through tomlkit documents, so that an edit (a ``[[peer]]`` added or
removed) keeps the comments, order and formatting of everything else.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

import attrs
import tomlkit
import tomlkit.items

from ..protocol.constants import SERVER_VADDR, Version
from ..protocol.crypto import PrivateKey, PublicKey
from ..protocol.errors import ConfigError
from ..protocol.peers import Peer
from ..protocol.settings import SessionSettings
from .model import (
    DEFAULT_HANDSHAKE_RATE,
    MASQUERADE_DEFAULT_ROUTE,
    ClientConfig,
    Hooks,
    IPAddress,
    IPInterface,
    IPNetwork,
    PeerConfig,
    PeerFields,
    ServerConfig,
    ServerFields,
    check_client,
    check_server,
    parse_address,
    parse_client_vaddr,
    parse_control_socket,
    parse_dns_server,
    parse_egress_interface,
    parse_endpoint,
    parse_handshake_rate,
    parse_interface,
    parse_interface_name,
    parse_listen,
    parse_metrics,
    parse_prefix,
    parse_search_domain,
    parse_shared_key,
    parse_version,
)
from .schema import (
    Flag,
    Integer,
    ItemErrors,
    Listed,
    Number,
    ParseContext,
    Refused,
    Text,
    Texts,
    Value,
    flag_value,
    integer_value,
    number_value,
    show,
    structure,
    text_value,
    type_name,
)

__all__ = [
    "CLIENT_HEADER",
    "SERVER_HEADER",
    "TIMER_KINDS",
    "add_peer",
    "document_to_edit",
    "parse_client_document",
    "parse_server_document",
    "peer_index",
    "remove_peer",
    "render_client",
    "render_peer",
    "render_server",
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

_K = TypeVar("_K", PrivateKey, PublicKey)

_ADDRESS_MISSING = 'missing (required): like "10.0.0.1/24"'
_ADDRESS_EMPTY = 'needs at least one address like "10.0.0.1/24"'


# -- keys ----------------------------------------------------------------------------


@attrs.frozen
class _KeyFile(Value):
    """A key file, relative to the config file."""

    private: bool

    def structure(self, value: object, ctx: ParseContext) -> PrivateKey | PublicKey:
        text = text_value(value)
        return ctx.private_key_file(text) if self.private else ctx.public_key_file(text)


@attrs.frozen
class _KeyPem(Value):
    """A key written inline as PEM; a file holding a private key must be private itself."""

    private: bool

    def structure(self, value: object, ctx: ParseContext) -> PrivateKey | PublicKey:
        pem = text_value(value)
        if not self.private:
            return ctx.public_key_pem(pem)
        key = ctx.private_key_pem(pem)
        problem = ctx.readable_by_others()
        if problem is not None:
            raise ConfigError(problem)
        return key


@attrs.frozen
class _ControlSocket(Value):
    """A Unix socket path, relative to the config file."""

    def structure(self, value: object, ctx: ParseContext) -> Path:
        return parse_control_socket(ctx.resolve(text_value(value)))


def _one_key(raw: dict[str, Any], key: str, missing: str) -> dict[str, Any]:
    """``key`` (a file) or ``key_pem`` (inline): exactly one of them."""
    pem = f"{key}_pem"
    if isinstance(raw.get(key), str) and isinstance(raw.get(pem), str):
        raw = {k: v for k, v in raw.items() if k != pem}
        raw[key] = Refused(f"give {key} (a file) or {pem}, not both")
    elif key not in raw and pem not in raw:
        raw = {**raw, key: Refused(missing, missing=True)}
    return raw


@attrs.frozen
class _Masquerade(Value):
    """An interface name, ``true`` (the default route's interface) or ``false``."""

    def structure(self, value: object, ctx: ParseContext) -> str | None:
        if value is True:
            return MASQUERADE_DEFAULT_ROUTE
        if value is False:
            return None
        if not isinstance(value, str):
            raise ConfigError(
                "must be an interface name, true (the interface of the default route) or "
                f"false, not {type_name(value)} {show(value)}"
            )
        return parse_egress_interface(text_value(value))


#: A hook: one shell command, or a list of them.
_Hook = Annotated[Listed[str], Texts(text_value)]


def _hooks(table: _ServerTable | _ClientTable) -> Hooks:
    return Hooks(
        pre_up=table.pre_up.items,
        post_up=table.post_up.items,
        pre_down=table.pre_down.items,
        post_down=table.post_down.items,
    )


def _printable(name: str) -> str:
    if not name.isprintable():
        raise ConfigError("must be printable text on one line")
    return name


# -- [timers] ------------------------------------------------------------------------

TimerKind = Literal["seconds", "optional_seconds", "flag", "count", "schedule"]

_KIND_OF_TYPE: Final[dict[Any, TimerKind]] = {
    float: "seconds",
    float | None: "optional_seconds",
    bool: "flag",
    int: "count",
    tuple[float, ...] | None: "schedule",
}


_SETTING_TYPES: Final = typing.get_type_hints(SessionSettings)


def _timer_kind(field: attrs.Attribute[Any]) -> TimerKind:
    try:
        return _KIND_OF_TYPE[_SETTING_TYPES[field.name]]
    except KeyError:  # pragma: no cover - caught by the test suite
        msg = f"SessionSettings.{field.name}: no [timers] form for {_SETTING_TYPES[field.name]}"
        raise TypeError(msg) from None


#: Each ``SessionSettings`` field and how it is written in ``[timers]``: seconds are
#: numbers, a setting that can be switched off takes ``false`` (TOML has no null).
TIMER_KINDS: Final = {f.name: _timer_kind(f) for f in attrs.fields(SessionSettings)}


@attrs.frozen
class _Timer(Value):
    """One ``SessionSettings`` field, checked by the field's own validator."""

    field: attrs.Attribute[Any]
    kind: TimerKind

    def structure(self, value: object, ctx: ParseContext) -> Any:
        converted = self._convert(value)
        if self.field.validator is not None:
            try:
                self.field.validator(None, self.field, converted)
            except ConfigError as exc:
                raise ConfigError(str(exc).removeprefix(f"{self.field.name} ")) from None
        return converted

    def _convert(self, value: object) -> Any:
        kind = self.kind
        if kind in ("optional_seconds", "schedule") and value is False:
            return None
        if kind == "flag":
            return flag_value(value)
        if kind == "count":
            return integer_value(value)
        if kind == "schedule":
            if not isinstance(value, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value
            ):
                raise ConfigError(
                    f"must be a list of seconds like [2, 4.5, 7] or false, not {value!r}"
                )
            return tuple(float(v) for v in value)
        try:
            return number_value(value)
        except ConfigError as exc:
            if kind == "optional_seconds" and value is True:
                raise ConfigError(f"{exc} (false switches it off)") from None
            raise


class _TimersRule:
    __slots__ = ()

    @staticmethod
    def check(timers: Any) -> None:
        """The handshake gives up after its last retry, for both versions."""
        settings = _settings(timers)
        for version in Version:
            try:
                settings.retry_schedule(version)
            except ConfigError as exc:
                raise ItemErrors([("handshake_timeout", exc)]) from None


def _timers_table() -> type:
    """The ``[timers]`` table: a key per ``SessionSettings`` field, defaulting to its default."""
    fields = {
        field.name: attrs.field(
            type=typing.cast(
                type, Annotated[_SETTING_TYPES[field.name], _Timer(field, TIMER_KINDS[field.name])]
            ),
            default=field.default,
            kw_only=True,
        )
        for field in attrs.fields(SessionSettings)
    }
    return attrs.make_class("_Timers", fields, bases=(_TimersRule,), frozen=True)


if typing.TYPE_CHECKING:
    _Timers = Any
else:
    _Timers = _timers_table()


def _settings(timers: Any) -> SessionSettings:
    return SessionSettings(**attrs.asdict(timers, recurse=False))


def _timer_items(settings: SessionSettings) -> list[tuple[str, object]]:
    """The settings that differ from the defaults, as ``[timers]`` keys and values."""
    default = SessionSettings()
    items: list[tuple[str, object]] = []
    for key, kind in TIMER_KINDS.items():
        value = getattr(settings, key)
        if value == getattr(default, key):
            continue
        if value is None:
            value = False
        elif kind == "schedule":
            value = list(value)
        items.append((key, value))
    return items


# -- the tables ----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _ServerTable:
    listen: Annotated[tuple[str, int], Text(parse_listen)]
    endpoint: Annotated[str | None, Text(parse_endpoint)] = None
    private_key: Annotated[PrivateKey | None, _KeyFile(private=True)] = None
    private_key_pem: Annotated[PrivateKey | None, _KeyPem(private=True)] = None
    address: Annotated[Listed[IPInterface], Texts(parse_interface, nonempty=_ADDRESS_EMPTY)] = (
        attrs.field(metadata={"missing": _ADDRESS_MISSING})
    )
    mtu: Annotated[int | None, Integer()] = None
    interface: Annotated[str | None, Text(parse_interface_name)] = None
    control_socket: Annotated[Path | None, _ControlSocket()] = None
    #: Version of the peers that do not say.
    version: Annotated[Version, Integer(parse_version)] = Version.V3
    handshake_rate: Annotated[float | None, Number(parse_handshake_rate, off=True)] = (
        DEFAULT_HANDSHAKE_RATE
    )
    forward: Annotated[bool | None, Flag()] = None
    masquerade: Annotated[str | None, _Masquerade()] = None
    pre_up: _Hook = attrs.Factory(Listed)
    post_up: _Hook = attrs.Factory(Listed)
    pre_down: _Hook = attrs.Factory(Listed)
    post_down: _Hook = attrs.Factory(Listed)
    metrics: Annotated[tuple[str, int] | None, Text(parse_metrics)] = None

    @staticmethod
    def prepare(raw: dict[str, Any]) -> dict[str, Any]:
        return _one_key(raw, "private_key", "missing (required): a key file, or private_key_pem")


@attrs.frozen(kw_only=True)
class _PeerTable:
    name: Annotated[str | None, Text(_printable)] = None
    vaddr: Annotated[int, Integer(parse_client_vaddr)]
    public_key: Annotated[PublicKey | None, _KeyFile(private=False)] = None
    public_key_pem: Annotated[PublicKey | None, _KeyPem(private=False)] = None
    version: Annotated[Version | None, Integer(parse_version)] = None
    shared_key: Annotated[bytes | None, Text(parse_shared_key, empty=True)] = None
    address: Annotated[Listed[IPAddress], Texts(parse_address)] = attrs.Factory(Listed)
    routes: Annotated[Listed[IPNetwork], Texts(parse_prefix)] = attrs.Factory(Listed)

    @staticmethod
    def prepare(raw: dict[str, Any]) -> dict[str, Any]:
        return _one_key(raw, "public_key", "missing (required): a key file, or public_key_pem")


# [timers] comes first in the documents: its problems are listed before the others,
# as trio-sudp check always listed them.


@attrs.frozen(kw_only=True)
class _ServerDocument:
    timers: _Timers = attrs.Factory(_Timers)
    server: _ServerTable
    peer: tuple[_PeerTable, ...] = ()


@attrs.frozen(kw_only=True)
class _ClientTable:
    private_key: Annotated[PrivateKey | None, _KeyFile(private=True)] = None
    private_key_pem: Annotated[PrivateKey | None, _KeyPem(private=True)] = None
    vaddr: Annotated[int, Integer(parse_client_vaddr)]
    address: Annotated[Listed[IPInterface], Texts(parse_interface, nonempty=_ADDRESS_EMPTY)] = (
        attrs.field(metadata={"missing": _ADDRESS_MISSING})
    )
    mtu: Annotated[int | None, Integer()] = None
    interface: Annotated[str | None, Text(parse_interface_name)] = None
    control_socket: Annotated[Path | None, _ControlSocket()] = None
    full_tunnel: Annotated[bool, Flag()] = False
    routes: Annotated[Listed[IPNetwork], Texts(parse_prefix)] = attrs.Factory(Listed)
    dns: Annotated[Listed[IPAddress], Texts(parse_dns_server)] = attrs.Factory(Listed)
    dns_search: Annotated[Listed[str], Texts(parse_search_domain)] = attrs.Factory(Listed)
    pre_up: _Hook = attrs.Factory(Listed)
    post_up: _Hook = attrs.Factory(Listed)
    pre_down: _Hook = attrs.Factory(Listed)
    post_down: _Hook = attrs.Factory(Listed)
    metrics: Annotated[tuple[str, int] | None, Text(parse_metrics)] = None

    @staticmethod
    def prepare(raw: dict[str, Any]) -> dict[str, Any]:
        return _one_key(raw, "private_key", "missing (required): a key file, or private_key_pem")


@attrs.frozen(kw_only=True)
class _ServerOfClientTable:
    endpoint: Annotated[str, Text(parse_endpoint)]
    public_key: Annotated[PublicKey | None, _KeyFile(private=False)] = None
    public_key_pem: Annotated[PublicKey | None, _KeyPem(private=False)] = None
    version: Annotated[Version, Integer(parse_version)] = Version.V3
    shared_key: Annotated[bytes | None, Text(parse_shared_key, empty=True)] = None
    address: Annotated[IPAddress | None, Text(parse_address)] = None

    @staticmethod
    def prepare(raw: dict[str, Any]) -> dict[str, Any]:
        return _one_key(raw, "public_key", "missing (required): a key file, or public_key_pem")


@attrs.frozen(kw_only=True)
class _ClientDocument:
    timers: _Timers = attrs.Factory(_Timers)
    client: _ClientTable
    server: _ServerOfClientTable


def _either(from_file: _K | None, inline: _K | None) -> _K | None:
    return from_file if from_file is not None else inline


def _key_field(base: str, table: _PeerTable | _ServerOfClientTable) -> str:
    return f"{base}.public_key_pem" if table.public_key_pem is not None else f"{base}.public_key"


def _shared_key(
    ctx: ParseContext, field: str, version: Version, key: bytes | None
) -> tuple[bool, bytes | None]:
    if version == Version.V2 and key:
        ctx.issues.error(field, "protocol v2 has no shared key (remove it, or use version 3)")
        return False, None
    return True, key


# -- reading -------------------------------------------------------------------------


def parse_server_document(doc: dict[str, Any], ctx: ParseContext) -> ServerConfig | None:
    """A server from a parsed TOML document; problems go to ``ctx.issues``."""
    parsed = structure(doc, _ServerDocument, ctx)
    if parsed is None:
        return None
    errors_before = len(ctx.issues.errors)
    server = parsed.server
    private_key = _either(server.private_key, server.private_key_pem)
    settings = _settings(parsed.timers)
    peers: list[PeerConfig] = []
    fields: list[PeerFields] = []
    for index, table in enumerate(parsed.peer):
        base = f"peer[{index}]"
        version = table.version or server.version
        ok, shared_key = _shared_key(ctx, f"{base}.shared_key", version, table.shared_key)
        public_key = _either(table.public_key, table.public_key_pem)
        if not ok or public_key is None:
            continue
        peer = Peer(table.vaddr, public_key, version, shared_key)
        peers.append(
            PeerConfig(
                peer=peer, name=table.name, addresses=table.address.items, routes=table.routes.items
            )
        )
        fields.append(
            PeerFields(
                base=base,
                vaddr=f"{base}.vaddr",
                addresses=table.address.fields(f"{base}.address"),
                routes=table.routes.fields(f"{base}.routes"),
                public_key=_key_field(base, table),
                shared_key=f"{base}.shared_key",
            )
        )
    if server.forward is False and server.masquerade is not None:
        ctx.issues.error(
            "server.masquerade",
            "needs forwarding, but forward = false (remove that line, or set it to true)",
        )
    if len(ctx.issues.errors) > errors_before or private_key is None:
        return None
    config = ServerConfig(
        source=ctx.path,
        format="toml",
        listen=server.listen,
        private_key=private_key,
        addresses=server.address.items,
        peers=tuple(peers),
        mtu=server.mtu,
        interface=server.interface,
        control_socket=server.control_socket,
        endpoint=server.endpoint,
        default_version=server.version,
        settings=settings,
        handshake_rate=server.handshake_rate,
        forward=bool(server.forward) or server.masquerade is not None,
        masquerade=server.masquerade,
        hooks=_hooks(server),
        metrics=server.metrics,
    )
    check_server(
        config,
        ctx.issues,
        ServerFields(addresses=server.address.fields("server.address"), mtu="server.mtu"),
        fields,
    )
    return None if len(ctx.issues.errors) > errors_before else config


def parse_client_document(doc: dict[str, Any], ctx: ParseContext) -> ClientConfig | None:
    """A client from a parsed TOML document; problems go to ``ctx.issues``."""
    parsed = structure(doc, _ClientDocument, ctx)
    if parsed is None:
        return None
    errors_before = len(ctx.issues.errors)
    client, server = parsed.client, parsed.server
    private_key = _either(client.private_key, client.private_key_pem)
    public_key = _either(server.public_key, server.public_key_pem)
    settings = _settings(parsed.timers)
    ok, shared_key = _shared_key(ctx, "server.shared_key", server.version, server.shared_key)
    if not ok or private_key is None or public_key is None:
        return None
    config = ClientConfig(
        source=ctx.path,
        format="toml",
        private_key=private_key,
        vaddr=client.vaddr,
        addresses=client.address.items,
        endpoint=server.endpoint,
        server=Peer(SERVER_VADDR, public_key, server.version, shared_key),
        server_address=server.address,
        mtu=client.mtu,
        interface=client.interface,
        control_socket=client.control_socket,
        full_tunnel=client.full_tunnel,
        routes=client.routes.items,
        settings=settings,
        dns=client.dns.items,
        dns_search=client.dns_search.items,
        hooks=_hooks(client),
        metrics=client.metrics,
    )
    check_client(
        config,
        ctx.issues,
        mtu="client.mtu",
        addresses=client.address.fields("client.address"),
        server_address="server.address",
        shared_key="server.shared_key",
        dns=client.dns.fields("client.dns"),
    )
    return None if len(ctx.issues.errors) > errors_before else config


# -- writing -------------------------------------------------------------------------


def _pem(pem: bytes) -> tomlkit.items.String:
    """A PEM block as a multi-line literal string, starting on the line after ``'''``."""
    text = pem.decode("ascii")
    return tomlkit.items.String(
        tomlkit.items.StringType.MLL, text, "\n" + text, tomlkit.items.Trivia()
    )


def _one_or_list(items: tuple[object, ...]) -> str | list[str]:
    values = [str(v) for v in items]
    return values[0] if len(values) == 1 else values


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _shared_key_text(key: bytes | None, where: str) -> str | None:
    if not key:
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: the shared key is not text and cannot be written") from None


def _hooks_and_metrics(
    table: tomlkit.items.Table, hooks: Hooks, metrics: tuple[str, int] | None
) -> None:
    for key in ("pre_up", "post_up", "pre_down", "post_down"):
        commands: tuple[str, ...] = getattr(hooks, key)
        if commands:
            table.add(key, commands[0] if len(commands) == 1 else list(commands))
    if metrics is not None:
        table.add("metrics", _host_port(*metrics))


def _header(doc: tomlkit.TOMLDocument, header: str, name: str) -> None:
    for line in header.format(name=name).splitlines():
        doc.add(tomlkit.comment(line.removeprefix("#").removeprefix(" ")))
    doc.add(tomlkit.nl())


def _timers(doc: tomlkit.TOMLDocument, settings: SessionSettings) -> None:
    items = _timer_items(settings)
    if items:
        table = tomlkit.table()
        for key, value in items:
            table.add(key, value)
        doc.add("timers", table)


def render_peer(peer: PeerConfig, *, public_key_file: str | None = None) -> tomlkit.items.Table:
    """One ``[[peer]]`` table."""
    table = tomlkit.table()
    if peer.name is not None:
        table.add("name", peer.name)
    table.add("vaddr", peer.vaddr)
    if peer.addresses:
        table.add("address", _one_or_list(peer.addresses))
    if peer.routes:
        table.add("routes", [str(r) for r in peer.routes])
    table.add("version", int(peer.version))
    shared = _shared_key_text(peer.peer.shared_key, f"peer {peer.vaddr}")
    if shared is not None:
        table.add("shared_key", shared)
    if public_key_file is not None:
        table.add("public_key", public_key_file)
    else:
        table.add("public_key_pem", _pem(peer.public_key.to_pem()))
    return table


def render_server(
    config: ServerConfig,
    *,
    private_key_file: str | None = None,
    header: str | None = None,
) -> str:
    """A server file for ``config``. The private key is written inline unless
    ``private_key_file`` names the file it is in (relative to the config file)."""
    doc = tomlkit.document()
    name = config.source.name if config.source is not None else "server.toml"
    _header(doc, SERVER_HEADER if header is None else header, name)
    server = tomlkit.table()
    server.add("listen", _host_port(*config.listen))
    if config.endpoint is not None:
        server.add("endpoint", config.endpoint)
    server.add("address", _one_or_list(config.addresses))
    if private_key_file is not None:
        server.add("private_key", private_key_file)
    else:
        server.add("private_key_pem", _pem(config.private_key.to_pem()))
    server.add("version", int(config.default_version))
    if config.mtu is not None:
        server.add("mtu", config.mtu)
    if config.interface is not None:
        server.add("interface", config.interface)
    if config.control_socket is not None:
        server.add("control_socket", os.fspath(config.control_socket))
    if config.handshake_rate != DEFAULT_HANDSHAKE_RATE:
        rate = config.handshake_rate
        server.add("handshake_rate", False if rate is None else rate)
    if config.forward:
        server.add("forward", True)
    if config.masquerade is not None:
        default_route = config.masquerade == MASQUERADE_DEFAULT_ROUTE
        server.add("masquerade", True if default_route else config.masquerade)
    _hooks_and_metrics(server, config.hooks, config.metrics)
    doc.add("server", server)
    _timers(doc, config.settings)
    for peer in config.peers:
        add_peer(doc, render_peer(peer))
    return tomlkit.dumps(doc)


def render_client(
    config: ClientConfig,
    *,
    private_key_file: str | None = None,
    server_public_key_file: str | None = None,
    header: str | None = None,
) -> str:
    """A client file for ``config``; keys inline unless a file is named."""
    doc = tomlkit.document()
    name = config.source.name if config.source is not None else "client.toml"
    _header(doc, CLIENT_HEADER if header is None else header, name)
    client = tomlkit.table()
    client.add("vaddr", config.vaddr)
    client.add("address", _one_or_list(config.addresses))
    if config.full_tunnel:
        client.add("full_tunnel", True)
    if config.routes:
        client.add("routes", [str(r) for r in config.routes])
    if config.mtu is not None:
        client.add("mtu", config.mtu)
    if config.interface is not None:
        client.add("interface", config.interface)
    if config.control_socket is not None:
        client.add("control_socket", os.fspath(config.control_socket))
    if config.dns:
        client.add("dns", [str(a) for a in config.dns])
    if config.dns_search:
        client.add("dns_search", list(config.dns_search))
    _hooks_and_metrics(client, config.hooks, config.metrics)
    if private_key_file is not None:
        client.add("private_key", private_key_file)
    else:
        client.add("private_key_pem", _pem(config.private_key.to_pem()))
    doc.add("client", client)
    server = tomlkit.table()
    server.add("endpoint", config.endpoint)
    if config.server_address is not None:
        server.add("address", str(config.server_address))
    server.add("version", int(config.server.version))
    shared = _shared_key_text(config.server.shared_key, "server")
    if shared is not None:
        server.add("shared_key", shared)
    if server_public_key_file is not None:
        server.add("public_key", server_public_key_file)
    else:
        server.add("public_key_pem", _pem(config.server.public_key.to_pem()))
    doc.add("server", server)
    _timers(doc, config.settings)
    return tomlkit.dumps(doc)


# -- editing a server file -------------------------------------------------------------
#
# In a tomlkit document the comments and blank lines above a table's header are the
# tail of the table before it. When a [[peer]] is added after the last one, or
# removed, that tail moves with the header it introduces, so that every comment
# outside the removed table stays where it was.


_Trivia = tomlkit.items.Comment | tomlkit.items.Whitespace


def _pop_tail(table: tomlkit.items.Table) -> list[_Trivia]:
    """Remove and return the comments and blank lines that end ``table``."""
    body = table.value.body
    tail: list[_Trivia] = []
    while body and body[-1][0] is None and isinstance(body[-1][1], _Trivia):
        item = body.pop()[1]
        assert isinstance(item, _Trivia)
        tail.insert(0, item)
    return tail


def document_to_edit(text: str) -> tomlkit.TOMLDocument:
    """``text`` as a tomlkit document, refused if tomlkit would not write it back as it is."""
    doc = tomlkit.parse(text)
    if tomlkit.dumps(doc) != text:
        # tomlkit gathers [[peer]] tables split by another table, moving that table.
        raise ConfigError(
            "cannot be edited without moving its tables (are the [[peer]] tables split "
            "by another table?): put them one after the other"
        )
    return doc


def _peer_tables(doc: tomlkit.TOMLDocument) -> tomlkit.items.AoT | None:
    peers = doc.get("peer")
    if peers is None:
        return None
    if not isinstance(peers, tomlkit.items.AoT):
        raise ConfigError("peer: only [[peer]] tables can be edited, not an inline array")
    return peers


def _neighbours(
    doc: tomlkit.TOMLDocument, key: str
) -> tuple[tomlkit.items.Table | None, tomlkit.items.Table | None]:
    """The tables right before and right after the top-level item ``key``."""
    before: tomlkit.items.Table | None = None
    found = False
    for name, item in doc.body:
        if found:
            if isinstance(item, tomlkit.items.AoT) and item.body:
                return before, item.body[0]
            return before, item if isinstance(item, tomlkit.items.Table) else None
        if name is not None and name.key == key:
            found = True
        elif isinstance(item, tomlkit.items.Table):
            before = item
        elif isinstance(item, tomlkit.items.AoT) and item.body:
            before = item.body[-1]
        elif name is not None or not isinstance(item, _Trivia):
            before = None
    return before, None


def add_peer(doc: tomlkit.TOMLDocument, table: tomlkit.items.Table) -> None:
    """Append ``table`` as the last ``[[peer]]`` of ``doc``."""
    peers = _peer_tables(doc)
    if peers is None:
        peers = tomlkit.aot()
        peers.append(table)
        doc.add("peer", peers)
        return
    if peers.body:
        last = peers.body[-1]
        for item in _pop_tail(last):  # what introduces the next table follows the new one
            table.add(item)
        last.add(tomlkit.nl())
    peers.append(table)


def peer_index(doc: tomlkit.TOMLDocument, vaddr: int) -> int | None:
    """The index of the ``[[peer]]`` with this virtual address."""
    peers = _peer_tables(doc)
    for index, table in enumerate(peers or ()):
        if table.get("vaddr") == vaddr:
            return index
    return None


def remove_peer(doc: tomlkit.TOMLDocument, index: int) -> None:
    """Remove the ``index``-th ``[[peer]]``, keeping the comments around it."""
    peers = _peer_tables(doc)
    assert peers is not None
    outer_before, outer_after = _neighbours(doc, "peer")
    before = peers.body[index - 1] if index > 0 else outer_before
    after = peers.body[index + 1] if index + 1 < len(peers.body) else outer_after
    tail = _pop_tail(peers.body[index])
    if len(peers.body) > 1:
        del peers[index]
    else:
        del doc["peer"]
    if before is not None:
        body = before.value.body
        if body and isinstance(body[-1][1], tomlkit.items.Whitespace):
            while tail and isinstance(tail[0], tomlkit.items.Whitespace):
                del tail[0]  # one blank line between tables is enough
        for item in tail:
            before.add(item)
    elif after is not None:
        after.trivia.indent = "".join(i.as_string() for i in tail) + after.trivia.indent
