"""The one error tree of jobscheduler.

Adapters translate lower libraries' errors into these (the Kubernetes
backend in one place) and the gRPC adapter translates these into status
codes (in one place). Nothing else crosses a layer boundary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Final

#: How many violations an InvalidArgument keeps (the rest are counted, see ``omitted``).
MAX_VIOLATIONS: Final = 20
#: Longest field path and description kept; longer ones are cut (values echoed back are hostile).
MAX_FIELD_CHARS: Final = 128
MAX_DESCRIPTION_CHARS: Final = 256
#: Longest error message kept (it goes into logs and the grpc-message trailer).
MAX_MESSAGE_CHARS: Final = 1024


def clip(text: str, limit: int) -> str:
    """``text``, cut to at most ``limit`` characters (marked with "...") if longer."""
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def brief(value: object, limit: int = 64) -> str:
    """``repr(value)`` for an error message, a long string cut to its first ``limit`` characters."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    return clip(repr(value), limit + 32)


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field: its path (``timer_job.duration_seconds``) and what is wrong."""

    field: str
    description: str

    def clipped(self) -> FieldViolation:
        """This violation with its field path and description cut to their limits."""
        if len(self.field) <= MAX_FIELD_CHARS and len(self.description) <= MAX_DESCRIPTION_CHARS:
            return self
        field, description = clip(self.field, MAX_FIELD_CHARS), clip(self.description, MAX_DESCRIPTION_CHARS)
        return FieldViolation(field, description)


class JobSchedulerError(Exception):
    """Base of all errors the core and its adapters raise on purpose."""

    def __init__(self, message: str) -> None:
        message = clip(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.message = message


class InvalidArgument(JobSchedulerError):
    """The request is malformed; ``violations`` names each bad field.

    At most MAX_VIOLATIONS are kept (each cut to its limits); ``omitted`` counts the rest,
    so one request with thousands of bad entries cannot make an answer (or a log line) huge."""

    def __init__(self, violations: Iterable[FieldViolation], message: str | None = None) -> None:
        items = iter(violations)
        self.violations = tuple(v.clipped() for v in islice(items, MAX_VIOLATIONS))
        self.omitted = sum(1 for _ in items)
        if message is None:
            message = "; ".join(f"{v.field}: {v.description}" for v in self.violations) or "invalid request"
            if self.omitted:
                message += f"; ... and {self.omitted} more"
        super().__init__(message)

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class NotFound(JobSchedulerError):
    """The job (or another named object) does not exist."""


class AlreadyExists(JobSchedulerError):
    """An object with the same identity exists already."""


class FailedPrecondition(JobSchedulerError):
    """The request is valid but not in the object's current state (e.g. cancelling a finished job)."""


class PermissionDenied(JobSchedulerError):
    """The caller (or the service, for the backend: missing RBAC permission) may not do this."""


class Unavailable(JobSchedulerError):
    """The backend cannot be reached or answered with a server error; retrying may help."""


class BackendError(JobSchedulerError):
    """The backend answered in a way we did not expect; a bug here or there, not the caller's fault."""


class OutOfRange(JobSchedulerError):
    """A resume point is older than what is retained (or from another replica or run)."""


class ResourceExhausted(JobSchedulerError):
    """A limit was hit: a stream fell too far behind (resume from the last token), or the
    caller's request rate is over its limit (retry after ``retry_after_seconds``)."""

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class Unauthenticated(JobSchedulerError):
    """The request carries no valid credentials."""


class NotReady(Unavailable):
    """The service has not synced its view of the backend yet."""
