"""What a previous run of the local backend left behind: its leftover processes and its unfinished
attempts and jobs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from datetime import datetime

from jobscheduler.backends.local._store import Store
from jobscheduler.backends.local._supervisor import is_leftover, kill_stragglers, marked_processes
from jobscheduler.core.model import JobPhase
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.backends.local")


def recover(store: Store, clock: Callable[[], datetime]) -> list[str]:
    """Kill the leftover processes (also of jobs cancelled during their kill grace), fail the jobs
    that were running; the ids of the jobs still waiting to run, in FIFO order."""
    pending: list[str] = []
    marked: dict[str, list[int]] | None = None
    for row in store.all():
        if row.phase == JobPhase.RUNNING.value and all(a.finished_at is not None for a in row.attempts):
            # Its process was started just before the service died, before its attempt's row was
            # written (once the process runs): no recorded group, so found by the job's marker.
            marked = marked_processes() if marked is None else marked
            for pid in marked.get(row.job_id, ()):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    log.warning("leftover processes killed", job_id=row.job_id, pid=pid)
                    kill_stragglers(os.getpgid(pid))
        for attempt in (a for a in row.attempts if a.finished_at is None):
            pgid = attempt.pgid if attempt.pgid is not None else attempt.pid
            if pgid is not None and is_leftover(pgid, row.job_id, attempt.process_start):
                log.warning("leftover processes killed", job_id=row.job_id, attempt=attempt.number, pgid=pgid)
                kill_stragglers(pgid)
            reason = "Cancelled" if row.phase == JobPhase.CANCELLED.value else "ServiceRestarted"
            store.finish_attempt(row.job_id, attempt.number, clock(), None, reason)
        if row.phase == JobPhase.RUNNING.value:
            store.update_job(
                row.job_id,
                phase=JobPhase.FAILED.value,
                reason="ServiceRestarted",
                message="the service stopped while the job was running; it was not resumed",
                finished_at=clock(),
            )
            log.warning("job marked failed after restart", job_id=row.job_id, reason="ServiceRestarted")
        elif row.phase == JobPhase.PENDING.value:
            pending.append(row.job_id)
    return pending
