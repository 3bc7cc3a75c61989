"""The service core: what each RPC means, independent of gRPC and Kubernetes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from jobscheduler.core.admission import QueueBook, parse_queues, waiting_phase
from jobscheduler.core.annotations import origin_metadata
from jobscheduler.core.auth import ANONYMOUS, Caller
from jobscheduler.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    NotReady,
    PermissionDenied,
)
from jobscheduler.core.index import JobIndex
from jobscheduler.core.limits import ImagePolicy
from jobscheduler.core.manifests import (
    ADMISSION_ANNOTATION,
    ADMISSION_STATES_BY_PHASE,
    DEPENDS_ON_ANNOTATION,
    ENQUEUED_AT_ANNOTATION,
    REQUEST_HASH_ANNOTATION,
    REQUEST_ID_ANNOTATION,
    START_AFTER_ANNOTATION,
    JobDefaults,
    format_precise_time,
)
from jobscheduler.core.model import (
    DEFAULT_QUEUE,
    JobEvent,
    JobEventType,
    JobFilter,
    JobOrigin,
    JobPhase,
    JobRecord,
    LogLine,
    QueueStatus,
    ScheduleRequest,
)
from jobscheduler.core.naming import (
    derived_job_id,
    new_job_id,
)
from jobscheduler.core.overlay import nested
from jobscheduler.core.ports import JobBackend
from jobscheduler.core.prepared import PreparedJob, check_dependencies, queue_violations, start_time
from jobscheduler.core.query import Page, compile_filter, paginate, paginate_newest_first
from jobscheduler.core.registry import HandlerRegistry
from jobscheduler.core.requests import check_manifest, image_violations, render_request, request_digest
from jobscheduler.core.rerun import rerun_request
from jobscheduler.core.templates import JobTemplates, TemplateStore
from jobscheduler.core.tracecontext import apply_trace_context
from jobscheduler.core.validation import check_cancel_reason
from jobscheduler.core.validation import check_job_id as _check_job_id
from jobscheduler.core.validation import label_violations as _label_violations
from jobscheduler.core.validation import name_violations as _name_violations
from jobscheduler.core.validation import scheduling_violations as _scheduling_violations

#: How many fresh ids ScheduleJob tries when a generated id is taken (vanishingly rare).
_ID_ATTEMPTS = 3
#: How long a watch waits for the index's first sync before answering UNAVAILABLE.
_SYNC_WAIT_SECONDS = 5.0
_MAX_TAIL_LINES = 100_000
#: The job id a template's request is rendered under to check it (never created).
_TEMPLATE_CHECK_ID = "job-template-check"


class JobService:
    """Schedules, reads, lists and cancels jobs through a backend."""

    def __init__(
        self,
        backend: JobBackend,
        registry: HandlerRegistry,
        defaults: JobDefaults,
        index: JobIndex,
        *,
        images: ImagePolicy | None = None,
        queues: QueueBook | None = None,
        id_factory: Callable[[], str] = new_job_id,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_created: Callable[[JobRecord], None] = lambda record: None,
        on_cancelled: Callable[[JobRecord], None] = lambda record: None,
        templates: TemplateStore | None = None,
    ) -> None:
        self.backend = backend
        #: Called once per job the backend actually created / cancelled (not for a replayed
        #: request_id or a repeated cancel), e.g. to count them.
        self._on_created = on_created
        self._on_cancelled = on_cancelled
        self.registry = registry
        self.defaults = defaults
        self.index = index
        #: Which per-request image overrides are allowed; None: any.
        self.images = images
        #: The admission queues (QUEUES) and what they hold; None: only ``default``, no limit.
        self.queues = queues if queues is not None else QueueBook(index, parse_queues(""))
        self._new_id = id_factory
        self._clock = clock
        #: The job templates (core.templates), kept by ``templates`` (the composition root gives
        #: the backend's store); None: nowhere to keep them.
        self.templates = None if templates is None else JobTemplates(templates, self._check_template, clock)

    def require_templates(self) -> JobTemplates:
        if self.templates is None:
            raise FailedPrecondition("job templates are not available with this backend")
        return self.templates

    async def _check_template(self, request: ScheduleRequest, caller: Caller) -> None:
        """A template's request validated as a whole ScheduleJob request, manifest included."""
        (await self.prepare(request, caller)).render(_TEMPLATE_CHECK_ID)

    async def rerun(
        self,
        job_id: str,
        overrides: ScheduleRequest | None,
        caller: Caller = ANONYMOUS,
        *,
        request_id: str = "",
        traceparent: str = "",
    ) -> JobRecord:
        """RerunJob (core.rerun): a new job from a finished job's stored request and ``overrides``."""
        _check_job_id(job_id)
        record = _visible(await self.backend.get(job_id), caller)
        manifest = await self.backend.manifest(job_id)
        request, origin, digest = rerun_request(record, manifest, overrides, request_id)
        try:
            prepared = await self.prepare(request, caller, traceparent=traceparent, origin=origin)
        except InvalidArgument as exc:
            raise nested(exc, "overrides", keep=("request_id",)) from None
        return await self.create(replace(prepared, digest=digest))

    async def schedule(
        self,
        request: ScheduleRequest,
        caller: Caller = ANONYMOUS,
        *,
        traceparent: str = "",
        origin: JobOrigin | None = None,
    ) -> JobRecord:
        """ScheduleJob: :meth:`prepare`, then create the job (once per request_id)."""
        prepared = await self.prepare(request, caller, traceparent=traceparent, origin=origin)
        return await self.create(prepared)

    async def create(self, prepared: PreparedJob) -> JobRecord:
        """Create the job ``prepared`` describes: under the id its request_id derives (idempotent),
        else under a fresh id."""
        if prepared.request.request_id:
            return await self._schedule_once(prepared, self.defaults.namespace)
        for attempt in range(_ID_ATTEMPTS):
            try:
                return self._created(await self.backend.create(prepared.render(self._new_id())))
            except AlreadyExists:
                if attempt == _ID_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def prepare(
        self,
        request: ScheduleRequest,
        caller: Caller = ANONYMOUS,
        *,
        traceparent: str = "",
        origin: JobOrigin | None = None,
    ) -> PreparedJob:
        """Validate ``request`` and decide how its job starts (held or not), creating nothing.
        ``traceparent``: the W3C trace context of the call (the API layer's), stored on the Job
        and given to its containers (core.tracecontext); not part of the request's digest.
        ``origin``: the schedule, template or job the new job comes from (labels, annotations).
        With ``request.template``, the caller's template (core.templates) with ``request`` laid
        over it is what is validated and created, and the job records the template's version."""
        digest = request_digest(request)
        if request.template or request.template_version:
            request, version = await self.require_templates().resolve(request, caller)
            origin = replace(origin or JobOrigin(), template=request.template, template_version=version)
        violations = [
            *_name_violations(request.name),
            *_label_violations(request.labels),
            *_scheduling_violations(request),
            *queue_violations(request, self.queues),
        ]
        handler = self.registry.for_request_field(request.job_field, request.params)
        try:
            params = handler.parse(request.params)
        except InvalidArgument as exc:
            violations.extend(exc.violations)
        else:
            violations.extend(image_violations(handler, params, self.images))
        if violations:
            raise InvalidArgument(violations)
        now = self._clock()
        # The work's annotations (queue, priority, retries, the stored request): render_request's.
        annotations: dict[str, str] = {}
        start = start_time(request, now)
        if start is not None:
            annotations[START_AFTER_ANNOTATION] = format_precise_time(start)  # never a moment early
        queue = request.queue or DEFAULT_QUEUE
        if request.depends_on:
            annotations[DEPENDS_ON_ANNOTATION] = ",".join(request.depends_on)
        # Held (created suspended, admitted by the admission loop) when it must wait for its
        # start time or dependencies, or when its queue limits how many run at once.
        held = waiting_phase(self.index, request.depends_on, start, now, caller.identity)
        if held is None and self.queues.limit(queue):
            held = JobPhase.QUEUED
        if held is not None:
            annotations[ADMISSION_ANNOTATION] = ADMISSION_STATES_BY_PHASE[held]
            annotations[ENQUEUED_AT_ANNOTATION] = format_precise_time(now)

        def render(job_id: str, extra_annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
            """The handler's manifest for ``job_id``, with what the request adds to any job type."""
            check_dependencies(self.index, job_id, request.depends_on, caller.identity)
            manifest = render_request(
                handler, params, request, job_id=job_id, owner=caller.identity, defaults=self.defaults
            )
            if held is not None:
                manifest["spec"]["suspend"] = True  # admitted by core.admission
            manifest["metadata"]["annotations"].update({**annotations, **(extra_annotations or {})})
            if origin is not None:
                origin_labels, origin_annotations = origin_metadata(origin)
                manifest["metadata"]["labels"].update(origin_labels)
                manifest["metadata"]["annotations"].update(origin_annotations)
            apply_trace_context(manifest, traceparent)
            check_manifest(manifest, handler, self.images)
            return manifest

        return PreparedJob(
            request=request, digest=digest, caller=caller, held=held, origin=origin, render=render
        )

    async def _schedule_once(self, prepared: PreparedJob, namespace: str) -> JobRecord:
        """ScheduleJob with a request_id: the job id is derived from (namespace, caller, request_id),
        so retries and races (on any replica) meet at one Kubernetes name; the API server's
        create-if-absent decides, and the stored request digest tells a retry from a reuse."""
        request, caller = prepared.request, prepared.caller
        job_id = request_job_id(namespace, caller.identity, request.request_id)
        digest = prepared.digest
        known = self.index.get(job_id) if self.index.synced else None
        if known is not None:
            return _same_request(known, request, caller, digest)
        manifest = prepared.render(
            job_id, {REQUEST_ID_ANNOTATION: request.request_id, REQUEST_HASH_ANNOTATION: digest}
        )
        try:
            return self._created(await self.backend.create(manifest))
        except AlreadyExists:
            existing = await self.backend.get(job_id)
            return _same_request(existing, request, caller, digest)

    def queues_status(self) -> list[QueueStatus]:
        """ListQueues: every queue's limit, running and queued jobs (from this replica's cache)."""
        return self.queues.status()

    async def get(self, job_id: str, caller: Caller = ANONYMOUS) -> JobRecord:
        """From the index once it has synced (backends put their own writes there at once)."""
        _check_job_id(job_id)
        if not self.index.synced:
            return _visible(await self.backend.get(job_id), caller)
        record = self.index.get(job_id)
        if record is None:
            raise NotFound(f"job {job_id!r} not found")
        return _visible(record, caller)

    async def list(
        self,
        job_filter: JobFilter | None = None,
        page_size: int = 0,
        page_token: str = "",
        caller: Caller = ANONYMOUS,
    ) -> Page:
        job_filter = _scoped(job_filter or JobFilter(), caller)
        if not self.index.synced:
            return paginate(await self.backend.list(), job_filter, page_size, page_token)
        token = self.index.current_token()
        page = paginate_newest_first(self.index.newest_first, job_filter, page_size, page_token)
        return replace(page, resume_token=token)

    async def cancel(self, job_id: str, reason: str = "", caller: Caller = ANONYMOUS) -> JobRecord:
        _check_job_id(job_id)
        check_cancel_reason(reason)
        # The backend's own view: the index may lag a moment.
        record = _visible(await self.backend.get(job_id), caller)
        if record.phase is JobPhase.CANCELLED:
            return record
        if record.phase.is_terminal:
            raise FailedPrecondition(
                f"job {job_id} has already finished ({record.phase.value}); cannot cancel"
            )
        cancelled = await self.backend.cancel(
            job_id, reason=reason or "cancelled by request", at=self._clock()
        )
        self._on_cancelled(cancelled)
        return cancelled

    def _created(self, record: JobRecord) -> JobRecord:
        self._on_created(record)
        return record

    async def _require_sync(self) -> None:
        if not await self.index.wait_synced(_SYNC_WAIT_SECONDS):
            raise NotReady("the service has not finished loading the jobs from its backend; retry shortly")

    async def watch_job(self, job_id: str, caller: Caller = ANONYMOUS) -> AsyncIterator[JobEvent]:
        """The job's current state (as a CREATED event), then each change; ends after a terminal state."""
        _check_job_id(job_id)
        await self._require_sync()
        with self.index.subscribe(lambda r: r.job_id == job_id) as subscription:
            current = self.index.get(job_id)
            if current is None:
                raise NotFound(f"job {job_id!r} not found")
            _visible(current, caller)
            yield JobEvent(subscription.last_seq, JobEventType.CREATED, current, self._clock())
            last = current
            while not last.phase.is_terminal:
                event = await subscription.next()
                if event.record == last and event.type is not JobEventType.DELETED:
                    continue
                yield event
                if event.type is JobEventType.DELETED:
                    return
                last = event.record

    async def watch_jobs(
        self, job_filter: JobFilter, resume_token: str = "", caller: Caller = ANONYMOUS
    ) -> AsyncIterator[JobEvent]:
        """Every change of every matching job, from now or after ``resume_token``; never ends by itself."""
        matches = compile_filter(_scoped(job_filter, caller))
        await self._require_sync()
        with self.index.subscribe(matches, resume_token) as subscription:
            while True:
                yield await subscription.next()

    async def logs(
        self,
        job_id: str,
        *,
        follow: bool = False,
        tail_lines: int = 0,
        attempt: int = 0,
        caller: Caller = ANONYMOUS,
    ) -> AsyncIterator[LogLine]:
        _check_job_id(job_id)
        if tail_lines < 0 or tail_lines > _MAX_TAIL_LINES:
            raise InvalidArgument.field("tail_lines", f"must be between 0 and {_MAX_TAIL_LINES}")
        if attempt < 0:
            raise InvalidArgument.field("attempt", "must be 0 (the latest) or a 1-based attempt number")
        record = await self.get(job_id, caller)
        async for line in self.backend.logs(record, follow=follow, tail_lines=tail_lines, attempt=attempt):
            yield line


def request_job_id(namespace: str, owner: str, request_id: str) -> str:
    """The job id of a request_id: ``job-`` + 10 base32 characters of a SHA-256 digest."""
    return derived_job_id(namespace, owner, request_id)


def _same_request(existing: JobRecord, request: ScheduleRequest, caller: Caller, digest: str) -> JobRecord:
    if existing.owner == caller.identity and existing.request_id == request.request_id:
        if existing.request_hash == digest:
            return existing
        raise AlreadyExists(
            f"request_id {request.request_id!r} was already used for a different request"
            f" (job {existing.job_id})"
        )
    raise AlreadyExists(f"job {existing.job_id} exists already and was not created by this request_id")


def _visible(record: JobRecord, caller: Caller) -> JobRecord:
    """The record if ``caller`` may see it; NOT_FOUND otherwise, so job ids of others do not leak."""
    if caller.is_admin or record.owner == caller.identity:
        return record
    raise NotFound(f"job {record.job_id!r} not found")


def _scoped(job_filter: JobFilter, caller: Caller) -> JobFilter:
    """Non-admins list and watch only their own jobs."""
    if caller.is_admin:
        return job_filter
    if job_filter.owner and job_filter.owner != caller.identity:
        raise PermissionDenied("only admins may list or watch the jobs of other owners (filter.owner)")
    return replace(job_filter, owner=caller.identity)
