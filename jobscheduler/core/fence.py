"""A backend whose admission writes go out only while this replica still leads.

The admission loop runs on the Lease holder; when the Lease is lost its task is cancelled, but
a task can take a moment to stop (or swallow a cancellation). ``FencedBackend`` checks
``leading()`` right before each write the loop makes (admit, hold, fail) and refuses it with
``FailedPrecondition`` (which the loop drops, as for a job someone else changed) once the
replica no longer leads. Reads and everything else pass through unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import Any

from jobscheduler.core.errors import FailedPrecondition
from jobscheduler.core.index import JobIndex
from jobscheduler.core.model import JobPhase, JobRecord, LogLine
from jobscheduler.core.ports import JobBackend


class FencedBackend:
    """``backend`` with admit/hold/fail refused unless ``leading()`` holds when they are called."""

    def __init__(self, backend: JobBackend, leading: Callable[[], bool]) -> None:
        self._backend = backend
        self._leading = leading
        self.name = backend.name
        self.refused = 0  # writes refused because leadership was gone (for tests and diagnostics)

    def _check(self, job_id: str) -> None:
        if not self._leading():
            self.refused += 1
            raise FailedPrecondition(f"job {job_id}: not written, this replica no longer leads admission")

    async def admit(self, job_id: str, *, at: datetime) -> JobRecord:
        self._check(job_id)
        return await self._backend.admit(job_id, at=at)

    async def hold(self, job_id: str, phase: JobPhase) -> JobRecord:
        self._check(job_id)
        return await self._backend.hold(job_id, phase)

    async def fail(self, job_id: str, *, reason: str, message: str, at: datetime) -> JobRecord:
        self._check(job_id)
        return await self._backend.fail(job_id, reason=reason, message=message, at=at)

    # --- unchanged ------------------------------------------------------------------------------

    async def start(self, index: JobIndex) -> None:
        await self._backend.start(index)

    async def create(self, manifest: Mapping[str, Any]) -> JobRecord:
        return await self._backend.create(manifest)

    async def get(self, job_id: str) -> JobRecord:
        return await self._backend.get(job_id)

    async def manifest(self, job_id: str) -> dict[str, Any]:
        return await self._backend.manifest(job_id)

    async def list(self) -> list[JobRecord]:
        return await self._backend.list()

    def logs(
        self, record: JobRecord, *, follow: bool, tail_lines: int, attempt: int
    ) -> AsyncIterator[LogLine]:
        return self._backend.logs(record, follow=follow, tail_lines=tail_lines, attempt=attempt)

    async def cancel(self, job_id: str, *, reason: str, at: datetime) -> JobRecord:
        return await self._backend.cancel(job_id, reason=reason, at=at)

    async def ping(self) -> None:
        await self._backend.ping()

    async def close(self) -> None:
        await self._backend.close()
