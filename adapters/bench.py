"""`python -m dutylink.adapters.bench`: records per second through the adapters into the gateway, each
beside the gateway's own PublishBatch rate for the same events in the same run (medians).

Each run starts a fresh nats-server and gateway (sample policies, audit log on) on loopback:
- the gateway's own rate: the events the adapter would make, sent with PublishBatch (500 per
  call) by the SDK, counted in the records they came from (an EDXL-DE envelope makes several);
- the adapter's rate: records already waiting in its drop directory when it starts, until the
  gateway has stored the last one (parsing, schema validation, mapping, batching included).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import re
import statistics
import tempfile
import time
import tomllib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from dutylink.adapters.cap.adapter import KIND as CAP
from dutylink.adapters.cap.mapping import inbound_mapping as cap_mapping
from dutylink.adapters.edxl.adapter import KIND as EDXL
from dutylink.adapters.edxl.mapping import inbound_mapping as edxl_mapping
from dutylink.adapters.filedrop.adapter import KIND as FILEDROP
from dutylink.adapters.framework import AdapterKind
from dutylink.adapters.mapping import JsonMapping
from dutylink.adapters.records import InboundMapping, Record, events_of
from dutylink.adapters.runner import AdapterConfig, AdapterRunner
from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import event_pb2
from gateway.config import load, sample_tokens
from gateway.server import Gateway
from gateway.store.nats_server import NatsServer

CAP_SAMPLE = Path(__file__).parent / "cap" / "samples" / "dutylink-rainstorm-orange-alert.xml"
RM_SAMPLE = Path(__file__).parent / "edxl" / "samples" / "01-request-resource.xml"
DE_SAMPLE = Path(__file__).parent / "edxl" / "samples" / "de-envelope-cap-and-request-resource.xml"
GAS_SAMPLE = Path(__file__).parent / "filedrop" / "samples" / "gas-alarms.toml"
GAS_JSONL = Path(__file__).parent / "filedrop" / "samples" / "gas-alarms.jsonl"
BATCH = 500


@dataclass(frozen=True)
class Workload:
    """What one adapter is measured on."""

    name: str
    kind: AdapterKind
    agency: str
    options: Callable[[Path], Mapping[str, Any]]  # inbox -> the adapter's [options]
    write_records: Callable[[Path, int], list[Record]]  # (inbox, count) -> what was written
    mapping: InboundMapping  # to build the same events for the gateway's own rate


# The elements that name a document (and its events): made unique per written copy.
_ID_ELEMENTS = rb"(<(?:[A-Za-z]+:)?(?:identifier|MessageID|distributionID)>)([^<]*)(</)"


def _xml_records(template: Path, stem: str) -> Callable[[Path, int], list[Record]]:
    """Writes `count` copies of an XML sample, each with ids of its own."""

    def write(inbox: Path, count: int) -> list[Record]:
        data = template.read_bytes()
        records = []
        for index in range(count):
            unique = f"BENCH-{time.time_ns()}-{index}".encode()
            body = re.sub(_ID_ELEMENTS, rb"\g<1>\g<2>-" + unique + rb"\g<3>", data)
            (inbox / f"{stem}-{index:06}.xml").write_bytes(body)
            records.append(Record(f"{stem}-{index}", body, "bench"))
        return records

    return write


CAP_WORKLOAD = Workload(
    name="CAP 1.2 files (one alert each)",
    kind=CAP,
    agency="weather",
    options=lambda inbox: {
        "system": "bench",
        "division_code": "310000",
        "inbound": {"directory": str(inbox), "poll_seconds": 0.05},
    },
    write_records=_xml_records(CAP_SAMPLE, "alert"),
    mapping=cap_mapping("bench", "310000"),
)

_EDXL_OPTIONS = {"system": "bench", "division_code": "310115", "classification": "INTERNAL"}

RM_WORKLOAD = Workload(
    name="EDXL-RM files (one message each)",
    kind=EDXL,
    agency="emergency",
    options=lambda inbox: {
        **_EDXL_OPTIONS,
        "inbound": {"directory": str(inbox), "poll_seconds": 0.05},
    },
    write_records=_xml_records(RM_SAMPLE, "request"),
    mapping=edxl_mapping("bench", "310115", "INTERNAL"),
)

DE_WORKLOAD = Workload(
    name="EDXL-DE files (CAP + RM each)",
    kind=EDXL,
    agency="emergency",
    options=RM_WORKLOAD.options,
    write_records=_xml_records(DE_SAMPLE, "envelope"),
    mapping=RM_WORKLOAD.mapping,
)


def _gas_options() -> dict[str, Any]:
    options = tomllib.loads(GAS_SAMPLE.read_text(encoding="utf-8"))["options"]
    return {"mapping": options["mapping"]}


def _jsonl_records(inbox: Path, count: int) -> list[Record]:
    template = json.loads(GAS_JSONL.read_text(encoding="utf-8").splitlines()[0])
    lines = []
    for index in range(count):
        template["alarm_id"] = f"GAS-BENCH-{time.time_ns()}-{index}"
        lines.append(json.dumps(template, ensure_ascii=False))
    (inbox / "alarms.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [Record(str(i), line.encode(), "bench") for i, line in enumerate(lines)]


FILEDROP_WORKLOAD = Workload(
    name="file drop, one JSON Lines file",
    kind=FILEDROP,
    agency="energy",
    options=lambda inbox: {
        **_gas_options(),
        "inbound": {
            "directory": str(inbox),
            "format": "jsonl",
            "poll_seconds": 0.05,
            "batch_size": BATCH,
        },
    },
    write_records=_jsonl_records,
    mapping=JsonMapping.from_options(_gas_options()["mapping"]).to_events,
)


WORKLOADS = [CAP_WORKLOAD, RM_WORKLOAD, DE_WORKLOAD, FILEDROP_WORKLOAD]


@dataclass(frozen=True)
class Rates:
    adapter: float
    gateway: float


def _published(runner: AdapterRunner) -> float:
    value = runner.metrics.registry.get_sample_value(
        "dutylink_adapter_events_published_total", {"adapter": runner.kind.name}
    )
    return value or 0.0


async def _until_published(runner: AdapterRunner, count: int) -> None:
    for _ in range(60_000):  # 10 minutes at most
        if _published(runner) >= count:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{runner.kind.name}: {_published(runner):.0f} of {count} published")


async def _measure(workload: Workload, directory: Path, *, count: int) -> Rates:
    inbox = directory / "inbox"
    inbox.mkdir()
    records = await asyncio.to_thread(workload.write_records, inbox, count)
    config = load(None, environ={})
    config = dataclasses.replace(
        config,
        # The same records go in twice (directly, then through the adapter): a bare pipe, or
        # the second report of each incident would be refused by its lifecycle.
        gateway=dataclasses.replace(config.gateway, listen="127.0.0.1:0", enforce_lifecycles=False),
        nats=dataclasses.replace(config.nats, data_dir=str(directory / "gateway")),
    )
    token = sample_tokens()[workload.agency]
    async with (
        NatsServer(directory / "nats") as server,
        Gateway(config, nats_url=server.url) as gateway,
    ):
        events: list[event_pb2.Event] = [e for r in records for e in events_of(workload.mapping(r))]
        for event in events:  # not the adapter's ids: those must be new to the gateway
            event.id = f"direct.{event.id}"
        async with DutyLinkClient(gateway.address, token=token) as client:
            started = time.perf_counter()
            for offset in range(0, len(events), BATCH):
                results = await client.publish_batch(events[offset : offset + BATCH])
                if failed := [r for r in results if r.HasField("error")]:
                    raise RuntimeError(f"gateway refused: {failed[0].error.message}")
            direct = len(records) / (time.perf_counter() - started)
        runner = AdapterRunner(
            workload.kind,
            AdapterConfig(
                file=directory / "adapter.toml", gateway=gateway.address, token=SecretStr(token),
                state_dir=directory / "state", batch_size=BATCH,
                options=workload.options(inbox),
            ),
        )  # fmt: skip
        started = time.perf_counter()
        task = asyncio.create_task(runner.run())
        try:
            await _until_published(runner, len(events))
            through = len(records) / (time.perf_counter() - started)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return Rates(through, direct)


async def _repeat(runs: int, measure: Callable[[Path], Awaitable[Rates]]) -> list[Rates]:
    samples = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="dutylink-adapter-bench-") as directory:
            samples.append(await measure(Path(directory)))
    return samples


async def run(workloads: list[Workload], runs: int = 3, count: int = 2000) -> None:
    print(f"adapters into the gateway, median of {runs} runs, {count} records each")
    print(f"{'adapter':<40} {'records/s':>10} {'gateway batch records/s':>24} {'ratio':>6}")
    for workload in workloads:
        samples = await _repeat(runs, functools.partial(_measure, workload, count=count))
        adapter = statistics.median(s.adapter for s in samples)
        gateway = statistics.median(s.gateway for s in samples)
        print(f"{workload.name:<40} {adapter:>10,.0f} {gateway:>24,.0f} {adapter / gateway:>6.2f}")


def main() -> None:
    import sys

    from gateway.telemetry import logs

    logs.configure("error")
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    asyncio.run(run(WORKLOADS, count=count))


if __name__ == "__main__":
    main()
