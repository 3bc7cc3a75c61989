"""Building the parts from the settings: job defaults, the backend, the index, the authenticator, policies."""

from __future__ import annotations

import pathlib
from datetime import timedelta

from jobscheduler import metrics
from jobscheduler.api.tls import is_loopback
from jobscheduler.app._errors import StartupError
from jobscheduler.backends.kubernetes import (
    KubeApi,
    KubeConfigError,
    KubernetesBackend,
    TokenReviewer,
    choose_config,
    connect,
)
from jobscheduler.backends.local import LocalBackend
from jobscheduler.config import Settings
from jobscheduler.core.auth import (
    AllowAll,
    Authenticator,
    ClientCertificates,
    TokenFile,
    TokenFileError,
    parse_admins,
)
from jobscheduler.core.index import JobIndex
from jobscheduler.core.limits import ImagePolicy, RateLimiter, image_repository
from jobscheduler.core.manifests import JobDefaults
from jobscheduler.core.ports import JobBackend
from jobscheduler.core.registry import HandlerRegistry
from jobscheduler.jobtypes import builtin_registry
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.app")


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
            secrets_dir=pathlib.Path(settings.local_secrets_dir) if settings.local_secrets_dir else None,
            allow_commands=(
                settings.local_allow_commands
                if settings.local_allow_commands is not None
                else settings.auth_mode == "none"
            ),
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


def builtin_types(settings: Settings) -> HandlerRegistry:
    """The built-in job types, configured (TIMER_IMAGE; MAX_CPU_LIMIT, MAX_MEMORY_LIMIT)."""
    return builtin_registry(
        timer_image=settings.timer_image,
        max_cpu_limit=settings.max_cpu_limit,
        max_memory_limit=settings.max_memory_limit,
    )


def image_policy(settings: Settings) -> ImagePolicy:
    """ALLOWED_IMAGES, or by default only other tags of TIMER_IMAGE's repository; ALLOWED_SECRETS."""
    prefixes = tuple(p.strip() for p in settings.allowed_images.split(",") if p.strip())
    secrets = frozenset(s.strip() for s in settings.allowed_secrets.split(",") if s.strip())
    return ImagePolicy(prefixes or (image_repository(settings.timer_image),), secrets)


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


def build_index(settings: Settings) -> JobIndex:
    index = JobIndex(
        retention=timedelta(seconds=settings.watch_retention_seconds),
        max_events=settings.watch_max_events,
        stream_buffer=settings.stream_buffer,
    )
    metrics.CACHE_JOBS.set_function(lambda: len(index))
    return index
