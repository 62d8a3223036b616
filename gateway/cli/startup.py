"""What `dutylink serve` does around a gateway, in one process or as the supervisor of
workers (gateway.cli.workers): start-up errors as one line, the crash drills' failpoint, and the
web console served beside the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog
import typer

from gateway.access.pki import PkiError
from gateway.audit.log import AuditUnavailableError
from gateway.core.ports import StoreError
from gateway.core.settings import Config, ConfigError
from gateway.store.data_dir_lock import DataDirInUseError
from gateway.store.nats_server import NatsServerError
from gateway.store.writer_lease import WriterLeaseError


def run_reporting_startup_errors(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `main`; a configuration or start-up failure is one line naming what failed."""
    try:
        asyncio.run(main())
    except ConfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    except (
        StoreError,
        AuditUnavailableError,
        NatsServerError,
        PkiError,
        DataDirInUseError,
        WriterLeaseError,
        OSError,
    ) as error:
        typer.echo(f"error: cannot start: {error}", err=True)
        raise typer.Exit(1) from None


def console_beside(address: str, settings: Config) -> contextlib.AbstractAsyncContextManager[str]:
    """The web console (`[console] listen`) served by this process for the gateway at
    `address`: by token login over HTTP beside a plaintext gateway, by certificate login over
    HTTPS beside a mutual-TLS one (the gateway trusts the console it is configured with)."""
    from dutylink.adapters.sdk.client import DutyLinkClient
    from gateway.cli.console import ConsoleCertificateError, certificate_console
    from gateway.console.app import serving
    from gateway.console.state import ConsoleSettings

    tls, zone = settings.tls, settings.console.zone
    host, _, port = settings.console.listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    agencies = tuple(agency.id for agency in settings.agencies)
    if not tls.enabled:
        console = ConsoleSettings(
            connect=lambda token: DutyLinkClient(address, token=token),
            zone=zone,
            agencies=agencies,
        )
        return serving(console, host, int(port))
    try:
        console, https = certificate_console(
            address,
            ca_file=Path(tls.ca_file),
            cert_file=Path(settings.console.cert_file),
            key_file=Path(settings.console.key_file),
            crl_file=Path(tls.crl_file) if tls.crl_file else None,
            crl_unusable=tls.crl_unusable,
            zone=zone,
            agencies=agencies,
        )
    except ConsoleCertificateError as error:
        raise ConfigError(f"console.cert_file: {error}") from None
    return serving(console, host, int(port), https)


def crash_at(step: str) -> Callable[[str], None]:
    """For crash drills: kill this process (SIGKILL, like a power cut) when the publish path
    reaches `step` (see gateway.rpc.dependencies.Failpoint)."""
    log = structlog.get_logger("dutylink.gateway")
    log.warning("gateway.failpoint", step=step, message="this gateway kills itself there")

    def failpoint(reached: str) -> None:
        if reached == step:
            os.kill(os.getpid(), signal.SIGKILL)

    return failpoint
