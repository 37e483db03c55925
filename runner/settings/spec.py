"""How one environment variable is declared, read, shown and documented.

A `Variable` holds everything about one name: where its value lands in the settings tree,
how its text is parsed, its default, its unit, whether it is secret, and its help text.
Parsing (`read`), `ksr config` (`show`) and the table in docs/configuration.md all come from
that one declaration. Parsers raise ValueError with the problem only ("must be ..., got
'x'"); `read` turns it into a ConfigError naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from election.durations import parse_seconds
from runner.errors import ConfigError

__all__ = [
    "MASK",
    "Derived",
    "Section",
    "Variable",
    "choice",
    "integer",
    "items",
    "key_name",
    "path",
    "seconds",
    "text",
]

MASK = "***"

Parser = Callable[[str], Any]


@dataclass(frozen=True)
class Derived:
    """A default computed from the rest of the environment; `doc` says how, for people."""

    compute: Callable[[Mapping[str, str]], Any]
    doc: str


@dataclass(frozen=True, kw_only=True)
class Variable:
    name: str
    path: str  # attribute path in Settings, e.g. "callbacks.timeout"
    parse: Parser
    default: Any  # a value, a Derived, or None (unset)
    unit: str  # the docs' Unit column: "s", "ms", "list", "name", ...
    help: str  # the docs' Meaning column (Markdown)
    secret: bool = False  # `ksr config` and the docs never show the value
    show: Callable[[Any], object] | None = None  # how `ksr config` prints a value (secrets masked)
    default_doc: str | None = None  # the docs' Default column, when the value alone says too little
    blank_is_unset: bool = True  # FOO="" means "use the default" (Helm renders empty strings)

    def read(self, env: Mapping[str, str] | None = None) -> Any:
        """The parsed value of this variable in `env` (default: the process environment)."""
        env = os.environ if env is None else env
        raw = env.get(self.name)
        if raw is None or (self.blank_is_unset and not raw.strip()):
            return self.default.compute(env) if isinstance(self.default, Derived) else self.default
        try:
            return self.parse(raw.strip())
        except ValueError as e:
            raise ConfigError(self.name, str(e)) from None

    def shown(self, value: Any) -> object:
        """The value as `ksr config` prints it: JSON-friendly, secrets masked."""
        if self.show is not None:
            return self.show(value)
        if self.secret:
            return MASK if value else ""
        if isinstance(value, tuple):
            return ",".join(str(v) for v in value)
        if isinstance(value, Path):
            return str(value)
        return value

    def documented_default(self) -> str:
        if self.default_doc is not None:
            return self.default_doc
        if isinstance(self.default, Derived):
            return self.default.doc
        if self.default is None or self.default == ():
            return "unset"
        shown = self.shown(self.default)
        if isinstance(shown, float) and shown.is_integer():
            shown = int(shown)
        return f"`{shown}`"


@dataclass(frozen=True)
class Section:
    """A heading of docs/configuration.md and the variables under it, in order."""

    title: str
    variables: tuple[Variable, ...]
    intro: str = ""


# -- parsers: each returns the value or raises ValueError(problem) ---------------------------


def text(value: str) -> str:
    return value


def key_name(value: str) -> str:
    """A Redis key, group or queue name."""
    if any(c.isspace() for c in value):
        raise ValueError(f"must not contain whitespace, got {value!r}")
    return value


def path(value: str) -> Path:
    return Path(value)


def seconds(value: str) -> float:
    return parse_seconds(value)


def choice(*options: str) -> Parser:
    def parse(value: str) -> str:
        lowered = value.lower()
        if lowered not in options:
            raise ValueError(f"must be one of {'|'.join(options)}, got {value!r}")
        return lowered

    return parse


def integer(*, minimum: int, maximum: int | None = None, unit: str = "") -> Parser:
    what = f"an integer{(' of ' + unit) if unit else ''} >= {minimum}" + (
        f" and <= {maximum}" if maximum is not None else ""
    )

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"must be {what}, got {value!r}") from None
        if number < minimum or (maximum is not None and number > maximum):
            raise ValueError(f"must be {what}, got {value!r}")
        return number

    return parse


def quantity(*, minimum: float, unit: str = "") -> Parser:
    what = f"a number{(' of ' + unit) if unit else ''} >= {minimum:g}"

    def parse(value: str) -> float:
        try:
            result = float(value)
        except ValueError:
            raise ValueError(f"must be {what}, got {value!r}") from None
        if result != result or result in (float("inf"), float("-inf")) or result < minimum:
            raise ValueError(f"must be {what}, got {value!r}")
        return result

    return parse


def items(value: str) -> tuple[str, ...]:
    """A comma-separated list; blanks around items are ignored."""
    return tuple(item.strip() for item in value.split(",") if item.strip())
