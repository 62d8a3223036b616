"""The console's auditor pages, real end to end: a real NATS and gateway signing its audit log
every 0.1 s, the console on loopback, and a headless Chromium as the auditor. The auditor finds
an event's entries and the browser verifies each (the checkpoint's Ed25519 signature with
WebCrypto, its origin, size and root, the RFC 9162 inclusion proof from the entry's bytes); a
tampered byte, a wrong key or a changed root fails there with the reason; verify.js agrees with
gateway/audit/merkle.py on trees of 1 to 17 leaves; a non-auditor sees the gateway's refusal;
the checkpoints page verifies the replica's checkpoint; the incident's evidence bundle downloads
and the bundle checker accepts it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import typer
from playwright.async_api import Page, expect

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.v1 import audit_service_pb2
from gateway.audit import merkle
from gateway.audit.bundle import check_bundle
from gateway.audit.note import SM2, Checkpoint, Signer, Verifier, sign_note
from gateway.cli.console import audit_keys
from gateway.console.audit_queries import entries_query, gateways_of, key_of, number_of
from gateway.console.queries import BadQuery
from gateway.core.crypto import Sm2Scheme, sm3
from gateway.server import Gateway
from gateway.store.audit_files import read_files
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.factories import incident_event
from tests.test_console import browser, log_in, screenshot_dir, serving

GATEWAY_ID = "gw-1"


@pytest.fixture
async def gateway(nats_url: str, tmp_path: Path) -> AsyncIterator[Gateway]:
    config = config_for_tests(
        nats={"data_dir": str(tmp_path / "data")}, audit={"checkpoint_seconds": 0.1}
    )
    async with gateway_for_tests(nats_url, config) as running:
        yield running


def key_string(tmp_path: Path) -> str:
    """The replica's verifier key, as the gateway wrote it beside its signing key."""
    return (tmp_path / "data" / "audit" / f"{GATEWAY_ID}.pub").read_text().strip()


@pytest.fixture
async def console(gateway: Gateway) -> AsyncIterator[str]:
    async with serving(gateway.address) as base:
        yield base


async def published(gateway: Gateway) -> tuple[str, str]:
    """Fire publishes three incidents; returns the first one's event id and incident id once a
    signed checkpoint covers every entry about it."""
    events = [incident_event() for _ in range(3)]
    async with DutyLinkClient(gateway.address, token=TOKENS["fire"]) as fire:
        await fire.publish_batch(events)
    event = events[0]
    async with DutyLinkClient(gateway.address, token=TOKENS["audit"]) as auditor:
        page = await auditor.audit_entries(
            audit_service_pb2.ListEntriesRequest(gateway_id=GATEWAY_ID, event_id=event.id)
        )
        last = max(stored.index for stored in page.entries)
        for _ in range(200):
            with contextlib.suppress(Exception):
                if (await auditor.checkpoint(GATEWAY_ID)).tree_size > last:
                    return event.id, event.subject
            await asyncio.sleep(0.05)
    pytest.fail("no checkpoint covered the published entries")


async def save_key(page: Page, key: str) -> None:
    await page.get_by_test_id("key-gateway").fill(GATEWAY_ID)
    await page.get_by_test_id("key-input").fill(key)
    await page.get_by_test_id("key-save").click()
    await expect(page.get_by_test_id("key-status")).not_to_have_text("")


# --- in a browser -----------------------------------------------------------------------------


async def test_the_auditor_finds_an_event_verifies_it_in_the_browser_and_downloads_the_bundle(
    gateway: Gateway, console: str, tmp_path: Path
) -> None:
    event_id, incident_id = await published(gateway)
    key = key_string(tmp_path)
    async with browser(tmp_path / "profile") as context:
        page = await context.new_page()
        await log_in(page, console, "audit")
        await page.get_by_test_id("nav-audit").click()
        await save_key(page, key)
        await page.get_by_test_id("audit-gateway").fill(GATEWAY_ID)
        await page.get_by_test_id("audit-event").fill(event_id)
        await page.get_by_test_id("audit-search").click()
        entries = page.get_by_test_id("audit-entry")
        await expect(entries.first).to_be_visible()
        assert await entries.count() >= 2  # ACCEPTED, then STORED
        await expect(entries.first).to_contain_text(event_id)
        await entries.first.get_by_test_id("verify").click()
        result = entries.first.get_by_test_id("verify-result")
        await expect(result).to_have_attribute("data-ok", "true")
        for check in ("key", "signature", "checkpoint", "inclusion"):
            item = result.get_by_test_id(f"check-{check}")
            await expect(item).to_have_attribute("data-ok", "true")
            await expect(item).to_contain_text("✓")
        shots = screenshot_dir(tmp_path)
        shots.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(shots / "audit.png"), full_page=True)

        await page.get_by_test_id("audit-event").fill("")
        await page.get_by_test_id("audit-incident").fill(incident_id)
        await page.get_by_test_id("audit-search").click()
        await expect(entries.first).to_be_visible()
        async with page.expect_download() as downloading:
            await page.get_by_test_id("audit-bundle").click()
        download = await downloading.value
        archive = tmp_path / "bundle.tar.gz"
        await download.save_as(str(archive))
    assert archive.stat().st_size > 0
    folder = tmp_path / "bundle"
    with tarfile.open(archive) as opened:
        opened.extractall(folder, filter="data")
    (inner,) = folder.iterdir()
    report = check_bundle(read_files(inner), Verifier.from_key_string(key))
    assert report.ok, report.problems
    assert report.entries >= 2 and report.checkpoints == 1


async def test_verification_fails_in_the_browser_on_a_tampered_byte_a_wrong_key_a_changed_root(
    gateway: Gateway, console: str, tmp_path: Path
) -> None:
    event_id, _ = await published(gateway)
    key = key_string(tmp_path)
    # The replica's name with another key (a valid key string), and a key string whose id is
    # not its name and key's (a typo).
    name = Verifier.from_key_string(key).name
    other = Signer.generate(name).verifier().key_string()
    typo = f"{name}+00000000+" + key.split("+", 2)[2]
    async with browser(tmp_path / "profile") as context:
        page = await context.new_page()
        await log_in(page, console, "audit")
        await page.goto(f"{console}/audit")
        await expect(page.get_by_test_id("audit-table")).to_be_visible()
        relayed = await page.evaluate(
            """async ([eventId]) => {
                const found = await (await fetch('/api/audit/entries?gateway=gw-1&event=' + eventId)).json();
                const index = found.entries[0].index;
                return await (await fetch('/api/audit/proof?gateway=gw-1&index=' + index)).json();
            }""",
            [event_id],
        )
        good = await verify(page, relayed, key)
        assert all(check["ok"] for check in good), good

        data = bytearray(base64.b64decode(relayed["data"]))
        data[len(data) // 2] ^= 0x01
        tampered = {**relayed, "data": base64.b64encode(bytes(data)).decode()}
        checks = await verify(page, tampered, key)
        assert failed(checks) == {"inclusion": "is not the signed root"}

        checks = await verify(page, relayed, other)
        assert set(failed(checks)) == {"signature"}
        assert failed(checks)["signature"].startswith(f"no signature by {name}+")
        checks = await verify(page, relayed, typo)
        assert "does not match" in failed(checks)["key"]
        assert set(failed(checks)) == {"key", "signature"}  # no key: nothing signed by it

        note = relayed["checkpoint"]["note"]
        lines = note.split("\n")
        root = bytearray(base64.b64decode(lines[2]))
        root[0] ^= 0xFF
        lines[2] = base64.b64encode(bytes(root)).decode()
        changed = {**relayed, "checkpoint": {**relayed["checkpoint"], "note": "\n".join(lines)}}
        checks = await verify(page, changed, key)
        assert "does not verify" in failed(checks)["signature"]
        assert "root hash differs" in failed(checks)["checkpoint"]
        assert "not the signed root" in failed(checks)["inclusion"]

        stated = {**relayed, "checkpoint": {**relayed["checkpoint"], "root_hash": lines[2]}}
        assert set(failed(await verify(page, stated, key))) == {"checkpoint"}


async def verify(page: Page, relayed: dict[str, Any], key: str) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = await page.evaluate(
        "([relayed, key]) => window.DutyLinkVerify.verifyEntry(relayed, key)", [relayed, key]
    )
    return checks


def failed(checks: list[dict[str, Any]]) -> dict[str, str]:
    """The failed checks' reasons, by check; a reason is shortened to the part asserted on."""
    reasons = {c["id"]: c["reason"] for c in checks if not c["ok"]}
    if "not the signed root" in reasons.get("inclusion", ""):
        reasons["inclusion"] = "is not the signed root"
    return reasons


async def test_verify_js_agrees_with_the_python_merkle_module_on_trees_of_1_to_17(
    tmp_path: Path,
) -> None:
    """No gateway needed: the console serves verify.js to anyone (static files are public)."""
    async with serving("127.0.0.1:9") as base, browser(tmp_path / "profile") as context:
        page = await context.new_page()
        await page.goto(f"{base}/login")
        await page.add_script_tag(url="/static/verify.js")
        for size in range(1, 18):
            data = [f"entry {size}/{i}".encode() for i in range(size)]
            leaves = [merkle.leaf_hash(d) for d in data]
            proofs = [merkle.inclusion_proof(leaves, i) for i in range(size)]
            answer = await page.evaluate(
                """async ([data, proofs]) => {
                    const V = window.DutyLinkVerify;
                    const leaves = await Promise.all(data.map((d) => V.leafHash(V.fromBase64('d', d))));
                    const root = V.toBase64(await V.merkleRoot(leaves));
                    const mine = [], recomputed = [];
                    for (let i = 0; i < leaves.length; i++) {
                        mine.push((await V.inclusionProof(leaves, i)).map(V.toBase64));
                        const proof = proofs[i].map((p) => V.fromBase64('p', p));
                        recomputed.push(V.toBase64(await V.rootFromInclusionProof(i, leaves.length, leaves[i], proof)));
                    }
                    return { root, mine, recomputed };
                }""",
                [[b64(d) for d in data], [[b64(h) for h in proof] for proof in proofs]],
            )
            root = b64(merkle.root(leaves))
            assert answer["root"] == root, size
            assert answer["mine"] == [[b64(h) for h in proof] for proof in proofs], size
            assert answer["recomputed"] == [root] * size, size
        # a proof one hash short or long, or an index outside the tree, is refused
        leaves = [merkle.leaf_hash(bytes([i])) for i in range(5)]
        proof = [b64(h) for h in merkle.inclusion_proof(leaves, 2)]
        leaf = b64(leaves[2])
        for index, size, hashes in ((2, 5, proof[:-1]), (2, 5, [*proof, proof[0]]), (5, 5, proof)):
            reason = await page.evaluate(
                """async ([index, size, leaf, proof]) => {
                    const V = window.DutyLinkVerify;
                    try {
                        await V.rootFromInclusionProof(index, size, V.fromBase64('l', leaf),
                            proof.map((p) => V.fromBase64('p', p)));
                        return '';
                    } catch (error) { return error.message; }
                }""",
                [index, size, leaf, hashes],
            )
            assert reason, (index, size, len(hashes))


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


async def test_a_non_auditor_sees_the_gateways_refusal_on_the_audit_page(
    console: str, tmp_path: Path
) -> None:
    async with browser(tmp_path / "profile") as context:
        page = await context.new_page()
        await log_in(page, console, "police")
        await page.goto(f"{console}/audit")
        await page.get_by_test_id("audit-gateway").fill(GATEWAY_ID)
        await page.get_by_test_id("audit-search").click()
        problem = page.get_by_test_id("problem")
        await expect(problem).to_be_visible()
        await expect(problem).to_contain_text("PERMISSION_DENIED")
        await expect(problem).to_contain_text("无权限")
        await expect(page.get_by_test_id("audit-entry")).to_have_count(0)


async def test_the_checkpoints_page_verifies_the_replicas_checkpoint(
    gateway: Gateway, tmp_path: Path
) -> None:
    await published(gateway)
    key = key_string(tmp_path)
    # The console is configured with the key: the page offers it, and uses it once taken.
    configured = ((GATEWAY_ID, key),)
    async with serving(gateway.address, configured) as base, browser(tmp_path / "p") as context:
        page = await context.new_page()
        await log_in(page, base, "police")  # checkpoints are for every agency
        await page.get_by_test_id("nav-checkpoints").click()
        await page.get_by_test_id("checkpoint-discover").click()
        await expect(page.get_by_test_id("checkpoint-gateways")).to_have_value(GATEWAY_ID)
        row = page.locator(f'[data-testid="checkpoint-row"][data-gateway="{GATEWAY_ID}"]')
        result = row.get_by_test_id("verify-result")
        await expect(result).to_have_attribute("data-ok", "false")  # no key held yet
        await expect(row.get_by_test_id("check-key")).to_contain_text("no verifier key")
        await page.get_by_test_id("key-gateway").fill(GATEWAY_ID)
        await page.get_by_test_id("key-gateway").dispatch_event("change")
        await page.get_by_test_id("key-default").click()
        await expect(result).to_have_attribute("data-ok", "true")
        await expect(row.get_by_test_id("check-signature")).to_contain_text("✓")
        shots = screenshot_dir(tmp_path)
        shots.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(shots / "checkpoints.png"), full_page=True)
        await page.reload()  # remembered: the list and the key
        await expect(result).to_have_attribute("data-ok", "true")


async def test_the_api_checks_its_parameters_and_the_bundle_needs_an_auditor(
    gateway: Gateway, console: str, tmp_path: Path
) -> None:
    _, incident_id = await published(gateway)
    key = key_string(tmp_path)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await http.post(f"{console}/login", data={"token": TOKENS["police"]})
        async with http.get(
            f"{console}/api/audit/bundle", params={"incident": incident_id, "key": key}
        ) as response:
            assert response.status == 403
        async with http.get(f"{console}/api/audit/checkpoint?gateway={GATEWAY_ID}") as response:
            assert response.status == 200 and (await response.json())["tree_size"] > 0
        await http.post(f"{console}/login", data={"token": TOKENS["audit"]})
        for path, word in (
            ("entries?gateway=../x", "gateway"),
            ("entries?start=-1", "start"),
            ("entries?action=EAT", "action"),
            ("entries?from=2026-13-01T00:00", "from"),
            ("entries?from=2026-01-02T00:00&to=2026-01-01T00:00", "to"),
            ("proof?index=" + "9" * 30, "index"),
            ("bundle?incident=X", "key"),
            ("bundle?incident=X&key=gw-1%2B0%2Bxx", "key"),
            ("bundle?incident=a%20b&key=" + key, "incident"),
        ):
            async with http.get(f"{console}/api/audit/{path}") as response:
                assert response.status == 400, path
                assert word in (await response.json())["error"], path
        async with http.get(
            f"{console}/api/audit/bundle", params={"incident": "INC-NONE", "key": key}
        ) as response:
            assert response.status == 404
        async with http.get(
            f"{console}/api/audit/bundle", params={"incident": incident_id, "key": key}
        ) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/gzip"
            data = await response.read()
        with tarfile.open(fileobj=io.BytesIO(data)) as opened:
            names = opened.getnames()
        assert any(name.endswith("/manifest.json") for name in names)


# --- the pure parts --------------------------------------------------------------------------


def test_audit_queries_are_checked_before_they_reach_the_gateway() -> None:
    query = entries_query(
        {"gateway": "gw-1", "action": "publish", "from": "2026-01-01T08:00", "start": "7"},
        "Asia/Shanghai",
    )
    assert (query.gateway_id, query.start, query.actions) == ("gw-1", 7, (1,))
    assert query.since is not None and query.since.utcoffset() is not None
    assert query.since.isoformat() == "2026-01-01T08:00:00+08:00"
    assert gateways_of({"gateways": "gw-1, gw-2,gw-1,"}) == ("gw-1", "gw-2")
    assert number_of({}, "index") == 0 and key_of({}) == ""
    for bad in ({"gateway": "a/b"}, {"agency": "x y"}, {"event": "e" * 129}, {"to": "now"}):
        with pytest.raises(BadQuery):
            entries_query(bad, "Asia/Shanghai")
    with pytest.raises(BadQuery):
        gateways_of({"gateways": ",".join(f"gw-{i}" for i in range(17))})


def test_the_command_reads_audit_keys_named_by_their_gateway_id(tmp_path: Path) -> None:
    signer = Signer.generate("dutylink/audit/gw-2")
    good = tmp_path / "gw-2.pub"
    good.write_text(signer.verifier().key_string() + "\n")
    assert audit_keys([good]) == (("gw-2", signer.verifier().key_string()),)
    bad = tmp_path / "gw-3.pub"
    bad.write_text(signer.key_string())  # the private key: refused
    with pytest.raises(typer.Exit):
        audit_keys([bad])


# --- the national profile in the browser (sm.js) ------------------------------------------------

SM3_EXAMPLES = {  # GB/T 32905-2016, appendix A
    b"abc": "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0",
    b"abcd" * 16: "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732",
}


async def test_sm_js_agrees_with_gmssl_on_sm3_and_sm2(tmp_path: Path) -> None:
    messages = [b"", b"abc", bytes(range(256)) * 3, b"\xff" * 55, b"x" * 64, b"y" * 119]
    scheme = Sm2Scheme()
    private, public = scheme.generate()
    _, other = scheme.generate()
    signatures = [scheme.sign(private, m) for m in messages]
    async with serving("127.0.0.1:9") as base, browser(tmp_path / "profile") as context:
        page = await context.new_page()
        await page.goto(f"{base}/login")
        await page.add_script_tag(url="/static/sm.js")
        digests = await page.evaluate(
            "(messages) => messages.map((m) => Array.from(window.DutyLinkSM.sm3("
            "Uint8Array.from(atob(m), (c) => c.charCodeAt(0))), (b) => b.toString(16)"
            ".padStart(2, '0')).join(''))",
            [b64(m) for m in [*SM3_EXAMPLES, *messages]],
        )
        verdicts = await page.evaluate(
            """([cases]) => cases.map(([key, message, signature]) => {
                const raw = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
                return window.DutyLinkSM.sm2Verify(raw(key), raw(message), raw(signature));
            })""",
            [
                [
                    *(
                        [b64(public), b64(m), b64(s)]
                        for m, s in zip(messages, signatures, strict=True)
                    ),
                    [b64(public), b64(messages[1] + b"!"), b64(signatures[1])],  # another message
                    [b64(other), b64(messages[1]), b64(signatures[1])],  # another key
                    [b64(public), b64(messages[1]), b64(signatures[1][:-1] + b"\x00")],  # changed
                    [b64(public), b64(messages[1]), b64(b"\x30\x02\x02\x00")],  # malformed
                ]
            ],
        )
    assert digests[: len(SM3_EXAMPLES)] == list(SM3_EXAMPLES.values())
    assert digests[len(SM3_EXAMPLES) :] == [sm3(m).hex() for m in messages]
    assert verdicts == [True] * len(messages) + [False] * 4


async def test_verify_js_checks_a_national_log_with_sm3_and_sm2(tmp_path: Path) -> None:
    """A log of the national profile: its SM2 key, its SM2-signed checkpoint, an entry's
    inclusion in its SM3 tree; a changed byte or another key fails as for Ed25519."""
    signer = Signer.generate("dutylink/audit/gw-9", SM2)
    key = signer.verifier().key_string()
    data = [f"entry {i}".encode() for i in range(7)]
    leaves = [merkle.leaf_hash(d, merkle.SM3_TREE) for d in data]
    root = merkle.root(leaves, merkle.SM3_TREE)
    note = sign_note(Checkpoint(signer.name, len(data), root).to_text(), [signer])
    relayed = {
        "index": 4,
        "data": b64(data[4]),
        "tree_size": len(data),
        "proof": [b64(h) for h in merkle.inclusion_proof(leaves, 4, merkle.SM3_TREE)],
        "checkpoint": {"note": note, "tree_size": len(data), "root_hash": b64(root)},
    }
    changed = {**relayed, "data": b64(b"entry 5")}
    other = Signer.generate("dutylink/audit/gw-9", SM2).verifier().key_string()
    async with serving("127.0.0.1:9") as base, browser(tmp_path / "profile") as context:
        page = await context.new_page()
        await page.goto(f"{base}/login")
        for script in ("sm.js", "verify.js"):
            await page.add_script_tag(url=f"/static/{script}")
        results = [
            await page.evaluate(
                "([relayed, key]) => window.DutyLinkVerify.verifyEntry(relayed, key)",
                [entry, with_key],
            )
            for entry, with_key in ((relayed, key), (changed, key), (relayed, other))
        ]
    good, tampered, foreign = results
    assert all(check["ok"] for check in good), good
    assert any("SM2 by dutylink/audit/gw-9+" in c["reason"] for c in good)
    assert failed(tampered) == {"inclusion": "is not the signed root"}
    assert "no signature by dutylink/audit/gw-9+" in failed(foreign)["signature"]
