"""Protobuf messages <-> core values."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.core.model import JobPhase, JobRecord, ScheduleRequest

PHASES: dict[JobPhase, pb.JobPhase.ValueType] = {
    JobPhase.PENDING: pb.JOB_PHASE_PENDING,
    JobPhase.RUNNING: pb.JOB_PHASE_RUNNING,
    JobPhase.SUCCEEDED: pb.JOB_PHASE_SUCCEEDED,
    JobPhase.FAILED: pb.JOB_PHASE_FAILED,
    JobPhase.CANCELLED: pb.JOB_PHASE_CANCELLED,
}


def schedule_request(request: pb.ScheduleJobRequest) -> ScheduleRequest:
    field = request.WhichOneof("job")
    params: dict[str, Any] = {}
    if field is not None:
        params = json_format.MessageToDict(
            getattr(request, field),
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
    return ScheduleRequest(name=request.name, job_field=field, params=params, labels=dict(request.labels))


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def job_message(record: JobRecord) -> pb.Job:
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
