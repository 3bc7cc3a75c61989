"""Schedules: the backend's ScheduleStore, the ScheduleService on the JobService, and the
due-time loop where the backend does not fire schedules itself (local)."""

from __future__ import annotations

from typing import Any

from jobscheduler.api.schedules import attach
from jobscheduler.config import Settings
from jobscheduler.core.schedules.loop import ScheduleLoop
from jobscheduler.core.schedules.ports import ScheduleStore
from jobscheduler.core.schedules.service import ScheduleService
from jobscheduler.core.service import JobService
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.schedules")


def build_schedules(settings: Settings, backend: Any, jobs: JobService) -> list[ScheduleLoop]:
    """Attach a ScheduleService to ``jobs`` if the backend has a store (``backend.schedules``);
    the loops to run (one where the store does not fire schedules itself)."""
    store: ScheduleStore | None = getattr(backend, "schedules", None)
    if store is None:
        return []
    service = ScheduleService(store, jobs, min_interval_seconds=settings.min_schedule_interval)
    attach(jobs, service)
    if store.fires_itself:
        return []
    return [
        ScheduleLoop(
            service,
            on_error=lambda name, exc: log.warning("schedule run failed", schedule=name, error=exc.message),
        )
    ]
