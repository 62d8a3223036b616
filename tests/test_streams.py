"""The stream registry: every stream the gateway checks has one spec, and no two share subjects."""

from gateway.core import streams

LIMITS = streams.StreamLimits(
    replicas=3,
    events_max_age_days=30,
    events_max_bytes=1 << 30,
    deadletter_max_age_days=90,
    ack_record_seconds=3600,
    duplicate_window_seconds=120,
    max_msg_size=1 << 20,
)


def all_specs() -> list[streams.StreamSpec]:
    return [*streams.event_stream_specs(LIMITS), streams.audit_stream_spec(LIMITS.replicas)]


def test_every_checked_stream_has_exactly_one_spec() -> None:
    names = [spec.name for spec in all_specs()]
    assert sorted(names) == sorted(streams.DURABLE_STREAMS)
    assert len(set(names)) == len(names)


def test_no_two_streams_claim_the_same_subjects() -> None:
    claimed = [subject for spec in all_specs() for subject in spec.subjects]
    assert len(set(claimed)) == len(claimed)


def test_every_stream_is_file_backed_and_undeletable_with_the_configured_replicas() -> None:
    for spec in all_specs():
        assert (spec.storage, spec.deny_delete, spec.deny_purge) == ("file", True, True)
        assert spec.replicas == LIMITS.replicas


def test_audit_entries_never_age_out() -> None:
    assert streams.audit_stream_spec(1).max_age_seconds == 0
