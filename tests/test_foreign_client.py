"""A department client in any language needs only proto/ (or just reflection) and a token."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import grpc_tools
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.server import Gateway
from tests.conftest import TOKENS

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "proto" / "examples" / "weather.warning-alert.json"


def test_the_schemas_compile_with_protoc_and_nothing_but_proto(tmp_path: Path) -> None:
    """Only protoc's own well-known types besides -Iproto, as any language's protoc has them."""
    files = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    result = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"-I{well_known}",
         f"--descriptor_set_out={tmp_path / 'all.binpb'}", *files],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    imported = {dep for f in files for dep in _imports(ROOT / "proto" / f)}
    outside = {
        i
        for i in imported
        if not (ROOT / "proto" / i).exists() and not i.startswith("google/protobuf/")
    }
    assert outside == set()


def _imports(path: Path) -> list[str]:
    return [
        line.split('"')[1] for line in path.read_text().splitlines() if line.startswith("import ")
    ]


async def _pool_from_reflection(channel: grpc.aio.Channel) -> descriptor_pool.DescriptorPool:
    reflector = reflection_pb2_grpc.ServerReflectionStub(channel)
    ask = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="dutylink.v1.PublisherService"
    )
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    async for response in reflector.ServerReflectionInfo(iter([ask])):
        for raw in response.file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            files[proto.name] = proto
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    while len(added) < len(files):
        for name, proto in files.items():
            if name not in added and all(d in added for d in proto.dependency):
                pool.Add(proto)
                added.add(name)
    return pool


async def test_a_reflection_only_client_publishes_the_readme_json_example(gateway: Gateway) -> None:
    """What grpcurl does: descriptors from reflection, the event as JSON, a bearer token."""
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        pool = await _pool_from_reflection(channel)
        request_class = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("dutylink.v1.PublishRequest")
        )
        response_class = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("dutylink.v1.PublishResponse")
        )
        request = json_format.Parse(EXAMPLE.read_text(), request_class())
        publish = channel.unary_unary(
            "/dutylink.v1.PublisherService/Publish",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        response = await publish(
            request, metadata=(("authorization", f"Bearer {TOKENS['weather']}"),)
        )
    receipt = json.loads(json_format.MessageToJson(response))["receipt"]
    assert receipt["eventId"] == "CMA-310115-20260815-0001"
    assert int(receipt["streamSequence"]) >= 1
