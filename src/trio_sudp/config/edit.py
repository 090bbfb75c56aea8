"""Creating and editing configurations: ``config init-server``, ``add-client`` and
``remove-client``.

Each validates everything first, including the files it is about to write
(parsed from memory exactly as :func:`~.load.load_config` will read them), then
writes every file to a temporary file and renames them into place at the end: on
any error nothing is written or half-changed. Edits of a server file go through
its parsed document (tomlkit for TOML, json for tunelo), so that its comments,
order and formatting survive. Concurrent edits of the same directory are
serialised with a lock.

add-client gives the new client the lowest free virtual address (1, 2, …, as
tunelo's tool does), the next free address of each tunnel network, a fresh
private key and, for v3, a 20-character shared key of letters and digits from
the OS CSPRNG (as tunelo). The client's private key is written into its config
file (mode 0600), so that one file is all the client needs.
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import attrs
import tomlkit

from ..protocol.constants import MAX_CLIENT_VADDR, SERVER_VADDR, Version
from ..protocol.crypto import PrivateKey
from ..protocol.errors import ConfigError
from ..protocol.peers import Peer
from . import toml, tunelo
from .load import inspect_config, parse_config
from .model import (
    MASQUERADE_DEFAULT_ROUTE,
    ClientConfig,
    ConfigFormat,
    IPAddress,
    IPInterface,
    IPNetwork,
    PeerConfig,
    ServerConfig,
    parse_address,
    parse_client_vaddr,
    parse_dns_server,
    parse_egress_interface,
    parse_endpoint,
    parse_interface,
    parse_listen,
    parse_prefix,
)
from .schema import ConfigFileError, Issues
from .storage import PRIVATE_KEY_MODE, StagedWrites, generate_shared_key, locked_directory

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_NETWORK",
    "AddClientResult",
    "InitServerResult",
    "RemoveClientResult",
    "add_client",
    "find_client",
    "init_server",
    "remove_client",
    "server_interface",
]

T = TypeVar("T")

DEFAULT_LISTEN = "0.0.0.0:7000"
#: tunelo's default tunnel network, the server taking the first address.
DEFAULT_NETWORK = "10.0.0.1/24"
#: Config files hold shared keys (and a client's private key): owner only.
CONFIG_MODE = 0o600


@attrs.frozen
class InitServerResult:
    config_path: Path
    #: The private key file, or ``None`` when the key is inline (tunelo format).
    key_path: Path | None
    config: ServerConfig


@attrs.frozen
class AddClientResult:
    server_path: Path
    client_path: Path
    #: The server configuration as now written (the new client included).
    server: ServerConfig
    client: ClientConfig
    #: The new client as the server knows it.
    peer: PeerConfig


def _version(value: int) -> Version:
    if value not in (2, 3):
        raise ConfigError(f"protocol version must be 2 or 3, not {value}")
    return Version(value)


def _format(value: str) -> ConfigFormat:
    if value == "toml":
        return "toml"
    if value == "tunelo":
        return "tunelo"
    raise ConfigError(f"format must be 'toml' or 'tunelo', not {value!r}")


def server_interface(text: str) -> IPInterface:
    """The server's tunnel address from ``10.0.0.1/24``; a bare network
    (``10.0.0.0/24``) gives the server its first address."""
    try:
        interface = ipaddress.ip_interface(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a network like 10.0.0.1/24") from None
    net = interface.network
    if interface.ip == net.network_address and net.num_addresses > 2:
        interface = ipaddress.ip_interface(f"{net.network_address + 1}/{net.prefixlen}")
    return parse_interface(str(interface))


def _validate(
    text: str,
    path: Path,
    *,
    file_mode: int,
    pending: dict[Path, tuple[bytes, int]] | None = None,
) -> ServerConfig | ClientConfig:
    """Parse a file about to be written exactly as it will be loaded."""
    issues = Issues(path)
    config = parse_config(text, path, issues=issues, file_mode=file_mode, pending=pending)
    issues.raise_first()
    assert config is not None
    return config


def _option(name: str, parse: Callable[[str], T], text: str) -> T:
    """``parse(text)``, its problem prefixed with the option's name."""
    try:
        return parse(text)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _absolute(path: str | os.PathLike[str] | None) -> Path | None:
    return None if path is None else Path(os.path.abspath(path))


def _key_reference(key_path: Path, config_path: Path) -> str:
    if os.path.abspath(key_path.parent) == os.path.abspath(config_path.parent):
        return key_path.name
    return os.path.abspath(key_path)


def init_server(
    config_path: str | os.PathLike[str],
    *,
    listen: str = DEFAULT_LISTEN,
    networks: Sequence[str] = (DEFAULT_NETWORK,),
    endpoint: str | None = None,
    format: str = "toml",
    version: int = 3,
    key_path: str | os.PathLike[str] | None = None,
    mtu: int | None = None,
    interface: str | None = None,
    control_socket: str | os.PathLike[str] | None = None,
    masquerade: str | None = None,
    force: bool = False,
) -> InitServerResult:
    """Create a server: a fresh private key and a configuration without clients.

    ``format="toml"`` writes the key to ``key_path`` (default: the config's name
    with ``.key``, next to it; mode 0600) and the config referring to it.
    ``format="tunelo"`` writes tunelo's server.json with the key inline (as
    tunelo's tool does) unless ``key_path`` is given; it needs ``endpoint`` (the
    public ``ip:port`` tunelo hands to clients) and SUDP v3. A relative
    ``control_socket`` is made absolute (from the current directory). ``masquerade``
    (an interface name, or :data:`~.model.MASQUERADE_DEFAULT_ROUTE`) makes the
    server forward and NAT its clients' traffic. Existing files are
    only replaced with ``force``. Raises ``ConfigError`` and writes nothing on
    any problem.
    """
    path = Path(config_path)
    fmt = _format(format)
    listen_addr = parse_listen(listen)
    if endpoint is not None:
        parse_endpoint(endpoint)
    default_version = _version(version)
    interfaces = tuple(server_interface(n) for n in networks)
    if not interfaces:
        raise ConfigError("the server needs a tunnel network, like 10.0.0.1/24")
    if fmt == "tunelo":
        if default_version != Version.V3:
            raise ConfigError("tunelo speaks only SUDP v3 (use --format toml for v2)")
        if endpoint is None:
            raise ConfigError(
                "tunelo's server.json needs the public address clients connect to: "
                "give --endpoint IP:PORT"
            )
    key_file = Path(key_path) if key_path is not None else None
    if key_file is None and fmt == "toml":
        key_file = path.with_name(path.stem + ".key")
    if key_file is not None and os.path.abspath(key_file) == os.path.abspath(path):
        raise ConfigError(f"{path}: the key file and the config file must differ")
    for target in (path, key_file):
        if target is not None and not force and os.path.lexists(target):
            raise ConfigError(f"{target}: already exists (use --force to replace it)")

    if masquerade is not None and masquerade != MASQUERADE_DEFAULT_ROUTE:
        _option("--masquerade", parse_egress_interface, masquerade)

    key = PrivateKey.generate()
    config = ServerConfig(
        source=path,
        format=fmt,
        listen=listen_addr,
        private_key=key,
        addresses=interfaces,
        mtu=mtu,
        interface=interface,
        control_socket=_absolute(control_socket),
        endpoint=endpoint,
        default_version=default_version,
        forward=masquerade is not None,
        masquerade=masquerade,
    )
    if fmt == "toml":
        reference = _key_reference(key_file, path) if key_file is not None else None
        text = toml.render_server(config, private_key_file=reference)
    else:
        doc = tunelo.server_document(config)
        if key_file is not None:
            doc["sudp"]["local"]["key_type"] = "file"
            doc["sudp"]["local"]["private_key"] = os.path.abspath(key_file)
        text = tunelo.render_document(doc)

    pem = key.to_pem()
    pending = {key_file: (pem, PRIVATE_KEY_MODE)} if key_file is not None else None
    loaded = _validate(text, path, file_mode=CONFIG_MODE, pending=pending)
    assert isinstance(loaded, ServerConfig)
    with StagedWrites() as staged:
        if key_file is not None:
            staged.add(key_file, pem, mode=PRIVATE_KEY_MODE, overwrite=force)
        staged.add(path, text.encode(), mode=CONFIG_MODE, overwrite=force)
    return InitServerResult(path, key_file, loaded)


# -- add-client --------------------------------------------------------------------


def _claims(server: ServerConfig) -> list[IPNetwork]:
    claims: list[IPNetwork] = [ipaddress.ip_network(a.ip) for a in server.addresses]
    for peer in server.peers:
        claims.extend(peer.prefixes)
    return claims


def _host_range(net: IPNetwork) -> tuple[int, int]:
    first, last = int(net.network_address), int(net.broadcast_address)
    return (first + 1, last - 1) if net.num_addresses > 2 else (first, last)


def _next_free(net: IPNetwork, claims: Sequence[IPNetwork]) -> IPAddress:
    """The lowest address of ``net`` no claim covers."""
    same = [c for c in claims if c.version == net.version]
    candidate, last = _host_range(net)
    while candidate <= last:
        hit = next(
            (c for c in same if int(c.network_address) <= candidate <= int(c.broadcast_address)),
            None,
        )
        if hit is None:
            return (
                ipaddress.ip_address(candidate)
                if net.version == 4
                else ipaddress.IPv6Address(candidate)
            )
        candidate = int(hit.broadcast_address) + 1
    raise ConfigError(f"no free address left in the tunnel network {net}")


def _pick_addresses(
    server: ServerConfig, requested: Sequence[str]
) -> tuple[list[IPAddress], list[IPInterface]]:
    """The client's address in each tunnel network: requested, or the next free one."""
    claims = _claims(server)
    wanted: dict[int, IPAddress] = {}
    for text in requested:
        address = parse_address(text)
        if address.version in wanted:
            raise ConfigError(f"--address: two IPv{address.version} addresses given")
        wanted[address.version] = address
    addresses: list[IPAddress] = []
    interfaces: list[IPInterface] = []
    for iface in server.addresses:
        net = iface.network
        if iface.version in wanted:
            address = wanted.pop(iface.version)
            first, last = _host_range(net)
            if address not in net or not first <= int(address) <= last:
                raise ConfigError(f"--address: {address} is not a host address of {net}")
            taken = next((c for c in claims if address in c), None)
            if taken is not None:
                owner = "the server" if address == iface.ip else "another client"
                raise ConfigError(f"--address: {address} is already used by {owner} ({taken})")
        else:
            address = _next_free(net, claims)
        claims.append(ipaddress.ip_network(address))
        addresses.append(address)
        interfaces.append(ipaddress.ip_interface(f"{address}/{net.prefixlen}"))
    if wanted:
        version = next(iter(wanted))
        raise ConfigError(f"--address: the server has no IPv{version} tunnel network")
    return addresses, interfaces


def _pick_vaddr(server: ServerConfig, requested: int | None) -> int:
    used = {p.vaddr for p in server.peers}
    if requested is not None:
        parse_client_vaddr(requested)
        if requested in used:
            raise ConfigError(f"--vaddr: virtual address {requested} is already used")
        return requested
    for vaddr in range(1, MAX_CLIENT_VADDR + 1):
        if vaddr not in used:
            return vaddr
    raise ConfigError("no free virtual address left (1..65534 are all used)")  # pragma: no cover


def _client_endpoint(server: ServerConfig, endpoint: str | None) -> str:
    endpoint = endpoint or server.endpoint
    if endpoint is None:
        raise ConfigError(
            "the server configuration has no endpoint: give --endpoint HOST:PORT "
            "(the address clients connect to)"
        )
    parse_endpoint(endpoint)
    host = endpoint.rpartition(":")[0].strip("[]")
    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        unspecified = False
    if unspecified:
        raise ConfigError(
            f"{endpoint} is not an address clients can reach: give --endpoint HOST:PORT"
        )
    return endpoint


def _edit_server(
    server: ServerConfig, raw: bytes, *, add: PeerConfig | None = None, remove: int | None = None
) -> str:
    """The server file with a peer added or removed, everything else kept as it was."""
    text = raw.decode("utf-8").removeprefix("\ufeff")
    if server.format == "toml":
        try:
            doc = toml.document_to_edit(text)
            if add is not None:
                toml.add_peer(doc, toml.render_peer(add))
            if remove is not None:
                index = toml.peer_index(doc, remove)
                assert index is not None
                toml.remove_peer(doc, index)
        except ConfigError as exc:
            raise ConfigError(f"{server.source}: {exc}") from None
        return tomlkit.dumps(doc)
    parsed = json.loads(text)
    if add is not None:
        tunelo.add_peer(parsed, add)
    if remove is not None:
        tunelo.remove_peer(parsed, remove)
    return tunelo.render_document(parsed)


def _read_server(server_path: Path) -> tuple[ServerConfig, bytes, int]:
    """The server configuration (refused if it has a problem), its bytes and its mode."""
    report = inspect_config(server_path)
    if report.errors:
        raise ConfigFileError.from_issue(report.errors[0])
    server = report.config
    if not isinstance(server, ServerConfig):
        raise ConfigFileError(server_path, None, "this is a client configuration")
    try:
        raw = server_path.read_bytes()
        mode = stat.S_IMODE(os.stat(server_path).st_mode)
    except OSError as exc:
        raise ConfigFileError(server_path, None, f"cannot read ({exc.strerror})") from None
    return server, raw, mode


def add_client(
    server_config: str | os.PathLike[str],
    client_config: str | os.PathLike[str],
    *,
    name: str | None = None,
    endpoint: str | None = None,
    format: str | None = None,
    version: int | None = None,
    vaddr: int | None = None,
    addresses: Sequence[str] = (),
    routes: Sequence[str] = (),
    full_tunnel: bool = False,
    dns: Sequence[str] = (),
    control_socket: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> AddClientResult:
    """Add a client to a server configuration and write the client's configuration.

    ``format`` of the client file defaults to the server's; ``version`` to the
    server's default version. ``endpoint`` (``host:port`` the client connects to)
    defaults to the server config's. ``addresses`` picks the client's tunnel
    address (per family) instead of the next free one; ``routes`` are prefixes
    behind the client; ``dns`` (resolver addresses) and ``control_socket`` go into
    the client's file. The client
    file is only replaced with ``force``. Raises
    ``ConfigError`` (or ``ConfigFileError`` for a broken server file) and changes
    nothing on any problem.
    """
    server_path = Path(server_config)
    client_path = Path(client_config)
    if os.path.abspath(server_path) == os.path.abspath(client_path):
        raise ConfigError(f"{client_path}: the client's file must not be the server's")
    if not force and os.path.lexists(client_path):
        raise ConfigError(f"{client_path}: already exists (use --force to replace it)")
    with locked_directory(server_path.parent):
        server, raw, server_mode = _read_server(server_path)
        client_format = _format(format) if format is not None else server.format
        peer_version = server.default_version if version is None else _version(version)
        if peer_version != Version.V3 and "tunelo" in (server.format, client_format):
            raise ConfigError("tunelo speaks only SUDP v3 (use --format toml and a TOML server)")
        if server.format == "tunelo":
            if name is not None:
                raise ConfigError("tunelo's server.json cannot hold client names: omit --name")
            if routes:
                raise ConfigError("tunelo's server.json cannot hold routes: omit --route")
        if name is not None:
            if not (name.strip() and name.isprintable()):
                raise ConfigError(f"--name: {name!r} is not a printable name")
            other = next((p for p in server.peers if p.name == name), None)
            if other is not None:
                raise ConfigError(f"--name: {name!r} is already used by {other.label}")
        new_vaddr = _pick_vaddr(server, vaddr)
        client_addresses, client_interfaces = _pick_addresses(server, addresses)
        peer_routes = tuple(parse_prefix(r) for r in routes)
        resolvers = tuple(_option("--dns", parse_dns_server, text) for text in dns)
        client_endpoint = _client_endpoint(server, endpoint)

        key = PrivateKey.generate()
        shared = generate_shared_key().encode() if peer_version == Version.V3 else None
        peer = PeerConfig(
            peer=Peer(new_vaddr, key.public_key, peer_version, shared),
            name=name,
            addresses=tuple(client_addresses),
            routes=peer_routes,
        )
        first = client_interfaces[0]
        server_ip = next(a.ip for a in server.addresses if a.version == first.version)
        client = ClientConfig(
            source=client_path,
            format=client_format,
            private_key=key,
            vaddr=new_vaddr,
            addresses=tuple(client_interfaces),
            endpoint=client_endpoint,
            server=Peer(SERVER_VADDR, server.public_key, peer_version, shared),
            server_address=server_ip,
            mtu=server.mtu,
            control_socket=_absolute(control_socket),
            full_tunnel=full_tunnel,
            dns=resolvers,
        )
        if client_format == "toml":
            client_text = toml.render_client(client)
        else:
            client_text = tunelo.render_client(client)
        server_text = _edit_server(server, raw, add=peer)

        new_server = _validate(server_text, server_path, file_mode=server_mode)
        new_client = _validate(client_text, client_path, file_mode=CONFIG_MODE)
        assert isinstance(new_server, ServerConfig) and isinstance(new_client, ClientConfig)
        added = new_server.peer(new_vaddr)
        if added is None or added.public_key != key.public_key or added.peer != peer.peer:
            msg = f"{server_path}: the new client did not read back"  # pragma: no cover
            raise ConfigError(msg)  # pragma: no cover
        with StagedWrites() as staged:
            staged.add(client_path, client_text.encode(), mode=CONFIG_MODE, overwrite=force)
            staged.add(server_path, server_text.encode(), mode=None, overwrite=True)
    return AddClientResult(server_path, client_path, new_server, new_client, added)


# -- remove-client -----------------------------------------------------------------


@attrs.frozen
class RemoveClientResult:
    server_path: Path
    #: The server configuration as now written (without the client).
    server: ServerConfig
    #: The client that was removed.
    peer: PeerConfig


def find_client(server: ServerConfig, client: str) -> PeerConfig:
    """The client named ``client``, or with virtual address ``client``."""
    by_name = next((p for p in server.peers if p.name == client), None)
    if by_name is not None:
        return by_name
    if client.isdigit():
        by_vaddr = server.peer(int(client))
        if by_vaddr is not None:
            return by_vaddr
    source = server.source or "the server configuration"
    what = f"virtual address {client}" if client.isdigit() else f"name {client!r}"
    raise ConfigError(f"{source}: no client has {what} (see: trio-sudp config list -c {source})")


def remove_client(server_config: str | os.PathLike[str], client: str) -> RemoveClientResult:
    """Remove a client (by name or virtual address) from a server configuration.

    The peer's table (and, in tunelo's format, its ``mappings`` entries) goes;
    everything else in the file, comments included, stays. The file is replaced
    atomically; a running server applies it on ``trio-sudp reload``. Raises
    ``ConfigError`` and changes nothing on any problem.
    """
    server_path = Path(server_config)
    with locked_directory(server_path.parent):
        server, raw, server_mode = _read_server(server_path)
        peer = find_client(server, client)
        server_text = _edit_server(server, raw, remove=peer.vaddr)
        new_server = _validate(server_text, server_path, file_mode=server_mode)
        assert isinstance(new_server, ServerConfig)
        if new_server.peers != tuple(p for p in server.peers if p.vaddr != peer.vaddr):
            msg = f"{server_path}: the edited file did not read back"  # pragma: no cover
            raise ConfigError(msg)  # pragma: no cover
        with StagedWrites() as staged:
            staged.add(server_path, server_text.encode(), mode=None, overwrite=True)
    return RemoveClientResult(server_path, new_server, peer)
