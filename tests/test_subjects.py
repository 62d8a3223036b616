"""Subject naming and subscription filters (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dutylink.v1 import event_pb2
from gateway.core import subjects
from gateway.core.subjects import Filter, FilterTooBroadError, event_subject, filter_subjects


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching with `*` (one token) and `>` (the rest)."""
    want, have = pattern.split("."), subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or (token != "*" and token != have[index]):
            return False
    return len(want) == len(have)


def test_event_subject_splits_the_division_code_into_its_three_levels() -> None:
    subject = event_subject(event_pb2.PLANE_ACTUAL, "incident.reported", "310115")
    assert subject == "dutylink.events.actual.incident.reported.31.01.15"


def test_an_empty_filter_selects_every_actual_event_only() -> None:
    assert filter_subjects(Filter(), limit=10) == ["dutylink.events.actual.*.*.*.*.*"]


def test_families_absorb_types_of_the_same_family() -> None:
    selected = filter_subjects(
        Filter(families=("warning",), types=("warning.alert", "incident.reported")), limit=10
    )
    assert selected == [
        "dutylink.events.actual.warning.*.*.*.*",
        "dutylink.events.actual.incident.reported.*.*.*",
    ]


def test_a_longer_prefix_inside_a_shorter_one_is_dropped_so_filters_never_overlap() -> None:
    selected = filter_subjects(Filter(jurisdiction_prefixes=("3101", "31", "4403")), limit=10)
    assert selected == ["dutylink.events.actual.*.*.31.*.*", "dutylink.events.actual.*.*.44.03.*"]


def test_a_filter_that_expands_past_the_limit_is_refused_with_a_reason() -> None:
    selection = Filter(types=("incident.a", "incident.b"), jurisdiction_prefixes=("11", "12"))
    with pytest.raises(FilterTooBroadError, match="4 subject filters"):
        filter_subjects(selection, limit=3)


codes = st.from_regex(r"[1-8][0-9]{5}", fullmatch=True)
prefixes = st.lists(st.from_regex(r"([0-9]{2}){1,3}", fullmatch=True), max_size=4)
planes = st.sampled_from(list(subjects.PLANE_TOKENS))
families = st.lists(st.sampled_from(subjects.FAMILIES), max_size=3, unique=True)
types = st.lists(
    st.tuples(
        st.sampled_from(subjects.FAMILIES), st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
    ).map(".".join),
    max_size=3,
)


@given(codes, planes, st.sampled_from(subjects.FAMILIES), st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
       families, types, prefixes, st.lists(planes, max_size=3))  # fmt: skip
def test_an_event_is_selected_exactly_when_its_attributes_match_the_filter(
    code: str,
    plane: int,
    family: str,
    name: str,
    want_families: list[str],
    want_types: list[str],
    want_prefixes: list[str],
    want_planes: list[int],
) -> None:
    subject = event_subject(plane, f"{family}.{name}", code)
    selection = Filter(
        tuple(want_families), tuple(want_types), tuple(want_prefixes), tuple(want_planes)
    )
    patterns = filter_subjects(selection, limit=1000)
    expected = (
        (plane in want_planes if want_planes else plane == event_pb2.PLANE_ACTUAL)
        and (
            (not want_families and not want_types)
            or family in want_families
            or f"{family}.{name}" in want_types
        )
        and (not want_prefixes or any(code.startswith(p) for p in want_prefixes))
    )
    hits = [p for p in patterns if matches(p, subject)]
    assert bool(hits) == expected
    assert len(hits) <= 1, "filters must not overlap"
