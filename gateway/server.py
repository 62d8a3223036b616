"""Assembles and runs one gateway: gRPC server, health, reflection, JetStream, embedded NATS.
Long because it is the composition root: the start-up, reconnect and shutdown order of every
part reads top to bottom in one place (the checks and servicers it wires live in gateway/rpc).

Start-up order: connect to NATS and ensure the streams, then serve; health says NOT_SERVING
until both are done and again whenever NATS is disconnected. After a reconnect the streams are
ensured again, tried until JetStream answers (a restarted server may accept connections before
its JetStream does), then health says SERVING again; nothing needs a gateway restart. The
embedded nats-server is this gateway's own: if it dies, it is started again on the same port
and store, and dies with the gateway (see gateway.store.nats_server). Shutdown order: health to
NOT_SERVING, stop accepting calls and let in-flight ones finish within the grace period, drain
NATS, stop the embedded server.

With `[gateway] health_listen` a second, plaintext server answers grpc.health.v1 there and
nothing else, from the same HealthServicer: orchestrator probes (Kubernetes' gRPC probes) cannot
present the client certificate the main port requires.

A `supervised` gateway is one worker of `dutylink serve --workers N` (gateway.cli.workers): the
supervisor holds the data directory's lock and runs the embedded nats-server, and the workers
share the gRPC and health ports (SO_REUSEPORT), so the kernel spreads connections among them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from pathlib import Path
from types import TracebackType

import grpc
import structlog
from aiohttp import web
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace import TracerProvider

from dutylink.catalogue import Catalogue, load_catalogue
from dutylink.policies.loader import SAMPLE_DIR
from dutylink.policies.model import PolicyError
from dutylink.v1 import (
    audit_pb2,
    audit_service_pb2,
    audit_service_pb2_grpc,
    board_pb2,
    board_pb2_grpc,
    event_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    incident_pb2,
)
from gateway.access.auth import Authenticator, CertificateAuthenticator, TokenAuthenticator
from gateway.access.authorization import Authorizer, GrantBook, PolicyChange, PolicyHolder
from gateway.access.forwarded import load_authorities
from gateway.access.pki import IdentityError, client_identity
from gateway.access.revocation import CRL_KEPT_FILE, RevocationChange, RevocationKeeper
from gateway.audit.entries import gateway_entry, revocation_entry, schema_version
from gateway.audit.log import AuditUnavailableError
from gateway.audit.note import key_type_of
from gateway.core.admission import NoStatefulGuards, StatefulGuards
from gateway.core.crypto import crypto_profile
from gateway.core.ports import StoreError
from gateway.core.projections.loop import LoopStep
from gateway.core.quotas import Limits, Quotas, Refusal
from gateway.core.sealing import Keyring, SealingError
from gateway.core.settings import Config, ConfigError, GatewaySettings
from gateway.core.streams import TRACKER_CONSUMER
from gateway.core.validation import ValidationLimits, Validator
from gateway.rpc.audit_service import AuditServicer, CheckpointServicer
from gateway.rpc.board_service import BoardServicer
from gateway.rpc.breakglass import BreakGlass
from gateway.rpc.calls import DecodeGuard
from gateway.rpc.dependencies import (
    AuditHolder,
    Dependencies,
    Failpoint,
    NoDeliveryRecorder,
    SealingHolder,
    no_failpoint,
)
from gateway.rpc.publish import Publisher
from gateway.rpc.quota_interceptor import QuotaInterceptor
from gateway.rpc.store_witness import move_mark, witness_store
from gateway.rpc.subscribe import Subscriber
from gateway.rpc.tracking_service import TrackingServicer
from gateway.store import nats_auth
from gateway.store.audit_files import (
    declared_rotation,
    kept_checkpoint_file,
    load_or_create_key,
    load_or_create_signer,
)
from gateway.store.audit_log import AuditLog
from gateway.store.board_feed import BoardFeed
from gateway.store.consumers import ConsumerRunner
from gateway.store.data_dir_lock import DataDirLock
from gateway.store.jetstream import EventStore
from gateway.store.ledger_reader import LedgerReader
from gateway.store.ledger_timer import (
    PUBLISH_BATCH,
    ReservationExpiryTimer,
    reservation_expiry_timer,
)
from gateway.store.lifecycle_guard import LifecycleGuard
from gateway.store.nats_server import NatsServer, keep_running, start_embedded, store_key_of
from gateway.store.policy_archive import PolicyArchive
from gateway.store.sealing_keys import KeyringSource
from gateway.store.tracker import Tracker
from gateway.store.writer_lease import WriterLease
from gateway.telemetry.metrics import (
    GatewayMetrics,
    TelemetryInterceptor,
    metrics_route,
    serve_http,
)
from gateway.telemetry.tracing import Tracing, provider_for

log = structlog.get_logger("dutylink.gateway")

SERVICE_NAMES = (
    *(
        gateway_pb2.DESCRIPTOR.services_by_name[name].full_name
        for name in (
            "PublisherService",
            "SubscriberService",
            "BreakGlassService",
            "TrackingService",
        )
    ),
    *(
        audit_service_pb2.DESCRIPTOR.services_by_name[name].full_name
        for name in ("AuditService", "CheckpointService")
    ),
    *(board_pb2.DESCRIPTOR.services_by_name[name].full_name for name in ("BoardService",)),
)
REQUEST_OVERHEAD_BYTES = 64 * 1024
BACKSTOP_HEADROOM = 100
# Options of every gRPC server of the gateway. No SO_REUSEPORT: a second process on the same
# port must fail to bind, not silently share the port (and its calls) with this one.
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (("grpc.so_reuseport", 0),)
# The workers of one supervisor share their ports on purpose (its reservation keeps others out).
SHARED_SERVER_OPTIONS: tuple[tuple[str, int], ...] = (("grpc.so_reuseport", 1),)


def connection_options(settings: GatewaySettings) -> list[tuple[str, int]]:
    """The main server's HTTP/2 connection management (`[gateway]` keepalive and connection
    age): idle connections pinged, clients' pings bounded, old connections told to go away."""
    milliseconds = {
        "grpc.keepalive_time_ms": settings.keepalive_seconds,
        "grpc.keepalive_timeout_ms": settings.keepalive_timeout_seconds,
        "grpc.http2.min_ping_interval_without_data_ms": settings.min_client_ping_seconds,
        "grpc.max_connection_age_ms": settings.max_connection_age_seconds,
        "grpc.max_connection_age_grace_ms": settings.max_connection_age_grace_seconds,
    }
    return [
        *((name, round(seconds * 1000)) for name, seconds in milliseconds.items()),
        # Clients may keep an idle connection alive (a subscription waiting for the next
        # event), within the interval above; the second ping too early ends the connection.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_ping_strikes", 2),
    ]


# Waits between tries to re-ensure the streams after a reconnect, and to start a dead embedded
# nats-server again: doubled after each failure, from the first up to the last.
RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 5.0


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _bind(
    server: grpc.aio.Server,
    address: str,
    key: str,
    credentials: grpc.ServerCredentials | None = None,
) -> int:
    """Open `address` (the value of config key `key`) on `server`: the port bound, or OSError
    naming the key (gRPC returns 0 or raises RuntimeError, without a reason)."""
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        raise OSError(f"{key}: cannot listen on {address} (in use, or not an address of this host)")
    return int(port)


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{key}: cannot read {path}: {error.strerror}") from None


class Gateway:
    """One gateway replica. `async with Gateway(config) as gw:` serves until the block ends."""

    def __init__(
        self,
        config: Config,
        *,
        nats_url: str | None = None,
        failpoint: Failpoint = no_failpoint,
        supervised: bool = False,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        """`supervised`: a worker of gateway.cli.workers, on the NATS at `nats_url` (the
        supervisor's embedded one when the configuration names none), its ports shared.
        `tracer_provider`: where spans go (default: as `[telemetry]` says)."""
        self.config = config
        self.tracing = Tracing(
            tracer_provider or provider_for(config.telemetry, config.gateway.gateway_id)
        )
        self._supervised = supervised
        self._server_options = SHARED_SERVER_OPTIONS if supervised else SERVER_OPTIONS
        self._failpoint = failpoint
        self._deps: Dependencies | None = None
        self.metrics = GatewayMetrics()
        self._metrics_http: web.AppRunner | None = None
        self.metrics_port = 0
        self._nats_url = nats_url if nats_url is not None else config.nats.url.get_secret_value()
        self._embedded: NatsServer | None = None
        self._store: EventStore | None = None
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self.health_port = 0
        self._policy_watch: asyncio.Task[None] | None = None
        self._revocations: RevocationKeeper | None = None
        self._crl_watch: asyncio.Task[None] | None = None
        self._keyring_source: KeyringSource | None = None
        self._keyring_watch: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._expiry_timer: ReservationExpiryTimer | None = None
        self._tracker: Tracker | None = None
        self._tracker_feed: ConsumerRunner | None = None
        self.board = BoardFeed(on_step=self._observe_loop_step, keys=self._sealing_keys)
        self._policy_archive: PolicyArchive | None = None
        self._nats_back = asyncio.Event()
        self._embedded_watch: asyncio.Task[None] | None = None
        self._lease: WriterLease | None = None
        self._lease_keeper: asyncio.Task[None] | None = None
        # Why this gateway stopped serving for good while running ("" while it serves or
        # stopped as asked): `serve_until_signalled` returns when it is set.
        self.failure = ""
        self._failed = asyncio.Event()
        self._checkpoints: asyncio.Task[None] | None = None
        self._audit = AuditHolder()
        self._health = health.aio.HealthServicer()
        self._data_dir_lock = DataDirLock(config.nats.data_dir)
        self.port = 0
        # Set once the gRPC port is open (health answers; the event services may still wait
        # for NATS): for embedders and tests that start the gateway in the background.
        self.listening = asyncio.Event()

    @property
    def address(self) -> str:
        host = self.config.gateway.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    @property
    def health_address(self) -> str:
        """The plaintext health-only address (`[gateway] health_listen`), or "" when off."""
        if not self.health_port:
            return ""
        host = self.config.gateway.health_listen.rsplit(":", 1)[0]
        return f"{host}:{self.health_port}"

    @property
    def nats_url(self) -> str:
        return self._nats_url

    async def _set_health(
        self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None:
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)
        self.metrics.serving.set(status == health_pb2.HealthCheckResponse.SERVING)

    def _count_refusal(self, agency: str, refusal: Refusal) -> None:
        self.metrics.quota_refusals.labels(agency=agency or "-", limit=refusal.limit).inc()

    async def _on_nats_disconnected(self) -> None:
        log.warning("nats.disconnected")
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def _on_nats_reconnected(self) -> None:
        # Runs inside nats-py's reconnect task: whatever raised here would end that task with
        # the client connected and health NOT_SERVING for good. The recovery task does the work.
        log.info("nats.reconnected")
        self._nats_back.set()

    async def _recover_after_reconnects(self) -> None:
        """After each reconnect: ensure the streams (tried until JetStream answers, while the
        connection stays up), then say SERVING."""
        assert self._store is not None
        while True:
            await self._nats_back.wait()
            self._nats_back.clear()
            wait = RETRY_FIRST_SECONDS
            while self._store.connected:
                try:
                    await self._store.ensure_streams()
                except StoreError as error:
                    log.warning("nats.not_ready", error=str(error), retry_seconds=wait)
                    await asyncio.sleep(wait)
                    wait = min(wait * 2, RETRY_MAX_SECONDS)
                    continue
                if self._store.connected:  # not lost again meanwhile
                    await self._set_health(health_pb2.HealthCheckResponse.SERVING)
                    log.info("nats.recovered")
                break

    def _own_console(self) -> tuple[str, ...]:
        """The console `dutylink serve` runs beside this gateway ([console] with a certificate):
        configured here, so trusted to relay its officers' read-only calls."""
        cert_file = self.config.console.cert_file
        if not (self.config.console.listen and cert_file):
            return ()
        try:
            identity = client_identity(_read(cert_file, "console.cert_file"))
        except IdentityError as error:
            raise ConfigError(f"console.cert_file: {cert_file}: {error}") from None
        if not identity.console:
            raise ConfigError(
                f"console.cert_file: {cert_file} names agency {identity.name!r}, not a console "
                "(issue one with `dutylink pki console NAME`)"
            )
        return (identity.name,)

    def _security(self) -> tuple[Authenticator, grpc.ServerCredentials | None]:
        """mTLS when [tls] is configured, else bearer tokens on plaintext (development)."""
        tls = self.config.tls
        if tls.enabled:
            ca_pem = _read(tls.ca_file, "tls.ca_file")
            cert_pem = _read(tls.cert_file, "tls.cert_file")
            credentials = grpc.ssl_server_credentials(
                [(_read(tls.key_file, "tls.key_file"), cert_pem)],
                root_certificates=ca_pem,
                require_client_auth=True,
            )
            for name, pem in (("server", cert_pem), ("ca", ca_pem)):
                expiry = x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()
                self.metrics.certificate_expiry.labels(name).set(expiry)
            crl = Path(tls.crl_file) if tls.crl_file else None
            log.info("auth.mtls", ca=tls.ca_file, crl=tls.crl_file or None)
            authenticator = CertificateAuthenticator(
                self.config.agencies,
                ca_pem,
                crl,
                crl_unusable=tls.crl_unusable,
                crl_kept_file=Path(self.config.nats.data_dir) / CRL_KEPT_FILE,
                consoles=(*tls.consoles, *self._own_console()),
                fronts=tls.fronts,
                front_authorities=self._front_authorities(),
            )
            self._revocations = authenticator.revocations
            return authenticator, credentials
        if self.config.agencies_source.endswith("sample_agencies.toml"):
            log.warning(
                "auth.sample_tokens",
                message="serving the sample agencies with their public development tokens: not for real use",
            )
        log.warning(
            "auth.token_mode",
            message="plaintext with bearer tokens (development mode): configure [tls] for real use",
        )
        return TokenAuthenticator(self.config.agencies), None

    def _policy(self) -> PolicyHolder:
        directory = Path(self.config.policy.dir) if self.config.policy.dir else SAMPLE_DIR
        try:
            holder = PolicyHolder(directory)
        except PolicyError as error:
            raise ConfigError(
                f"policy {directory}: cannot load:\n{error}"
                if error.findings
                else f"policy {directory}: no *.yaml files"
            ) from None
        if directory == SAMPLE_DIR:
            log.warning(
                "policy.samples", message="enforcing the sample policies of the policies package"
            )
        return holder

    def _stateful_guards(self, authorizer: Authorizer, catalogue: Catalogue) -> StatefulGuards:
        if not self.config.gateway.enforce_lifecycles:
            log.warning(
                "lifecycle.off",
                message="lifecycles and the resource ledger are not enforced (enforce_lifecycles)",
            )
            return NoStatefulGuards()
        assert self._store is not None
        return LifecycleGuard(self._store.aggregates, catalogue, authorizer.held_roles)

    def _ledger_reader(self) -> LedgerReader | None:
        """BoardService's reader of the resource ledger: none when the gateway keeps none."""
        if not self.config.gateway.enforce_lifecycles:
            return None
        assert self._store is not None
        return LedgerReader(self._store.aggregates, max_items=self.config.ledger.max_items)

    async def start(self) -> None:
        # Before anything is written there: a second gateway on this directory stops here.
        if not self._supervised:  # else the supervisor holds it for all its workers
            self._data_dir_lock.acquire()
        authenticator, credentials = self._security()
        policy = self._policy()
        grants = GrantBook()
        if not self._nats_url:
            # Only the generated users may connect; the gateway as its own (gateway.store.nats_auth).
            self._embedded, self._nats_url = await start_embedded(
                self.config.nats.data_dir,
                self.config.gateway.gateway_id,
                store_key_of(self.config.nats),
            )
            # This gateway's alone: when it dies, it is started again on its port and store
            # (the NATS client reconnects there, and recovery follows).
            self._embedded_watch = asyncio.create_task(
                keep_running(self._embedded, RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS)
            )
        gateway_settings = self.config.gateway
        max_request = (
            max(gateway_settings.max_message_bytes * 4, 4 * 1024 * 1024) + REQUEST_OVERHEAD_BYTES
        )
        quotas = Quotas(Limits.of(gateway_settings))
        self._store = EventStore(
            self.config,
            on_disconnected=self._on_nats_disconnected,
            on_reconnected=self._on_nats_reconnected,
        )
        authorizer = Authorizer(policy, grants)
        catalogue = load_catalogue()
        sealing = await self._load_sealing_keys()
        if gateway_settings.enforce_lifecycles:
            # Its escalations go through the publisher made below (the lambda reads it then).
            self._tracker = Tracker(
                self._store.aggregates,
                authorizer,
                catalogue,
                lambda events: publisher.publish_own_or_raise(events),
                interval=self.config.tracking.check_seconds,
                max_tracked=self.config.tracking.max_tracked,
                on_notice=self._count_escalation,
            )
        self._deps = deps = Dependencies(
            self.config,
            self._store,
            authenticator,
            Validator(ValidationLimits.of(gateway_settings)),
            authorizer,
            self._audit,
            failpoint=self._failpoint,
            metrics=self.metrics,
            stateful=self._stateful_guards(authorizer, catalogue),
            catalogue=catalogue,
            deliveries=self._tracker or NoDeliveryRecorder(),
            tracing=self.tracing,
            sealing=sealing,
        )
        self._server = grpc.aio.server(
            # Metrics and spans outermost, so that they count the guard's and the quotas'
            # refusals too.
            interceptors=[
                TelemetryInterceptor(self.metrics, self.tracing),
                DecodeGuard(authenticator, deps.sink, deps.hashing),
                QuotaInterceptor(quotas, authenticator, self._count_refusal),
            ],
            # The limits are kept by QuotaInterceptor, which knows the caller and never counts
            # health; gRPC's own limit (which refuses health alike) is only a backstop far above
            # them, against a flood of calls arriving faster than they are refused.
            maximum_concurrent_rpcs=2 * gateway_settings.max_concurrent_rpcs + BACKSTOP_HEADROOM,
            options=[
                *self._server_options,
                *connection_options(gateway_settings),
                ("grpc.max_receive_message_length", max_request),
                (
                    "grpc.max_send_message_length",
                    gateway_settings.max_message_bytes + REQUEST_OVERHEAD_BYTES,
                ),
            ],
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        publisher = Publisher(deps)
        gateway_pb2_grpc.add_PublisherServiceServicer_to_server(publisher, self._server)
        gateway_pb2_grpc.add_SubscriberServiceServicer_to_server(Subscriber(deps), self._server)
        gateway_pb2_grpc.add_BreakGlassServiceServicer_to_server(
            BreakGlass(deps, grants), self._server
        )
        gateway_pb2_grpc.add_TrackingServiceServicer_to_server(
            TrackingServicer(deps, self._tracker), self._server
        )
        board_pb2_grpc.add_BoardServiceServicer_to_server(
            BoardServicer(
                deps,
                self.board,
                catalogue,
                lambda: self._policy_archive,
                self._tracker,
                self._ledger_reader(),
            ),
            self._server,
        )
        audit_service_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(deps), self._server)
        audit_service_pb2_grpc.add_CheckpointServiceServicer_to_server(
            CheckpointServicer(deps), self._server
        )
        if gateway_settings.reflection:
            reflection.enable_server_reflection(
                (
                    *SERVICE_NAMES,
                    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                    reflection.SERVICE_NAME,
                ),
                self._server,
            )
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = _bind(self._server, gateway_settings.listen, "gateway.listen", credentials)
        # Serve health at once; the event services answer UNAVAILABLE until NATS is ready.
        await self._server.start()
        if gateway_settings.health_listen:
            await self._serve_health(gateway_settings.health_listen)
        if gateway_settings.metrics_listen:
            self._metrics_http, self.metrics_port = await serve_http(
                [metrics_route(self.metrics.registry)], gateway_settings.metrics_listen
            )
        self.listening.set()
        await self._store.connect(self._nats_url)
        await self._store.ensure_streams()
        await self._store.check_durability(
            # A supervisor's embedded server runs on the configuration DutyLink wrote too.
            sync_configured=(self._embedded is not None and self._embedded.sync_always)
            or (self._supervised and not self.config.nats.url)
        )
        if self.config.audit.enabled:
            await self._take_writer_lease()
            await self._start_audit(policy.version)
        self._policy_archive = PolicyArchive(self._store.client.jetstream())
        await self._archive_policy(policy)
        await self._store.follow_grants(
            lambda data: grants.add(gateway_pb2.EmergencyGrant.FromString(data))
        )
        await self._record_sealing_keys(None, sealing.keyring)
        if self._keyring_source is not None and sealing.keyring is not None:
            self._keyring_watch = asyncio.create_task(
                self._keyring_source.watch(sealing.keyring, self._record_sealing_keys)
            )
        self._policy_watch = asyncio.create_task(
            policy.watch(
                self.config.policy.reload_seconds,
                functools.partial(self._record_policy_change, policy=policy),
            )
        )
        if self._revocations is not None:
            self._crl_watch = asyncio.create_task(self._watch_revocations(self._revocations))
        self._recovery = asyncio.create_task(self._recover_after_reconnects())
        if self.config.gateway.enforce_lifecycles:
            # Every replica runs one; they publish the same expiry under the same id.
            self._expiry_timer = reservation_expiry_timer(
                self._store.aggregates,
                publisher.publish_own_or_raise,
                self.config.ledger,
                batch_size=min(PUBLISH_BATCH, gateway_settings.max_batch_events),
            )
            await self._expiry_timer.start()
        if self._tracker is not None:
            # One consumer shared by the replicas feeds it; every replica runs its timer.
            self._tracker_feed = ConsumerRunner(
                self._store.client.jetstream(),
                TRACKER_CONSUMER,
                self._tracker.observe,
                replica=self.config.gateway.gateway_id,
            )
            await self._tracker_feed.start()
            await self._tracker.start()
        await self.board.follow(self._store.client.jetstream())
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "gateway.started",
            address=self.address,
            nats=nats_auth.redact_url(self._nats_url),
            embedded=self._embedded is not None,
        )

    async def _serve_health(self, listen: str) -> None:
        """The health-only server: plaintext, no reflection, no metrics, the same servicer (so
        it says what the main port's health says)."""
        server = grpc.aio.server(options=self._server_options)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        self.health_port = _bind(server, listen, "gateway.health_listen")
        await server.start()
        self._health_server = server
        log.info("health.listening", address=self.health_address, services="grpc.health.v1")

    async def _take_writer_lease(self) -> None:
        """Become the one writer of this gateway id's audit log on this NATS, before any
        write to it (WriterLeaseError if another live gateway is)."""
        assert self._store is not None
        self._lease = WriterLease(
            self._store.client.jetstream(),
            self.config.gateway.gateway_id,
            self.config.nats.data_dir,
            lease_seconds=self.config.gateway.writer_lease_seconds,
            replicas=self.config.nats.stream_replicas,
            on_lost=self._on_writer_lease_lost,
        )
        await self._lease.acquire()
        self._lease_keeper = asyncio.create_task(self._lease.keep())

    async def _on_writer_lease_lost(self, reason: str) -> None:
        """Another gateway with this id writes the audit log now: append nothing more (every
        decision fails closed as unavailable) and stop serving."""
        log.error("writer_lease.lost", reason=reason)
        self._audit.log = None
        self.failure = reason
        self._failed.set()
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def _start_audit(self, policy_version: str) -> None:
        """Open the audit log: check the event stream against it (gateway.rpc.store_witness),
        then record what the check found and the start, before any other fact."""
        settings, gateway_id = self.config.audit, self.config.gateway.gateway_id
        audit_dir = Path(self.config.nats.data_dir) / "audit"
        key_file = Path(settings.key_file) if settings.key_file else audit_dir / f"{gateway_id}.key"
        self._audit.commitment_key = load_or_create_key(
            Path(settings.commitment_key_file)
            if settings.commitment_key_file
            else audit_dir / "commitment.key"
        )
        profile = crypto_profile(settings.crypto_profile)
        signer = load_or_create_signer(
            key_file, f"dutylink/audit/{gateway_id}", key_type_of(profile)
        )
        assert self._store is not None
        audit = AuditLog(
            self._store,
            gateway_id,
            signer,
            origin=signer.name,
            replicas=self.config.nats.stream_replicas,
            max_field_bytes=settings.max_field_bytes,
            max_field_items=settings.max_field_items,
            rotate_from=declared_rotation(settings.rotate_from_key)
            if settings.rotate_from_key
            else None,
            key_source=str(key_file),
            # Checked by `start`: a stream cut short must not pass for the whole log.
            kept_checkpoint=kept_checkpoint_file(audit_dir, gateway_id),
        )
        await audit.start()
        js = self._store.client.jetstream()
        witnessed = await witness_store(
            js, audit, gateway_id=gateway_id, mode=settings.store_mismatch
        )
        self._audit.store_fault = witnessed.fault
        started = gateway_entry(
            audit_pb2.AUDIT_ACTION_GATEWAY_START,
            policy_version=policy_version,
            schema_version=schema_version(profile.hash),
        )
        started.crypto_profile = profile.name
        started.stream_sequence = witnessed.events_last  # the stream's end, as found at start
        assert self._deps is not None
        await self._deps.open_audit(audit, [*witnessed.settled, started])
        await move_mark(js, gateway_id, witnessed)
        self.metrics.audit_size.set_function(lambda: audit.size)
        self.metrics.checkpoint_size.set_function(lambda: audit.signed_size)
        self.metrics.checkpoint_age.set_function(audit.unsigned_seconds)
        self._checkpoints = asyncio.create_task(
            audit.run_checkpoints(settings.checkpoint_seconds, self._flush_follow_ups)
        )

    async def _flush_follow_ups(self) -> None:
        """Record the facts the publish path left for the next append (events stored), before
        each checkpoint, when no other append took them along."""
        if self._deps is not None:
            with contextlib.suppress(AuditUnavailableError):
                await self._deps.sink.record([])

    async def _archive_policy(self, policy: PolicyHolder) -> None:
        """Keep the policy now in force for as-of replay (best effort: a replay of a moment it
        misses uses the policy recorded before)."""
        if self._policy_archive is None:
            return
        try:
            await self._policy_archive.record(
                policy.version, policy.texts, self.config.gateway.gateway_id
            )
        except StoreError as error:
            log.warning("policy.not_archived", version=policy.version, error=str(error))

    async def _record_policy_change(self, change: PolicyChange, *, policy: PolicyHolder) -> None:
        assert self._deps is not None
        entry = gateway_entry(
            audit_pb2.AUDIT_ACTION_POLICY_RELOAD,
            audit_pb2.AUDIT_OUTCOME_INVALID if change.refused else audit_pb2.AUDIT_OUTCOME_OK,
            policy_version=change.in_force,
            reason=change.refused,
        )
        # Best effort: the policy is in force either way (the files changed); the log says so
        # later: every decision entry carries its policy version.
        await self._deps.sink.record_best_effort([entry])
        if not change.refused:
            await self._archive_policy(policy)

    def _front_authorities(self) -> list[x509.Certificate]:
        """The CAs of the certificates TLCP fronts forward (`tls.front_ca_file`)."""
        path = self.config.tls.front_ca_file
        if not path:
            return []
        try:
            return load_authorities(_read(path, "tls.front_ca_file"))
        except IdentityError as error:
            raise ConfigError(f"tls.front_ca_file: {path}: {error}") from None

    def _sealing_keys(self) -> Keyring | None:
        """The sealing key ring in force now (None before start-up loaded it)."""
        return None if self._deps is None else self._deps.sealing.keyring

    async def _load_sealing_keys(self) -> SealingHolder:
        """The key ring that seals personal fields (created on first start when it comes from
        the default file); with sealing off, an existing ring still opens what it sealed."""
        settings = self.config.personal_data
        source = KeyringSource(
            settings, self.config.nats.data_dir, crypto_profile(self.config.audit.crypto_profile)
        )
        if not settings.seal:
            log.warning(
                "sealing.off",
                message="personal_data.seal = false: personal fields are stored in clear",
            )
            if not settings.key_command and not source.path.exists():
                return SealingHolder(None, seal=False)
        try:
            keyring = await source.load(create=settings.seal)
        except SealingError as error:
            raise ConfigError(f"personal_data: {error}") from None
        self._keyring_source = source
        log.info("sealing.keys_loaded", where=source.where, keyring=keyring.describe())
        return SealingHolder(keyring, seal=settings.seal)

    async def _record_sealing_keys(
        self, previous: Keyring | None, loaded: Keyring | SealingError | None
    ) -> None:
        """Put a changed ring in force (or keep the one in force when the new one does not
        load) and record which, by key ids only."""
        assert self._deps is not None
        where = self._keyring_source.where if self._keyring_source else ""
        if loaded is None:
            return  # sealing off and no ring to open with: no keys to record
        if isinstance(loaded, SealingError):
            log.error("sealing.keys_refused", reason=str(loaded))
            outcome, reason = audit_pb2.AUDIT_OUTCOME_INVALID, f"refused: {loaded}"
        else:
            self._deps.sealing.keyring = loaded
            change = "loaded" if previous is None else f"changed (was {previous.describe()})"
            log.info("sealing.keys_in_force", keyring=loaded.describe(), change=change)
            outcome = audit_pb2.AUDIT_OUTCOME_OK
            reason = f"{change}: {loaded.describe()}; from {where}"
            if not self._deps.sealing.seal:
                reason += "; sealing off (personal_data.seal = false): opens only"
        entry = gateway_entry(audit_pb2.AUDIT_ACTION_SEALING_KEYS, outcome, reason=reason)
        await self._deps.sink.record_best_effort([entry])

    async def _watch_revocations(self, keeper: RevocationKeeper) -> None:
        """Look at the CRL now and then (calls look too), and audit every change, the load at
        start-up included. A change that cannot be recorded now is tried again next time."""
        assert self._deps is not None
        pending: list[RevocationChange] = []
        while True:
            keeper.refresh()
            pending += keeper.take_changes()
            if pending:
                try:
                    await self._deps.sink.record([revocation_entry(c) for c in pending])
                    pending = []
                except AuditUnavailableError as error:
                    log.error("audit.unrecorded", action="revocation_list", reason=str(error))
            await asyncio.sleep(self.config.tls.crl_check_seconds)

    def _observe_loop_step(self, step: LoopStep, category: int, severity: int) -> None:
        category_name = incident_pb2.IncidentCategory.Name(
            incident_pb2.IncidentCategory.ValueType(category)
        )
        severity_name = incident_pb2.IncidentSeverity.Name(
            incident_pb2.IncidentSeverity.ValueType(severity)
        )
        self.metrics.loop_seconds.labels(
            step.step,
            step.agency,
            category_name.removeprefix("INCIDENT_CATEGORY_").lower(),
            severity_name.removeprefix("INCIDENT_SEVERITY_").lower(),
        ).observe(step.seconds)

    def _count_escalation(self, notice: event_pb2.Event) -> None:
        state = "resolved" if notice.type == "escalation.resolved" else "raised"
        self.metrics.escalations.labels(notice.escalation.deadline_id, state).inc()

    @property
    def tracker(self) -> Tracker | None:
        """The deadline tracker (None without lifecycles)."""
        return self._tracker

    @property
    def audit(self) -> AuditLog | None:
        return self._audit.log

    async def stop(self, grace: float | None = None) -> None:
        grace = self.config.gateway.shutdown_grace_seconds if grace is None else grace
        await self._health.enter_graceful_shutdown()
        if self._deps is not None:
            self._deps.stopping.set()
        await _cancel(self._policy_watch)
        await _cancel(self._crl_watch)
        await _cancel(self._keyring_watch)
        await _cancel(self._recovery)
        if self._expiry_timer is not None:
            await self._expiry_timer.stop()
        if self._tracker_feed is not None:
            await self._tracker_feed.stop()
        if self._tracker is not None:
            await self._tracker.stop()
        await self.board.stop()
        if self._server is not None:
            await self._server.stop(grace)
        if self._health_server is not None:  # NOT_SERVING there until the main port closed
            await self._health_server.stop(None)
        if self._audit.log is not None and self._deps is not None:
            with contextlib.suppress(AuditUnavailableError):
                # With the facts still waiting for an append (events stored meanwhile).
                await self._deps.sink.record([gateway_entry(audit_pb2.AUDIT_ACTION_GATEWAY_STOP)])
        await _cancel(self._checkpoints)  # signs a last checkpoint on the way out
        await _cancel(self._lease_keeper)
        if self._lease is not None and self._store is not None and self._store.connected:
            await self._lease.release()
        if self._store is not None:
            await self._store.close()
        await _cancel(self._embedded_watch)  # before the stop, which it would undo
        if self._embedded is not None:
            await self._embedded.stop()
        if self._metrics_http is not None:
            await self._metrics_http.cleanup()
        await asyncio.to_thread(self.tracing.shutdown)
        self._data_dir_lock.release()
        log.info("gateway.stopped")

    async def serve_until_signalled(self) -> None:
        """Serve until SIGTERM or SIGINT (or a `failure`), then shut down gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._failed.wait())}
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signum)
            log.info("gateway.stopping")

    async def __aenter__(self) -> Gateway:
        try:
            await self.start()
        except BaseException:
            await self.stop(grace=0)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
