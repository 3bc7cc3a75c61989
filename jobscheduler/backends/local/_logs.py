"""An attempt's output (``GetJobLogs``): its log file, followed while the attempt runs."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from typing import Final

from jobscheduler.backends.local._store import JobRow, Store
from jobscheduler.backends.local._supervisor import read_lines
from jobscheduler.core.errors import FailedPrecondition, InvalidArgument
from jobscheduler.core.model import LogLine

_FOLLOW_POLL_SECONDS: Final = 0.2


async def attempt_logs(
    store: Store, row: JobRow, follow: bool, tail_lines: int, attempt: int
) -> AsyncIterator[LogLine]:
    """The lines of ``row``'s attempt number ``attempt`` (0: the latest), the last ``tail_lines``
    of them (0: all); with ``follow``, new lines until the attempt has ended."""
    job_id = row.job_id
    if not row.attempts:
        raise FailedPrecondition(f"job {job_id} has not started a process yet ({row.message})")
    if attempt > len(row.attempts):
        raise InvalidArgument.field("attempt", f"job {job_id} has {len(row.attempts)} attempt(s)")
    chosen = row.attempts[attempt - 1] if attempt else row.attempts[-1]
    pod_name = f"{job_id}-{chosen.number}"
    path = pathlib.Path(chosen.log_path)
    lines, offset = read_lines(path, 0)
    if tail_lines:
        lines = lines[-tail_lines:]
    for line in lines:
        yield LogLine(line, chosen.number, pod_name)
    while follow:
        current = store.get(job_id)
        running = current is not None and any(
            a.number == chosen.number and a.finished_at is None for a in current.attempts
        )
        lines, offset = read_lines(path, offset)
        for line in lines:
            yield LogLine(line, chosen.number, pod_name)
        if not running:
            return
        await asyncio.sleep(_FOLLOW_POLL_SECONDS)
