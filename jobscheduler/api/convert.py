"""Protobuf messages <-> core values."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import ListValue, Struct
from google.protobuf.timestamp_pb2 import Timestamp

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.core.errors import InvalidArgument
from jobscheduler.core.index import JobIndex
from jobscheduler.core.model import (
    JobEvent,
    JobEventType,
    JobFilter,
    JobPhase,
    JobRecord,
    LogLine,
    Priority,
    QueueStatus,
    ScheduleRequest,
)

PHASES: dict[JobPhase, pb.JobPhase.ValueType] = {
    JobPhase.PENDING: pb.JOB_PHASE_PENDING,
    JobPhase.QUEUED: pb.JOB_PHASE_QUEUED,
    JobPhase.SCHEDULED: pb.JOB_PHASE_SCHEDULED,
    JobPhase.WAITING: pb.JOB_PHASE_WAITING,
    JobPhase.RUNNING: pb.JOB_PHASE_RUNNING,
    JobPhase.SUCCEEDED: pb.JOB_PHASE_SUCCEEDED,
    JobPhase.FAILED: pb.JOB_PHASE_FAILED,
    JobPhase.CANCELLED: pb.JOB_PHASE_CANCELLED,
}

PHASES_BACK = {v: k for k, v in PHASES.items()}
PRIORITIES: dict[Priority, pb.JobPriority.ValueType] = {
    Priority.LOW: pb.JOB_PRIORITY_LOW,
    Priority.NORMAL: pb.JOB_PRIORITY_NORMAL,
    Priority.HIGH: pb.JOB_PRIORITY_HIGH,
    Priority.CRITICAL: pb.JOB_PRIORITY_CRITICAL,
}
PRIORITIES_BACK: dict[int, Priority] = {v: k for k, v in PRIORITIES.items()}
EVENT_TYPES: dict[JobEventType, pb.JobEventType.ValueType] = {
    JobEventType.CREATED: pb.JOB_EVENT_TYPE_CREATED,
    JobEventType.STARTED: pb.JOB_EVENT_TYPE_STARTED,
    JobEventType.SUCCEEDED: pb.JOB_EVENT_TYPE_SUCCEEDED,
    JobEventType.FAILED: pb.JOB_EVENT_TYPE_FAILED,
    JobEventType.CANCELLED: pb.JOB_EVENT_TYPE_CANCELLED,
    JobEventType.DELETED: pb.JOB_EVENT_TYPE_DELETED,
    JobEventType.UPDATED: pb.JOB_EVENT_TYPE_UPDATED,
}


#: google.protobuf.Timestamp's valid range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_TIMESTAMP_SECONDS = -62135596800
_MAX_TIMESTAMP_SECONDS = 253402300799
#: More phases than there are is a hostile filter (each entry would be looked at).
_MAX_FILTER_PHASES = 16


def timestamp(message: Message, name: str, field: str) -> datetime | None:
    """``message.<name>`` as an aware datetime (None if unset); out of Timestamp's range (seconds
    outside years 1-9999, nanos outside 0-999999999) is INVALID_ARGUMENT naming ``field``."""
    if not message.HasField(name):
        return None
    ts: Timestamp = getattr(message, name)
    if not _MIN_TIMESTAMP_SECONDS <= ts.seconds <= _MAX_TIMESTAMP_SECONDS:
        raise InvalidArgument.field(field, f"seconds must be within years 1 to 9999 (got {ts.seconds})")
    if not 0 <= ts.nanos <= 999_999_999:
        raise InvalidArgument.field(field, f"nanos must be between 0 and 999999999 (got {ts.nanos})")
    return ts.ToDatetime(UTC)


def job_filter(message: pb.JobFilter, field: str = "filter") -> JobFilter:
    if len(message.phases) > _MAX_FILTER_PHASES:
        raise InvalidArgument.field(f"{field}.phases", f"at most {_MAX_FILTER_PHASES} phases")
    phases = set()
    for i, value in enumerate(message.phases):
        phase = PHASES_BACK.get(value)
        if phase is None:
            raise InvalidArgument.field(f"{field}.phases[{i}]", f"unknown phase {value}")
        phases.add(phase)
    return JobFilter(
        type=message.type,
        phases=frozenset(phases),
        label_selector=message.label_selector,
        name_prefix=message.name_prefix,
        created_after=timestamp(message, "created_after", f"{field}.created_after"),
        created_before=timestamp(message, "created_before", f"{field}.created_before"),
        owner=message.owner,
        queue=message.queue,
        schedule=message.schedule,
        rerun_of=message.rerun_of,
        template=message.template,
    )


def job_event(event: JobEvent, index: JobIndex) -> pb.JobEvent:
    return pb.JobEvent(
        type=EVENT_TYPES[event.type],
        job=job_message(event.record),
        resume_token=index.token(event.seq),
        time=_timestamp(event.time),
    )


def job_event_bytes(event: JobEvent, index: JobIndex) -> bytes:
    """The serialised ``JobEvent``: built once per change of the log, whatever the number of
    streams sending it (the server sends bytes as they are)."""
    return index.log.encoded(event, lambda e: job_event(e, index).SerializeToString())


def log_line(line: LogLine) -> pb.LogLine:
    return pb.LogLine(line=line.line, attempt=line.attempt, pod_name=line.pod_name)


def schedule_request(request: pb.ScheduleJobRequest) -> ScheduleRequest:
    field = request.WhichOneof("job")
    params: dict[str, Any] = {}
    if field is not None:
        params = _plain(getattr(request, field), field)
    return ScheduleRequest(
        name=request.name,
        job_field=field,
        params=params,
        labels=dict(request.labels),
        request_id=request.request_id,
        timeout_seconds=request.timeout_seconds,
        max_retries=request.max_retries,
        retry_backoff_seconds=request.retry_backoff_seconds,
        start_after=timestamp(request, "start_after", "start_after"),
        delay_seconds=request.delay_seconds,
        ttl_seconds_after_finished=(
            request.ttl_seconds_after_finished if request.HasField("ttl_seconds_after_finished") else None
        ),
        queue=request.queue,
        priority=_priority(request.priority),
        depends_on=tuple(request.depends_on),
        template=request.template,
        template_version=request.template_version,
    )


def _priority(value: int) -> Priority | None:
    """JOB_PRIORITY_UNSPECIFIED: None (NORMAL); a number that is no JobPriority: INVALID_ARGUMENT."""
    if value == pb.JOB_PRIORITY_UNSPECIFIED:
        return None
    priority = PRIORITIES_BACK.get(value)
    if priority is None:
        known = ", ".join(pb.JobPriority.Name(v) for v in PRIORITIES.values())
        raise InvalidArgument.field("priority", f"unknown priority {value} (known: {known})")
    return priority


def _plain(message: Message, path: str = "job") -> dict[str, Any]:
    """A job-type message's fields as plain data, every field present (proto3 defaults included).

    Scalars stay scalars, maps become dicts, repeated fields lists, nested messages dicts, a
    google.protobuf.Struct the JSON object it stands for (:func:`struct_data`).
    (json_format.MessageToDict does the same at several times the cost, and turns int64 into str.)
    """
    out: dict[str, Any] = {}
    for fd in message.DESCRIPTOR.fields:
        value = getattr(message, fd.name)
        if fd.message_type is not None and fd.message_type.full_name == "google.protobuf.Struct":
            out[fd.name] = struct_data(value, f"{path}.{fd.name}") if message.HasField(fd.name) else None
        elif fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            if value_fd.message_type is not None:
                out[fd.name] = {k: _plain(v) for k, v in value.items()}
            else:
                out[fd.name] = dict(value)
        elif fd.is_repeated:
            out[fd.name] = [_plain(v) if fd.message_type is not None else v for v in value]
        elif fd.message_type is not None:
            out[fd.name] = _plain(value) if message.HasField(fd.name) else None
        else:
            out[fd.name] = value
    return out


#: A Struct's bounds, checked before it is converted: its size (bytes in the request) and
#: nesting (Structs and ListValues within each other).
MAX_STRUCT_BYTES = 64 * 1024
MAX_STRUCT_DEPTH = 16


def struct_data(struct: Struct, field: str) -> dict[str, Any]:
    """A google.protobuf.Struct as plain JSON data: bounded first (MAX_STRUCT_BYTES,
    MAX_STRUCT_DEPTH), then json_format.MessageToDict; a whole number stays an int (Struct
    numbers are doubles). InvalidArgument naming ``field`` when it is too big or deep, or holds
    what JSON cannot (NaN, infinities, a Value with no kind)."""
    size = struct.ByteSize()
    if size > MAX_STRUCT_BYTES:
        raise InvalidArgument.field(field, f"must be at most {MAX_STRUCT_BYTES} bytes (got {size})")
    stack: list[tuple[Struct | ListValue, int]] = [(struct, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_STRUCT_DEPTH:
            raise InvalidArgument.field(field, f"must be nested at most {MAX_STRUCT_DEPTH} levels deep")
        values = item.fields.values() if isinstance(item, Struct) else item.values
        for value in values:
            kind = value.WhichOneof("kind")
            if kind == "struct_value":
                stack.append((value.struct_value, depth + 1))
            elif kind == "list_value":
                stack.append((value.list_value, depth + 1))
            elif kind is None:
                raise InvalidArgument.field(field, "holds a Value with no kind set")
            elif kind == "number_value" and not math.isfinite(value.number_value):
                raise InvalidArgument.field(field, "numbers must be finite (JSON has no NaN or Infinity)")
    try:
        data = json_format.MessageToDict(struct)
    except (json_format.Error, ValueError, RecursionError) as exc:
        raise InvalidArgument.field(field, f"is not JSON data: {exc}") from None
    result = _whole_numbers(data)
    assert isinstance(result, dict)
    return result


def _whole_numbers(value: Any) -> Any:
    """Floats that are whole (and exact in a double) as ints, through dicts and lists."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def job_message(record: JobRecord, now: datetime | None = None) -> pb.Job:
    duration: Duration | None = None
    if record.started_at is not None:
        end = record.finished_at or now or datetime.now(UTC)
        duration = Duration()
        duration.FromTimedelta(max(end - record.started_at, end - end))
    job = pb.Job(
        job_id=record.job_id,
        name=record.name,
        type=record.type,
        namespace=record.namespace,
        phase=PHASES[record.phase],
        created_at=_timestamp(record.created_at),
        started_at=_timestamp(record.started_at),
        finished_at=_timestamp(record.finished_at),
        message=record.message,
        reason=record.reason,
        labels=dict(record.labels),
        active=record.active,
        succeeded=record.succeeded,
        failed=record.failed,
        backoff_limit=record.backoff_limit,
        pod_names=list(record.pod_names),
        attempts=record.attempts,
        duration=duration,
        termination_reason=record.termination_reason,
        exit_code=record.exit_code,
        owner=record.owner,
        request_id=record.request_id,
        retry_of=record.retry_of,
        retry_number=record.retry_number,
        max_retries=record.max_retries,
        start_after=_timestamp(record.start_after),
        priority=PRIORITIES[record.priority],
        queue=record.queue,
        depends_on=list(record.depends_on),
        enqueued_at=_timestamp(record.enqueued_at),
        admitted_at=_timestamp(record.admitted_at),
        completed_indexes=record.completed_indexes,
        failed_indexes=record.failed_indexes,
        schedule=record.schedule,
        scheduled_at=_timestamp(record.scheduled_at),
        template=record.template,
        template_version=record.template_version,
        rerun_of=record.rerun_of,
    )
    for c in record.conditions:
        job.conditions.add(
            type=c.type,
            status=c.status,
            reason=c.reason,
            message=c.message,
            last_transition_time=_timestamp(c.last_transition_time),
        )
    return job


def queue_status(status: QueueStatus, now: datetime) -> pb.QueueStatus:
    """One queue for ListQueues; ``oldest_queued_age`` is ``now`` minus ``oldest_queued_since``."""
    message = pb.QueueStatus(
        name=status.name,
        max_running=status.max_running,
        running=status.running,
        queued=sum(status.queued.values()),
        queued_by_priority=[
            pb.PriorityCount(priority=PRIORITIES[priority], count=count)
            for priority, count in status.queued.items()
        ],
        waiting=status.waiting,
    )
    if status.oldest_queued_since is not None:
        message.oldest_queued_since.FromDatetime(status.oldest_queued_since)
        message.oldest_queued_age.FromTimedelta(max(now - status.oldest_queued_since, timedelta(0)))
    return message
