"""Redaction: nested, whole and repeated fields cleared in a copy, only present fields reported,
the input untouched, and withheld values absent from the bytes a receiver gets."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dutylink.adapters.edxl.mapping import RM_EVENT_TYPES
from dutylink.policies.redaction import (
    field_path_error,
    minimal_paths,
    redact,
    sensitive_fields,
    verbatim_copies,
)
from dutylink.v1 import event_pb2
from tests.factories import incident_event, resource_request_event, warning_event

PHONE = "13800000000"


def reported() -> event_pb2.Event:
    event = incident_event()
    event.incident.reporter.id_number = "310115199001011234"
    event.incident.reporter.position.latitude = 31.2401
    event.incident.reporter.position.longitude = 121.5002
    return event


def with_contacts() -> event_pb2.Event:
    event = resource_request_event()
    event.resource.contacts.add(
        description="Staging officer", person_name="Wang Wu", phone="13911112222"
    )
    event.resource.contacts.add(
        description="Depot", person_name="Zhao Liu", phone="13933334444", email="zl@example.cn"
    )
    return event


def test_a_nested_scalar_is_cleared_and_its_siblings_kept() -> None:
    redacted, withheld = redact(reported(), ["incident.reporter.phone"])
    assert withheld == ("incident.reporter.phone",)
    assert redacted.incident.reporter.phone == ""
    assert redacted.incident.reporter.name == "Zhang San"
    assert redacted.incident.title == reported().incident.title


def test_a_whole_sub_message_is_cleared() -> None:
    redacted, withheld = redact(reported(), ["incident.reporter"])
    assert withheld == ("incident.reporter",)
    assert not redacted.incident.HasField("reporter")
    assert redacted.incident.HasField("location")


def test_a_field_of_a_repeated_message_is_cleared_in_every_element() -> None:
    redacted, withheld = redact(
        with_contacts(), ["resource.contacts.phone", "resource.contacts.email"]
    )
    assert withheld == ("resource.contacts.email", "resource.contacts.phone")
    assert [c.phone for c in redacted.resource.contacts] == ["", "", ""]
    assert [c.email for c in redacted.resource.contacts] == ["", "", ""]
    assert [c.person_name for c in redacted.resource.contacts] == ["", "Wang Wu", "Zhao Liu"]


def test_a_path_through_a_oneof_payload_reaches_its_fields() -> None:
    event = resource_request_event()
    redacted, withheld = redact(event, ["resource.request_resource.deliver_to.address"])
    assert withheld == ("resource.request_resource.deliver_to.address",)
    assert redacted.resource.request_resource.deliver_to.address == ""
    assert redacted.resource.request_resource.deliver_to.HasField("point")


def test_absent_fields_are_not_reported() -> None:
    event = incident_event()  # no id number, no position, no contacts
    paths = ["incident.reporter.id_number", "incident.reporter.position", "resource.contacts.phone"]
    redacted, withheld = redact(event, paths)
    assert withheld == ()
    assert redacted == event
    assert not redacted.HasField("resource")


def test_a_repeated_field_with_no_value_in_any_element_is_not_reported() -> None:
    _, withheld = redact(
        resource_request_event(), ["resource.contacts.phone", "resource.contacts.description"]
    )
    assert withheld == ("resource.contacts.description",)


def test_a_path_inside_a_withheld_message_is_reported_through_it() -> None:
    _, withheld = redact(
        reported(), ["incident.reporter.name", "incident.reporter", "incident.reporter.name"]
    )
    assert withheld == ("incident.reporter",)


def test_the_input_is_never_changed() -> None:
    event = with_contacts()
    before = event.SerializeToString(deterministic=True)
    redacted, _ = redact(event, ["resource.contacts", "resource.incident_id"])
    assert event.SerializeToString(deterministic=True) == before
    assert redacted is not event
    assert redact(event, [])[0] is not event


def test_withheld_values_are_not_in_the_delivered_bytes() -> None:
    event = reported()
    redacted, _ = redact(event, [
        "incident.reporter.name", "incident.reporter.phone",
        "incident.reporter.id_number", "incident.reporter.position",
    ])  # fmt: skip
    wire = redacted.SerializeToString()
    for secret in (PHONE, "Zhang San", "310115199001011234"):
        assert secret.encode() in event.SerializeToString()
        assert secret.encode() not in wire
    decoded = event_pb2.Event.FromString(wire)
    assert not decoded.incident.reporter.HasField("position")
    assert decoded.incident.reporter.channel == event.incident.reporter.channel


def test_withheld_contact_phones_are_not_in_the_delivered_bytes() -> None:
    redacted, _ = redact(with_contacts(), ["resource.contacts.phone"])
    wire = redacted.SerializeToString()
    assert b"13911112222" not in wire and b"13933334444" not in wire
    assert b"Wang Wu" in wire


def test_a_withheld_warning_field_takes_the_cap_xml_received_with_it() -> None:
    event = warning_event()
    event.warning.infos[0].contact = "Duty officer Li, 13955556666"
    event.warning.cap_xml = (
        b"<alert><info><contact>Duty officer Li, 13955556666</contact></info></alert>"
    )
    redacted, withheld = redact(event, ["warning.infos.contact"])
    assert withheld == ("warning.cap_xml", "warning.infos.contact")
    assert b"13955556666" not in redacted.SerializeToString()
    assert redacted.warning.infos[0].headline == event.warning.infos[0].headline
    # Nothing withheld from the warning: its copy as received travels on (byte-exact export).
    assert redact(event, ["incident.reporter.phone"])[0].warning.cap_xml == event.warning.cap_xml


def test_verbatim_copies_are_those_of_the_messages_on_the_way_down() -> None:
    assert verbatim_copies("warning.infos.contact") == ("warning.cap_xml",)
    assert verbatim_copies("warning.cap_xml") == ()
    assert verbatim_copies("resource.contacts.phone") == (
        "resource.rm_xml", "resource.contacts.party_xml", "resource.contacts.location_xml",
    )  # fmt: skip
    assert verbatim_copies("incident.reporter.phone") == ()


def test_an_unknown_path_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="Reporter has no field 'fone'"):
        redact(incident_event(), ["incident.reporter.fone"])


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("incident.reporter.phone", None),
        ("resource.contacts.phone", None),
        ("warning.infos.areas.polygons.points.latitude", None),
        (
            "incident.reportr",
            "unknown field path 'incident.reportr': Incident has no field 'reportr' (did you mean 'reporter'?)",
        ),
        (
            "incident.title.text",
            "unknown field path 'incident.title.text': 'title' is a scalar field, it has no field 'text'",
        ),
        (
            "incident.category.name",
            "unknown field path 'incident.category.name': 'category' is an enum field, it has no field 'name'",
        ),
    ],
)
def test_field_paths_are_checked_against_the_schema(path: str, error: str | None) -> None:
    assert field_path_error(path) == error


def test_the_schemas_sensitive_fields_are_found() -> None:
    assert dict(sensitive_fields()) == {
        "incident.reporter.name": 1,
        "incident.reporter.phone": 1,
        "incident.reporter.id_number": 1,
        "incident.reporter.position": 2,
        "resource.contacts.person_name": 1,
        "resource.contacts.phone": 1,
        "resource.contacts.email": 1,
        "resource.contacts.party_xml": 1,
        "resource.rm_xml": 1,
        # EDXL-RM ResponsibleParty is a ContactInformation in every message type's lines.
        **{
            f"resource.{kind}.resource_infos.resource.responsible_party.{field}": 1
            for kind in RM_EVENT_TYPES
            for field in ("person_name", "phone", "email", "party_xml")
        },
    }


def test_minimal_paths_drops_paths_inside_others_but_not_lookalikes() -> None:
    paths = [
        "incident.reporter.name",
        "incident.reporter",
        "incident.reporters_x",
        "incident.reporter",
    ]
    assert minimal_paths(paths) == ("incident.reporter", "incident.reporters_x")


PATHS = [path for path, _ in sensitive_fields()] + [
    "incident.reporter", "incident.casualties", "incident.attachments", "incident.title",
    "resource.contacts", "subject", "correlation_id",
]  # fmt: skip


@given(st.lists(st.sampled_from(PATHS), max_size=6), st.sampled_from([reported, with_contacts]))
def test_redaction_is_idempotent_and_clears_every_withheld_path(
    paths: list[str], make: Callable[[], event_pb2.Event]
) -> None:
    event = make()
    once, withheld = redact(event, paths)
    assert set(withheld) <= set(minimal_paths(paths))
    twice, again = redact(once, paths)
    assert again == () and twice == once
    for path in withheld:
        assert redact(event, [path])[1] == (path,)
