"""Who may do what on DutyLink's NATS, their generated passwords, and secrets kept out of sight.

- One declaration of the NATS users (`GATEWAY`, `AUDITOR`, `OPERATOR`) and their permissions
  feeds the embedded server's configuration (gateway.nats_server), the local cluster's
  (gateway.cluster), and is compared with deploy/nats/nats.conf by tests/test_deploy.py.
  Nobody may delete, purge, snapshot, restore or move a stream (`FORBIDDEN`): erasing evidence
  is not something a stolen password can do. The gateway alone writes events; the audit CLI
  reads the audit stream; the dead-letter CLI reads dead letters and replays them.
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

from gateway import subjects

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


# Its own subjects, the JetStream API calls nats-py makes for streams, consumers, direct gets
# and acks, and the VARZ import of a cluster. Stream updates stay allowed: the gateway brings its
# streams' settings up to date at start (e.g. 1 -> 3 replicas); deny_delete/deny_purge hold.
GATEWAY = Role(
    user="gateway",
    publish_allow=(
        "dutylink.>",
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
)

# `dutylink audit ...`: reads the audit stream (message gets, stream info, following new
# entries) and nothing else: no event, no dead letter, no write.
AUDITOR = Role(
    user="auditor",
    publish_allow=(
        "$JS.API.INFO",
        f"$JS.API.STREAM.INFO.{subjects.AUDIT_STREAM}",
        f"$JS.API.STREAM.MSG.GET.{subjects.AUDIT_STREAM}",
    ),
    subscribe_allow=("_INBOX_auditor.>", f"{subjects.AUDIT_PREFIX}.>"),
    inbox_prefix="_INBOX_auditor",
)

# `dutylink deadletter list|replay`: reads dead letters and copies one back onto its
# subscription's redelivery subject; it cannot publish events nor read the event stream.
OPERATOR = Role(
    user="operator",
    publish_allow=(
        "$JS.API.INFO",
        f"$JS.API.STREAM.MSG.GET.{subjects.DEADLETTER_STREAM}",
        f"{subjects.REDELIVER_PREFIX}.>",
    ),
    subscribe_allow=("_INBOX_operator.>",),
    inbox_prefix="_INBOX_operator",
)

EMBEDDED_ROLES = (GATEWAY, AUDITOR, OPERATOR)
_BY_USER = {role.user: role for role in EMBEDDED_ROLES}


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

    def server_users(self) -> list[ServerUser]:
        """The users for the server configuration, passwords bcrypt-hashed (a few 100 ms)."""
        return [
            ServerUser(_BY_USER[user], hash_password(password))
            for user, password in self.passwords.items()
        ]


def credentials_dir(embedded_dir: Path) -> Path:
    return Path(embedded_dir) / CREDENTIALS_DIR


def _password_file(embedded_dir: Path, role: Role) -> Path:
    return credentials_dir(embedded_dir) / f"{role.user}.password"


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


def write_secret_file(path: Path, text: str) -> None:
    """Replace `path` with `text`, never readable by others: a 0600 temporary file renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def ensure_credentials(embedded_dir: Path, roles: Sequence[Role] = EMBEDDED_ROLES) -> Credentials:
    """Each role's password from `<embedded_dir>/credentials/<user>.password`, created (0600) on
    first use and reused afterwards."""
    passwords = {}
    for role in roles:
        path = _password_file(embedded_dir, role)
        try:
            passwords[role.user] = _read_password(path)
        except FileNotFoundError:
            try:
                _create_password(path)
            except OSError as error:
                raise CredentialsError(f"{path}: cannot create: {error}") from None
            passwords[role.user] = _read_password(path)
    return Credentials(passwords)


def read_credentials(embedded_dir: Path, role: Role) -> str | None:
    """`role`'s password for the embedded server of `embedded_dir`; None when it has none (a
    server started before authentication existed)."""
    try:
        return _read_password(_password_file(embedded_dir, role))
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
                role = _BY_USER.get(user)
                if role is not None and role.inbox_prefix != DEFAULT_INBOX_PREFIX:
                    options["inbox_prefix"] = role.inbox_prefix
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
