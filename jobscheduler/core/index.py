"""The live index: every job's latest record, a numbered log of changes, and subscriptions.

Backends feed it (the Kubernetes backend from its watches, the local backend
from its own state changes); reads, lists and watch streams are served from
it. It holds compact records, never API objects. Everything runs on one
event loop, so there are no locks.

Resume tokens name a position in the change log of this index instance:
``<epoch>.<seq>``. A token from another replica or an earlier run, or one
older than the retained window, is OUT_OF_RANGE: the client re-lists and
watches afresh.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import secrets
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta

from jobscheduler.core.errors import InvalidArgument, OutOfRange, ResourceExhausted
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


class Subscription:
    """One stream's view of the change log.

    It first replays retained events after its start point, read from the log as the
    consumer asks (so catching up never counts as falling behind), then hands out live
    events from a bounded buffer. A consumer that lets the buffer fill has fallen behind:
    the stream ends with ResourceExhausted naming the token to resume from.
    """

    def __init__(
        self,
        index: JobIndex,
        predicate: Callable[[JobRecord], bool],
        maxsize: int,
        last_seq: int,
        replay_until: int,
    ) -> None:
        self._index = index
        self._predicate = predicate
        self._maxsize = maxsize
        self._buffer: collections.deque[JobEvent] = collections.deque()
        self._wakeup = asyncio.Event()
        self._overflowed = False
        self._replayed = last_seq
        self._replay_until = replay_until
        #: The seq of the last event handed to the consumer (its resume point).
        self.last_seq = last_seq

    def offer(self, event: JobEvent) -> None:
        if self._overflowed or not event.concerns(self._predicate):
            return
        if len(self._buffer) >= self._maxsize:
            self._overflowed = True
            self._buffer.clear()
        else:
            self._buffer.append(event)
        self._wakeup.set()

    async def next(self) -> JobEvent:
        while self._replayed < self._replay_until:
            event = self._index._event_after(self._replayed)
            if event is None or event.seq > self._replay_until:
                self._replayed = self._replay_until
                break
            self._replayed = event.seq
            if event.concerns(self._predicate):
                self.last_seq = event.seq
                return event
        while not self._buffer:
            if self._overflowed:
                raise ResourceExhausted(
                    f"this stream fell more than {self._maxsize} events behind and was ended;"
                    f" resume with resume_token {self._index.token(self.last_seq)!r}"
                )
            self._wakeup.clear()
            await self._wakeup.wait()
        event = self._buffer.popleft()
        self.last_seq = event.seq
        return event

    def close(self) -> None:
        self._index._subscriptions.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JobIndex:
    def __init__(
        self,
        *,
        retention: timedelta = timedelta(minutes=15),
        max_events: int = 100_000,
        stream_buffer: int = 1000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.retention = retention
        self.max_events = max_events
        self.stream_buffer = stream_buffer
        self._clock = clock
        self.epoch = secrets.token_hex(4)
        self._records: dict[str, JobRecord] = {}
        #: (created, job id) of every record, ascending: ListJobs pages walk it from a cursor.
        self._order: list[tuple[datetime, str]] = []
        self._events: collections.deque[JobEvent] = collections.deque()
        self._seq = 0
        self._subscriptions: set[Subscription] = set()
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
        return len(self._subscriptions)

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
        self._seq += 1
        event = JobEvent(seq=self._seq, type=kind, record=record, time=self._clock(), previous=previous)
        self._events.append(event)
        horizon = event.time - self.retention
        while self._events and (len(self._events) > self.max_events or self._events[0].time < horizon):
            self._events.popleft()
        for subscription in list(self._subscriptions):
            subscription.offer(event)
        for listener in list(self._listeners):
            listener(event)
        return event

    def add_listener(self, listener: Callable[[JobEvent], None]) -> Callable[[], None]:
        """Call ``listener`` with every change as it is applied (it must be quick and not raise);
        returns the function that removes it. For controllers: unlike a subscription, nothing is
        buffered, so a listener never falls behind."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # --- streams ----------------------------------------------------------------------

    def token(self, seq: int) -> str:
        return f"{self.epoch}.{seq}"

    def current_token(self) -> str:
        """The position after the last change so far: watching from it misses nothing after now."""
        return self.token(self._seq)

    def subscribe(
        self, predicate: Callable[[JobRecord], bool], resume_token: str = "", *, field: str = "resume_token"
    ) -> Subscription:
        """Live events matching ``predicate``; after ``resume_token``'s event if one is given."""
        after = self._seq
        if resume_token:
            after = self._resume_point(resume_token, field)
        subscription = Subscription(self, predicate, self.stream_buffer, after, self._seq)
        self._subscriptions.add(subscription)
        return subscription

    def _event_after(self, seq: int) -> JobEvent | None:
        """The retained event following ``seq``; OutOfRange if it has been dropped meanwhile."""
        if not self._events:
            return None
        oldest = self._events[0].seq
        if seq + 1 < oldest:
            raise OutOfRange(
                "the stream fell behind the retained window while catching up; list and watch again"
            )
        position = seq + 1 - oldest
        return self._events[position] if position < len(self._events) else None

    def _resume_point(self, token: str, field: str) -> int:
        epoch, _, raw = token.partition(".")
        # (bounded first: a token is ~20 characters, and int() of thousands of digits raises)
        if len(token) > 100 or not epoch or not raw.isascii() or not raw.isdigit():
            raise InvalidArgument.field(field, "is not a resume token from this service")
        seq = int(raw)
        if epoch != self.epoch or seq > self._seq:
            raise OutOfRange(
                "the resume token comes from another replica or an earlier run of the service;"
                " list the jobs and watch again"
            )
        oldest = self._events[0].seq if self._events else self._seq + 1
        if seq < oldest - 1:
            raise OutOfRange(
                f"the resume token is older than the retained window ({self.retention.total_seconds():g} s"
                f" or {self.max_events} events); list the jobs and watch again"
            )
        return seq
