"""The live index: every job's latest record, and (core/changelog.py) a numbered log of changes.

Backends feed it (the Kubernetes backend from its watches, the local backend
from its own state changes); reads, lists and watch streams are served from
it. It holds compact records, never API objects. Everything runs on one
event loop, so there are no locks.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta

from jobscheduler.core.changelog import ChangeLog, Subscription
from jobscheduler.core.model import JobEvent, JobEventType, JobPhase, JobRecord
from jobscheduler.core.query import order_key

_PHASE_EVENTS = {
    JobPhase.RUNNING: JobEventType.STARTED,
    JobPhase.SUCCEEDED: JobEventType.SUCCEEDED,
    JobPhase.FAILED: JobEventType.FAILED,
    JobPhase.CANCELLED: JobEventType.CANCELLED,
}


def classify(previous: JobRecord | None, current: JobRecord) -> JobEventType | None:
    """The event a change from ``previous`` to ``current`` is, or None if nothing changed."""
    if previous is None:
        return JobEventType.CREATED
    if previous == current:
        return None
    if previous.phase is not current.phase:
        if current.phase is JobPhase.RUNNING and previous.started_at is not None:
            return JobEventType.UPDATED  # a retry's pod became active again
        return _PHASE_EVENTS.get(current.phase, JobEventType.UPDATED)
    return JobEventType.UPDATED


class JobIndex:
    def __init__(
        self,
        *,
        retention: timedelta = timedelta(minutes=15),
        max_events: int = 100_000,
        stream_buffer: int = 1000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.log = ChangeLog(
            retention=retention, max_events=max_events, stream_buffer=stream_buffer, clock=clock
        )
        self._records: dict[str, JobRecord] = {}
        #: (created, job id) of every record, ascending: ListJobs pages walk it from a cursor.
        self._order: list[tuple[datetime, str]] = []
        self._listeners: list[Callable[[JobEvent], None]] = []
        self._synced = asyncio.Event()

    # --- state ------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def mark_synced(self) -> None:
        self._synced.set()

    async def wait_synced(self, within: float) -> bool:
        try:
            async with asyncio.timeout(within):  # not wait_for: on 3.11 it can swallow a cancel
                await self._synced.wait()
        except TimeoutError:
            return False
        return True

    def get(self, job_id: str) -> JobRecord | None:
        return self._records.get(job_id)

    def records(self) -> list[JobRecord]:
        return list(self._records.values())

    def __len__(self) -> int:
        return len(self._records)

    @property
    def subscriptions(self) -> int:
        return len(self.log.subscriptions)

    # --- changes ----------------------------------------------------------------------

    def newest_first(self, below: tuple[datetime, str] | None = None) -> Iterator[JobRecord]:
        """Records newest first (by creation time, then id), from just below ``below`` if given."""
        order, records = self._order, self._records
        i = bisect.bisect_left(order, below) if below is not None else len(order)
        while i > 0:
            i -= 1
            yield records[order[i][1]]

    def apply(self, record: JobRecord) -> JobEvent | None:
        previous = self._records.get(record.job_id)
        kind = classify(previous, record)
        self._records[record.job_id] = record
        key = order_key(record)
        if previous is None:
            bisect.insort(self._order, key)
        elif (old := order_key(previous)) != key:
            del self._order[bisect.bisect_left(self._order, old)]
            bisect.insort(self._order, key)
        return self._publish(kind, record, previous) if kind is not None else None

    def remove(self, job_id: str) -> JobEvent | None:
        previous = self._records.pop(job_id, None)
        if previous is None:
            return None
        del self._order[bisect.bisect_left(self._order, order_key(previous))]
        return self._publish(JobEventType.DELETED, previous)

    def replace_all(self, records: Iterable[JobRecord]) -> None:
        """After a (re)list: apply what is there, delete what is gone."""
        seen: set[str] = set()
        for record in records:
            seen.add(record.job_id)
            self.apply(record)
        for job_id in [j for j in self._records if j not in seen]:
            self.remove(job_id)

    def _publish(self, kind: JobEventType, record: JobRecord, previous: JobRecord | None = None) -> JobEvent:
        event = self.log.publish(kind, record, previous)
        for listener in list(self._listeners):
            listener(event)
        return event

    def add_listener(self, listener: Callable[[JobEvent], None]) -> Callable[[], None]:
        """Call ``listener`` with every change as it is applied (it must be quick and not raise);
        returns the function that removes it. For controllers: unlike a subscription, nothing is
        buffered, so a listener never falls behind."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # --- streams (the change log) ---------------------------------------------------------

    @property
    def epoch(self) -> str:
        return self.log.epoch

    def token(self, seq: int) -> str:
        return self.log.token(seq)

    def current_token(self) -> str:
        """The position after the last change so far: watching from it misses nothing after now."""
        return self.log.current_token()

    def subscribe(
        self, predicate: Callable[[JobRecord], bool], resume_token: str = "", *, field: str = "resume_token"
    ) -> Subscription:
        """Live events matching ``predicate``; after ``resume_token``'s event if one is given."""
        return self.log.subscribe(predicate, resume_token, field=field)
