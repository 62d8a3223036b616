"""One incident's evidence bundle, built by the console over the gateway's audit RPCs (the same
files `dutylink audit export --incident` writes, from gateway.audit.bundle), checked with the
auditor's key before it is handed over, and served as one tar.gz.

The CLI reads the log from NATS; the console has only the gateway, so: the latest signed
checkpoint (GetCheckpoint) fixes the tree, ListEntries pages through its entries (it has no
incident filter: each entry's `incident_ids` is looked at here), and GetInclusionProof proves
each of the incident's entries against that checkpoint's size. Bounded: so many entries scanned,
so many kept, so many bytes, else a clear refusal rather than a console busy for minutes."""

from __future__ import annotations

import io
import re
import tarfile
from dataclasses import dataclass

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import audit_service_pb2
from gateway.audit.bundle import Bundle, Proof, check_bundle, render
from gateway.audit.note import Checkpoint, NoteError, Verifier, open_note

MAX_SCANNED = 200_000  # entries looked at: 20 ListEntries calls at the gateway's scan limit
MAX_BUNDLE_ENTRIES = 2_000  # an incident's entries; each costs a proof call
MAX_ARCHIVE_BYTES = 32 * 1024 * 1024
PAGE_SIZE = 1000  # ListEntries' largest page
# An incident id may hold '/' or '..': the archive's folder and file name keep only these.
_SAFE = re.compile(r"[^A-Za-z0-9._-]|^\.+")


class BundleRefused(Exception):
    """The bundle cannot be made (too big, nothing to put in it, or it would not verify);
    `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Archive:
    name: str
    data: bytes


async def _incident_entries(
    client: DutyLinkClient, gateway_id: str, incident_id: str, size: int
) -> list[tuple[int, bytes]]:
    """The incident's entries among the first `size` (the signed part) of the log."""
    if size > MAX_SCANNED:
        raise BundleRefused(
            413, f"the log holds {size} signed entries; the console scans at most {MAX_SCANNED}"
        )
    found: list[tuple[int, bytes]] = []
    start = 0
    while start < size:
        page = await client.audit_entries(
            audit_service_pb2.ListEntriesRequest(
                gateway_id=gateway_id, start_index=start, end_index=size, page_size=PAGE_SIZE
            )
        )
        for stored in page.entries:
            if incident_id in stored.entry.incident_ids:
                found.append((stored.index, stored.data))
        if len(found) > MAX_BUNDLE_ENTRIES:
            raise BundleRefused(413, f"more than {MAX_BUNDLE_ENTRIES} entries: too big to serve")
        if page.next_index <= start:
            break  # the gateway made no progress: never loop forever
        start = page.next_index
    return found


async def incident_bundle(
    client: DutyLinkClient, gateway_id: str, incident_id: str, verifier: Verifier
) -> Archive:
    """The incident's bundle of `gateway_id`'s log ("": the answering gateway's), as the
    CLI's export would write it, checked with `verifier`, as a tar.gz."""
    signed = await client.checkpoint(gateway_id)
    try:
        checkpoint = Checkpoint.parse(open_note(signed.note, [verifier])[0])
    except NoteError as error:
        raise BundleRefused(
            422, f"the latest checkpoint does not verify with that key: {error}"
        ) from None
    gateway_id = signed.gateway_id
    size = checkpoint.size
    bundle = Bundle(gateway_id, verifier.name, f"incident {incident_id}", key=verifier.key_string())
    for index, data in await _incident_entries(client, gateway_id, incident_id, size):
        answer = await client.inclusion_proof(gateway_id, index, size)
        if answer.entry.data != data:
            raise BundleRefused(502, f"the gateway answered two different entries {index}")
        bundle.entries.append((index, data))
        bundle.proofs.append(Proof(index, size, tuple(answer.proof)))
    if not bundle.entries:
        raise BundleRefused(
            404, f"no entry of incident {incident_id} in the {size} signed entries of {gateway_id}"
        )
    bundle.checkpoints = [signed.note]
    files = render(bundle)
    report = check_bundle(files, verifier)  # never hand over a bundle that does not verify
    if not report.ok:
        raise BundleRefused(502, "the bundle does not verify: " + "; ".join(report.problems[:3]))
    folder = _SAFE.sub("_", f"{gateway_id}-{incident_id}")
    data = _tar_gz(folder, files)
    if len(data) > MAX_ARCHIVE_BYTES:
        raise BundleRefused(413, f"the bundle is over {MAX_ARCHIVE_BYTES} bytes")
    return Archive(f"dutylink-bundle-{folder}.tar.gz", data)


def _tar_gz(folder: str, files: dict[str, bytes]) -> bytes:
    """The files under one folder; no owners, no times (nothing of the console's machine)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()
