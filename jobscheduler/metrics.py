"""Prometheus metrics, one registry per process (``REGISTRY``), named per Prometheus conventions."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jobscheduler.core.model import JobRecord, Priority, QueueStatus

REGISTRY: Final = CollectorRegistry(auto_describe=True)
# The standard collectors of prometheus-client's default registry: process_*, python_info,
# python_gc_*.
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

GRPC_STARTED: Final = Counter(
    "grpc_server_started_total",
    "RPCs started on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
    registry=REGISTRY,
)
GRPC_HANDLED: Final = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
    registry=REGISTRY,
)
GRPC_MSG_RECEIVED: Final = Counter(
    "grpc_server_msg_received_total",
    "RPC stream messages received on the server (one per unary request).",
    ["grpc_type", "grpc_service", "grpc_method"],
    registry=REGISTRY,
)
GRPC_MSG_SENT: Final = Counter(
    "grpc_server_msg_sent_total",
    "gRPC stream messages sent by the server (one per successful unary response).",
    ["grpc_type", "grpc_service", "grpc_method"],
    registry=REGISTRY,
)
#: go-grpc-prometheus's default buckets (Prometheus's DefBuckets).
GRPC_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
GRPC_HANDLING_SECONDS: Final = Histogram(
    "grpc_server_handling_seconds",
    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=GRPC_BUCKETS,
    registry=REGISTRY,
)
JOBS_SCHEDULED: Final = Counter(
    "jobscheduler_jobs_scheduled_total",
    "Jobs created through ScheduleJob, by job type (a replayed request_id creates none).",
    ["type"],
    registry=REGISTRY,
)
JOBS_CANCELLED: Final = Counter(
    "jobscheduler_jobs_cancelled_total",
    "Jobs cancelled through CancelJob, by job type (cancelling a cancelled job again is not counted).",
    ["type"],
    registry=REGISTRY,
)


JOBS_FINISHED: Final = Counter(
    "jobscheduler_jobs_finished_total",
    "Jobs that reached a final phase (SUCCEEDED, FAILED, CANCELLED), by type, queue, phase and"
    " reason; counted once per job, by the replica holding the admission Lease.",
    ["type", "queue", "phase", "reason"],
    registry=REGISTRY,
)
JOB_RUN_SECONDS: Final = Histogram(
    "jobscheduler_job_run_seconds",
    "Finished jobs' run time, from started_at to finished_at (jobs that never started are not"
    " observed), by type, queue and phase; once per job, on the Lease holder.",
    ["type", "queue", "phase"],
    buckets=(1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0),
    registry=REGISTRY,
)
JOB_QUEUE_WAIT_SECONDS: Final = Histogram(
    "jobscheduler_job_queue_wait_seconds",
    "Held jobs' wait in their queue, from enqueued_at (submitted) to admitted_at, by queue;"
    " once per job, on the Lease holder.",
    ["queue"],
    buckets=(0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0),
    registry=REGISTRY,
)
JOB_RETRIES: Final = Counter(
    "jobscheduler_job_retries_total",
    "Retries of failed jobs created (max_retries), by type and queue; once per retry, on the Lease holder.",
    ["type", "queue"],
    registry=REGISTRY,
)


def count_finished(record: JobRecord, run_seconds: float | None) -> None:
    """JobObserver's ``on_finished``: a job this replica saw reach its final phase."""
    labels = (record.type, record.queue, record.phase.value)
    JOBS_FINISHED.labels(*labels, record.reason).inc()
    if run_seconds is not None:
        JOB_RUN_SECONDS.labels(*labels).observe(run_seconds)


def observe_queue_wait(record: JobRecord, wait_seconds: float) -> None:
    """JobObserver's ``on_admitted``: a held job this replica saw admitted."""
    JOB_QUEUE_WAIT_SECONDS.labels(record.queue).observe(wait_seconds)


def count_retry(record: JobRecord) -> None:
    """JobObserver's ``on_retry``: a retry this replica saw created."""
    JOB_RETRIES.labels(record.type, record.queue).inc()


def count_scheduled(record: JobRecord) -> None:
    """JobService's ``on_created``: one more job really created."""
    JOBS_SCHEDULED.labels(record.type).inc()


def count_cancelled(record: JobRecord) -> None:
    """JobService's ``on_cancelled``: one more job really cancelled."""
    JOBS_CANCELLED.labels(record.type).inc()


KUBE_REQUEST_SECONDS: Final = Histogram(
    "jobscheduler_kubernetes_request_duration_seconds",
    "Kubernetes API request latency, by verb, resource and HTTP status code.",
    ["verb", "resource", "code"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
KUBE_REQUEST_ERRORS: Final = Counter(
    "jobscheduler_kubernetes_request_errors_total",
    "Failed Kubernetes API requests, by verb, resource and error (HTTP status or 'connection').",
    ["verb", "resource", "error"],
    registry=REGISTRY,
)
BACKEND_UP: Final = Gauge(
    "jobscheduler_backend_up",
    "1 when the last backend reachability check succeeded, else 0.",
    ["backend"],
    registry=REGISTRY,
)
BUILD_INFO: Final = Gauge(
    "jobscheduler_build_info",
    "Always 1; labels carry the build's version information.",
    ["version", "git_commit", "python_version"],
    registry=REGISTRY,
)
WATCH_RESTARTS: Final = Counter(
    "jobscheduler_watch_restarts_total",
    "Watches of the Kubernetes API that failed and were reconnected, by resource.",
    ["resource"],
    registry=REGISTRY,
)
WATCH_RELISTS: Final = Counter(
    "jobscheduler_watch_relists_total",
    "Full re-lists after the first (410 Gone, or a watch that could not resume), by resource.",
    ["resource"],
    registry=REGISTRY,
)
WATCH_SYNCED: Final = Gauge(
    "jobscheduler_watch_synced",
    "1 while the watch of a resource is listed and connected (following the API server), else 0.",
    ["resource"],
    registry=REGISTRY,
)
WATCH_IDLE_SECONDS: Final = Gauge(
    "jobscheduler_watch_idle_seconds",
    "Seconds since the watch of a resource last delivered an event or bookmark (or its list).",
    ["resource"],
    registry=REGISTRY,
)
OPEN_STREAMS: Final = Gauge(
    "jobscheduler_open_streams",
    "Server-streaming RPCs in progress, by method.",
    ["grpc_method"],
    registry=REGISTRY,
)
CACHE_JOBS: Final = Gauge(
    "jobscheduler_cache_jobs",
    "Jobs held in the service's live index.",
    registry=REGISTRY,
)
KUBE_WRITE_WAIT_SECONDS: Final = Histogram(
    "jobscheduler_kube_write_wait_seconds",
    "Time Kubernetes API writes waited for the client-side write limit (KUBE_API_QPS, KUBE_API_BURST)"
    " before being sent; writes whose caller gave up while waiting are not counted.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
KUBE_WRITES_WAITING: Final = Gauge(
    "jobscheduler_kube_writes_waiting",
    "Kubernetes API writes waiting for the client-side write limit right now.",
    registry=REGISTRY,
)
ADMISSIONS: Final = Counter(
    "jobscheduler_admissions_total",
    "Held jobs admitted (unsuspended) by the admission loop, by queue.",
    ["queue"],
    registry=REGISTRY,
)
ADMISSION_LATENCY_SECONDS: Final = Histogram(
    "jobscheduler_admission_latency_seconds",
    "From when a job could be admitted but for room (submitted, or its start time) to its admission.",
    ["queue"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
    registry=REGISTRY,
)


class QueueCollector(Collector):
    """jobscheduler_queue_depth{queue,priority} and jobscheduler_queue_running{queue}, from the
    queue book (``bind``, once the service is assembled).

    Scrapes run on the ops server's thread while the book changes on the event loop: the
    book's status is computed on the loop (``run_coroutine_threadsafe``, at most
    ``LOOP_WAIT_SECONDS``) into an immutable snapshot; when the loop does not answer in time
    (busy), or is not running (stopped or closed), the last snapshot is reported at once."""

    LOOP_WAIT_SECONDS: Final = 1.0

    def __init__(self) -> None:
        self._source: Callable[[], Iterable[QueueStatus]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._snapshot: tuple[QueueStatus, ...] = ()

    def bind(self, source: Callable[[], Iterable[QueueStatus]], loop: asyncio.AbstractEventLoop) -> None:
        """Report ``source()`` (called only on ``loop``, the thread that changes it)."""
        self._source, self._loop = source, loop
        self._snapshot = tuple(source()) if _on_loop(loop) else ()

    def snapshot(self) -> tuple[QueueStatus, ...]:
        """The queues' status now, read on the loop; the last one read if the loop is busy."""
        source, loop = self._source, self._loop
        if source is None or loop is None:
            return self._snapshot
        if _on_loop(loop):
            self._snapshot = tuple(source())
            return self._snapshot
        if loop.is_closed() or not loop.is_running():  # stopping: nobody would answer
            return self._snapshot

        async def read() -> tuple[QueueStatus, ...]:
            return tuple(source())

        coroutine = read()
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        except RuntimeError:  # the loop is closed: the service is stopping
            coroutine.close()
            return self._snapshot
        try:
            self._snapshot = future.result(self.LOOP_WAIT_SECONDS)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError, RuntimeError):
            future.cancel()
        return self._snapshot

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "jobscheduler_queue_depth",
            "QUEUED jobs (admissible, waiting for room in their queue), by queue and priority.",
            labels=["queue", "priority"],
        )
        running = GaugeMetricFamily(
            "jobscheduler_queue_running", "Admitted, unfinished jobs, by queue.", labels=["queue"]
        )
        oldest = GaugeMetricFamily(
            "jobscheduler_queue_oldest_age_seconds",
            "Seconds the longest-waiting QUEUED job of a queue has been admissible (0: none queued).",
            labels=["queue"],
        )
        now = datetime.now(UTC)
        for queue in self.snapshot():
            for priority in Priority:
                depth.add_metric([queue.name, priority.name], queue.queued.get(priority, 0))
            running.add_metric([queue.name], queue.running)
            since = queue.oldest_queued_since
            oldest.add_metric([queue.name], max(0.0, (now - since).total_seconds()) if since else 0.0)
        yield depth
        yield running
        yield oldest


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


QUEUES: Final = QueueCollector()
REGISTRY.register(QUEUES)
LEADER: Final = Gauge(
    "jobscheduler_leader",
    "1 while this replica holds the admission Lease (runs the admission loop), else 0.",
    registry=REGISTRY,
)
