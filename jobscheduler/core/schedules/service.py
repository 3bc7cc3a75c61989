"""ScheduleService: what the schedule RPCs mean, over a ScheduleStore and the JobService.

Schedules are owner-scoped like jobs: a caller addresses only its own by name (another owner's
is NOT_FOUND); admins may list another owner's (or, with no owner given, every owner's).
Every create and update validates the whole schedule: its own fields (core.schedules.spec),
cron and time zone (core.schedules.cron, MIN_SCHEDULE_INTERVAL) and its job, through
``JobService.prepare`` exactly as ScheduleJob would (violations named ``job.<field>``); the
rendered, held Job is the store's ``job_template``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from jobscheduler.core.auth import Caller
from jobscheduler.core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from jobscheduler.core.index import JobIndex
from jobscheduler.core.model import JobFilter, JobOrigin, JobPhase, JobRecord
from jobscheduler.core.schedules import cron, pages
from jobscheduler.core.schedules.model import Schedule, ScheduleSpec, ScheduleView
from jobscheduler.core.schedules.ports import ScheduleStore
from jobscheduler.core.schedules.spec import ScheduleChanges, check_name, spec_violations
from jobscheduler.core.service import JobService

#: The job id the job template is rendered with (each run's job gets its own).
TEMPLATE_JOB_ID = "job-schedule-template"
MAX_NAME_PREFIX_CHARS = 52
MAX_OWNER_CHARS = 1024


def schedule_jobs(index: JobIndex, owner: str, name: str) -> list[JobRecord]:
    """``owner``'s jobs of schedule ``name``, oldest first: read from the index's postings for
    the schedule and owner, not by a scan of every job (~45 ms per call at 100,000 jobs)."""
    wanted = JobFilter(schedule=name, owner=owner)
    jobs = [r for r in index.newest_first(job_filter=wanted) if r.schedule == name and r.owner == owner]
    jobs.sort(key=lambda r: (r.created_at or datetime.min.replace(tzinfo=UTC), r.job_id))
    return jobs


def unfinished(jobs: Iterable[JobRecord]) -> list[JobRecord]:
    return [job for job in jobs if not job.phase.is_terminal]


class ScheduleService:
    def __init__(
        self,
        store: ScheduleStore,
        jobs: JobService,
        *,
        min_interval_seconds: int = 60,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.min_interval_seconds = min_interval_seconds
        self.clock = clock
        #: Called after a create, update or delete (the due-time loop wakes up).
        self.on_change = on_change
        #: Serialises changes to one store between the RPCs and the due-time loop.
        self.lock = asyncio.Lock()

    # -- validation ------------------------------------------------------------------------
    async def _validated(self, spec: ScheduleSpec, caller: Caller) -> tuple[ScheduleSpec, dict[str, Any]]:
        """A valid spec (with the job template's version it resolved, if it names one) and its
        rendered Job; InvalidArgument naming every bad field otherwise."""
        violations = list(spec_violations(spec))
        check = functools.partial(
            cron.validate,
            spec.cron,
            spec.time_zone,
            after=self.clock(),
            min_interval_seconds=self.min_interval_seconds,
        )
        try:
            # With MIN_SCHEDULE_INTERVAL over 60 s the gap is taken over up to 200 due times (up to
            # ~20 ms for a daily run in a DST zone): in a thread, so the event loop serves others.
            await asyncio.to_thread(check) if self.min_interval_seconds > 60 else check()
        except InvalidArgument as exc:
            violations.extend(exc.violations)
        if violations:
            raise InvalidArgument(violations)
        origin = JobOrigin(schedule=spec.name, template=spec.job.template)
        try:
            prepared = await self.jobs.prepare(spec.job, caller, origin=origin)
            manifest = prepared.render(TEMPLATE_JOB_ID)
        except InvalidArgument as exc:
            raise InvalidArgument([replace(v, field=f"job.{v.field}") for v in exc.violations]) from None
        resolved = prepared.origin or origin
        # The version is pinned now, on both backends: a CronJob's jobTemplate is rendered once,
        # here, so local runs too use the version the schedule was created or updated with.
        job = spec.job
        if job.template and not job.template_version:
            job = replace(job, template_version=resolved.template_version)
        spec = replace(spec, job=job, template=resolved.template, template_version=resolved.template_version)
        return spec, manifest

    def view(self, schedule: Schedule, jobs: list[JobRecord] | None = None) -> ScheduleView:
        if jobs is None:
            jobs = schedule_jobs(self.jobs.index, schedule.owner, schedule.name)
        status = schedule.status
        succeeded = [j.finished_at for j in jobs if j.phase is JobPhase.SUCCEEDED and j.finished_at]
        if succeeded and (
            status.last_successful_time is None or max(succeeded) > status.last_successful_time
        ):
            status = replace(status, last_successful_time=max(succeeded))
        next_run = None
        if not schedule.spec.suspend:
            try:
                rule = cron.parse_cron(schedule.spec.cron, cron.parse_zone(schedule.spec.time_zone))
                next_run = rule.next_after(self.clock())
            except InvalidArgument:  # stored before a rule changed: reported, not fatal
                next_run = None
        return ScheduleView(
            replace(schedule, status=status), tuple(j.job_id for j in unfinished(jobs)), next_run
        )

    # -- the RPCs ---------------------------------------------------------------------------
    async def create(self, spec: ScheduleSpec, caller: Caller) -> ScheduleView:
        check_name(spec.name)
        spec, template = await self._validated(spec, caller)
        now = self.clock()
        schedule = Schedule(spec=spec, owner=caller.identity, created_at=now, updated_at=now)
        async with self.lock:
            created = await self.store.create(schedule, template)
        self.on_change()
        return self.view(created, [])

    async def get(self, name: str, caller: Caller) -> ScheduleView:
        check_name(name)
        return self.view(await self.store.get(caller.identity, name))

    async def list(
        self,
        caller: Caller,
        *,
        page_size: int = 0,
        page_token: str = "",
        owner: str = "",
        name_prefix: str = "",
    ) -> tuple[list[ScheduleView], str]:
        if len(owner) > MAX_OWNER_CHARS:  # as ListJobs' filter: a ServiceAccount's is up to 339
            raise InvalidArgument.field("owner", f"at most {MAX_OWNER_CHARS} characters")
        if len(name_prefix) > MAX_NAME_PREFIX_CHARS:
            raise InvalidArgument.field("name_prefix", f"at most {MAX_NAME_PREFIX_CHARS} characters")
        size = pages.page_size(page_size)
        if owner and owner != caller.identity and not caller.is_admin:
            raise PermissionDenied("only admins may list the schedules of other owners (owner)")
        scope: str | None = owner or (None if caller.is_admin else caller.identity)
        query = f"{scope!r}\0{name_prefix}"
        after = pages.decode_token(page_token, query)
        listed = await self.store.list(scope, after=after, prefix=name_prefix, limit=size + 1)
        schedules = [s for s in listed if s.name.startswith(name_prefix)]
        page, token = pages.paginate(schedules, page_size, page_token, query)
        views = []
        for count, schedule in enumerate(page, start=1):
            if count % pages.YIELD_EVERY == 0:
                await asyncio.sleep(0)
            views.append(self.view(schedule))
        return views, token

    async def update(self, name: str, changes: ScheduleChanges, caller: Caller) -> ScheduleView:
        check_name(name)
        async with self.lock:
            current = await self.store.get(caller.identity, name)
            try:
                spec, template = await self._validated(_changed(current.spec, changes), caller)
            except InvalidArgument as exc:
                if changes.job is not None or not all(v.field.startswith("job.") for v in exc.violations):
                    raise
                raise _stale_job(name, exc) from None
            updated = replace(current, spec=spec, updated_at=self.clock())
            stored = await self.store.update(updated, template)
        self.on_change()
        return self.view(stored)

    async def delete(
        self, name: str, caller: Caller, *, cancel_jobs: bool = False
    ) -> tuple[ScheduleView, tuple[str, ...]]:
        check_name(name)
        async with self.lock:
            deleted = await self.store.delete(caller.identity, name)
        self.on_change()
        view = self.view(deleted)
        cancelled: tuple[str, ...] = ()
        if cancel_jobs:
            for job_id in view.active_job_ids:
                try:
                    record = await self.jobs.cancel(job_id, f"schedule {name} deleted", caller)
                except (FailedPrecondition, NotFound):  # it ended (or went) meanwhile
                    continue
                if record.phase is JobPhase.CANCELLED:
                    cancelled += (job_id,)
        return view, cancelled

    async def trigger(self, name: str, caller: Caller) -> JobRecord:
        """One run now, whatever the schedule's suspend and concurrency policy say."""
        check_name(name)
        schedule = await self.store.get(caller.identity, name)
        origin = JobOrigin(schedule=name, scheduled_at=self.clock(), template=schedule.spec.job.template)
        try:
            return await self.jobs.schedule(schedule.spec.job, caller, origin=origin)
        except InvalidArgument as exc:
            raise _stale_job(name, exc) from None


def _stale_job(name: str, exc: InvalidArgument) -> FailedPrecondition:
    """The stored job of a schedule no longer validates (its template was deleted, its queue
    removed, ...): not a field of the caller's request, so FAILED_PRECONDITION, not INVALID_ARGUMENT."""
    return FailedPrecondition(
        f"schedule {name!r}'s job is no longer valid ({exc.message}); give UpdateSchedule a job, or delete it"
    )


def _changed(spec: ScheduleSpec, changes: ScheduleChanges) -> ScheduleSpec:
    fields = {
        name: value
        for name in (
            "cron",
            "time_zone",
            "job",
            "concurrency_policy",
            "suspend",
            "successful_jobs_history_limit",
            "failed_jobs_history_limit",
            "description",
            "starting_deadline_seconds",
        )
        if (value := getattr(changes, name)) is not None
    }
    if changes.clear_starting_deadline:
        if changes.starting_deadline_seconds is not None:
            raise InvalidArgument.field(
                "clear_starting_deadline", "not together with starting_deadline_seconds"
            )
        fields["starting_deadline_seconds"] = None
    return replace(spec, **fields)
