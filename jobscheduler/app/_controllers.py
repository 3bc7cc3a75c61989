"""The background controllers: job retries on every replica, admission on the Lease holder."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from jobscheduler import metrics
from jobscheduler.app._build import builtin_types, image_policy, job_defaults
from jobscheduler.app._errors import StartupError
from jobscheduler.backends.kubernetes import (
    KubernetesBackend,
    LeaseElector,
)
from jobscheduler.config import Settings, lease_timing_problem
from jobscheduler.core.admission import AdmissionController, QueueBook
from jobscheduler.core.fence import FencedBackend
from jobscheduler.core.index import JobIndex
from jobscheduler.core.jobstats import JobObserver
from jobscheduler.core.model import JobRecord
from jobscheduler.core.ports import JobBackend
from jobscheduler.core.registry import HandlerRegistry
from jobscheduler.core.retries import RetryController
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.app")


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
    settings: Settings,
    backend: JobBackend,
    index: JobIndex,
    book: QueueBook,
    registry: HandlerRegistry | None = None,
) -> list[Controller]:
    """Job retries (every replica: idempotent) and the admission loop (one replica at a time:
    the Lease holder, with the Kubernetes backend and LEADER_ELECTION; the local backend is
    one process anyway)."""
    retries = RetryController(
        backend,
        index,
        # What ScheduleJob uses: a retry is rendered from the stored request and checked again.
        # ScheduleJob's registry (plugin types included); else the built-in types.
        registry=registry if registry is not None else builtin_types(settings),
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

    def observe_jobs(leading: Callable[[], bool]) -> None:
        # Job metrics, once per job: only the Lease holder counts (core/jobstats.py).
        index.add_listener(
            JobObserver(
                leading=leading,
                ready=lambda: index.synced,
                on_finished=metrics.count_finished,
                on_admitted=metrics.observe_queue_wait,
                on_retry=metrics.count_retry,
            )
        )

    if not (isinstance(backend, KubernetesBackend) and settings.leader_election):
        metrics.LEADER.set(1)
        observe_jobs(lambda: True)
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
    observe_jobs(lambda: elector.leading)
    return [retries, LeaderOnly(elector, admission(fenced).run)]
