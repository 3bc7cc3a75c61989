"""Job-level retries (ScheduleJob ``max_retries``): a failed job is run again as a new, linked job.

Nothing about a pending retry lives only in memory: the policy is in the failed Job's
annotations, the retry's name is derived from the chain's first job and the retry number,
and creating it is create-if-absent. So any replica, at any time (after a restart too), can
work out from the cluster alone which retries are due, and two replicas doing so at once
create each retry once (the second create is ALREADY_EXISTS and ignored).

A retry is never a copy of the failed Job (whoever may write Jobs in the namespace could put
anything in one): it is rendered again from the request stored on it (core.requests), through
its job type's handler and the same checks as a new request. A failed Job without a valid
stored request (from an older version, or not made by us) gets no retry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from jobscheduler.core.annotations import origin_metadata
from jobscheduler.core.controllers import DueController
from jobscheduler.core.errors import AlreadyExists, BackendError, InvalidArgument, NotFound
from jobscheduler.core.index import JobIndex
from jobscheduler.core.limits import ImagePolicy
from jobscheduler.core.manifests import (
    ADMISSION_ANNOTATION,
    ADMISSION_STATES_BY_PHASE,
    ENQUEUED_AT_ANNOTATION,
    JOB_ID_LABEL,
    RETRY_NUMBER_ANNOTATION,
    RETRY_OF_ANNOTATION,
    RETRY_OF_LABEL,
    JobDefaults,
    format_precise_time,
)
from jobscheduler.core.model import JobOrigin, JobPhase, JobRecord
from jobscheduler.core.naming import derived_job_id
from jobscheduler.core.ports import JobBackend
from jobscheduler.core.registry import HandlerRegistry
from jobscheduler.core.requests import check_manifest, parse_stored_request, parse_work, render_request
from jobscheduler.core.tracecontext import apply_trace_context, stored_traceparent

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


def as_retry(
    rendered: dict[str, Any], *, job_id: str, retry_of: str, retry_number: int, enqueued_at: datetime
) -> dict[str, Any]:
    """A freshly rendered Job of the chain's work (rendered as its first job, ``retry_of``, so the
    work is the same to the letter) as retry ``retry_number``: its own name and job-id labels,
    linked to the chain, created held (QUEUED) so that it waits for room in its queue like any job."""
    meta = rendered["metadata"]
    meta["name"] = job_id
    meta["labels"][JOB_ID_LABEL] = job_id
    meta["labels"][RETRY_OF_LABEL] = retry_of
    template_labels = rendered["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {})
    if JOB_ID_LABEL in template_labels:
        template_labels[JOB_ID_LABEL] = job_id
    meta.setdefault("annotations", {}).update(
        {
            RETRY_OF_ANNOTATION: retry_of,
            RETRY_NUMBER_ANNOTATION: str(retry_number),
            ADMISSION_ANNOTATION: ADMISSION_STATES_BY_PHASE[JobPhase.QUEUED],
            ENQUEUED_AT_ANNOTATION: format_precise_time(enqueued_at),
        }
    )
    rendered["spec"]["suspend"] = True
    return rendered


class RetryController(DueController):
    """Creates the retries of failed jobs when they are due; run one per replica (``run``)."""

    def __init__(
        self,
        backend: JobBackend,
        index: JobIndex,
        *,
        registry: HandlerRegistry,
        defaults: JobDefaults,
        images: ImagePolicy | None = None,
        on_retry: Callable[[JobRecord], None] = lambda record: None,
        on_refused: Callable[[JobRecord, str], None] = lambda record, why: None,
        **options: Any,
    ) -> None:
        super().__init__(index, **options)
        self._backend = backend
        self._registry = registry
        self._defaults = defaults
        self._images = images
        self._on_retry = on_retry
        #: A failed job that gets no retry because its stored request is missing or invalid.
        self._on_refused = on_refused

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
        annotations = (failed.get("metadata") or {}).get("annotations") or {}
        try:
            manifest = self.render(annotations, record, job_id=job_id, root=root, number=number)
        except (InvalidArgument, BackendError) as exc:
            self._on_refused(record, exc.message)
            return  # the same next time: no retry, and no loop of attempts
        try:
            created = await self._backend.create(manifest)
        except AlreadyExists:
            return  # another replica (or an earlier run of this one) created it
        self._on_retry(created)

    def render(
        self, annotations: Mapping[str, Any], record: JobRecord, *, job_id: str, root: str, number: int
    ) -> dict[str, Any]:
        """Retry ``number`` of ``record``'s chain, from the request stored on the failed Job and
        validated like a new one; InvalidArgument/BackendError when it gets none."""
        # (core.validation imports this module's limits: imported here, not at the top.)
        from jobscheduler.core.validation import label_violations, name_violations, scheduling_violations

        request = parse_stored_request(annotations)
        violations = [
            *name_violations(request.name),
            *label_violations(request.labels),
            *scheduling_violations(request, self._clock()),
        ]
        if violations:
            raise InvalidArgument(violations)
        if number > min(request.max_retries, MAX_RETRIES):
            raise InvalidArgument.field("max_retries", f"the request allows {request.max_retries} retries")
        handler, params = parse_work(self._registry, request, self._images)
        rendered = render_request(
            handler, params, request, job_id=root, owner=record.owner, defaults=self._defaults
        )
        manifest = as_retry(
            rendered, job_id=job_id, retry_of=root, retry_number=number, enqueued_at=self._clock()
        )
        # A retry stays its schedule's (and template's) job: listed, counted active and limited
        # with the schedule's other jobs. (Not a rerun: RerunJob links only the job it made.)
        origin = JobOrigin(
            schedule=record.schedule,
            scheduled_at=record.scheduled_at,
            template=record.template,
            template_version=record.template_version,
        )
        origin_labels, origin_annotations = origin_metadata(origin)
        manifest["metadata"]["labels"].update(origin_labels)
        manifest["metadata"]["annotations"].update(origin_annotations)
        apply_trace_context(manifest, stored_traceparent(annotations))  # the chain's trace
        check_manifest(manifest, handler, self._images)
        return manifest
