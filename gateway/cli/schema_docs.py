"""The generated schema docs: the Markdown reference (gateway.cli.schema_reference) and the
AsyncAPI document (gateway.cli.asyncapi), rendered from a FileDescriptorSet with source info (see
gateway.cli.descriptors), the loaded policy and the subject registry.

Pure: values in, text out; the same inputs give the same bytes.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2

from dutylink.policies.model import Policy
from gateway.cli.asyncapi import render_asyncapi
from gateway.cli.schema_reference import render_reference


def render_all(fds: descriptor_pb2.FileDescriptorSet, policy: Policy) -> dict[str, str]:
    """Every generated document, by path relative to docs/."""
    docs = {f"reference/{path}": text for path, text in render_reference(fds, policy).items()}
    docs["asyncapi.yaml"] = render_asyncapi(fds)
    return docs
