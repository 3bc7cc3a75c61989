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

#: Trailer budgets (UTF-8 bytes): grpc clients refuse trailers over 8 KiB (16 KiB hard), and the
#: message travels twice (grpc-message, percent-encoded, and inside grpc-status-details-bin, base64).
MAX_STATUS_MESSAGE_BYTES: Final = 512
MAX_VIOLATION_BYTES: Final = 2048

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


def _clip_bytes(text: str, limit: int) -> str:
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode(errors="ignore") + "..."


def _bad_request(exc: InvalidArgument) -> error_details_pb2.BadRequest:
    """The violations as BadRequest, within MAX_VIOLATION_BYTES; the rest as one "... and N more"."""
    out = error_details_pb2.BadRequest()
    used = 0
    for i, v in enumerate(exc.violations):
        size = len(v.field.encode()) + len(v.description.encode())
        if used + size > MAX_VIOLATION_BYTES:
            more = len(exc.violations) - i + exc.omitted
            break
        used += size
        out.field_violations.add(field=v.field, description=v.description)
    else:
        more = exc.omitted
    if more:
        out.field_violations.add(field="", description=f"... and {more} more")
    return out


def to_status(exc: JobSchedulerError) -> grpc.Status:
    code = status_code(exc)
    status = status_pb2.Status(code=code.value[0], message=_clip_bytes(exc.message, MAX_STATUS_MESSAGE_BYTES))
    if isinstance(exc, InvalidArgument):
        status.details.add().Pack(_bad_request(exc))
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
