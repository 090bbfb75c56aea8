"""Configuration: trio-sudp's TOML files and tunelo's JSON files, keys, and editing.

::

    from trio_sudp.config import load_config, ServerConfig

    config = load_config("/etc/trio-sudp/server.toml")   # or tunelo's server.json
    assert isinstance(config, ServerConfig)

See ``docs/configuration.md`` for the file formats.
"""

from __future__ import annotations

from .edit import (
    AddClientResult,
    InitServerResult,
    RemoveClientResult,
    add_client,
    init_server,
    remove_client,
)
from .load import (
    ConfigReport,
    check_config,
    inspect_config,
    load_client_config,
    load_config,
    load_server_config,
    parse_config,
)
from .model import (
    MASQUERADE_DEFAULT_ROUTE,
    ClientConfig,
    ConfigFormat,
    Hooks,
    PeerConfig,
    ServerConfig,
)
from .schema import ConfigFileError, Issue
from .storage import (
    generate_shared_key,
    read_private_key,
    read_public_key,
    write_private_key,
    write_public_key,
)

__all__ = [
    "MASQUERADE_DEFAULT_ROUTE",
    "AddClientResult",
    "ClientConfig",
    "ConfigFileError",
    "ConfigFormat",
    "ConfigReport",
    "Hooks",
    "InitServerResult",
    "Issue",
    "PeerConfig",
    "RemoveClientResult",
    "ServerConfig",
    "add_client",
    "check_config",
    "generate_shared_key",
    "init_server",
    "inspect_config",
    "load_client_config",
    "load_config",
    "load_server_config",
    "parse_config",
    "read_private_key",
    "read_public_key",
    "remove_client",
    "write_private_key",
    "write_public_key",
]
