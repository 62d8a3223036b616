"""Every example in proto/examples/ is a PublishRequest that meets the schema's rules, so the
examples agencies copy (docs/adding-an-event-type.md) cannot rot."""

from __future__ import annotations

from pathlib import Path

import protovalidate
import pytest
from google.protobuf import json_format

from dutylink.v1 import gateway_pb2

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "proto" / "examples").glob("*.json"))


def test_there_are_examples() -> None:
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_the_example_is_a_valid_publish_request(path: Path) -> None:
    request = json_format.Parse(path.read_text(encoding="utf-8"), gateway_pb2.PublishRequest())
    protovalidate.validate(request)  # raises ValidationError naming every violated rule


def test_a_broken_example_is_refused() -> None:
    request = json_format.Parse(
        EXAMPLES[0].read_text(encoding="utf-8"), gateway_pb2.PublishRequest()
    )
    request.event.jurisdiction.division_code = "31"
    with pytest.raises(protovalidate.ValidationError):
        protovalidate.validate(request)
