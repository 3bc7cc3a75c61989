"""Settings from the environment (pydantic-settings), with the reference README's names and defaults."""

from __future__ import annotations

import os
import pathlib
import re
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobscheduler.core.admission import parse_queues
from jobscheduler.core.quantity import parse_quantity
from jobscheduler.logs import LEVELS
from jobscheduler.version import default_image

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
Port = Annotated[int, Field(ge=0, le=65535)]


class Settings(BaseSettings):
    """Every setting, read from environment variables of the same name (upper case)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    grpc_port: Port = 50054
    #: Where gRPC listens. Empty: loopback, unless TLS and authentication are both on (or
    #: ALLOW_INSECURE=true): a plaintext or unauthenticated server stays on this machine.
    grpc_host: str = ""
    health_port: Port = 8080
    #: Where /healthz, /readyz and /metrics listen; empty: all interfaces in a pod (the probes
    #: come from the node), loopback elsewhere.
    health_host: str = ""
    #: Set by Kubernetes in every pod; with IN_CLUSTER=true it tells the ops port it is in one.
    kubernetes_service_host: str = ""
    k8s_namespace: str = "default"
    in_cluster: bool = True
    kubeconfig: str | None = None
    log_level: str = "info"
    #: Image of timer jobs: this project's own image at this build's version (one image, one
    #: tag: jobscheduler.version.default_image), which contains the timer program.
    timer_image: str = Field(default_factory=default_image)
    default_cpu_request: str = "100m"
    default_memory_request: str = "64Mi"
    default_cpu_limit: str = "500m"
    default_memory_limit: str = "128Mi"
    default_backoff_limit: Annotated[int, Field(ge=0, le=100)] = 3
    #: Seconds added to a job's own duration for its activeDeadlineSeconds.
    deadline_grace_seconds: Annotated[int, Field(ge=1, le=86400)] = 60
    #: How long finished Jobs stay (ttlSecondsAfterFinished): seconds or 1d2h3m4s; 0 keeps them.
    history_retention: str = "24h"
    kube_api_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0
    #: Client-side limit on Kubernetes API writes (create, patch, ...): sustained writes per
    #: second and burst; a burst of submits waits inside the service instead of overloading
    #: the API server (as client-go's QPS/Burst). 0 disables the limit.
    kube_api_qps: Annotated[float, Field(ge=0, le=100_000)] = 50.0
    kube_api_burst: Annotated[int, Field(ge=1, le=100_000)] = 100
    #: The largest request accepted. The largest valid request is well under 256 KiB, and every
    #: byte of a larger one is decoded before anything can refuse it (answers may be larger).
    max_message_bytes: Annotated[int, Field(ge=1024, le=4 * 1024 * 1024)] = 256 * 1024
    shutdown_grace_seconds: Annotated[float, Field(ge=0, le=300)] = 10.0
    #: How often readiness re-checks that the backend is reachable.
    readiness_interval_seconds: Annotated[float, Field(gt=0, le=300)] = 5.0
    #: How long WatchJobs can resume from a token (events are also capped at WATCH_MAX_EVENTS).
    watch_retention_seconds: Annotated[int, Field(ge=1, le=86400)] = 900
    watch_max_events: Annotated[int, Field(ge=100, le=10_000_000)] = 100_000
    #: Changes a stream may fall behind before it is ended with OUT_OF_RANGE (and a resume token).
    stream_buffer: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    #: auto: Kubernetes when in-cluster config or a kubeconfig is present, else local processes.
    backend: Literal["auto", "kubernetes", "local"] = "auto"
    #: Where the local backend keeps its SQLite state, job working directories and logs.
    data_dir: str = ""
    local_max_parallel: Annotated[int, Field(ge=1, le=1024)] = 4
    #: A schedule may not fire more often than this (seconds between two runs, over its next 200).
    min_schedule_interval: Annotated[int, Field(ge=1, le=86400)] = 60
    local_kill_grace_seconds: Annotated[float, Field(ge=0, le=300)] = 10.0
    local_backoff_seconds: Annotated[float, Field(ge=0, le=3600)] = 1.0
    #: Where the local backend reads a job's secretKeyRef env: LOCAL_SECRETS_DIR/<name>/<key>
    #: (empty: DATA_DIR/secrets).
    local_secrets_dir: str = ""
    #: Whether the local backend runs container jobs' commands on this machine (empty: only
    #: with AUTH_MODE=none, a single local user; they run as the service's own user).
    local_allow_commands: bool | None = None
    #: The most CPU and memory one job's container may request or be limited to (container jobs).
    max_cpu_limit: str = "4"
    max_memory_limit: str = "8Gi"

    # --- admission --------------------------------------------------------------------------
    #: Admission queues: comma-separated ``name=max_running`` (0: no limit), e.g.
    #: ``batch=4,reports=1``; ``default`` (no limit unless listed) always exists.
    queues: str = ""
    #: With the Kubernetes backend, admit only on the replica holding the Lease LEASE_NAME.
    #: Turn off only when exactly one replica runs.
    leader_election: bool = True
    lease_name: str = "jobscheduler"
    #: LEASE_DURATION_SECONDS - LEASE_RENEW_DEADLINE_SECONDS must exceed KUBE_API_TIMEOUT_SECONDS
    #: (``lease_timing_problem``): a leader's last write lands before another may take over.
    lease_duration_seconds: Annotated[float, Field(ge=2, le=600)] = 20.0
    lease_renew_deadline_seconds: Annotated[float, Field(ge=1.5, le=600)] = 8.0
    lease_retry_period_seconds: Annotated[float, Field(ge=1, le=600)] = 2.0
    #: This replica's identity in the Lease (the pod name, from the downward API); empty:
    #: hostname and process id.
    pod_name: str = ""

    # --- security -------------------------------------------------------------------------
    #: none | token (AUTH_TOKEN_FILE) | kubernetes (TokenReview) | mtls (client certificate).
    auth_mode: Literal["none", "token", "kubernetes", "mtls"] = "none"
    #: Allow AUTH_MODE=none on a non-loopback GRPC_HOST (and plaintext beyond loopback).
    allow_insecure: bool = False
    #: token mode: CSV lines ``token,identity[,"role1,role2"]``; re-read when the file changes.
    auth_token_file: str = ""
    #: kubernetes mode: the audience callers' tokens must be issued for.
    auth_audience: str = "jobscheduler"
    #: kubernetes/mtls modes: identities or groups (comma-separated) that get the admin role.
    auth_admins: str = ""
    #: kubernetes mode: how long a successful TokenReview is trusted (seconds; 0: ask every time).
    auth_cache_seconds: Annotated[float, Field(ge=0, le=3600)] = 60.0
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: Require client certificates signed by this CA (mTLS).
    tls_client_ca_file: str = ""
    #: Per-request image overrides must start with one of these (comma-separated prefixes);
    #: empty: only TIMER_IMAGE's repository.
    allowed_images: str = ""
    #: Secrets of the namespace that jobs may read (env_from_secrets, headers_from_secrets),
    #: comma-separated; empty: none.
    allowed_secrets: str = ""
    #: Requests per second per caller identity (0: unlimited), with bursts up to RATE_LIMIT_BURST.
    rate_limit_rps: Annotated[float, Field(ge=0, le=1_000_000)] = 100.0
    rate_limit_burst: Annotated[int, Field(ge=1, le=1_000_000)] = 200
    #: Open streams (WatchJob, WatchJobs, GetJobLogs with follow) per caller identity, and in
    #: all; beyond them a new stream is RESOURCE_EXHAUSTED (0: no limit).
    max_streams_per_caller: Annotated[int, Field(ge=0, le=1_000_000)] = 50
    max_streams: Annotated[int, Field(ge=0, le=1_000_000)] = 1000
    #: Failed authentications per second per peer address (0: unlimited), with bursts up to
    #: AUTH_FAILURE_BURST; beyond, the peer's calls are RESOURCE_EXHAUSTED before authenticating.
    auth_failure_rps: Annotated[float, Field(ge=0, le=1_000_000)] = 1.0
    auth_failure_burst: Annotated[int, Field(ge=1, le=1_000_000)] = 20

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert_file)

    @property
    def grpc_listen_host(self) -> str:
        """GRPC_HOST, or its default: all interfaces only when that is safe (TLS and
        authentication) or explicitly allowed (ALLOW_INSECURE), else loopback only."""
        if self.grpc_host:
            return self.grpc_host
        if self.allow_insecure or (self.tls_enabled and self.auth_mode != "none"):
            return "0.0.0.0"
        return "127.0.0.1"

    @property
    def in_pod(self) -> bool:
        """Running in a pod: KUBERNETES_SERVICE_HOST is set, or IN_CLUSTER=true is set explicitly."""
        return bool(self.kubernetes_service_host) or (
            "in_cluster" in self.model_fields_set and self.in_cluster
        )

    @property
    def health_listen_host(self) -> str:
        """HEALTH_HOST, or its default: all interfaces in a pod (kubelet probes, Prometheus),
        loopback elsewhere (a laptop's metrics are nobody else's business)."""
        if self.health_host:
            return self.health_host
        return "0.0.0.0" if self.in_pod else "127.0.0.1"

    @property
    def data_path(self) -> pathlib.Path:
        if self.data_dir:
            return pathlib.Path(self.data_dir).expanduser()
        base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
        return pathlib.Path(base) / "jobscheduler"

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.lower() not in LEVELS:
            raise ValueError(f"must be one of trace, debug, info, warn, error (got {value!r})")
        return value.lower()

    @field_validator(
        "default_cpu_request",
        "default_memory_request",
        "default_cpu_limit",
        "default_memory_limit",
        "max_cpu_limit",
        "max_memory_limit",
    )
    @classmethod
    def _quantity(cls, value: str) -> str:
        parse_quantity(value)
        return value

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Settings:
        pairs = (
            ("DEFAULT_CPU_REQUEST", self.default_cpu_request, "DEFAULT_CPU_LIMIT", self.default_cpu_limit),
            (
                "DEFAULT_MEMORY_REQUEST",
                self.default_memory_request,
                "DEFAULT_MEMORY_LIMIT",
                self.default_memory_limit,
            ),
        )
        for req_var, request, lim_var, limit in pairs:
            if parse_quantity(request) > parse_quantity(limit):
                raise ValueError(
                    f"{req_var} ({request}) is above {lim_var} ({limit}): the API server would refuse"
                    " every Job; lower the request or raise the limit"
                )
        return self

    @field_validator("k8s_namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", value) or len(value) > 63:
            raise ValueError(f"must be a valid namespace name (got {value!r})")
        return value

    @field_validator("queues")
    @classmethod
    def _queues(cls, value: str) -> str:
        parse_queues(value)
        return value

    @field_validator("lease_name")
    @classmethod
    def _lease_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", value) or len(value) > 253:
            raise ValueError(f"must be a valid Lease name (got {value!r})")
        return value

    @model_validator(mode="after")
    def _lease_timing(self) -> Settings:
        if not (
            self.lease_duration_seconds
            > self.lease_renew_deadline_seconds
            > 1.2 * self.lease_retry_period_seconds
        ):
            raise ValueError(
                "LEASE_DURATION_SECONDS > LEASE_RENEW_DEADLINE_SECONDS > 1.2 x LEASE_RETRY_PERIOD_SECONDS"
                " is required"
            )
        return self

    @field_validator("history_retention")
    @classmethod
    def _retention(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def retention_seconds(self) -> int | None:
        seconds = parse_duration(self.history_retention)
        return seconds or None


def lease_timing_problem(settings: Settings) -> str | None:
    """Why the Lease timings cannot keep two replicas from admitting at once, or None.

    A leader stops writing once LEASE_RENEW_DEADLINE_SECONDS have passed since its last renewal
    was sent, and a write it sent just before can take KUBE_API_TIMEOUT_SECONDS to land; another
    replica may take the Lease LEASE_DURATION_SECONDS after that renewal. So the difference must
    exceed the timeout.
    """
    margin = settings.lease_duration_seconds - settings.lease_renew_deadline_seconds
    if margin > settings.kube_api_timeout_seconds:
        return None
    return (
        f"LEASE_DURATION_SECONDS ({settings.lease_duration_seconds:g}) - LEASE_RENEW_DEADLINE_SECONDS"
        f" ({settings.lease_renew_deadline_seconds:g}) must exceed KUBE_API_TIMEOUT_SECONDS"
        f" ({settings.kube_api_timeout_seconds:g}): a leader's last admission could land after another"
        " replica has taken the Lease"
    )


def parse_duration(value: str) -> int:
    """Seconds in ``"3600"`` or ``"1d2h3m4s"``."""
    value = value.strip()
    if value.isdigit():
        return int(value)
    m = _DURATION.fullmatch(value)
    if not value or m is None:
        raise ValueError(f"must be seconds or a duration like 24h, 90m, 1d12h (got {value!r})")
    d, h, mi, s = (int(g or 0) for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


class ConfigError(Exception):
    """A setting is invalid; the message names the environment variable."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = str(err["msg"]).removeprefix("Value error, ")
            # A check across settings (model validator) has no location: its message names them.
            problems.append(f"{str(err['loc'][0]).upper()}: {msg}" if err["loc"] else msg)
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
