"""Checking a parsed document: typed tables structured by cattrs, one problem per line.

A file format declares each of its tables as a frozen attrs class: the fields are
the keys, and each field's type is ``Annotated[T, marker]`` where the marker (a
:class:`Value`) checks one raw value and turns it into ``T``. A field of an attrs
class type is a nested table, ``tuple[Table, ...]`` an array of tables. A table
class may define ``prepare(raw) -> raw`` to settle keys that depend on each other
(two ways of giving one key, say) before its fields are structured, and
``check(table)`` for a rule across its keys once they are all valid (raising
:class:`ItemErrors` at the keys to blame).

:func:`structure` runs cattrs with detailed validation over the whole document and
turns its exception tree into one :class:`Issue` per problem, each naming its
field (``peer[2].public_key``, ``mappings["10.0.0.2"]``): table by table, a
table's own keys in schema order, then its unknown keys, then its nested tables.
Unknown keys are errors, or warnings when the context says so (tunelo's JSON: Go
ignores them), with a "did you mean" hint; a required key reported missing is not
reported again when an unknown key is a typo of it.

Parsers do not stop at the first problem: they record every problem in an
:class:`Issues` collector (for ``trio-sudp check``), and
:func:`~.load.load_config` raises the first one as a :class:`ConfigFileError`.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import difflib
import functools
import json
import math
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar, get_args, get_origin

import attrs
import cattrs
import cattrs.gen
from cattrs.errors import ClassValidationError, IterableValidationError

from ..protocol.crypto import PrivateKey, PublicKey
from ..protocol.errors import ConfigError
from .storage import check_private_mode, read_private_key, read_public_key

__all__ = [
    "ConfigFileError",
    "Flag",
    "Integer",
    "Issue",
    "Issues",
    "ItemErrors",
    "Listed",
    "MissingKey",
    "Number",
    "ParseContext",
    "Refused",
    "Text",
    "Texts",
    "Value",
    "child",
    "flag_value",
    "integer_value",
    "number_value",
    "one_line",
    "show",
    "structure",
    "text_value",
    "type_name",
]

T = TypeVar("T")

_INLINE = "<key>"


# -- problems ----------------------------------------------------------------------


def one_line(text: str) -> str:
    """Collapse ``text`` to a single line (error messages must never span lines)."""
    return " ".join(text.split())


class Issue:
    """One problem (or warning) found in a configuration file."""

    __slots__ = ("field", "file", "message")

    def __init__(self, file: str, field: str | None, message: str) -> None:
        self.file = file
        self.field = field or None
        self.message = one_line(message)

    def __str__(self) -> str:
        if self.field:
            return f"{self.file}: {self.field}: {self.message}"
        return f"{self.file}: {self.message}"

    def __repr__(self) -> str:
        return f"Issue({str(self)!r})"


class ConfigFileError(ConfigError):
    """A configuration file (or a key file it names) is unusable.

    ``str(error)`` is one line: ``"server.toml: peer[2].public_key: not a PEM ..."``.
    ``file`` and ``field`` (``None`` when the whole file is at fault) say where.
    """

    def __init__(self, file: str | os.PathLike[str], field: str | None, message: str) -> None:
        self.issue = Issue(os.fspath(file), field, message)
        self.file = self.issue.file
        self.field = self.issue.field
        self.message = self.issue.message
        super().__init__(str(self.issue))

    @classmethod
    def from_issue(cls, issue: Issue) -> ConfigFileError:
        return cls(issue.file, issue.field, issue.message)


class Issues:
    """Collects the problems and warnings of one configuration file."""

    def __init__(self, file: str | os.PathLike[str]) -> None:
        self.file = os.fspath(file)
        self.errors: list[Issue] = []
        self.warnings: list[Issue] = []

    def error(self, field: str | None, message: str) -> None:
        self.errors.append(Issue(self.file, field, message))

    def warn(self, field: str | None, message: str) -> None:
        self.warnings.append(Issue(self.file, field, message))

    def __bool__(self) -> bool:
        """True when there is at least one error (warnings do not count)."""
        return bool(self.errors)

    def raise_first(self) -> None:
        """Raise the first error as a :class:`ConfigFileError`, if there is one."""
        if self.errors:
            raise ConfigFileError.from_issue(self.errors[0])


# -- values --------------------------------------------------------------------------


def type_name(value: object) -> str:
    """``"an integer"``, ``"text"``, ``"a table"``...: what a raw value is, for messages."""
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


def show(value: object) -> str:
    """A value for a message: its repr, shortened."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def child(path: str, key: str | int) -> str:
    """The field path of ``key`` inside ``path``: ``peer[2].vaddr``, ``mappings["10.0.0.2"]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not key.isidentifier():
        quoted = json.dumps(key if len(key) <= 40 else key[:37] + "...")
        return f"{path}[{quoted}]"
    return f"{path}.{key}" if path else key


class MissingKey(ConfigError):
    """A required key is absent (an unknown key that is a typo of it replaces the report)."""


class ItemErrors(ConfigError):
    """Problems inside one value, each at an index (a list) or a key (a mapping)."""

    def __init__(self, items: list[tuple[int | str, Exception]]) -> None:
        super().__init__("; ".join(str(e) for _, e in items))
        self.items = items


@attrs.frozen
class Refused:
    """What a table's ``prepare`` puts in place of a key that must be refused as it is."""

    message: str
    missing: bool = False


# -- markers -------------------------------------------------------------------------


def text_value(value: object, *, empty: bool = False) -> str:
    """``value`` if it is usable text; else ``ConfigError`` saying what is wrong."""
    if not isinstance(value, str):
        raise ConfigError(f"must be text, not {type_name(value)} {show(value)}")
    if not empty and not value.strip():
        raise ConfigError("must not be empty")
    if "\0" in value:
        raise ConfigError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError("must be valid Unicode text (it has a lone surrogate)") from None
    return value


def integer_value(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"must be an integer, not {type_name(value)} {show(value)}")
    return value


def number_value(value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(f"must be a number, not {type_name(value)} {show(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(f"must be a finite number, not {show(value)}")
    return number


def flag_value(value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"must be true or false, not {type_name(value)} {show(value)}")
    return value


class Value(abc.ABC):
    """How one key's raw value is checked and converted (the ``Annotated`` marker)."""

    @abc.abstractmethod
    def structure(self, value: object, ctx: ParseContext) -> Any:
        """The converted value; raise ``ConfigError`` (or ``ValueError``) with the problem."""


@attrs.frozen
class Text(Value):
    """Text, optionally converted by ``parse``; ``empty`` allows ``""``."""

    parse: Callable[[str], Any] | None = None
    empty: bool = False

    def structure(self, value: object, ctx: ParseContext) -> Any:
        text = text_value(value, empty=self.empty)
        return text if self.parse is None else self.parse(text)


@attrs.frozen
class Integer(Value):
    """An integer (not a boolean), optionally converted by ``parse``."""

    parse: Callable[[int], Any] | None = None

    def structure(self, value: object, ctx: ParseContext) -> Any:
        number = integer_value(value)
        return number if self.parse is None else self.parse(number)


@attrs.frozen
class Number(Value):
    """A finite number, as a float; with ``off``, ``false`` means ``None`` (switched off)."""

    parse: Callable[[float], Any] | None = None
    off: bool = False

    def structure(self, value: object, ctx: ParseContext) -> Any:
        if self.off and value is False:
            return None
        number = number_value(value)
        return number if self.parse is None else self.parse(number)


@attrs.frozen
class Flag(Value):
    """``true`` or ``false``."""

    def structure(self, value: object, ctx: ParseContext) -> bool:
        return flag_value(value)


@attrs.frozen
class Listed(Generic[T]):
    """The items of a key given as one text or as a list of texts."""

    items: tuple[T, ...] = ()
    #: Given as one text (its field has no index).
    single: bool = False

    def fields(self, path: str) -> tuple[str, ...]:
        """The field path of each item: ``path`` or ``path[0]``, ``path[1]``, ..."""
        if self.single:
            return (path,)
        return tuple(child(path, i) for i in range(len(self.items)))


@attrs.frozen
class Texts(Value):
    """Text or a list of texts, each converted by ``parse``; the first bad item is reported."""

    parse: Callable[[str], Any]
    #: The message when the list is empty (``None``: an empty list is fine).
    nonempty: str | None = None

    def structure(self, value: object, ctx: ParseContext) -> Listed[Any]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise ConfigError(f"must be text or a list of text, not {show(value)}")
        if not items and self.nonempty is not None:
            raise ConfigError(self.nonempty)
        out = []
        for index, item in enumerate(items):
            try:
                out.append(self.parse(item))
            except (ConfigError, ValueError) as exc:
                if isinstance(value, str):
                    raise
                raise ItemErrors([(index, exc)]) from None
        return Listed(tuple(out), single=isinstance(value, str))


# -- the file being parsed -----------------------------------------------------------


def clean_key_message(message: str) -> str:
    """Shorten the library's wordy key errors to what a user can act on."""
    message = message.removeprefix(f"{_INLINE}: ")
    for marker, short in (
        (" (Unable to load PEM", " (damaged PEM framing)"),
        (" (Could not deserialize", " (damaged key data, or not an EC key)"),
    ):
        index = message.find(marker)
        if index >= 0:
            message = message[:index] + short
    return message


class ParseContext:
    """The file being parsed: where it is, its mode, how strict to be, its problem list.

    Paths in a file are relative to its directory. ``pending`` maps key files that
    are written but not yet renamed into place (:mod:`.edit`) to ``(content, mode)``:
    they are read from there, so that a new configuration is checked before
    anything is written.
    """

    def __init__(
        self,
        path: Path,
        issues: Issues,
        *,
        strict: bool = True,
        file_mode: int | None = None,
        pending: Mapping[Path, tuple[bytes, int]] | None = None,
    ) -> None:
        self.path = Path(path)
        self.directory = self.path.parent
        self.issues = issues
        #: Unknown keys are errors (trio-sudp's TOML) or warnings (tunelo: Go ignores them).
        self.strict = strict
        #: The file's own mode (``None``: not read from a file).
        self.file_mode = file_mode
        self._pending = {Path(os.path.abspath(p)): v for p, v in (pending or {}).items()}

    def resolve(self, text: str) -> Path:
        """A path from the file: ``~`` expanded, relative to the file's directory."""
        path = Path(text)
        with contextlib.suppress(RuntimeError):  # "~nosuchuser/..." stays (and is not found)
            path = path.expanduser()
        return path if path.is_absolute() else self.directory / path

    def readable_by_others(self) -> str | None:
        """The problem of holding a secret in this file, if others may read it."""
        if self.file_mode is None or os.name != "posix":
            return None
        mode = stat.S_IMODE(self.file_mode)
        if not mode & 0o077:
            return None
        return (
            f"the file holds a private key and is accessible by others (mode {mode:04o}); "
            f"fix it with: chmod 600 {self.path}"
        )

    def private_key_file(self, text: str) -> PrivateKey:
        path = self.resolve(text)
        try:
            pending = self._pending.get(Path(os.path.abspath(path)))
            if pending is not None:
                key = PrivateKey.from_pem(pending[0], what=str(path))
                check_private_mode(path, pending[1])
                return key
            return read_private_key(path)
        except ConfigError as exc:
            raise ConfigError(clean_key_message(str(exc))) from None

    def public_key_file(self, text: str) -> PublicKey:
        path = self.resolve(text)
        try:
            pending = self._pending.get(Path(os.path.abspath(path)))
            if pending is not None:
                return PublicKey.from_pem(pending[0], what=str(path))
            return read_public_key(path)
        except ConfigError as exc:
            raise ConfigError(clean_key_message(str(exc))) from None

    @staticmethod
    def private_key_pem(pem: str) -> PrivateKey:
        try:
            return PrivateKey.from_pem(pem, what=_INLINE)
        except ConfigError as exc:
            raise ConfigError(clean_key_message(str(exc))) from None

    @staticmethod
    def public_key_pem(pem: str) -> PublicKey:
        try:
            return PublicKey.from_pem(pem, what=_INLINE)
        except ConfigError as exc:
            raise ConfigError(clean_key_message(str(exc))) from None


# -- cattrs --------------------------------------------------------------------------


def _marker(tp: Any) -> Value | None:
    if get_origin(tp) is not Annotated:
        return None
    return next((m for m in tp.__metadata__ if isinstance(m, Value)), None)


def _table_of(tp: Any) -> tuple[type, bool] | None:
    """``(table class, is an array)`` for a nested table field, else ``None``."""
    if isinstance(tp, type) and attrs.has(tp):
        return tp, False
    args = get_args(tp)
    if get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis and attrs.has(args[0]):
        return args[0], True
    return None


@functools.cache
def _fields(cls: type) -> tuple[attrs.Attribute[Any], ...]:
    return tuple(attrs.fields(attrs.resolve_types(cls)))


#: The file being parsed. cattrs hooks get only ``(value, type)``; :func:`structure`
#: sets this for the duration of one call, so that the converter (and the code cattrs
#: generates for each table class) is built once, not per file.
_PARSING: contextvars.ContextVar[ParseContext] = contextvars.ContextVar("parsing")


def _value_hook(tp: Any) -> Callable[[object, Any], Any]:
    marker = _marker(tp)
    assert marker is not None

    def structure_value(value: object, _: Any) -> Any:
        if isinstance(value, Refused):
            raise (MissingKey if value.missing else ConfigError)(value.message)
        return marker.structure(value, _PARSING.get())

    return structure_value


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(detailed_validation=True, forbid_extra_keys=False)

    def table_hook(cls: type) -> Callable[[object, Any], Any]:
        _fields(cls)
        base: Callable[[Mapping[str, Any], Any], Any]
        base = cattrs.gen.make_dict_structure_fn(cls, converter)
        prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = getattr(cls, "prepare", None)
        check: Callable[[Any], None] | None = getattr(cls, "check", None)

        def structure_table(value: object, _: Any) -> Any:
            if not isinstance(value, dict):
                raise ConfigError(f"must be a table, not {type_name(value)}")
            raw = {k: v for k, v in value.items() if v is not None}  # JSON null: Go's zero value
            table = base(prepare(raw) if prepare is not None else raw, cls)
            if check is not None:
                check(table)
            return table

        return structure_table

    def array_hook(tp: Any) -> Callable[[object, Any], Any]:
        element = get_args(tp)[0]

        def structure_array(value: object, _: Any) -> tuple[Any, ...]:
            if not isinstance(value, list):
                raise ConfigError(f"must be a list of tables, not {type_name(value)}")
            return tuple(converter.structure(value, list[element]))  # type: ignore[valid-type]

        return structure_array

    converter.register_structure_hook_factory(
        lambda t: isinstance(t, type) and attrs.has(t), table_hook
    )
    converter.register_structure_hook_factory(
        lambda t: (table := _table_of(t)) is not None and table[1], array_hook
    )
    converter.register_structure_hook_factory(lambda t: _marker(t) is not None, _value_hook)
    return converter


_CONVERTER = _make_converter()


def structure(doc: dict[str, Any], cls: type[T], ctx: ParseContext) -> T | None:
    """``doc`` as ``cls``, or ``None`` when it has errors (recorded in ``ctx.issues``)."""
    errors_before = len(ctx.issues.errors)
    result: T | None
    token = _PARSING.set(ctx)
    try:
        result = _CONVERTER.structure(doc, cls)
        error: Exception | None = None
    except (ClassValidationError, ConfigError) as exc:
        result, error = None, exc
    finally:
        _PARSING.reset(token)
    _Report(ctx.issues, strict=ctx.strict).table(cls, doc, error, "")
    return result if len(ctx.issues.errors) == errors_before else None


# -- the report ----------------------------------------------------------------------


def _message(exc: BaseException) -> str:
    if isinstance(exc, ConfigError | ValueError):
        return str(exc)
    return f"cannot be read ({type(exc).__name__}: {exc})"  # pragma: no cover - a cattrs surprise


class _Report:
    """Walks a schema, its raw document and the cattrs exception tree together."""

    def __init__(self, issues: Issues, *, strict: bool) -> None:
        self.issues = issues
        self.strict = strict

    def problem(self, path: str, exc: BaseException) -> None:
        if isinstance(exc, ItemErrors):
            for key, item in exc.items:
                self.problem(child(path, key), item)
        elif isinstance(exc, BaseExceptionGroup):  # pragma: no cover - hooks raise one error
            for sub in exc.exceptions:
                self.problem(path, sub)
        else:
            self.issues.error(path or None, _message(exc))

    def table(self, cls: type, raw: dict[str, Any], error: BaseException | None, path: str) -> None:
        """A table's own values first, then its unknown keys, then its nested tables."""
        by_field: dict[str, Exception] = {}
        if error is not None and not isinstance(error, ClassValidationError):
            self.problem(path, error)  # the table's check
        elif error is not None:
            noted, others = error.group_exceptions()
            by_field = {note.name: exc for exc, note in noted}
            for other in others:  # pragma: no cover - every field error carries a note
                self.problem(path, other)
        fields = _fields(cls)
        missing: dict[str, int] = {}
        nested: list[tuple[tuple[type, bool], attrs.Attribute[Any]]] = []
        for field in fields:
            exc = by_field.get(field.name)
            table = _table_of(field.type)
            if table is not None and isinstance(raw.get(field.name), list if table[1] else dict):
                nested.append((table, field))
            elif isinstance(exc, KeyError | MissingKey):
                message = str(exc) if isinstance(exc, MissingKey) else "missing (required)"
                self.issues.error(child(path, field.name), field.metadata.get("missing", message))
                missing[field.name] = len(self.issues.errors) - 1
            elif exc is not None:
                self.problem(child(path, field.name), exc)
        self.unknown_keys(raw, [f.name for f in fields], missing, path)
        for (cls_, many), field in nested:
            walk = self.array if many else self.table
            walk(cls_, raw[field.name], by_field.get(field.name), child(path, field.name))

    def array(self, cls: type, raw: list[Any], error: BaseException | None, path: str) -> None:
        if error is not None and not isinstance(error, IterableValidationError):
            self.problem(path, error)  # pragma: no cover - an array hook raises only for non-lists
            return
        by_index: dict[int, Exception] = {}
        if error is not None:
            noted, _ = error.group_exceptions()
            by_index = {int(note.index): exc for exc, note in noted}
        for index, item in enumerate(raw):
            exc = by_index.get(index)
            if isinstance(item, dict):
                self.table(cls, item, exc, child(path, index))
            elif exc is not None:
                self.problem(child(path, index), exc)

    def unknown_keys(
        self, raw: dict[str, Any], known: list[str], missing: dict[str, int], path: str
    ) -> None:
        dropped: list[int] = []
        for key in raw:
            if key in known:
                continue
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            if self.strict:
                if close and close[0] in missing:
                    # "x: missing" and "y: unknown key; did you mean x?" are one mistake.
                    dropped.append(missing.pop(close[0]))
                self.issues.error(child(path, key), f"unknown key{hint}")
            else:
                self.issues.warn(child(path, key), f"unknown key, ignored{hint}")
        for index in sorted(dropped, reverse=True):
            del self.issues.errors[index]
