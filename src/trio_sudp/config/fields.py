"""Typed access to the tables of a parsed config file, recording every problem.

A :class:`Table` wraps one mapping (a TOML table or a JSON object) with the dotted
path it has in the file (``"peer[2]"``, ``"sudp.local"``). Its getters return the
value, or ``None`` when the key is missing or its value is wrong; a wrong value
(or a missing required key) is recorded in the shared :class:`~.errors.Issues`
with the full field name, so that parsing goes on and finds every problem.
Converters (``parse_*``) raise :class:`~trio_sudp.ConfigError` with a message that
does not repeat the field name.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from ..protocol.constants import MAX_CLIENT_VADDR
from ..protocol.errors import ConfigError
from ..runtime.udp import parse_host_port
from .errors import Issue, Issues
from .model import IPAddress, IPInterface, IPNetwork

__all__ = [
    "Table",
    "parse_address",
    "parse_client_vaddr",
    "parse_endpoint",
    "parse_interface",
    "parse_listen",
    "parse_network",
    "parse_prefix",
]

T = TypeVar("T")
V = TypeVar("V")

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)"
    r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$"
)


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    if value is None:
        return "null"
    return type(value).__name__


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- converters --------------------------------------------------------------------


def parse_interface(text: str) -> IPInterface:
    """A tunnel address with its network: ``10.0.0.1/24``, ``fd00::1/64``."""
    try:
        interface = ipaddress.ip_interface(text)
    except ValueError:
        raise ConfigError(
            f"{_show(text)} is not an address with a prefix length like 10.0.0.1/24"
        ) from None
    net = interface.network
    if net.num_addresses > 2 and interface.ip in (net.network_address, net.broadcast_address):
        what = "network" if interface.ip == net.network_address else "broadcast"
        raise ConfigError(
            f"{text} is the {what} address of {net}, not a host address in it "
            f"(like {net.network_address + 1}/{net.prefixlen})"
        )
    return interface


def parse_address(text: str) -> IPAddress:
    """One host address: ``10.0.0.2`` (``10.0.0.2/32`` is accepted too)."""
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=True)
            if net.num_addresses != 1:
                raise ValueError
            return net.network_address
        return ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"{_show(text)} is not an IP address like 10.0.0.2") from None


def parse_network(text: str) -> IPNetwork:
    """A prefix: ``192.168.7.0/24``; host bits must be zero."""
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(f"{_show(text)} is not a prefix like 192.168.7.0/24") from None
    raise ConfigError(f"{text} has host bits set; did you mean {loose}?")


def parse_prefix(text: str) -> IPNetwork:
    """A route: a prefix, or a single address (a host route)."""
    if "/" not in text:
        return ipaddress.ip_network(parse_address(text))
    return parse_network(text)


def parse_listen(text: str) -> tuple[str, int]:
    """``ip:port`` or ``[ipv6]:port`` to listen on; the IP must be numeric."""
    try:
        host, port = parse_host_port(text)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not host:
        raise ConfigError(f"{_show(text)} has no address; use 0.0.0.0:{port} for all of them")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{host!r} is not a numeric IP address (to listen on)") from None
    if port == 0:
        raise ConfigError("port 0 is not a port clients can reach")
    return host, port


def parse_endpoint(text: str) -> str:
    """``host:port`` or ``[ipv6]:port`` of a server; the host may be a DNS name."""
    try:
        host, port = parse_host_port(text)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if port == 0:
        raise ConfigError("port 0 is not a port a server listens on")
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        if not _HOSTNAME.match(host):
            raise ConfigError(f"{host!r} is neither an IP address nor a host name") from None
    return text


def parse_client_vaddr(value: int) -> int:
    if not 1 <= value <= MAX_CLIENT_VADDR:
        raise ConfigError(
            f"a client's virtual address is 1..{MAX_CLIENT_VADDR} (0 is the server), not {value}"
        )
    return value


# -- tables ------------------------------------------------------------------------


class Table:
    """One table of the file, with its dotted path and the shared problem list."""

    def __init__(
        self,
        data: Mapping[str, object],
        path: str,
        issues: Issues,
        *,
        strict: bool = True,
    ) -> None:
        self.data = data
        self.path = path
        self.issues = issues
        #: Unknown keys are errors (TOML) or warnings (tunelo's JSON: Go ignores them).
        self.strict = strict
        self._used: set[str] = set()
        #: Required keys reported missing: a typo of one of them replaces that report.
        self._missing: dict[str, Issue] = {}

    @classmethod
    def wrap(cls, value: object, path: str, issues: Issues, *, strict: bool = True) -> Table | None:
        """A table for ``value`` if it is one; otherwise record the problem."""
        if isinstance(value, dict):
            return cls(value, path, issues, strict=strict)
        issues.error(path or None, f"must be a table, not {_type_name(value)}")
        return None

    def field(self, key: str) -> str:
        if not key.isidentifier():
            quoted = json.dumps(key if len(key) <= 40 else key[:37] + "...")
            return f"{self.path}[{quoted}]" if self.path else f"[{quoted}]"
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str | None, message: str) -> None:
        self.issues.error(self.field(key) if key else (self.path or None), message)

    def warn(self, key: str | None, message: str) -> None:
        self.issues.warn(self.field(key) if key else (self.path or None), message)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, *, required: bool = False) -> object | None:
        """The value of ``key`` as it is (``None`` if missing)."""
        self._used.add(key)
        if key in self.data:
            return self.data[key]
        if required:
            self.missing(key, "missing (required)")
        return None

    def missing(self, key: str, message: str) -> None:
        """Report a required key as missing (see :meth:`finish`)."""
        self.error(key, message)
        self._missing[key] = self.issues.errors[-1]

    def _typed(
        self, key: str, check: Callable[[object], bool], want: str, required: bool
    ) -> object | None:
        value = self.raw(key, required=required)
        if value is None:
            return None
        if not check(value):
            self.error(key, f"must be {want}, not {_type_name(value)} {_show(value)}")
            return None
        return value

    def string(self, key: str, *, required: bool = False, empty: bool = False) -> str | None:
        value = self._typed(key, lambda v: isinstance(v, str), "text", required)
        if value is None:
            return None
        assert isinstance(value, str)
        if not empty and not value.strip():
            self.error(key, "must not be empty")
            return None
        if "\0" in value:
            self.error(key, "must not contain NUL characters")
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            self.error(key, "must be valid Unicode text (it has a lone surrogate)")
            return None
        return value

    def integer(self, key: str, *, required: bool = False) -> int | None:
        value = self._typed(
            key, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer", required
        )
        return value if isinstance(value, int) else None

    def number(self, key: str, *, required: bool = False) -> float | None:
        value = self._typed(
            key,
            lambda v: isinstance(v, int | float) and not isinstance(v, bool),
            "a number",
            required,
        )
        if value is None:
            return None
        assert isinstance(value, int | float)
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            self.error(key, f"must be a finite number, not {_show(value)}")
            return None
        return number

    def boolean(self, key: str, *, required: bool = False) -> bool | None:
        value = self._typed(key, lambda v: isinstance(v, bool), "true or false", required)
        return value if isinstance(value, bool) else None

    def strings(self, key: str, *, required: bool = False) -> list[str] | None:
        """A string or a list of strings, as a list."""
        value = self.raw(key, required=required)
        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            self.error(key, f"must be text or a list of text, not {_show(value)}")
            return None
        return list(items)

    def table(self, key: str, *, required: bool = False) -> Table | None:
        value = self.raw(key, required=required)
        if value is None:
            return None
        return Table.wrap(value, self.field(key), self.issues, strict=self.strict)

    def tables(self, key: str) -> list[Table]:
        """An array of tables (``[[peer]]``); each bad element is recorded and skipped."""
        value = self.raw(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(key, f"must be a list of tables, not {_type_name(value)}")
            return []
        out: list[Table] = []
        for index, item in enumerate(value):
            table = Table.wrap(item, f"{self.field(key)}[{index}]", self.issues, strict=self.strict)
            if table is not None:
                out.append(table)
        return out

    def convert(self, key: str, value: V | None, converter: Callable[[V], T]) -> T | None:
        """Apply ``converter`` to a value already read, recording a ``ConfigError``."""
        if value is None:
            return None
        try:
            return converter(value)
        except (ConfigError, ValueError) as exc:
            self.error(key, str(exc))
            return None

    def convert_all(
        self, key: str, values: Sequence[str] | None, converter: Callable[[str], T]
    ) -> list[T] | None:
        """Apply ``converter`` to each item; the first failure is recorded with its index."""
        if values is None:
            return None
        out: list[T] = []
        for index, value in enumerate(values):
            try:
                out.append(converter(value))
            except (ConfigError, ValueError) as exc:
                if isinstance(self.data.get(key), list):
                    self.issues.error(f"{self.field(key)}[{index}]", str(exc))
                else:
                    self.error(key, str(exc))
                return None
        return out

    def finish(self, *, ignore: Iterable[str] = ()) -> None:
        """Report every key nobody read: a typo, or a key of another section."""
        known = self._used | set(ignore)
        for key in self.data:
            if key in known:
                continue
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            if close and close[0] in self._missing:
                # "x: missing" and "y: unknown key; did you mean x?" are one mistake.
                issue = self._missing.pop(close[0])
                if issue in self.issues.errors:
                    self.issues.errors.remove(issue)
            if self.strict:
                self.error(key, f"unknown key{hint}")
            else:
                self.warn(key, f"unknown key, ignored{hint}")
