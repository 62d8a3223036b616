"""The typed reader of adapters' [options]: values with their types, errors naming table and key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.options import AdapterConfigError, Options


def test_values_are_read_with_their_types_and_defaults() -> None:
    options = Options({"inbound": {"directory": "d", "poll_seconds": 2, "patterns": ["*.csv"]}})
    inbound = options.table("inbound")
    assert inbound.where == "[options.inbound]"
    assert inbound.path("directory") == Path("d")
    assert inbound.number("poll_seconds", 1.0) == 2.0
    assert inbound.whole("batch_size", 500) == 500
    assert inbound.strings("patterns") == ("*.csv",)
    assert inbound.flag("allow_remote") is False
    assert inbound.choice("format", ("jsonl", "csv")) == "jsonl"
    assert not options.table("outbound")


@pytest.mark.parametrize(
    ("values", "read", "message"),
    [
        ({"x": 1}, lambda o: o.check_keys({"y"}), "[options] unknown key 'x' (expected one of y)"),
        ({"t": 1}, lambda o: o.table("t"), "[options] t: must be a table"),
        ({}, lambda o: o.text("name"), "[options] name: required, a non-empty string"),
        ({"n": ""}, lambda o: o.text("n", "d"), "[options] n: must be a non-empty string"),
        ({"s": 0}, lambda o: o.number("s", 1.0), "[options] s: must be a number greater than 0"),
        ({"c": True}, lambda o: o.whole("c", 1), "[options] c: must be a whole number of at least 1"),
        ({"l": [""]}, lambda o: o.strings("l"), "[options] l: must be a list of non-empty strings"),
        ({"f": "yes"}, lambda o: o.flag("f"), "[options] f: must be true or false"),
        ({"k": "z"}, lambda o: o.choice("k", ("a", "b")), "[options] k: 'z' is not one of a, b"),
    ],
)  # fmt: skip
def test_a_bad_value_is_refused_naming_table_and_key(values: dict[str, object], read: Callable[[Options], object], message: str) -> None:  # fmt: skip
    with pytest.raises(AdapterConfigError) as refused:
        read(Options(values))
    assert str(refused.value) == message


def test_terse_wording_states_what_is_expected_without_must_be() -> None:
    options = Options({"inbound": {"tolerance": 5, "attempts": 0}}, terse=True)
    with pytest.raises(AdapterConfigError, match=r"^\[options.inbound\]: unknown key 'tolerance'"):
        options.table("inbound").check_keys({"attempts"})
    with pytest.raises(AdapterConfigError, match=r"^\[options.inbound\] attempts: a whole number"):
        options.table("inbound").whole("attempts", 1)
