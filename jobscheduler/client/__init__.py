"""The typed Python client of the jobscheduler gRPC API: the supported way in from Python.

::

    from jobscheduler.client import Client, TimerJob

    with Client("127.0.0.1:50051") as client:
        job = client.schedule("nightly", TimerJob(5, "t", "http://sink:8080/"))
        for event in client.watch(job.job_id):
            print(event.type, event.job.phase)

:class:`Client` blocks; :class:`AsyncClient` has the same methods as coroutines (and async
iterators for the streams). Both are typed (``py.typed``) and mypy --strict clean.

Value types: the methods return the frozen dataclasses of this package (:class:`Job`,
:class:`JobEvent`, :class:`JobPage`, :class:`LogLine`, :class:`QueueStatus`,
:class:`JobTypeInfo`, :class:`Schedule`, :class:`JobTemplate`), not generated protobuf
messages: enums are :class:`enum.StrEnum` (``JobPhase.RUNNING == "RUNNING"``), times are
timezone-aware UTC datetimes (None when unset), durations ``datetime.timedelta``; ``to_dict()``
gives JSON-ready data. The generated modules (``jobscheduler._generated``) are private; a caller
in another language generates its own stubs from the ``.proto`` shipped in the package
(:func:`proto_path`).

Connection: plaintext for loopback targets, TLS (system CAs, or ``ca_file``) otherwise, mTLS with
``client_cert_file``/``client_key_file``, a bearer ``token`` or a ``token_file`` read again when it
changes. Every unary call has a deadline (``timeout``, default 10 s, retries included); streams
that follow (watch, watch_all, logs with follow) run until they end or the caller stops, unless
given a ``timeout``.

Retries: UNAVAILABLE is retried with exponential backoff (``retries`` times, default 6) where that
is safe: reads, ``cancel`` and ``update_schedule`` (idempotent), ``schedule`` and ``rerun`` (they
always send a ``request_id``, generated when the caller gives none, so a retry returns the job the
first attempt created); not the calls that create or add (``create_schedule``, ``trigger_schedule``,
``create_template``, ``update_template``) or delete. Watches
reconnect after a dropped connection: ``watch_all`` from the last event's resume token, without
losing or repeating an event. ``watch_all`` resumes the same way when the server ends its stream
for falling too far behind (a caller reading more slowly than jobs change), within the same
``retries`` budget; an :class:`OutOfRange` for a token the server no longer has (older than its
retained window, or from another server run) still reaches the caller: list again, then watch.

Errors: every failed call raises a :class:`JobSchedulerError` subclass named after its gRPC status
(:class:`InvalidArgument`, :class:`NotFound`, ...), with ``message``, ``field_violations`` (the
google.rpc.BadRequest details) and ``request_id`` (the server's ``x-request-id``).
"""

from __future__ import annotations

import importlib.resources
import pathlib

from jobscheduler.client._async import AsyncClient
from jobscheduler.client._calls import JobOptions, ScheduleChanges, ScheduleOptions
from jobscheduler.client._errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    JobSchedulerError,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
)
from jobscheduler.client._retry import DEFAULT_RETRIES, DEFAULT_TIMEOUT, JobFilterArgs
from jobscheduler.client._sync import Client
from jobscheduler.client._types import (
    JOB_TYPES,
    BuiltinJob,
    ConcurrencyPolicy,
    CustomJob,
    EventType,
    Job,
    JobCondition,
    JobEvent,
    JobPage,
    JobPhase,
    JobRequest,
    JobSpec,
    JobTemplate,
    JobTypeInfo,
    LogLine,
    Priority,
    QueueStatus,
    Schedule,
    ScheduleDeletion,
    TimerJob,
)


def proto_path() -> pathlib.Path:
    """The ``jobscheduler.proto`` shipped inside the installed package (for stubs in any language)."""
    return pathlib.Path(str(importlib.resources.files("jobscheduler") / "proto" / "jobscheduler.proto"))


__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "JOB_TYPES",
    "Aborted",
    "AlreadyExists",
    "AsyncClient",
    "BuiltinJob",
    "Cancelled",
    "Client",
    "ConcurrencyPolicy",
    "CustomJob",
    "DataLoss",
    "DeadlineExceeded",
    "EventType",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "Job",
    "JobCondition",
    "JobEvent",
    "JobFilterArgs",
    "JobOptions",
    "JobPage",
    "JobPhase",
    "JobRequest",
    "JobSchedulerError",
    "JobSpec",
    "JobTemplate",
    "JobTypeInfo",
    "LogLine",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "Priority",
    "QueueStatus",
    "ResourceExhausted",
    "Schedule",
    "ScheduleChanges",
    "ScheduleDeletion",
    "ScheduleOptions",
    "TimerJob",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "proto_path",
]
