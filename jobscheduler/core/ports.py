"""The backend port: what the core needs from wherever jobs actually run."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from jobscheduler.core.model import JobRecord


class JobBackend(Protocol):
    """Creates, reads, lists and cancels the service's jobs.

    Implementations raise only :mod:`jobscheduler.core.errors` errors.
    """

    #: Short name for logs and metrics (``kubernetes``, ``local``).
    name: str

    async def create(self, manifest: Mapping[str, Any]) -> JobRecord:
        """Create the Job; AlreadyExists if its name is taken."""
        ...

    async def get(self, job_id: str) -> JobRecord:
        """The job's current record; NotFound if it does not exist or is not ours."""
        ...

    async def list(self) -> list[JobRecord]:
        """Every job this service manages."""
        ...

    async def cancel(self, job_id: str, *, reason: str, at: datetime) -> JobRecord:
        """Stop the job's pods promptly and mark it cancelled; the record after the change."""
        ...

    async def ping(self) -> None:
        """Return if the backend is reachable and usable; raise Unavailable/PermissionDenied if not."""
        ...

    async def close(self) -> None: ...
