"""A recurring schedule: what it is (:class:`ScheduleSpec`), whose it is and what it did.

A :class:`Schedule` is what a :class:`~jobscheduler.core.schedules.ports.ScheduleStore` keeps:
the spec (name, cron, time zone, the job's :class:`~jobscheduler.core.model.ScheduleRequest`,
concurrency policy, starting deadline, suspend, history limits, description, template and
version), the owner, created/updated times, and the status a backend records
(:class:`ScheduleStatus`: last schedule time, last successful time, missed and skipped runs).

Two things a schedule reports are derived, never stored: ``active_job_ids`` (from the job
index: the owner's unfinished jobs whose ``record.schedule`` is the schedule's name) and
``next_run_time`` (from cron, time zone and now); :class:`ScheduleView` pairs them with the
schedule (built by the ScheduleService).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from jobscheduler.core.model import ScheduleRequest

#: A CronJob keeps this many finished jobs of each kind unless told otherwise.
DEFAULT_SUCCESSFUL_HISTORY: Final = 3
DEFAULT_FAILED_HISTORY: Final = 1


class ConcurrencyPolicy(enum.Enum):
    """What a run does while an earlier job of the schedule is unfinished (Kubernetes' spellings)."""

    #: Start the new job anyway.
    ALLOW = "Allow"
    #: Skip this run (counted in ``skipped_runs``).
    FORBID = "Forbid"
    #: Cancel the unfinished jobs, then start the new one.
    REPLACE = "Replace"


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """What the owner asked for; CreateSchedule sets it, UpdateSchedule changes parts of it."""

    name: str
    cron: str
    #: The job each run makes; request_id, start_after, delay_seconds and depends_on unset.
    job: ScheduleRequest
    #: An IANA name; "": UTC.
    time_zone: str = ""
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW
    #: None: no limit (still at most one catch-up run).
    starting_deadline_seconds: int | None = None
    suspend: bool = False
    successful_jobs_history_limit: int = DEFAULT_SUCCESSFUL_HISTORY
    failed_jobs_history_limit: int = DEFAULT_FAILED_HISTORY
    description: str = ""
    #: The job template the job was resolved with ("", 0: none).
    template: str = ""
    template_version: int = 0


@dataclass(frozen=True, slots=True)
class ScheduleStatus:
    """What the schedule did, as the backend records it."""

    #: When the schedule last made a job (the time that run was due).
    last_schedule_time: datetime | None = None
    #: When one of its jobs last succeeded (the job's finish time).
    last_successful_time: datetime | None = None
    #: Runs missed by more than starting_deadline_seconds (or older than the one catch-up run).
    missed_runs: int = 0
    last_missed_time: datetime | None = None
    #: Runs skipped by ConcurrencyPolicy.FORBID.
    skipped_runs: int = 0
    #: The loop's cursor (local backend): the last due time it dealt with (ran, skipped or
    #: missed); None: none yet (due times count from creation).
    handled_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    """One stored schedule: spec, owner, times and status. ``(owner, spec.name)`` is unique."""

    spec: ScheduleSpec
    owner: str
    created_at: datetime
    updated_at: datetime
    status: ScheduleStatus = field(default_factory=ScheduleStatus)

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class ScheduleView:
    """A schedule as the RPCs report it: stored fields plus the derived ones."""

    schedule: Schedule
    #: The owner's unfinished jobs of this schedule, oldest first.
    active_job_ids: tuple[str, ...] = ()
    #: None while suspended.
    next_run_time: datetime | None = None


def unreadable(owner: str, name: str, created_at: datetime) -> Schedule:
    """What DeleteSchedule reports of a stored schedule edited by hand into something that no
    longer reads as one (so that deleting it stays possible): its owner and name, no job,
    suspended (no next run)."""
    spec = ScheduleSpec(
        name=name, cron="", job=ScheduleRequest(name="", job_field=None, params={}), suspend=True
    )
    return Schedule(spec=spec, owner=owner, created_at=created_at, updated_at=created_at)
