"""Value types the core works with: job phases, records, requests."""

from __future__ import annotations

import dataclasses
import enum
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Final, Generic, TypeVar, cast, overload

from jobscheduler.core.labels import LabelShape, read_labels, store_labels


class JobPhase(enum.Enum):
    """Lifecycle phase, modelled on the Kubernetes Job's conditions."""

    PENDING = "PENDING"
    #: Created suspended, waiting for admission: its start time and dependencies allow it to
    #: run, its queue has no room yet.
    QUEUED = "QUEUED"
    #: Created suspended; waiting for its start_after time.
    SCHEDULED = "SCHEDULED"
    #: Created suspended; waiting for its dependencies (depends_on) to succeed.
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def is_waiting(self) -> bool:
        """Not admitted yet: queued, scheduled or waiting for dependencies."""
        return self in _WAITING


_TERMINAL = frozenset({JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.CANCELLED})
_WAITING = frozenset({JobPhase.QUEUED, JobPhase.SCHEDULED, JobPhase.WAITING})


class Priority(enum.IntEnum):
    """Admission priority: a queue admits higher priorities first, FIFO within one."""

    LOW = 1
    NORMAL = 2
    HIGH = 3
    CRITICAL = 4


#: The queue of jobs that name none.
DEFAULT_QUEUE = "default"


@dataclass(frozen=True, slots=True)
class JobCondition:
    """One condition of a Kubernetes Job, in the API's own words."""

    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class JobDetails:
    """A record's rarely set fields, behind one slot of :class:`JobRecord`: a retry's link and
    policy, a held job's admission, where it came from (schedule, template, rerun), an Indexed
    job's indexes. Read them as the record's own (``record.retry_of``). A job with none set
    shares ``NO_DETAILS``: 15 slots (120 bytes) less in every cached record."""

    #: Retries: the job this one retries (the chain's first) and which retry it is; the
    #: request's max_retries and retry_backoff_seconds (carried along the chain).
    retry_of: str = ""
    retry_number: int = 0
    max_retries: int = 0
    retry_backoff_seconds: int = 0
    #: When a SCHEDULED job is to start (None: at once).
    start_after: datetime | None = None
    #: Admission: the jobs that must succeed first, when the job was submitted (FIFO order
    #: within a priority) and when it was admitted (None: not yet, or never held: a job that
    #: could start at once is created running).
    depends_on: tuple[str, ...] = ()
    enqueued_at: datetime | None = None
    admitted_at: datetime | None = None
    #: Indexed jobs: the indexes that succeeded, and (with a backoff limit per index) those
    #: that failed, as the Job's status has them ("0-2,5"; "" for none).
    completed_indexes: str = ""
    failed_indexes: str = ""
    #: The schedule that made the job (its name; "" for none) and the time it was due then.
    schedule: str = ""
    scheduled_at: datetime | None = None
    #: The job template (name, version) the job was made from ("", 0: none).
    template: str = ""
    template_version: int = 0
    #: For a rerun (RerunJob): the job it reruns.
    rerun_of: str = ""


NO_DETAILS: Final = JobDetails()
DETAIL_FIELDS: Final = frozenset(f.name for f in fields(JobDetails))
_T = TypeVar("_T")


class _Detail(Generic[_T]):
    """``record.<name>`` reads ``record.details.<name>``."""

    __slots__ = ("_get",)

    def __set_name__(self, owner: type, name: str) -> None:
        assert name in DETAIL_FIELDS, name
        self._get = operator.attrgetter(f"details.{name}")

    @overload
    def __get__(self, record: None, owner: type | None = None) -> _Detail[_T]: ...
    @overload
    def __get__(self, record: JobRecord, owner: type | None = None) -> _T: ...
    def __get__(self, record: JobRecord | None, owner: type | None = None) -> _T | _Detail[_T]:
        return self if record is None else cast(_T, self._get(record))


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A compact summary of one job: what every RPC reports, never a whole API object.

    Build one with ``JobRecord.build(**fields)`` to pass the rarely set fields (JobDetails) by
    name too; they read as the record's own attributes."""

    job_id: str
    name: str
    type: str
    namespace: str
    phase: JobPhase
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str = ""
    reason: str = ""
    #: The labels as stored (core/labels.py): a shape many jobs share, read with this record's
    #: id and name as ``record.labels``, or a plain dict. Pass ``labels=`` to build/replace.
    stored_labels: LabelShape | Mapping[str, str] = field(default_factory=dict)
    #: As the Job's status has them (a compact sequence in cached records: core/conditions.py).
    conditions: Sequence[JobCondition] = ()
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    backoff_limit: int = 0
    #: The job's pods (local backend: one per attempt), oldest first.
    pod_names: tuple[str, ...] = ()
    #: The last terminated container's reason and exit code, if any has terminated.
    termination_reason: str = ""
    exit_code: int | None = None
    #: The identity that scheduled the job ("" for jobs from before owners were recorded).
    owner: str = ""
    #: ScheduleJob's request_id and the digest of that request ("" without one).
    request_id: str = ""
    request_hash: str = ""
    #: Admission: the queue and the priority.
    queue: str = DEFAULT_QUEUE
    priority: Priority = Priority.NORMAL
    details: JobDetails = NO_DETAILS
    #: The backend's version of the object the record was read from (Kubernetes: the Job's
    #: resourceVersion, an int when it is a plain number); opaque to the core, not compared.
    version: int | str = field(default="", compare=False, repr=False)

    retry_of = _Detail[str]()
    retry_number = _Detail[int]()
    max_retries = _Detail[int]()
    retry_backoff_seconds = _Detail[int]()
    start_after = _Detail["datetime | None"]()
    depends_on = _Detail["tuple[str, ...]"]()
    enqueued_at = _Detail["datetime | None"]()
    admitted_at = _Detail["datetime | None"]()
    completed_indexes = _Detail[str]()
    failed_indexes = _Detail[str]()
    schedule = _Detail[str]()
    scheduled_at = _Detail["datetime | None"]()
    template = _Detail[str]()
    template_version = _Detail[int]()
    rerun_of = _Detail[str]()

    @property
    def labels(self) -> Mapping[str, str]:
        return read_labels(self.stored_labels, self.job_id, self.name)

    @classmethod
    def build(cls, **fields: Any) -> JobRecord:
        """A record from all its fields by name, ``labels`` and JobDetails' included (unset
        ones: defaults)."""
        details = {name: fields.pop(name) for name in DETAIL_FIELDS & fields.keys()}
        made = JobDetails(**details) if details else NO_DETAILS
        if "labels" in fields:
            fields["stored_labels"] = store_labels(fields.pop("labels"), fields["job_id"], fields["name"])
        return cls(**fields, details=NO_DETAILS if made == NO_DETAILS else made)

    def replace(self, **changes: Any) -> JobRecord:
        """A copy with ``changes`` (fields by name, ``labels`` and JobDetails' included)."""
        detail_changes = {name: changes.pop(name) for name in DETAIL_FIELDS & changes.keys()}
        if detail_changes:
            made = dataclasses.replace(self.details, **detail_changes)
            changes["details"] = NO_DETAILS if made == NO_DETAILS else made
        if "labels" in changes or changes.keys() & {"job_id", "name"}:  # (a shape reads id and name)
            labels = changes.pop("labels", None)
            changes["stored_labels"] = store_labels(
                dict(self.labels) if labels is None else labels,
                changes.get("job_id", self.job_id),
                changes.get("name", self.name),
            )
        return dataclasses.replace(self, **changes)

    @property
    def attempts(self) -> int:
        """Pods started so far."""
        return self.active + self.succeeded + self.failed


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """One admission queue as ListQueues reports it."""

    name: str
    #: 0: unlimited.
    max_running: int
    running: int
    #: QUEUED jobs by priority (only the priorities that have any).
    queued: Mapping[Priority, int]
    #: SCHEDULED and WAITING jobs of this queue (not admissible yet).
    waiting: int
    #: When the longest-waiting QUEUED job became admissible (None: nothing queued).
    oldest_queued_since: datetime | None = None


class JobEventType(enum.Enum):
    CREATED = "CREATED"
    STARTED = "STARTED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    DELETED = "DELETED"
    UPDATED = "UPDATED"


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One change of one job, numbered in the order this replica saw it."""

    seq: int
    type: JobEventType
    record: JobRecord
    time: datetime
    #: The record before this change (None for a new job): a watch whose filter the job
    #: matched before is told that it no longer does.
    previous: JobRecord | None = None

    def concerns(self, predicate: Callable[[JobRecord], bool]) -> bool:
        """Whether a watch with this filter sees the event: the job matches it now, or matched
        it before this change (it leaves the filter: the last event that watch gets of it)."""
        return predicate(self.record) or (self.previous is not None and predicate(self.previous))


@dataclass(frozen=True, slots=True)
class JobFilter:
    """What ListJobs/WatchJobs match; unset fields match everything."""

    type: str = ""
    phases: frozenset[JobPhase] = frozenset()
    label_selector: str = ""
    name_prefix: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None
    owner: str = ""
    queue: str = ""
    #: Jobs made by this schedule / reruns of this job / jobs made from this template.
    schedule: str = ""
    rerun_of: str = ""
    template: str = ""


@dataclass(frozen=True, slots=True)
class LogLine:
    line: str
    attempt: int
    pod_name: str


@dataclass(frozen=True, slots=True)
class ScheduleRequest:
    """A decoded ScheduleJob request.

    ``job_field`` is the request's job member (``timer_job``) and ``params``
    its fields as plain data; the registry finds the handler by the former.

    A new field must be declared in core/requests.py: stored on the Job (the work, inherited
    by retries), this submission's only, or not digested (tests/test_core_requests.py).
    """

    name: str
    job_field: str | None
    params: Mapping[str, Any]
    labels: Mapping[str, str] = field(default_factory=dict)
    request_id: str = ""
    #: 0: the job type's default.
    timeout_seconds: int = 0
    #: None: the configured default (HISTORY_RETENTION); 0: keep until deleted.
    ttl_seconds_after_finished: int | None = None
    max_retries: int = 0
    retry_backoff_seconds: int = 0
    start_after: datetime | None = None
    delay_seconds: int = 0
    queue: str = ""
    priority: Priority | None = None
    depends_on: tuple[str, ...] = ()
    #: A job template to start from (ScheduleJobRequest.template) and its version (0: latest).
    template: str = ""
    template_version: int = 0


@dataclass(frozen=True, slots=True)
class JobOrigin:
    """Where a new job comes from besides its request: the schedule that makes it (and the time
    it is due), the job template (and version) it was made from, the job it reruns. Rendered as
    annotations and labels (core.manifests: SCHEDULE_*, TEMPLATE_*, RERUN_OF_*), read back into
    the JobRecord's fields of the same names."""

    schedule: str = ""
    scheduled_at: datetime | None = None
    template: str = ""
    template_version: int = 0
    rerun_of: str = ""


def format_indexes(indexes: Iterable[int]) -> str:
    """Completion indexes as a Job's status lists them: ascending, runs as ranges ("0-2,5")."""
    runs: list[list[int]] = []
    for i in sorted(set(indexes)):
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
