"""Assembles and runs one gateway: gRPC server, health, reflection, JetStream, embedded NATS.

Start-up order: connect to NATS and ensure the streams, then serve; health says NOT_SERVING
until both are done and again whenever NATS is disconnected. Shutdown order: health to
NOT_SERVING, stop accepting calls and let in-flight ones finish within the grace period, drain
NATS, stop the embedded server.

With `[gateway] health_listen` a second, plaintext server answers grpc.health.v1 there and
nothing else, from the same HealthServicer: orchestrator probes (Kubernetes' gRPC probes) cannot
present the client certificate the main port requires.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import grpc
import structlog
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dutylink.v1 import (
    audit_pb2,
    audit_service_pb2,
    audit_service_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
)
from gateway.audit.commitments import load_or_create_key
from gateway.audit.entries import gateway_entry, schema_version
from gateway.audit.log import AuditLog, AuditUnavailableError, load_or_create_signer
from gateway.audit_rpc import AuditServicer, CheckpointServicer
from gateway.auth import Authenticator, CertificateAuthenticator, TokenAuthenticator
from gateway.authorization import Authorizer, GrantBook, PolicyChange, PolicyHolder
from gateway.config import Config, ConfigError
from gateway.jetstream import EventStore, split_servers
from gateway.metrics import GatewayMetrics, MetricsInterceptor, metrics_route, serve_http
from gateway.nats_server import NatsServer, embedded_dir
from gateway.rpc import DecodeGuard
from gateway.service import (
    AuditHolder,
    BreakGlass,
    Dependencies,
    Failpoint,
    Publisher,
    Subscriber,
    no_failpoint,
)
from gateway.validation import ValidationLimits, Validator
from policies.loader import SAMPLE_DIR
from policies.model import PolicyError

log = structlog.get_logger("dutylink.gateway")

SERVICE_NAMES = (
    *(
        gateway_pb2.DESCRIPTOR.services_by_name[name].full_name
        for name in ("PublisherService", "SubscriberService", "BreakGlassService")
    ),
    *(
        audit_service_pb2.DESCRIPTOR.services_by_name[name].full_name
        for name in ("AuditService", "CheckpointService")
    ),
)
REQUEST_OVERHEAD_BYTES = 64 * 1024
# Options of every gRPC server of the gateway. No SO_REUSEPORT: a second process on the same
# port must fail to bind, not silently share the port (and its calls) with this one.
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (("grpc.so_reuseport", 0),)


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
        self, config: Config, *, nats_url: str | None = None, failpoint: Failpoint = no_failpoint
    ) -> None:
        self.config = config
        self._failpoint = failpoint
        self._deps: Dependencies | None = None
        self.metrics = GatewayMetrics()
        self._metrics_http: web.AppRunner | None = None
        self.metrics_port = 0
        self._nats_url = nats_url if nats_url is not None else config.nats.url
        self._embedded: NatsServer | None = None
        self._store: EventStore | None = None
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self.health_port = 0
        self._policy_watch: asyncio.Task[None] | None = None
        self._checkpoints: asyncio.Task[None] | None = None
        self._audit = AuditHolder()
        self._health = health.aio.HealthServicer()
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

    async def _on_nats_disconnected(self) -> None:
        log.warning("nats.disconnected")
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def _on_nats_reconnected(self) -> None:
        log.info("nats.reconnected")
        if self._store is not None:
            await self._store.ensure_streams()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)

    def _security(self) -> tuple[Authenticator, grpc.ServerCredentials | None]:
        """mTLS when [tls] is configured, else bearer tokens on plaintext (development)."""
        tls = self.config.tls
        if tls.enabled:
            ca_pem = _read(tls.ca_file, "tls.ca_file")
            credentials = grpc.ssl_server_credentials(
                [(_read(tls.key_file, "tls.key_file"), _read(tls.cert_file, "tls.cert_file"))],
                root_certificates=ca_pem,
                require_client_auth=True,
            )
            crl = Path(tls.crl_file) if tls.crl_file else None
            log.info("auth.mtls", ca=tls.ca_file, crl=tls.crl_file or None)
            return CertificateAuthenticator(self.config.agencies, ca_pem, crl), credentials
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

    async def start(self) -> None:
        authenticator, credentials = self._security()
        policy = self._policy()
        grants = GrantBook()
        if not self._nats_url:
            self._embedded = NatsServer(embedded_dir(self.config.nats.data_dir))
            self._nats_url = await self._embedded.start()
        gateway_settings = self.config.gateway
        max_request = (
            max(gateway_settings.max_message_bytes * 4, 4 * 1024 * 1024) + REQUEST_OVERHEAD_BYTES
        )
        self._server = grpc.aio.server(
            # Metrics outermost, so that they count the guard's refusals too.
            interceptors=[
                MetricsInterceptor(self.metrics),
                DecodeGuard(authenticator, self._record_best_effort),
            ],
            maximum_concurrent_rpcs=gateway_settings.max_concurrent_rpcs,
            options=[
                *SERVER_OPTIONS,
                ("grpc.max_receive_message_length", max_request),
                (
                    "grpc.max_send_message_length",
                    gateway_settings.max_message_bytes + REQUEST_OVERHEAD_BYTES,
                ),
            ],
        )
        self._store = EventStore(
            self.config,
            on_disconnected=self._on_nats_disconnected,
            on_reconnected=self._on_nats_reconnected,
        )
        self._deps = deps = Dependencies(
            self.config,
            self._store,
            authenticator,
            Validator(ValidationLimits.of(gateway_settings)),
            Authorizer(policy, grants),
            self._audit,
            failpoint=self._failpoint,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        gateway_pb2_grpc.add_PublisherServiceServicer_to_server(Publisher(deps), self._server)
        gateway_pb2_grpc.add_SubscriberServiceServicer_to_server(Subscriber(deps), self._server)
        gateway_pb2_grpc.add_BreakGlassServiceServicer_to_server(
            BreakGlass(deps, grants), self._server
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
        await self._store.check_durability()
        if self.config.audit.enabled:
            await self._start_audit(policy.version)
        await self._store.follow_grants(
            lambda data: grants.add(gateway_pb2.EmergencyGrant.FromString(data))
        )
        self._policy_watch = asyncio.create_task(
            policy.watch(self.config.policy.reload_seconds, self._record_policy_change)
        )
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "gateway.started",
            address=self.address,
            nats=",".join(split_servers(self._nats_url)[0]),  # never the password
            embedded=self._embedded is not None,
        )

    async def _serve_health(self, listen: str) -> None:
        """The health-only server: plaintext, no reflection, no metrics, the same servicer (so
        it says what the main port's health says)."""
        server = grpc.aio.server(options=SERVER_OPTIONS)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        self.health_port = _bind(server, listen, "gateway.health_listen")
        await server.start()
        self._health_server = server
        log.info("health.listening", address=self.health_address, services="grpc.health.v1")

    async def _start_audit(self, policy_version: str) -> None:
        settings, gateway_id = self.config.audit, self.config.gateway.gateway_id
        audit_dir = Path(self.config.nats.data_dir) / "audit"
        key_file = Path(settings.key_file) if settings.key_file else audit_dir / f"{gateway_id}.key"
        self._audit.commitment_key = load_or_create_key(
            Path(settings.commitment_key_file)
            if settings.commitment_key_file
            else audit_dir / "commitment.key"
        )
        signer = load_or_create_signer(key_file, f"dutylink/audit/{gateway_id}")
        assert self._store is not None
        audit = AuditLog(
            self._store,
            gateway_id,
            signer,
            origin=signer.name,
            replicas=self.config.nats.stream_replicas,
        )
        await audit.start()
        await audit.append(
            [
                gateway_entry(
                    audit_pb2.AUDIT_ACTION_GATEWAY_START,
                    policy_version=policy_version,
                    schema_version=schema_version(),
                )
            ]
        )
        self._audit.log = audit
        self.metrics.audit_size.set_function(lambda: audit.size)
        self.metrics.checkpoint_size.set_function(lambda: audit.signed_size)
        self._checkpoints = asyncio.create_task(audit.run_checkpoints(settings.checkpoint_seconds))

    async def _record_policy_change(self, change: PolicyChange) -> None:
        if self._audit.log is None:
            return
        entry = gateway_entry(
            audit_pb2.AUDIT_ACTION_POLICY_RELOAD,
            audit_pb2.AUDIT_OUTCOME_INVALID if change.refused else audit_pb2.AUDIT_OUTCOME_OK,
            policy_version=change.in_force,
            reason=change.refused,
        )
        try:
            await self._audit.log.append([entry])
        except AuditUnavailableError as error:
            # The policy is in force either way (the files changed); the log says so later:
            # every decision entry carries its policy version.
            log.error("audit.unrecorded", action="policy_reload", reason=str(error))

    async def _record_best_effort(self, entries: Sequence[audit_pb2.AuditEntry]) -> None:
        if self._deps is not None:
            await self._deps.record_best_effort(entries)

    @property
    def audit(self) -> AuditLog | None:
        return self._audit.log

    async def stop(self, grace: float | None = None) -> None:
        grace = self.config.gateway.shutdown_grace_seconds if grace is None else grace
        await self._health.enter_graceful_shutdown()
        if self._deps is not None:
            self._deps.stopping.set()
        await _cancel(self._policy_watch)
        if self._server is not None:
            await self._server.stop(grace)
        if self._health_server is not None:  # NOT_SERVING there until the main port closed
            await self._health_server.stop(None)
        if (audit := self._audit.log) is not None:
            with contextlib.suppress(AuditUnavailableError):
                await audit.append([gateway_entry(audit_pb2.AUDIT_ACTION_GATEWAY_STOP)])
        await _cancel(self._checkpoints)  # signs a last checkpoint on the way out
        if self._store is not None:
            await self._store.close()
        if self._embedded is not None:
            await self._embedded.stop()
        if self._metrics_http is not None:
            await self._metrics_http.cleanup()
        log.info("gateway.stopped")

    async def serve_until_signalled(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
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
