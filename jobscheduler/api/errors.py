"""jobscheduler errors -> gRPC status, in one place (with google.rpc.BadRequest details)."""

from __future__ import annotations

from typing import Final

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from jobscheduler.core.errors import (
    AlreadyExists,
    BackendError,
    FailedPrecondition,
    InvalidArgument,
    JobSchedulerError,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

_CODES: Final[tuple[tuple[type[JobSchedulerError], grpc.StatusCode], ...]] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (BackendError, grpc.StatusCode.INTERNAL),
)


def status_code(exc: JobSchedulerError) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def to_status(exc: JobSchedulerError) -> grpc.Status:
    code = status_code(exc)
    status = status_pb2.Status(code=code.value[0], message=exc.message)
    if isinstance(exc, InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in exc.violations
            ]
        )
        status.details.add().Pack(bad_request)
    elif isinstance(exc, ResourceExhausted) and exc.retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(max(1_000_000, int(exc.retry_after_seconds * 1e9)))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    status_obj: grpc.Status = rpc_status.to_status(status)
    return status_obj


def internal_status(request_id: str) -> grpc.Status:
    status = status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error; the server log has details under request_id={request_id}",
    )
    status_obj: grpc.Status = rpc_status.to_status(status)
    return status_obj
