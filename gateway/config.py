"""Gateway configuration: a TOML file, then `DUTYLINK_<SECTION>_<KEY>` environment overrides.

Precedence, lowest first: built-in defaults < the TOML file < environment < command-line flags.
Unknown sections and keys are errors that name the file and the key: a typo must not silently
leave a default in force. With no `[[agencies]]` in the file the sample agencies of
`sample_agencies.toml` are used (development tokens, logged loudly at start-up). The settings
themselves (sections, keys, defaults) are declared in `gateway.core.settings`; this module reads
them from files and the environment and checks what it read.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_type_hints
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.access.pki import AGENCY_ID
from gateway.core.settings import (
    CRL_UNUSABLE_POLICIES,
    SAMPLE_AGENCIES_FILE,
    SECTIONS,
    TRACE_EXPORTERS,
    Agency,
    Config,
    ConfigError,
    GatewaySettings,
    LedgerSettings,
    TelemetrySettings,
    TrackingSettings,
    WebConsoleSettings,
)
from gateway.store.nats_auth import redact_url

SAMPLE_AGENCIES = Path(__file__).with_name(SAMPLE_AGENCIES_FILE)
ENV_PREFIX = "DUTYLINK_"


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
    elif kind == tuple[str, ...]:
        if isinstance(value, str):  # a DUTYLINK_* variable: comma-separated
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list) and all(isinstance(part, str) for part in value):
            return tuple(value)
        raise ConfigError(f"{where}: expected an array of strings, got {value!r}")
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


def is_loopback(host: str) -> bool:
    """Whether a listen address's host (brackets stripped) stays on this machine."""
    host = host.removeprefix("[").removesuffix("]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def _check_console(
    console: WebConsoleSettings, tls_enabled: bool, where: str, environ: Mapping[str, str]
) -> None:
    """Off, or a valid address and a known zone. Beside a plaintext gateway officers log in
    with their agency's token over plain HTTP: on loopback only, unless allowed elsewhere.
    Beside a mutual-TLS gateway the console serves HTTPS with its own certificate (`cert_file`,
    `key_file`) and officers log in with their agency's client certificate."""
    if not console.listen:
        return
    listen = _origin("console", "listen", where, environ)
    check_address(console.listen, listen)
    try:
        ZoneInfo(console.zone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = _origin("console", "zone", where, environ)
        raise ConfigError(f"{zone}: not a known time zone, got {console.zone!r}") from None
    if tls_enabled:
        if not (console.cert_file and console.key_file):
            cert = _origin("console", "cert_file", where, environ)
            raise ConfigError(
                f"{cert}: with [tls] the console serves HTTPS and relays officers' calls with "
                "its own certificate: set console.cert_file and console.key_file (issue them "
                "with `dutylink pki console NAME`)"
            )
        return
    if console.cert_file or console.key_file:
        cert = _origin("console", "cert_file", where, environ)
        raise ConfigError(
            f"{cert}: a console certificate is for a gateway with [tls]; without it officers "
            "log in with their agency's token"
        )
    if not console.allow_remote and not is_loopback(console.listen.rpartition(":")[0]):
        raise ConfigError(
            f"{listen}: {console.listen!r} is not a loopback address; without [tls] the console "
            "serves plain HTTP: serve it behind a TLS proxy and set console.allow_remote = true"
        )


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
    for key in (*_LIMITS, "max_event_elements", "max_violations_per_event", "max_workers"):
        if getattr(gateway, key) < 1:
            raise ConfigError(f"{origin(key)}: must be at least 1, got {getattr(gateway, key)}")
    if gateway.workers < 0:
        raise ConfigError(
            f"{origin('workers')}: must be 0 (one per core) or more, got {gateway.workers}"
        )
    for key in (
        "writer_lease_seconds",
        "keepalive_seconds",
        "keepalive_timeout_seconds",
        "min_client_ping_seconds",
        "max_connection_age_seconds",
        "max_connection_age_grace_seconds",
    ):
        if getattr(gateway, key) <= 0:
            raise ConfigError(f"{origin(key)}: must be above 0, got {getattr(gateway, key)}")


# A GB/T 2260 division code, as an event's jurisdiction takes it.
_DIVISION_CODE = re.compile(r"[1-8][0-9]{5}")


def _check_ledger(ledger: LedgerSettings, where: str, environ: Mapping[str, str]) -> None:
    """The expiry check runs at some interval, reads at least one item line, and the events it
    publishes carry a valid jurisdiction."""

    def origin(key: str) -> str:
        return _origin("ledger", key, where, environ)

    if not ledger.expiry_check_seconds > 0:
        raise ConfigError(
            f"{origin('expiry_check_seconds')}: must be above 0, got {ledger.expiry_check_seconds}"
        )
    if ledger.max_items < 1:
        raise ConfigError(f"{origin('max_items')}: must be at least 1, got {ledger.max_items}")
    if not _DIVISION_CODE.fullmatch(ledger.division_code):
        raise ConfigError(
            f"{origin('division_code')}: expected a six-digit GB/T 2260 division code "
            f"(e.g. 310000), got {ledger.division_code!r}"
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


def _origin(section: str, key: str, where: str, environ: Mapping[str, str]) -> str:
    """Where a setting's value came from: its variable if set, else the file's key."""
    variable = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
    return variable if variable in environ else f"{where}: {section}.{key}"


def _check_tracking(tracking: TrackingSettings, where: str, environ: Mapping[str, str]) -> None:
    """The timer runs at some interval and reads at least one tracked message."""
    if not tracking.check_seconds > 0:
        where_from = _origin("tracking", "check_seconds", where, environ)
        raise ConfigError(f"{where_from}: must be above 0, got {tracking.check_seconds}")
    if tracking.max_tracked < 1:
        where_from = _origin("tracking", "max_tracked", where, environ)
        raise ConfigError(f"{where_from}: must be at least 1, got {tracking.max_tracked}")


def _check_telemetry(telemetry: TelemetrySettings, where: str, environ: Mapping[str, str]) -> None:
    """A known exporter, a collector address with its scheme, a ratio of traces."""
    if telemetry.traces not in TRACE_EXPORTERS:
        raise ConfigError(
            f"{_origin('telemetry', 'traces', where, environ)}: expected one of "
            f"{', '.join(TRACE_EXPORTERS)}, got {telemetry.traces!r}"
        )
    scheme, _, rest = telemetry.otlp_endpoint.partition("://")
    if scheme not in ("http", "https") or not rest:
        raise ConfigError(
            f"{_origin('telemetry', 'otlp_endpoint', where, environ)}: expected "
            f"http://HOST:PORT or https://HOST:PORT, got {telemetry.otlp_endpoint!r}"
        )
    if not 0 <= telemetry.trace_sample_ratio <= 1:
        raise ConfigError(
            f"{_origin('telemetry', 'trace_sample_ratio', where, environ)}: must be between 0 "
            f"and 1, got {telemetry.trace_sample_ratio}"
        )


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
        if key not in (*SECTIONS, "agencies"):
            raise ConfigError(
                f"{where}: unknown section '{key}' (expected one of {', '.join(SECTIONS)}, agencies)"
            )
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
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
    _check_ledger(sections["ledger"], where, environ)
    _check_tracking(sections["tracking"], where, environ)
    _check_telemetry(sections["telemetry"], where, environ)
    tls = sections["tls"]
    _check_console(sections["console"], tls.enabled, where, environ)
    given = [k for k in ("ca_file", "cert_file", "key_file") if getattr(tls, k)]
    if given and len(given) < 3:
        raise ConfigError(
            f"{where}: tls: ca_file, cert_file and key_file go together (only {', '.join(given)} set)"
        )
    for name in tls.consoles:
        if not AGENCY_ID.fullmatch(name):
            consoles = _origin("tls", "consoles", where, environ)
            raise ConfigError(f"{consoles}: {name!r} is not a console name (as in its certificate)")
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
        for name, cls in SECTIONS.items()
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
