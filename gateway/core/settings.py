"""The gateway's settings: one frozen dataclass per section of the configuration file, with the
documented defaults. Pure declarations: loading them from a TOML file and `DUTYLINK_*` variables,
and checking what was loaded (the errors name the file or variable), is `gateway.config`'s job.
Every layer that needs a setting takes these values; none reads a file or the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The file beside `gateway.config` holding the sample agencies (development tokens) used when a
# configuration lists none; start-up warns when the agencies came from it.
SAMPLE_AGENCIES_FILE = "sample_agencies.toml"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file (or variable) and the key."""


@dataclass(frozen=True)
class GatewaySettings:
    """The gRPC side."""

    listen: str = "127.0.0.1:50051"
    gateway_id: str = "gw-1"
    # One writer per gateway_id on a NATS (its audit log): the lease a running gateway renews
    # every third of this; a crashed holder's lease lapses after it, and a second gateway with
    # the same id waits that long at most before it is refused.
    writer_lease_seconds: float = 15.0
    reflection: bool = True
    metrics_listen: str = ""
    # Plaintext grpc.health.v1 only (no other service), for probes that cannot present a client
    # certificate (Kubernetes' gRPC probes); empty: off.
    health_listen: str = ""
    max_message_bytes: int = 1_048_576
    max_batch_events: int = 1000
    # Messages and list items in one event (or request), counted before the validation rules
    # run: beyond it the event is refused at once. Validation costs ~10-20 µs per element (more
    # with violations) and holds the event loop: this bounds one event's validation. A real
    # national CAP alert (2 languages x 40 areas x 120 geocodes) is ~9,700 elements (~150 ms on
    # a loaded 2-core machine); at this limit the costliest valid event (polygons of 1,000
    # points) took 0.4-0.65 s there.
    max_event_elements: int = 32768
    # Field violations listed for one refused event; the rest are counted ("and N more were
    # cut"), which keeps every error status within gRPC's metadata limits.
    max_violations_per_event: int = 20
    # Calls served at once, open subscriptions included. Beyond it a call is refused with
    # RESOURCE_EXHAUSTED (which clients retry with backoff) instead of queueing without bound.
    max_concurrent_rpcs: int = 1000
    # What one agency may hold at once, so that its bug or abuse degrades only that agency:
    # calls (open subscriptions included; at most max_concurrent_rpcs), open subscriptions, and
    # bytes of publish requests in progress. Beyond them its calls are RESOURCE_EXHAUSTED too.
    # Health checks count against none of these limits and are never refused.
    agency_max_concurrent_rpcs: int = 500
    agency_max_subscriptions: int = 250
    agency_max_publish_bytes_in_flight: int = 64 * 1024 * 1024
    # Bytes of publish requests in progress (admission, audit, store) in the whole gateway.
    max_publish_bytes_in_flight: int = 256 * 1024 * 1024
    # Events of one agency's batches on their way to JetStream at once, sent in pieces of half
    # of it: JetStream stores in arrival order, so another agency's event waits behind at most
    # this many of them (not behind whole batches).
    agency_max_batch_events_storing: int = 64
    publish_timeout_seconds: float = 5.0
    shutdown_grace_seconds: float = 10.0
    # HTTP/2 keepalive: a connection idle this long is pinged, and closed without an answer
    # within keepalive_timeout_seconds, so a client gone without a word is found. Clients may
    # ping every min_client_ping_seconds at most (the SDK: every 30 s), even with no call open;
    # more often twice and they are told to go away (GOAWAY "too_many_pings").
    keepalive_seconds: float = 60.0
    keepalive_timeout_seconds: float = 20.0
    min_client_ping_seconds: float = 10.0
    # A connection older than this is asked to go away (GOAWAY), so clients reconnect and spread
    # over the replicas as they are now; its calls get max_connection_age_grace_seconds to end
    # (then an open subscription is cut, and the SDK opens it again where it was acked).
    max_connection_age_seconds: float = 1800.0
    max_connection_age_grace_seconds: float = 300.0
    # Judge every event against its lifecycle and the resource ledger (proto/dutylink/
    # catalogue.toml) and refuse what does not fit. Off only for a pipe that carries no loop.
    enforce_lifecycles: bool = True
    # Gateway processes of this replica sharing `listen` (SO_REUSEPORT), each with the audit
    # log `<gateway_id>-w<i>`: 1 is one process, as always; 0 is one per core up to
    # `max_workers` (see gateway.cli.workers).
    workers: int = 1
    max_workers: int = 8


@dataclass(frozen=True)
class NatsSettings:
    """JetStream. An empty `url` starts the embedded nats-server in `data_dir`."""

    url: str = ""
    data_dir: str = ".dutylink"
    stream_replicas: int = 1
    duplicate_window_seconds: float = 120.0
    events_max_age_days: float = 30.0
    events_max_bytes: int = -1
    deadletter_max_age_days: float = 180.0
    connect_timeout_seconds: float = 5.0
    durability: str = "refuse"


@dataclass(frozen=True)
class SubscriptionSettings:
    """Delivery to subscribers."""

    ack_wait_seconds: float = 30.0
    max_deliveries: int = 5
    default_in_flight: int = 64
    max_in_flight: int = 1000
    max_filter_subjects: int = 256
    # How long every replica remembers an ack confirmed to a subscriber (the DUTYLINK_ACKED
    # stream): a redelivery within it, after a consumer leader change lost the ack, is acked
    # again instead of sent. One small record per confirmed ack, kept this long.
    ack_record_seconds: float = 3600.0


@dataclass(frozen=True)
class PolicySettings:
    """Access policies: the directory of `*.yaml` files (empty: the sample policies shipped in
    the `policies` package), re-read this often when they change."""

    dir: str = ""
    reload_seconds: float = 2.0


@dataclass(frozen=True)
class AuditSettings:
    """The signed audit log. `key_file` holds this replica's Ed25519 checkpoint key (empty:
    `<nats.data_dir>/audit/<gateway_id>.key`, created on first start); `commitment_key_file` the
    deployment's secret for withheld-field commitments, the same file on every replica (empty:
    `<nats.data_dir>/audit/commitment.key`, created on first start)."""

    enabled: bool = True
    key_file: str = ""
    commitment_key_file: str = ""
    checkpoint_seconds: float = 1.0
    # Bounds on what one entry holds, so that any entry fits a frame (a refused Publish with a
    # 1 MB event id once failed the whole group commit): a longer string field keeps a prefix
    # plus its length and SHA-256; a longer caller-supplied list keeps its first items plus a
    # digest of the rest. 1024 bytes keeps every valid id and type whole.
    max_field_bytes: int = 1024
    max_field_items: int = 64
    # A log's checkpoint key is fixed by its first checkpoint; start-up refuses another key
    # unless this names the former one: its key id (as the refusal prints it), its public key,
    # or the path of its key file (then the former key co-signs, endorsing the new one). The
    # rotation is recorded in the log; once recorded, this setting is ignored.
    rotate_from_key: str = ""
    # When the event stream lacks events the audit log records as stored (a damaged store,
    # checked at start-up): "refuse" to start, or serve "read-only" (publishes refused with
    # FAILED_PRECONDITION naming the first missing event; subscriptions still served).
    store_mismatch: str = "refuse"


@dataclass(frozen=True)
class LedgerSettings:
    """The resource ledger's own work (docs/ledger.md): how often the gateway looks for
    reservations past their expiry and publishes their `inventory.reservation_expired` events."""

    expiry_check_seconds: float = 5.0
    # Item lines read per plane and check: beyond it that plane's expiries wait (an error is
    # logged at each check) until the limit is raised; the other planes go on.
    max_items: int = 10_000
    # The jurisdiction (GB/T 2260 division code) of the ledger's expiry notices about an item
    # line stored before lines kept their declaration's. The default is the country as a
    # whole; set the exchange's own area.
    division_code: str = "100000"


@dataclass(frozen=True)
class TrackingSettings:
    """Business acknowledgements and deadlines (gateway.store.tracker): how often the gateway
    looks for escalation levels that fell due, and how many tracked messages it reads per look."""

    check_seconds: float = 1.0
    # Messages with a deadline still running read per look (and messages still waiting for an
    # answer per pending list): beyond it escalations wait (an error is logged at each look)
    # until the limit is raised. Finished messages are out of both indexes.
    max_tracked: int = 10_000


@dataclass(frozen=True)
class TelemetrySettings:
    """Traces (OpenTelemetry). `traces`: "off" records nothing (a caller's trace context is
    still carried from its publish to every delivery), "otlp" exports spans to the OpenTelemetry
    collector at `otlp_endpoint` (gRPC; http:// for plaintext), new traces sampled at
    `trace_sample_ratio` (a caller's sampling decision is followed)."""

    traces: str = "off"
    otlp_endpoint: str = "http://127.0.0.1:4317"
    service_name: str = "dutylink-gateway"
    trace_sample_ratio: float = 1.0


TRACE_EXPORTERS = ("off", "otlp")


@dataclass(frozen=True)
class WebConsoleSettings:
    """The duty officers' web console served beside the gateway by `dutylink serve`
    (gateway.console): off unless `listen` names HOST:PORT; times in `zone`. Beside a plaintext
    gateway it serves plain HTTP with token login, so only on loopback unless `allow_remote`
    (behind a TLS proxy set up on purpose). Beside a mutual-TLS gateway it serves HTTPS with
    its own certificate (`cert_file`, `key_file`, from `dutylink pki console`), officers log in
    with their agency's client certificate, and it relays their read-only calls."""

    listen: str = ""
    zone: str = "Asia/Shanghai"
    allow_remote: bool = False
    cert_file: str = ""
    key_file: str = ""


# What `tls.crl_unusable` may say (see gateway.access.revocation).
CRL_UNUSABLE_POLICIES = ("refuse", "last_good")


@dataclass(frozen=True)
class TlsSettings:
    """Mutual TLS. With `cert_file` set the gateway serves TLS only and every agency must present
    a client certificate issued by `ca_file` (see `dutylink pki`); without it, plaintext with
    bearer tokens (development only)."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    crl_file: str = ""
    # While the CRL file is missing or unreadable, or the list in force is past its nextUpdate:
    # "refuse" every call (UNAVAILABLE) until a current CRL is in place, or "last_good": go on
    # checking against the last good list kept in memory. A CRL older than the one in force is
    # refused either way (see gateway.access.revocation).
    crl_unusable: str = "refuse"
    # How often the gateway looks at the CRL file (and the clock) without a call to prompt it,
    # so that each change is audited promptly.
    crl_check_seconds: float = 5.0
    # The web consoles (their certificates' urn:dutylink:console:<name>) that may relay their
    # officers' read-only calls, each as the agency of the officer's own client certificate.
    consoles: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


@dataclass(frozen=True)
class Agency:
    """A connected agency; `token` only in bearer-token (development) mode."""

    id: str
    name: str
    token: str = field(default="", repr=False)
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    """The whole configuration: each section's settings and the agencies."""

    gateway: GatewaySettings = GatewaySettings()
    nats: NatsSettings = NatsSettings()
    subscriptions: SubscriptionSettings = SubscriptionSettings()
    tls: TlsSettings = TlsSettings()
    policy: PolicySettings = PolicySettings()
    audit: AuditSettings = AuditSettings()
    ledger: LedgerSettings = LedgerSettings()
    tracking: TrackingSettings = TrackingSettings()
    console: WebConsoleSettings = WebConsoleSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    agencies: tuple[Agency, ...] = ()
    # Where the agencies came from, so start-up can warn about sample tokens.
    agencies_source: str = SAMPLE_AGENCIES_FILE


# The tables of the configuration file by name: every field of Config but the agencies.
SECTIONS: dict[str, type[Any]] = {
    "gateway": GatewaySettings,
    "nats": NatsSettings,
    "subscriptions": SubscriptionSettings,
    "tls": TlsSettings,
    "policy": PolicySettings,
    "audit": AuditSettings,
    "ledger": LedgerSettings,
    "tracking": TrackingSettings,
    "console": WebConsoleSettings,
    "telemetry": TelemetrySettings,
}
