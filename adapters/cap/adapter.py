"""The CAP 1.2 adapter: warnings in from CAP XML (a drop directory, a polled Atom/RSS feed),
warnings out as CAP XML files, for the meteorological bureau, the earthquake agency and public
alerting.

    [options]
    system = "cma-sh"                 # prefix of event ids: "<system>:<CAP identifier>"
    division_code = "310000"          # jurisdiction when no GB/T 2260 geocode is given

    [options.inbound]
    directory = "drop/cap"            # *.xml files, one alert each (see dutylink.adapters.transports)
    feed_url = "https://..."          # optional: an Atom or RSS index linking CAP documents
    poll_seconds = 30

    [options.outbound]
    subscription = "cap-out"
    directory = "outbox/cap"          # one <identifier>.xml per warning, written atomically
    forward_original = true           # write the received CAP bytes when present (signatures)

Envelope from the alert (documented in adapters/cap/README.md): type `warning.<msgType>`
("warning.alert", "warning.update", "warning.cancel", "warning.ack"; Error is not published), time =
`sent`, plane from `status` (Actual, Exercise, else Test), classification from `scope` (Public →
PUBLIC, Restricted → RESTRICTED, Private → CONFIDENTIAL), priority from the most urgent and
severe info block, jurisdiction from the first GB/T 2260 geocode (`valueName` "GB/T 2260" or
"division_code"; of a 9- or 12-digit township or village code, its first six digits, the
county), else `division_code`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
import structlog
from pydantic import Field
from pydantic.dataclasses import dataclass

from dutylink.adapters.cap.mapping import inbound_mapping, outbound_mapping
from dutylink.adapters.framework import (
    AdapterKind,
    AdapterPlan,
    Outbound,
    Pipeline,
    PublishUnavailableError,
    Subscription,
)
from dutylink.adapters.options import OPTIONS, FilePath, Flag, Names, Positive, Table, Text, read
from dutylink.adapters.records import Record
from dutylink.adapters.transports import DirectorySink, DirectorySource, split_whole
from dutylink.adapters.xmlsafe import XmlError, parse_xml

log = structlog.get_logger("dutylink.adapter")

# --- the feed poller --------------------------------------------------------------------------

_ATOM = "{http://www.w3.org/2005/Atom}"


def feed_links(index: bytes) -> list[tuple[str, str]]:
    """(link, version) of every CAP document an Atom or RSS index lists; the version (Atom
    `updated`, RSS `pubDate` or `guid`) tells a re-issued document from one already read."""
    root = parse_xml(index)
    found: list[tuple[str, str]] = []
    if root.tag == f"{_ATOM}feed":
        for entry in root.iter(f"{_ATOM}entry"):
            version = entry.findtext(f"{_ATOM}updated") or entry.findtext(f"{_ATOM}id") or ""
            for link in entry.iter(f"{_ATOM}link"):
                kind, href = link.get("type", ""), link.get("href", "")
                if href and ("cap" in kind or href.endswith(".xml")):
                    found.append((href, version.strip()))
                    break
    else:  # RSS 2.0
        for item in root.iter("item"):
            version = item.findtext("pubDate") or item.findtext("guid") or ""
            enclosure = item.find("enclosure")
            href = (
                enclosure.get("url", "") if enclosure is not None else item.findtext("link") or ""
            )
            if href:
                found.append((href.strip(), version.strip()))
    return found


class FeedSource:
    """Polls a feed index and publishes every CAP document it links that was not read before.
    What was read is kept in `<state>/feed-seen.json`, so a restart does not re-read (and even
    a re-read would publish nothing new: event ids come from CAP identifiers)."""

    def __init__(self, url: str, state_dir: Path, poll_seconds: float, max_bytes: int = 512 * 1024) -> None:  # fmt: skip
        self.url = url
        self._seen_file = state_dir / "feed-seen.json"
        self._poll = poll_seconds
        self._max_bytes = max_bytes

    def _load_seen(self) -> dict[str, str]:
        if not self._seen_file.exists():
            return {}
        return dict(json.loads(self._seen_file.read_text(encoding="utf-8")))

    def _save_seen(self, seen: Mapping[str, str]) -> None:
        self._seen_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._seen_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(seen, indent=1), encoding="utf-8")
        temporary.replace(self._seen_file)

    async def _get(self, session: aiohttp.ClientSession, url: str) -> bytes:
        async with session.get(url) as response:
            response.raise_for_status()
            data = await response.content.read(self._max_bytes + 1)
            if len(data) > self._max_bytes:
                raise ValueError(f"{url}: larger than {self._max_bytes} bytes")
            return data

    async def run(self, pipeline: Pipeline) -> None:
        seen = await asyncio.to_thread(self._load_seen)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    await self._poll_once(session, pipeline, seen)
                except (aiohttp.ClientError, TimeoutError, XmlError, ValueError) as error:
                    log.warning("adapter.feed_failed", url=self.url, reason=str(error))
                except PublishUnavailableError as error:
                    log.warning("adapter.gateway_unavailable", url=self.url, reason=str(error))
                await asyncio.sleep(self._poll)

    async def _poll_once(
        self, session: aiohttp.ClientSession, pipeline: Pipeline, seen: dict[str, str]
    ) -> None:
        links = feed_links(await self._get(session, self.url))
        fresh = [(link, version) for link, version in links if seen.get(link) != version]
        records = []
        for link, _ in fresh:
            absolute = urljoin(self.url, link)
            records.append(Record(link, await self._get(session, absolute), absolute, "application/cap+xml"))  # fmt: skip
        if records:
            await pipeline.publish(records)  # rejected ones are kept in rejected/ by the pipeline
            seen.update(fresh)
            await asyncio.to_thread(self._save_seen, seen)


# --- the adapter ------------------------------------------------------------------------------


@dataclass(frozen=True, config=OPTIONS)
class CapOptions:
    """How alerts become warning events."""

    system: Text = "cap"
    """Prefix of event ids: "<system>:<CAP identifier>"."""
    division_code: str = ""
    """Jurisdiction (GB/T 2260) of an alert that gives no GB/T 2260 geocode."""
    inbound: Table = Field(default_factory=dict)
    """[options.inbound]: where alerts come from."""
    outbound: Table = Field(default_factory=dict)
    """[options.outbound]: where warnings go."""


@dataclass(frozen=True, config=OPTIONS)
class CapInbound:
    """Alerts in: a drop directory, a polled feed, or both."""

    directory: FilePath | None = None
    """*.xml files, one alert each (see dutylink.adapters.transports)."""
    feed_url: Text | None = None
    """An Atom or RSS index linking CAP documents, polled."""
    poll_seconds: Positive = 5.0
    """How often the directory and the feed are looked at."""


@dataclass(frozen=True, config=OPTIONS)
class CapOutbound:
    """Warnings out as CAP XML files."""

    directory: FilePath
    """One <identifier>.xml per warning, written atomically."""
    subscription: Text = "cap-out"
    """The durable subscription's name: delivery resumes where it stopped."""
    forward_original: Flag = False
    """Write the received CAP bytes when present (they keep an XML signature valid)."""
    types: Names = ()
    """Only these warning types (e.g. "warning.alert"); empty: every warning."""


def build(values: Mapping[str, Any], state_dir: Path) -> AdapterPlan:
    options = read(CapOptions, values)
    inbound = read(CapInbound, options.inbound, "[options.inbound]")
    plan = AdapterPlan(inbound=inbound_mapping(options.system, options.division_code))
    if inbound.directory is not None:
        plan.sources.append(
            DirectorySource(
                inbound.directory, state_dir / "drop", ["*.xml"],
                split_whole("application/cap+xml"), poll_seconds=inbound.poll_seconds,
            )
        )  # fmt: skip
    if inbound.feed_url is not None:
        plan.sources.append(FeedSource(inbound.feed_url, state_dir, inbound.poll_seconds))
    if options.outbound:
        outbound = read(CapOutbound, options.outbound, "[options.outbound]")
        plan.outbound.append(
            Outbound(
                Subscription(outbound.subscription, families=("warning",), types=outbound.types),
                outbound_mapping(outbound.forward_original),
                DirectorySink(outbound.directory),
            )
        )
    return plan


KIND = AdapterKind(
    name="cap",
    description="CAP 1.2 warnings: XML files or an Atom/RSS feed in, CAP XML files out",
    build=build,
    tables=(
        ("options", CapOptions),
        ("options.inbound", CapInbound),
        ("options.outbound", CapOutbound),
    ),
)
