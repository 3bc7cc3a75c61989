"""The composition root: settings -> backend, registry, core service, gRPC server, ops sidecar.

``_build`` makes the parts from the settings, ``_controllers`` the background loops; this
module checks the transport, assembles the service and runs it (``serve``).
"""

from __future__ import annotations

import asyncio
import gc
import signal
from dataclasses import dataclass

import grpc

from jobscheduler import metrics, tracing
from jobscheduler.api.server import Health, build_server
from jobscheduler.api.tls import TLSConfigError, check_files, host_of, is_loopback, server_credentials
from jobscheduler.app._build import (
    build_authenticator,
    build_backend,
    build_index,
    builtin_types,
    image_policy,
    job_defaults,
    rate_limiter,
)
from jobscheduler.app._controllers import Controller, LeaderOnly, build_controllers, lease_identity
from jobscheduler.app._errors import StartupError
from jobscheduler.app._schedules import build_schedules
from jobscheduler.config import Settings
from jobscheduler.core.admission import QueueBook, parse_queues
from jobscheduler.core.auth import Authenticator
from jobscheduler.core.errors import JobSchedulerError, NotReady
from jobscheduler.core.index import JobIndex
from jobscheduler.core.limits import RateLimiter, StreamSlots
from jobscheduler.core.ports import JobBackend
from jobscheduler.core.service import JobService
from jobscheduler.jobtypes import PluginError, load_plugins
from jobscheduler.logs import get_logger
from jobscheduler.ops.http import OpsHTTPServer
from jobscheduler.ops.readiness import Readiness
from jobscheduler.version import version_info

log = get_logger("jobscheduler.app")
#: How long shutdown waits for the controllers to stop (a Lease release is bounded by 2 s).
_CONTROLLER_STOP_SECONDS = 3.0


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
    registry = builtin_types(settings)
    try:
        load_plugins(registry)  # each logged as it is loaded
    except PluginError as exc:
        raise StartupError(str(exc)) from None
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
        templates=getattr(backend, "templates", None),  # (both backends keep them)
    )
    schedules, schedule_loops = build_schedules(settings, backend, service)
    server = build_server(
        service,
        health,
        max_message_bytes=settings.max_message_bytes,
        authenticator=authenticator,
        limiter=rate_limiter(settings),
        streams=StreamSlots(settings.max_streams_per_caller, settings.max_streams),
        auth_failures=RateLimiter(settings.auth_failure_rps, settings.auth_failure_burst),
        schedules=schedules,
    )
    controllers: list[Controller] = [*build_controllers(settings, backend, index, book, registry)]
    controllers.extend(schedule_loops)
    return Assembly(service, authenticator, server, controllers, book)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT, then drain in-flight RPCs within SHUTDOWN_GRACE_SECONDS."""
    check_transport(settings)  # before the backend starts
    try:
        tracing.configure_from_env()  # OTEL_*: before the server is built (its interceptor)
    except tracing.TracingConfigError as exc:
        raise StartupError(str(exc)) from None
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
        frozen = False
        while True:
            if index.synced and not frozen:
                # What exists once the cache has synced (the imports, the first list's records)
                # mostly lives as long as the process: left out of the cyclic collector's full
                # collections from now on (150 ms each with 100,000 cached jobs, every so often).
                frozen = True
                gc.freeze()
            if index.synced:
                await asyncio.sleep(settings.readiness_interval_seconds)
            else:  # ready as soon as the first sync ends (a long list at a restart), not a period later
                await index.wait_synced(settings.readiness_interval_seconds)
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
        tracing.shutdown()  # the spans still queued are exported
        log.info("stopped")


__all__ = [
    "Assembly",
    "Controller",
    "LeaderOnly",
    "StartupError",
    "assemble",
    "build_authenticator",
    "build_backend",
    "build_controllers",
    "build_index",
    "check_backend",
    "check_transport",
    "image_policy",
    "job_defaults",
    "lease_identity",
    "listen",
    "rate_limiter",
    "serve",
]
