"""The schedule store port: where a backend keeps schedules (and who fires them).

* Kubernetes: a schedule is a batch/v1 CronJob; the CronJob controller fires it
  (``fires_itself = True``), even while every replica is down, from ``job_template``.
* Local: a SQLite table; core's :class:`~jobscheduler.core.schedules.loop.ScheduleLoop` fires it
  (``fires_itself = False``), and the store ignores ``job_template``.

``job_template`` is the rendered batch/v1 Job manifest of the schedule's job
(``JobService.prepare(...).render(<placeholder id>)``), held (suspended) so that the admission
loop admits each job the backend makes from it. Implementations raise only
:mod:`jobscheduler.core.errors` errors. Schedules are keyed by ``(owner, name)``.

``active_job_ids`` and ``next_run_time`` are not the store's business: the ScheduleService derives
them (from the job index and from cron + time zone + now).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from jobscheduler.core.schedules.model import Schedule


class ScheduleStore(Protocol):
    #: True: the backend fires schedules itself (Kubernetes: the CronJob controller);
    #: False: core's ScheduleLoop does.
    fires_itself: bool

    async def create(self, schedule: Schedule, job_template: Mapping[str, Any]) -> Schedule:
        """Store a new schedule; AlreadyExists if the owner has one of that name."""
        ...

    async def get(self, owner: str, name: str) -> Schedule:
        """NotFound if the owner has none of that name."""
        ...

    async def list(
        self,
        owner: str | None = None,
        *,
        after: tuple[str, str] | None = None,
        prefix: str = "",
        limit: int = 0,
    ) -> list[Schedule]:
        """The owner's schedules (None: every owner's), in no particular order. A page's hints: at
        least those named ``prefix...`` whose (owner, name) sorts after ``after``, and of them at
        least the first ``limit`` (0: all); a store may return more (the service filters and cuts),
        one that reads rows by key returns only those (ListSchedules does not decode them all)."""
        ...

    async def update(self, schedule: Schedule, job_template: Mapping[str, Any]) -> Schedule:
        """Replace the stored schedule of that owner and name (spec and status); NotFound if absent."""
        ...

    async def delete(self, owner: str, name: str) -> Schedule:
        """Remove it; the schedule as it was. NotFound if absent. Its jobs stay."""
        ...
