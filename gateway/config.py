"""Gateway configuration: a TOML file, then `DUTYLINK_<SECTION>_<KEY>` environment overrides.

Precedence, lowest first: built-in defaults < the TOML file < environment < command-line flags.
Unknown sections and keys are errors that name the file and the key: a typo must not silently
leave a default in force. With no `[[agencies]]` in the file the sample agencies of
`sample_agencies.toml` are used (development tokens, logged loudly at start-up).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from gateway.store.nats_auth import redact_url

SAMPLE_AGENCIES = Path(__file__).with_name("sample_agencies.toml")
ENV_PREFIX = "DUTYLINK_"


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
    gateway: GatewaySettings = GatewaySettings()
    nats: NatsSettings = NatsSettings()
    subscriptions: SubscriptionSettings = SubscriptionSettings()
    tls: TlsSettings = TlsSettings()
    policy: PolicySettings = PolicySettings()
    audit: AuditSettings = AuditSettings()
    agencies: tuple[Agency, ...] = ()
    # Where the agencies came from, so start-up can warn about sample tokens.
    agencies_source: str = str(SAMPLE_AGENCIES)


_SECTIONS: dict[str, type[Any]] = {
    "gateway": GatewaySettings,
    "nats": NatsSettings,
    "subscriptions": SubscriptionSettings,
    "tls": TlsSettings,
    "policy": PolicySettings,
    "audit": AuditSettings,
}


def _coerce(value: Any, kind: Any, where: str) -> Any:
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
            return value.lower() in ("1", "true", "yes")
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")


def _section(cls: type[Any], values: Mapping[str, Any], where: str) -> Any:
    known = get_type_hints(cls)
    for key in values:
        if key not in known:
            raise ConfigError(f"{where}: unknown key '{key}' (expected one of {', '.join(known)})")
    return cls(**{k: _coerce(v, known[k], f"{where}.{k}") for k, v in values.items()})


# Keys of [gateway] that are addresses to listen on; all but `listen` may be empty (off).
_ADDRESSES = ("listen", "health_listen", "metrics_listen")


# Keys of [gateway] that are limits: at least 1.
_LIMITS = (
    "max_concurrent_rpcs",
    "agency_max_concurrent_rpcs",
    "agency_max_subscriptions",
    "agency_max_publish_bytes_in_flight",
    "max_publish_bytes_in_flight",
    "agency_max_batch_events_storing",
)


def check_address(value: str, where: str) -> None:
    """HOST:PORT with a port from 0 (any) to 65535; an IPv6 host in brackets."""
    host, _, port = value.rpartition(":")
    if (
        not host
        or not (port.isascii() and port.isdigit() and int(port) <= 65535)
        or (":" in host and not (host.startswith("[") and host.endswith("]")))
    ):
        raise ConfigError(f"{where}: expected HOST:PORT (e.g. 127.0.0.1:50052), got {value!r}")


def _check_gateway(gateway: GatewaySettings, where: str, environ: Mapping[str, str]) -> None:
    """Each set address is valid (the error names the variable when it came from there), the
    health port is not the gRPC port, and at least one call can be served."""

    def origin(key: str) -> str:
        variable = f"{ENV_PREFIX}GATEWAY_{key.upper()}"
        return variable if variable in environ else f"{where}: gateway.{key}"

    for key in _ADDRESSES:
        value = getattr(gateway, key)
        if value or key == "listen":
            check_address(value, origin(key))
    health_port = gateway.health_listen.rpartition(":")[2]
    if health_port not in ("", "0") and health_port == gateway.listen.rpartition(":")[2]:
        raise ConfigError(
            f"{origin('health_listen')}: {gateway.health_listen!r} is the port of gateway.listen;"
            " the health port must be a separate one"
        )
    for key in (*_LIMITS, "max_event_elements", "max_violations_per_event"):
        if getattr(gateway, key) < 1:
            raise ConfigError(f"{origin(key)}: must be at least 1, got {getattr(gateway, key)}")
    if gateway.writer_lease_seconds <= 0:
        raise ConfigError(
            f"{origin('writer_lease_seconds')}: must be above 0, got {gateway.writer_lease_seconds}"
        )


def _agencies(raw: Any, where: str) -> tuple[Agency, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: 'agencies' must be an array of tables ([[agencies]])")
    agencies = []
    for index, entry in enumerate(raw):
        here = f"{where}: agencies[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{here}: must be a table")
        unknown = set(entry) - {"id", "name", "token", "roles"}
        if unknown:
            raise ConfigError(f"{here}: unknown key '{sorted(unknown)[0]}'")
        for key in ("id", "name"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ConfigError(f"{here}: '{key}' is required and must be a non-empty string")
        if not isinstance(entry.get("token", ""), str):
            raise ConfigError(f"{here}: 'token' must be a string")
        roles = entry.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise ConfigError(f"{here}: 'roles' must be an array of strings")
        agencies.append(Agency(entry["id"], entry["name"], entry.get("token", ""), tuple(roles)))
    ids = [a.id for a in agencies]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{where}: agency ids must be unique")
    tokens = [a.token for a in agencies if a.token]
    if len(set(tokens)) != len(tokens):
        raise ConfigError(f"{where}: agency tokens must be unique")
    return tuple(agencies)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: {error}") from None


def load(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the file at `path` (if any), then `DUTYLINK_*` variables of `environ`."""
    environ = os.environ if environ is None else environ
    raw = _read_toml(path) if path is not None else {}
    where = str(path) if path is not None else "defaults"
    for key in raw:
        if key not in (*_SECTIONS, "agencies"):
            raise ConfigError(
                f"{where}: unknown section '{key}' (expected one of {', '.join(_SECTIONS)}, agencies)"
            )
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        values = dict(raw.get(name, {}))
        if not isinstance(raw.get(name, {}), dict):
            raise ConfigError(f"{where}: '{name}' must be a table")
        section = _section(cls, values, f"{where}: {name}")
        overrides = {}
        for key, kind in get_type_hints(cls).items():
            variable = f"{ENV_PREFIX}{name.upper()}_{key.upper()}"
            if variable in environ:
                overrides[key] = _coerce(environ[variable], kind, variable)
        sections[name] = dataclasses.replace(section, **overrides)
    if "agencies" in raw:
        agencies, source = _agencies(raw["agencies"], where), where
    else:
        agencies, source = (
            _agencies(_read_toml(SAMPLE_AGENCIES)["agencies"], str(SAMPLE_AGENCIES)),
            str(SAMPLE_AGENCIES),
        )
    _check_gateway(sections["gateway"], where, environ)
    tls = sections["tls"]
    given = [k for k in ("ca_file", "cert_file", "key_file") if getattr(tls, k)]
    if given and len(given) < 3:
        raise ConfigError(
            f"{where}: tls: ca_file, cert_file and key_file go together (only {', '.join(given)} set)"
        )
    if tls.crl_unusable not in CRL_UNUSABLE_POLICIES:
        raise ConfigError(
            f"{where}: tls.crl_unusable: expected one of {', '.join(CRL_UNUSABLE_POLICIES)}, "
            f"got {tls.crl_unusable!r}"
        )
    if not tls.enabled and (missing := [a.id for a in agencies if not a.token]):
        raise ConfigError(
            f"{where}: without [tls] every agency needs a token (missing: {', '.join(missing)})"
        )
    return Config(agencies=agencies, agencies_source=source, **sections)


# DUTYLINK_* variables that are not settings: read by the crash drills and the test suite.
_OTHER_VARIABLES = ("DUTYLINK_FAILPOINT", "DUTYLINK_TEST_DOCKER", "DUTYLINK_DRILL_STALL_SECONDS")


def setting_variables() -> list[str]:
    """Every `DUTYLINK_<SECTION>_<KEY>` variable that sets something."""
    return [
        f"{ENV_PREFIX}{name.upper()}_{key.upper()}"
        for name, cls in _SECTIONS.items()
        for key in get_type_hints(cls)
    ]


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per `DUTYLINK_*` variable of `environ` that DutyLink does not read (a misspelt
    one would otherwise be ignored without a word), with the closest known name."""
    known = setting_variables()
    lines = []
    for variable in sorted(environ):
        if variable.startswith(ENV_PREFIX) and variable not in (*known, *_OTHER_VARIABLES):
            close = difflib.get_close_matches(variable, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            lines.append(f"{variable} is not a DutyLink setting{hint}; ignored")
    return lines


def sample_tokens() -> dict[str, str]:
    """Agency id -> the public development token of the sample agencies (demo, bench, tests)."""
    return {
        a.id: a.token
        for a in _agencies(_read_toml(SAMPLE_AGENCIES)["agencies"], str(SAMPLE_AGENCIES))
    }


def masked(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data, secrets replaced by '***' (agency tokens, the
    password or token in the NATS URL)."""
    data = dataclasses.asdict(config)
    data["nats"]["url"] = redact_url(config.nats.url)
    for agency in data["agencies"]:
        agency["token"] = "***"
        agency["roles"] = list(agency["roles"])
    return data
