"""Admission: queues with a limit on running jobs, priorities, start times and dependencies.

A job that cannot run at once is created *held*: a suspended Job whose annotations say what
it waits for (QUEUED, SCHEDULED or WAITING), its queue, priority, dependencies and when it
was submitted. The queue therefore lives in the cluster, as in Kueue. One admission loop (on
the replica holding the Lease) unsuspends held jobs when their start time has passed, their
dependencies have succeeded and their queue has room: by priority, then first submitted
first, and a job that is not admissible yet never holds back the admissible ones behind it.

Every write is a compare-and-swap on a held job (``JobBackend.admit``/``hold``/``fail``), so
a job is admitted once even when a new leader acts on a view a moment old; and the loop's
state is rebuilt from the index (the cluster) whenever it starts, after a restart or failover.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from jobscheduler.core.dependencies import (
    DependencyState,
    dependency_state,
    not_found,
    visible,
    waiting_phase,
)
from jobscheduler.core.errors import FailedPrecondition, JobSchedulerError, NotFound
from jobscheduler.core.index import JobIndex
from jobscheduler.core.model import JobEvent, JobEventType, JobPhase, JobRecord
from jobscheduler.core.ports import JobBackend
from jobscheduler.core.queues import QueueBook, QueueConfig, QueueConfigError, parse_queues, ready_at

__all__ = [
    "AdmissionController",
    "QueueBook",
    "QueueConfig",
    "QueueConfigError",
    "parse_queues",
    "ready_at",
    "waiting_phase",
]

DEPENDENCY_FAILED: Final = "DependencyFailed"
DEPENDENCY_NOT_FOUND: Final = "DependencyNotFound"
#: Admission writes in flight at once (each is one PATCH).
MAX_IN_FLIGHT: Final = 32
#: After a failed write (API unreachable, ...), the job is considered again this much later,
#: then twice as late after each further failure, up to RETRY_DELAY_LIMIT_SECONDS.
ERROR_DELAY_SECONDS: Final = 2.0
#: As ERROR_DELAY_SECONDS, after a write refused because the job changed meanwhile (the
#: compare-and-swap lost, or kept losing), or while a dependency is still missing from the index.
RECHECK_DELAY_SECONDS: Final = 0.2
RETRY_DELAY_LIMIT_SECONDS: Final = 30.0
#: How long a new leader keeps the slot of a job that a fresh list shows admitted and its
#: index does not show at all (it shows it in a moment, unless it was deleted meanwhile).
_CATCH_UP_SECONDS: Final = 10.0
_SYNC_WAIT_SECONDS: Final = 5.0
_RUNNING: Final = frozenset({JobPhase.PENDING, JobPhase.RUNNING})


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What a held job's start time and dependencies allow."""

    phase: JobPhase  # QUEUED (admissible), SCHEDULED or WAITING
    failure: tuple[str, str] | None = None  # (reason, message): fail it instead
    missing: str = ""  # a dependency absent from the index: ask the backend before failing
    watched: tuple[str, ...] = ()  # ids whose changes may change the verdict


class AdmissionController:
    """The admission loop: run ``run()`` on one replica at a time (the Lease holder).

    ``clock`` and ``sleep`` are the only notion of time it has (the simulation in
    tests/test_sim_admission.py replaces both)."""

    def __init__(
        self,
        backend: JobBackend,
        index: JobIndex,
        book: QueueBook,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_admitted: Callable[[JobRecord, float], None] = lambda record, latency: None,
        on_error: Callable[[str, JobSchedulerError], None] = lambda job_id, exc: None,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._backend = backend
        self._index = index
        self._book = book
        self._clock = clock
        self._sleep = sleep
        self._on_admitted = on_admitted
        self._on_error = on_error
        self._max_in_flight = max_in_flight
        self._reset()

    def _reset(self) -> None:
        self._heaps: dict[str, list[tuple[int, datetime, str]]] = {}
        self._timers: list[tuple[datetime, str]] = []
        self._dependents: dict[str, set[str]] = {}
        self._dirty: set[str] = set()
        self._in_flight: dict[str, int] = {}
        #: Admissions whose outcome is unknown (the write failed, but may have landed): each
        #: keeps its queue's slot until the index shows the job (or a later write decides).
        self._unsure: dict[str, str] = {}
        self._failures: dict[str, int] = {}  # failed writes in a row, for the backoff
        self._busy: set[str] = set()  # jobs with a write in flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._queued: set[str] = set()  # in a heap
        self._relabel: set[str] = set()  # admissible, but not labelled QUEUED yet

    async def run(self) -> None:
        """Until cancelled: rebuild from the cluster, then admit as jobs and room come."""
        self._reset()
        while not await self._index.wait_synced(_SYNC_WAIT_SECONDS):
            pass
        await self._catch_up()  # then no await before the listener is in place
        remove = self._book.add_listener(self._on_event)
        try:
            self._dirty.update(r.job_id for r in self._index.records() if r.phase.is_waiting)
            while True:
                self._wake.clear()
                self._step()
                await self._sleep_until_needed()
        finally:
            remove()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _catch_up(self) -> None:
        """A new leader's index may lag the previous leader's last admissions: every job that a
        fresh list shows admitted but the index does not keeps its queue's slot (as an unsure
        admission) until the index shows it, so no limit is exceeded meanwhile. (The Kubernetes
        backend's list is its index itself once its watch has reached a fresh read's
        resourceVersion: then nothing differs, and no second full list is made.)"""
        try:
            fresh = await self._backend.list()
        except JobSchedulerError:
            return  # unreachable: admissions will fail and be retried anyway
        expires = self._clock() + timedelta(seconds=_CATCH_UP_SECONDS)
        for record in fresh:
            known = self._index.get(record.job_id)
            if record.phase in _RUNNING and (known is None or known.phase.is_waiting):
                self._unsure[record.job_id] = record.queue
                if known is None:  # in case it is deleted before the index ever shows it
                    heapq.heappush(self._timers, (expires, record.job_id))

    async def _sleep_until_needed(self) -> None:
        """Until something changed (``_wake``) or the next timer is due."""
        if self._wake.is_set():
            return
        if not self._timers:
            await self._wake.wait()
            return
        delay = (self._timers[0][0] - self._clock()).total_seconds()
        if delay <= 0:
            return
        waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(self._sleep(delay))}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _on_event(self, event: JobEvent) -> None:
        record = event.record
        released = False
        if event.type is not JobEventType.DELETED and record.phase.is_waiting:
            self._dirty.add(record.job_id)
        else:
            self._failures.pop(record.job_id, None)
            released = self._unsure.pop(record.job_id, None) is not None
        for key in (record.job_id, record.retry_of):
            if key and key in self._dependents:
                self._dirty.update(self._dependents[key])
        if record.phase.is_terminal or event.type is JobEventType.DELETED:
            # Its dependents are reconsidered now, and register again for whatever they still
            # wait on (its retry, say): the entry is not needed any more.
            self._dependents.pop(record.job_id, None)
            self._wake.set()  # room may have come free
        elif self._dirty or released:
            self._wake.set()

    # --- deciding -----------------------------------------------------------------------------

    def _step(self) -> None:
        now = self._clock()
        while self._timers and self._timers[0][0] <= now:
            _, job_id = heapq.heappop(self._timers)
            self._dirty.add(job_id)
        dirty, self._dirty = self._dirty, set()
        for job_id in dirty:
            record = self._index.get(job_id)
            if record is None:
                self._unsure.pop(job_id, None)
                self._failures.pop(job_id, None)
            # A job with a write in flight is considered again when the write ends (_spawn).
            if record is not None and record.phase.is_waiting and job_id not in self._busy:
                self._consider(record, now)
        self._admit_what_fits()

    def _consider(self, record: JobRecord, now: datetime) -> None:
        if record.job_id in self._unsure:
            self._spawn(record, self._settle_doubt(record))
            return
        verdict = self._verdict(record, now)
        for key in verdict.watched:
            self._dependents.setdefault(key, set()).add(record.job_id)
        if verdict.failure is not None:
            reason, message = verdict.failure
            self._spawn(record, self._fail(record, reason, message))
        elif verdict.missing:
            self._spawn(record, self._confirm_missing(record, verdict.missing))
        elif verdict.phase is JobPhase.SCHEDULED:
            assert record.start_after is not None
            heapq.heappush(self._timers, (record.start_after, record.job_id))
            if record.phase is not JobPhase.SCHEDULED:
                self._spawn(record, self._hold(record, JobPhase.SCHEDULED))
        elif verdict.phase is JobPhase.WAITING:
            if record.phase is not JobPhase.WAITING:
                self._spawn(record, self._hold(record, JobPhase.WAITING))
        else:
            if record.phase is not JobPhase.QUEUED:
                self._relabel.add(record.job_id)
            if record.job_id not in self._queued:
                self._queued.add(record.job_id)
                order = (-record.priority, ready_at(record), record.job_id)
                heapq.heappush(self._heaps.setdefault(record.queue, []), order)

    def _verdict(self, record: JobRecord, now: datetime) -> _Verdict:
        if record.phase is JobPhase.QUEUED:
            # Durable: its start time had come and its dependencies had succeeded (they may be
            # gone since, removed by their retention).
            return _Verdict(JobPhase.QUEUED)
        if record.start_after is not None and record.start_after > now:
            return _Verdict(JobPhase.SCHEDULED)
        watched: list[str] = []
        pending = False
        for dep in record.depends_on:
            found = dependency_state(self._index, dep, record.owner)
            watched.extend(found.watched)
            if found.state is DependencyState.FAILED:
                return _Verdict(JobPhase.WAITING, failure=(DEPENDENCY_FAILED, found.detail))
            if found.state is DependencyState.MISSING:
                return _Verdict(JobPhase.WAITING, missing=dep, watched=tuple(watched))
            pending = pending or found.state is DependencyState.WAITING
        if pending:
            return _Verdict(JobPhase.WAITING, watched=tuple(watched))
        return _Verdict(JobPhase.QUEUED)

    def _admit_what_fits(self) -> None:
        unsure = Counter(self._unsure.values())  # possibly admitted: their slots stay taken
        for queue, heap in self._heaps.items():
            limit = self._book.limit(queue)
            while heap and len(self._busy) < self._max_in_flight:
                taken = self._book.running(queue) + self._in_flight.get(queue, 0) + unsure[queue]
                if limit and taken >= limit:
                    break
                _, _, job_id = heapq.heappop(heap)
                self._queued.discard(job_id)
                record = self._index.get(job_id)
                if record is None or not record.phase.is_waiting or job_id in self._busy:
                    continue  # admitted, cancelled or deleted since it was queued, or being written
                self._in_flight[queue] = self._in_flight.get(queue, 0) + 1
                self._spawn(record, self._admit(record))
        # What stays queued but still reports SCHEDULED or WAITING now reports QUEUED.
        for job_id in list(self._relabel):
            if len(self._busy) >= self._max_in_flight:
                break
            self._relabel.discard(job_id)
            record = self._index.get(job_id)
            if (
                record is not None
                and job_id in self._queued
                and record.phase in (JobPhase.SCHEDULED, JobPhase.WAITING)
                and job_id not in self._busy
            ):
                self._spawn(record, self._hold(record, JobPhase.QUEUED))

    # --- writing ------------------------------------------------------------------------------

    def _spawn(self, record: JobRecord, write: Awaitable[float | None]) -> None:
        """Run one write (or read) on ``record``'s job; whatever its outcome and whenever its watch
        event comes, the job is considered again afterwards (events that came meanwhile were
        skipped): at once, or after a growing delay if the write failed or asked for one (its
        result: None, done; 0, again at once; else the first delay)."""
        job_id = record.job_id
        self._busy.add(job_id)

        async def run() -> None:
            again: float | None = None
            try:
                again = await write
            except (FailedPrecondition, NotFound):
                # No longer held (the index shows it, or soon will), or changed under us time
                # and again: decide again on what the index shows a moment later.
                again = RECHECK_DELAY_SECONDS
            except JobSchedulerError as exc:
                self._on_error(job_id, exc)
                again = ERROR_DELAY_SECONDS
            finally:
                self._busy.discard(job_id)
                current = self._index.get(job_id)
                if again is None or current is None or not current.phase.is_waiting:
                    self._failures.pop(job_id, None)  # done with, or written: start afresh
                    self._dirty.add(job_id)
                elif not again:
                    self._dirty.add(job_id)
                else:
                    failures = self._failures[job_id] = self._failures.get(job_id, 0) + 1
                    delay = min(RETRY_DELAY_LIMIT_SECONDS, again * 2 ** min(failures - 1, 16))
                    heapq.heappush(self._timers, (self._clock() + timedelta(seconds=delay), job_id))
                self._wake.set()

        task = asyncio.create_task(run(), name=f"admission {job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _admit(self, record: JobRecord) -> None:
        try:
            now = self._clock()
            admitted = await self._backend.admit(record.job_id, at=now)
        except (FailedPrecondition, NotFound):
            raise
        except JobSchedulerError:
            still = self._index.get(record.job_id)
            if still is not None and still.phase.is_waiting:
                self._unsure[record.job_id] = record.queue  # it may have landed, its answer lost
            raise
        finally:
            self._in_flight[record.queue] -= 1
        self._on_admitted(admitted, max(0.0, (now - ready_at(record)).total_seconds()))

    async def _settle_doubt(self, record: JobRecord) -> float | None:
        """An admission whose outcome is unknown: read the job from the backend. Still held: it
        did not land, the slot is free again. Admitted: the index will show it shortly."""
        found = await self._backend.get(record.job_id)
        if found.phase.is_waiting:
            self._unsure.pop(record.job_id, None)
            return 0.0  # at once, without forgetting its failed attempts
        return RECHECK_DELAY_SECONDS

    async def _hold(self, record: JobRecord, phase: JobPhase) -> None:
        await self._backend.hold(record.job_id, phase)

    async def _fail(self, record: JobRecord, reason: str, message: str) -> None:
        await self._backend.fail(record.job_id, reason=reason, message=message, at=self._clock())

    async def _confirm_missing(self, record: JobRecord, dep: str) -> float | None:
        """A dependency the index does not show the owner: created a moment ago elsewhere, or
        absent (or another owner's, which is the same)."""
        try:
            found = await self._backend.get(dep)
        except NotFound:
            found = None
        if not visible(found, record.owner):
            await self._fail(record, DEPENDENCY_NOT_FOUND, not_found(dep))
            return None
        return RECHECK_DELAY_SECONDS  # the index will have it shortly
