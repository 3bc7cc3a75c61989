"""The backend port: what the core needs from wherever jobs actually run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any, Protocol

from jobscheduler.core.index import JobIndex
from jobscheduler.core.model import JobPhase, JobRecord, LogLine


class JobBackend(Protocol):
    """Creates, reads, lists and cancels the service's jobs.

    Implementations raise only :mod:`jobscheduler.core.errors` errors.
    """

    #: Short name for logs and metrics (``kubernetes``, ``local``).
    name: str

    async def start(self, index: JobIndex) -> None:
        """Begin feeding ``index`` with every job and each change; mark it synced once complete.

        Returns promptly; syncing goes on in the background. Records of the backend's own
        writes (create, cancel) go into the index before those calls return (read-your-writes).
        """
        ...

    async def create(self, manifest: Mapping[str, Any]) -> JobRecord:
        """Create the Job; AlreadyExists if its name is taken."""
        ...

    async def get(self, job_id: str) -> JobRecord:
        """The job's current record, read from the backend itself; NotFound if absent or not ours."""
        ...

    async def manifest(self, job_id: str) -> dict[str, Any]:
        """The job's stored batch/v1 Job object (as the API server holds it); NotFound if absent."""
        ...

    async def admit(self, job_id: str, *, at: datetime) -> JobRecord:
        """Start a held job (created suspended: QUEUED, SCHEDULED or WAITING) and record when.

        Compare-and-swap: FailedPrecondition if the job is no longer held (admitted, cancelled or
        failed meanwhile, by this or another replica), so no job is ever admitted twice; also if
        it kept changing under the write (Kubernetes: 409 Conflict several times), when it may
        still be held: the admission loop decides again a moment later. After any other error
        (Unavailable, a timeout) the write may or may not have landed.
        """
        ...

    async def hold(self, job_id: str, phase: JobPhase) -> JobRecord:
        """Change what a held job reports it waits for (QUEUED, SCHEDULED or WAITING).

        FailedPrecondition if the job is no longer held (or kept changing, as for ``admit``).
        """
        ...

    async def fail(self, job_id: str, *, reason: str, message: str, at: datetime) -> JobRecord:
        """Fail a held job without running it (its dependencies failed or do not exist).

        FailedPrecondition if the job is no longer held.
        """
        ...

    async def list(self) -> list[JobRecord]:
        """Every job this service manages, read from the backend itself."""
        ...

    def logs(
        self, record: JobRecord, *, follow: bool, tail_lines: int, attempt: int
    ) -> AsyncIterator[LogLine]:
        """The job's output by line. FailedPrecondition while no attempt has started."""
        ...

    async def cancel(self, job_id: str, *, reason: str, at: datetime) -> JobRecord:
        """Stop the job's pods promptly and mark it cancelled; the record after the change."""
        ...

    async def ping(self) -> None:
        """Return if the backend is reachable and usable; raise Unavailable/PermissionDenied if not."""
        ...

    async def close(self) -> None: ...
