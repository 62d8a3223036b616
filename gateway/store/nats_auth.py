"""Who may do what on DutyLink's NATS, their generated passwords, and secrets kept out of sight.

- One declaration of the NATS users (`GATEWAY`, `AUDITOR`, `WITNESS`, `operator_role`) and
  their permissions feeds the embedded server's configuration (gateway.store.nats_server, through
  `embedded_roles`), the local cluster's (gateway.testkit.cluster), and deploy/nats/nats.conf's
  (`DEPLOY_ROLES`, rendered there by tools/render_deploy.py). Nobody may delete, purge,
  snapshot, restore or move a stream (`FORBIDDEN`): erasing evidence is not something a stolen
  password can do. The gateway alone writes events and its audit log; the audit CLI reads the
  audit stream; `audit verify --store` also reads the event stream, as a user of its own; the
  dead-letter CLI reads dead letters, replays them and audits that in its operator log.
- The embedded server's passwords are generated at first start, one file per user, mode 0600,
  in `<data_dir>/nats/credentials/`, and reused; its configuration holds only bcrypt hashes.
- `redact_url` is the one place that hides a password or token in a NATS URL before it is
  shown or logged; `split_servers` the one place that takes credentials out of a URL.

Pure except for `ensure_credentials`, `read_credentials` (files) and hashing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import bcrypt

from gateway.core import subjects
from gateway.core.streams import AGGREGATES_BUCKET

CREDENTIALS_DIR = "credentials"
DEFAULT_INBOX_PREFIX = "_INBOX"
MASK = "***"
# The passwords are random (144 bits): their entropy, not bcrypt's cost, is what no guessing
# gets through. nats-server checks the hash on every connect: at cost 10 a connect took ~270 ms
# on a loaded 2-core machine (1.5 ms without a password), so a low cost keeps connects quick.
BCRYPT_ROUNDS = 8

# Never allowed to anyone: deleting, purging, snapshotting, restoring or moving a stream or
# its messages and JetStream's cluster-wide (meta) operations. Evidence is erased by no user;
# an administrator does cluster operations with the system account's tools.
FORBIDDEN = (
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
    "$JS.API.STREAM.SNAPSHOT.>",
    "$JS.API.STREAM.RESTORE.>",
    "$JS.API.STREAM.PEER.>",
    "$JS.API.META.>",
)


class CredentialsError(OSError):
    """A credentials file cannot be read or created, or others can read it (the message names
    the file)."""


@dataclass(frozen=True)
class Role:
    """A NATS user and what it may publish and subscribe to. `inbox_prefix`: where its replies
    arrive; a user other than the gateway gets inboxes of its own, so it cannot subscribe to
    the gateway's (which carry events)."""

    user: str
    publish_allow: tuple[str, ...]
    subscribe_allow: tuple[str, ...]
    publish_deny: tuple[str, ...] = FORBIDDEN
    inbox_prefix: str = DEFAULT_INBOX_PREFIX
    # What the user is for, as deploy/nats/nats.conf says it above the user (tools/render_deploy.py).
    note: str = ""


# The note says why; besides: purging a key of the aggregates bucket would need STREAM.PURGE,
# refused as for every stream.
GATEWAY = Role(
    user="gateway",
    publish_allow=(
        "dutylink.>",
        f"$KV.{AGGREGATES_BUCKET}.>",
        "$JS.API.INFO",
        "$JS.API.STREAM.CREATE.*",
        "$JS.API.STREAM.UPDATE.*",
        "$JS.API.STREAM.INFO.*",
        "$JS.API.STREAM.NAMES",
        "$JS.API.STREAM.LIST",
        "$JS.API.STREAM.MSG.GET.*",
        "$JS.API.DIRECT.GET.>",
        "$JS.API.CONSUMER.>",
        "$JS.ACK.>",
        "$JS.FC.>",
    ),
    subscribe_allow=(f"{DEFAULT_INBOX_PREFIX}.>", "dutylink.>"),
    note=f"""The gateways. Their own subjects, the aggregates KV bucket (writes to
$KV.{AGGREGATES_BUCKET}.>; its stream KV_{AGGREGATES_BUCKET} is created and read through the
stream and consumer calls below), the JetStream API calls they make, acks and flow control, and
the VARZ import below. Never delete, purge, snapshot, restore or move peers of a stream: a
stolen gateway password must not be able to erase evidence. Stream updates stay allowed because
the gateway brings its streams' settings up to date at start (e.g. 1 -> 3 replicas);
deny_delete/deny_purge on every stream still hold.""",
)

AUDITOR = Role(
    user="auditor",
    publish_allow=(
        "$JS.API.INFO",
        f"$JS.API.STREAM.INFO.{subjects.AUDIT_STREAM}",
        f"$JS.API.STREAM.MSG.GET.{subjects.AUDIT_STREAM}",
    ),
    subscribe_allow=("_INBOX_auditor.>", f"{subjects.AUDIT_PREFIX}.>"),
    inbox_prefix="_INBOX_auditor",
    note="""`dutylink audit ...` (auditors): reads the audit stream, nothing else. Its own
inboxes: it cannot read the gateway's replies, which carry events.""",
)

# Besides its note: not the auditor's (who must learn nothing a policy withholds). No consumer:
# one is server state (max_consumers), and its deliveries are the server's publishes, which the
# creator's permissions do not limit. A round trip per event (overlapped: gateway.store.witness
# EVENT_GETS_IN_FLIGHT) is acceptable for a full check run by hand.
WITNESS = Role(
    user="witness",
    publish_allow=(
        "$JS.API.INFO",
        f"$JS.API.STREAM.INFO.{subjects.AUDIT_STREAM}",
        f"$JS.API.STREAM.MSG.GET.{subjects.AUDIT_STREAM}",
        f"$JS.API.STREAM.INFO.{subjects.EVENTS_STREAM}",
        f"$JS.API.STREAM.MSG.GET.{subjects.EVENTS_STREAM}",
    ),
    subscribe_allow=("_INBOX_witness.>",),
    inbox_prefix="_INBOX_witness",
    note="""`dutylink audit verify --store`: also reads the stored events (they hold PII) to
compare them with the audit log, by message gets only (no consumer: its deliver subject could
be any subject). Give its password only to those who may see raw events, not to every
auditor.""",
)

_OPERATOR_USER = "operator"
_OPERATOR_INBOX = "_INBOX_operator"


def operator_role(gateway_ids: Sequence[str]) -> Role:
    """`dutylink deadletter list|replay`: reads dead letters and copies one back onto its
    subscription's redelivery subject; it cannot publish events nor read the event stream.
    A replay is audited in the operator log of the gateway id (gateway.cli.operator_audit), so it
    also appends to the logs `<gateway id>-operator` of `gateway_ids`, and no other: NATS
    wildcards match whole tokens, so each log is named. To append it reads the audit stream
    (message gets); it may neither create nor update it: on a fresh cluster a create could
    set up the audit stream with weaker settings (deletable, say) before the gateway does."""
    logs = [subjects.operator_log_id(gateway_id) for gateway_id in gateway_ids]
    return Role(
        user=_OPERATOR_USER,
        publish_allow=(
            "$JS.API.INFO",
            f"$JS.API.STREAM.MSG.GET.{subjects.DEADLETTER_STREAM}",
            f"{subjects.REDELIVER_PREFIX}.>",
            *((f"$JS.API.STREAM.MSG.GET.{subjects.AUDIT_STREAM}",) if logs else ()),
            *(
                subject
                for log in logs
                for subject in (subjects.audit_entries(log), subjects.audit_checkpoints(log))
            ),
        ),
        subscribe_allow=(f"{_OPERATOR_INBOX}.>",),
        inbox_prefix=_OPERATOR_INBOX,
        note="""`dutylink deadletter list|replay` (operators): reads dead letters and copies one back
onto its subscription's redelivery subject; never publishes or reads events. Each replay is
audited in the log <gateway id>-operator: it may append to those of the deployments' gateway
ids (DEPLOY_GATEWAY_IDS in gateway/store/nats_auth.py: add a replica's there, then run
tools/render_deploy.py) and no other; it may neither create nor update the audit stream (the
gateway creates it).""",
    )


# Who the dead-letter CLI connects as (its user and inboxes); the server grants it
# `operator_role` of the gateway ids it serves.
OPERATOR = operator_role(())

# The gateway ids of deploy/ (docker-compose.yaml: gw-0, gw-1; the Kubernetes StatefulSet's pod
# names): deploy/nats/nats.conf lets the operator append to their operator logs (rendered by
# tools/render_deploy.py). A replica added there is added here.
DEPLOY_GATEWAY_IDS = ("gw-0", "gw-1", "dutylink-gateway-0", "dutylink-gateway-1")


def embedded_roles(gateway_id: str) -> tuple[Role, ...]:
    """The users of the embedded server of the gateway `gateway_id`."""
    return (GATEWAY, AUDITOR, WITNESS, operator_role([gateway_id]))


# The users of deploy/nats/nats.conf, in its order.
DEPLOY_ROLES = (GATEWAY, AUDITOR, WITNESS, operator_role(DEPLOY_GATEWAY_IDS))
USERS = tuple(role.user for role in DEPLOY_ROLES)
_INBOX_PREFIXES = {role.user: role.inbox_prefix for role in DEPLOY_ROLES}


def _string(value: str) -> str:
    # JSON strings are valid NATS configuration strings (quotes and backslashes escaped).
    return json.dumps(value)


def _strings(values: Sequence[str]) -> str:
    return "[" + ", ".join(_string(v) for v in values) + "]"


def render_permissions(role: Role) -> str:
    """The role's `permissions: {...}` block, one line, for a nats-server configuration."""
    return (
        f"permissions: {{ publish: {{ allow: {_strings(role.publish_allow)}, "
        f"deny: {_strings(role.publish_deny)} }}, "
        f"subscribe: {{ allow: {_strings(role.subscribe_allow)} }} }}"
    )


def render_user(role: Role, password: str) -> str:
    """One entry of a `users: [...]` list; `password` may be a bcrypt hash (nats-server tells)."""
    return f"{{ user: {_string(role.user)}, password: {_string(password)}, {render_permissions(role)} }}"


@dataclass(frozen=True)
class ServerUser:
    """A user as the server configuration holds it: the role and its password's bcrypt hash."""

    role: Role
    password_hash: str


def render_authorization(users: Sequence[ServerUser]) -> list[str]:
    """An `authorization` block with these users, in the global account: JetStream keeps the
    streams of the global account where they were before authentication existed. No
    `no_auth_user`: a connection without credentials is refused."""
    if not users:
        return []
    return [
        "authorization {",
        "  users: [",
        *(f"    {render_user(user.role, user.password_hash)}" for user in users),
        "  ]",
        "}",
    ]


def new_password() -> str:
    """A random password of URL-safe characters (it goes into NATS URLs as it is). Starts with a
    letter: a NATS configuration reads an unquoted value starting with a digit as a number."""
    return "dl" + secrets.token_urlsafe(18)


def hash_password(password: str) -> str:
    # nats-server recognises bcrypt by its "$2a$"-style prefix.
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS, prefix=b"2a")).decode()


@dataclass(frozen=True)
class Credentials:
    """The embedded server's generated passwords, by user (kept out of repr: never logged)."""

    passwords: dict[str, str] = field(repr=False)

    def password(self, role: Role) -> str:
        return self.passwords[role.user]

    def url(self, url: str, role: Role) -> str:
        """`url` (nats://host:port) with `role`'s user and password."""
        return with_credentials(url, role.user, self.password(role))

    def server_users(self, gateway_id: str) -> list[ServerUser]:
        """The users of the embedded server of gateway `gateway_id`, for its configuration,
        passwords bcrypt-hashed (a few 100 ms)."""
        return [
            ServerUser(role, hash_password(self.password(role)))
            for role in embedded_roles(gateway_id)
        ]


def credentials_dir(embedded_dir: Path) -> Path:
    return Path(embedded_dir) / CREDENTIALS_DIR


def _password_file(embedded_dir: Path, user: str) -> Path:
    return credentials_dir(embedded_dir) / f"{user}.password"


def _read_password(path: Path) -> str:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        password = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as error:
        raise CredentialsError(f"{path}: cannot read: {error}") from None
    if mode & 0o077:
        raise CredentialsError(f"{path}: other users may read it (mode {mode:04o}): chmod 600 it")
    if not password or not all(c.isalnum() or c in "-_" for c in password):
        raise CredentialsError(f"{path}: not a generated password (expected one URL-safe line)")
    return password


def _create_password(path: Path) -> None:
    """Write a new password to `path` unless it exists, atomically and never readable by
    others: written to a 0600 temporary file, then linked into place (which fails rather than
    replace a file another start created meanwhile)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(new_password() + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        # Another start linked its own first: keep that one, both read it back.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)


def ensure_credentials(embedded_dir: Path, users: Sequence[str] = USERS) -> Credentials:
    """Each user's password from `<embedded_dir>/credentials/<user>.password`, created (0600) on
    first use and reused afterwards."""
    passwords = {}
    for user in users:
        path = _password_file(embedded_dir, user)
        try:
            passwords[user] = _read_password(path)
        except FileNotFoundError:
            try:
                _create_password(path)
            except OSError as error:
                raise CredentialsError(f"{path}: cannot create: {error}") from None
            passwords[user] = _read_password(path)
    return Credentials(passwords)


def read_credentials(embedded_dir: Path, role: Role) -> str | None:
    """`role`'s password for the embedded server of `embedded_dir`; None when it has none (a
    server started before authentication existed)."""
    try:
        return _read_password(_password_file(embedded_dir, role.user))
    except FileNotFoundError:
        return None


def embedded_url_as(url: str, embedded_dir: Path, role: Role) -> str:
    """The URL of a running embedded server with `role`'s generated credentials (as it is when
    the server has none). Raises CredentialsError naming the file it cannot read."""
    password = read_credentials(embedded_dir, role)
    return url if password is None else with_credentials(url, role.user, password)


def with_credentials(url: str, user: str, password: str) -> str:
    """Every server of `url` (comma-separated) without credentials, the first with these."""
    servers, _ = split_servers(url)
    if not servers:
        return url
    first = urlsplit(servers[0])
    servers[0] = first._replace(netloc=f"{user}:{password}@{first.netloc}").geturl()
    return ",".join(servers)


def split_servers(url: str) -> tuple[list[str], dict[str, str]]:
    """`nats://user:pass@a:4222,nats://b:4222` -> the server URLs without credentials, and the
    credentials as connection options. nats-py sends a URL's credentials to that server only,
    not to the cluster nodes it discovers later, so a reconnect to any other node would be
    refused; as options they go to every node. A declared user other than the gateway also
    gets its own inbox prefix, the only inboxes its permissions let it read."""
    servers: list[str] = []
    options: dict[str, str] = {}
    for part in (p.strip() for p in url.split(",")):
        if not part:
            continue
        parsed = urlsplit(part)
        if parsed.username is not None and not options:
            if parsed.password is None:
                options = {"token": unquote(parsed.username)}
            else:
                user = unquote(parsed.username)
                options = {"user": user, "password": unquote(parsed.password)}
                inbox_prefix = _INBOX_PREFIXES.get(user, DEFAULT_INBOX_PREFIX)
                if inbox_prefix != DEFAULT_INBOX_PREFIX:
                    options["inbox_prefix"] = inbox_prefix
        servers.append(parsed._replace(netloc=parsed.netloc.rpartition("@")[2]).geturl())
    return servers, options


def redact_url(url: str) -> str:
    """`url` fit to show or log: in each comma-separated server, a password or token becomes
    '***' (the user name stays: it says who connects). Works without a scheme too, and on a
    password holding characters a URL parser would stop at."""
    shown = []
    for part in (p.strip() for p in url.split(",")):
        scheme, separator, rest = part.rpartition("://")
        userinfo, at, host = rest.rpartition("@")
        if at:
            user, colon, _ = userinfo.partition(":")
            rest = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
        shown.append(f"{scheme}{separator}{rest}")
    return ",".join(shown)
