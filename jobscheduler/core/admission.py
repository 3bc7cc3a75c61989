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
import contextlib
import heapq
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from jobscheduler.core.errors import FailedPrecondition, JobSchedulerError, NotFound
from jobscheduler.core.index import JobIndex
from jobscheduler.core.model import (
    DEFAULT_QUEUE,
    JobEvent,
    JobEventType,
    JobPhase,
    JobRecord,
    Priority,
    QueueStatus,
)
from jobscheduler.core.naming import dns1123_label_problem
from jobscheduler.core.ports import JobBackend
from jobscheduler.core.retries import retry_due, retry_job_id

DEPENDENCY_FAILED: Final = "DependencyFailed"
DEPENDENCY_NOT_FOUND: Final = "DependencyNotFound"
#: Admission writes in flight at once (each is one PATCH).
MAX_IN_FLIGHT: Final = 32
#: After a failed write (API unreachable, ...), the job is considered again this much later.
ERROR_DELAY_SECONDS: Final = 2.0
#: How long a new leader waits for its index to catch up with a fresh list of the jobs.
_CATCH_UP_SECONDS: Final = 10.0
_SYNC_WAIT_SECONDS: Final = 5.0
_RUNNING: Final = frozenset({JobPhase.PENDING, JobPhase.RUNNING})
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class QueueConfig:
    name: str
    #: Jobs of this queue that may run at once; 0: no limit.
    max_running: int = 0


class QueueConfigError(ValueError):
    pass


def parse_queues(raw: str) -> dict[str, QueueConfig]:
    """``QUEUES``: comma-separated ``name=max_running`` (0: no limit); ``default`` always exists."""
    queues = {DEFAULT_QUEUE: QueueConfig(DEFAULT_QUEUE)}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        name, sep, limit = item.partition("=")
        name = name.strip()
        if (problem := dns1123_label_problem(name)) is not None:
            raise QueueConfigError(f"queue name {name!r} {problem}")
        try:
            max_running = int(limit) if sep else 0
        except ValueError:
            raise QueueConfigError(f"queue {name!r}: max_running must be a number (got {limit!r})") from None
        if not 0 <= max_running <= 1_000_000:
            raise QueueConfigError(f"queue {name!r}: max_running must be between 0 (no limit) and 1000000")
        queues[name] = QueueConfig(name, max_running)
    return queues


def ready_at(record: JobRecord) -> datetime:
    """The FIFO position of a job within its priority: when it was submitted (or, when later,
    when its start time came)."""
    submitted = record.enqueued_at or record.created_at or _EPOCH
    if record.start_after is not None and record.start_after > submitted:
        return record.start_after
    return submitted


@dataclass(frozen=True, slots=True)
class _Entry:
    queue: str
    phase: JobPhase
    priority: Priority
    ready_at: datetime


class QueueBook:
    """What each queue holds, kept from the index on every replica (ListQueues, metrics and
    the admission loop's running counts). Tracks only unfinished jobs."""

    def __init__(self, index: JobIndex, queues: Mapping[str, QueueConfig]) -> None:
        self.queues = dict(queues)
        self._index = index
        self._entries: dict[str, _Entry] = {}
        self._running: dict[str, int] = {}
        self._listeners: list[Callable[[JobEvent], None]] = []
        index.add_listener(self._on_event)
        for record in index.records():
            self._track(record)

    def add_listener(self, listener: Callable[[JobEvent], None]) -> Callable[[], None]:
        """Called after the book has taken each index change in."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def running(self, queue: str) -> int:
        return self._running.get(queue, 0)

    def limit(self, queue: str) -> int:
        config = self.queues.get(queue)
        return config.max_running if config is not None else 0

    def _on_event(self, event: JobEvent) -> None:
        if event.type is JobEventType.DELETED:
            self._untrack(event.record.job_id)
        else:
            self._track(event.record)
        for listener in list(self._listeners):
            listener(event)

    def _track(self, record: JobRecord) -> None:
        self._untrack(record.job_id)
        if record.phase.is_terminal:
            return
        entry = _Entry(record.queue, record.phase, record.priority, ready_at(record))
        self._entries[record.job_id] = entry
        if entry.phase in _RUNNING:
            self._running[entry.queue] = self._running.get(entry.queue, 0) + 1

    def _untrack(self, job_id: str) -> None:
        old = self._entries.pop(job_id, None)
        if old is not None and old.phase in _RUNNING:
            self._running[old.queue] -= 1

    def status(self) -> list[QueueStatus]:
        """Every configured queue and every queue that holds jobs, by name."""
        names = set(self.queues) | {e.queue for e in self._entries.values()}
        queued: dict[str, dict[Priority, int]] = {name: {} for name in names}
        waiting = dict.fromkeys(names, 0)
        oldest: dict[str, datetime] = {}
        for entry in self._entries.values():
            if entry.phase is JobPhase.QUEUED:
                counts = queued[entry.queue]
                counts[entry.priority] = counts.get(entry.priority, 0) + 1
                if entry.queue not in oldest or entry.ready_at < oldest[entry.queue]:
                    oldest[entry.queue] = entry.ready_at
            elif entry.phase.is_waiting:
                waiting[entry.queue] += 1
        return [
            QueueStatus(
                name=name,
                max_running=self.limit(name),
                running=self.running(name),
                queued=dict(sorted(queued[name].items(), reverse=True)),
                waiting=waiting[name],
                oldest_queued_since=oldest.get(name),
            )
            for name in sorted(names)
        ]


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What a held job's start time and dependencies allow."""

    phase: JobPhase  # QUEUED (admissible), SCHEDULED or WAITING
    failure: tuple[str, str] | None = None  # (reason, message): fail it instead
    missing: str = ""  # a dependency absent from the index: ask the backend before failing
    watched: tuple[str, ...] = ()  # ids whose changes may change the verdict


class AdmissionController:
    """The admission loop: run ``run()`` on one replica at a time (the Lease holder)."""

    def __init__(
        self,
        backend: JobBackend,
        index: JobIndex,
        book: QueueBook,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_admitted: Callable[[JobRecord, float], None] = lambda record, latency: None,
        on_error: Callable[[str, JobSchedulerError], None] = lambda job_id, exc: None,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._backend = backend
        self._index = index
        self._book = book
        self._clock = clock
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
        await self._catch_up()
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
        """A new leader's index may lag the previous leader's last admissions by a moment: wait
        until it shows every job that a fresh list shows admitted (so no limit is exceeded)."""
        try:
            fresh = await self._backend.list()
        except JobSchedulerError:
            return  # unreachable: admissions will fail and be retried anyway
        admitted = [r.job_id for r in fresh if not r.phase.is_waiting]
        deadline = asyncio.get_running_loop().time() + _CATCH_UP_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            if all((r := self._index.get(j)) is None or not r.phase.is_waiting for j in admitted):
                return
            await asyncio.sleep(0.05)

    async def _sleep_until_needed(self) -> None:
        timeout: float | None = None
        if self._timers:
            timeout = max(0.0, (self._timers[0][0] - self._clock()).total_seconds())
        with contextlib.suppress(TimeoutError):  # asyncio.timeout: 3.11's wait_for can swallow a cancel
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    def _on_event(self, event: JobEvent) -> None:
        record = event.record
        if event.type is not JobEventType.DELETED and record.phase.is_waiting:
            self._dirty.add(record.job_id)
        for key in (record.job_id, record.retry_of):
            if key and key in self._dependents:
                self._dirty.update(self._dependents[key])
        if record.phase.is_terminal or event.type is JobEventType.DELETED:
            # Its dependents are reconsidered now, and register again for whatever they still
            # wait on (its retry, say): the entry is not needed any more.
            self._dependents.pop(record.job_id, None)
            self._wake.set()  # room may have come free
        elif self._dirty:
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
            if record is not None and record.phase.is_waiting and job_id not in self._busy:
                self._consider(record, now)
        self._admit_what_fits()

    def _consider(self, record: JobRecord, now: datetime) -> None:
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
        elif record.job_id not in self._queued:
            if record.phase is not JobPhase.QUEUED:
                self._relabel.add(record.job_id)
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
            state, detail = self._dependency(record, dep, watched)
            if state == "failed":
                return _Verdict(JobPhase.WAITING, failure=(DEPENDENCY_FAILED, detail))
            if state == "not-found":
                return _Verdict(JobPhase.WAITING, failure=(DEPENDENCY_NOT_FOUND, detail))
            if state == "missing":
                return _Verdict(JobPhase.WAITING, missing=dep, watched=tuple(watched))
            pending = pending or state == "pending"
        if pending:
            return _Verdict(JobPhase.WAITING, watched=tuple(watched))
        return _Verdict(JobPhase.QUEUED)

    def _dependency(self, record: JobRecord, dep: str, watched: list[str]) -> tuple[str, str]:
        """("ok"|"pending"|"failed"|"not-found"|"missing", why) for one dependency, following its retries:
        a failed job whose retry is still to come is pending, and its retry decides."""
        watched.append(dep)
        current = self._index.get(dep)
        if current is None:
            return "missing", ""
        if current.owner != record.owner:
            return "not-found", f"dependency {dep} does not exist"  # another owner's: not visible
        for _ in range(64):  # a retry chain is at most MAX_RETRIES long
            if current.phase is JobPhase.SUCCEEDED:
                return "ok", ""
            if current.phase is JobPhase.CANCELLED:
                return "failed", f"dependency {dep} was cancelled ({current.job_id})"
            if current.phase is not JobPhase.FAILED:
                return "pending", ""
            if retry_due(current) is None:
                why = f"{current.reason}: {current.message}" if current.reason else current.message
                return "failed", f"dependency {dep} failed ({current.job_id}: {why})"
            following = retry_job_id(current.retry_of or current.job_id, current.retry_number + 1)
            watched.append(following)
            retry = self._index.get(following)
            if retry is None:
                return "pending", ""  # its retry is yet to be created
            current = retry
        return "pending", ""

    def _admit_what_fits(self) -> None:
        for queue, heap in self._heaps.items():
            limit = self._book.limit(queue)
            while heap and len(self._busy) < self._max_in_flight:
                if limit and self._book.running(queue) + self._in_flight.get(queue, 0) >= limit:
                    break
                _, _, job_id = heapq.heappop(heap)
                self._queued.discard(job_id)
                record = self._index.get(job_id)
                if record is None or not record.phase.is_waiting or job_id in self._busy:
                    continue  # admitted, cancelled or deleted since it was queued
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

    def _spawn(self, record: JobRecord, write: Awaitable[None]) -> None:
        self._busy.add(record.job_id)

        async def run() -> None:
            try:
                await write
            except (FailedPrecondition, NotFound):
                pass  # no longer held: admitted, cancelled, failed or deleted by someone else
            except JobSchedulerError as exc:
                self._on_error(record.job_id, exc)
                await asyncio.sleep(ERROR_DELAY_SECONDS)
                self._dirty.add(record.job_id)
            finally:
                self._busy.discard(record.job_id)
                self._wake.set()

        task = asyncio.create_task(run(), name=f"admission {record.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _admit(self, record: JobRecord) -> None:
        try:
            now = self._clock()
            admitted = await self._backend.admit(record.job_id, at=now)
            self._on_admitted(admitted, max(0.0, (now - ready_at(record)).total_seconds()))
        finally:
            self._in_flight[record.queue] -= 1

    async def _hold(self, record: JobRecord, phase: JobPhase) -> None:
        await self._backend.hold(record.job_id, phase)

    async def _fail(self, record: JobRecord, reason: str, message: str) -> None:
        await self._backend.fail(record.job_id, reason=reason, message=message, at=self._clock())

    async def _confirm_missing(self, record: JobRecord, dep: str) -> None:
        """A dependency the index does not know: created a moment ago elsewhere, or absent."""
        try:
            found = await self._backend.get(dep)
        except NotFound:
            await self._fail(record, DEPENDENCY_NOT_FOUND, f"dependency {dep} does not exist")
            return
        if found.owner != record.owner:
            await self._fail(record, DEPENDENCY_NOT_FOUND, f"dependency {dep} does not exist")
            return
        await asyncio.sleep(0.2)  # the index will have it shortly
        self._dirty.add(record.job_id)


def waiting_phase(
    index: JobIndex, depends_on: Iterable[str], start_after: datetime | None, now: datetime
) -> JobPhase | None:
    """The phase a new job is created in (SCHEDULED, WAITING), or None if only its queue matters."""
    if start_after is not None and start_after > now:
        return JobPhase.SCHEDULED
    for dep in depends_on:
        record = index.get(dep)
        if record is None or record.phase is not JobPhase.SUCCEEDED:
            return JobPhase.WAITING
    return None
