"""The file-drop adapter against a real gateway: JSON Lines and CSV files in, malformed lines
and unreadable files kept with their reasons, a crash mid-file resumed without duplicate or
gap, and other agencies' events out as files."""

from __future__ import annotations

import asyncio
import copy
import csv
import io
import json
import tomllib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from dutylink.adapters.filedrop.adapter import FORMATS, KIND, build
from dutylink.adapters.framework import AdapterKind, Pipeline, RejectedStore
from dutylink.adapters.metrics import Metrics
from dutylink.adapters.records import Record, RecordOutcome, Rejected
from dutylink.adapters.runner import AdapterConfig, AdapterConfigError, AdapterRunner
from dutylink.adapters.sdk.client import DutyLinkClient, Subscription
from dutylink.policies.engine import Evaluator
from dutylink.policies.loader import load_policy, policy_files
from dutylink.v1 import event_pb2, incident_pb2
from gateway.core.validation import Validator
from gateway.server import Gateway
from tests.conftest import TOKENS
from tests.factories import incident_event

SAMPLES = Path(__file__).parent.parent / "adapters" / "filedrop" / "samples"
SAMPLE_OPTIONS: dict[str, Any] = tomllib.loads((SAMPLES / "gas-alarms.toml").read_text())["options"]


@pytest.fixture
def gateway(pipe_gateway: Gateway) -> Gateway:
    """Standards samples, not one loop: see pipe_gateway."""
    return pipe_gateway


async def until(condition: Callable[[], bool], seconds: float = 15) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"not within {seconds} s")


async def read_events(
    subscription: Subscription, count: int, settle: float = 0.5
) -> list[event_pb2.Event]:
    """`count` deliveries (acked), then whatever else arrives within `settle` seconds: a
    duplicate would show up there."""
    events: list[event_pb2.Event] = []
    while True:
        try:
            delivery = await subscription.next(timeout=15 if len(events) < count else settle)
        except TimeoutError:
            if len(events) < count:
                raise
            return events
        assert delivery is not None
        events.append(delivery.event)
        await subscription.ack(delivery)


def options(
    tmp_path: Path, file_format: str, *, system: str = "gas-scada", **inbound: Any
) -> dict[str, Any]:
    """The sample config's options, with directories under tmp_path and fast polling."""
    chosen = copy.deepcopy(SAMPLE_OPTIONS)
    chosen["inbound"].update(
        directory=str(tmp_path / f"drop-{file_format}"),
        format=file_format,
        poll_seconds=0.05,
        **inbound,
    )
    chosen["mapping"]["system"] = system
    del chosen["outbound"]
    return chosen


def runner(
    gateway: Gateway, tmp_path: Path, name: str, agency: str, opts: Mapping[str, Any]
) -> AdapterRunner:
    return AdapterRunner(
        KIND,
        AdapterConfig(
            file=tmp_path / f"{name}.toml",
            gateway=gateway.address,
            token=SecretStr(TOKENS[agency]),
            state_dir=tmp_path / f"state-{name}",
            options=opts,
        ),
    )


@asynccontextmanager
async def running(*runners: AdapterRunner) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(r.run()) for r in runners]
    try:
        for r in runners:
            await asyncio.wait_for(r.wait_started(), 10)
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def open_durable(
    gateway: Gateway, agency: str, kind: AdapterKind, opts: Mapping[str, Any]
) -> None:
    """Create the adapter's outbound subscription before anything is published: a durable
    subscription then gets every later event however late the adapter opens it (a new one
    starts at the next event), so no test needs to sleep until it is open."""
    (outbound,) = kind.build(opts, Path("state")).outbound
    wanted = outbound.subscription
    async with (
        DutyLinkClient(gateway.address, token=TOKENS[agency]) as client,
        client.subscribe(
            wanted.name,
            families=wanted.families,
            types=wanted.types,
            jurisdiction_prefixes=wanted.jurisdiction_prefixes,
        ),
    ):
        pass


def drop(directory: Path, name: str, data: bytes) -> None:
    """The drop contract: write under a dot-name, rename into the inbox when complete."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f".{name}.part").write_bytes(data)
    (directory / f".{name}.part").rename(directory / name)


def reasons(state: Path) -> dict[str, str]:
    """origin -> reason of every record kept in <state>/rejected/."""
    found = {}
    for path in (state / "rejected").glob("*.reason.json"):
        kept = json.loads(path.read_text(encoding="utf-8"))
        found[kept["origin"]] = kept["reason"]
    return found


def metric(r: AdapterRunner, name: str) -> float:
    value = r.metrics.registry.get_sample_value(name, {"adapter": "filedrop"})
    return value or 0.0


# --- inbound ----------------------------------------------------------------------------------


async def test_jsonl_and_csv_files_are_published_and_their_bad_lines_kept_with_the_line(
    gateway: Gateway, tmp_path: Path
) -> None:
    csv_runner = runner(gateway, tmp_path, "csv", "energy", options(tmp_path, "csv"))
    jsonl_runner = runner(
        gateway, tmp_path, "jsonl", "energy", options(tmp_path, "jsonl", system="gas-jsonl")
    )
    async with (
        DutyLinkClient(gateway.address, token=TOKENS["police"]) as police,
        police.subscribe("reader", families=["incident"]) as subscription,
        running(csv_runner, jsonl_runner),
    ):
        drop(tmp_path / "drop-csv", "gas-alarms.csv", (SAMPLES / "gas-alarms.csv").read_bytes())
        drop(
            tmp_path / "drop-jsonl", "gas-alarms.jsonl", (SAMPLES / "gas-alarms.jsonl").read_bytes()
        )
        events = await read_events(subscription, 10)
        await until(
            lambda: (tmp_path / "state-jsonl" / "drop" / "done" / "gas-alarms.jsonl").exists()
        )
        await until(lambda: (tmp_path / "state-csv" / "drop" / "done" / "gas-alarms.csv").exists())

    good = ["0031", "0032", "0033", "0034", "0037"]
    assert sorted(e.id for e in events) == sorted(
        [f"gas-scada:GAS-310115-20261123-{n}" for n in good]
        + [f"gas-jsonl:GAS-310115-20261123-{n}" for n in good]
    ), "every good line exactly once, the bad ones not at all"
    first = next(e for e in events if e.id == "gas-scada:GAS-310115-20261123-0031")
    assert first.source == "energy" and first.type == "incident.reported"
    assert first.priority == event_pb2.PRIORITY_FLASH
    assert first.incident.category == incident_pb2.INCIDENT_CATEGORY_GAS_LEAK
    assert first.incident.location.point.latitude == pytest.approx(31.2401)
    assert first.incident.location.jurisdiction.street_code == "005"
    assert first.incident.reported_at.ToJsonString() == "2026-11-23T06:01:40Z"
    assert reasons(tmp_path / "state-csv") == {
        "gas-alarms.csv:6": "incident.location.point.latitude: could not convert string to float: '31.24N'",
        "gas-alarms.csv:7": "1 more fields than the header",
    }
    jsonl_reasons = reasons(tmp_path / "state-jsonl")
    assert jsonl_reasons["gas-alarms.jsonl:5"] == "priority ('level'): 9 is not one of 1, 2, 3"
    assert jsonl_reasons["gas-alarms.jsonl:7"].startswith("not JSON: Unterminated string")
    assert len(jsonl_reasons) == 2
    assert not list((tmp_path / "state-csv" / "drop" / "processing").iterdir())


async def test_an_unreadable_file_is_rejected_whole_with_its_reason(
    gateway: Gateway, tmp_path: Path
) -> None:
    csv_runner = runner(gateway, tmp_path, "csv", "energy", options(tmp_path, "csv"))
    jsonl_runner = runner(gateway, tmp_path, "jsonl", "energy", options(tmp_path, "jsonl"))
    gbk = (SAMPLES / "gas-alarms.csv").read_text(encoding="utf-8").encode("gb18030")
    async with running(csv_runner, jsonl_runner):
        drop(tmp_path / "drop-csv", "gbk.csv", gbk)  # a spreadsheet's "ANSI" export
        drop(tmp_path / "drop-csv", "empty.csv", b"")
        drop(
            tmp_path / "drop-jsonl",
            "gbk.jsonl",
            (SAMPLES / "gas-alarms.jsonl").read_text(encoding="utf-8").encode("gb18030"),
        )
        rejected_csv = tmp_path / "state-csv" / "drop" / "rejected"
        rejected_jsonl = tmp_path / "state-jsonl" / "drop" / "rejected"
        await until(lambda: len(list(rejected_csv.glob("*.reason.txt"))) == 2)
        await until(lambda: (rejected_jsonl / "gbk.jsonl.reason.txt").exists())
    assert (rejected_csv / "gbk.csv").read_bytes() == gbk, "kept as received"
    assert (
        (rejected_csv / "gbk.csv.reason.txt")
        .read_text()
        .startswith("not UTF-8 text: 'utf-8' codec can't decode byte")
    )
    assert (rejected_csv / "empty.csv.reason.txt").read_text() == "no header row\n"
    assert (rejected_jsonl / "gbk.jsonl.reason.txt").read_text().startswith("not UTF-8 text")
    for r in (csv_runner, jsonl_runner):
        assert metric(r, "dutylink_adapter_records_in_total") == 0, "no line of them published"


async def test_a_symlink_in_the_drop_directory_is_refused_without_reading_its_target(
    gateway: Gateway, tmp_path: Path
) -> None:
    secret = tmp_path / "elsewhere" / "secret.csv"
    secret.parent.mkdir()
    secret.write_bytes((SAMPLES / "gas-alarms.csv").read_bytes())
    secret.chmod(0o600)
    before = secret.stat()
    csv_runner = runner(gateway, tmp_path, "csv", "energy", options(tmp_path, "csv"))
    inbox = tmp_path / "drop-csv"
    inbox.mkdir()
    (inbox / "linked.csv").symlink_to(secret)
    rejected = tmp_path / "state-csv" / "drop" / "rejected"
    async with running(csv_runner):
        await until(lambda: (rejected / "linked.csv.reason.txt").exists())
    assert (rejected / "linked.csv").is_symlink(), "the link itself is set aside"
    assert "symbolic link" in (rejected / "linked.csv.reason.txt").read_text()
    after = secret.stat()
    assert (after.st_mode, after.st_size, after.st_mtime_ns) == (
        before.st_mode, before.st_size, before.st_mtime_ns,
    ), "the target is untouched"  # fmt: skip
    assert secret.read_bytes() == (SAMPLES / "gas-alarms.csv").read_bytes()
    assert not reasons(tmp_path / "state-csv"), "no record of the target was read"
    assert metric(csv_runner, "dutylink_adapter_records_in_total") == 0
    assert not list(inbox.iterdir())


async def test_done_and_rejected_copies_keep_the_mode_of_the_dropped_file(
    gateway: Gateway, tmp_path: Path
) -> None:
    csv_runner = runner(gateway, tmp_path, "csv", "energy", options(tmp_path, "csv"))
    inbox = tmp_path / "drop-csv"
    inbox.mkdir()
    part = inbox / ".alarms.csv.part"
    part.write_bytes((SAMPLES / "gas-alarms.csv").read_bytes())  # two bad lines among them
    part.chmod(0o600)
    part.rename(inbox / "alarms.csv")
    done = tmp_path / "state-csv" / "drop" / "done" / "alarms.csv"
    async with running(csv_runner):
        await until(done.exists)
    kept = list((tmp_path / "state-csv" / "rejected").iterdir())
    assert len(kept) == 4, "two bad lines, each a record and its reason"
    assert {oct(p.stat().st_mode & 0o777) for p in [done, *kept]} == {oct(0o600)}


class CrashingPipeline(Pipeline):
    """The real pipeline, which dies (hangs until killed) right after publishing its
    `crash_on`-th batch: before DirectorySource writes that batch's progress."""

    def __init__(self, *args: Any, crash_on: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.crash_on = crash_on
        self.calls: list[list[RecordOutcome]] = []
        self.crashed = asyncio.Event()

    async def publish(self, records: Sequence[Record]) -> list[RecordOutcome]:
        outcomes = await super().publish(records)
        self.calls.append(outcomes)
        if len(self.calls) == self.crash_on:
            self.crashed.set()
            await asyncio.Event().wait()  # killed here
        return outcomes


def alarms_csv(count: int) -> bytes:
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(["alarm_id", "detected_at", "level", "title", "address", "district"])
    for n in range(1, count + 1):
        writer.writerow(
            [f"GAS-T-{n}", "2026-11-23T14:00:00+08:00", "2", f"alarm {n}", "华夏路90号", "310115"]
        )
    return text.getvalue().encode()


async def test_killed_mid_file_and_restarted_publishes_every_record_exactly_once(
    gateway: Gateway, tmp_path: Path
) -> None:
    opts = options(tmp_path, "csv", batch_size=2)  # progress after every 2 records
    state = tmp_path / "state-crash"
    processing = state / "drop" / "processing"
    expected = [f"gas-scada:GAS-T-{n}" for n in range(1, 8)]
    async with (
        DutyLinkClient(gateway.address, token=TOKENS["police"]) as police,
        police.subscribe("reader", families=["incident"]) as subscription,
    ):
        # First life: batch 1 (records 1-2) is published and checkpointed; batch 2 (records
        # 3-4) is published, then the process dies before its checkpoint: the batch in doubt.
        plan = build(opts, state)
        assert plan.inbound is not None
        async with DutyLinkClient(gateway.address, token=TOKENS["energy"]) as energy:
            pipeline = CrashingPipeline(
                energy,
                plan.inbound,
                RejectedStore(state / "rejected"),
                Metrics("filedrop"),
                crash_on=2,
            )
            source = asyncio.create_task(plan.sources[0].run(pipeline))
            drop(tmp_path / "drop-csv", "alarms.csv", alarms_csv(7))
            await asyncio.wait_for(pipeline.crashed.wait(), 15)
            source.cancel()
            await asyncio.gather(source, return_exceptions=True)
        assert (processing / "alarms.csv.progress").read_text() == "2"
        in_doubt = [o.receipts[0] for o in pipeline.calls[1]]
        assert [o.record.origin for o in pipeline.calls[1]] == ["alarms.csv:4", "alarms.csv:5"]
        assert all(not receipt.duplicate for receipt in in_doubt), "stored before the crash"

        # Second life: the real adapter on the same state directory.
        restarted = runner(gateway, tmp_path, "crash", "energy", opts)
        async with running(restarted):
            events = await read_events(subscription, len(expected), settle=1.0)
            await until(lambda: (state / "drop" / "done" / "alarms.csv").exists())
    assert Counter(e.id for e in events) == Counter(expected), "no duplicate, no gap"
    assert metric(restarted, "dutylink_adapter_records_in_total") == 5, (
        "resumed at the batch in doubt (records 3-7), not at the start"
    )
    assert metric(restarted, "dutylink_adapter_events_published_total") == 5
    assert not list(processing.iterdir()), "progress file removed with the file"


# --- outbound ---------------------------------------------------------------------------------


async def test_other_agencies_events_arrive_as_files_in_the_outbox(
    gateway: Gateway, tmp_path: Path
) -> None:
    as_csv = {"outbound": {**SAMPLE_OPTIONS["outbound"], "directory": str(tmp_path / "out-csv")}}
    as_json = {
        "outbound": {
            "subscription": "json-desk",
            "families": ["incident"],
            "from_agencies": ["police"],
            "directory": str(tmp_path / "out-json"),
        }
    }
    event, own = incident_event(), incident_event()
    await open_durable(gateway, "energy", KIND, as_csv)
    await open_durable(gateway, "housing", KIND, as_json)
    async with (
        running(
            runner(gateway, tmp_path, "out-csv", "energy", as_csv),
            runner(gateway, tmp_path, "out-json", "housing", as_json),
        ),
        DutyLinkClient(gateway.address, token=TOKENS["police"]) as police,
        DutyLinkClient(gateway.address, token=TOKENS["energy"]) as energy,
    ):
        await energy.publish(own)  # the energy bureau's own event: not written back to it
        await police.publish(event)
        csv_file = tmp_path / "out-csv" / f"police.{event.id}.csv"
        json_file = tmp_path / "out-json" / f"police.{event.id}.json"
        await until(lambda: csv_file.exists() and json_file.exists())
        await asyncio.sleep(0.3)
    assert [p.name for p in (tmp_path / "out-csv").iterdir()] == [csv_file.name]
    header, row = list(csv.reader(io.StringIO(csv_file.read_text(encoding="utf-8"))))
    assert header == list(SAMPLE_OPTIONS["outbound"]["fields"])
    written = dict(zip(header, row, strict=True))
    assert written["source"] == "police" and written["event_id"] == event.id
    assert written["category"] == "INCIDENT_CATEGORY_HAZARDOUS_CHEMICALS"
    assert written["title"] == event.incident.title and written["division_code"] == "310115"
    document = json.loads(json_file.read_text(encoding="utf-8"))
    assert (
        document["id"] == event.id
        and document["incident"]["incident_id"] == event.incident.incident_id
    )
    assert [p.name for p in (tmp_path / "out-json").iterdir()] == [json_file.name]


# --- configuration and samples ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"inbound": {"directory": "d", "format": "xml"}},
            "[options.inbound] format: 'xml' is not one of jsonl, csv",
        ),
        ({"inbound": {"directory": "d", "formt": "csv"}}, "[options.inbound] unknown key 'formt'"),
        ({"inbound": {"format": "csv"}}, "[options.inbound] directory: required"),
        (
            {"inbound": {"directory": "d", "poll_seconds": 0}},
            "[options.inbound] poll_seconds: must be a number greater than 0",
        ),
        (
            {"outbound": {"directory": "o", "families": ["incident"], "format": "csv"}},
            '[options.outbound] fields: required with format = "csv"',
        ),
        ({"outbound": {"directory": "o"}}, "[options.outbound] give families, types or both"),
        (
            {"inbound": {"directory": "d", "batch_size": 2.5}},
            "[options.inbound] batch_size: must be a whole number of at least 1",
        ),
        (
            {"inbound": {"directory": "d"}, "mapping": {"id": "x"}},
            "[options.mapping] system: required, a non-empty string",
        ),
        ({}, "give [options.inbound], [options.outbound] or both"),
    ],
)
def test_bad_options_are_refused_naming_the_key(change: dict[str, Any], message: str) -> None:
    opts: dict[str, Any] = {"mapping": SAMPLE_OPTIONS["mapping"], **change}
    with pytest.raises(AdapterConfigError) as refused:
        build(opts, Path("state"))
    assert message in str(refused.value)


def test_the_sample_files_map_to_valid_events_the_sample_policy_lets_energy_publish() -> None:
    plan = build(SAMPLE_OPTIONS, Path("state"))
    assert plan.inbound is not None
    policy, validator = Evaluator(load_policy(policy_files())), Validator()
    for name, file_format in (("gas-alarms.csv", "csv"), ("gas-alarms.jsonl", "jsonl")):
        mapped = 0
        for record in FORMATS[file_format][1](name, (SAMPLES / name).read_bytes()):
            try:
                events = plan.inbound(record) if not record.problem else []
            except Rejected:
                continue  # the malformed sample lines (checked end to end above)
            for event in events:
                event.source = "energy"
                assert validator.problems(event) == [], record.origin
                assert policy.decide("energy", frozenset(), "publish", event).allowed
                mapped += 1
        assert mapped == 5, name
