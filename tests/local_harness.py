"""A LocalBackend on this test's event loop, without gRPC: create Jobs from manifests built here
and wait (on the index's events) for them to reach a phase."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any

from jobscheduler.backends.local import LocalBackend
from jobscheduler.core.index import JobIndex
from jobscheduler.core.model import JobPhase, JobRecord

FINAL = (JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.CANCELLED)


def job(
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    backoff_limit: int = 0,
    job_id: str | None = None,
) -> dict[str, Any]:
    """A minimal batch/v1 Job (not validated: as if built by a handler that let anything through)."""
    container: dict[str, Any] = {"name": "main", "image": "busybox", "command": command}
    if env is not None:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_id or f"job-{secrets.token_hex(5)}"},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
        },
    }


async def wait_record(
    index: JobIndex, job_id: str, check: Callable[[JobRecord], bool], within: float = 15
) -> JobRecord:
    """The job's record once ``check`` holds for it (woken by the index's events)."""
    changed = asyncio.Event()
    remove = index.add_listener(lambda event: changed.set())
    try:
        async with asyncio.timeout(within):
            while True:
                changed.clear()
                record = index.get(job_id)
                if record is not None and check(record):
                    return record
                await changed.wait()
    finally:
        remove()


async def wait_phase(index: JobIndex, job_id: str, *phases: JobPhase, within: float = 15) -> JobRecord:
    """The job's record once the index has it in one of ``phases`` (default: a final one)."""
    wanted = phases or FINAL
    return await wait_record(index, job_id, lambda record: record.phase in wanted, within)


async def running_pid(index: JobIndex, data_dir: pathlib.Path, job_id: str) -> int:
    """The pid of the job's running attempt (from the backend's own SQLite rows)."""
    await wait_record(index, job_id, lambda record: record.active == 1)
    db = sqlite3.connect(data_dir / "jobscheduler.db", timeout=5)
    try:
        row = db.execute(
            "SELECT pid FROM attempts WHERE job_id = ? AND finished_at IS NULL", (job_id,)
        ).fetchone()
    finally:
        db.close()
    return int(row[0])


@contextlib.asynccontextmanager
async def running_backend(
    data_dir: pathlib.Path, **options: Any
) -> AsyncIterator[tuple[LocalBackend, JobIndex]]:
    options = {"backoff_seconds": 0.05, "kill_grace_seconds": 2.0, **options}
    backend = await LocalBackend.open(data_dir, "default", **options)
    index = JobIndex()
    try:
        await backend.start(index)
        yield backend, index
    finally:
        await backend.close()
