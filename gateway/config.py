"""Gateway configuration: a TOML file, then `DUTYLINK_<SECTION>_<KEY>` environment overrides,
validated against the one schema of `gateway.core.settings`.

Precedence, lowest first: built-in defaults < the TOML file < environment < command-line flags.
Unknown sections, keys and `DUTYLINK_*` variables are errors that name the file and the key (or
the variable): a typo must not silently leave a default in force. With no `[[agencies]]` in the
file the sample agencies of `sample_agencies.toml` are used (development tokens, logged loudly at
start-up).

The schema is pydantic's: it coerces the environment's strings, checks each value's type and
bounds at load (before anything connects), and keeps secrets (`SecretStr`) out of every repr and
dump. This module reads the sources, words pydantic's findings the way operators read them, and
checks what spans keys (the health port beside the gRPC port, the console beside [tls]).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from gateway.core.settings import (
    SAMPLE_AGENCIES_FILE,
    SECTIONS,
    Agency,
    Config,
    ConfigError,
    GatewaySettings,
    WebConsoleSettings,
    is_loopback,
    schema_fields,
)
from gateway.store.nats_auth import redact_url

SAMPLE_AGENCIES = Path(__file__).with_name(SAMPLE_AGENCIES_FILE)
ENV_PREFIX = "DUTYLINK_"
_SCHEMA = TypeAdapter(Config)
_AGENCIES = TypeAdapter(tuple[Agency, ...])
# DUTYLINK_* variables that are not settings, read by others: the crash drills and the test
# suite, docker compose (deploy/.env), the other-language examples of docs/.
_OTHER_VARIABLES = (
    "DUTYLINK_FAILPOINT",
    "DUTYLINK_DRILL_STALL_SECONDS",
    "DUTYLINK_TEST_DOCKER",
    "DUTYLINK_SCREENSHOTS",
    "DUTYLINK_PUBLISH_ADDRESS",
    "DUTYLINK_TOKEN",
)


def _variable(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


def setting_variables() -> list[str]:
    """Every `DUTYLINK_<SECTION>_<KEY>` variable that sets something."""
    return [
        _variable(name, field.name)
        for name, cls in SECTIONS.items()
        for field in dataclasses.fields(cls)
    ]


def _secret_keys() -> frozenset[tuple[str, str]]:
    """(section, key) of every setting typed as secret: its value is never echoed in an error."""
    return frozenset(
        (name, key)
        for name, cls in SECTIONS.items()
        for key, field in schema_fields(cls).items()
        if field.annotation is SecretStr
    )


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per `DUTYLINK_*` variable of `environ` that DutyLink does not read (a misspelt
    one would otherwise leave a default in force without a word), with the closest known name."""
    known = setting_variables()
    lines = []
    for variable in sorted(environ):
        if variable.startswith(ENV_PREFIX) and variable not in (*known, *_OTHER_VARIABLES):
            close = difflib.get_close_matches(variable, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            lines.append(f"{variable}: not a DutyLink setting{hint}")
    return lines


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: {error}") from None


@dataclasses.dataclass(frozen=True)
class _Sources:
    """Where each value came from, for the errors: the file (or the sample agencies' file) and
    the variables set."""

    where: str
    agencies_where: str
    environ: Mapping[str, str]

    def origin(self, section: str, key: str) -> str:
        """A setting's variable if set, else the file's key."""
        variable = _variable(section, key)
        return variable if variable in self.environ else f"{self.where}: {section}.{key}"


def _problem(error: ErrorDetails, secret: bool) -> str:
    """pydantic's finding in the operator's words; a secret's value is never shown."""
    kind, context = error["type"], error.get("ctx", {})
    got = "" if secret else f", got {error['input']!r}"
    if kind == "value_error":
        return str(context["error"])
    if kind == "greater_than_equal":
        return f"must be at least {context['ge']}{got}"
    if kind == "greater_than":
        return f"must be above {context['gt']}{got}"
    if kind in ("less_than_equal", "less_than"):
        return f"must be at most {context.get('le', context.get('lt'))}{got}"
    if kind == "literal_error":
        choices = context["expected"].replace("'", "").replace(" or ", ", ")
        return f"expected one of {choices}{got}"
    if kind in ("string_too_short", "missing", "missing_argument"):
        return "is required and must be a non-empty string"
    for prefix, expected in (("int", "int"), ("float", "float"), ("bool", "bool"), ("string", "str")):  # fmt: skip
        if kind.startswith(f"{prefix}_"):
            return f"expected {expected}{got}"
    if kind in ("tuple_type", "list_type"):
        return f"expected an array of strings{got}"
    return str(error["msg"])


def _message(error: ErrorDetails, sources: _Sources) -> str:
    """One error, named by its file and key (or variable)."""
    loc = [str(part) for part in error["loc"]]
    if loc[0] == "agencies":
        if len(loc) == 1:
            return f"{sources.agencies_where}: 'agencies' must be an array of tables ([[agencies]])"
        here = f"{sources.agencies_where}: agencies[{loc[1]}]"
        if len(loc) == 2:
            return f"{here}: must be a table"
        if error["type"] == "unexpected_keyword_argument":
            return f"{here}: unknown key '{loc[2]}'"
        return f"{here}: '{loc[2]}' {_problem(error, secret=loc[2] == 'token')}"
    section, key = loc[0], loc[1] if len(loc) > 1 else ""
    if error["type"] == "unexpected_keyword_argument":
        known = ", ".join(f.name for f in dataclasses.fields(SECTIONS[section]))
        return f"{sources.where}: {section}: unknown key '{key}' (expected one of {known})"
    if error["type"] == "dataclass_type":
        return f"{sources.where}: '{section}' must be a table"
    secret = (section, key) in _secret_keys()
    return f"{sources.origin(section, key)}: {_problem(error, secret)}"


def _overrides(section: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """The section's `DUTYLINK_*` variables; an array setting is comma-separated there."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(SECTIONS[section]):
        variable = _variable(section, field.name)
        if variable in environ:
            value = environ[variable]
            if isinstance(field.default, tuple):
                values[field.name] = tuple(p.strip() for p in value.split(",") if p.strip())
            else:
                values[field.name] = value
    return values


def load(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the file at `path` (if any), then `DUTYLINK_*` variables of `environ`."""
    environ = os.environ if environ is None else environ
    if unknown := unknown_variables(environ):
        raise ConfigError(unknown[0])
    raw = _read_toml(path) if path is not None else {}
    where = str(path) if path is not None else "defaults"
    for key in raw:
        if key not in (*SECTIONS, "agencies"):
            raise ConfigError(
                f"{where}: unknown section '{key}' (expected one of {', '.join(SECTIONS)}, agencies)"
            )
    data: dict[str, Any] = {}
    for name in SECTIONS:
        if not isinstance(raw.get(name, {}), dict):
            raise ConfigError(f"{where}: '{name}' must be a table")
        data[name] = {**raw.get(name, {}), **_overrides(name, environ)}
    if "agencies" in raw:
        data["agencies"], agencies_where = raw["agencies"], where
    else:
        agencies_where = str(SAMPLE_AGENCIES)
        data["agencies"] = _read_toml(SAMPLE_AGENCIES)["agencies"]
    if isinstance(data["agencies"], list):
        data["agencies"] = tuple(data["agencies"])
    sources = _Sources(where, agencies_where, environ)
    try:
        config = _SCHEMA.validate_python({**data, "agencies_source": agencies_where})
    except ValidationError as error:
        raise ConfigError(_message(error.errors(include_url=False)[0], sources)) from None
    _check_across_keys(config, sources)
    return config


def _check_gateway(gateway: GatewaySettings, sources: _Sources) -> None:
    """The health port is not the gRPC port (port 0, any free port, is no conflict)."""
    health_port = gateway.health_listen.rpartition(":")[2]
    if health_port not in ("", "0") and health_port == gateway.listen.rpartition(":")[2]:
        raise ConfigError(
            f"{sources.origin('gateway', 'health_listen')}: {gateway.health_listen!r} is the "
            "port of gateway.listen; the health port must be a separate one"
        )


def _check_console(console: WebConsoleSettings, tls_enabled: bool, sources: _Sources) -> None:
    """Beside a plaintext gateway officers log in with their agency's token over plain HTTP: on
    loopback only, unless allowed elsewhere. Beside a mutual-TLS gateway the console serves HTTPS
    with its own certificate and officers log in with their agency's client certificate."""
    if not console.listen:
        return
    if tls_enabled:
        if not (console.cert_file and console.key_file):
            raise ConfigError(
                f"{sources.origin('console', 'cert_file')}: with [tls] the console serves HTTPS "
                "and relays officers' calls with its own certificate: set console.cert_file and "
                "console.key_file (issue them with `dutylink pki console NAME`)"
            )
        return
    if console.cert_file or console.key_file:
        raise ConfigError(
            f"{sources.origin('console', 'cert_file')}: a console certificate is for a gateway "
            "with [tls]; without it officers log in with their agency's token"
        )
    if not console.allow_remote and not is_loopback(console.listen.rpartition(":")[0]):
        raise ConfigError(
            f"{sources.origin('console', 'listen')}: {console.listen!r} is not a loopback "
            "address; without [tls] the console serves plain HTTP: serve it behind a TLS proxy "
            "and set console.allow_remote = true"
        )


def _check_across_keys(config: Config, sources: _Sources) -> None:
    _check_gateway(config.gateway, sources)
    tls = config.tls
    _check_console(config.console, tls.enabled, sources)
    given = [k for k in ("ca_file", "cert_file", "key_file") if getattr(tls, k)]
    if given and len(given) < 3:
        raise ConfigError(
            f"{sources.where}: tls: ca_file, cert_file and key_file go together "
            f"(only {', '.join(given)} set)"
        )
    if bool(tls.fronts) != bool(tls.front_ca_file) or (tls.fronts and not tls.enabled):
        raise ConfigError(
            f"{sources.origin('tls', 'fronts')}: fronts need [tls] and tls.front_ca_file, the CA "
            "the forwarded certificates are checked against, and front_ca_file needs fronts"
        )
    agencies, where = config.agencies, sources.agencies_where
    ids = [a.id for a in agencies]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{where}: agency ids must be unique")
    tokens = [a.token.get_secret_value() for a in agencies if a.token]
    if len(set(tokens)) != len(tokens):
        raise ConfigError(f"{where}: agency tokens must be unique")
    if not tls.enabled and (missing := [a.id for a in agencies if not a.token]):
        raise ConfigError(
            f"{where}: without [tls] every agency needs a token (missing: {', '.join(missing)})"
        )


def sample_tokens() -> dict[str, str]:
    """Agency id -> the public development token of the sample agencies (demo, bench, tests)."""
    agencies = _AGENCIES.validate_python(tuple(_read_toml(SAMPLE_AGENCIES)["agencies"]))
    return {a.id: a.token.get_secret_value() for a in agencies}


def masked(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data, secrets replaced by '***' (the NATS URL keeps
    its user and hosts: nats://user:***@host)."""
    data: dict[str, Any] = _SCHEMA.dump_python(config, mode="json")
    data["nats"]["url"] = redact_url(config.nats.url.get_secret_value())
    for agency in data["agencies"]:
        agency["token"] = "***" if agency["token"] else ""
    return data
