"""Every access policy the gateway put in force, kept in JetStream for as-of replay: which
policy an agency was under at a past moment (the duty board as it was entitled to see it then).

Each replica records, at start and at every reload it accepts, a `loaded` message (the version
and the replica; JetStream stamps the time), and the version's files once under
`texts.<version>` (the version is their digest, so one copy serves every replica). The policy in
force at a moment is the version of the last `loaded` message stored at or before it: during a
rolling change, the one the latest replica put in force.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
from collections.abc import Mapping, Sequence

import nats.js.errors
import structlog
from nats.js import JetStreamContext

from dutylink.policies.loader import parse_policy
from dutylink.policies.model import Policy
from gateway.core import subjects
from gateway.core.ports import StoreUnavailableError
from gateway.store.errors import STORE_FAILURES

log = structlog.get_logger("dutylink.policy")
# Past policies parsed and kept in memory (each is a few kilobytes of rules).
_KEPT = 16
# `loaded` records kept at most: a start or reload each, over the archive's life.
MAX_LOADED = 100_000


class PolicyArchive:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._parsed: dict[str, Policy] = {}
        # Every `loaded` record read so far, in stream order (JetStream stamps them in order).
        self._loaded: list[tuple[dt.datetime, str]] = []
        self._next_sequence = 1

    async def record(self, version: str, texts: Mapping[str, str], gateway_id: str) -> None:
        """Note that `gateway_id` put policy `version` (these files) in force now."""
        try:
            await self._js.publish(
                subjects.policy_texts(version),
                json.dumps(dict(texts), sort_keys=True).encode(),
                stream=subjects.POLICIES_STREAM,
                headers={"Nats-Msg-Id": f"policy-{version}"},
            )
            await self._js.publish(
                subjects.POLICIES_LOADED,
                json.dumps({"version": version, "gateway_id": gateway_id}).encode(),
                stream=subjects.POLICIES_STREAM,
            )
        except STORE_FAILURES as error:
            raise StoreUnavailableError(f"recording policy {version[:12]}: {error!r}") from error

    async def in_force_at(self, moment: dt.datetime) -> Policy | None:
        """The policy in force at `moment`; None if none was recorded by then."""
        (policy,) = await self.in_force_at_each([moment])
        return policy

    async def in_force_at_each(self, moments: Sequence[dt.datetime]) -> list[Policy | None]:
        """The policy in force at each of `moments` (None where none was recorded by then),
        after one look for new records: one answer's many events cost one read, not one each."""
        await self._read_new_loaded()
        found: list[Policy | None] = []
        for moment in moments:
            at = bisect.bisect_right(self._loaded, moment, key=lambda record: record[0])
            found.append(await self._parsed_version(self._loaded[at - 1][1]) if at else None)
        return found

    async def _parsed_version(self, version: str) -> Policy | None:
        if version not in self._parsed:
            raw = await self._get_last(subjects.policy_texts(version))
            if raw is None:
                log.error("policy.archive_incomplete", version=version)
                return None
            texts: dict[str, str] = json.loads(raw)
            if len(self._parsed) >= _KEPT:
                self._parsed.pop(next(iter(self._parsed)))
            self._parsed[version] = parse_policy(texts)
        return self._parsed[version]

    async def _read_new_loaded(self) -> None:
        """Append the `loaded` records stored since the last look (each is read once)."""
        for _ in range(MAX_LOADED - len(self._loaded)):
            try:
                message = await self._js.get_msg(
                    subjects.POLICIES_STREAM,
                    self._next_sequence,
                    subject=subjects.POLICIES_LOADED,
                    next=True,
                )
            except nats.js.errors.NotFoundError:
                return
            except STORE_FAILURES as error:
                raise StoreUnavailableError(f"reading the policy archive: {error!r}") from error
            self._next_sequence = (message.seq or self._next_sequence) + 1
            version = json.loads(message.data or b"{}").get("version")
            if message.time is not None and version:
                self._loaded.append((_utc(message.time), version))

    async def _get_last(self, subject: str) -> bytes | None:
        try:
            message = await self._js.get_last_msg(subjects.POLICIES_STREAM, subject)
        except nats.js.errors.NotFoundError:
            return None
        except STORE_FAILURES as error:
            raise StoreUnavailableError(f"reading the policy archive: {error!r}") from error
        return message.data


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
