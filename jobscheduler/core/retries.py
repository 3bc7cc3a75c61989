"""Job-level retries (ScheduleJob ``max_retries``): a failed job is run again as a new, linked job.

Nothing about a pending retry lives only in memory: the policy is in the failed Job's
annotations, the retry's name is derived from the chain's first job and the retry number,
and creating it is create-if-absent. So any replica, at any time (after a restart too), can
work out from the cluster alone which retries are due, and two replicas doing so at once
create each retry once (the second create is ALREADY_EXISTS and ignored).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from jobscheduler.core.errors import AlreadyExists, JobSchedulerError, NotFound
from jobscheduler.core.index import JobIndex
from jobscheduler.core.manifests import retry_manifest, validate_job_manifest
from jobscheduler.core.model import JobEventType, JobPhase, JobRecord
from jobscheduler.core.naming import JOB_ID_PREFIX
from jobscheduler.core.ports import JobBackend

MAX_RETRIES: Final = 10
MAX_RETRY_BACKOFF_SECONDS: Final = 3600
#: The delay before a retry never exceeds this, however often the backoff doubled.
MAX_RETRY_DELAY_SECONDS: Final = 3600
#: A failure by a permanent exit code (the Job's podFailurePolicy) is not retried.
PERMANENT_FAILURE_REASONS: Final = frozenset({"PodFailurePolicy"})
#: After a failed attempt to create a retry (API unreachable, ...), try again this much later.
_ERROR_DELAY_SECONDS: Final = 5.0
_SYNC_WAIT_SECONDS: Final = 5.0


def retry_job_id(root: str, number: int) -> str:
    """The job id of retry ``number`` of the chain that starts with job ``root``."""
    raw = hashlib.sha256(f"{root}\0retry\0{number}".encode()).digest()
    return JOB_ID_PREFIX + base64.b32encode(raw).decode().lower()[:10]


def retry_due(record: JobRecord) -> datetime | None:
    """When ``record``'s retry is due, or None if it gets none."""
    if record.phase is not JobPhase.FAILED or record.reason in PERMANENT_FAILURE_REASONS:
        return None
    if record.retry_number >= min(record.max_retries, MAX_RETRIES):
        return None
    finished = record.finished_at or record.created_at or datetime.now(UTC)
    delay = min(record.retry_backoff_seconds * 2**record.retry_number, MAX_RETRY_DELAY_SECONDS)
    return finished + timedelta(seconds=delay)


class RetryController:
    """Creates the retries of failed jobs when they are due; run one per replica (``run``)."""

    def __init__(
        self,
        backend: JobBackend,
        index: JobIndex,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_error: Callable[[str, JobSchedulerError], None] = lambda job_id, exc: None,
        on_retry: Callable[[JobRecord], None] = lambda record: None,
    ) -> None:
        self._backend = backend
        self._index = index
        self._clock = clock
        self._sleep = sleep
        self._on_error = on_error
        self._on_retry = on_retry
        self._pending: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        """Until cancelled: every failed job's due retry, from the current state and then each change."""
        while not await self._index.wait_synced(_SYNC_WAIT_SECONDS):
            pass
        remove = self._index.add_listener(
            lambda event: None if event.type is JobEventType.DELETED else self._consider(event.record)
        )
        try:
            for record in self._index.records():
                self._consider(record)
            await asyncio.Event().wait()  # the listener does the rest
        finally:
            remove()
            for task in list(self._pending.values()):
                task.cancel()

    def _consider(self, record: JobRecord) -> None:
        due = retry_due(record)
        if due is None or record.job_id in self._pending:
            return
        task = asyncio.create_task(self._retry_when_due(record, due), name=f"retry {record.job_id}")
        self._pending[record.job_id] = task
        task.add_done_callback(lambda _: self._pending.pop(record.job_id, None))

    async def _retry_when_due(self, record: JobRecord, due: datetime) -> None:
        while True:
            wait = (due - self._clock()).total_seconds()
            if wait > 0:
                await self._sleep(wait)
            try:
                await self._retry(record)
                return
            except JobSchedulerError as exc:
                self._on_error(record.job_id, exc)
                due = self._clock() + timedelta(seconds=_ERROR_DELAY_SECONDS)

    async def _retry(self, record: JobRecord) -> None:
        root = record.retry_of or record.job_id
        number = record.retry_number + 1
        job_id = retry_job_id(root, number)
        if self._index.get(job_id) is not None:
            return
        try:
            failed = await self._backend.manifest(record.job_id)
        except NotFound:
            return  # deleted meanwhile (retention, or by hand): nothing left to retry
        manifest = retry_manifest(failed, job_id=job_id, retry_of=root, retry_number=number)
        validate_job_manifest(manifest)
        try:
            created = await self._backend.create(manifest)
        except AlreadyExists:
            return  # another replica (or an earlier run of this one) created it
        self._on_retry(created)
