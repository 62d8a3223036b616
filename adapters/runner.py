"""Running an adapter: one config file shape, one health endpoint, one metrics page, for all.

    dutylink adapter run cap --config weather-cap.toml

The config file (TOML):

    [adapter]
    gateway = "127.0.0.1:50051"      # the gateway (or its load balancer)
    token = "dev-weather-token"      # development; or [adapter.tls] below
    state_dir = "state/weather-cap"  # rejected/, progress and seen-lists live here
    http_listen = "127.0.0.1:9101"   # GET /healthz and /metrics (Prometheus)
    batch_size = 500                 # events per PublishBatch

    [adapter.tls]                    # mutual TLS (see `dutylink pki issue`)
    ca_file = "..."; cert_file = "..."; key_file = "..."

    [options]                        # the adapter's own keys, documented with each adapter

Relative paths, here and in [options], are relative to the working directory. Errors in the
file are reported as `FILE: [section] key: problem`.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import structlog
from aiohttp import web
from pydantic import Field, SecretStr, Strict
from pydantic.dataclasses import dataclass as pydantic_dataclass

from dutylink.adapters.framework import (
    AdapterKind,
    Outbound,
    Pipeline,
    RejectedStore,
    deliver_outbound,
)
from dutylink.adapters.metrics import Metrics, metrics_route, serve_http
from dutylink.adapters.options import (
    OPTIONS,
    AdapterConfigError,
    Expect,
    FilePath,
    Table,
    Text,
    read,
)
from dutylink.adapters.sdk.client import ClientCertificate, DutyLinkClient, Retry
from dutylink.v1 import gateway_pb2

__all__ = ["AdapterConfig", "AdapterConfigError", "AdapterRunner", "load_adapter_config"]

log = structlog.get_logger("dutylink.adapter")


@pydantic_dataclass(frozen=True, config=OPTIONS)
class AdapterSection:
    """The same for every adapter: the gateway, the agency's credentials, local state."""

    gateway: Text
    """The gateway (or its load balancer), HOST:PORT."""
    state_dir: FilePath
    """rejected/, progress and seen-lists live here."""
    token: Annotated[SecretStr, Strict(), Expect("a non-empty string")] | None = None
    """The agency's token (development); or [adapter.tls]."""
    tls: Table = Field(default_factory=dict)
    """[adapter.tls]: mutual TLS (see `dutylink pki issue`)."""
    http_listen: Text = "127.0.0.1:0"
    """GET /healthz and /metrics (Prometheus)."""
    batch_size: Annotated[int, Strict(), Field(ge=1, le=1000), Expect("an integer from 1 to 1000")] = 500  # fmt: skip
    """Events per PublishBatch."""


@pydantic_dataclass(frozen=True, config=OPTIONS)
class AdapterTls:
    """Mutual TLS with the agency's client certificate (see `dutylink pki issue`)."""

    ca_file: FilePath
    """The exchange CA."""
    cert_file: FilePath
    """The agency's client certificate."""
    key_file: FilePath
    """Its private key (0600)."""


@dataclass(frozen=True)
class AdapterConfig:
    file: Path
    gateway: str
    state_dir: Path
    token: SecretStr | None = None
    certificate: ClientCertificate | None = None
    http_listen: str = "127.0.0.1:0"
    batch_size: int = 500
    options: Mapping[str, Any] = field(default_factory=dict)


def load_adapter_config(path: Path) -> AdapterConfig:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise AdapterConfigError(f"{path}: cannot read: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise AdapterConfigError(f"{path}: {error}") from None
    unknown = set(document) - {"adapter", "options"}
    if unknown:
        raise AdapterConfigError(f"{path}: unknown section [{sorted(unknown)[0]}] (expected [adapter], [options])")  # fmt: skip
    if not isinstance(document.get("adapter"), dict):
        raise AdapterConfigError(f"{path}: [adapter] is required")
    options = document.get("options", {})
    if not isinstance(options, dict):
        raise AdapterConfigError(f"{path}: [options] must be a table")
    try:
        adapter = read(AdapterSection, document["adapter"], "[adapter]")
        tls = read(AdapterTls, adapter.tls, "[adapter.tls]") if adapter.tls else None
    except AdapterConfigError as error:
        raise AdapterConfigError(f"{path}: {error}") from None
    certificate = None
    if tls is not None:
        try:
            certificate = ClientCertificate.from_files(tls.ca_file, tls.cert_file, tls.key_file)
        except OSError as error:
            raise AdapterConfigError(f"{path}: [adapter.tls] {error.filename}: {error.strerror}") from None  # fmt: skip
    if (adapter.token is None) == (certificate is None):
        raise AdapterConfigError(f"{path}: [adapter] give exactly one of token or [adapter.tls]")
    return AdapterConfig(
        file=path,
        gateway=adapter.gateway,
        state_dir=adapter.state_dir,
        token=adapter.token,
        certificate=certificate,
        http_listen=adapter.http_listen,
        batch_size=adapter.batch_size,
        options=options,
    )


class AdapterRunner:
    """Runs one adapter until cancelled: its sources into the gateway, its outbound sides out
    of it, and the health and metrics endpoint."""

    def __init__(self, kind: AdapterKind, config: AdapterConfig) -> None:
        self.kind = kind
        self.config = config
        self.metrics = Metrics(kind.name)
        self.rejected = RejectedStore(config.state_dir / "rejected")
        self.http_port = 0
        self._started = asyncio.Event()

    def _client(self) -> DutyLinkClient:
        # Long retries: a record waits in its source until the gateway is back.
        retry = Retry(attempts=30, timeout=300.0)
        if self.config.certificate is not None:
            return DutyLinkClient(self.config.gateway, certificate=self.config.certificate, retry=retry)  # fmt: skip
        token = self.config.token.get_secret_value() if self.config.token else None
        return DutyLinkClient(self.config.gateway, token=token, retry=retry)

    async def _http(self) -> web.AppRunner:
        async def health(_: web.Request) -> web.Response:
            return web.json_response({"status": "ok", "adapter": self.kind.name})

        routes = [web.get("/healthz", health), metrics_route(self.metrics.registry)]
        runner, self.http_port = await serve_http(routes, self.config.http_listen)
        return runner

    async def wait_started(self) -> None:
        await self._started.wait()

    async def run(self) -> None:
        plan = self.kind.build(self.config.options, self.config.state_dir)
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        http = await self._http()
        client = self._client()
        tasks = []
        if plan.sources:
            if plan.inbound is None:
                raise AdapterConfigError(f"adapter {self.kind.name}: sources without an inbound mapping")  # fmt: skip
            pipeline = Pipeline(
                client, plan.inbound, self.rejected, self.metrics, batch_size=self.config.batch_size
            )
            tasks = [asyncio.create_task(source.run(pipeline)) for source in plan.sources]
        for outbound in plan.outbound:

            async def handle(delivery: gateway_pb2.Delivery, outbound: Outbound = outbound) -> None:
                await deliver_outbound(outbound, self.rejected, self.metrics, delivery)

            subscription = outbound.subscription
            tasks.append(
                asyncio.create_task(
                    client.consume(
                        subscription.name, handle, families=subscription.families,
                        types=subscription.types,
                        jurisdiction_prefixes=subscription.jurisdiction_prefixes,
                        planes=subscription.planes,
                    )
                )
            )  # fmt: skip
        log.info("adapter.started", adapter=self.kind.name, http_port=self.http_port, sources=len(plan.sources), outbound=len(plan.outbound))  # fmt: skip
        self._started.set()
        try:
            if tasks:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()  # a source or consumer that failed for good ends the adapter
            else:
                await asyncio.Event().wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.close()
            await http.cleanup()
