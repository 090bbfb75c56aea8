"""Configuration errors: one line each, naming the file and the field.

Parsers do not stop at the first problem: they record every problem in an
:class:`Issues` collector (for ``trio-sudp check``), and :func:`~.load.load_config`
raises the first one as a :class:`ConfigFileError`.
"""

from __future__ import annotations

import os

from ..protocol.errors import ConfigError

__all__ = ["ConfigFileError", "Issue", "Issues", "one_line"]


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
