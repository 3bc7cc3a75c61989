"""The one error tree of jobscheduler.

Adapters translate lower libraries' errors into these (the Kubernetes
backend in one place) and the gRPC adapter translates these into status
codes (in one place). Nothing else crosses a layer boundary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field: its path (``timer_job.duration_seconds``) and what is wrong."""

    field: str
    description: str


class JobSchedulerError(Exception):
    """Base of all errors the core and its adapters raise on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(JobSchedulerError):
    """The request is malformed; ``violations`` names each bad field."""

    def __init__(self, violations: Iterable[FieldViolation], message: str | None = None) -> None:
        self.violations = tuple(violations)
        if message is None:
            message = "; ".join(f"{v.field}: {v.description}" for v in self.violations) or "invalid request"
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
