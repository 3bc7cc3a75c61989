"""The change log: every change of the live index, numbered, read by the streams that watch it.

One log for all streams. Each stream holds only its cursor (the seq it has read up to) and its
filter; it reads forward from the shared log, so a change costs nothing per stream until that
stream reads it, and a slow stream holds no memory of its own. The log keeps at most
``max_events`` events (and none older than ``retention``); a stream that falls more than
``stream_buffer`` changes behind the newest is ended with OUT_OF_RANGE naming a resume token
that is still within the log, so resuming misses nothing. Catching up (a resumed stream
replaying) never counts as falling behind: only changes made after the stream started do.

Waiting streams are woken a slice at a time (``WAKE_SLICE``), and the next slice only once
the streams of the last have handed their event to the transport and come back for the next
(or after ``SLICE_WAIT`` seconds, for streams stuck behind a client that does not read): the
event loop never has more than a slice of streams' writes queued at once, so a unary call that
arrives during a fan-out waits for one slice, not for every stream.

The API layer may keep each event's encoded form next to it (``encoded``), so a change is
encoded once however many streams send it.

Resume tokens name a position in the log of this index instance: ``<epoch>.<seq>``. A token
from another replica or an earlier run, or one older than the retained window, is
OUT_OF_RANGE: the client re-lists and watches afresh.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from jobscheduler.core.errors import InvalidArgument, OutOfRange
from jobscheduler.core.model import JobEvent, JobEventType, JobRecord

#: Waiting streams woken per turn of the event loop.
WAKE_SLICE: Final = 16
#: Seconds after which the next slice is woken even if streams of the last are not back yet.
SLICE_WAIT: Final = 0.002
#: Encoded events kept (the newest): streams that keep up read these; one far behind encodes anew.
ENCODED_KEPT: Final = 4096


class Subscription:
    """One stream's cursor in the change log, with its filter.

    ``next`` returns the next event after the cursor that concerns the filter (the job matches
    it, or matched it before the change), waiting for one if the stream is at the newest.
    """

    def __init__(self, log: ChangeLog, predicate: Callable[[JobRecord], bool], after: int) -> None:
        self._log = log
        self._predicate = predicate
        #: Every event up to this seq has been read (handed out, or did not concern the filter).
        self.cursor = after
        #: Events up to this one existed when the stream started: replaying them is catching up.
        self._started_at = log.seq
        #: The seq of the last event handed to the consumer (its resume point).
        self.last_seq = after
        #: The slice this stream was woken in, until it comes back (0: not woken by a slice).
        self._slice = 0

    async def next(self) -> JobEvent:
        log = self._log
        if self._slice:
            log.back(self)
        while True:
            while self.cursor < log.seq:
                event = log.event_after(self.cursor)  # (OutOfRange if it fell off the log meanwhile)
                if log.seq - max(self.cursor, self._started_at) > log.stream_buffer:
                    raise OutOfRange(
                        f"this stream fell more than {log.stream_buffer} changes behind and was ended;"
                        f" resume with resume_token {log.token(self.cursor)!r}"
                    )
                self.cursor = event.seq
                if event.concerns(self._predicate):
                    self.last_seq = event.seq
                    return event
            if self._slice:
                log.back(self)
            self._slice = await log.wait()

    def close(self) -> None:
        if self._slice:
            self._log.back(self)
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
        #: How many changes a stream may fall behind the newest before it is ended.
        self.stream_buffer = min(stream_buffer, max_events)
        self._clock = clock
        self.epoch = secrets.token_hex(4)
        self._events: collections.deque[JobEvent] = collections.deque()
        #: seq -> (event, its encoded form), for the newest ENCODED_KEPT events read.
        self._encoded: dict[int, tuple[JobEvent, bytes]] = {}
        self.seq = 0
        self.subscriptions: set[Subscription] = set()
        #: Streams waiting for the next change, and those a change is waking.
        #: Their futures get the number of the slice that woke them.
        self._waiting: list[asyncio.Future[int]] = []
        self._waking: collections.deque[asyncio.Future[int]] = collections.deque()
        #: The current slice's number, its streams not back yet, and the timer for the next.
        self._slice = 0
        self._out = 0
        self._timer: asyncio.Handle | None = None

    # --- writing ----------------------------------------------------------------------------

    def publish(self, kind: JobEventType, record: JobRecord, previous: JobRecord | None = None) -> JobEvent:
        self.seq += 1
        event = JobEvent(seq=self.seq, type=kind, record=record, time=self._clock(), previous=previous)
        events = self._events
        events.append(event)
        horizon = event.time - self.retention
        while events and (len(events) > self.max_events or events[0].time < horizon):
            events.popleft()
        if self._waiting:
            idle = not self._waking
            self._waking.extend(self._waiting)
            self._waiting = []
            if idle:
                self._wake_slice()
        return event

    def _wake_slice(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._slice += 1
        self._out = 0
        waking = self._waking
        while waking and self._out < WAKE_SLICE:
            future = waking.popleft()
            if not future.done():  # (a stream ended while waiting cancelled its future)
                future.set_result(self._slice)
                self._out += 1
        if waking:
            self._timer = waking[0].get_loop().call_later(SLICE_WAIT, self._wake_slice)

    def back(self, subscription: Subscription) -> None:
        """A stream woken by a slice comes back (for its next event, or ended): once all of the
        slice are back, the next slice is woken."""
        current = subscription._slice == self._slice
        subscription._slice = 0
        if current:
            self._out -= 1
            if self._out <= 0 and self._timer is not None:
                self._timer.cancel()
                self._timer = self._waking[0].get_loop().call_soon(self._wake_slice)

    def clear(self) -> None:
        """Forget the retained events (positions and tokens stay valid going forward)."""
        self._events.clear()
        self._encoded.clear()

    # --- reading ----------------------------------------------------------------------------

    async def wait(self) -> int:
        """Until the next change (or a little after: streams are woken a slice at a time);
        returns the number of the slice that woke the stream."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        waiting = self._waiting
        if len(waiting) > 2 * len(self.subscriptions) + 64:  # streams ended while no change came
            waiting[:] = [f for f in waiting if not f.done()]
        waiting.append(future)
        return await future

    def event_after(self, seq: int) -> JobEvent:
        """The retained event following ``seq`` (< the newest); OutOfRange if it was dropped."""
        events = self._events
        oldest = events[0].seq if events else self.seq + 1
        if seq + 1 < oldest:
            raise OutOfRange(
                f"the stream fell behind the retained window ({self.retention.total_seconds():g} s"
                f" or {self.max_events} events); list the jobs and watch again"
            )
        return events[seq + 1 - oldest]

    def encoded(self, event: JobEvent, encode: Callable[[JobEvent], bytes]) -> bytes:
        """``encode(event)``, computed once for an event of this log however many streams ask."""
        found = self._encoded.get(event.seq)
        if found is not None and found[0] is event:
            return found[1]
        data = encode(event)
        if self.seq - event.seq < ENCODED_KEPT and self._retained(event):
            self._encoded[event.seq] = (event, data)
            if len(self._encoded) > ENCODED_KEPT:
                del self._encoded[next(iter(self._encoded))]
        return data

    def _retained(self, event: JobEvent) -> bool:
        events = self._events
        position = event.seq - events[0].seq if events else -1
        return 0 <= position < len(events) and events[position] is event

    # --- positions --------------------------------------------------------------------------

    def token(self, seq: int) -> str:
        return f"{self.epoch}.{seq}"

    def current_token(self) -> str:
        """The position after the last change so far: watching from it misses nothing after now."""
        return self.token(self.seq)

    def subscribe(
        self, predicate: Callable[[JobRecord], bool], resume_token: str = "", *, field: str = "resume_token"
    ) -> Subscription:
        """Events matching ``predicate`` from now on, or after ``resume_token``'s event if given."""
        after = self._resume_point(resume_token, field) if resume_token else self.seq
        subscription = Subscription(self, predicate, after)
        self.subscriptions.add(subscription)
        return subscription

    def _resume_point(self, token: str, field: str) -> int:
        epoch, _, raw = token.partition(".")
        # (bounded first: a token is ~20 characters, and int() of thousands of digits raises)
        if len(token) > 100 or not epoch or not raw.isascii() or not raw.isdigit():
            raise InvalidArgument.field(field, "is not a resume token from this service")
        seq = int(raw)
        if epoch != self.epoch or seq > self.seq:
            raise OutOfRange(
                "the resume token comes from another replica or an earlier run of the service;"
                " list the jobs and watch again"
            )
        oldest = self._events[0].seq if self._events else self.seq + 1
        if seq < oldest - 1:
            raise OutOfRange(
                f"the resume token is older than the retained window ({self.retention.total_seconds():g} s"
                f" or {self.max_events} events); list the jobs and watch again"
            )
        return seq
