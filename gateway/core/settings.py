"""The gateway's settings: the one schema of the configuration file and its `DUTYLINK_*`
variables. One frozen pydantic dataclass per section, each key with its type, its bounds, its
default and (the string under it) what it does: the runtime validates against these, and
`deploy/dutylink.example.toml` is generated from them (gateway.core.settings_docs).

Long because it is the whole schema, each key with its words for the operator.

Pure declarations: reading them from a TOML file and the environment, and the checks that span
keys, is `gateway.config`'s job. Every layer that needs a setting takes these values; none reads
a file or the environment. Secrets (agency tokens, the NATS URL, which may carry a password) are
`SecretStr`: their repr, their str and every dump of the configuration show stars.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, ConfigDict, Field, SecretStr
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo

# The file beside `gateway.config` holding the sample agencies (development tokens) used when a
# configuration lists none; start-up warns when the agencies came from it.
SAMPLE_AGENCIES_FILE = "sample_agencies.toml"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file (or variable) and the key."""


# Unknown keys are errors (a typo must not leave a default in force silently); the string under
# each key is its description, in the generated example and the JSON schema.
SCHEMA = ConfigDict(extra="forbid", use_attribute_docstrings=True)


def check_address(value: str) -> str:
    """HOST:PORT with a port from 0 (any) to 65535; an IPv6 host in brackets."""
    host, _, port = value.rpartition(":")
    if (
        not host
        or not (port.isascii() and port.isdigit() and int(port) <= 65535)
        or (":" in host and not (host.startswith("[") and host.endswith("]")))
    ):
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:50052), got {value!r}")
    return value


def is_loopback(host: str) -> bool:
    """Whether a listen address's host (brackets stripped) stays on this machine."""
    host = host.removeprefix("[").removesuffix("]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def _optional_address(value: str) -> str:
    return check_address(value) if value else value


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"not a known time zone, got {value!r}") from None
    return value


# A GB/T 2260 division code, as an event's jurisdiction takes it.
_DIVISION_CODE = re.compile(r"[1-8][0-9]{5}")


def _division_code(value: str) -> str:
    if not _DIVISION_CODE.fullmatch(value):
        raise ValueError(
            f"expected a six-digit GB/T 2260 division code (e.g. 310000), got {value!r}"
        )
    return value


def _otlp_endpoint(value: str) -> str:
    scheme, _, rest = value.partition("://")
    if scheme not in ("http", "https") or not rest:
        raise ValueError(f"expected http://HOST:PORT or https://HOST:PORT, got {value!r}")
    return value


# An agency's or a console's name, as its certificate carries it (urn:dutylink:agency:<id>).
AGENCY_ID = re.compile(r"[a-z][a-z0-9-]{1,31}")


def _console_names(values: tuple[str, ...]) -> tuple[str, ...]:
    for name in values:
        if not AGENCY_ID.fullmatch(name):
            raise ValueError(f"{name!r} is not a console name (as in its certificate)")
    return values


Address = Annotated[str, AfterValidator(check_address)]
OptionalAddress = Annotated[str, AfterValidator(_optional_address)]
AtLeastOne = Annotated[int, Field(ge=1)]
Seconds = Annotated[float, Field(gt=0)]

Durability = Literal["refuse", "warn"]
StoreMismatch = Literal["refuse", "read-only"]
CrlUnusable = Literal["refuse", "last_good"]
TraceExporter = Literal["off", "otlp"]
# A deployment's cryptographic algorithms (gateway.core.crypto).
CryptoProfileName = Literal["international", "national"]
# What `tls.crl_unusable` may say, for the revocation keeper.
CRL_UNUSABLE_POLICIES: tuple[str, ...] = get_args(CrlUnusable)


@dataclass(frozen=True, config=SCHEMA)
class GatewaySettings:
    """The gRPC side."""

    listen: Address = "127.0.0.1:50051"
    """gRPC address; 0.0.0.0:50051 behind a load balancer."""
    gateway_id: str = "gw-1"
    """Names this replica in logs, NATS connection names and its audit log."""
    writer_lease_seconds: Seconds = 15.0
    """One gateway per gateway_id on a NATS (its audit log): the lease a running gateway renews
    every third of this. A second one with the same id is refused; a crashed one's lease lapses
    after this long."""
    reflection: bool = True
    """gRPC server reflection, so grpcurl works without proto files."""
    metrics_listen: OptionalAddress = ""
    """Prometheus GET /metrics at HOST:PORT, e.g. 127.0.0.1:9464; empty: off."""
    health_listen: OptionalAddress = ""
    """Plaintext grpc.health.v1 and nothing else at HOST:PORT, e.g. 0.0.0.0:50052; empty: off.
    For probes that cannot present a client certificate (Kubernetes' gRPC probes) when [tls]
    makes `listen` mutual TLS; it tells anyone who reaches it only SERVING or NOT_SERVING."""
    max_message_bytes: AtLeastOne = 1_048_576
    """Largest event accepted (and the streams' max message size)."""
    max_batch_events: AtLeastOne = 1000
    """Most events in one PublishBatch call."""
    max_event_elements: AtLeastOne = 32768
    """Most messages and list items in one event, counted before the validation rules run
    (~10-20 µs each, holding the event loop): beyond it the event is refused at once. A national
    CAP alert of 2 languages x 40 areas x 120 geocodes is ~9,700 (~150 ms on a loaded 2-core
    machine); 32768 of the costliest kind (polygons of 1,000 points) took up to ~0.65 s."""
    max_violations_per_event: AtLeastOne = 20
    """Field violations listed per refused event; the rest are counted ("and N more were cut"),
    which keeps every error status within gRPC's metadata limits."""
    max_concurrent_rpcs: AtLeastOne = 1000
    """Calls served at once, open subscriptions included; beyond it RESOURCE_EXHAUSTED (clients
    retry with backoff), not a queue. Health checks never count and are never refused."""
    agency_max_concurrent_rpcs: AtLeastOne = 500
    """Calls one agency may hold at once (at most max_concurrent_rpcs), so that one agency's bug
    or abuse degrades only that agency."""
    agency_max_subscriptions: AtLeastOne = 250
    """Open Subscribe streams one agency may hold at once."""
    agency_max_publish_bytes_in_flight: AtLeastOne = 64 * 1024 * 1024
    """Bytes of one agency's publish requests in progress."""
    max_publish_bytes_in_flight: AtLeastOne = 256 * 1024 * 1024
    """Bytes of publish requests in progress (admission, audit, store), all agencies together."""
    agency_max_batch_events_storing: AtLeastOne = 64
    """Events of one agency's batches on their way to JetStream at once, sent in pieces of half
    of it: JetStream stores in arrival order, so another agency's event waits behind at most
    this many of them (not behind whole batches)."""
    publish_timeout_seconds: Seconds = 5.0
    """Longest wait for JetStream's acknowledgement (capped by the caller's deadline)."""
    shutdown_grace_seconds: Annotated[float, Field(ge=0)] = 10.0
    """How long in-flight calls may finish after SIGTERM."""
    keepalive_seconds: Seconds = 60.0
    """HTTP/2 keepalive: ping a connection idle this long, so a client gone without a word is
    found ..."""
    keepalive_timeout_seconds: Seconds = 20.0
    """... and close it when no answer comes within this."""
    min_client_ping_seconds: Seconds = 10.0
    """Clients may ping this often at most (the SDK: every 30 s), even with no call open; more
    often twice and they are told to go away (GOAWAY "too_many_pings")."""
    max_connection_age_seconds: Seconds = 1800.0
    """Then GOAWAY: clients reconnect and spread over the replicas as they are now."""
    max_connection_age_grace_seconds: Seconds = 300.0
    """Calls of a connection told to go away may end meanwhile; an open subscription is then cut
    (the SDK opens it again where it was acked)."""
    enforce_lifecycles: bool = True
    """Refuse events that do not fit their lifecycle or the resource ledger
    (proto/dutylink/catalogue.toml); false only for a bare pipe that carries no loop."""
    workers: Annotated[int, Field(ge=0)] = 1
    """Gateway processes of this replica sharing `listen` (SO_REUSEPORT) under one supervisor,
    each with its own audit log <gateway_id>-w<i>: 1 is one process; 0 is one per core up to
    max_workers. `dutylink serve --workers N` overrides it."""
    max_workers: AtLeastOne = 8
    """At most this many processes when workers = 0."""


@dataclass(frozen=True, config=SCHEMA)
class NatsSettings:
    """JetStream. An empty `url` starts the embedded nats-server in `data_dir`."""

    url: SecretStr = SecretStr("")
    """Empty: start the embedded nats-server; else nats://HOST:4222[,nats://...]. A secret: it
    may carry a user's password or token (shown as nats://user:***@host)."""
    data_dir: str = ".dutylink"
    """The embedded server's storage (data_dir/nats) and local state."""
    store_encryption: bool = True
    """The embedded server encrypts its JetStream store (AES-GCM, JetStream's own encryption at
    rest): a second layer under the sealed personal fields ([personal_data]). A store written
    in clear is encrypted at the next start; losing the key loses the store. A server of your
    own: set `cipher` and `key` in its jetstream block (deploy/nats/nats.conf)."""
    store_key_file: str = ""
    """The embedded store's key (0600, hex), kept apart from the store: empty:
    <data_dir>/keys/jetstream.key, created on first start; better on another volume."""
    stream_replicas: Annotated[int, Field(ge=1, le=5)] = 1
    """Replicas of each stream: 3 on a JetStream cluster."""
    duplicate_window_seconds: Seconds = 120.0
    """A retried event id within this window is stored once."""
    events_max_age_days: Seconds = 30.0
    """How long events stay replayable."""
    events_max_bytes: Annotated[int, Field(ge=-1)] = -1
    """Disk budget of the event stream (-1: none); when full, new events are refused
    (RESOURCE_EXHAUSTED), old ones never evicted."""
    deadletter_max_age_days: Seconds = 180.0
    """How long dead letters are kept for inspection and replay."""
    connect_timeout_seconds: Seconds = 5.0
    """How long one attempt to reach NATS may take."""
    durability: Durability = "refuse"
    """At start-up the gateway checks the streams (file storage, replicas >= stream_replicas, 3 on
    a cluster) and each node's sync_interval. "refuse": do not serve when they cannot keep
    acknowledged events durable; "warn": serve, logging every finding loudly."""


@dataclass(frozen=True, config=SCHEMA)
class SubscriptionSettings:
    """Delivery to subscribers."""

    ack_wait_seconds: Seconds = 30.0
    """An unacked delivery comes again after this long."""
    max_deliveries: AtLeastOne = 5
    """Then it moves to the subscription's dead-letter queue."""
    default_in_flight: AtLeastOne = 64
    """Unacked deliveries per stream when the client asks for 0."""
    max_in_flight: AtLeastOne = 1000
    """The most a client may ask for."""
    max_filter_subjects: AtLeastOne = 256
    """A filter may expand to at most this many subject filters."""
    ack_record_seconds: Seconds = 3600.0
    """How long every replica remembers an ack confirmed to a subscriber (the DUTYLINK_ACKED
    stream): a redelivery within it, after a consumer leader change lost the ack, is acked again
    instead of sent. One small record per confirmed ack, kept this long."""


@dataclass(frozen=True, config=SCHEMA)
class PolicySettings:
    """Access policies."""

    dir: str = ""
    """Directory of access-policy *.yaml files; empty: the sample policies shipped with DutyLink."""
    reload_seconds: Seconds = 2.0
    """How often changed files are re-read (a bad file is refused, the last good one kept)."""


@dataclass(frozen=True, config=SCHEMA)
class AuditSettings:
    """The signed, tamper-evident audit log. Entries are never aged out: the law asks for at
    least 180 days."""

    enabled: bool = True
    """Publishes fail closed without it."""
    crypto_profile: CryptoProfileName = "international"
    """The log's algorithms, fixed when it starts and recorded in its start entries:
    "international" (a SHA-256 Merkle tree, Ed25519 checkpoints) or "national" (商用密码: an
    SM3 tree with the same shape, SM2 checkpoints; GB/T 39786-2021). Every verifier follows
    the key it trusts. The profile's hash also gives the digests entries keep of the bytes
    stored or sent and the withheld-field commitments."""
    key_file: str = ""
    """This replica's Ed25519 checkpoint key; empty: <nats.data_dir>/audit/<gateway_id>.key,
    created on first start."""
    commitment_key_file: str = ""
    """The deployment's secret for withheld-field commitments, the SAME file on every replica;
    empty: <nats.data_dir>/audit/commitment.key, created on first start."""
    checkpoint_seconds: Seconds = 1.0
    """A signed checkpoint at least this often while entries arrive."""
    max_field_bytes: Annotated[int, Field(ge=256)] = 1024
    """Bounds what one entry holds, so that any entry fits a frame: a longer string field keeps
    a prefix plus its length and SHA-256. 1024 keeps every valid id and type whole."""
    max_field_items: AtLeastOne = 64
    """A longer caller-supplied list (incident ids) keeps its first items plus a digest of the
    rest."""
    rotate_from_key: str = ""
    """A log's checkpoint key is fixed by its first checkpoint; start-up refuses another key
    unless this names the former one: its key id (as the refusal prints it), its public key, or
    its key file (then the former key co-signs, endorsing the new one). The rotation is recorded
    in the log; once recorded, this setting is ignored."""
    store_mismatch: StoreMismatch = "refuse"
    """When the event stream lacks events the audit log records as stored (a damaged store,
    checked at start-up): "refuse" to start, or serve "read-only" (publishes refused with
    FAILED_PRECONDITION naming the first missing event; subscriptions still served)."""


@dataclass(frozen=True, config=SCHEMA)
class PersonalDataSettings:
    """Personal data at rest (PIPL; GB/T 39786-2021): the fields the schema marks personal or
    precise location are stored sealed (AES-256-GCM, or SM4-GCM in the national profile) and
    opened only by the gateway, for the deliveries the policy allows (docs/compliance.md)."""

    seal: bool = True
    """Seal personal fields before they reach the event store; false stores them in clear
    (a raw read of the store's files then shows them)."""
    key_file: str = ""
    """The sealing key ring (0600), the SAME file on every replica: rotate it with `dutylink
    keys rotate`; empty: <nats.data_dir>/keys/sealing.keys, created on first start."""
    key_command: tuple[str, ...] = ()
    """A key service instead of the file: a command (program and arguments) whose output is
    the key ring in the file's format, run at start and at each reload (within 10 s, at most
    256 KiB). As a variable: comma-separated."""
    reload_seconds: Seconds = 10.0
    """How often the key ring is read again: a rotation takes effect (and is audited) without
    a restart."""


@dataclass(frozen=True, config=SCHEMA)
class LedgerSettings:
    """The resource ledger (docs/ledger.md): reservations past their expiry return to available
    by themselves, through an inventory.reservation_expired event the gateway publishes."""

    expiry_check_seconds: Seconds = 5.0
    """How often the gateway looks for expired reservations (at most this late); every replica
    looks, and an expiry is stored once."""
    max_items: AtLeastOne = 10_000
    """Item lines read per plane and look; beyond it that plane's expiries wait (an error is
    logged each time) until this is raised. The other planes go on."""
    division_code: Annotated[str, AfterValidator(_division_code)] = "100000"
    """Jurisdiction (GB/T 2260 division code) of the ledger's expiry notices about an item line
    stored without one (lines keep their declaration's): the default is the whole country; set
    the exchange's own area, e.g. "310000"."""


@dataclass(frozen=True, config=SCHEMA)
class TrackingSettings:
    """Business acknowledgements and deadlines (policies/deadlines.yaml): each replica looks this
    often for escalation levels that fell due; a level fires once across replicas."""

    check_seconds: Seconds = 1.0
    """How late an escalation may come at most (plus the store's answer)."""
    max_tracked: AtLeastOne = 10_000
    """Messages with a deadline running read per look (and unanswered ones per pending list);
    beyond it escalations wait (an error is logged each time) until raised. Finished messages
    are out of both indexes."""


@dataclass(frozen=True, config=SCHEMA)
class TelemetrySettings:
    """Traces (OpenTelemetry)."""

    traces: TraceExporter = "off"
    """"otlp": a span per RPC and per delivery, exported to the collector below; "off": none
    recorded, but a caller's W3C trace context is still carried from its publish to every
    delivery (traceparent)."""
    otlp_endpoint: Annotated[str, AfterValidator(_otlp_endpoint)] = "http://127.0.0.1:4317"
    """The OpenTelemetry collector (gRPC); http:// for plaintext, https:// for TLS."""
    service_name: str = "dutylink-gateway"
    """service.name of the spans (service.instance.id: the gateway id)."""
    trace_sample_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0
    """Share of new traces recorded; a caller's sampling decision is followed."""


@dataclass(frozen=True, config=SCHEMA)
class WebConsoleSettings:
    """The duty officers' web console, served by `dutylink serve` beside the gateway (or run
    `dutylink console` on its own). Without [tls]: plain HTTP with token login, on loopback only
    unless allow_remote (behind a TLS proxy set up on purpose). With [tls]: HTTPS with the
    console's own certificate below, officers log in with their agency's client certificate, and
    the console relays their read-only calls."""

    listen: OptionalAddress = ""
    """HOST:PORT, e.g. "127.0.0.1:8780"; empty: off."""
    zone: Annotated[str, AfterValidator(_time_zone)] = "Asia/Shanghai"
    """The time zone every time is shown in."""
    allow_remote: bool = False
    """Plain HTTP off loopback (without [tls] only)."""
    cert_file: str = ""
    """With [tls]: `dutylink pki console NAME` writes consoles/NAME.pem ..."""
    key_file: str = ""
    """... and its key (0600)."""


@dataclass(frozen=True, config=SCHEMA)
class TlsSettings:
    """Mutual TLS (make the files with `dutylink pki init|server|issue`). With cert_file set the
    gateway serves TLS only and each agency is the URI SAN of its client certificate; empty means
    plaintext with bearer tokens, for development only."""

    ca_file: str = ""
    """The exchange CA; client certificates must chain to it."""
    cert_file: str = ""
    """The gateway's server certificate."""
    key_file: str = ""
    """Its private key (0600)."""
    crl_file: str = ""
    """Revocation list; re-read when the file changes, never replaced by an older one
    (CRLNumber); re-sign it daily: `dutylink pki crl`."""
    crl_unusable: CrlUnusable = "refuse"
    """While the CRL file is missing or unreadable, or the list in force is past its nextUpdate:
    "refuse" every call (UNAVAILABLE) until a current CRL is in place, or "last_good": go on
    checking against the last good list kept in memory. An older CRL is refused either way."""
    crl_check_seconds: Seconds = 5.0
    """How often the CRL file (and the clock) is looked at between calls, so that each change
    is audited promptly."""
    consoles: Annotated[tuple[str, ...], AfterValidator(_console_names)] = ()
    """Web consoles (their certificates' urn:dutylink:console:NAME) that may relay their
    officers' read-only calls, each as the agency of the officer's own client certificate.
    As a variable: comma-separated."""
    fronts: Annotated[tuple[str, ...], AfterValidator(_console_names)] = ()
    """TLCP-terminating fronts (their certificates' urn:dutylink:front:NAME, `dutylink pki
    front NAME`) whose calls are each taken as the agency of the certificate the front forwards,
    once the gateway has checked it against front_ca_file (docs/tlcp-front.md). As a variable:
    comma-separated."""
    front_ca_file: str = ""
    """The CA (PEM) of the agencies' certificates that fronts forward: SM2 (national, for TLCP)
    or ECDSA."""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


@dataclass(frozen=True, config=SCHEMA)
class Agency:
    """A connected agency; `token` only in bearer-token (development) mode."""

    id: Annotated[str, Field(min_length=1)]
    """The agency id its events and policies name."""
    name: Annotated[str, Field(min_length=1)]
    """What officers read."""
    token: SecretStr = SecretStr("")
    """Its API token (without [tls] only): a long random secret."""
    roles: tuple[str, ...] = ()
    """Roles the policies grant rights to, e.g. ["command"]."""


@dataclass(frozen=True, config=SCHEMA)
class Config:
    """The whole configuration: each section's settings and the agencies."""

    gateway: GatewaySettings = GatewaySettings()
    nats: NatsSettings = NatsSettings()
    subscriptions: SubscriptionSettings = SubscriptionSettings()
    tls: TlsSettings = TlsSettings()
    policy: PolicySettings = PolicySettings()
    audit: AuditSettings = AuditSettings()
    personal_data: PersonalDataSettings = PersonalDataSettings()
    ledger: LedgerSettings = LedgerSettings()
    tracking: TrackingSettings = TrackingSettings()
    console: WebConsoleSettings = WebConsoleSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    agencies: tuple[Agency, ...] = ()
    agencies_source: str = SAMPLE_AGENCIES_FILE
    """Where the agencies came from, so start-up can warn about sample tokens (not a key)."""


def schema_fields(cls: type[Any]) -> dict[str, FieldInfo]:
    """A settings class's keys by name, each with its type, default and description."""
    fields: dict[str, FieldInfo] = cls.__pydantic_fields__
    return fields


# The tables of the configuration file by name: every field of Config but the agencies.
SECTIONS: dict[str, type[Any]] = {
    "gateway": GatewaySettings,
    "nats": NatsSettings,
    "subscriptions": SubscriptionSettings,
    "tls": TlsSettings,
    "policy": PolicySettings,
    "audit": AuditSettings,
    "personal_data": PersonalDataSettings,
    "ledger": LedgerSettings,
    "tracking": TrackingSettings,
    "console": WebConsoleSettings,
    "telemetry": TelemetrySettings,
}
