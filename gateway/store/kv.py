"""The key-value store with compare-and-set (gateway.core.kv.KeyValueStore) on JetStream KV.

A bucket is a stream `KV_<bucket>` keeping the last `history` messages per key; a key's revision
is the stream sequence of its last write. `create` and `update` publish with the
`Nats-Expected-Last-Subject-Sequence` header (0 for create), so JetStream itself decides which of
two racing writers wins: the other gets ConflictError. NATS failures are StoreUnavailableError
(the outcome of a write is then unknown: read the key again before deciding again).

`write_all` is one atomic batch (JetStream ADR-50, nats-server >= 2.12; the bucket's stream gets
`allow_atomic`): every message carries its key's expected last sequence, the last one commits,
and JetStream stores all or none. `get_many` is one direct get of the keys' last messages
(`multi_last`); a deletion's tombstone reads as absent, with its sequence as the revision a
write must expect.

A deletion is a purge marker that expires (`Nats-TTL`, the bucket's stream gets
`allow_msg_ttl`): it rolls up the key's history and is gone `DELETED_KEY_SECONDS` later, so
the keys deleted over months (the timer index's, one per finished message) do not pile up for
every listing to wade through. `keys` lists the stream's subjects (stream info) and drops
those whose last message is still a marker: no consumer per listing, and nothing missed while
a watch would still be starting.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from collections.abc import Callable, Iterator, Sequence

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from gateway.core.kv import (
    ConflictError,
    Snapshot,
    TooManyKeysError,
    Versioned,
    Write,
    check_key,
    check_value,
    check_writes,
)
from gateway.core.ports import StoreRejectedError, StoreUnavailableError
from gateway.core.streams import BucketSpec
from gateway.store.connection import NatsConnection
from gateway.store.errors import STORE_FAILURES

# JetStream's error code for a write whose expected last sequence is not the subject's.
_WRONG_LAST_SEQUENCE = 10071
_EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
# How long a deleted key's marker stays (the revision a re-creation racing the deletion
# expects): far longer than any read-judge-write takes.
DELETED_KEY_SECONDS = 15 * 60
# Keys in one multi_last direct get (the server answers at most this many messages per request).
_MAX_KEYS_PER_GET = 1000


def _unavailable(error: BaseException) -> StoreUnavailableError:
    return StoreUnavailableError(f"JetStream KV unreachable: {type(error).__name__}: {error}")


def _stream_config(spec: BucketSpec, current: api.StreamConfig) -> api.StreamConfig:
    """`current` (an existing bucket's stream) with the settings `spec` owns."""
    return dataclasses.replace(
        current,
        description=spec.description or current.description,
        max_msgs_per_subject=spec.history,
        num_replicas=spec.replicas,
        max_msg_size=spec.max_value_bytes,
        storage=api.StorageType.FILE,
        allow_direct=True,
        allow_atomic=True,
        allow_msg_ttl=True,
    )


class JetStreamKeyValue:
    """One bucket. `await JetStreamKeyValue.open(js, spec)` creates it, or brings an existing
    one to `spec`'s settings."""

    def __init__(self, bucket: KeyValue, spec: BucketSpec, js: JetStreamContext) -> None:
        self._bucket = bucket
        self.spec = spec
        # nats-py has no API for atomic batches or multi-key direct gets: both are plain NATS
        # requests on the context's connection, API prefix and timeout.
        self._nc: NatsClient = js._nc
        self._js = js
        self._timeout: float = js._timeout
        self._direct_get = f"{js._prefix}.DIRECT.GET.KV_{spec.name}"
        self._subject_prefix = f"$KV.{spec.name}."
        self._inbox = self._nc.new_inbox()
        self._waiting: dict[str, asyncio.Queue[Msg]] = {}

    @classmethod
    async def open(cls, js: JetStreamContext, spec: BucketSpec) -> JetStreamKeyValue:
        config = api.KeyValueConfig(
            bucket=spec.name,
            description=spec.description or None,
            history=spec.history,
            replicas=spec.replicas,
            max_value_size=spec.max_value_bytes,
            storage=api.StorageType.FILE,
            direct=True,
        )
        try:
            stream = f"KV_{spec.name}"
            try:
                bucket = await js.create_key_value(config)
            except nats.js.errors.BadRequestError:  # present, with other settings
                bucket = await js.key_value(spec.name)
            # nats-py's KeyValueConfig cannot ask for atomic batches: set them on the stream
            # (and bring a bucket made by an older gateway to `spec`).
            info = await js.stream_info(stream)
            wanted = _stream_config(spec, info.config)
            if wanted != info.config:
                await js.update_stream(wanted)
            store = cls(bucket, spec, js)
            await store._listen()
        except nats.js.errors.ServiceUnavailableError as error:  # no quorum yet: try later
            raise _unavailable(error) from error
        except nats.js.errors.APIError as error:
            raise StoreRejectedError(
                f"cannot open KV bucket {spec.name}: {error.description or error}"
            ) from error
        except STORE_FAILURES as error:
            raise _unavailable(error) from error
        return store

    async def get(self, key: str) -> Versioned | None:
        check_key(key)
        try:
            entry = await self._bucket.get(key)
        except nats.js.errors.KeyNotFoundError:  # never written (or deleted)
            return None
        except STORE_FAILURES as error:
            raise _unavailable(error) from error
        return Versioned(entry.value or b"", entry.revision or 0)

    async def create(self, key: str, value: bytes) -> int:
        return await self._write(key, value, expected_revision=0)

    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        if expected_revision < 1:
            raise ValueError("expected_revision must be a revision read from the store (>= 1)")
        return await self._write(key, value, expected_revision)

    async def _write(self, key: str, value: bytes, expected_revision: int) -> int:
        check_key(key)
        check_value(self.spec, value)
        with self._translated(key, expected_revision, "writing"):
            if expected_revision == 0:
                return await self._bucket.create(key, value)
            return await self._bucket.update(key, value, last=expected_revision)
        raise AssertionError("unreachable: _translated re-raises")

    async def delete(self, key: str, expected_revision: int) -> None:
        check_key(key)
        headers = {
            KV_OP: KV_PURGE,
            api.Header.ROLLUP: "sub",
            _EXPECTED_LAST: str(expected_revision),
            api.Header.MSG_TTL: str(DELETED_KEY_SECONDS),
        }
        with self._translated(key, expected_revision, "deleting"):
            ack = await self._nc.request(
                self._subject_prefix + key, b"", self._timeout, headers=headers
            )
            answer = json.loads(ack.data)
            if "error" in answer:
                nats.js.errors.APIError.from_error(answer["error"])  # raises its APIError

    async def get_many(self, keys: Sequence[str]) -> Snapshot:
        entries: dict[str, Versioned] = {}
        deleted: dict[str, int] = {}
        for start in range(0, len(keys), _MAX_KEYS_PER_GET):
            chunk = [check_key(key) for key in keys[start : start + _MAX_KEYS_PER_GET]]
            try:
                messages = await self._last_messages(chunk)
            except STORE_FAILURES as error:
                raise _unavailable(error) from error
            for message in messages:
                headers = message.headers or {}
                key = headers.get("Nats-Subject", "").removeprefix(self._subject_prefix)
                revision = int(headers.get("Nats-Sequence", "0"))
                if headers.get(KV_OP) in (KV_DEL, KV_PURGE):
                    deleted[key] = revision
                else:
                    entries[key] = Versioned(message.data, revision)
        return Snapshot(entries, deleted)

    async def _last_messages(self, subjects_of: list[str]) -> list[Msg]:
        """The last message of each key that has one: one direct get, answered by one
        message each and an end-of-batch status (404 when none has a message)."""
        if not subjects_of:
            return []
        token = uuid.uuid4().hex
        replies: asyncio.Queue[Msg] = asyncio.Queue()
        self._waiting[token] = replies
        request = {
            "multi_last": [self._subject_prefix + key for key in subjects_of],
            "batch": len(subjects_of),
        }
        found: list[Msg] = []
        try:
            await self._nc.publish(
                self._direct_get, json.dumps(request).encode(), reply=f"{self._inbox}.{token}"
            )
            async with asyncio.timeout(self._timeout):
                while True:
                    message = await replies.get()
                    status = (message.headers or {}).get("Status")
                    if status is None:
                        found.append(message)
                    elif status in ("204", "404"):  # end of batch; nothing found
                        return found
                    else:
                        description = (message.headers or {}).get("Description", "")
                        raise StoreRejectedError(
                            f"JetStream KV refused reading {len(subjects_of)} keys of "
                            f"{self.spec.name}: {status} {description}"
                        )
        finally:
            del self._waiting[token]

    async def _listen(self) -> None:
        """One subscription for the answers to every `get_many`, each request told apart by
        the last token of its reply subject (a subscription per request cost more than the
        request)."""

        async def dispatch(message: Msg) -> None:
            waiting = self._waiting.get(message.subject.rsplit(".", 1)[-1])
            if waiting is not None:
                waiting.put_nowait(message)

        await self._nc.subscribe(f"{self._inbox}.*", cb=dispatch)

    async def write_all(self, writes: Sequence[Write]) -> dict[str, int]:
        check_writes(self.spec, writes)
        if not writes:
            return {}
        batch = uuid.uuid4().hex
        keys = [write.key for write in writes]
        with self._translated(
            lambda: ConflictError.lost_one_of(self.spec.name, keys), doing="writing"
        ):
            *staged, last = writes
            for sequence, write in enumerate(staged, start=1):
                await self._nc.publish(
                    self._subject_prefix + write.key,
                    write.value,
                    headers=_batch_headers(batch, sequence, write.expected_revision),
                )
            headers = {_EXPECTED_LAST: str(last.expected_revision)}
            if staged:  # one write is atomic as it is: it skips the server's batch staging
                headers = _batch_headers(batch, len(writes), last.expected_revision)
                headers["Nats-Batch-Commit"] = "1"
            reply = await self._nc.request(
                self._subject_prefix + last.key, last.value, self._timeout, headers=headers
            )
            ack = json.loads(reply.data)
            if "error" in ack:
                nats.js.errors.APIError.from_error(ack["error"])  # raises its APIError
            if ack.get("count", 1) != len(writes):
                raise StoreRejectedError(
                    f"JetStream KV stored {ack.get('count')} of a batch of {len(writes)}"
                )
            # A batch's messages take consecutive sequences, ending at the ack's.
            first = int(ack["seq"]) - len(writes) + 1
            return {key: first + offset for offset, key in enumerate(keys)}
        raise AssertionError("unreachable: _translated re-raises")

    @contextlib.contextmanager
    def _translated(
        self, key: str | Callable[[], ConflictError], expected_revision: int = 0, doing: str = ""
    ) -> Iterator[None]:
        """NATS errors of a compare-and-set write as the port's: a lost race ConflictError,
        no answer StoreUnavailableError (the outcome is unknown: read again), a refusal
        StoreRejectedError. `key`: the key written, or (a batch) what its ConflictError is."""

        def lost() -> ConflictError:
            if isinstance(key, str):
                return ConflictError.lost(self.spec.name, key, expected_revision)
            return key()

        what = key if isinstance(key, str) else "a batch"
        try:
            yield
        except nats.js.errors.KeyWrongLastSequenceError as error:
            raise lost() from error
        except nats.js.errors.ServiceUnavailableError as error:
            raise _unavailable(error) from error
        except nats.js.errors.APIError as error:
            # nats-py's delete does not map "wrong last sequence" to KeyWrongLastSequenceError.
            if error.err_code == _WRONG_LAST_SEQUENCE:
                raise lost() from error
            if error.code == 503:
                raise _unavailable(error) from error
            raise StoreRejectedError(
                f"JetStream KV refused {doing} {what}: {error.description or error}"
            ) from error
        except STORE_FAILURES as error:
            raise _unavailable(error) from error

    async def keys(self, prefix: str, *, limit: int) -> list[str]:
        return sorted(await self.entries(prefix, limit=limit))

    async def entries(self, prefix: str, *, limit: int) -> dict[str, Versioned]:
        check_key(prefix)
        try:
            info = await self._js.stream_info(
                f"KV_{self.spec.name}", subjects_filter=f"{self._subject_prefix}{prefix}.>"
            )
        except nats.js.errors.NotFoundError:
            return {}
        except STORE_FAILURES as error:
            raise _unavailable(error) from error
        listed = sorted(
            subject.removeprefix(self._subject_prefix) for subject in info.state.subjects or {}
        )
        # Deleted keys stay listed while their marker lives: at most `limit` live ones pass.
        live: dict[str, Versioned] = {}
        for start in range(0, len(listed), _MAX_KEYS_PER_GET):
            snapshot = await self.get_many(listed[start : start + _MAX_KEYS_PER_GET])
            live.update(snapshot.entries)
            if len(live) > limit:
                raise TooManyKeysError(f"more than {limit} keys under {prefix} in {self.spec.name}")
        return live


def _batch_headers(batch: str, sequence: int, expected_revision: int) -> dict[str, str]:
    return {
        "Nats-Batch-Id": batch,
        "Nats-Batch-Sequence": str(sequence),
        _EXPECTED_LAST: str(expected_revision),
    }


class ConnectedBucket:
    """A bucket on the gateway's NATS connection, for the parts built before it connects:
    every call fails as unavailable until `open` (at start, after the streams) has run."""

    def __init__(self, connection: NatsConnection, spec: BucketSpec) -> None:
        self._connection = connection
        self.spec = spec
        self._bucket: JetStreamKeyValue | None = None

    async def open(self) -> None:
        self._bucket = await JetStreamKeyValue.open(self._connection.js, self.spec)

    @property
    def _opened(self) -> JetStreamKeyValue:
        if self._bucket is None:
            raise StoreUnavailableError(f"KV bucket {self.spec.name} is not open yet")
        return self._bucket

    async def get(self, key: str) -> Versioned | None:
        return await self._opened.get(key)

    async def create(self, key: str, value: bytes) -> int:
        return await self._opened.create(key, value)

    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        return await self._opened.update(key, value, expected_revision)

    async def delete(self, key: str, expected_revision: int) -> None:
        await self._opened.delete(key, expected_revision)

    async def get_many(self, keys: Sequence[str]) -> Snapshot:
        return await self._opened.get_many(keys)

    async def write_all(self, writes: Sequence[Write]) -> dict[str, int]:
        return await self._opened.write_all(writes)

    async def keys(self, prefix: str, *, limit: int) -> list[str]:
        return await self._opened.keys(prefix, limit=limit)

    async def entries(self, prefix: str, *, limit: int) -> dict[str, Versioned]:
        return await self._opened.entries(prefix, limit=limit)
