"""Scheduled starts (ScheduleJob ``start_after`` / ``delay_seconds``).

Such a job is created suspended (``spec.suspend: true``) with its start time in an
annotation, so the schedule lives in the cluster. At that time a controller resumes it; the
resume is a patch to a fixed value, so replicas that do it at once, or a restarted service
that does it again, change nothing more.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobscheduler.core.controllers import DueController
from jobscheduler.core.index import JobIndex
from jobscheduler.core.model import JobPhase, JobRecord
from jobscheduler.core.ports import JobBackend


class StartController(DueController):
    """Resumes each SCHEDULED job at its start_after time."""

    def __init__(self, backend: JobBackend, index: JobIndex, **options: Any) -> None:
        super().__init__(index, **options)
        self._backend = backend

    def due(self, record: JobRecord) -> datetime | None:
        if record.phase is not JobPhase.SCHEDULED:
            return None
        return record.start_after or record.created_at or self._clock()

    async def act(self, record: JobRecord) -> None:
        await self._backend.resume(record.job_id)
