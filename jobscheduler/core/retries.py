"""Job-level retries (ScheduleJob ``max_retries``): a failed job is run again as a new, linked job.

Nothing about a pending retry lives only in memory: the policy is in the failed Job's
annotations, the retry's name is derived from the chain's first job and the retry number,
and creating it is create-if-absent. So any replica, at any time (after a restart too), can
work out from the cluster alone which retries are due, and two replicas doing so at once
create each retry once (the second create is ALREADY_EXISTS and ignored).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from jobscheduler.core.controllers import DueController
from jobscheduler.core.errors import AlreadyExists, NotFound
from jobscheduler.core.index import JobIndex
from jobscheduler.core.manifests import retry_manifest, validate_job_manifest
from jobscheduler.core.model import JobPhase, JobRecord
from jobscheduler.core.naming import derived_job_id
from jobscheduler.core.ports import JobBackend

MAX_RETRIES: Final = 10
MAX_RETRY_BACKOFF_SECONDS: Final = 3600
#: The delay before a retry never exceeds this, however often the backoff doubled.
MAX_RETRY_DELAY_SECONDS: Final = 3600
#: A failure by a permanent exit code (the Job's podFailurePolicy) is not retried.
#: Nor is a job failed before it ran because a dependency failed or does not exist.
PERMANENT_FAILURE_REASONS: Final = frozenset({"PodFailurePolicy", "DependencyFailed", "DependencyNotFound"})


def retry_job_id(root: str, number: int) -> str:
    """The job id of retry ``number`` of the chain that starts with job ``root``."""
    return derived_job_id(root, "retry", str(number))


def retry_due(record: JobRecord) -> datetime | None:
    """When ``record``'s retry is due, or None if it gets none."""
    if record.phase is not JobPhase.FAILED or record.reason in PERMANENT_FAILURE_REASONS:
        return None
    if record.retry_number >= min(record.max_retries, MAX_RETRIES):
        return None
    finished = record.finished_at or record.created_at or datetime.now(UTC)
    delay = min(record.retry_backoff_seconds * 2**record.retry_number, MAX_RETRY_DELAY_SECONDS)
    return finished + timedelta(seconds=delay)


class RetryController(DueController):
    """Creates the retries of failed jobs when they are due; run one per replica (``run``)."""

    def __init__(
        self,
        backend: JobBackend,
        index: JobIndex,
        *,
        on_retry: Callable[[JobRecord], None] = lambda record: None,
        **options: Any,
    ) -> None:
        super().__init__(index, **options)
        self._backend = backend
        self._on_retry = on_retry

    def due(self, record: JobRecord) -> datetime | None:
        return retry_due(record)

    async def act(self, record: JobRecord) -> None:
        root = record.retry_of or record.job_id
        number = record.retry_number + 1
        job_id = retry_job_id(root, number)
        if self._index.get(job_id) is not None:
            return
        try:
            failed = await self._backend.manifest(record.job_id)
        except NotFound:
            return  # deleted meanwhile (retention, or by hand): nothing left to retry
        manifest = retry_manifest(
            failed, job_id=job_id, retry_of=root, retry_number=number, enqueued_at=self._clock()
        )
        validate_job_manifest(manifest)
        try:
            created = await self._backend.create(manifest)
        except AlreadyExists:
            return  # another replica (or an earlier run of this one) created it
        self._on_retry(created)
