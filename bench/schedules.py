"""What schedules cost on the event loop, as ratios against ScheduleJob's own work in the same run.

Run by hand (never by the test suite)::

    .venv/bin/python bench/schedules.py [--rounds 5] [--schedules 1000]

1. CreateSchedule's extra validation (cron + time zone + the shortest gap over the next 200 runs,
   cron.validate) for a few expressions in a zone with DST, against JobService.prepare of the same
   timer job (what ScheduleJob validates and renders). Aim: <= 3x prepare for ``*/1 * * * *``.
2. next_run_time, computed for every schedule of a ListSchedules page, against encoding a Job
   message (convert.job_message), the per-item work of a ListJobs page. Aim: <= 3x.

Prints medians over ``--rounds`` alternating rounds and PASS/MISS per aim.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.api import convert
from jobscheduler.app._build import builtin_types, job_defaults
from jobscheduler.config import Settings
from jobscheduler.core.errors import InvalidArgument
from jobscheduler.core.index import JobIndex
from jobscheduler.core.model import JobPhase, JobRecord
from jobscheduler.core.schedules import cron
from jobscheduler.core.service import JobService

EXPRESSIONS = ("*/1 * * * *", "30 2 * * *", "0 9-17 * * MON-FRI", "0 0 29 2 *")
ZONE = "America/New_York"


def per_call(fn: Callable[[], object], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n


def validate(expression: str, minimum: int, now: datetime) -> None:
    """Accepted or refused (too frequent): either way the cost of answering."""
    with contextlib.suppress(InvalidArgument):
        cron.validate(expression, ZONE, after=now, min_interval_seconds=minimum)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--schedules", type=int, default=1000)
    args = parser.parse_args()
    settings = Settings(backend="local")
    jobs = JobService(None, builtin_types(settings), job_defaults(settings), JobIndex())  # type: ignore[arg-type]
    request = convert.schedule_request(
        pb.ScheduleJobRequest(
            name="bench",
            timer_job=pb.TimerJob(
                duration_seconds=5, timer_name="t", control_plane_endpoint="http://127.0.0.1:9/"
            ),
        )
    )
    loop = asyncio.new_event_loop()

    def prepare() -> None:
        loop.run_until_complete(jobs.prepare(request)).render("job-bench")

    now = datetime.now(UTC)
    rules = [cron.parse_cron("*/1 * * * *", cron.parse_zone(ZONE)) for _ in range(args.schedules)]
    record = JobRecord.build(
        job_id="job-0123456789",
        name="bench",
        type="timer",
        namespace="default",
        phase=JobPhase.RUNNING,
        created_at=now,
        started_at=now,
        labels={"team": "t1"},
        owner="alice",
    )
    results: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        results.setdefault("prepare", []).append(per_call(prepare, 200))
        for expression in EXPRESSIONS:
            for minimum in (60, 60 * 60):
                results.setdefault(f"{expression}@{minimum}", []).append(
                    per_call(lambda e=expression, m=minimum: validate(e, m, now), 20)
                )
        results.setdefault("job_message", []).append(per_call(lambda: convert.job_message(record, now), 2000))
        results.setdefault("next_run_time", []).append(
            per_call(lambda: [r.next_after(now + timedelta(seconds=17)) for r in rules], 5) / args.schedules
        )
    med = {k: statistics.median(v) for k, v in results.items()}
    prepare_us = med["prepare"] * 1e6
    print(f"JobService.prepare (timer job): {prepare_us:8.1f} us")
    for expression in EXPRESSIONS:
        for minimum in (60, 60 * 60):
            took = med[f"{expression}@{minimum}"] * 1e6
            print(
                f"cron.validate {expression!r:22} MIN {minimum:5d} s"
                f" {took:8.1f} us {took / prepare_us:6.2f}x prepare"
            )
    message_us, next_us = med["job_message"] * 1e6, med["next_run_time"] * 1e6
    print(f"convert.job_message:           {message_us:8.1f} us")
    print(f"next_run_time per schedule:    {next_us:8.1f} us {next_us / message_us:6.2f}x job_message")
    aims = {
        "validate (default MIN_SCHEDULE_INTERVAL) <= 3x prepare": all(
            med[f"{e}@60"] <= 3 * med["prepare"] for e in EXPRESSIONS
        ),
        "next_run_time <= 3x job_message": next_us <= 3 * message_us,
    }
    for aim, ok in aims.items():
        print(f"{'PASS' if ok else 'MISS'}  {aim}")


if __name__ == "__main__":
    main()
