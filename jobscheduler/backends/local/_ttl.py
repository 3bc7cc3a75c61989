"""The TTL-after-finished controller of the local backend: deletes finished jobs with
``ttlSecondsAfterFinished`` once it has run out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from jobscheduler.backends.local._store import JobRow
from jobscheduler.core.errors import Unavailable
from jobscheduler.core.model import JobPhase
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.backends.local")

#: The sweeper sleeps until the next expiry, but at most this long: the event loop's clock
#: stands still while a laptop is suspended, the wall clock the expiries are in does not.
_SWEEP_MAX_SLEEP_SECONDS: Final = 60.0
#: A deletion the store refused for want of space is tried again this much later.
DELETE_RETRY_SECONDS: Final = 30.0
TERMINAL: Final = frozenset({JobPhase.SUCCEEDED.value, JobPhase.FAILED.value, JobPhase.CANCELLED.value})


def ttl_seconds(manifest: Mapping[str, Any]) -> int | None:
    """``spec.ttlSecondsAfterFinished``: None (keep forever) when absent or not a count of seconds."""
    value = (manifest.get("spec") or {}).get("ttlSecondsAfterFinished")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


class TtlSweeper:
    """When each finished job is due, and the task deleting them (``delete``) as they come due.

    ``busy(job_id)``: the job's processes are still exiting (cancelled during its kill grace); it
    waits for them, and its runner calls ``wake`` when it ends (as Kubernetes sets the Failed
    condition, which starts the TTL, only once the pods have terminated).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], datetime],
        delete: Callable[[str], None],
        busy: Callable[[str], bool],
    ) -> None:
        self._clock = clock
        self._delete = delete
        self._busy = busy
        self._expiry: dict[str, datetime] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._expiry

    def track(self, row: JobRow) -> None:
        """Note when a finished job with ``ttlSecondsAfterFinished`` is due (from its stored finish time)."""
        ttl = ttl_seconds(row.manifest)
        if ttl is None or row.phase not in TERMINAL or row.finished_at is None:
            return
        self._expiry[row.job_id] = row.finished_at + timedelta(seconds=ttl)
        self._wakeup.set()

    def wake(self) -> None:
        self._wakeup.set()

    def sweep(self) -> datetime | None:
        """Delete every job that is due; the time the next one is due, if any."""
        current = self._clock()
        upcoming: datetime | None = None
        for job_id, due in sorted(self._expiry.items(), key=lambda item: item[1]):
            if self._busy(job_id):
                continue
            if due > current:
                upcoming = due if upcoming is None else min(upcoming, due)
                continue
            del self._expiry[job_id]
            try:
                self._delete(job_id)
            except Unavailable as exc:  # the disk is full: try again later
                log.warning("could not delete an expired job yet", job_id=job_id, error=exc.message)
                retry = current + timedelta(seconds=DELETE_RETRY_SECONDS)
                self._expiry[job_id] = retry
                upcoming = retry if upcoming is None else min(upcoming, retry)
            except Exception:  # a bug: keep sweeping; the next start tries again
                log.exception("could not delete an expired job", job_id=job_id)
        return upcoming

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _sweep_forever(self) -> None:
        """Wake at the next expiry (or when a job finishes)."""
        while True:
            self._wakeup.clear()
            upcoming = self.sweep()
            timeout = None
            if upcoming is not None:
                timeout = min(max(0.0, (upcoming - self._clock()).total_seconds()), _SWEEP_MAX_SLEEP_SECONDS)
            with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can swallow a cancel
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
