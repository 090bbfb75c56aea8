"""The ``[timers]`` table: :class:`~trio_sudp.SessionSettings` fields by name.

Every field of ``SessionSettings`` is a key. Seconds are numbers; a setting that
can be switched off (``rekey_interval``, ``handshake_retries``, ...) takes
``false`` for "off" (TOML has no null); leave a key out for the default.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import attrs

from ..protocol.constants import Version
from ..protocol.errors import ConfigError
from ..protocol.settings import SessionSettings
from .fields import Table

__all__ = ["TIMER_KINDS", "TimerKind", "parse_timers", "timers_items"]

TimerKind = Literal["seconds", "optional_seconds", "bool", "count", "schedule"]

_KIND_OF_TYPE: Final[dict[str, TimerKind]] = {
    "float": "seconds",
    "float | None": "optional_seconds",
    "bool": "bool",
    "int": "count",
    "tuple[float, ...] | None": "schedule",
}


def _kinds() -> dict[str, TimerKind]:
    kinds: dict[str, TimerKind] = {}
    for field in attrs.fields(SessionSettings):
        type_name = field.type if isinstance(field.type, str) else repr(field.type)
        try:
            kinds[field.name] = _KIND_OF_TYPE[str(type_name)]
        except KeyError:  # pragma: no cover - caught by the test suite
            msg = f"SessionSettings.{field.name}: no [timers] mapping for {type_name}"
            raise TypeError(msg) from None
    return kinds


#: Each ``SessionSettings`` field and how it is written in ``[timers]``.
TIMER_KINDS: Final = _kinds()


def _read(table: Table, key: str, kind: TimerKind) -> tuple[bool, Any]:
    """``(present_and_valid, value)`` for one key."""
    raw = table.raw(key)
    if raw is None:
        return False, None
    if kind in ("optional_seconds", "schedule") and raw is False:
        return True, None
    if kind == "bool":
        value = table.boolean(key)
        return value is not None, value
    if kind == "count":
        value_i = table.integer(key)
        return value_i is not None, value_i
    if kind == "schedule":
        if not isinstance(raw, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in raw
        ):
            table.error(key, f"must be a list of seconds like [2, 4.5, 7] or false, not {raw!r}")
            return False, None
        return True, tuple(float(v) for v in raw)
    value_f = table.number(key)
    if value_f is None:
        if kind == "optional_seconds" and raw is True:
            table.issues.errors[-1].message += " (false switches it off)"
        return False, None
    return True, value_f


def parse_timers(table: Table | None) -> SessionSettings | None:
    """The settings of a ``[timers]`` table (defaults without one); ``None`` on errors."""
    if table is None:
        return SessionSettings()
    values: dict[str, Any] = {}
    ok = True
    for key, kind in TIMER_KINDS.items():
        present, value = _read(table, key, kind)
        if not present:
            ok = ok and key not in table
            continue
        try:
            SessionSettings(**{key: value})
        except ConfigError as exc:
            table.error(key, str(exc).removeprefix(f"{key} "))
            ok = False
            continue
        values[key] = value
    table.finish()
    if not ok:
        return None
    settings = SessionSettings(**values)
    for version in Version:
        try:
            settings.retry_schedule(version)
        except ConfigError as exc:
            table.error("handshake_timeout", str(exc))
            return None
    return settings


def timers_items(settings: SessionSettings) -> list[tuple[str, object]]:
    """The settings that differ from the defaults, as ``[timers]`` keys and values."""
    default = SessionSettings()
    items: list[tuple[str, object]] = []
    for key, kind in TIMER_KINDS.items():
        value = getattr(settings, key)
        if value == getattr(default, key):
            continue
        if value is None and kind in ("optional_seconds", "schedule"):
            value = False
        elif kind == "schedule":
            value = list(value)
        items.append((key, value))
    return items
