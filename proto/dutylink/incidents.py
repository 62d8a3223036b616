"""Which incidents an event belongs to, read from its payload: for the audit log's incident
index (`dutylink audit export --incident`), the policies' incident conditions and the SDK's
acknowledgements. Beside the schemas, so every layer reads it from one place."""

from __future__ import annotations

from dutylink.v1 import event_pb2


def incident_ids(event: event_pb2.Event) -> list[str]:
    """The incidents an event's payload belongs to, whatever its family (its correlation id,
    which may name an incident too, is the caller's to add)."""
    if event.HasField("incident"):
        return [event.incident.incident_id]
    if event.HasField("resource"):
        return [event.resource.incident_id] if event.resource.incident_id else []
    if event.HasField("warning"):
        return list(event.warning.incidents)
    if event.HasField("task"):
        origin = event.task.origin_incident_id
        return [origin] if origin else []
    if event.HasField("acknowledgement"):
        return list(event.acknowledgement.incidents)
    if event.HasField("escalation"):
        return list(event.escalation.incidents)
    return []
