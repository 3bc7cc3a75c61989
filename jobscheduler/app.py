"""The composition root: settings -> backend, registry, core service, gRPC server, ops sidecar."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import grpc

from jobscheduler import metrics
from jobscheduler.api.server import Health, build_server
from jobscheduler.api.tls import TLSConfigError, check_files, host_of, is_loopback, server_credentials
from jobscheduler.backends.kubernetes import (
    KubeApi,
    KubeConfigError,
    KubernetesBackend,
    LeaseElector,
    TokenReviewer,
    choose_config,
    connect,
)
from jobscheduler.backends.local import LocalBackend
from jobscheduler.config import Settings, lease_timing_problem
from jobscheduler.core.admission import AdmissionController, QueueBook, parse_queues
from jobscheduler.core.auth import (
    AllowAll,
    Authenticator,
    ClientCertificates,
    TokenFile,
    TokenFileError,
    parse_admins,
)
from jobscheduler.core.errors import JobSchedulerError, NotReady
from jobscheduler.core.fence import FencedBackend
from jobscheduler.core.index import JobIndex
from jobscheduler.core.limits import ImagePolicy, RateLimiter, StreamSlots, image_repository
from jobscheduler.core.manifests import JobDefaults
from jobscheduler.core.model import JobRecord
from jobscheduler.core.ports import JobBackend
from jobscheduler.core.retries import RetryController
from jobscheduler.core.service import JobService
from jobscheduler.jobtypes import builtin_registry
from jobscheduler.logs import get_logger
from jobscheduler.ops.http import OpsHTTPServer
from jobscheduler.ops.readiness import Readiness
from jobscheduler.version import version_info

log = get_logger("jobscheduler.app")
#: How long shutdown waits for the controllers to stop (a Lease release is bounded by 2 s).
_CONTROLLER_STOP_SECONDS = 3.0


class StartupError(Exception):
    """The service cannot start with this configuration (exit code 2)."""


def job_defaults(settings: Settings) -> JobDefaults:
    return JobDefaults(
        namespace=settings.k8s_namespace,
        cpu_request=settings.default_cpu_request,
        memory_request=settings.default_memory_request,
        cpu_limit=settings.default_cpu_limit,
        memory_limit=settings.default_memory_limit,
        backoff_limit=settings.default_backoff_limit,
        deadline_grace_seconds=settings.deadline_grace_seconds,
        ttl_seconds_after_finished=settings.retention_seconds,
    )


async def build_backend(settings: Settings) -> JobBackend:
    """The backend BACKEND asks for; ``auto`` takes Kubernetes when it is configured, else local."""
    choice = settings.backend
    if choice == "local":
        return await _local_backend(settings, "BACKEND=local")
    try:
        source = choose_config(in_cluster=settings.in_cluster, kubeconfig=settings.kubeconfig)
    except KubeConfigError as exc:
        if choice == "kubernetes" or settings.kubeconfig:
            # Asked for explicitly (BACKEND or a KUBECONFIG naming a file): never fall back silently.
            raise StartupError(str(exc)) from None
        return await _local_backend(settings, "no in-cluster config and no kubeconfig file")
    try:
        api = await connect(
            source,
            request_timeout=settings.kube_api_timeout_seconds,
            write_qps=settings.kube_api_qps,
            write_burst=settings.kube_api_burst,
        )
    except KubeConfigError as exc:
        raise StartupError(str(exc)) from None
    log.info(
        "backend chosen",
        backend="kubernetes",
        why=f"BACKEND={choice}; {source.describe()}",
        api_server=api.host,
        namespace=settings.k8s_namespace,
    )
    return KubernetesBackend(api, settings.k8s_namespace)


async def _local_backend(settings: Settings, why: str) -> JobBackend:
    data = settings.data_path
    try:
        backend = await LocalBackend.open(
            data,
            settings.k8s_namespace,
            max_parallel=settings.local_max_parallel,
            kill_grace_seconds=settings.local_kill_grace_seconds,
            backoff_seconds=settings.local_backoff_seconds,
        )
    except OSError as exc:
        raise StartupError(f"DATA_DIR: cannot use {data}: {exc}") from None
    except Exception as exc:  # e.g. sqlite3.DatabaseError for a file that is not a database
        raise StartupError(f"DATA_DIR: cannot open the state in {data}: {exc}") from None
    log.info(
        "backend chosen",
        backend="local",
        why=why,
        data_dir=str(data),
        max_parallel=settings.local_max_parallel,
        note="jobs run as local processes; images are not pulled",
    )
    return backend


def image_policy(settings: Settings) -> ImagePolicy:
    """ALLOWED_IMAGES, or by default only other tags of TIMER_IMAGE's repository."""
    prefixes = tuple(p.strip() for p in settings.allowed_images.split(",") if p.strip())
    return ImagePolicy(prefixes or (image_repository(settings.timer_image),))


def rate_limiter(settings: Settings) -> RateLimiter:
    return RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst)


async def build_authenticator(settings: Settings, backend: JobBackend) -> Authenticator:
    """The AUTH_MODE's authenticator; StartupError when its configuration is incomplete."""
    mode = settings.auth_mode
    admins = parse_admins(settings.auth_admins)
    if mode == "none":
        host = settings.grpc_listen_host
        if not is_loopback(host) and not settings.allow_insecure:
            raise StartupError(
                f"AUTH_MODE=none on GRPC_HOST={host}: an unauthenticated server may only listen on"
                " loopback; set AUTH_MODE (token, kubernetes, mtls) or ALLOW_INSECURE=true"
            )
        return AllowAll()
    if mode == "token":
        if not settings.auth_token_file:
            raise StartupError("AUTH_MODE=token needs AUTH_TOKEN_FILE")
        try:
            tokens = TokenFile(
                settings.auth_token_file,
                on_reload=lambda count: log.info("token file reloaded", tokens=count),
                on_reload_error=lambda error: log.error(
                    "token file not reloaded; the previous tokens stay in force", error=error
                ),
            )
        except TokenFileError as exc:
            raise StartupError(f"AUTH_TOKEN_FILE: {exc}") from None
        if not tokens.count:
            log.warning("the token file lists no tokens: every call will be UNAUTHENTICATED")
        return tokens
    if mode == "mtls":
        if not settings.tls_client_ca_file:
            raise StartupError("AUTH_MODE=mtls needs TLS_CLIENT_CA_FILE (and TLS_CERT_FILE, TLS_KEY_FILE)")
        return ClientCertificates(admins)
    # kubernetes: TokenReview through the same API connection as the backend, or a new one.
    owns_api = not isinstance(backend, KubernetesBackend)
    if isinstance(backend, KubernetesBackend):
        api: KubeApi = backend.api
    else:
        try:
            source = choose_config(in_cluster=settings.in_cluster, kubeconfig=settings.kubeconfig)
            api = await connect(source, request_timeout=settings.kube_api_timeout_seconds)
        except KubeConfigError as exc:
            raise StartupError(f"AUTH_MODE=kubernetes needs a Kubernetes API: {exc}") from None
    return TokenReviewer(
        api,
        audience=settings.auth_audience,
        admins=admins,
        cache_seconds=settings.auth_cache_seconds,
        owns_api=owns_api,
    )


class Controller(Protocol):
    async def run(self) -> None: ...


@dataclass(frozen=True, slots=True)
class LeaderOnly:
    """Runs ``lead`` only while this replica holds the Lease (cancelled as soon as it does not)."""

    elector: LeaseElector
    lead: Callable[[], Awaitable[None]]

    async def run(self) -> None:
        await self.elector.run(self.lead)


def lease_identity(settings: Settings) -> str:
    """This replica in the Lease: POD_NAME, else host, process and a random suffix (unique)."""
    return settings.pod_name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def build_controllers(
    settings: Settings, backend: JobBackend, index: JobIndex, book: QueueBook
) -> list[Controller]:
    """Job retries (every replica: idempotent) and the admission loop (one replica at a time:
    the Lease holder, with the Kubernetes backend and LEADER_ELECTION; the local backend is
    one process anyway)."""
    retries = RetryController(
        backend,
        index,
        # What ScheduleJob uses: a retry is rendered from the stored request and checked again.
        registry=builtin_registry(timer_image=settings.timer_image),
        defaults=job_defaults(settings),
        images=image_policy(settings),
        on_refused=lambda record, why: log.warning(
            "failed job not retried: its stored request is missing or invalid", job_id=record.job_id, why=why
        ),
        on_error=lambda job_id, exc: log.warning("retry not created yet", job_id=job_id, error=exc.message),
        on_retry=lambda record: log.info(
            "job retried", job_id=record.job_id, retry_of=record.retry_of, retry_number=record.retry_number
        ),
    )

    def admitted(record: JobRecord, latency: float) -> None:
        metrics.ADMISSIONS.labels(record.queue).inc()
        metrics.ADMISSION_LATENCY_SECONDS.labels(record.queue).observe(latency)

    def admission(writer: JobBackend) -> AdmissionController:
        return AdmissionController(
            writer,
            index,
            book,
            on_admitted=admitted,
            on_error=lambda job_id, exc: log.warning(
                "admission write failed", job_id=job_id, error=exc.message
            ),
        )

    if not (isinstance(backend, KubernetesBackend) and settings.leader_election):
        metrics.LEADER.set(1)
        return [retries, admission(backend)]
    if (problem := lease_timing_problem(settings)) is not None:
        raise StartupError(problem)
    elector = LeaseElector(
        backend.api,
        namespace=settings.k8s_namespace,
        name=settings.lease_name,
        identity=lease_identity(settings),
        lease_duration=settings.lease_duration_seconds,
        renew_deadline=settings.lease_renew_deadline_seconds,
        retry_period=settings.lease_retry_period_seconds,
        on_change=lambda leading: metrics.LEADER.set(1 if leading else 0),
    )
    # Each admission write first checks that this replica still leads (see LeaseElector.leading).
    fenced = FencedBackend(backend, lambda: elector.leading)
    return [retries, LeaderOnly(elector, admission(fenced).run)]


def build_index(settings: Settings) -> JobIndex:
    index = JobIndex(
        retention=timedelta(seconds=settings.watch_retention_seconds),
        max_events=settings.watch_max_events,
        stream_buffer=settings.stream_buffer,
    )
    metrics.CACHE_JOBS.set_function(lambda: len(index))
    return index


async def check_backend(backend: JobBackend, health: Health, readiness: Readiness, index: JobIndex) -> bool:
    """Ready while the backend answers and the index has synced once."""
    try:
        await backend.ping()
        if not index.synced:
            raise NotReady("jobs not synced from the backend yet")
    except JobSchedulerError as exc:
        if readiness.get().ready or readiness.get().reason == "starting":
            log.warning("backend not reachable", backend=backend.name, error=exc.message)
        readiness.set(False, f"{backend.name} backend: {exc.message}")
        await health.set_serving(False)
        metrics.BACKEND_UP.labels(backend.name).set(0)
        return False
    if not readiness.get().ready:
        log.info("backend reachable", backend=backend.name)
    readiness.set(True, "serving")
    await health.set_serving(True)
    metrics.BACKEND_UP.labels(backend.name).set(1)
    return True


def check_transport(settings: Settings, address: str | None = None) -> None:
    """StartupError unless the TLS_* settings are complete and their files usable, or, for
    plaintext, the gRPC address is loopback (or ALLOW_INSECURE=true)."""
    if settings.tls_key_file and not settings.tls_cert_file:
        raise StartupError("TLS_KEY_FILE is set but TLS_CERT_FILE is not: set both for TLS")
    if settings.tls_client_ca_file and not settings.tls_cert_file:
        raise StartupError("TLS_CLIENT_CA_FILE (mTLS) requires TLS_CERT_FILE and TLS_KEY_FILE")
    if settings.tls_cert_file and not settings.tls_key_file:
        raise StartupError("TLS_CERT_FILE requires TLS_KEY_FILE")
    if settings.tls_enabled:
        try:
            check_files(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
        except TLSConfigError as exc:
            raise StartupError(str(exc)) from None
        return
    host = settings.grpc_listen_host if address is None else host_of(address)
    if not is_loopback(host) and not settings.allow_insecure:
        raise StartupError(
            f"GRPC_HOST={host}: plaintext gRPC on a non-loopback address needs"
            " TLS_CERT_FILE/TLS_KEY_FILE or ALLOW_INSECURE=true"
        )


def listen(server: grpc.aio.Server, settings: Settings, address: str | None = None) -> int:
    """Bind the gRPC port (``address`` overrides GRPC_HOST:GRPC_PORT); returns the bound port.
    TLS (mTLS with TLS_CLIENT_CA_FILE) when TLS_CERT_FILE is set, certificates re-read on change.

    Raises ``StartupError`` for unusable transport settings (``check_transport``) and
    ``RuntimeError`` when the port cannot be bound.
    """
    if address is None:
        address = f"{settings.grpc_listen_host}:{settings.grpc_port}"
    check_transport(settings, address)
    if not settings.tls_enabled:
        return server.add_insecure_port(address)
    try:
        credentials = server_credentials(
            settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
        )
    except TLSConfigError as exc:
        raise StartupError(str(exc)) from None
    return server.add_secure_port(address, credentials)


@dataclass(frozen=True, slots=True)
class Assembly:
    """What runs on top of a started backend and its index."""

    service: JobService
    authenticator: Authenticator
    #: Every service added, no port bound yet (``listen``, then ``start``).
    server: grpc.aio.Server
    #: To ``run`` as tasks once the server is up.
    controllers: list[Controller]
    queues: QueueBook


async def assemble(settings: Settings, backend: JobBackend, index: JobIndex, health: Health) -> Assembly:
    """The core service, its gRPC server and its controllers, as settings say (``serve`` and the
    tests' in-process server both start here); StartupError when AUTH_MODE cannot be set up."""
    authenticator = await build_authenticator(settings, backend)
    registry = builtin_registry(timer_image=settings.timer_image)
    book = QueueBook(index, parse_queues(settings.queues))
    metrics.QUEUES.bind(book.status, asyncio.get_running_loop())  # scrapes read it on this loop
    service = JobService(
        backend,
        registry,
        job_defaults(settings),
        index,
        images=image_policy(settings),
        queues=book,
        on_created=metrics.count_scheduled,
        on_cancelled=metrics.count_cancelled,
    )
    server = build_server(
        service,
        health,
        max_message_bytes=settings.max_message_bytes,
        authenticator=authenticator,
        limiter=rate_limiter(settings),
        streams=StreamSlots(settings.max_streams_per_caller, settings.max_streams),
        auth_failures=RateLimiter(settings.auth_failure_rps, settings.auth_failure_burst),
    )
    controllers = build_controllers(settings, backend, index, book)
    return Assembly(service, authenticator, server, controllers, book)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT, then drain in-flight RPCs within SHUTDOWN_GRACE_SECONDS."""
    check_transport(settings)  # before the backend starts
    info = version_info()
    metrics.BUILD_INFO.labels(info.version, info.git_commit, info.python_version).set(1)
    backend = await build_backend(settings)
    index = build_index(settings)
    await backend.start(index)
    readiness = Readiness()
    health = Health()
    await health.set_serving(False)
    try:
        parts = await assemble(settings, backend, index, health)
    except StartupError:
        await backend.close()
        raise
    server, authenticator = parts.server, parts.authenticator
    try:
        ops = OpsHTTPServer(settings.health_listen_host, settings.health_port, readiness)
    except OSError as exc:
        await backend.close()
        raise StartupError(f"HEALTH_PORT: cannot listen on {settings.health_port}: {exc}") from None
    try:
        grpc_port = listen(server, settings)
    except (RuntimeError, StartupError) as exc:
        ops.server_close()
        await backend.close()
        if isinstance(exc, StartupError):
            raise
        raise StartupError(f"GRPC_PORT: cannot listen on {settings.grpc_port}: {exc}") from None
    ops.start()
    await server.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    await index.wait_synced(within=min(5.0, settings.readiness_interval_seconds))
    await check_backend(backend, health, readiness, index)
    log.info(
        "serving",
        grpc_port=grpc_port,
        health_port=ops.port,
        health_host=settings.health_listen_host,
        version=info.version,
        plaintext=not settings.tls_enabled,
        mtls=bool(settings.tls_client_ca_file),
        auth=authenticator.mode,
        grpc_host=settings.grpc_listen_host,
        namespace=settings.k8s_namespace,
    )
    if not settings.tls_enabled:
        log.warning(
            "gRPC is plaintext: for loopback development only; set TLS_CERT_FILE and TLS_KEY_FILE",
            grpc_host=settings.grpc_listen_host,
        )

    async def watch_backend() -> None:
        while True:
            await asyncio.sleep(settings.readiness_interval_seconds)
            await check_backend(backend, health, readiness, index)

    checker = asyncio.create_task(watch_backend())
    controllers = [
        asyncio.create_task(controller.run(), name=type(controller).__name__)
        for controller in parts.controllers
    ]
    try:
        await stop.wait()
    finally:
        log.info("shutting down", grace_seconds=settings.shutdown_grace_seconds)
        checker.cancel()
        for task in controllers:
            task.cancel()
        # Briefly: the admission loop hands its Lease back (see LeaseElector) before the API
        # client closes, so another replica admits at once rather than after the Lease expires.
        if controllers:
            await asyncio.wait(controllers, timeout=_CONTROLLER_STOP_SECONDS)
        readiness.set(False, "shutting down")
        await health.shutdown()
        await server.stop(settings.shutdown_grace_seconds)
        await authenticator.close()
        await backend.close()
        ops.stop()
        log.info("stopped")
