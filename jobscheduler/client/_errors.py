"""The client's exception tree: one class per gRPC status, built from a failed call."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar, Final

import grpc
from google.rpc import error_details_pb2, status_pb2

#: The trailing metadata key the server echoes its request id under.
REQUEST_ID_KEY = "x-request-id"


@dataclasses.dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field (google.rpc.BadRequest): e.g. ``timer_job.env[LD_PRELOAD]``."""

    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}" if self.field else self.description


class JobSchedulerError(Exception):
    """Base class of every error the client raises.

    ``code`` is the gRPC status name (``"NOT_FOUND"``), ``message`` the server's message,
    ``field_violations`` the google.rpc.BadRequest details (INVALID_ARGUMENT), ``request_id``
    the server's ``x-request-id`` for this call (quote it when reading the server log), and
    ``retry_after`` the server's google.rpc.RetryInfo delay in seconds (RESOURCE_EXHAUSTED).
    """

    code: ClassVar[str] = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        field_violations: tuple[FieldViolation, ...] = (),
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field_violations = field_violations
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = self.message
        extra = [str(v) for v in self.field_violations if str(v) not in text]
        if extra:
            text += " (" + "; ".join(extra) + ")"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, request_id={self.request_id!r})"


class Cancelled(JobSchedulerError):
    code = "CANCELLED"


class Unknown(JobSchedulerError):
    code = "UNKNOWN"


class InvalidArgument(JobSchedulerError):
    """The request was refused; ``field_violations`` names the fields and why."""

    code = "INVALID_ARGUMENT"


class DeadlineExceeded(JobSchedulerError):
    code = "DEADLINE_EXCEEDED"


class NotFound(JobSchedulerError):
    code = "NOT_FOUND"


class AlreadyExists(JobSchedulerError):
    """E.g. a ``request_id`` reused with a different request."""

    code = "ALREADY_EXISTS"


class PermissionDenied(JobSchedulerError):
    code = "PERMISSION_DENIED"


class ResourceExhausted(JobSchedulerError):
    """Rate limit or stream limit; ``retry_after`` says when to try again, if the server said."""

    code = "RESOURCE_EXHAUSTED"


class FailedPrecondition(JobSchedulerError):
    """E.g. cancelling a job that has already finished."""

    code = "FAILED_PRECONDITION"


class Aborted(JobSchedulerError):
    code = "ABORTED"


class OutOfRange(JobSchedulerError):
    """E.g. a resume token older than the server's retained window: list again, then watch.

    Also how the server ends a watch stream that fell too far behind (``fell_behind`` is then
    True; the message names the token to resume from): ``watch_all`` resumes such a stream by
    itself and raises this only once its ``retries`` (in a row) are spent."""

    code = "OUT_OF_RANGE"

    @property
    def fell_behind(self) -> bool:
        """Whether the server ended a watch stream for falling behind (resuming from the last
        event's token misses nothing), rather than refusing a token it no longer has."""
        return stream_fell_behind(self.message)


class Unimplemented(JobSchedulerError):
    code = "UNIMPLEMENTED"


class Internal(JobSchedulerError):
    code = "INTERNAL"


class Unavailable(JobSchedulerError):
    """The server could not be reached (or is not ready); retried already where that is safe."""

    code = "UNAVAILABLE"


class DataLoss(JobSchedulerError):
    code = "DATA_LOSS"


class Unauthenticated(JobSchedulerError):
    code = "UNAUTHENTICATED"


#: The server's message when it ends a stream that fell too far behind (``Subscription.next`` in
#: jobscheduler/core/changelog.py): "this stream fell more than N changes behind and was ended;
#: resume with resume_token '<token>'". Its other OUT_OF_RANGE messages (a token older than the
#: retained window, or from another server run) name no token: they mean list again.
_FELL_BEHIND: Final = re.compile(
    r"\bfell\b.*\bbehind\b.*\bresume with resume_token ['\"][^'\"]+['\"]", re.DOTALL
)


def stream_fell_behind(message: str) -> bool:
    """Whether ``message`` (an OUT_OF_RANGE's) is the server ending a watch stream that fell too
    far behind, naming the token to resume from: resuming from the last event's token is safe."""
    return _FELL_BEHIND.search(message) is not None


_BY_CODE: dict[grpc.StatusCode, type[JobSchedulerError]] = {
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNKNOWN: Unknown,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


def _metadata(items: Any) -> list[tuple[str, Any]]:
    try:
        return [(str(k), v) for k, v in (items or ())]
    except (TypeError, ValueError):
        return []


def _details(raw: bytes) -> tuple[tuple[FieldViolation, ...], float | None]:
    status = status_pb2.Status()
    try:
        status.ParseFromString(raw)
    except Exception:  # a malformed detail from a proxy must not hide the status itself
        return (), None
    violations: list[FieldViolation] = []
    retry_after = None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            retry_after = info.retry_delay.ToNanoseconds() / 1e9
    return tuple(violations), retry_after


def error_from_parts(code: grpc.StatusCode, message: str, trailing: Any) -> JobSchedulerError:
    """The exception for a call that ended with ``code``, ``message`` and trailing metadata."""
    cls = _BY_CODE.get(code, Unknown)
    request_id = None
    violations: tuple[FieldViolation, ...] = ()
    retry_after = None
    for key, value in _metadata(trailing):
        if key == REQUEST_ID_KEY and isinstance(value, str):
            request_id = value
        elif key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            violations, retry_after = _details(value)
    text = message or code.name.replace("_", " ").lower()
    return cls(text, field_violations=violations, request_id=request_id, retry_after=retry_after)


def from_rpc_error(exc: grpc.RpcError) -> JobSchedulerError:
    """The client exception for a failed synchronous call (grpc.Call) or an aio.AioRpcError."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = exc.details() if hasattr(exc, "details") else str(exc)
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else ()
    return error_from_parts(code or grpc.StatusCode.UNKNOWN, message or "", trailing)
