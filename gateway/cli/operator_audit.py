"""Facts that operator commands create outside the gateway, audited in their own log.

The CLI's `deadletter replay` talks to JetStream directly, not through a gateway, and a gateway's
log has one writer (the gateway). So operator commands append to the log `<gateway id>-operator`
in the same audit stream: signed with `<data dir>/audit/<gateway id>-operator.key` (created
0600 on first use, its `.pub` beside it), read and verified like any gateway's log
(`dutylink audit verify --gateway-id gw-1-operator`). Two commands appending at once: one is
refused (the log's expected-last-sequence check) and does nothing; run it again.

A replay is recorded ACCEPTED before the event is stored (no replay without its entry), and
FAILED after it if storing then failed, as publishes are.
"""

from __future__ import annotations

import contextlib
import getpass
from pathlib import Path

from dutylink.v1 import audit_pb2
from gateway.audit.entries import dead_letter_replay_entry
from gateway.audit.log import AuditUnavailableError
from gateway.audit.note import key_type_of
from gateway.core.crypto import crypto_profile
from gateway.core.ports import DeadLetter, Stored, StoreError
from gateway.core.settings import Config
from gateway.core.subjects import operator_log_id
from gateway.store.audit_files import load_or_create_signer
from gateway.store.audit_log import AuditLog
from gateway.store.jetstream import EventStore


def operator_name() -> str:
    """Who runs the command, as the audit log names them: `operator:<login name>`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name for this uid (e.g. a bare container)
        user = "unknown"
    return f"operator:{user}"


async def open_operator_log(settings: Config, store: EventStore) -> AuditLog:
    """The operator log of the configured gateway id, ready to append. Raises
    `AuditUnavailableError` when the audit stream cannot be read."""
    log_id = operator_log_id(settings.gateway.gateway_id)
    key_file = Path(settings.nats.data_dir) / "audit" / f"{log_id}.key"
    profile = crypto_profile(settings.audit.crypto_profile)
    signer = load_or_create_signer(key_file, f"dutylink/audit/{log_id}", key_type_of(profile))
    # The operator user may not create or update streams (gateway.store.nats_auth.operator_role):
    # it appends to the audit stream its gateway created.
    audit = AuditLog(
        store,
        log_id,
        signer,
        origin=signer.name,
        replicas=settings.nats.stream_replicas,
        create_stream=False,
    )
    await audit.start()
    return audit


async def replay_dead_letter(
    store: EventStore, audit: AuditLog, sequence: int, operator: str
) -> tuple[DeadLetter, Stored]:
    """Replay dead letter `sequence` to its subscription, audited as described above. Raises
    `StoreError` (nothing replayed, or storing failed: then recorded FAILED) or
    `AuditUnavailableError` (not recorded: nothing replayed)."""
    letter = await store.dead_letter_at(sequence)

    def entry(outcome: audit_pb2.AuditOutcome.ValueType, reason: str = "") -> audit_pb2.AuditEntry:
        return dead_letter_replay_entry(
            operator,
            sequence,
            recipient=letter.agency,
            subscription=letter.subscription,
            event_id=letter.event_id,
            event_type=letter.event_type,
            original_sequence=letter.original_sequence,
            outcome=outcome,
            reason=reason,
        )

    await audit.append([entry(audit_pb2.AUDIT_OUTCOME_ACCEPTED)])
    try:
        replayed = await store.replay_dead_letter(sequence)
    except StoreError as error:
        # If even this cannot be recorded the ACCEPTED entry stands; the replay may be retried.
        with contextlib.suppress(AuditUnavailableError):
            await audit.append([entry(audit_pb2.AUDIT_OUTCOME_FAILED, str(error))])
        raise
    await audit.checkpoint()
    return replayed
