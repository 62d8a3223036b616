"""`dutylink publish`, `subscribe` and `emergency`, as real processes against a real gateway;
and the examples in proto/examples, each accepted from the agency its name gives."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf import json_format

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.policies.loader import SAMPLE_DIR
from dutylink.v1 import event_pb2, gateway_pb2
from gateway.config import sample_tokens
from gateway.server import Gateway
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.loop_support import incident as loop_incident

EXAMPLES = Path(__file__).resolve().parents[1] / "proto" / "examples"
TOKENS = sample_tokens()


@pytest.fixture
async def sample_gateway(nats_url: str) -> AsyncIterator[Gateway]:
    """A gateway enforcing the sample policies, as a newcomer's would."""
    async with gateway_for_tests(nats_url, config_for_tests(policy={"dir": str(SAMPLE_DIR)})) as running:  # fmt: skip
        yield running


async def dutylink(*arguments: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """Run the CLI as a process: exit status, standard output, standard error."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli.main", *arguments,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await process.communicate(stdin)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.json"))


def test_every_example_is_named_after_a_sample_agency_and_says_what_it_is() -> None:
    files = example_files()
    assert len(files) >= 8
    for path in files:
        agency, _, what = path.stem.partition(".")
        assert agency in TOKENS, path.name
        event = json_format.Parse(
            path.read_text(encoding="utf-8"), gateway_pb2.PublishRequest()
        ).event
        assert what.startswith(event.type.replace(".", "-").replace("_", "-")), path.name
    families = {
        json_format.Parse(p.read_text(encoding="utf-8"), gateway_pb2.PublishRequest()).event.WhichOneof("payload")
        for p in files
    }  # fmt: skip
    assert families == {"incident", "resource", "warning"}


STORY_LAST = {"emergency.resource-commit.json": 1, "fire.incident-closed.json": 2}


async def test_every_example_is_accepted_from_the_agency_its_name_gives(
    sample_gateway: Gateway,
) -> None:
    # In the order of the story they tell, since the gateway enforces the loops: the request
    # before its commitment, the report before the closure.
    story = sorted(example_files(), key=lambda p: (STORY_LAST.get(p.name, 0), p.name))
    for path in story:
        agency = path.stem.partition(".")[0]
        request = json_format.Parse(path.read_text(encoding="utf-8"), gateway_pb2.PublishRequest())
        async with DutyLinkClient(sample_gateway.address, token=TOKENS[agency]) as client:
            receipt = await client.publish(request.event)
        assert receipt.event_id == request.event.id and not receipt.duplicate, path.name


async def test_publish_prints_a_receipt_and_subscribe_prints_the_delivery_and_acks_it(
    sample_gateway: Gateway,
) -> None:
    target = ("--target", sample_gateway.address)
    subscribe = ("subscribe", "desk", "--families", "warning", "--planes", "EXERCISE", *target,
                 "--token", TOKENS["fire"])  # fmt: skip
    listener = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli.main", *subscribe, "--ack", "--count", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert listener.stdout is not None and listener.stderr is not None
    async with asyncio.timeout(60):
        opened = await listener.stderr.readline()
    assert opened.decode().strip() == "subscribed: desk (0 pending)"

    code, out, err = await dutylink(
        "publish", str(EXAMPLES / "weather.warning-alert.json"), *target,
        "--token", TOKENS["weather"],
    )  # fmt: skip
    assert code == 0, err
    (line,) = out.splitlines()
    result = json.loads(line)
    assert result["eventId"] == "CMA-310115-20260815-0001"
    assert int(result["receipt"]["streamSequence"]) >= 1

    async with asyncio.timeout(60):
        delivered, _ = await listener.communicate()
    assert listener.returncode == 0
    (line,) = delivered.decode().splitlines()
    delivery = json.loads(line)
    assert delivery["event"]["id"] == "CMA-310115-20260815-0001"
    assert delivery["event"]["source"] == "weather"
    # Acknowledged: the subscription has nothing more for fire.
    code, out, err = await dutylink(*subscribe, "--idle", "2")
    assert (code, out) == (0, ""), err
    assert "subscribed: desk (0 pending)" in err


async def test_publish_of_a_batch_from_stdin_reports_each_refusal_and_exits_1(
    sample_gateway: Gateway,
) -> None:
    request = json_format.Parse(
        (EXAMPLES / "fire.incident-reported.json").read_text(encoding="utf-8"),
        gateway_pb2.PublishRequest(),
    )
    valid = request.event
    invalid = event_pb2.Event()
    invalid.CopyFrom(valid)
    invalid.id = "119-bad-latitude"
    invalid.incident.location.point.latitude = 91.0
    batch = gateway_pb2.PublishBatchRequest(events=[valid, invalid])
    code, out, _ = await dutylink(
        "publish", "-", "--target", sample_gateway.address, "--token", TOKENS["fire"],
        stdin=json_format.MessageToJson(batch).encode(),
    )  # fmt: skip
    assert code == 1
    first, second = (json.loads(line) for line in out.splitlines())
    assert "receipt" in first
    assert second["error"]["code"] == 3
    assert second["error"]["violations"][0]["field"] == "events[1].incident.location.point.latitude"


async def test_a_refused_single_event_names_the_field_and_exits_1(sample_gateway: Gateway) -> None:
    request = json_format.Parse(
        (EXAMPLES / "weather.warning-alert.json").read_text(encoding="utf-8"),
        gateway_pb2.PublishRequest(),
    )
    request.event.warning.infos[0].urgency = 0  # type: ignore[assignment]
    code, out, _ = await dutylink(
        "publish", "-", "--target", sample_gateway.address, "--token", TOKENS["weather"],
        stdin=json_format.MessageToJson(request).encode(),
    )  # fmt: skip
    assert code == 1
    error = json.loads(out)["error"]
    assert "INVALID_ARGUMENT" in error["message"]
    assert "warning.infos[0].urgency" in error["message"]


async def test_a_file_that_is_not_json_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "event.json"
    broken.write_text('{\n  "event": {\n    "id": "x",\n  }\n}\n', encoding="utf-8")
    code, out, err = await dutylink("publish", str(broken), "--token", "t")
    assert code == 2 and out == ""
    assert err.strip().startswith(f"error: {broken}:4: ")
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"event": {"id": "x", "colour": "red"}}', encoding="utf-8")
    code, _, err = await dutylink("publish", str(unknown), "--token", "t")
    assert code == 2
    assert f"{unknown}: event: " in err and "colour" in err


async def test_without_an_identity_the_cli_says_what_to_give() -> None:
    code, _, err = await dutylink("publish", str(EXAMPLES / "weather.warning-alert.json"))
    assert code == 2
    assert err.strip() == (
        "error: no identity: give --token, or --ca, --cert and --key (missing --ca, --cert, --key)"
    )


async def test_the_command_centre_declares_an_emergency_and_lists_it_others_may_not(
    sample_gateway: Gateway,
) -> None:
    target = ("--target", sample_gateway.address)
    code, out, err = await dutylink(
        "emergency", "declare", "--incident", "INC-119-0815-0042", "--hours", "6",
        "--field", "incident.reporter", "--reason", "Trapped workers: responders need the caller",
        *target, "--token", TOKENS["command"],
    )  # fmt: skip
    assert code == 0, err
    grant = json.loads(out)
    assert grant["declaredBy"] == "command"
    code, out, err = await dutylink("emergency", "list", *target, "--token", TOKENS["command"])
    assert code == 0, err
    assert [json.loads(line)["id"] for line in out.splitlines()] == [grant["id"]]
    code, _, err = await dutylink(
        "emergency", "declare", "--incident", "INC-1", "--hours", "1", "--field", "incident.reporter",
        "--reason", "not allowed to do this", *target, "--token", TOKENS["fire"],
    )  # fmt: skip
    assert code == 1
    assert err.startswith("error: PERMISSION_DENIED: ")


async def test_a_publish_refused_by_state_prints_each_aggregate_readably(
    sample_gateway: Gateway,
) -> None:
    request = gateway_pb2.PublishRequest(event=loop_incident("handling", "INC-CLI-NONE"))
    code, out, err = await dutylink(
        "publish", "-", "--target", sample_gateway.address, "--token", TOKENS["fire"],
        stdin=json_format.MessageToJson(request).encode(),
    )  # fmt: skip
    assert code == 1
    (refusal,) = json.loads(out)["error"]["stateRefusals"]
    assert (refusal["aggregate"], refusal["state"]) == ("incident/actual/INC-CLI-NONE", "none")
    lines = err.splitlines()
    start = lines.index(f"event 0 ({request.event.id}) refused by the state of:")
    assert lines[start + 1 : start + 4] == [
        "  incident/actual/INC-CLI-NONE: 'none' (version 0)",
        "    why: 'incident.handling' is not allowed from 'none'",
        "    allowed from there: incident.reported → reported",
    ]


async def test_a_batch_prints_the_state_refusal_of_the_event_refused(
    sample_gateway: Gateway,
) -> None:
    batch = gateway_pb2.PublishBatchRequest(
        events=[loop_incident("reported", "INC-CLI-2"), loop_incident("feedback", "INC-CLI-2")]
    )
    code, out, err = await dutylink(
        "publish", "-", "--target", sample_gateway.address, "--token", TOKENS["fire"],
        stdin=json_format.MessageToJson(batch).encode(),
    )  # fmt: skip
    assert code == 1, err
    first, second = (json.loads(line) for line in out.splitlines())
    assert "receipt" in first and second["error"]["stateRefusals"]
    lines = err.splitlines()
    start = lines.index(f"event 1 ({batch.events[1].id}) refused by the state of:")
    assert lines[start + 1] == "  incident/actual/INC-CLI-2: 'reported' (version 1)"
    assert lines[start + 2] == "    why: 'incident.feedback' is not allowed from 'reported'"
    assert lines[start + 3].startswith("    allowed from there: incident.verified → verified, ")
    assert "event 0" not in err


async def test_an_agency_acknowledges_and_declines_a_warning_by_source_and_id(
    sample_gateway: Gateway,
) -> None:
    target = ("--target", sample_gateway.address)
    code, out, err = await dutylink(
        "publish", str(EXAMPLES / "weather.warning-alert.json"), *target,
        "--token", TOKENS["weather"],
    )  # fmt: skip
    assert code == 0, err
    message = f"weather/{json.loads(out)['eventId']}"
    code, out, err = await dutylink(
        "ack", message, "--jurisdiction", "310115", "--plane", "EXERCISE",
        "--by", "duty officer Li", *target, "--token", TOKENS["fire"],
    )  # fmt: skip
    assert code == 0, err
    assert int(json.loads(out)["streamSequence"]) >= 2
    code, out, err = await dutylink(
        "ack", message, "--jurisdiction", "310115", "--decline", "outside our district",
        *target, "--token", TOKENS["police"],
    )  # fmt: skip
    assert code == 0, err
    for wrong, said in (
        (("weather-no-slash",), "give the message as SOURCE/EVENT_ID"),
        ((message, "--decline", ""), "--decline needs a reason"),
        ((message, "--plane", "DRILL"), "--plane: unknown plane 'DRILL'"),
    ):
        code, out, err = await dutylink("ack", *wrong, "--jurisdiction", "310115", *target,
                                        "--token", TOKENS["fire"])  # fmt: skip
        assert code == 2 and said in err, (wrong, err)
