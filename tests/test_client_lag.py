"""jobscheduler.client's ``watch_all`` when the server ends a stream that fell too far behind: it
resumes by itself from its last event's token (sync and async, against a real server on 127.0.0.1),
within its ``retries``; an OUT_OF_RANGE for any other reason still raises :class:`OutOfRange`.

A stream is made to fall behind as in test_streams.py: the client's connection has a fixed 64 KiB
HTTP/2 window, each event carries ~12 KB of labels, and the caller stops reading while jobs are
made, so the server cannot write and the log runs more than ``stream_buffer`` changes ahead."""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
import pytest
from conftest import local_service

from jobscheduler import metrics
from jobscheduler.client import AsyncClient, Client, EventType, JobEvent, OutOfRange, TimerJob
from jobscheduler.client._errors import stream_fell_behind
from jobscheduler.client._retry import resumable
from jobscheduler.core.changelog import ChangeLog
from jobscheduler.core.errors import OutOfRange as CoreOutOfRange
from jobscheduler.core.model import JobEventType, JobPhase, JobRecord

T = 15  # seconds: the longest any step may take
#: The whole of one watch (a bound: a hang ends in DeadlineExceeded, not a stuck test).
WATCH_DEADLINE = 60
#: Never runs: every job built from it is held an hour (SCHEDULED), so no process starts.
HELD = TimerJob(1, "t", "http://127.0.0.1:9/")
STREAM_BUFFER = 5
#: Jobs made while the watcher does not read: far more than STREAM_BUFFER past a full window.
JOBS = 30
#: A label key with a long DNS prefix, and a long value: ~12 KB of labels per job, so that a few
#: events fill the HTTP/2 window of a stream nobody reads (as test_streams.BULKY).
_PREFIX = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
BULKY = {f"{_PREFIX}/k{i:02d}{'x' * 59}": "v" * 63 for i in range(32)}
#: The watcher's own connection, with a fixed 64 KiB receive window (no BDP probing, which would
#: let its transport buffer megabytes for a stream nobody reads).
SLOW_WINDOW = [("grpc.http2.bdp_probe", 0), ("grpc.use_local_subchannel_pool", 1)]
WATCH_LABELS = {
    "grpc_type": "server_stream",
    "grpc_service": "jobscheduler.JobScheduler",
    "grpc_method": "WatchJobs",
}

R = TypeVar("R")


def wait_until(check: Callable[[], R | None], what: str, timeout: float = T) -> R:
    end = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def ended_for_lag() -> float:
    """WatchJobs streams the server has ended with OUT_OF_RANGE so far (this process)."""
    return (
        metrics.REGISTRY.get_sample_value(
            "grpc_server_handled_total", {**WATCH_LABELS, "grpc_code": "OutOfRange"}
        )
        or 0.0
    )


class Lagging:
    """A server with a small ``stream_buffer`` that records the resume token of every WatchJobs."""

    def __init__(self, data_dir: pathlib.Path) -> None:
        self.svc = local_service(data_dir, stream_buffer=STREAM_BUFFER)
        self.resumed_from: list[str] = []
        subscribe = self.svc.index.subscribe

        def recording(predicate: Callable[[JobRecord], bool], resume_token: str = "", **kw: Any) -> Any:
            self.resumed_from.append(resume_token)
            return subscribe(predicate, resume_token, **kw)

        self.svc.index.subscribe = recording  # type: ignore[method-assign]
        self.direct = Client(f"127.0.0.1:{self.svc.port}")
        self.target = f"127.0.0.1:{self.svc.port}"

    def make(self, names: list[str]) -> list[str]:
        """Schedule held, bulky jobs; their ids, once every change is in the server's log."""
        seq = self.svc.index.log.seq
        ids = [self.direct.schedule(n, HELD, delay_seconds=3600, labels=BULKY).job_id for n in names]
        wait_until(lambda: self.svc.index.log.seq >= seq + len(names), "the changes to be logged")
        return ids

    def close(self) -> None:
        self.direct.close()
        self.svc.stop()


@pytest.fixture
def lagging(tmp_path: pathlib.Path) -> Iterator[Lagging]:
    server = Lagging(tmp_path / "data")
    try:
        yield server
    finally:
        server.close()


NAMES = [f"bulky-{i:02d}" for i in range(JOBS)]


def check_resumed(server: Lagging, events: list[JobEvent], ids: list[str], lag_before: float) -> None:
    """Every job's CREATED event, in order, none repeated; the server ended the first stream for
    lag and the client resumed from the token of an event it had delivered."""
    assert [(e.type, e.job.job_id) for e in events] == [(EventType.CREATED, i) for i in ids]
    tokens = [e.resume_token for e in events]
    assert len(set(tokens)) == len(tokens)
    wait_until(lambda: ended_for_lag() > lag_before, "the server to end the lagging stream")
    assert len(server.resumed_from) >= 2, server.resumed_from
    for token in server.resumed_from[1:]:
        assert token in tokens[:-1], (token, tokens)  # after a delivered event, not anew


# --- the message the client recognises ---------------------------------------------------------


def _record(job_id: str) -> JobRecord:
    return JobRecord.build(job_id=job_id, phase=JobPhase.PENDING, name="n", type="timer", namespace="default")


def _server_messages() -> dict[str, str]:
    """The server's own OUT_OF_RANGE messages (core/changelog.py), one of each kind."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    messages: dict[str, str] = {}

    async def scenario() -> None:
        log = ChangeLog(retention=timedelta(minutes=15), max_events=3, stream_buffer=1, clock=lambda: now)
        slow = log.subscribe(lambda r: True)
        for i in range(2):
            log.publish(JobEventType.CREATED, _record(f"job-a{i:09d}"))
        with pytest.raises(CoreOutOfRange) as lag:
            await slow.next()
        messages["lag"] = lag.value.message
        catching_up = log.subscribe(lambda r: True, log.token(0))
        for i in range(3):
            log.publish(JobEventType.CREATED, _record(f"job-b{i:09d}"))
        with pytest.raises(CoreOutOfRange) as dropped:
            await catching_up.next()
        messages["fell off the window"] = dropped.value.message
        with pytest.raises(CoreOutOfRange) as old:
            log.subscribe(lambda r: True, log.token(0))
        messages["older than the window"] = old.value.message
        with pytest.raises(CoreOutOfRange) as other:
            log.subscribe(lambda r: True, "0000beef.1")
        messages["another run"] = other.value.message

    asyncio.run(scenario())
    return messages


class _Ended(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_only_the_servers_lag_message_counts_as_resumable() -> None:
    messages = _server_messages()
    assert "resume_token" in messages["lag"]
    for kind, message in messages.items():
        lag = kind == "lag"
        assert stream_fell_behind(message) is lag, (kind, message)
        assert OutOfRange(message).fell_behind is lag, (kind, message)
        assert resumable(_Ended(grpc.StatusCode.OUT_OF_RANGE, message)) is lag, (kind, message)
        # Only an OUT_OF_RANGE: the same words under another status are not the server's lag end.
        assert not resumable(_Ended(grpc.StatusCode.FAILED_PRECONDITION, message))
    assert resumable(_Ended(grpc.StatusCode.UNAVAILABLE, "connection reset"))
    assert not stream_fell_behind("")


# --- watch_all against a real server ----------------------------------------------------------


def test_sync_watch_all_resumes_after_the_server_ends_a_lagging_stream(lagging: Lagging) -> None:
    token = lagging.direct.list_page(page_size=1).resume_token
    lag_before = ended_for_lag()
    with Client(lagging.target, options=SLOW_WINDOW) as client:
        watch = client.watch_all(resume_token=token, name_prefix="bulky-", timeout=WATCH_DEADLINE)
        ids = lagging.make(NAMES[:1])
        events = [next(watch)]  # the stream is open and has read up to the newest change
        ids += lagging.make(NAMES[1:])  # ... and is not read while the rest are made
        events += [next(watch) for _ in NAMES[1:]]
    check_resumed(lagging, events, ids, lag_before)


def test_async_watch_all_resumes_after_the_server_ends_a_lagging_stream(lagging: Lagging) -> None:
    token = lagging.direct.list_page(page_size=1).resume_token
    lag_before = ended_for_lag()

    async def main() -> tuple[list[str], list[JobEvent]]:
        async with AsyncClient(lagging.target, options=SLOW_WINDOW) as client:
            watch = client.watch_all(resume_token=token, name_prefix="bulky-", timeout=WATCH_DEADLINE)
            ids = await asyncio.to_thread(lagging.make, NAMES[:1])
            events = [await anext(watch)]
            ids += await asyncio.to_thread(lagging.make, NAMES[1:])  # (the loop runs; nobody reads)
            events += [await anext(watch) for _ in NAMES[1:]]
            return ids, events

    ids, events = asyncio.run(main())
    check_resumed(lagging, events, ids, lag_before)


def test_a_stream_that_falls_behind_counts_against_retries(lagging: Lagging) -> None:
    """With no retries the first lag end is the caller's: OutOfRange, ``fell_behind``, after every
    event the stream did deliver, in order."""
    token = lagging.direct.list_page(page_size=1).resume_token
    with Client(lagging.target, options=SLOW_WINDOW, retries=0) as client:
        watch = client.watch_all(resume_token=token, name_prefix="bulky-", timeout=WATCH_DEADLINE)
        ids = lagging.make(NAMES[:1])
        events = [next(watch)]
        ids += lagging.make(NAMES[1:])
        with pytest.raises(OutOfRange) as ended:
            for event in watch:
                events.append(event)
                assert len(events) < len(ids), "every event arrived: the stream never fell behind"
    assert ended.value.fell_behind, ended.value.message
    assert [e.job.job_id for e in events] == ids[: len(events)]
    assert lagging.resumed_from == [token]  # not resumed


def _first_event(target: str, token: str, flavour: str) -> JobEvent:
    if flavour == "sync":
        with Client(target) as client:
            return next(client.watch_all(resume_token=token, timeout=WATCH_DEADLINE))

    async def main() -> JobEvent:
        async with AsyncClient(target) as client:
            return await anext(client.watch_all(resume_token=token, timeout=WATCH_DEADLINE))

    return asyncio.run(main())


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_other_out_of_range_still_raises(tmp_path: pathlib.Path, flavour: str) -> None:
    """A token older than the retained window, or from another server run, is not resumed from
    (nor retried): OutOfRange, ``fell_behind`` False, after a single WatchJobs."""
    svc = local_service(tmp_path / "data", watch_max_events=100)
    target = f"127.0.0.1:{svc.port}"
    try:
        with Client(target) as direct:
            oldest = direct.list_page(page_size=1).resume_token
            for i in range(101):  # 101 changes: the oldest token's next event is no longer kept
                direct.schedule(f"old-{i:03d}", HELD, delay_seconds=3600)
        epoch = oldest.partition(".")[0]
        other_run = ("0" if epoch != "0" * len(epoch) else "1") * len(epoch) + ".1"
        for token in (oldest, other_run):
            started = metrics.REGISTRY.get_sample_value("grpc_server_started_total", WATCH_LABELS) or 0.0
            with pytest.raises(OutOfRange) as refused:
                _first_event(target, token, flavour)
            assert not refused.value.fell_behind, refused.value.message
            assert "list the jobs" in refused.value.message
            assert metrics.REGISTRY.get_sample_value("grpc_server_started_total", WATCH_LABELS) == started + 1
    finally:
        svc.stop()
