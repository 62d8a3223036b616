"""The CAP adapter end to end: the meteorological bureau's CAP files and feed in, through a real
gateway, out as CAP files at another agency; bombs and broken files kept in rejected/."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from aiohttp import web
from pydantic import SecretStr

from dutylink.adapters.cap.adapter import KIND, feed_links
from dutylink.adapters.cap.codec import parse_cap
from dutylink.adapters.cap.compare import cap_differences
from dutylink.adapters.options import AdapterConfigError
from dutylink.adapters.runner import AdapterConfig, AdapterRunner, load_adapter_config
from dutylink.v1 import warning_pb2
from gateway.server import Gateway
from tests.conftest import TOKENS

SAMPLES = Path(__file__).parent.parent / "adapters" / "cap" / "samples"
ALERT = SAMPLES / "dutylink-rainstorm-orange-alert.xml"
UPDATE = SAMPLES / "dutylink-rainstorm-orange-update.xml"
BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&lol2;</identifier></alert>
"""


async def until(condition: Callable[[], bool], seconds: float = 15) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"not within {seconds} s")


@pytest.fixture
def gateway(pipe_gateway: Gateway) -> Gateway:
    """Standards samples, not one loop: see pipe_gateway."""
    return pipe_gateway


@pytest.fixture
async def adapters(gateway: Gateway, tmp_path: Path) -> AsyncIterator[tuple[Path, Path, Path]]:
    """The weather bureau's CAP-in adapter (a drop directory) and transport's CAP-out adapter."""
    drop, outbox = tmp_path / "drop", tmp_path / "outbox"
    weather = AdapterRunner(
        KIND,
        AdapterConfig(
            file=tmp_path / "weather.toml", gateway=gateway.address, token=SecretStr(TOKENS["weather"]),
            state_dir=tmp_path / "weather-state",
            options={"system": "sh-mb", "division_code": "310000",
                     "inbound": {"directory": str(drop), "poll_seconds": 0.1}},
        ),
    )  # fmt: skip
    transport = AdapterRunner(
        KIND,
        AdapterConfig(
            file=tmp_path / "transport.toml", gateway=gateway.address, token=SecretStr(TOKENS["transport"]),
            state_dir=tmp_path / "transport-state",
            options={"outbound": {"subscription": "cap-out", "directory": str(outbox)}},
        ),
    )  # fmt: skip
    tasks = [asyncio.create_task(runner.run()) for runner in (weather, transport)]
    await weather.wait_started()
    await transport.wait_started()
    await asyncio.sleep(0.3)  # transport's subscription is open before anything is published
    yield drop, outbox, tmp_path / "weather-state"
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def published(runner: AdapterRunner) -> float:
    value = runner.metrics.registry.get_sample_value(
        "dutylink_adapter_events_published_total", {"adapter": runner.kind.name}
    )
    return value or 0.0


def semantic(warning: warning_pb2.Warning) -> warning_pb2.Warning:
    copy = warning_pb2.Warning()
    copy.CopyFrom(warning)
    copy.ClearField("cap_xml")
    return copy


async def test_a_cap_file_arrives_as_an_equivalent_cap_file_at_another_agency(
    adapters: tuple[Path, Path, Path],
) -> None:
    drop, outbox, state = adapters
    (drop / ".alert.xml.part").write_bytes(ALERT.read_bytes())  # written under another name,
    (drop / ".alert.xml.part").rename(drop / "alert.xml")  # then renamed in: the drop contract
    (drop / "bomb.xml").write_bytes(BOMB)
    await until(lambda: len(list(outbox.glob("*.xml"))) == 1)
    (written,) = outbox.glob("*.xml")
    original, received = parse_cap(ALERT.read_bytes()), parse_cap(written.read_bytes())
    assert semantic(received) == semantic(original), "every modelled CAP element survives"
    await until(lambda: (state / "drop" / "done" / "alert.xml").exists())
    await until(lambda: any((state / "rejected").glob("*.reason.json")))
    (reason_file,) = (state / "rejected").glob("*.reason.json")
    reason = json.loads(reason_file.read_text())
    assert reason["origin"] == "bomb.xml" and "DOCTYPE" in reason["reason"]
    assert (state / "drop" / "done" / "bomb.xml").exists(), "the file is done; its record is kept"

    # The update references the alert; re-dropping the alert publishes nothing new.
    (drop / "update.xml").write_bytes(UPDATE.read_bytes())
    (drop / "alert-again.xml").write_bytes(ALERT.read_bytes())
    await until(lambda: len(list(outbox.glob("*.xml"))) == 2)
    await asyncio.sleep(0.5)
    assert len(list(outbox.glob("*.xml"))) == 2
    update = parse_cap(next(p for p in outbox.glob("*.xml") if p != written).read_bytes())
    assert update.msg_type == warning_pb2.CAP_MSG_TYPE_UPDATE
    assert update.references[0].identifier == original.identifier


GOLDEN = Path(__file__).parent / "golden" / "cap"


async def test_signed_and_latin_1_alerts_are_forwarded_byte_equal_or_re_rendered_intact(
    gateway: Gateway, tmp_path: Path
) -> None:
    """Through a real gateway: one receiver forwards the issuer's bytes (the signature still
    covers them), another re-renders from the fields (same meaning, UTF-8, no signature)."""
    drop = tmp_path / "drop"
    runners = [
        AdapterRunner(KIND, AdapterConfig(
            file=tmp_path / "weather.toml", gateway=gateway.address, token=SecretStr(TOKENS["weather"]),
            state_dir=tmp_path / "weather-state",
            options={"system": "sh-mb", "division_code": "310000",
                     "inbound": {"directory": str(drop), "poll_seconds": 0.1}},
        )),
    ] + [
        AdapterRunner(KIND, AdapterConfig(
            file=tmp_path / f"{name}.toml", gateway=gateway.address, token=SecretStr(TOKENS["transport"]),
            state_dir=tmp_path / f"{name}-state",
            options={"outbound": {"subscription": name, "directory": str(tmp_path / name),
                                  "forward_original": name == "forwarded"}},
        ))
        for name in ("forwarded", "rendered")
    ]  # fmt: skip
    tasks = [asyncio.create_task(runner.run()) for runner in runners]
    try:
        for runner in runners:
            await runner.wait_started()
        await asyncio.sleep(0.3)  # the subscriptions are open before anything is published
        originals = {name: (GOLDEN / name).read_bytes() for name in ("signed.xml", "iso-8859-1.xml")}  # fmt: skip
        for name, data in originals.items():
            (drop / name).write_bytes(data)
        for name in ("forwarded", "rendered"):
            await until(lambda name=name: len(list((tmp_path / name).glob("*.xml"))) == 2)  # type: ignore[misc]
        forwarded = {p.read_bytes() for p in (tmp_path / "forwarded").glob("*.xml")}
        assert forwarded == set(originals.values())
        rendered = {parse_cap(p.read_bytes()).identifier: p.read_bytes() for p in (tmp_path / "rendered").glob("*.xml")}  # fmt: skip
        for data in originals.values():
            differences = cap_differences(data, rendered[parse_cap(data).identifier])
            assert differences in ([], ["/alert/ds:Signature[1]: only in a"])
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_feed_poller_reads_each_linked_cap_document_once(
    gateway: Gateway, tmp_path: Path
) -> None:
    documents = {"/cap/alert.xml": ALERT.read_bytes(), "/cap/update.xml": UPDATE.read_bytes()}
    entries = ["alert.xml"]
    served: list[str] = []

    async def feed(_: web.Request) -> web.Response:
        items = "".join(
            f"<entry><id>urn:{n}</id><updated>2026-07-14T16:00:00+08:00</updated>"
            f'<link type="application/cap+xml" href="cap/{n}"/></entry>'
            for n in entries
        )
        return web.Response(
            body=f'<feed xmlns="http://www.w3.org/2005/Atom">{items}</feed>'.encode(),
            content_type="application/atom+xml",
        )

    async def document(request: web.Request) -> web.Response:
        served.append(request.path)
        return web.Response(body=documents[request.path], content_type="application/cap+xml")

    app = web.Application()
    app.add_routes([web.get("/feed.atom", feed), web.get("/cap/{name}", document)])
    server = web.AppRunner(app)
    await server.setup()
    site = web.TCPSite(server, "127.0.0.1", 0)
    await site.start()
    port = server.addresses[0][1]
    runner = AdapterRunner(
        KIND,
        AdapterConfig(
            file=tmp_path / "feed.toml", gateway=gateway.address, token=SecretStr(TOKENS["weather"]),
            state_dir=tmp_path / "state",
            options={"system": "sh-mb", "inbound": {"feed_url": f"http://127.0.0.1:{port}/feed.atom", "poll_seconds": 0.1}},
        ),
    )  # fmt: skip
    task = asyncio.create_task(runner.run())
    try:
        await until(lambda: published(runner) == 1)
        await asyncio.sleep(0.4)  # several more polls: the same entry is not read again
        assert served == ["/cap/alert.xml"]
        entries.append("update.xml")
        await until(lambda: published(runner) == 2)
        assert served == ["/cap/alert.xml", "/cap/update.xml"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.cleanup()
    seen = json.loads((tmp_path / "state" / "feed-seen.json").read_text())
    assert set(seen) == {"cap/alert.xml", "cap/update.xml"}


def test_rss_and_atom_indexes_list_their_cap_links() -> None:
    rss = b"""<rss version="2.0"><channel><item><link>https://x/a.xml</link><guid>a1</guid></item>
    <item><enclosure url="https://x/b.xml" type="application/cap+xml"/><pubDate>Mon</pubDate></item>
    </channel></rss>"""
    assert feed_links(rss) == [("https://x/a.xml", "a1"), ("https://x/b.xml", "Mon")]


# --- the example configurations (examples/cap/) ---------------------------------------------

EXAMPLES = Path(__file__).parent.parent / "examples" / "cap"
EXAMPLE_CONFIGS = sorted(EXAMPLES.glob("*.toml"))


def test_the_examples_are_the_drop_directory_feed_and_outbox_configs() -> None:
    assert [path.name for path in EXAMPLE_CONFIGS] == [
        "cap-drop-directory.toml",
        "cap-feed.toml",
        "cap-outbox.toml",
    ]


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=lambda path: path.stem)
def test_example_config_loads_and_builds(path: Path, tmp_path: Path) -> None:
    config = load_adapter_config(path)
    assert config.token is not None and config.token.get_secret_value() in {
        f"dev-{agency}-token" for agency in ("weather", "transport")
    }
    assert config.gateway.startswith("127.0.0.1:")
    plan = KIND.build(config.options, tmp_path)
    assert plan.sources or plan.outbound


def test_example_feed_index_links_the_samples_when_the_repository_is_served() -> None:
    config = load_adapter_config(EXAMPLES / "cap-feed.toml")
    feed_url = config.options["inbound"]["feed_url"]
    served = urlsplit(feed_url)
    assert served.hostname == "127.0.0.1"
    root = Path(__file__).parent.parent
    index = root / served.path.lstrip("/")
    links = feed_links(index.read_bytes())
    assert len(links) == 2
    for link, _ in links:
        target = root / urlsplit(urljoin(feed_url, link)).path.lstrip("/")
        assert parse_cap(target.read_bytes()).identifier in target.read_text(encoding="utf-8")


def test_a_misspelt_option_is_refused_naming_it() -> None:
    with pytest.raises(AdapterConfigError, match=r"\[options.inbound\] unknown key 'directroy'"):
        KIND.build({"inbound": {"directroy": "drop"}}, Path("state"))
    with pytest.raises(AdapterConfigError, match=r"\[options.outbound\] directory: required"):
        KIND.build({"outbound": {"subscription": "x"}}, Path("state"))
