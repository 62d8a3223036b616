"""Reading an adapter's [options]: typed readers whose errors name the table and the key.
Pure: adapters read their options here when they are built, before any I/O starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class AdapterConfigError(ValueError):
    """An adapter's configuration is unusable (its file, or its [options] when the adapter is
    built); the message names the file or key."""


@dataclass(frozen=True)
class Options:
    """One table of an adapter's [options], read with types. Every error names the table and
    the key: "[options.inbound] poll_seconds: must be a number greater than 0".

    `terse` words the errors as the webhook adapter always has ("[options.inbound]: unknown
    key ...", "attempts: a whole number of at least 1", without "must be"): its documented
    messages are kept as they were.
    """

    values: Mapping[str, Any]
    where: str = "[options]"
    terse: bool = False

    def __bool__(self) -> bool:
        return bool(self.values)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def _error(self, key: str, expected: str) -> AdapterConfigError:
        return AdapterConfigError(f"{self.where} {key}: {'' if self.terse else 'must be '}{expected}")  # fmt: skip

    def check_keys(self, known: Iterable[str]) -> None:
        """A misspelt key would otherwise be ignored silently (and a sample config rot unseen)."""
        names = sorted(set(known))
        if unknown := set(self.values) - set(names):
            colon = ":" if self.terse else ""
            raise AdapterConfigError(
                f"{self.where}{colon} unknown key '{sorted(unknown)[0]}' "
                f"(expected one of {', '.join(names)})"
            )

    def table(self, key: str) -> Options:
        """The sub-table `key` (empty when absent)."""
        value = self.values.get(key, {})
        if not isinstance(value, Mapping):
            raise self._error(key, "a table")
        return Options(value, f"[{self.where.strip('[]')}.{key}]", self.terse)

    def text(self, key: str, default: str | None = None) -> str:
        """A non-empty string; required when there is no default."""
        value = self.values.get(key, default)
        if value is None:
            raise AdapterConfigError(f"{self.where} {key}: required, a non-empty string")
        if not isinstance(value, str) or not value:
            raise self._error(key, "a non-empty string")
        return value

    def path(self, key: str) -> Path:
        """A required path."""
        value = self.values.get(key)
        if not isinstance(value, str) or not value:
            raise AdapterConfigError(f"{self.where} {key}: required, a path")
        return Path(value)

    def number(self, key: str, default: float) -> float:
        """A number greater than 0 (seconds, mostly)."""
        value = self.values.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self._error(key, "a number greater than 0")
        return float(value)

    def whole(self, key: str, default: int) -> int:
        """A whole number of at least 1 (a count, a size)."""
        value = self.values.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self._error(key, "a whole number of at least 1")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        """A list of non-empty strings (empty when absent)."""
        value = self.values.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self._error(key, "a list of non-empty strings")
        return tuple(value)

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.values.get(key, default)
        if not isinstance(value, bool):
            raise self._error(key, "true or false")
        return value

    def choice(self, key: str, allowed: Sequence[str]) -> str:
        """One of `allowed`; the first when absent."""
        value = self.values.get(key, allowed[0])
        if value not in allowed:
            raise AdapterConfigError(f"{self.where} {key}: {value!r} is not one of {', '.join(allowed)}")  # fmt: skip
        return str(value)
