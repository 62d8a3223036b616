"""The gateway's authorization edge: the policy in force, its hot reload, and break-glass grants.

The decisions themselves are the pure `policies` core; this module owns the I/O around it:
- `PolicyHolder` reads the policy files, re-reads them when they change, and swaps the compiled
  evaluator in one assignment, so every decision after the swap uses the new version. A file
  that does not load is refused with `file:line: reason` and the old policy stays in force.
- `GrantBook` keeps break-glass declarations durable in JetStream (deny-delete, kept for review)
  and follows the stream, so every gateway replica sees every declaration.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from dutylink.policies.engine import Decision, Evaluator
from dutylink.policies.loader import parse_policy, policy_files, read_policy_texts
from dutylink.policies.model import Grant, Policy, PolicyError
from dutylink.v1 import event_pb2, gateway_pb2
from gateway.access.auth import Principal

log = structlog.get_logger("dutylink.policy")


@dataclass(frozen=True)
class PolicyChange:
    """A policy reload: the version now in force, and why a changed policy was refused, if it
    was (the old version then stays in force)."""

    in_force: str
    refused: str = ""


class PolicyHolder:
    """The evaluator in force, reloaded from `directory` when its files change."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._texts: dict[str, str] = {}
        self._stamp = self._files_stamp()
        self._evaluator = Evaluator(self._load())
        log.info("policy.loaded", directory=str(directory), version=self.version)

    @property
    def evaluator(self) -> Evaluator:
        return self._evaluator

    @property
    def policy(self) -> Policy:
        return self._evaluator.policy

    @property
    def version(self) -> str:
        return self._evaluator.version

    def _files_stamp(self) -> tuple[tuple[str, int, int], ...]:
        stamps = []
        for path in policy_files(self.directory):
            status = path.stat()
            stamps.append((path.name, status.st_mtime_ns, status.st_size))
        return tuple(stamps)

    @property
    def texts(self) -> dict[str, str]:
        """The files of the policy in force, by file name (its version is their digest)."""
        return dict(self._texts)

    def _load(self) -> Policy:
        files = policy_files(self.directory)
        if not files:
            raise PolicyError([])  # reported by the caller with the directory name
        texts = read_policy_texts(files)
        policy = parse_policy(texts)
        for warning in policy.warnings:
            log.warning("policy.lint", finding=str(warning))
        self._texts = {Path(name).name: text for name, text in texts.items()}
        return policy

    def reload_if_changed(self) -> PolicyChange | None:
        """Re-read the files if they changed; what came of it (None: nothing changed)."""
        stamp = self._files_stamp()
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            evaluator = Evaluator(self._load())
        except PolicyError as error:
            findings = [str(f) for f in error.findings] or ["no *.yaml files"]
            log.error(
                "policy.rejected",
                directory=str(self.directory),
                findings=findings,
                in_force=self.version,
            )
            return PolicyChange(self.version, refused="; ".join(findings))
        old, self._evaluator = self.version, evaluator
        if old == self.version:
            return None  # touched, not changed
        log.warning("policy.reloaded", previous=old, version=self.version)
        return PolicyChange(self.version)

    async def watch(
        self, interval: float, on_change: Callable[[PolicyChange], Awaitable[None]]
    ) -> None:
        """Poll for changes every `interval` seconds until cancelled; report each change."""
        while True:
            await asyncio.sleep(interval)
            if change := self.reload_if_changed():
                await on_change(change)


def grant_of(record: gateway_pb2.EmergencyGrant) -> Grant:
    """The engine's view of a recorded declaration."""
    scope = record.scope
    return Grant(
        id=record.id,
        declared_by=record.declared_by,
        reason=scope.reason,
        declared_at=record.declared_at.ToDatetime(dt.UTC),
        not_after=record.not_after.ToDatetime(dt.UTC),
        incident_id=scope.incident_id,
        jurisdiction=scope.jurisdiction_prefix,
        agencies=frozenset(scope.agencies),
        unredact=tuple(scope.fields),
        receive_types=tuple(scope.receive_types),
    )


class GrantBook:
    """Every break-glass declaration seen on the grants stream, in declaration order."""

    def __init__(self) -> None:
        self._records: dict[str, gateway_pb2.EmergencyGrant] = {}
        self._grants: tuple[Grant, ...] = ()

    def add(self, record: gateway_pb2.EmergencyGrant) -> None:
        if record.id in self._records:
            return
        self._records[record.id] = record
        self._grants = (*self._grants, grant_of(record))

    @property
    def grants(self) -> tuple[Grant, ...]:
        return self._grants

    def records(self) -> list[gateway_pb2.EmergencyGrant]:
        """All declarations, newest first (for the review)."""
        return sorted(
            self._records.values(), key=lambda r: r.declared_at.ToNanoseconds(), reverse=True
        )


class PolicySource(Protocol):
    """Where an Authorizer takes its policy from: the one in force (PolicyHolder), or one of
    the past (FixedPolicy, for as-of replay)."""

    @property
    def evaluator(self) -> Evaluator: ...

    @property
    def policy(self) -> Policy: ...

    @property
    def version(self) -> str: ...


class FixedPolicy:
    """A policy that never changes: one of the past, as archived (gateway.store.policy_archive)."""

    def __init__(self, policy: Policy) -> None:
        self.evaluator = Evaluator(policy)

    @property
    def policy(self) -> Policy:
        return self.evaluator.policy

    @property
    def version(self) -> str:
        return self.evaluator.version


class Authorizer:
    """Decides with the policy in force and the grants on record; the gateway's one seam."""

    def __init__(self, holder: PolicySource, grants: GrantBook) -> None:
        self.holder = holder
        self.grants = grants

    def decide(
        self, principal: Principal, action: str, event: event_pb2.Event, now: dt.datetime
    ) -> Decision:
        return self.holder.evaluator.decide(
            principal.agency, principal.roles, action, event, grants=self.grants.grants, now=now
        )

    @property
    def policy(self) -> Policy:
        return self.holder.policy

    def held_roles(self, principal: Principal) -> frozenset[str]:
        """The roles `principal` holds that the policy in force grants its agency."""
        profile = self.holder.policy.agency(principal.agency)
        return principal.roles & profile.roles if profile else frozenset()
