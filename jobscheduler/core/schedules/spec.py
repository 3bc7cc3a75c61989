"""A schedule's own fields: bounds and rules (the job itself is checked by JobService.prepare)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from jobscheduler.core.errors import FieldViolation, InvalidArgument
from jobscheduler.core.model import ScheduleRequest
from jobscheduler.core.schedules.model import ConcurrencyPolicy, ScheduleSpec
from jobscheduler.core.templates import description_problem

#: CronJob names are at most 52 characters (the controller appends 11 for its Jobs).
MAX_NAME_CHARS: Final = 52
_NAME: Final = re.compile(r"[a-z]([a-z0-9-]*[a-z0-9])?\Z", re.ASCII)
#: A starting deadline longer than a year means none; so does an unset one.
MAX_STARTING_DEADLINE_SECONDS: Final = 366 * 86400
MAX_HISTORY_LIMIT: Final = 100
#: What a schedule's job may not set: each run gets its own request_id and starts when due.
_PER_RUN_FIELDS: Final = ("request_id", "start_after", "delay_seconds", "depends_on")


def check_name(name: str, field: str = "name") -> None:
    if not (1 <= len(name) <= MAX_NAME_CHARS) or _NAME.match(name) is None:
        raise InvalidArgument.field(
            field,
            f"must be 1-{MAX_NAME_CHARS} characters of a-z, 0-9 and '-', starting with a letter "
            "and ending with a letter or digit",
        )


def job_violations(job: ScheduleRequest) -> list[FieldViolation]:
    """The fields a schedule's job may not set (each run sets them itself)."""
    return [
        FieldViolation(f"job.{name}", "is not allowed in a schedule's job (each run sets it)")
        for name in _PER_RUN_FIELDS
        if getattr(job, name)
    ]


def spec_violations(spec: ScheduleSpec) -> Iterable[FieldViolation]:
    """Everything but the name, cron, time zone and the job's own validation."""
    yield from job_violations(spec.job)
    if not isinstance(spec.concurrency_policy, ConcurrencyPolicy):  # pragma: no cover (typed)
        yield FieldViolation("concurrency_policy", "unknown policy")
    deadline = spec.starting_deadline_seconds
    if deadline is not None and not 0 <= deadline <= MAX_STARTING_DEADLINE_SECONDS:
        yield FieldViolation(
            "starting_deadline_seconds", f"must be 0-{MAX_STARTING_DEADLINE_SECONDS} (unset: no limit)"
        )
    for field in ("successful_jobs_history_limit", "failed_jobs_history_limit"):
        if not 0 <= getattr(spec, field) <= MAX_HISTORY_LIMIT:
            yield FieldViolation(field, f"must be 0-{MAX_HISTORY_LIMIT}")
    if (problem := description_problem(spec.description)) is not None:
        yield FieldViolation("description", problem)


@dataclass(frozen=True, slots=True)
class ScheduleChanges:
    """UpdateSchedule: the fields to change (None: keep)."""

    cron: str | None = None
    time_zone: str | None = None
    job: ScheduleRequest | None = None
    concurrency_policy: ConcurrencyPolicy | None = None
    starting_deadline_seconds: int | None = None
    clear_starting_deadline: bool = False
    suspend: bool | None = None
    successful_jobs_history_limit: int | None = None
    failed_jobs_history_limit: int | None = None
    description: str | None = None
