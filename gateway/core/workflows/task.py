"""The joint-enforcement task: one aggregate per task id (and plane). Pure: no I/O."""

from __future__ import annotations

from datetime import UTC

from dutylink.catalogue import EventType
from dutylink.v1 import event_pb2, task_pb2
from gateway.core.workflows.base import AggregateRef, Context, Facts, Rules, plane_token


def _refs(event: event_pb2.Event, event_type: EventType) -> list[AggregateRef]:
    if not event.HasField("task") or event_type.lifecycle is None:
        return []
    task = event.task
    outcome = None
    if task.HasField("recheck") and task.recheck.result:
        outcome = task_pb2.RecheckResult.Name(task.recheck.result).removeprefix("RECHECK_RESULT_")
    return [AggregateRef(event_type.lifecycle, plane_token(event.plane), task.task_id, outcome)]


def _facts(event: event_pb2.Event, ref: AggregateRef) -> Facts:
    # The owner, the supervisor and the deadline are set by an assignment (the supervisor may
    # be named when the task is opened); no other step changes who answers for the task.
    task = event.task
    if event.type == "task.opened":
        return Facts(supervisor=task.supervising_agency)
    if event.type != "task.assigned":
        return Facts()
    owner = task.owner_agency
    return Facts(
        assigned=(owner,) if owner else (),
        supervisor=task.supervising_agency,
        deadline=task.deadline.ToDatetime(tzinfo=UTC) if task.HasField("deadline") else None,
    )


def _check(context: Context) -> str | None:
    name, task, state = context.event_type.type, context.event.task, context.state
    if name == "task.rechecked" and task.recheck.agency != context.actor.agency:
        return (
            f"the re-check names agency '{task.recheck.agency}' but is published by "
            f"'{context.actor.agency}'"
        )
    if name == "task.overdue" and state is not None and state.deadline is None:
        return "the task has no deadline"
    if name == "task.overdue" and state and state.deadline and context.now < state.deadline:
        return f"the deadline {state.deadline.isoformat()} has not passed"
    return None


TASK = Rules(refs=_refs, facts=_facts, check=_check)
