"""Whom a tracked message is meant for: the agencies it names, or everyone the receive policy
lets have it; those it names but the policy keeps it from are withheld, never missing."""

from __future__ import annotations

from collections.abc import Callable

from dutylink.policies.engine import Evaluator
from dutylink.policies.loader import load_policy, policy_files
from dutylink.v1 import event_pb2, incident_pb2, warning_pb2
from gateway.core.workflows.recipients import Recipients, addressed, recipients
from tests.factories import incident_event, warning_event

SAMPLES = Evaluator(load_policy(policy_files()))
AGENCIES = SAMPLES.policy.agency_ids


def sample_policy(event: event_pb2.Event) -> Callable[[str], bool]:
    return lambda agency: SAMPLES.decide(agency, frozenset(), "receive", event).allowed


def test_a_public_warning_is_meant_for_everyone_the_policy_lets_have_it_but_its_sender() -> None:
    warning = warning_event()
    warning.source = "ecology"
    found = recipients(warning, AGENCIES, sample_policy(warning))
    # The audit office takes no part in the exchange; the sender does not answer itself.
    assert found == Recipients(tuple(sorted(set(AGENCIES) - {"audit", "ecology"})), withheld=())


def test_an_assignment_is_meant_for_its_lead_and_supporting_agencies() -> None:
    assigned = incident_event()
    assigned.type, assigned.source = "incident.assigned", "command"
    assigned.incident.lead_agency = "fire"
    assigned.incident.ClearField("involved_agencies")
    assigned.incident.involved_agencies.extend(["health", "command", "nobody-we-know"])
    assert addressed(assigned, AGENCIES) == ("fire", "health")
    found = recipients(assigned, AGENCIES, lambda agency: agency != "health")
    assert found == Recipients(("fire", "health"), withheld=("health",))


def test_a_private_alert_is_meant_for_the_agencies_among_its_addresses() -> None:
    private = warning_event()
    private.source = "weather"
    private.warning.scope = warning_pb2.CAP_SCOPE_PRIVATE
    private.warning.addresses.extend(["police", "ops@example.org", "transport"])
    assert recipients(private, AGENCIES, sample_policy(private)) == Recipients(
        ("police", "transport"), withheld=()
    )


def test_a_task_assignment_is_meant_for_its_owner() -> None:
    task = incident_event()
    task.ClearField("incident")
    task.type, task.source = "task.assigned", "command"
    task.task.owner_agency, task.task.supervising_agency = "housing", "emergency"
    assert recipients(task, AGENCIES, lambda agency: True) == Recipients(("housing",), ())


def test_a_graded_incident_nobody_is_named_for_goes_to_the_policys_receivers() -> None:
    major = incident_event()
    major.source = "fire"
    major.incident.severity = incident_pb2.INCIDENT_SEVERITY_MAJOR
    # The sample sends incidents graded LARGE or graver to every agency but the audit office.
    assert recipients(major, AGENCIES, sample_policy(major)) == Recipients(
        ("command", "ecology", "emergency", "energy", "health", "housing", "police",
         "transport", "weather"),
        withheld=(),
    )  # fmt: skip
