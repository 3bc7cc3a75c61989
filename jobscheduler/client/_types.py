"""The client's value types: frozen dataclasses of plain Python values (no protobuf, no grpc)."""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Mapping
from typing import Any


class JobPhase(enum.StrEnum):
    """Lifecycle phase of a job (proto ``JobPhase`` without its prefix)."""

    UNSPECIFIED = "UNSPECIFIED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    QUEUED = "QUEUED"
    SCHEDULED = "SCHEDULED"
    WAITING = "WAITING"

    @property
    def is_terminal(self) -> bool:
        """SUCCEEDED, FAILED or CANCELLED: the job will not change phase again."""
        return self in (JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.CANCELLED)


class Priority(enum.StrEnum):
    """Admission priority within a queue (proto ``JobPriority`` without its prefix)."""

    UNSPECIFIED = "UNSPECIFIED"
    LOW = "LOW"
    NORMAL = "NORMAL"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


class EventType(enum.StrEnum):
    """What a :class:`JobEvent` reports (proto ``JobEventType`` without its prefix)."""

    UNSPECIFIED = "UNSPECIFIED"
    CREATED = "CREATED"
    STARTED = "STARTED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    DELETED = "DELETED"
    UPDATED = "UPDATED"


def _plain(value: Any) -> Any:
    """``value`` as JSON-ready data: RFC 3339 times, seconds as floats, enums as their names."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


class _Plain:
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as RFC 3339 strings (UTC, ``Z``), durations as seconds, enums by name."""
        data: dict[str, Any] = _plain(self)
        return data


@dataclasses.dataclass(frozen=True, slots=True)
class TimerJob(_Plain):
    """A timer job: waits ``duration_seconds`` (1..86400), then reports to ``control_plane_endpoint``."""

    duration_seconds: int
    timer_name: str
    control_plane_endpoint: str
    image: str = ""
    log_level: str = ""
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)

    #: The job type's name, as in ``Job.type`` and ``jobscheduler submit TYPE``.
    TYPE = "timer"


@dataclasses.dataclass(frozen=True, slots=True)
class CustomJob(_Plain):
    """A job of a plugin type (``types()`` lists them, with their parameters' JSON Schema):
    ``type`` names it, ``params`` are JSON data (sent as a google.protobuf.Struct: numbers
    become doubles, whole ones arrive as integers), checked by the service against the schema."""

    type: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class BuiltinJob(_Plain):
    """A built-in job type without a class of its own here (``container``, ``webhook``,
    ``healthcheck``: see ``types()``): ``params`` are its request message as JSON with the proto's
    field names, sent as the ``{type}_job`` member. Schedules and templates read back a job of such
    a type as this, so it can be sent back unchanged."""

    type: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)


#: Every job type the client can schedule: the type name -> its parameter class (plugin types:
#: :class:`CustomJob`).
JobSpec = TimerJob | CustomJob | BuiltinJob
JOB_TYPES: Mapping[str, type[JobSpec]] = {"timer": TimerJob}


@dataclasses.dataclass(frozen=True, slots=True)
class JobCondition(_Plain):
    """One condition of the Kubernetes Job, as the API server reports it."""

    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition_time: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Job(_Plain):
    """A job's state. Times are timezone-aware UTC datetimes (None when unset)."""

    job_id: str
    name: str
    type: str
    phase: JobPhase
    namespace: str = ""
    created_at: datetime.datetime | None = None
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    message: str = ""
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    reason: str = ""
    conditions: tuple[JobCondition, ...] = ()
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    backoff_limit: int = 0
    pod_names: tuple[str, ...] = ()
    attempts: int = 0
    duration: datetime.timedelta | None = None
    termination_reason: str = ""
    exit_code: int | None = None
    priority: Priority = Priority.NORMAL
    queue: str = ""
    owner: str = ""
    request_id: str = ""
    retry_of: str = ""
    retry_number: int = 0
    max_retries: int = 0
    start_after: datetime.datetime | None = None
    depends_on: tuple[str, ...] = ()
    enqueued_at: datetime.datetime | None = None
    admitted_at: datetime.datetime | None = None
    #: The schedule that made the job and the time it was due; the template (and version) it was
    #: made from; the job it reruns (``rerun``).
    schedule: str = ""
    scheduled_at: datetime.datetime | None = None
    template: str = ""
    template_version: int = 0
    rerun_of: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class JobEvent(_Plain):
    """One change of a job. ``resume_token`` continues a ``watch_all`` after this event."""

    type: EventType
    job: Job
    resume_token: str = ""
    time: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class JobPage(_Plain):
    """One page of ``list_page``: newest first; ``next_page_token`` is empty on the last page.
    ``resume_token`` starts a ``watch_all`` right after this list was taken (empty while the
    service is still loading its jobs)."""

    jobs: tuple[Job, ...]
    next_page_token: str = ""
    resume_token: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class LogLine(_Plain):
    """One line of a job's output, from attempt (pod) ``attempt``."""

    line: str
    attempt: int = 0
    pod_name: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class JobTypeInfo(_Plain):
    """One job type the service accepts (``types()``, ListJobTypes): built in, or from an installed
    plugin ``package`` at ``version`` (submitted as ``custom_job`` with ``type=name``);
    ``parameters_schema`` is the JSON Schema of its parameters."""

    name: str
    request_field: str
    description: str = ""
    builtin: bool = True
    package: str = ""
    version: str = ""
    parameters_schema: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class QueueStatus(_Plain):
    """One admission queue as the answering replica sees it; ``max_running`` 0 means no limit."""

    name: str
    max_running: int = 0
    running: int = 0
    queued: int = 0
    queued_by_priority: Mapping[Priority, int] = dataclasses.field(default_factory=dict)
    waiting: int = 0
    oldest_queued_age: datetime.timedelta | None = None
    oldest_queued_since: datetime.datetime | None = None


class ConcurrencyPolicy(enum.StrEnum):
    """What a schedule does when it is due while a job it made is unfinished (proto
    ``ConcurrencyPolicy``): ALLOW starts another, FORBID skips the run, REPLACE cancels the
    unfinished one first."""

    UNSPECIFIED = "UNSPECIFIED"
    ALLOW = "ALLOW"
    FORBID = "FORBID"
    REPLACE = "REPLACE"


@dataclasses.dataclass(frozen=True, slots=True)
class JobRequest(_Plain):
    """A ScheduleJobRequest as a value: the job a schedule makes, a template's partial request, or
    the overrides of ``rerun``. Unset fields (``""``, ``0``, ``None``, empty) are not sent, so a
    template's or the original job's value stands; ``job`` None keeps their job type."""

    name: str = ""
    job: JobSpec | None = None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    priority: Priority | str | None = None
    queue: str = ""
    max_retries: int = 0
    retry_backoff_seconds: int = 0
    timeout_seconds: int = 0
    ttl_seconds_after_finished: int | None = None
    #: A job template to start from (and its version; 0: the latest).
    template: str = ""
    template_version: int = 0
    start_after: datetime.datetime | None = None
    delay_seconds: int = 0
    depends_on: tuple[str, ...] = ()

    @property
    def job_type(self) -> str:
        """The job type's name (``"timer"``, a plugin type's, ...); ``""`` when ``job`` is None."""
        if self.job is None:
            return ""
        return self.job.TYPE if isinstance(self.job, TimerJob) else self.job.type


@dataclasses.dataclass(frozen=True, slots=True)
class Schedule(_Plain):
    """A recurring schedule: ``cron`` (five fields or ``@hourly``-style) in ``time_zone`` (IANA;
    empty: UTC) makes ``job`` each time it is due. The fields after ``description`` are its
    status, read only."""

    name: str
    cron: str
    job: JobRequest
    time_zone: str = ""
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.UNSPECIFIED
    starting_deadline_seconds: int | None = None
    suspend: bool = False
    successful_jobs_history_limit: int | None = None
    failed_jobs_history_limit: int | None = None
    description: str = ""
    owner: str = ""
    created_at: datetime.datetime | None = None
    updated_at: datetime.datetime | None = None
    last_schedule_time: datetime.datetime | None = None
    last_successful_time: datetime.datetime | None = None
    #: When it is due next (None while suspended).
    next_run_time: datetime.datetime | None = None
    active_job_ids: tuple[str, ...] = ()
    #: Runs missed by more than ``starting_deadline_seconds``, and the last of them.
    missed_runs: int = 0
    last_missed_time: datetime.datetime | None = None
    #: Runs skipped by ConcurrencyPolicy.FORBID.
    skipped_runs: int = 0
    template_version: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduleDeletion(_Plain):
    """What ``delete_schedule`` did: the schedule as it was, and the jobs it cancelled."""

    schedule: Schedule
    cancelled_job_ids: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class JobTemplate(_Plain):
    """One version of a job template: a named partial request that ``schedule(template=...)``,
    schedules and other templates' users start from."""

    name: str
    job: JobRequest
    description: str = ""
    version: int = 0
    owner: str = ""
    #: When this version was stored, and when version 1 was.
    created_at: datetime.datetime | None = None
    first_created_at: datetime.datetime | None = None
