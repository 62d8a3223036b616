"""The embedded NATS lets in only its generated users, each within its permissions, and no
password is ever shown (config show, the demo, error messages)."""

from __future__ import annotations

import asyncio
import functools
import stat
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from typer.testing import CliRunner

import gateway.cli.demo
from dutylink.adapters.sdk.client import DutyLinkClient
from gateway.cli.main import app
from gateway.core import subjects
from gateway.core.kv import Versioned
from gateway.core.streams import AGGREGATES_BUCKET, BucketSpec
from gateway.server import Gateway
from gateway.store import nats_auth
from gateway.store.audit_files import load_or_create_signer
from gateway.store.kv import JetStreamKeyValue
from gateway.store.nats_auth import (
    AUDITOR,
    GATEWAY,
    OPERATOR,
    WITNESS,
    Role,
    redact_url,
    split_servers,
)
from gateway.store.nats_server import embedded_dir, running_url
from gateway.testkit.inprocess import config_for_tests
from tests.conftest import TOKENS
from tests.factories import incident_event

EVENT_SUBJECT = "dutylink.events.actual.incident.reported.31.01.15"

# --- pure parts ------------------------------------------------------------------------------


def test_a_password_or_token_in_any_server_of_a_url_is_masked_and_the_user_kept() -> None:
    assert redact_url("nats://gateway:s3cret@10.0.0.1:4222,nats://ops:other@10.0.0.2:4222") == (
        "nats://gateway:***@10.0.0.1:4222,nats://ops:***@10.0.0.2:4222"
    )
    assert redact_url("tls://s3cr3t-token@nats.example:4222") == "tls://***@nats.example:4222"
    assert redact_url("nats://127.0.0.1:4222, nats://127.0.0.1:4223") == (
        "nats://127.0.0.1:4222,nats://127.0.0.1:4223"
    )
    assert redact_url("") == ""
    assert redact_url("gateway:p/w@x@127.0.0.1:4222") == "gateway:***@127.0.0.1:4222"


def test_every_declared_user_is_denied_deleting_purging_and_moving_streams() -> None:
    for role in {*nats_auth.embedded_roles("gw-1"), *nats_auth.DEPLOY_ROLES}:
        assert set(nats_auth.FORBIDDEN) <= set(role.publish_deny), role.user
        for allowed in role.publish_allow:
            assert not allowed.startswith(("$JS.API.STREAM.DELETE", "$JS.API.STREAM.PURGE")), (
                role.user
            )
    for role in (AUDITOR, WITNESS, nats_auth.operator_role(["gw-1"])):
        assert not any(s.startswith(subjects.EVENTS_PREFIX) for s in role.publish_allow)
        assert not any(".UPDATE." in s or "CONSUMER" in s for s in role.publish_allow)
        assert "_INBOX.>" not in role.subscribe_allow, "the gateway's inboxes carry events"


def test_the_operator_may_append_to_the_operator_logs_of_the_named_gateways_only() -> None:
    audit_subjects = [
        s
        for s in nats_auth.operator_role(["gw-1", "gw-2"]).publish_allow
        if s.startswith("dutylink.audit")
    ]
    assert audit_subjects == [
        "dutylink.audit.gw-1-operator.entries",
        "dutylink.audit.gw-1-operator.checkpoints",
        "dutylink.audit.gw-2-operator.entries",
        "dutylink.audit.gw-2-operator.checkpoints",
    ]
    assert not any(s.startswith("dutylink.audit") for s in OPERATOR.publish_allow)


def test_a_cli_user_connects_with_the_inbox_its_permissions_allow() -> None:
    _, options = split_servers("nats://auditor:pw@127.0.0.1:4222")
    assert options == {"user": "auditor", "password": "pw", "inbox_prefix": "_INBOX_auditor"}
    assert f"{options['inbox_prefix']}.>" in AUDITOR.subscribe_allow
    _, options = split_servers("nats://gateway:pw@127.0.0.1:4222")
    assert "inbox_prefix" not in options


def test_credentials_are_created_once_as_0600_files_and_reused(tmp_path: Path) -> None:
    first = nats_auth.ensure_credentials(tmp_path)
    again = nats_auth.ensure_credentials(tmp_path)
    assert first == again
    assert len(set(first.passwords.values())) == 4
    directory = nats_auth.credentials_dir(tmp_path)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = sorted(directory.iterdir())
    assert [f.name for f in files] == [
        "auditor.password", "gateway.password", "operator.password", "witness.password"
    ]  # fmt: skip
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)


def test_starts_racing_on_a_fresh_directory_all_get_the_same_passwords(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: nats_auth.ensure_credentials(tmp_path), range(16)))
    assert all(result == results[0] for result in results)
    assert [
        p.name for p in nats_auth.credentials_dir(tmp_path).iterdir() if p.name.startswith(".")
    ] == []
    assert not any(p in repr(results[0]) for p in results[0].passwords.values()), "never in a repr"


def test_a_credentials_file_others_can_read_is_refused_naming_it(tmp_path: Path) -> None:
    nats_auth.ensure_credentials(tmp_path)
    exposed = nats_auth.credentials_dir(tmp_path) / "gateway.password"
    exposed.chmod(0o644)
    with pytest.raises(nats_auth.CredentialsError, match=r"gateway\.password: other users may"):
        nats_auth.ensure_credentials(tmp_path)


def test_serve_refuses_in_one_line_to_start_with_a_credentials_file_others_can_read(
    tmp_path: Path,
) -> None:
    nats_auth.ensure_credentials(embedded_dir(tmp_path))
    exposed = nats_auth.credentials_dir(embedded_dir(tmp_path)) / "auditor.password"
    exposed.chmod(0o640)
    result = CliRunner().invoke(
        app, ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: cannot start: {exposed}: other users may read it (mode 0640): chmod 600 it\n"
    )
    assert exposed.read_text().strip() not in result.output


# --- the embedded server, for real -------------------------------------------------------------


@dataclass
class Embedded:
    gateway: Gateway
    data_dir: Path

    @property
    def bare_url(self) -> str:
        url = running_url(self.data_dir)
        assert url is not None
        return url

    def url_as(self, role: Role) -> str:
        return nats_auth.embedded_url_as(self.bare_url, embedded_dir(self.data_dir), role)


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[Embedded]:
    """A gateway on its embedded nats-server (as `dutylink serve` runs it), one event stored."""
    config = config_for_tests(nats={"data_dir": str(tmp_path)})
    async with Gateway(config) as running:
        async with DutyLinkClient(running.address, token=TOKENS["fire"]) as fire:
            await fire.publish(incident_event())
        yield Embedded(running, tmp_path)


class Refusals:
    """A NATS client's error callback that records permission violations, so a test can wait
    for the one a publish or subscription provoked (the server answers with -ERR, no reply)."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._arrived = asyncio.Condition()

    async def record(self, error: Exception) -> None:
        async with self._arrived:
            self.messages.append(str(error).lower())
            self._arrived.notify_all()

    async def wait_for(self, kind: str, subject: str) -> None:
        wanted = f'permissions violation for {kind} to "{subject.lower()}"'
        async with asyncio.timeout(30), self._arrived:
            await self._arrived.wait_for(lambda: any(wanted in m for m in self.messages))


@dataclass
class Connection:
    client: NatsClient
    refusals: Refusals

    async def refused_publish(self, subject: str, payload: bytes = b"{}") -> None:
        await self.client.publish(subject, payload, reply=self.client.new_inbox())
        await self.client.flush()
        await self.refusals.wait_for("publish", subject)

    async def refused_subscription(self, subject: str) -> None:
        await self.client.subscribe(subject)
        await self.client.flush()
        await self.refusals.wait_for("subscription", subject)


async def _messages(embedded: Embedded, stream: str) -> int:
    servers, options = split_servers(embedded.url_as(GATEWAY))
    client = await nats.connect(servers, **options)
    try:
        return (await client.jetstream().stream_info(stream)).state.messages
    finally:
        await client.close()


async def _open(url: str) -> Connection:
    servers, options = split_servers(url)
    refusals = Refusals()
    client = await nats.connect(
        servers,
        **options,
        allow_reconnect=False,
        max_reconnect_attempts=0,
        error_cb=refusals.record,
    )
    return Connection(client, refusals)


async def test_a_connection_without_credentials_or_with_a_wrong_password_is_refused(
    embedded: Embedded,
) -> None:
    async def quiet(error: Exception) -> None:
        pass

    for url in (embedded.bare_url, embedded.bare_url.replace("nats://", "nats://gateway:wrong@")):
        servers, options = split_servers(url)
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(
                servers, **options, allow_reconnect=False, max_reconnect_attempts=0, error_cb=quiet
            )


async def test_the_credential_files_are_0600_and_the_server_config_holds_only_hashes(
    embedded: Embedded,
) -> None:
    directory = embedded_dir(embedded.data_dir)
    files = sorted(nats_auth.credentials_dir(directory).iterdir())
    assert [f.name for f in files] == [
        "auditor.password", "gateway.password", "operator.password", "witness.password"
    ]  # fmt: skip
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    server_config = (directory / "nats-server.conf").read_text()
    for file in files:
        assert file.read_text().strip() not in server_config
    assert server_config.count('password: "$2a$') == 4


async def test_the_gateway_user_cannot_delete_or_purge_a_stream(embedded: Embedded) -> None:
    gateway_user = await _open(embedded.url_as(GATEWAY))
    try:
        for stream in (subjects.AUDIT_STREAM, subjects.EVENTS_STREAM):
            await gateway_user.refused_publish(f"$JS.API.STREAM.DELETE.{stream}")
            await gateway_user.refused_publish(f"$JS.API.STREAM.PURGE.{stream}")
        await gateway_user.refused_publish(f"$JS.API.STREAM.MSG.DELETE.{subjects.EVENTS_STREAM}")
    finally:
        await gateway_user.client.close()
    assert await _messages(embedded, subjects.EVENTS_STREAM) == 1


async def test_the_cli_users_cannot_forge_events_nor_delete_purge_or_read_the_event_stream(
    embedded: Embedded,
) -> None:
    audit_entries = await _messages(embedded, subjects.AUDIT_STREAM)
    for role in (AUDITOR, OPERATOR):
        user = await _open(embedded.url_as(role))
        try:
            await user.refused_publish(EVENT_SUBJECT, b'{"source": "police"}')
            for stream in (subjects.AUDIT_STREAM, subjects.EVENTS_STREAM):
                await user.refused_publish(f"$JS.API.STREAM.DELETE.{stream}")
                await user.refused_publish(f"$JS.API.STREAM.PURGE.{stream}")
            await user.refused_publish(f"$JS.API.STREAM.MSG.GET.{subjects.EVENTS_STREAM}")
            await user.refused_publish(f"$JS.API.CONSUMER.CREATE.{subjects.EVENTS_STREAM}")
            await user.refused_subscription("_INBOX.>")  # the gateway's replies carry events
            await user.refused_subscription(f"{subjects.EVENTS_PREFIX}.>")
        finally:
            await user.client.close()
    assert await _messages(embedded, subjects.EVENTS_STREAM) == 1
    assert await _messages(embedded, subjects.AUDIT_STREAM) >= audit_entries


async def test_the_cli_users_do_their_jobs_audit_tail_and_dead_letter_list_and_replay(
    embedded: Embedded,
) -> None:
    runner = CliRunner()
    data_dir = str(embedded.data_dir)
    tailed = await asyncio.to_thread(
        runner.invoke, app, ["audit", "tail", "--gateway-id", "gw-1", "--data-dir", data_dir]
    )
    assert tailed.exit_code == 0, tailed.output
    assert " PUBLISH ACCEPTED fire " in tailed.stdout

    gateway_user = await _open(embedded.url_as(GATEWAY))
    try:  # a dead letter as the gateway files one when a subscriber gives up
        letter = await gateway_user.client.jetstream().publish(
            subjects.deadletter_subject("police", "poison"),
            incident_event().SerializeToString(),
            stream=subjects.DEADLETTER_STREAM,
            headers={"ce-id": "evt-1", "ce-source": "fire", "Dutylink-Deliveries": "5"},
        )
    finally:
        await gateway_user.client.close()
    listed = await asyncio.to_thread(
        runner.invoke, app, ["deadletter", "list", "--data-dir", data_dir]
    )
    assert listed.exit_code == 0, listed.output
    assert "evt-1" in listed.stdout
    replayed = await asyncio.to_thread(
        runner.invoke, app, ["deadletter", "replay", str(letter.seq), "--data-dir", data_dir]
    )
    assert replayed.exit_code == 0, replayed.output
    assert "replayed to police/poison as stream sequence 2" in replayed.stdout
    assert await _messages(embedded, subjects.EVENTS_STREAM) == 2
    # The replay's fact is in the operator log, signed, and an auditor can verify it.
    operator_log = ["--gateway-id", "gw-1-operator", "--data-dir", data_dir]
    verified = await asyncio.to_thread(runner.invoke, app, ["audit", "verify", *operator_log])
    assert verified.exit_code == 0, verified.output
    assert "audit log gw-1-operator: 1 entry, 1 checkpoint, all verified" in verified.stdout


async def test_a_replay_for_another_gateway_id_cannot_write_its_operator_log_and_replays_nothing(
    embedded: Embedded, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway_user = await _open(embedded.url_as(GATEWAY))
    try:
        letter = await gateway_user.client.jetstream().publish(
            subjects.deadletter_subject("police", "poison"),
            incident_event().SerializeToString(),
            stream=subjects.DEADLETTER_STREAM,
            headers={"ce-id": "evt-1", "ce-source": "fire", "Dutylink-Deliveries": "5"},
        )
    finally:
        await gateway_user.client.close()
    monkeypatch.setenv("DUTYLINK_GATEWAY_GATEWAY_ID", "gw-2")  # not the embedded server's
    args = ["deadletter", "replay", str(letter.seq), "--data-dir", str(embedded.data_dir)]
    replayed = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert replayed.exit_code == 1
    assert f"dead letter {letter.seq}: audit log append failed" in replayed.stderr
    assert "Traceback" not in replayed.output
    assert await _messages(embedded, subjects.EVENTS_STREAM) == 1


async def test_audit_verify_store_on_the_embedded_server_checks_every_stored_event(
    embedded: Embedded,
) -> None:
    # The first event's STORED entry goes into the log with the next append.
    async with DutyLinkClient(embedded.gateway.address, token=TOKENS["fire"]) as fire:
        await fire.publish(incident_event())
    args = ["audit", "verify", "--store", "--gateway-id", "gw-1", "--data-dir"]
    result = await asyncio.to_thread(CliRunner().invoke, app, [*args, str(embedded.data_dir)])
    assert result.exit_code == 0, result.output
    assert "1 acknowledged event present at their sequences" in result.stdout


async def test_the_store_witness_reads_events_and_audit_by_message_gets_only(
    embedded: Embedded,
) -> None:
    witness = await _open(embedded.url_as(WITNESS))
    try:
        js = witness.client.jetstream()
        assert (await js.get_msg(subjects.EVENTS_STREAM, seq=1)).data
        assert (await js.stream_info(subjects.AUDIT_STREAM)).state.messages > 0
        await witness.refused_publish(EVENT_SUBJECT, b'{"source": "police"}')
        await witness.refused_publish(subjects.audit_entries("gw-1"))
        await witness.refused_publish(f"{subjects.REDELIVER_PREFIX}.police.poison")
        for stream in (subjects.AUDIT_STREAM, subjects.EVENTS_STREAM):
            await witness.refused_publish(f"$JS.API.STREAM.DELETE.{stream}")
            await witness.refused_publish(f"$JS.API.STREAM.PURGE.{stream}")
            await witness.refused_publish(f"$JS.API.STREAM.MSG.DELETE.{stream}")
            await witness.refused_publish(f"$JS.API.STREAM.UPDATE.{stream}")
        # No consumer at all: a push consumer's deliver subject could be any subject.
        await witness.refused_publish(f"$JS.API.CONSUMER.CREATE.{subjects.EVENTS_STREAM}")
        await witness.refused_publish(f"$JS.API.CONSUMER.DURABLE.CREATE.{subjects.EVENTS_STREAM}.x")
        await witness.refused_publish(f"$JS.API.STREAM.MSG.GET.{subjects.DEADLETTER_STREAM}")
        await witness.refused_subscription("_INBOX.>")
        await witness.refused_subscription(f"{subjects.EVENTS_PREFIX}.>")
    finally:
        await witness.client.close()
    assert await _messages(embedded, subjects.EVENTS_STREAM) == 1


async def test_the_operator_writes_only_its_own_gateways_operator_log(embedded: Embedded) -> None:
    operator = await _open(embedded.url_as(OPERATOR))
    try:
        for log_id in ("gw-1", "gw-2-operator", "gw-1-operator.x", "other"):
            await operator.refused_publish(subjects.audit_entries(log_id))
            await operator.refused_publish(subjects.audit_checkpoints(log_id))
        # Not even create: on a fresh cluster it could set up a deletable audit stream first.
        await operator.refused_publish(f"$JS.API.STREAM.CREATE.{subjects.AUDIT_STREAM}")
        await operator.refused_publish(f"$JS.API.STREAM.UPDATE.{subjects.AUDIT_STREAM}")
        await operator.refused_publish(f"$JS.API.STREAM.CREATE.{subjects.EVENTS_STREAM}")
        await operator.refused_publish(f"$JS.API.STREAM.MSG.GET.{subjects.EVENTS_STREAM}")
        await operator.refused_publish(f"$JS.API.STREAM.MSG.DELETE.{subjects.AUDIT_STREAM}")
        await operator.refused_publish(f"$JS.API.CONSUMER.CREATE.{subjects.AUDIT_STREAM}")
    finally:
        await operator.client.close()


async def test_the_gateway_user_keeps_aggregates_in_their_bucket_and_no_cli_user_writes_there(
    embedded: Embedded,
) -> None:
    gateway_user = await _open(embedded.url_as(GATEWAY))
    try:
        store = await JetStreamKeyValue.open(
            gateway_user.client.jetstream(), BucketSpec(AGGREGATES_BUCKET)
        )
        first = await store.create("lifecycle.incident.i-1", b"reported")
        second = await store.update("lifecycle.incident.i-1", b"dispatched", first)
        assert await store.get("lifecycle.incident.i-1") == Versioned(b"dispatched", second)
        assert "lifecycle.incident.i-1" in await store.keys("lifecycle", limit=100)
        await gateway_user.refused_publish(f"$JS.API.STREAM.PURGE.KV_{AGGREGATES_BUCKET}")
    finally:
        await gateway_user.client.close()
    for role in (AUDITOR, WITNESS, OPERATOR):
        user = await _open(embedded.url_as(role))
        try:
            await user.refused_publish(f"$KV.{AGGREGATES_BUCKET}.lifecycle.incident.i-1")
        finally:
            await user.client.close()


async def test_a_restarted_gateway_reuses_its_credentials(tmp_path: Path) -> None:
    config = config_for_tests(nats={"data_dir": str(tmp_path)})
    async with Gateway(config):
        first = nats_auth.ensure_credentials(embedded_dir(tmp_path))
    again = Gateway(config)
    async with again, DutyLinkClient(again.address, token=TOKENS["fire"]) as fire:
        assert (await fire.publish(incident_event())).stream_sequence > 0
    assert nats_auth.ensure_credentials(embedded_dir(tmp_path)) == first


# --- no secret is shown ------------------------------------------------------------------------


def test_config_show_never_prints_the_nats_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUTYLINK_NATS_URL", "nats://gateway:Sekr3tPw@127.0.0.1:4222")
    shown = CliRunner().invoke(app, ["config", "show"])
    assert shown.exit_code == 0, shown.output
    assert "Sekr3tPw" not in shown.output
    assert '"url": "nats://gateway:***@127.0.0.1:4222"' in shown.output


def test_the_demo_shows_where_nats_is_without_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        gateway.cli.demo, "run_demo", functools.partial(gateway.cli.demo.run_demo, pause=0)
    )
    result = CliRunner().invoke(
        app, ["demo", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    passwords = nats_auth.ensure_credentials(embedded_dir(tmp_path)).passwords.values()
    assert not any(password in result.output for password in passwords)
    assert "NATS JetStream at nats://gateway:***@127.0.0.1:" in result.output


def test_a_connection_error_names_the_server_without_its_password(tmp_path: Path) -> None:
    signer = load_or_create_signer(tmp_path / "gw-1.key", "dutylink/audit/gw-1")
    key = signer.verifier().key_string()
    result = CliRunner().invoke(
        app,
        ["audit", "verify", "--gateway-id", "gw-1", "--key", key, "--data-dir", str(tmp_path),
         "--nats-url", "nats://auditor:Sekr3tPw@127.0.0.1:1"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "Sekr3tPw" not in result.output
    assert "cannot connect to NATS at nats://auditor:***@127.0.0.1:1" in result.stderr
