"""The key-value store with compare-and-set (gateway.core.kv.KeyValueStore) on JetStream KV.

A bucket is a stream `KV_<bucket>` keeping the last `history` messages per key; a key's revision
is the stream sequence of its last write. `create` and `update` publish with the
`Nats-Expected-Last-Subject-Sequence` header (0 for create), so JetStream itself decides which of
two racing writers wins: the other gets ConflictError. NATS failures are StoreUnavailableError
(the outcome of a write is then unknown: read the key again before deciding again).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from gateway.core.kv import ConflictError, TooManyKeysError, Versioned, check_key, check_value
from gateway.core.ports import StoreRejectedError, StoreUnavailableError
from gateway.core.streams import BucketSpec
from gateway.store.connection import NatsConnection
from gateway.store.errors import STORE_FAILURES

# JetStream's error code for a write whose expected last sequence is not the subject's.
_WRONG_LAST_SEQUENCE = 10071
# Listing keys: no further key for this long means JetStream stopped sending.
_LIST_IDLE_SECONDS = 5.0


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
    )


class JetStreamKeyValue:
    """One bucket. `await JetStreamKeyValue.open(js, spec)` creates it, or brings an existing
    one to `spec`'s settings."""

    def __init__(self, bucket: KeyValue, spec: BucketSpec) -> None:
        self._bucket = bucket
        self.spec = spec

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
            try:
                bucket = await js.create_key_value(config)
            except nats.js.errors.BadRequestError:  # present, with other settings
                stream = f"KV_{spec.name}"
                info = await js.stream_info(stream)
                await js.update_stream(_stream_config(spec, info.config))
                bucket = await js.key_value(spec.name)
        except nats.js.errors.ServiceUnavailableError as error:  # no quorum yet: try later
            raise _unavailable(error) from error
        except nats.js.errors.APIError as error:
            raise StoreRejectedError(
                f"cannot open KV bucket {spec.name}: {error.description or error}"
            ) from error
        except STORE_FAILURES as error:
            raise _unavailable(error) from error
        return cls(bucket, spec)

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
        with self._translated(key, expected_revision, "deleting"):
            await self._bucket.delete(key, last=expected_revision)

    @contextlib.contextmanager
    def _translated(self, key: str, expected_revision: int, doing: str) -> Iterator[None]:
        """NATS errors of a compare-and-set write as the port's: a lost race ConflictError,
        no answer StoreUnavailableError (the outcome is unknown: read again), a refusal
        StoreRejectedError."""
        try:
            yield
        except nats.js.errors.KeyWrongLastSequenceError as error:
            raise ConflictError.lost(self.spec.name, key, expected_revision) from error
        except nats.js.errors.ServiceUnavailableError as error:
            raise _unavailable(error) from error
        except nats.js.errors.APIError as error:
            # nats-py's delete does not map "wrong last sequence" to KeyWrongLastSequenceError.
            if error.err_code == _WRONG_LAST_SEQUENCE:
                raise ConflictError.lost(self.spec.name, key, expected_revision) from error
            raise StoreRejectedError(
                f"JetStream KV refused {doing} {key}: {error.description or error}"
            ) from error
        except STORE_FAILURES as error:
            raise _unavailable(error) from error

    async def keys(self, prefix: str, *, limit: int) -> list[str]:
        check_key(prefix)
        found: list[str] = []
        try:
            watcher = await self._bucket.watch(f"{prefix}.>", ignore_deletes=True, meta_only=True)
        except STORE_FAILURES as error:
            raise _unavailable(error) from error
        try:
            while True:
                # None marks the end of the keys present when the watch began.
                entry = await watcher.updates(timeout=_LIST_IDLE_SECONDS)  # type: ignore[no-untyped-call]
                if entry is None:
                    break
                found.append(entry.key)
                if len(found) > limit:
                    raise TooManyKeysError(
                        f"more than {limit} keys under {prefix} in {self.spec.name}"
                    )
        except STORE_FAILURES as error:
            raise _unavailable(error) from error
        finally:
            with contextlib.suppress(*STORE_FAILURES):
                await watcher.stop()  # type: ignore[no-untyped-call]
        return sorted(found)


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

    async def keys(self, prefix: str, *, limit: int) -> list[str]:
        return await self._opened.keys(prefix, limit=limit)
