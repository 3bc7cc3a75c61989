"""Schedules: the backend's ScheduleStore, the ScheduleService over it, and the due-time loop
where the backend does not fire schedules itself (local)."""

from __future__ import annotations

from typing import Any

from jobscheduler.config import Settings
from jobscheduler.core.schedules.loop import ScheduleLoop
from jobscheduler.core.schedules.ports import ScheduleStore
from jobscheduler.core.schedules.service import ScheduleService
from jobscheduler.core.service import JobService
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.schedules")


def build_schedules(
    settings: Settings, backend: Any, jobs: JobService
) -> tuple[ScheduleService | None, list[ScheduleLoop]]:
    """The ScheduleService over the backend's store (``backend.schedules``; None without one)
    and the loops to run (one where the store does not fire schedules itself)."""
    store: ScheduleStore | None = getattr(backend, "schedules", None)
    if store is None:
        return None, []
    service = ScheduleService(store, jobs, min_interval_seconds=settings.min_schedule_interval)
    if store.fires_itself:
        return service, []
    return service, [
        ScheduleLoop(
            service,
            on_error=lambda name, exc: log.warning("schedule run failed", schedule=name, error=exc.message),
        )
    ]
