"""The webhook adapter's [options], declared (see dutylink.adapters.options), and its secret files. The
reference with examples is adapters/webhook/README.md; the errors keep the wording documented
there ("[options.inbound]: unknown key ...", "attempts: a whole number of at least 1").
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from google.protobuf.descriptor import Descriptor
from pydantic import AfterValidator, Field, model_validator
from pydantic.dataclasses import dataclass

from dutylink.adapters.options import (
    OPTIONS,
    AdapterConfigError,
    Count,
    FilePath,
    Flag,
    Names,
    NotNegative,
    Positive,
    Table,
    Text,
)
from dutylink.adapters.sdk.client import Retry
from dutylink.adapters.webhook.signing import parse_secret
from dutylink.v1 import event_pb2
from gateway.core.settings import check_address, is_loopback


def read_secrets(path: Path, where: str) -> tuple[bytes, ...]:
    """The secrets in force, one a line (several while one is being rotated): "whsec_<base64>"
    (Standard Webhooks) or a shared secret's raw text, surrounding whitespace ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise AdapterConfigError(f"{where} secret_file: {path}: {reason}") from None
    secrets: list[bytes] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                secrets.append(parse_secret(line.strip()))
            except ValueError as error:
                raise AdapterConfigError(f"{where} secret_file: {path}:{number}: {error}") from None
    if not secrets:
        raise AdapterConfigError(f"{where} secret_file: {path} is empty")
    return tuple(secrets)


@dataclass(frozen=True, config=OPTIONS)
class WebhookOptions:
    """Give [options.inbound] (with [options.mapping]), [options.outbound], or both."""

    inbound: Table = Field(default_factory=dict)
    """[options.inbound]: records in, POSTed to <path> on <listen>."""
    mapping: Table = Field(default_factory=dict)
    """[options.mapping]: record JSON -> event (dutylink.adapters.mapping.JsonMapping)."""
    outbound: Table = Field(default_factory=dict)
    """[options.outbound]: events out, POSTed to <url>."""


def _url_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must start with '/'")
    return value


@dataclass(frozen=True, config=OPTIONS)
class InboundSettings:
    """Records in: signed POSTs of JSON."""

    secret_file: FilePath
    """The secrets in force, one a line: whsec_<base64> (Standard Webhooks) or a shared secret's
    raw text; two lines while one is being rotated."""
    listen: Annotated[Text, AfterValidator(check_address)] = "127.0.0.1:8081"
    """HOST:PORT to listen on (plain HTTP)."""
    allow_remote: Flag = False
    """Unless true, `listen` must be a loopback address (a TLS-terminating proxy in front)."""
    path: Annotated[Text, AfterValidator(_url_path)] = "/events"
    """The URL path that takes POSTs."""
    tolerance_seconds: Positive = 300.0
    """How far the request's timestamp may be from the adapter's clock; also how long a
    signature is remembered, to refuse replays."""
    max_body_bytes: Count = 1024 * 1024
    """A larger body is refused with 413 before it is read whole."""
    publish_timeout_seconds: Positive = 20.0
    """How long a request may wait for the gateway; then the answer is 503."""
    retry_after_seconds: Count = 30
    """The Retry-After of a 503."""
    replay_capacity: Count = 100_000
    """The most signatures remembered at once; beyond it new requests get 503."""
    accept_legacy_signatures: Flag = True
    """Also take requests signed with X-DutyLink-Signature, until every sender has moved."""

    @model_validator(mode="after")
    def _on_loopback_unless_allowed(self) -> InboundSettings:
        if not self.allow_remote and not is_loopback(self.host):
            raise ValueError(
                f"listen: '{self.host}' is not a loopback address; put a TLS-terminating "
                "proxy in front and set allow_remote = true to listen there"
            )
        return self

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def _http_url(value: str) -> str:
    if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname:
        raise ValueError(f"'{value}' is not an http(s) URL")
    return value


# How outbound POSTs are signed: Standard Webhooks, or DutyLink's scheme before it (for a
# receiver that has not moved yet).
Signature = Literal["standard", "dutylink-v1"]


@dataclass(frozen=True, config=OPTIONS)
class OutboundOptions:
    """Events out: signed POSTs of JSON."""

    url: Annotated[Text, AfterValidator(_http_url)]
    """Where every event is POSTed; redirects are not followed (the signature is for this URL)."""
    secret_file: FilePath
    """The secrets shared with the receiver, read as for inbound; a signature for each."""
    signature: Signature = "standard"
    """"standard": Standard Webhooks headers; "dutylink-v1": the scheme before it."""
    subscription: Text = "webhook-out"
    """The durable subscription's name: delivery resumes where it stopped."""
    families: Names = ()
    """Event families to receive (a union with types; both empty: all the policy allows)."""
    types: Names = ()
    """Exact event types, e.g. "incident.reported"."""
    jurisdiction_prefixes: Names = ()
    """Division-code prefixes ("31", "3101", "310115")."""
    ignore_sources: Names = ()
    """Agencies whose events are not posted (the department's own, which would come back)."""
    request_timeout_seconds: Positive = 10.0
    """The time limit of one POST, from connect to the end of the answer."""
    fields: Table = Field(default_factory=dict)
    """[options.outbound.fields]: JSON key = event field path; absent: the whole event."""
    retry: Table = Field(default_factory=dict)
    """[options.outbound.retry]: the retries of one delivery."""


@dataclass(frozen=True, config=OPTIONS)
class RetryOptions:
    """The retries of one delivery."""

    attempts: Count = 5
    """The most POSTs per delivery."""
    timeout_seconds: Positive = 30.0
    """The most time spent on one delivery, waits included."""
    wait_initial_seconds: Positive = 0.5
    """The first wait; each later one twice as long ..."""
    wait_max_seconds: Positive = 10.0
    """... up to this (a receiver's Retry-After is capped at it too)."""
    wait_jitter_seconds: NotNegative = 1.0
    """A random extra of up to this much on each wait."""

    def retry(self) -> Retry:
        return Retry(
            attempts=self.attempts,
            timeout=self.timeout_seconds,
            wait_initial=self.wait_initial_seconds,
            wait_max=self.wait_max_seconds,
            wait_jitter=self.wait_jitter_seconds,
        )


def field_paths(fields: dict[str, Any], where: str) -> dict[str, str]:
    """[options.outbound.fields] checked: each value an event field path for event_to_json
    (proto field names, list indexes allowed)."""
    for key, path in fields.items():
        if not isinstance(path, str) or not path:
            raise AdapterConfigError(f"{where} {key}: an event field path")
        descriptor: Descriptor | None = event_pb2.Event.DESCRIPTOR
        for part in path.split("."):
            if part.isdigit():
                continue
            if descriptor is None or part not in descriptor.fields_by_name:
                raise AdapterConfigError(f"{where} {key}: '{path}': no field '{part}'")
            descriptor = descriptor.fields_by_name[part].message_type
    return dict(fields)
