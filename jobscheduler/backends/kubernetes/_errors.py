"""Kubernetes API failures -> jobscheduler errors, in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobscheduler.core.errors import (
    AlreadyExists,
    BackendError,
    FieldViolation,
    InvalidArgument,
    JobSchedulerError,
    NotFound,
    PermissionDenied,
    Unavailable,
)


@dataclass(frozen=True, slots=True)
class Call:
    """What we asked the API server, for error messages and metrics."""

    verb: str  # RBAC verb: create, get, list, patch, ...
    resource: str  # RBAC resource: jobs.batch, pods
    namespace: str
    name: str | None = None

    def describe(self) -> str:
        target = f"{self.resource}/{self.name}" if self.name else self.resource
        return f"{self.verb} {target} in namespace {self.namespace!r}"


def error_from_status(code: int, body: Mapping[str, Any] | None, call: Call) -> JobSchedulerError:
    """The error for a non-2xx answer; ``body`` is the API server's Status object if it sent one."""
    status = body if body and body.get("kind") == "Status" else {}
    message = str(status.get("message") or f"HTTP {code}")
    if code == 404:
        if call.name:
            kind = call.resource.split(".")[0].rstrip("s")
            return NotFound(f"{kind} {call.name!r} not found in namespace {call.namespace!r}")
        return NotFound(f"Kubernetes API: {message}")
    if code == 409:
        if status.get("reason") == "Conflict":
            return Conflict(f"Kubernetes API: {message}")
        return AlreadyExists(f"Kubernetes API: {message}")
    if code in (400, 422):
        causes = (status.get("details") or {}).get("causes") or []
        violations = [
            FieldViolation(str(c.get("field") or "job"), str(c.get("message") or c.get("reason") or message))
            for c in causes
            if isinstance(c, Mapping)
        ] or [FieldViolation("job", message)]
        return InvalidArgument(violations, f"Kubernetes rejected the request: {message}")
    if code == 403:
        return PermissionDenied(
            f"the service account lacks the RBAC permission to {call.describe()}"
            f" (grant verb {call.verb!r} on {call.resource!r}); Kubernetes said: {message}"
        )
    if code == 410:
        return Gone(f"Kubernetes API: {message}")
    if code == 401:
        return PermissionDenied(f"the Kubernetes API rejected the service's credentials: {message}")
    if code == 429 or code >= 500:
        return Unavailable(f"Kubernetes API unavailable ({code}) during {call.describe()}: {message}")
    return BackendError(f"unexpected Kubernetes API answer {code} during {call.describe()}: {message}")


class Conflict(AlreadyExists):
    """409 Conflict: a write's resourceVersion precondition failed (the object changed)."""


class Gone(Unavailable):
    """410: a watch's resourceVersion is too old; list again."""


def error_from_connection(exc: BaseException, host: str, call: Call) -> Unavailable:
    detail = str(exc) or type(exc).__name__
    return Unavailable(f"Kubernetes API at {host} is unreachable during {call.describe()}: {detail}")
