"""Job template and rerun messages <-> core values."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.api import convert
from jobscheduler.core.errors import FieldViolation, InvalidArgument
from jobscheduler.core.model import ScheduleRequest
from jobscheduler.core.templates import JobTemplate

#: The job type members of ScheduleJobRequest (its ``job`` oneof).
_JOB_MEMBERS: Final = frozenset(f.name for f in pb.ScheduleJobRequest.DESCRIPTOR.oneofs_by_name["job"].fields)


def optional_job(message: Any, name: str = "job") -> ScheduleRequest | None:
    """``message.<name>`` (a ScheduleJobRequest) decoded, None when unset; INVALID_ARGUMENT
    naming ``<name>.<field>``."""
    if not message.HasField(name):
        return None
    try:
        return convert.schedule_request(getattr(message, name))
    except InvalidArgument as exc:
        raise InvalidArgument(
            [FieldViolation(f"{name}.{v.field}", v.description) for v in exc.violations]
        ) from None


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def schedule_job_message(request: ScheduleRequest) -> pb.ScheduleJobRequest:
    """A stored request as the ScheduleJobRequest that would make it."""
    message = pb.ScheduleJobRequest(
        name=request.name,
        labels=dict(request.labels),
        timeout_seconds=request.timeout_seconds,
        max_retries=request.max_retries,
        retry_backoff_seconds=request.retry_backoff_seconds,
        queue=request.queue,
    )
    if request.ttl_seconds_after_finished is not None:
        message.ttl_seconds_after_finished = request.ttl_seconds_after_finished
    if request.priority is not None:
        message.priority = convert.PRIORITIES[request.priority]
    if request.job_field in _JOB_MEMBERS:
        member = getattr(message, request.job_field)
        try:
            json_format.ParseDict(_without_nulls(dict(request.params)), member, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError, RecursionError):
            # A request stored in a CronJob or ConfigMap edited by hand (validated again before any
            # use): its job type shows, its parameters cannot; the rest of a list still answers.
            member.Clear()
        member.SetInParent()
    return message


def _timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def template_message(template: JobTemplate) -> pb.JobTemplate:
    stored = template.stored
    return pb.JobTemplate(
        name=stored.name,
        description=stored.description,
        job=schedule_job_message(template.request),
        version=stored.version,
        owner=stored.owner,
        created_at=_timestamp(stored.created_at),
        first_created_at=_timestamp(stored.first_created_at),
    )
