"""Controllers that act on jobs when a time derived from their record comes (retries).

(Start times are the admission loop's: see core.admission.)

A controller's state is the index: what is due is recomputed from the records, so after a
restart, or on another replica, the same actions are found due again. Actions must therefore
be idempotent (a create-if-absent, a patch to a fixed value).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from jobscheduler.core.errors import JobSchedulerError
from jobscheduler.core.index import JobIndex
from jobscheduler.core.model import JobEventType, JobRecord

#: After a failed action (API unreachable, ...), try again this much later.
ERROR_DELAY_SECONDS: Final = 5.0
_SYNC_WAIT_SECONDS: Final = 5.0


class DueController(abc.ABC):
    """Runs ``act(record)`` once ``due(record)`` has come, for every job; one task per pending job."""

    def __init__(
        self,
        index: JobIndex,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_error: Callable[[str, JobSchedulerError], None] = lambda job_id, exc: None,
    ) -> None:
        self._index = index
        self._clock = clock
        self._sleep = sleep
        self._on_error = on_error
        self._pending: dict[str, asyncio.Task[None]] = {}

    @abc.abstractmethod
    def due(self, record: JobRecord) -> datetime | None:
        """When to act on ``record``; None: nothing to do for it."""

    @abc.abstractmethod
    async def act(self, record: JobRecord) -> None:
        """Do it (idempotently); a JobSchedulerError is retried after ERROR_DELAY_SECONDS."""

    async def run(self) -> None:
        """Until cancelled: the current records, then each change as the index applies it."""
        while not await self._index.wait_synced(_SYNC_WAIT_SECONDS):
            pass
        remove = self._index.add_listener(
            lambda event: None if event.type is JobEventType.DELETED else self._consider(event.record)
        )
        try:
            for record in self._index.records():
                self._consider(record)
            await asyncio.Event().wait()  # the listener does the rest
        finally:
            remove()
            for task in list(self._pending.values()):
                task.cancel()

    def _consider(self, record: JobRecord) -> None:
        due = self.due(record)
        if due is None or record.job_id in self._pending:
            return
        task = asyncio.create_task(self._when_due(record, due), name=f"{type(self).__name__} {record.job_id}")
        self._pending[record.job_id] = task
        task.add_done_callback(lambda _: self._pending.pop(record.job_id, None))

    async def _when_due(self, record: JobRecord, due: datetime) -> None:
        while True:
            wait = (due - self._clock()).total_seconds()
            if wait > 0:
                await self._sleep(wait)
            current = self._index.get(record.job_id) or record
            if self.due(current) is None:
                return  # changed meanwhile (cancelled, done by another replica, ...)
            try:
                await self.act(current)
                return
            except JobSchedulerError as exc:
                self._on_error(record.job_id, exc)
                due = self._clock() + timedelta(seconds=ERROR_DELAY_SECONDS)
