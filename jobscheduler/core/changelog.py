"""The change log: every change of the live index, numbered, and the streams that read it.

Resume tokens name a position in the log of this index instance: ``<epoch>.<seq>``. A
token from another replica or an earlier run, or one older than the retained window, is
OUT_OF_RANGE: the client re-lists and watches afresh.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from jobscheduler.core.errors import InvalidArgument, OutOfRange, ResourceExhausted
from jobscheduler.core.model import JobEvent, JobEventType, JobRecord


class Subscription:
    """One stream's view of the change log.

    It first replays retained events after its start point, read from the log as the
    consumer asks (so catching up never counts as falling behind), then hands out live
    events from a bounded buffer. A consumer that lets the buffer fill has fallen behind:
    the stream ends with ResourceExhausted naming the token to resume from.
    """

    def __init__(
        self,
        log: ChangeLog,
        predicate: Callable[[JobRecord], bool],
        maxsize: int,
        last_seq: int,
        replay_until: int,
    ) -> None:
        self._log = log
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
            event = self._log.event_after(self._replayed)
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
                    f" resume with resume_token {self._log.token(self.last_seq)!r}"
                )
            self._wakeup.clear()
            await self._wakeup.wait()
        event = self._buffer.popleft()
        self.last_seq = event.seq
        return event

    def close(self) -> None:
        self._log.subscriptions.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ChangeLog:
    def __init__(
        self,
        *,
        retention: timedelta,
        max_events: int,
        stream_buffer: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.retention = retention
        self.max_events = max_events
        self.stream_buffer = stream_buffer
        self._clock = clock
        self.epoch = secrets.token_hex(4)
        self._events: collections.deque[JobEvent] = collections.deque()
        self._seq = 0
        self.subscriptions: set[Subscription] = set()

    def publish(self, kind: JobEventType, record: JobRecord, previous: JobRecord | None = None) -> JobEvent:
        self._seq += 1
        event = JobEvent(seq=self._seq, type=kind, record=record, time=self._clock(), previous=previous)
        self._events.append(event)
        horizon = event.time - self.retention
        while self._events and (len(self._events) > self.max_events or self._events[0].time < horizon):
            self._events.popleft()
        for subscription in list(self.subscriptions):
            subscription.offer(event)
        return event

    def clear(self) -> None:
        """Forget the retained events (positions and tokens stay valid going forward)."""
        self._events.clear()

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
        self.subscriptions.add(subscription)
        return subscription

    def event_after(self, seq: int) -> JobEvent | None:
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
