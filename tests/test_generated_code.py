"""The generated Python beside proto/ is what the .proto files generate today."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def gen_proto() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "tools" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_generated_code_is_fresh() -> None:
    assert gen_proto().stale_files() == []


def test_a_schema_change_without_regeneration_is_reported_as_stale(tmp_path: Path) -> None:
    proto_root = tmp_path / "proto"
    shutil.copytree(ROOT / "proto", proto_root)
    schema = proto_root / "dutylink" / "v1" / "event.proto"
    schema.write_text(schema.read_text().replace("string subject = 4", "string topic = 4"))
    assert gen_proto().stale_files(proto_root) == [
        "stale: proto/dutylink/v1/event_pb2.py",
        "stale: proto/dutylink/v1/event_pb2.pyi",
    ]


def test_the_schemas_keep_wire_and_json_compatibility_with_the_baseline() -> None:
    result = gen_proto().breaking()
    assert result.returncode == 0, result.stdout + result.stderr


def test_deleting_a_field_is_reported_as_breaking(tmp_path: Path) -> None:
    proto_root = tmp_path / "proto"
    shutil.copytree(ROOT / "proto", proto_root)
    schema = proto_root / "dutylink" / "v1" / "event.proto"
    text = schema.read_text()
    start = text.index("  // Ties this event to the incident")
    end = text.index("string correlation_id = 11 [(buf.validate.field).string.max_len = 128];")
    schema.write_text(
        text[:start]
        + text[
            end + len("string correlation_id = 11 [(buf.validate.field).string.max_len = 128];") :
        ]
    )
    result = gen_proto().breaking(proto_root)
    assert result.returncode != 0
    assert "correlation_id" in result.stdout + result.stderr
