"""The shared change log (core/changelog.py), in-process: unit and property tests.

Streams are cursors into one log: every subscriber, whatever its filter, gets exactly the
events that concern it, in order; one that falls more than ``stream_buffer`` changes behind is
ended with OUT_OF_RANGE naming a token from which resuming misses nothing; a slow stream never
makes the log hold more than its bound. Nothing here sleeps or uses the network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobscheduler.core import changelog
from jobscheduler.core.changelog import ENCODED_KEPT, WAKE_SLICE, ChangeLog, Subscription
from jobscheduler.core.errors import OutOfRange
from jobscheduler.core.model import JobEvent, JobEventType, JobPhase, JobRecord

T0 = datetime(2026, 1, 1, tzinfo=UTC)
IDS = [f"job-{c * 10}" for c in "abcd"]
PHASES = [JobPhase.PENDING, JobPhase.RUNNING, JobPhase.SUCCEEDED]
#: The filters the property test watches with: all, one job, a phase.
PREDICATES: list[Callable[[JobRecord], bool]] = [
    lambda r: True,
    lambda r: r.job_id == IDS[0],
    lambda r: r.phase is JobPhase.RUNNING,
]


def record(job_id: str, phase: JobPhase = JobPhase.PENDING) -> JobRecord:
    return JobRecord.build(
        job_id=job_id, phase=phase, name=job_id.removeprefix("job-"), type="timer", namespace="default"
    )


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


def new_log(*, stream_buffer: int = 1000, max_events: int = 100_000) -> ChangeLog:
    return ChangeLog(
        retention=timedelta(minutes=15), max_events=max_events, stream_buffer=stream_buffer, clock=Clock()
    )


async def ready(subscription: Subscription) -> JobEvent | None:
    """The next event if the subscription has one now (OutOfRange raises), else None: a read
    that would wait is taken back. One turn of the loop is enough: ``next`` awaits nothing
    before it returns an event, raises, or waits for the next change."""
    task = asyncio.ensure_future(subscription.next())
    await asyncio.sleep(0)
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.sleep(0)
    return None


async def drain(subscription: Subscription) -> list[JobEvent]:
    events = []
    while (event := await ready(subscription)) is not None:
        events.append(event)
    return events


def seq_of(log: ChangeLog, message: str) -> int:
    token = message.split("resume_token")[1].strip().strip("'\" ")
    epoch, _, seq = token.partition(".")
    assert epoch == log.epoch
    return int(seq)


# --- the property ---------------------------------------------------------------------------------

publish_op = st.tuples(st.just("publish"), st.integers(0, len(IDS) - 1), st.integers(0, len(PHASES) - 1))
subscribe_op = st.tuples(st.just("subscribe"), st.integers(0, len(PREDICATES) - 1), st.integers(-1, 12))
read_op = st.tuples(st.just("read"), st.integers(0, 7), st.integers(1, 6))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(
    ops=st.lists(st.one_of(publish_op, subscribe_op, read_op), max_size=60),
    stream_buffer=st.integers(1, 6),
    max_events=st.integers(4, 20),
)
def test_every_subscriber_gets_exactly_its_events_in_order_or_a_token_that_resumes(
    ops: list[tuple[str, int, int]], stream_buffer: int, max_events: int
) -> None:
    async def scenario() -> None:
        log = new_log(stream_buffer=stream_buffer, max_events=max_events)
        published: list[JobEvent] = []  # the model: every change, seq = position + 1
        current: dict[str, JobRecord] = {}
        # subscription, predicate, its start seq, seq of the log when it subscribed, delivered seqs
        subs: list[tuple[Subscription, Callable[[JobRecord], bool], int, int, list[int]]] = []

        def expected(predicate: Callable[[JobRecord], bool], after: int, upto: int) -> list[int]:
            return [e.seq for e in published[after:upto] if e.concerns(predicate)]

        for op, a, b in ops:
            if op == "publish":
                job_id, previous = IDS[a], current.get(IDS[a])
                current[job_id] = record(job_id, PHASES[b])
                kind = JobEventType.CREATED if previous is None else JobEventType.UPDATED
                published.append(log.publish(kind, current[job_id], previous))
                assert published[-1].seq == len(published)
                assert len(log._events) <= max_events  # whatever the streams do
            elif op == "subscribe":
                after = max(len(published) - b, 0) if b >= 0 else len(published)
                token = log.token(after) if b >= 0 else ""
                try:
                    sub = log.subscribe(PREDICATES[a], token)
                except OutOfRange:
                    assert after < len(published) - len(log._events), "a retained position was refused"
                    continue
                subs.append((sub, PREDICATES[a], after, len(published), []))
            elif subs:
                sub, predicate, start, started_at, got = subs[a % len(subs)]
                for _ in range(b):
                    position = got[-1] if got else start
                    try:
                        event = await ready(sub)
                    except OutOfRange as exc:
                        if "resume_token" not in exc.message:  # the cursor fell off the log's start
                            assert sub.cursor + 1 < published[0].seq + len(published) - len(log._events)
                            break
                        resume_at = seq_of(log, exc.message)
                        # Ended only when behind by more than the bound, and nothing was skipped.
                        assert len(published) - max(resume_at, started_at) > log.stream_buffer
                        assert log.stream_buffer == min(stream_buffer, max_events)
                        assert resume_at >= position
                        assert expected(predicate, position, resume_at) == []
                        # Resuming from the token gives exactly the rest.
                        resumed = log.subscribe(predicate, log.token(resume_at))
                        rest = [e.seq for e in await drain(resumed)]
                        assert rest == expected(predicate, resume_at, len(published))
                        resumed.close()
                        break
                    if event is None:
                        assert expected(predicate, position, len(published)) == []
                        break
                    got.append(event.seq)
                    assert event is published[event.seq - 1]
                    assert got == expected(predicate, start, event.seq)
        for sub, *_ in subs:
            sub.close()
        assert not log.subscriptions

    asyncio.run(scenario())


# --- units ----------------------------------------------------------------------------------------


def test_a_slow_stream_ends_with_a_token_while_others_continue() -> None:
    async def scenario() -> None:
        log = new_log(stream_buffer=3, max_events=50)
        slow, quick = log.subscribe(lambda r: True), log.subscribe(lambda r: True)
        quick_got = []
        for i in range(10):
            log.publish(JobEventType.CREATED, record(f"job-{i:010d}"))
            quick_got.append((await quick.next()).seq)
        assert quick_got == list(range(1, 11))
        with pytest.raises(OutOfRange) as info:
            await slow.next()
        assert seq_of(log, info.value.message) == 0
        resumed = log.subscribe(lambda r: True, log.token(0))
        # Catching up from the token is not falling behind, however far back it is.
        assert [e.seq for e in await drain(resumed)] == list(range(1, 11))

    asyncio.run(scenario())


def test_the_token_of_a_filtered_stream_is_past_what_it_skipped() -> None:
    """A stream ended for lag names the position it has read up to (events it skipped did not
    concern it), not its last match, which may be long gone from the log."""

    async def scenario() -> None:
        log = new_log(stream_buffer=2, max_events=4)
        sub = log.subscribe(lambda r: r.job_id == IDS[0])
        log.publish(JobEventType.CREATED, record(IDS[0]))
        assert (await sub.next()).seq == 1
        for i in range(6):
            log.publish(JobEventType.CREATED, record(f"job-{i:010d}"))
            assert await ready(sub) is None  # read (and skipped) as it comes
        for i in range(3):
            log.publish(JobEventType.UPDATED, record(IDS[1], PHASES[i]))
        with pytest.raises(OutOfRange) as info:
            await sub.next()
        assert seq_of(log, info.value.message) == 7
        assert log.subscribe(lambda r: True, log.token(7)) is not None  # still within the log

    asyncio.run(scenario())


def test_each_event_is_encoded_once_for_all_streams() -> None:
    async def scenario() -> None:
        log = new_log()
        calls: list[int] = []

        def encode(event: JobEvent) -> bytes:
            calls.append(event.seq)
            return str(event.seq).encode()

        subs = [log.subscribe(lambda r: True) for _ in range(5)]
        for i in range(3):
            log.publish(JobEventType.CREATED, record(IDS[i]))
        for sub in subs:
            assert [log.encoded(e, encode) for e in await drain(sub)] == [b"1", b"2", b"3"]
        assert calls == [1, 2, 3]
        # An event that is not the log's (WatchJob's made-up first event) is never served from it.
        made_up = JobEvent(2, JobEventType.CREATED, record(IDS[3]), T0)
        assert log.encoded(made_up, lambda e: b"made up") == b"made up"
        assert log.encoded(made_up, lambda e: b"again") == b"again"

    asyncio.run(scenario())


def test_encoded_forms_are_kept_for_the_newest_events_only() -> None:
    log = new_log()
    events = [log.publish(JobEventType.CREATED, record(f"job-{i:010d}")) for i in range(ENCODED_KEPT + 50)]
    for event in events:
        log.encoded(event, lambda e: b"x")
    assert len(log._encoded) <= ENCODED_KEPT
    assert min(log._encoded) > 50


def test_streams_are_woken_a_slice_at_a_time() -> None:
    """What the loop has to do besides (a unary call) waits for one slice of streams, not all."""

    async def scenario() -> None:
        log = new_log()
        n = 5 * WAKE_SLICE
        woken: list[str] = []

        async def watch(i: int) -> None:
            with log.subscribe(lambda r: True) as sub:
                await sub.next()
                woken.append(f"stream {i}")

        tasks = [asyncio.ensure_future(watch(i)) for i in range(n)]
        await asyncio.sleep(0)  # each task's first step: subscribe, wait
        assert len(log._waiting) == n
        log.publish(JobEventType.CREATED, record(IDS[0]))
        asyncio.get_running_loop().call_soon(woken.append, "other work")
        await asyncio.gather(*tasks)
        assert len(woken) == n + 1
        assert woken.index("other work") <= 2 * WAKE_SLICE

    asyncio.run(scenario())


def test_streams_ended_while_waiting_are_not_kept() -> None:
    async def scenario() -> None:
        log = new_log()
        for _ in range(500):
            with log.subscribe(lambda r: True) as sub:
                assert await ready(sub) is None
        assert len(log._waiting) <= 64 + 1
        assert not log.subscriptions

    asyncio.run(scenario())


def test_a_stream_that_fell_off_the_retained_window_while_catching_up_is_out_of_range() -> None:
    async def scenario() -> None:
        log = new_log(max_events=3)
        log.publish(JobEventType.CREATED, record(IDS[0]))
        sub = log.subscribe(lambda r: True, log.token(0))
        for i in range(1, 4):
            log.publish(JobEventType.CREATED, record(IDS[i]))
        with pytest.raises(OutOfRange):
            await sub.next()

    asyncio.run(scenario())


def test_a_job_leaving_the_filter_is_the_last_event_of_it_the_stream_gets() -> None:
    async def scenario() -> None:
        log = new_log()
        running = log.subscribe(lambda r: r.phase is JobPhase.RUNNING)
        pending = record(IDS[0])
        started = record(IDS[0], JobPhase.RUNNING)
        done = record(IDS[0], JobPhase.SUCCEEDED)
        log.publish(JobEventType.CREATED, pending)
        log.publish(JobEventType.STARTED, started, pending)
        log.publish(JobEventType.SUCCEEDED, done, started)
        log.publish(JobEventType.DELETED, done, done)
        assert [(e.seq, e.record.phase) for e in await drain(running)] == [
            (2, JobPhase.RUNNING),
            (3, JobPhase.SUCCEEDED),
        ]

    asyncio.run(scenario())


async def watchers(
    log: ChangeLog, n: int, hold: asyncio.Event
) -> tuple[list[asyncio.Task[None]], list[int], asyncio.Event]:
    """``n`` streams waiting for a change; each, once woken, notes its number (the event: all
    were woken) and does not come back for its next event until ``hold`` is set."""
    woken: list[int] = []
    all_woken = asyncio.Event()

    async def watch(i: int) -> None:
        with log.subscribe(lambda r: True) as sub:
            await sub.next()
            woken.append(i)
            if len(woken) == n:
                all_woken.set()
            await hold.wait()
            assert await ready(sub) is None  # back for the next one: there is none

    tasks = [asyncio.ensure_future(watch(i)) for i in range(n)]
    await asyncio.sleep(0)
    assert len(log._waiting) == n
    return tasks, woken, all_woken


def test_the_next_slice_is_woken_once_the_last_is_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changelog, "SLICE_WAIT", 60.0)  # (only streams coming back move it on)

    async def scenario() -> None:
        log = new_log()
        hold = asyncio.Event()
        tasks, woken, _ = await watchers(log, 3 * WAKE_SLICE, hold)
        log.publish(JobEventType.CREATED, record(IDS[0]))
        for _ in range(5):
            await asyncio.sleep(0)
        assert sorted(woken) == list(range(WAKE_SLICE))  # the first slice, still out
        hold.set()  # they come back: the next slices follow, in order
        async with asyncio.timeout(10):
            await asyncio.gather(*tasks)
        assert woken == list(range(3 * WAKE_SLICE))

    asyncio.run(scenario())


def test_streams_that_do_not_come_back_hold_up_the_others_only_briefly() -> None:
    async def scenario() -> None:
        log = new_log()
        hold = asyncio.Event()  # never set before all are woken: no stream comes back
        tasks, woken, all_woken = await watchers(log, 3 * WAKE_SLICE, hold)
        log.publish(JobEventType.CREATED, record(IDS[0]))
        async with asyncio.timeout(10):
            await all_woken.wait()  # (the log's own timer wakes the next slices)
        hold.set()
        await asyncio.gather(*tasks)
        assert woken == list(range(3 * WAKE_SLICE))

    asyncio.run(scenario())
