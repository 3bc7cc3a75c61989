"""A deterministic world for the admission loop: the real AdmissionController, QueueBook and
JobIndex, a fake clock, and a scripted in-memory backend whose writes wait until the test
lands and answers them, in any order relative to their watch events.

Everything runs on one asyncio event loop that only the test drives (``settle()``): no real
time passes and nothing happens that the test did not choose.

The backend keeps the truth (what the API server has) apart from the index (what the watch
and our own writes' answers have delivered so far). Writes behave as the real backends report
them: ``admit``/``hold``/``fail`` are compare-and-swaps on a held job (FailedPrecondition when
it is no longer held, or, as the Kubernetes backend after 5 conflicts, when it kept changing);
503 is Unavailable; an answer can be lost after the write landed. Every landed admission is
checked against the scheduling invariants at that moment (``violations``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from jobscheduler.core.admission import AdmissionController, QueueBook, QueueConfig, waiting_phase
from jobscheduler.core.errors import FailedPrecondition, NotFound, Unavailable
from jobscheduler.core.index import JobIndex
from jobscheduler.core.model import JobPhase, JobRecord, LogLine, Priority

from .clock import FakeClock

OUTCOMES = ("ok", "conflict", "unavailable", "lost")


@dataclass
class Call:
    """One write the loop made, waiting for the test: landed (applied to the truth) or not,
    then answered."""

    kind: str  # admit, hold, fail
    job_id: str
    args: dict[str, Any]
    future: asyncio.Future[JobRecord]
    landed: bool = False
    outcome: str = ""  # ok, conflict, unavailable, lost, refused (no longer held)
    result: JobRecord | None = None


@dataclass
class SimBackend:
    """The scripted backend (the JobBackend port) over the truth."""

    clock: FakeClock
    index: JobIndex
    limits: Mapping[str, int]
    name: str = "sim"
    truth: dict[str, JobRecord] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    #: The index's version of each job (what the watch or an answer delivered).
    seen: dict[str, int] = field(default_factory=dict)
    events: list[tuple[str, int]] = field(default_factory=list)  # (job id, version) not delivered yet
    calls: list[Call] = field(default_factory=list)
    admissions: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    _version: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _history: dict[tuple[str, int], JobRecord] = field(default_factory=dict)

    # --- the truth ---------------------------------------------------------------------------

    def change(self, record: JobRecord, *, read_your_write: bool = False) -> JobRecord:
        version = next(self._version)
        self.truth[record.job_id] = record
        self.versions[record.job_id] = version
        self._history[record.job_id, version] = record
        if read_your_write:
            self.remember(record.job_id, version)
        else:
            self.events.append((record.job_id, version))
        return record

    def remember(self, job_id: str, version: int) -> None:
        """As the Kubernetes backend: take a version unless a newer one is known."""
        if version > self.seen.get(job_id, 0):
            self.seen[job_id] = version
            self.index.apply(self._history[job_id, version])

    def deliver(self, i: int) -> None:
        self.remember(*self.events.pop(i))

    def running(self, queue: str) -> list[str]:
        return [
            r.job_id
            for r in self.truth.values()
            if r.queue == queue and r.admitted_at is not None and not r.phase.is_terminal
        ]

    # --- the port ----------------------------------------------------------------------------

    async def start(self, index: JobIndex) -> None:
        index.mark_synced()

    async def create(self, manifest: Mapping[str, Any]) -> JobRecord:
        raise NotImplementedError  # the test creates jobs with submit()

    async def get(self, job_id: str) -> JobRecord:
        await asyncio.sleep(0)
        if job_id not in self.truth:
            raise NotFound(f"job {job_id} not found")
        return self.truth[job_id]

    async def manifest(self, job_id: str) -> dict[str, Any]:
        raise NotImplementedError

    async def list(self) -> list[JobRecord]:
        await asyncio.sleep(0)
        return list(self.truth.values())

    async def admit(self, job_id: str, *, at: datetime) -> JobRecord:
        return await self._call("admit", job_id, at=at)

    async def hold(self, job_id: str, phase: JobPhase) -> JobRecord:
        return await self._call("hold", job_id, phase=phase)

    async def fail(self, job_id: str, *, reason: str, message: str, at: datetime) -> JobRecord:
        return await self._call("fail", job_id, reason=reason, message=message, at=at)

    def logs(
        self, record: JobRecord, *, follow: bool, tail_lines: int, attempt: int
    ) -> AsyncIterator[LogLine]:
        raise NotImplementedError

    async def cancel(self, job_id: str, *, reason: str, at: datetime) -> JobRecord:
        record = self.truth[job_id]
        return self.change(record.replace(phase=JobPhase.CANCELLED, finished_at=at), read_your_write=True)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def _call(self, kind: str, job_id: str, **args: Any) -> JobRecord:
        call = Call(kind, job_id, args, asyncio.get_running_loop().create_future())
        self.calls.append(call)
        return await call.future

    # --- the test's side of a write -------------------------------------------------------------

    def land(self, call: Call, outcome: str) -> None:
        """The API server takes (ok, lost: the answer will be lost) or refuses the write."""
        assert not call.landed
        call.landed = True
        current = self.truth.get(call.job_id)
        if outcome in ("conflict", "unavailable"):
            call.outcome = outcome
            return
        if current is None or not current.phase.is_waiting:
            call.outcome = "refused"
            return
        call.outcome = outcome
        if call.kind == "admit":
            call.result = self.change(current.replace(phase=JobPhase.PENDING, admitted_at=call.args["at"]))
            self._check_admission(call.result)
        elif call.kind == "hold":
            call.result = self.change(replace(current, phase=call.args["phase"]))
        else:
            failed = replace(
                current,
                phase=JobPhase.FAILED,
                reason=call.args["reason"],
                message=call.args["message"],
                finished_at=call.args["at"],
            )
            call.result = self.change(failed)

    def answer(self, call: Call) -> None:
        assert call.landed
        self.calls.remove(call)
        if call.future.done():
            return  # its caller is gone (leadership lost)
        if call.outcome == "ok":
            assert call.result is not None
            self.remember(call.job_id, self.versions[call.job_id])
            call.future.set_result(self.truth[call.job_id])
        elif call.outcome == "refused":
            if call.job_id in self.truth:  # the backend read it again: the index has it too
                self.remember(call.job_id, self.versions[call.job_id])
            call.future.set_exception(FailedPrecondition(f"job {call.job_id} is no longer held"))
        elif call.outcome == "conflict":
            call.future.set_exception(FailedPrecondition(f"job {call.job_id} kept changing; not changed"))
        else:
            call.future.set_exception(Unavailable("Kubernetes API: 503 Service Unavailable"))

    def _check_admission(self, record: JobRecord) -> None:
        job_id = record.job_id
        self.admissions[job_id] = self.admissions.get(job_id, 0) + 1
        if self.admissions[job_id] > 1:
            self.violations.append(f"{job_id} admitted twice")
        limit = self.limits.get(record.queue, 0)
        if limit and len(self.running(record.queue)) > limit:
            self.violations.append(f"queue {record.queue}: {self.running(record.queue)} over {limit}")
        if record.start_after is not None and (
            record.admitted_at is None
            or record.admitted_at < record.start_after
            or self.clock.now < record.start_after
        ):
            self.violations.append(f"{job_id} admitted at {record.admitted_at}, before {record.start_after}")
        for dep in record.depends_on:
            found = self.truth.get(dep)
            if found is None or found.owner != record.owner or found.phase is not JobPhase.SUCCEEDED:
                self.violations.append(f"{job_id} admitted while its dependency {dep} is {found}")


class World:
    """The backend, the index, the book and one leader's admission loop, on one event loop."""

    def __init__(self, limits: Mapping[str, int]) -> None:
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.limits = dict(limits)
        self.index = JobIndex(clock=self.clock)
        self.backend = SimBackend(self.clock, self.index, self.limits)
        self.index.mark_synced()
        queues = {name: QueueConfig(name, limit) for name, limit in self.limits.items()}
        self.book = QueueBook(self.index, queues)
        self.leader: asyncio.Task[None] | None = None
        self.leaders = 0
        self._ids = itertools.count(1)
        self.elect()

    # --- driving --------------------------------------------------------------------------------

    def settle(self, rounds: int = 60) -> None:
        """Let every task run until it waits for the test (no real time passes)."""

        async def spin() -> None:
            for _ in range(rounds):
                await asyncio.sleep(0)

        self.loop.run_until_complete(spin())
        if self.leader is not None and self.leader.done() and not self.leader.cancelled():
            self.leader.result()  # the loop crashed: raise it here

    def elect(self) -> None:
        controller = AdmissionController(
            self.backend, self.index, self.book, clock=self.clock, sleep=self.clock.sleep
        )
        self.leader = self.loop.create_task(controller.run())
        self.leaders += 1
        self.settle()

    def lose_leadership(self, lands: list[bool]) -> None:
        """The leader stops (its in-flight writes land or not, before the next leader lists the
        jobs: the Lease's expiry gap), and a new one starts on the same index."""
        assert self.leader is not None
        for call, land in zip(list(self.backend.calls), itertools.cycle(lands or [False]), strict=False):
            if not call.landed and land:
                self.backend.land(call, "ok")
            self.backend.calls.remove(call)
        self.leader.cancel()
        self.settle()
        self.elect()

    def close(self) -> None:
        if self.leader is not None:
            self.leader.cancel()
            self.settle()
        self.loop.close()

    # --- what users and the Job controller do ---------------------------------------------------

    def submit(
        self,
        *,
        owner: str = "alice",
        queue: str = "default",
        priority: Priority = Priority.NORMAL,
        delay: float | None = None,
        depends_on: tuple[str, ...] = (),
    ) -> JobRecord:
        """As JobService.schedule: created held (SCHEDULED, WAITING, QUEUED) or running."""
        now = self.clock.now
        start = now + timedelta(seconds=delay) if delay else None
        held = waiting_phase(self.index, depends_on, start, now, owner)
        if held is None and self.limits.get(queue, 0):
            held = JobPhase.QUEUED
        job_id = f"job-{next(self._ids)}"
        record = JobRecord.build(
            job_id=job_id,
            name=job_id,
            type="timer",
            namespace="sim",
            phase=held or JobPhase.PENDING,
            created_at=now,
            owner=owner,
            start_after=start,
            queue=queue,
            priority=priority,
            depends_on=depends_on,
            enqueued_at=now if held is not None else None,
            admitted_at=None if held is not None else now,
        )
        if held is None:
            self.backend.admissions[job_id] = 1
        self.backend.change(record, read_your_write=True)
        self.settle()
        return record

    def start(self, job_id: str) -> None:
        record = self.backend.truth[job_id]
        assert record.phase is JobPhase.PENDING
        self.backend.change(replace(record, phase=JobPhase.RUNNING, started_at=self.clock.now))

    def finish(self, job_id: str, *, succeed: bool = True) -> None:
        record = self.backend.truth[job_id]
        assert record.admitted_at is not None and not record.phase.is_terminal
        phase = JobPhase.SUCCEEDED if succeed else JobPhase.FAILED
        self.backend.change(replace(record, phase=phase, finished_at=self.clock.now))

    def cancel(self, job_id: str) -> None:
        self.loop.run_until_complete(self.backend.cancel(job_id, reason="test", at=self.clock.now))
        self.settle()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.settle()

    def deliver_all(self) -> None:
        while self.backend.events:
            self.backend.deliver(0)
        self.settle()

    def resolve(self, call: Call, outcome: str = "ok", *, event_first: bool = False) -> None:
        """Land the write, then deliver its watch event before or after its answer."""
        self.backend.land(call, outcome)
        if event_first:
            self.deliver_all()
        self.backend.answer(call)
        self.settle()

    def pending(self, kind: str, job_id: str) -> Call:
        (call,) = [c for c in self.backend.calls if c.kind == kind and c.job_id == job_id and not c.landed]
        return call

    def quiesce(self, rounds: int = 12) -> None:
        """Deliver every event, let every write succeed, and let time pass (backoffs, start
        times) until nothing is left to do."""
        for _ in range(rounds):
            self.deliver_all()
            while self.backend.calls:
                for call in list(self.backend.calls):
                    if not call.landed:
                        self.backend.land(call, "ok")
                    self.backend.answer(call)
                self.settle()
                self.deliver_all()
            self.advance(31)
            if not self.backend.calls and not self.backend.events:
                self.settle()
                if not self.backend.calls and not self.backend.events:
                    return
        raise AssertionError(f"not quiescent: {self.backend.calls} {self.backend.events}")

    # --- checks -------------------------------------------------------------------------------

    def stuck(self) -> list[str]:
        """After quiesce(): held jobs the loop should have admitted, failed or relabelled."""
        problems = []
        for record in self.backend.truth.values():
            if not record.phase.is_waiting:
                continue
            deps = [self.backend.truth.get(d) for d in record.depends_on]
            if any(
                d is None or d.owner != record.owner or d.phase in (JobPhase.FAILED, JobPhase.CANCELLED)
                for d in deps
            ):
                problems.append(f"{record.job_id} should have failed: {record.depends_on}")
                continue
            if any(d is not None and d.phase is not JobPhase.SUCCEEDED for d in deps):
                continue  # still waiting for its dependencies
            if record.start_after is not None and record.start_after > self.clock.now:
                continue
            limit = self.limits.get(record.queue, 0)
            if not limit or len(self.backend.running(record.queue)) < limit:
                problems.append(f"{record.job_id} stranded ({record.phase.value}) in {record.queue}")
            elif record.phase is not JobPhase.QUEUED:
                problems.append(f"{record.job_id} admissible but reports {record.phase.value}")
        for job_id, record in self.backend.truth.items():
            if self.index.get(job_id) != record:
                problems.append(f"index out of date for {job_id}")
        return problems
