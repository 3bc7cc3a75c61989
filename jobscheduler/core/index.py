"""The live index: every job's latest record, and (core/changelog.py) a numbered log of changes.

Backends feed it (the Kubernetes backend from its watches, the local backend
from its own state changes); reads, lists and watch streams are served from
it. It holds compact records, never API objects. Everything runs on one
event loop, so there are no locks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta

from jobscheduler.core.changelog import ChangeLog, Subscription
from jobscheduler.core.model import JobEvent, JobEventType, JobFilter, JobPhase, JobRecord
from jobscheduler.core.postings import OrderKey, Postings, Term, filter_terms, record_terms
from jobscheduler.core.query import EPOCH, order_key
from jobscheduler.core.selectors import parse_selector

#: A (re)list changing more jobs than this rebuilds the id lists in one sort.
_REBUILD_AFTER = 256

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
        self._clock = clock
        self._records: dict[str, JobRecord] = {}
        #: Job ids by (created, job id), ascending, all and per filter term: ListJobs pages walk
        #: them from a cursor.
        self._postings = Postings(self._order_key, self._records.__contains__)
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

    def _order_key(self, job_id: str) -> OrderKey:
        return order_key(self._records[job_id])

    def newest_first(
        self, below: OrderKey | None = None, job_filter: JobFilter | None = None
    ) -> Iterator[JobRecord]:
        """Records newest first (by creation time, then id), from just below ``below`` if given.

        With ``job_filter``: at least every record it matches (the caller still applies it),
        read from the smallest of its indexed alternatives (core/postings.py), and only down to
        its ``created_after``."""
        terms: list[Term] | None = None
        after: datetime | None = None
        if job_filter is not None:
            if job_filter.created_before is not None:
                bound = (job_filter.created_before, "")
                below = bound if below is None or bound < below else below
            after = job_filter.created_after
            terms = self._cheapest(job_filter)
        records = self._records
        for job_id in self._postings.walk(terms, below):
            record = records[job_id]
            if after is not None and (record.created_at or EPOCH) < after:
                return
            yield record

    def _cheapest(self, job_filter: JobFilter) -> list[Term] | None:
        """The filter's alternative with the fewest ids; None (all) if none has fewer than all."""
        best, best_size = None, len(self._postings.all)
        for terms in filter_terms(job_filter, parse_selector(job_filter.label_selector)):
            size = sum(self._postings.size(t) for t in terms)
            if size < best_size:
                best, best_size = terms, size
        return best

    def apply(self, record: JobRecord) -> JobEvent | None:
        previous = self._records.get(record.job_id)
        kind = classify(previous, record)
        if kind is None:
            self._records[record.job_id] = record  # equal, maybe not the same object
            return None
        self._reindex(previous, record)
        return self._publish(kind, record, previous)

    def _reindex(self, previous: JobRecord | None, record: JobRecord) -> None:
        """Move ``record``'s id to the lists it belongs in now (``previous`` is still the stored one)."""
        postings, job_id = self._postings, record.job_id
        key = order_key(record)
        terms = record_terms(record)
        if previous is None:
            self._records[job_id] = record
            postings.add_to_all(job_id, key)
            postings.add(job_id, terms, key)
            return
        old_key, old_terms = order_key(previous), record_terms(previous)
        if old_key != key:
            postings.discard_from_all(job_id, old_key)
            postings.discard(job_id, old_terms, old_key)
            self._records[job_id] = record
            postings.add_to_all(job_id, key)
            postings.add(job_id, terms, key)
            return
        postings.discard(job_id, old_terms - terms, key)
        self._records[job_id] = record
        postings.add(job_id, terms - old_terms, key)

    def remove(self, job_id: str) -> JobEvent | None:
        previous = self._records.get(job_id)
        if previous is None:
            return None
        key = order_key(previous)
        self._postings.discard_from_all(job_id, key)
        self._postings.discard(job_id, record_terms(previous), key)
        del self._records[job_id]
        return self._publish(JobEventType.DELETED, previous)

    def replace_all(self, records: Iterable[JobRecord]) -> None:
        """After a (re)list: apply what is there, delete what is gone.

        Many changes at once (a first list) are stored first and the id lists rebuilt in one
        sort, instead of inserting every id into sorted lists one at a time; then the changes
        are published in the order they were listed."""
        listed = {record.job_id: record for record in records}
        changes: list[tuple[JobEventType, JobRecord, JobRecord | None]] = []
        for record in listed.values():
            previous = self._records.get(record.job_id)
            kind = classify(previous, record)
            if kind is not None:
                changes.append((kind, record, previous))
            elif previous is not record:
                self._records[record.job_id] = record
        if len(changes) > _REBUILD_AFTER:
            for _, record, _ in changes:
                self._records[record.job_id] = record
            self._rebuild()
        else:
            for _, record, previous in changes:
                self._reindex(previous, record)
        # A list before the first sync is not logged while nobody reads the log (a watch waits
        # for the sync; a token names a position in this instance's log): the first list's one
        # CREATED event per job would take ~110 bytes per job. Listeners still get every change.
        log = self.synced or bool(self.log.subscriptions)
        for kind, record, previous in changes:
            self._publish(kind, record, previous, log=log)
        for job_id in [j for j in self._records if j not in listed]:
            self.remove(job_id)

    def _rebuild(self) -> None:
        records = self._records
        ordered = sorted(records, key=self._order_key)
        self._postings.rebuild((job_id, record_terms(records[job_id])) for job_id in ordered)

    def _publish(
        self, kind: JobEventType, record: JobRecord, previous: JobRecord | None = None, *, log: bool = True
    ) -> JobEvent:
        if log:
            event = self.log.publish(kind, record, previous)
        else:
            event = JobEvent(
                seq=self.log.seq, type=kind, record=record, time=self._clock(), previous=previous
            )
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
