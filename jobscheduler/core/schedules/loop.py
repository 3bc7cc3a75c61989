"""The due-time loop: fires the schedules of a store that does not fire them itself (local).

CronJob's semantics: on each tick, for each unsuspended schedule, the due times after the last
one dealt with (or after creation) up to now: at most ONE run, for the latest of them, if it is
within ``starting_deadline_seconds`` of now; the others (and that one if it is too late) count as
missed (``missed_runs``, ``last_missed_time``). Then the concurrency policy: FORBID skips the run
(``skipped_runs``) while a job of the schedule is unfinished, REPLACE cancels those jobs first,
ALLOW just runs. A run is ``JobService.schedule`` as the schedule's owner with
``request_id = schedule/<name>/<due epoch seconds>`` (so a crash between creating the job and
recording the run never makes two jobs) and ``origin`` naming the schedule and the due time, so
queues, priorities, retries and max_running apply as to any job.

History limits are not enforced here: the JobBackend port deletes no jobs; finished jobs of a
schedule go when their ttlSecondsAfterFinished (HISTORY_RETENTION) runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

from jobscheduler.core.auth import Caller
from jobscheduler.core.errors import BackendError, FailedPrecondition, JobSchedulerError, NotFound
from jobscheduler.core.model import JobOrigin
from jobscheduler.core.schedules import cron
from jobscheduler.core.schedules.model import ConcurrencyPolicy, Schedule, ScheduleStatus
from jobscheduler.core.schedules.pages import YIELD_EVERY
from jobscheduler.core.schedules.service import ScheduleService, schedule_jobs, unfinished

#: The loop sleeps at most this long (it is woken early by create, update and delete).
MAX_SLEEP_SECONDS: Final = 30.0
#: At most this many due times of one schedule are counted per tick (a long downtime of a
#: frequent schedule): beyond, the missed count says "at least".
MAX_COUNTED_DUE_TIMES: Final = 1000


@dataclass(frozen=True, slots=True)
class Decision:
    """What one tick does with one schedule."""

    #: The due time to run (None: no run).
    run: datetime | None
    #: Due times missed (not run), and the latest of them.
    missed: int
    last_missed: datetime | None
    #: The latest due time dealt with (None: nothing was due).
    handled_until: datetime | None


def decide(due_times: Iterator[datetime], now: datetime, deadline_seconds: int | None) -> Decision:
    """At most one run, for the latest due time up to ``now`` if within the deadline; the rest missed."""
    count, latest = 0, None
    for due in due_times:
        if due > now:
            break
        if count >= MAX_COUNTED_DUE_TIMES:  # skip ahead: only the latest may run
            break
        count, latest = count + 1, due
    if latest is None:
        return Decision(None, 0, None, None)
    if deadline_seconds is not None and now - latest > timedelta(seconds=deadline_seconds):
        return Decision(None, count, latest, latest)
    previous_missed = count - 1
    return Decision(latest, previous_missed, None, latest)


def latest_due(rule: cron.CronRule, since: datetime, now: datetime) -> Iterator[datetime]:
    """Due times after ``since`` up to ``now``; after MAX_COUNTED_DUE_TIMES, jumps to the last day."""
    times = rule.times_after(since)
    for count, due in enumerate(times):
        if due > now:
            return
        if count >= MAX_COUNTED_DUE_TIMES - 1:
            last = None
            for later in rule.times_after(max(due, now - timedelta(days=1))):
                if later > now:
                    break
                last = later
            yield last if last is not None else due
            return
        yield due


class ScheduleLoop:
    def __init__(
        self,
        service: ScheduleService,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_error: Callable[[str, JobSchedulerError], None] = lambda name, exc: None,
    ) -> None:
        self.service = service
        self._sleep = sleep
        self._on_error = on_error
        self._wake = asyncio.Event()
        previous = service.on_change

        def changed() -> None:
            previous()
            self._wake.set()

        service.on_change = changed

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                delay = await self.tick()
            except Exception as exc:  # the store failed (a full disk, a bug): retry, do not die
                self._on_error("", _error(exc))
                delay = MAX_SLEEP_SECONDS
            sleeper = asyncio.ensure_future(self._sleep(delay))
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()

    async def tick(self) -> float:
        """Deal with every due schedule; the seconds until the next due time (at most MAX_SLEEP)."""
        service = self.service
        now = service.clock()
        next_due = now + timedelta(seconds=MAX_SLEEP_SECONDS)
        for count, listed in enumerate(await service.store.list(), start=1):
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # schedules not due cost ~50 us each: serve RPCs meanwhile
            if listed.spec.suspend:
                continue
            try:
                rule = cron.parse_cron(listed.spec.cron, cron.parse_zone(listed.spec.time_zone))
            except JobSchedulerError as exc:
                self._on_error(listed.name, exc)
                continue
            since = listed.status.handled_until or listed.created_at
            upcoming = rule.next_after(since)
            if upcoming is not None and upcoming > now:
                next_due = min(next_due, upcoming)
                continue
            try:
                await self._fire(listed.owner, listed.name, now)
            except Exception as exc:  # one schedule's failure (even a bug) stops no other
                self._on_error(listed.name, _error(exc))
            upcoming = rule.next_after(now)
            if upcoming is not None:
                next_due = min(next_due, upcoming)
            await asyncio.sleep(0)  # one schedule at a time: the event loop serves RPCs between them
        return max((next_due - service.clock()).total_seconds(), 0.0)

    async def _fire(self, owner: str, name: str, now: datetime) -> None:
        service = self.service
        async with service.lock:
            try:
                schedule = await service.store.get(owner, name)
            except NotFound:
                return  # deleted meanwhile
            if schedule.spec.suspend:
                return
            spec = schedule.spec
            rule = cron.parse_cron(spec.cron, cron.parse_zone(spec.time_zone))
            since = schedule.status.handled_until or schedule.created_at
            decision = decide(latest_due(rule, since, now), now, spec.starting_deadline_seconds)
            if decision.handled_until is None:
                return
            status = replace(
                schedule.status,
                handled_until=decision.handled_until,
                missed_runs=schedule.status.missed_runs + decision.missed,
            )
            if decision.last_missed is not None:
                status = replace(status, last_missed_time=decision.last_missed)
            elif decision.missed:  # the run's predecessors were missed
                status = replace(status, last_missed_time=_before(rule, since, decision.run))
            if decision.run is not None:
                try:
                    status = await self._run(schedule, decision.run, status)
                except JobSchedulerError as exc:  # e.g. its queue is gone: missed, not retried forever
                    self._on_error(name, exc)
                    status = replace(
                        status, missed_runs=status.missed_runs + 1, last_missed_time=decision.run
                    )
            await service.store.update(replace(schedule, status=status), {})

    async def _run(self, schedule: Schedule, due: datetime, status: ScheduleStatus) -> ScheduleStatus:
        """One run of ``schedule`` for ``due``, as its concurrency policy says."""
        jobs = self.service.jobs
        owner = Caller(schedule.owner)
        active = unfinished(schedule_jobs(jobs.index, schedule.owner, schedule.name))
        policy = schedule.spec.concurrency_policy
        if active and policy is ConcurrencyPolicy.FORBID:
            return replace(status, skipped_runs=status.skipped_runs + 1)
        if active and policy is ConcurrencyPolicy.REPLACE:
            for job in active:
                with contextlib.suppress(FailedPrecondition, NotFound):  # it ended meanwhile
                    await jobs.cancel(job.job_id, f"replaced by schedule {schedule.name}'s next run", owner)
        request = replace(schedule.spec.job, request_id=run_request_id(schedule.name, due))
        origin = JobOrigin(schedule=schedule.name, scheduled_at=due, template=schedule.spec.job.template)
        await jobs.schedule(request, owner, origin=origin)
        return replace(status, last_schedule_time=due)


def _error(exc: Exception) -> JobSchedulerError:
    return exc if isinstance(exc, JobSchedulerError) else BackendError(f"{type(exc).__name__}: {exc}")


def run_request_id(name: str, due: datetime) -> str:
    """The request_id of the run due at ``due``: one job per due time, whatever happens."""
    return f"schedule/{name}/{int(due.timestamp())}"


def _before(rule: cron.CronRule, since: datetime, due: datetime | None) -> datetime | None:
    """The due time right before ``due`` (the last missed one)."""
    last = None
    for time in rule.times_after(max(since, (due or since) - timedelta(days=1))):
        if due is None or time >= due:
            break
        last = time
    return last
