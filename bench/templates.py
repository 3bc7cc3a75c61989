"""What a job template costs ScheduleJob: JobService.prepare (validation and rendering, the
part of ScheduleJob that runs on the event loop) for a plain request vs. the same job from a
template (read from the local backend's SQLite store, laid under the request, validated), and
RerunJob's request building (a stored request read back and overlaid) vs. the same plain prepare.

Run by hand: ``.venv/bin/python bench/templates.py [--calls 3000]``. Prints microseconds per
call and each variant's ratio to the plain request measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobscheduler.backends.local._templates import LocalTemplates  # noqa: E402
from jobscheduler.core.auth import Caller  # noqa: E402
from jobscheduler.core.index import JobIndex  # noqa: E402
from jobscheduler.core.manifests import JobDefaults  # noqa: E402
from jobscheduler.core.model import JobPhase, JobRecord, ScheduleRequest  # noqa: E402
from jobscheduler.core.rerun import rerun_request  # noqa: E402
from jobscheduler.core.service import JobService  # noqa: E402
from jobscheduler.jobtypes import builtin_registry  # noqa: E402

TIMER = {"duration_seconds": 300, "timer_name": "bench", "control_plane_endpoint": "http://cp:50053"}
CALLER = Caller("bench")


async def per_call(calls: int, call: Callable[[], Awaitable[Any]]) -> float:
    for _ in range(min(calls // 10, 200)):  # warm up
        await call()
    started = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - started) / calls * 1e6


async def main(calls: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        backend: Any = None  # prepare creates nothing
        service = JobService(
            backend,
            builtin_registry(timer_image="timer:1"),
            JobDefaults(),
            JobIndex(),
            templates=LocalTemplates(pathlib.Path(tmp) / "t.db"),
        )
        templates = service.require_templates()
        plain = ScheduleRequest(name="bench", job_field="timer_job", params=TIMER, labels={"team": "a"})
        await templates.create("bench", "", plain, CALLER)
        for i in range(50):  # a template with history
            await templates.update("bench", f"v{i + 2}", None, CALLER)
        from_template = ScheduleRequest(
            name="",
            job_field="timer_job",
            params={"duration_seconds": 60},
            labels={"run": "1"},
            template="bench",
        )
        manifest = (await service.prepare(plain, CALLER)).render("job-bench00000")
        record = JobRecord.build(
            job_id="job-bench00000", name="bench", type="timer", namespace="d", phase=JobPhase.FAILED
        )

        overrides = ScheduleRequest(name="", job_field=None, params={}, labels={"again": "1"})

        async def prepare_plain() -> None:
            (await service.prepare(plain, CALLER)).render("job-bench00001")

        async def prepare_template() -> None:
            (await service.prepare(from_template, CALLER)).render("job-bench00001")

        async def prepare_rerun() -> None:
            request, origin, _ = rerun_request(record, manifest, overrides, "")
            (await service.prepare(request, CALLER, origin=origin)).render("job-bench00001")

        base = await per_call(calls, prepare_plain)
        print(f"plain ScheduleJob request:        {base:8.1f} us/call  1.00")
        for label, call in (
            ("from a template (51 versions):", prepare_template),
            ("rerun (stored request):", prepare_rerun),
        ):
            value = await per_call(calls, call)
            print(f"{label:34s}{value:8.1f} us/call  {value / base:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    asyncio.run(main(parser.parse_args().calls))
