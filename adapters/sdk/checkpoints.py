"""Keeping the audit checkpoints an agency saw, so it can later prove history was rewritten.

Every gateway replica signs checkpoints of its audit log and delivers them to every agency
(CheckpointService.WatchCheckpoints). A `CheckpointKeeper` verifies each with the replica's
public key, checks that it extends the largest one already held (an RFC 9162 consistency proof
from the gateway, verified here), and keeps it on disk:

    <directory>/<gateway id>.checkpoints.jsonl   every verified checkpoint, in arrival order
    <directory>/<gateway id>.fork-<time>.json    evidence, if the log's history forked

Two checkpoints signed by the same key that are not consistent — the same size with two roots,
or a larger one that does not extend a smaller one — are proof, to anyone holding the key, that
the log was rewritten. The keeper writes that evidence and raises `ForkDetectedError`.

    keeper = CheckpointKeeper(Path("checkpoints"), {"gw-1": Verifier.from_key_string(key)})
    await keeper.follow(client)   # until cancelled
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from dutylink.adapters.sdk.client import DutyLinkClient

try:
    from gateway.audit.merkle import ProofError, tree_for, verify_consistency
    from gateway.audit.note import Checkpoint, NoteError, Verifier, open_note
except ModuleNotFoundError as missing:
    # The light client (dutylink-client) ships the SDK but not the gateway's audit core.
    if not (missing.name or "").startswith("gateway"):
        raise
    raise ModuleNotFoundError(
        "CheckpointKeeper verifies checkpoints with the gateway's audit core, which "
        "dutylink-client does not ship: install the full `dutylink` distribution",
        name=missing.name,
    ) from missing

log = structlog.get_logger("dutylink.checkpoints")

# (gateway id, old size, new size) -> the gateway's consistency proof
ConsistencyProver = Callable[[str, int, int], Awaitable[Sequence[bytes]]]


class CheckpointError(Exception):
    """A checkpoint that cannot be accepted (unknown log, bad signature, wrong origin)."""


class ForkDetectedError(Exception):
    """Two signed checkpoints of one log are not consistent; `evidence` is the file proving it."""

    def __init__(self, message: str, evidence: Path) -> None:
        super().__init__(f"{message} (evidence: {evidence})")
        self.evidence = evidence


@dataclass(frozen=True)
class Held:
    note: str
    checkpoint: Checkpoint


class CheckpointKeeper:
    def __init__(self, directory: Path, keys: Mapping[str, Verifier]) -> None:
        self._directory = directory
        self._keys = dict(keys)
        self._largest: dict[str, Held] = {}
        directory.mkdir(parents=True, exist_ok=True)
        for gateway_id in self._keys:
            for note in self._stored_notes(gateway_id):
                held, current = self._open(gateway_id, note), self._largest.get(gateway_id)
                if current is None or held.checkpoint.size > current.checkpoint.size:
                    self._largest[gateway_id] = held

    def _file(self, gateway_id: str) -> Path:
        return self._directory / f"{gateway_id}.checkpoints.jsonl"

    def _stored_notes(self, gateway_id: str) -> list[str]:
        path = self._file(gateway_id)
        if not path.is_file():
            return []
        return [json.loads(line)["note"] for line in path.read_text("utf-8").splitlines() if line]

    def held(self, gateway_id: str) -> Held | None:
        return self._largest.get(gateway_id)

    def _open(self, gateway_id: str, note: str) -> Held:
        key = self._keys.get(gateway_id)
        if key is None:
            raise CheckpointError(
                f"no key for gateway {gateway_id!r}: cannot verify its checkpoints"
            )
        try:
            text, _ = open_note(note, [key])
            checkpoint = Checkpoint.parse(text)
        except NoteError as error:
            raise CheckpointError(f"checkpoint of {gateway_id}: {error}") from None
        if checkpoint.origin != key.name:
            raise CheckpointError(
                f"checkpoint of {gateway_id}: origin {checkpoint.origin!r}, expected {key.name!r}"
            )
        return Held(note, checkpoint)

    def _evidence(self, gateway_id: str, kind: str, notes: Sequence[str], proof: Sequence[bytes], error: str) -> Path:  # fmt: skip
        detected = datetime.now(UTC)
        path = self._directory / f"{gateway_id}.fork-{detected:%Y%m%dT%H%M%S%fZ}.json"
        path.write_text(
            json.dumps(
                {
                    "gateway_id": gateway_id,
                    "kind": kind,
                    "detected": detected.isoformat(),
                    "checkpoints": list(notes),
                    "consistency_proof": [base64.b64encode(h).decode() for h in proof],
                    "error": error,
                    "key": self._keys[gateway_id].key_string(),
                },
                indent=2,
            )
            + "\n",
            "utf-8",
        )
        return path

    async def accept(self, gateway_id: str, note: str, prove: ConsistencyProver) -> bool:
        """Verify and keep one checkpoint; True when it is news (larger than any held).
        Raises CheckpointError for one that cannot be verified, ForkDetectedError for a fork."""
        new = self._open(gateway_id, note)
        held = self._largest.get(gateway_id)
        if held is not None:
            old_cp, new_cp = held.checkpoint, new.checkpoint
            if new_cp.size == old_cp.size:
                if new_cp.root_hash == old_cp.root_hash:
                    return False
                path = self._evidence(gateway_id, "same size, two roots", [held.note, note], [], "")
                raise ForkDetectedError(
                    f"audit log {gateway_id}: two signed roots for size {new_cp.size}", path
                )
            small, large = (old_cp, new_cp) if old_cp.size < new_cp.size else (new_cp, old_cp)
            proof = list(await prove(gateway_id, small.size, large.size))
            try:
                tree = tree_for(self._keys[gateway_id].profile)
                verify_consistency(
                    small.size, large.size, proof, small.root_hash, large.root_hash, tree
                )
            except ProofError as error:
                path = self._evidence(
                    gateway_id, "not consistent", [held.note, note], proof, str(error)
                )
                raise ForkDetectedError(
                    f"audit log {gateway_id}: size {large.size} does not extend size {small.size}",
                    path,
                ) from None
            if new_cp.size < old_cp.size:
                return False  # an older checkpoint, consistent with what is held
        with self._file(gateway_id).open("a", encoding="utf-8") as stream:
            stream.write(
                json.dumps({"received": datetime.now(UTC).isoformat(), "note": note}) + "\n"
            )
        self._largest[gateway_id] = new
        return True

    async def follow(self, client: DutyLinkClient, gateway_id: str = "") -> None:
        """Accept every checkpoint the gateway delivers (of every log, or of one) until the
        stream ends or this is cancelled. Logs without a key are logged and skipped; a fork
        raises ForkDetectedError."""
        async for signed in client.watch_checkpoints(gateway_id):
            try:
                await self.accept(signed.gateway_id, signed.note, client.consistency_proof)
            except CheckpointError as error:
                log.warning("checkpoints.refused", gateway_id=signed.gateway_id, reason=str(error))
