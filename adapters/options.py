"""Adapters' configuration, declared as schemas: each adapter states the keys of its [options]
tables as pydantic dataclasses (types, bounds, choices, defaults, and the string under each key
saying what it does), and `read` checks a table against one when the adapter is built, before
any I/O starts. Every error names the table and the key: "[options.inbound] poll_seconds: must
be a number greater than 0". The field types below carry the words their errors use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass as plain_dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

# Unknown keys are errors (a misspelt key would leave a default in force and a sample config
# rot unseen); the string under each key is its description.
OPTIONS = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class AdapterConfigError(ValueError):
    """An adapter's configuration is unusable (its file, or its [options] when the adapter is
    built); the message names the file or key."""


@plain_dataclass(frozen=True)
class Expect:
    """What a key's value must be, in the words of its errors ("a path", "true or false")."""

    words: str


def _path(value: object) -> object:
    if not isinstance(value, str | Path) or not str(value):
        raise PydanticCustomError("path_type", "a path")
    return value


Text = Annotated[str, Strict(), Field(min_length=1), Expect("a non-empty string")]
Positive = Annotated[float, Strict(), Field(gt=0), Expect("a number greater than 0")]
NotNegative = Annotated[float, Strict(), Field(ge=0), Expect("a number of at least 0")]
Count = Annotated[int, Strict(), Field(ge=1), Expect("a whole number of at least 1")]
Names = Annotated[
    tuple[Annotated[str, Strict(), Field(min_length=1)], ...], Expect("a list of non-empty strings")
]
Flag = Annotated[bool, Strict(), Expect("true or false")]
FilePath = Annotated[Path, BeforeValidator(_path), Expect("a path")]
Table = Annotated[dict[str, Any], Expect("a table")]

T = TypeVar("T")


def _expected(cls: type[Any], key: str) -> str:
    """The words of `key`'s type, or "" for a key with none (a choice, a nested schema)."""
    field = getattr(cls, "__pydantic_fields__", {}).get(key)
    for mark in field.metadata if field is not None else ():
        if isinstance(mark, Expect):
            return mark.words
    return ""


def _message(cls: type[Any], error: ErrorDetails, where: str, terse: bool) -> str:
    kind, key = error["type"], str(error["loc"][0]) if error["loc"] else ""
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        names = ", ".join(sorted(getattr(cls, "__pydantic_fields__", {})))
        colon = ":" if terse else ""
        return f"{where}{colon} unknown key '{key}' (expected one of {names})"
    if kind == "value_error":  # a check of the adapter's own, worded by it
        return f"{where} {key + ': ' if key else ''}{error.get('ctx', {})['error']}"
    if not key:
        return f"{where}: must be a table"
    if kind == "literal_error":
        choices = error.get("ctx", {})["expected"].replace("'", "").replace(" or ", ", ")
        return f"{where} {key}: {error['input']!r} is not one of {choices}"
    expected = _expected(cls, key) or str(error["msg"])
    if kind in ("missing", "missing_argument"):
        return f"{where} {key}: required, {expected}"
    return f"{where} {key}: {'' if terse else 'must be '}{expected}"


def read(cls: type[T], values: Any, where: str = "[options]", *, terse: bool = False) -> T:
    """The table `values` as `cls`, checked; the first problem as an AdapterConfigError naming
    `where` and the key. `terse` words them as the webhook adapter always has ("[options.inbound]:
    unknown key ...", "attempts: a whole number of at least 1", without "must be")."""
    if not isinstance(values, Mapping):
        raise AdapterConfigError(f"{where}: must be a table")
    try:
        return TypeAdapter(cls).validate_python(dict(values))
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        raise AdapterConfigError(_message(cls, first, where, terse)) from None
