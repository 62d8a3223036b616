"""The vendored schemas: proto/buf/validate/validate.proto is fresh and compiles back to the
wheel's descriptor; proto/google/rpc/status.proto is googleapis-common-protos' own."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import grpc_tools
from google.protobuf import descriptor_pb2, text_format

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "vendor_validate_proto.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vendor_validate_proto", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vendor = load_script()


def compile_vendored(out: Path) -> descriptor_pb2.FileDescriptorProto:
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",  # argv[0]
        f"-I{ROOT / 'proto'}",
        f"-I{well_known}",
        f"--descriptor_set_out={out}",
        "buf/validate/validate.proto",
    ]
    assert protoc.main(args) == 0, "protoc failed; see stderr"
    (fdp,) = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return fdp


def as_text(fdp: descriptor_pb2.FileDescriptorProto) -> str:
    """Text format with buf.validate's extension options decoded, so the comparison is
    semantic (not byte order) and a failure shows a readable diff."""
    classes = vendor.message_classes(fdp)
    decoded = classes["google.protobuf.FileDescriptorProto"].FromString(fdp.SerializeToString())
    return text_format.MessageToString(decoded)


def test_vendored_file_is_fresh() -> None:
    committed = vendor.OUTPUT.read_text(encoding="utf-8")
    assert committed == vendor.render(), f"stale: run {sys.executable} {SCRIPT.relative_to(ROOT)}"


def test_vendored_file_compiles_to_the_wheel_descriptor(tmp_path: Path) -> None:
    wheel = vendor.wheel_descriptor()
    compiled = compile_vendored(tmp_path / "validate.binpb")
    compiled.ClearField("source_code_info")
    assert as_text(compiled) == as_text(wheel)
    assert compiled == wheel


def test_the_vendored_google_rpc_status_is_the_one_googleapis_common_protos_ships() -> None:
    """proto/google/rpc/status.proto is there only for `protoc -Iproto` (PublishError.status):
    byte for byte the file whose Python module (google.rpc.status_pb2) the gateway imports."""
    from google.rpc import status_pb2

    shipped = Path(status_pb2.__file__).with_name("status.proto")
    vendored = Path(__file__).resolve().parent.parent / "proto" / "google" / "rpc" / "status.proto"
    assert vendored.read_bytes() == shipped.read_bytes()
