"""The due-time loop on the local backend with an injected clock (no real minute waits): one job
per minute across DST, FORBID, REPLACE, a downtime of three periods, delete, idempotent runs."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from local_harness import running_backend, wait_phase

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.api.convert import schedule_request
from jobscheduler.app._build import builtin_types, job_defaults
from jobscheduler.backends.local import LocalBackend
from jobscheduler.config import Settings
from jobscheduler.core.auth import Caller
from jobscheduler.core.index import JobIndex
from jobscheduler.core.model import JobFilter, JobPhase, JobRecord
from jobscheduler.core.schedules.loop import ScheduleLoop
from jobscheduler.core.schedules.model import ConcurrencyPolicy, ScheduleSpec
from jobscheduler.core.schedules.service import ScheduleService
from jobscheduler.core.schedules.spec import ScheduleChanges
from jobscheduler.core.service import JobService

pytestmark = pytest.mark.asyncio
ALICE = Caller("alice")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Rig:
    backend: LocalBackend
    index: JobIndex
    jobs: JobService
    schedules: ScheduleService
    loop: ScheduleLoop
    clock: Clock

    async def at(self, when: datetime) -> None:
        self.clock.now = when
        await self.loop.tick()

    def made(self, name: str) -> list[JobRecord]:
        records = [r for r in self.index.records() if r.schedule == name]
        return sorted(records, key=lambda r: r.scheduled_at or datetime.min.replace(tzinfo=UTC))


@contextlib.asynccontextmanager
async def rig(tmp_path: pathlib.Path, start: datetime) -> AsyncIterator[Rig]:
    settings = Settings(backend="local", data_dir=str(tmp_path))
    clock = Clock(start)
    async with running_backend(tmp_path, max_parallel=1) as (backend, index):
        jobs = JobService(backend, builtin_types(settings), job_defaults(settings), index, clock=clock)
        schedules = ScheduleService(backend.schedules, jobs, clock=clock)
        yield Rig(backend, index, jobs, schedules, ScheduleLoop(schedules), clock)


def spec(name: str, cron: str = "*/1 * * * *", **fields: Any) -> ScheduleSpec:
    job = schedule_request(
        pb.ScheduleJobRequest(
            name=name,
            timer_job=pb.TimerJob(
                duration_seconds=60, timer_name="t", control_plane_endpoint="http://127.0.0.1:9/"
            ),
        )
    )
    return ScheduleSpec(name=name, cron=cron, job=job, **fields)


@pytest.mark.parametrize(
    ("zone", "change"),
    [
        ("America/New_York", datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),  # spring forward
        ("Europe/Berlin", datetime(2026, 10, 25, 1, 0, tzinfo=UTC)),  # fall back
    ],
)
async def test_one_job_per_minute_across_a_dst_change(
    tmp_path: pathlib.Path, zone: str, change: datetime
) -> None:
    start = change - timedelta(minutes=4, seconds=30)
    async with rig(tmp_path, start) as r:
        await r.schedules.create(spec("every-minute", time_zone=zone), ALICE)
        for minute in range(-4, 5):
            await r.at(change + timedelta(minutes=minute, seconds=5))
        made = r.made("every-minute")
        assert [j.scheduled_at for j in made] == [change + timedelta(minutes=m) for m in range(-4, 5)]
        assert {j.owner for j in made} == {"alice"}
        view = await r.schedules.get("every-minute", ALICE)
        status = view.schedule.status
        assert status.last_schedule_time == change + timedelta(minutes=4) and status.missed_runs == 0
        assert view.next_run_time == change + timedelta(minutes=5)
        assert set(view.active_job_ids) == {j.job_id for j in made}


async def test_forbid_skips_while_the_previous_job_runs(tmp_path: pathlib.Path) -> None:
    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    async with rig(tmp_path, t0) as r:
        await r.schedules.create(spec("forbid", concurrency_policy=ConcurrencyPolicy.FORBID), ALICE)
        await r.at(t0 + timedelta(minutes=1, seconds=1))
        [first] = r.made("forbid")
        await r.at(t0 + timedelta(minutes=2, seconds=1))
        assert r.made("forbid") == [r.index.get(first.job_id)]
        assert (await r.schedules.get("forbid", ALICE)).schedule.status.skipped_runs == 1
        await r.jobs.cancel(first.job_id, "done", ALICE)
        await wait_phase(r.index, first.job_id, JobPhase.CANCELLED)
        await r.at(t0 + timedelta(minutes=3, seconds=1))
        assert [j.scheduled_at for j in r.made("forbid")] == [
            t0 + timedelta(minutes=1),
            t0 + timedelta(minutes=3),
        ]


async def test_replace_cancels_the_previous_job(tmp_path: pathlib.Path) -> None:
    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    async with rig(tmp_path, t0) as r:
        await r.schedules.create(spec("replace", concurrency_policy=ConcurrencyPolicy.REPLACE), ALICE)
        await r.at(t0 + timedelta(minutes=1, seconds=1))
        [first] = r.made("replace")
        await r.at(t0 + timedelta(minutes=2, seconds=1))
        assert (await wait_phase(r.index, first.job_id)).phase is JobPhase.CANCELLED
        first_again, second = r.made("replace")
        assert first_again.job_id == first.job_id and not second.phase.is_terminal
        assert (await r.schedules.get("replace", ALICE)).active_job_ids == (second.job_id,)


async def test_three_periods_down_make_one_catch_up_run_and_count_the_rest_missed(
    tmp_path: pathlib.Path,
) -> None:
    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    async with rig(tmp_path, t0) as r:
        await r.schedules.create(spec("catch-up", cron="0 * * * *", starting_deadline_seconds=600), ALICE)
        await r.schedules.create(spec("too-late", cron="0 * * * *", starting_deadline_seconds=60), ALICE)
        await r.at(t0 + timedelta(hours=3, minutes=5))  # the 13:00, 14:00 and 15:00 runs were missed
        [run] = r.made("catch-up")
        assert run.scheduled_at == t0 + timedelta(hours=3)
        status = (await r.schedules.get("catch-up", ALICE)).schedule.status
        assert (status.missed_runs, status.last_missed_time) == (2, t0 + timedelta(hours=2))
        assert status.last_schedule_time == t0 + timedelta(hours=3)
        assert r.made("too-late") == []  # 15:00 is 5 minutes late, over its 60 s deadline
        status = (await r.schedules.get("too-late", ALICE)).schedule.status
        assert (status.missed_runs, status.last_missed_time, status.last_schedule_time) == (
            3,
            t0 + timedelta(hours=3),
            None,
        )
        await r.at(t0 + timedelta(hours=3, minutes=30))  # nothing new is due
        assert len(r.made("catch-up")) == 1


async def test_delete_stops_runs_and_suspend_pauses_them(tmp_path: pathlib.Path) -> None:
    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    async with rig(tmp_path, t0) as r:
        await r.schedules.create(spec("gone"), ALICE)
        await r.schedules.create(spec("paused", suspend=True), ALICE)
        await r.at(t0 + timedelta(minutes=1, seconds=1))
        assert len(r.made("gone")) == 1 and r.made("paused") == []
        _, cancelled = await r.schedules.delete("gone", ALICE)
        assert cancelled == ()
        await r.at(t0 + timedelta(minutes=2, seconds=1))
        assert len(r.made("gone")) == 1 and r.made("paused") == []


async def test_a_run_is_made_once_even_if_its_record_was_lost(tmp_path: pathlib.Path) -> None:
    """A crash between creating the job and recording the run: the next tick meets the same job."""
    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    async with rig(tmp_path, t0) as r:
        created = await r.schedules.create(spec("once"), ALICE)
        await r.at(t0 + timedelta(minutes=1, seconds=1))
        stored = await r.backend.schedules.get("alice", "once")
        await r.backend.schedules.update(replace(stored, status=created.schedule.status), {})
        await r.at(t0 + timedelta(minutes=1, seconds=2))
        [job] = r.made("once")
        # Jobs are ordinary: listed by their schedule, owned by the schedule's owner.
        page = await r.jobs.list(JobFilter(schedule="once"), caller=ALICE)
        assert [j.job_id for j in page.records] == [job.job_id]
        assert not (await r.jobs.list(JobFilter(schedule="once"), caller=Caller("bob"))).records


async def test_the_loop_sleeps_until_the_next_due_time_and_wakes_on_changes(tmp_path: pathlib.Path) -> None:
    t0 = datetime(2026, 5, 1, 12, 0, 50, tzinfo=UTC)
    async with rig(tmp_path, t0) as r:
        delays: asyncio.Queue[float] = asyncio.Queue()

        async def sleep(seconds: float) -> None:
            delays.put_nowait(seconds)
            await asyncio.Event().wait()  # only a change wakes the loop

        loop = ScheduleLoop(r.schedules, sleep=sleep)
        task = asyncio.create_task(loop.run())
        try:
            assert await asyncio.wait_for(delays.get(), 5) == 30.0  # nothing scheduled: the bound
            await r.schedules.create(spec("soon"), ALICE)
            assert await asyncio.wait_for(delays.get(), 5) == 10.0  # 12:01:00 is due in 10 s
            r.clock.now = t0 + timedelta(seconds=15)
            await r.schedules.update("soon", ScheduleChanges(suspend=True), ALICE)
            assert await asyncio.wait_for(delays.get(), 5) == 30.0
            assert r.made("soon") == []
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_the_loop_outlives_a_failing_store(tmp_path: pathlib.Path) -> None:
    async with rig(tmp_path, datetime(2026, 5, 1, 12, 0, tzinfo=UTC)) as r:
        errors: list[str] = []
        slept = asyncio.Event()

        async def sleep(seconds: float) -> None:
            slept.set()
            await asyncio.Event().wait()

        loop = ScheduleLoop(r.schedules, sleep=sleep, on_error=lambda name, exc: errors.append(exc.message))
        r.backend.schedules.close()  # every statement now raises sqlite3.ProgrammingError
        task = asyncio.create_task(loop.run())
        try:
            await asyncio.wait_for(slept.wait(), 5)
            assert not task.done() and len(errors) == 1 and "ProgrammingError" in errors[0]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_damaged_row_does_not_hide_the_other_schedules(tmp_path: pathlib.Path) -> None:
    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    async with rig(tmp_path, t0) as r:
        await r.schedules.create(spec("good"), ALICE)
        await r.schedules.create(spec("bad"), ALICE)
        db = sqlite3.connect(tmp_path / "jobscheduler.db")
        with db:
            db.execute("UPDATE schedules SET spec = '{\"oops\": 1}' WHERE name = 'bad'")
        db.close()
        assert [s.name for s in await r.backend.schedules.list()] == ["good"]
        await r.at(t0 + timedelta(minutes=1, seconds=1))
        assert len(r.made("good")) == 1


async def test_a_restart_after_three_missed_periods_makes_one_catch_up_run(tmp_path: pathlib.Path) -> None:
    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    async with rig(tmp_path, t0) as r:
        await r.schedules.create(spec("hourly", cron="@hourly", starting_deadline_seconds=300), ALICE)
        await r.at(t0 + timedelta(hours=1, seconds=5))
        assert len(r.made("hourly")) == 1
    # The service is down from 13:00:05 until 16:01: the 14:00, 15:00 and 16:00 runs are due.
    async with rig(tmp_path, t0 + timedelta(hours=4, minutes=1)) as r:
        await r.loop.tick()
        assert [j.scheduled_at for j in r.made("hourly")] == [
            t0 + timedelta(hours=1),
            t0 + timedelta(hours=4),
        ]
        status = (await r.schedules.get("hourly", ALICE)).schedule.status
        assert (status.missed_runs, status.last_missed_time) == (2, t0 + timedelta(hours=3))
