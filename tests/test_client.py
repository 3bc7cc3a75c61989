"""jobscheduler.client against real servers on 127.0.0.1 (local backend): every method, the error
tree, a retried ScheduleJob, and the watches across a cut connection (connection settings:
test_client_auth.py)."""

from __future__ import annotations

import asyncio
import pathlib
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from client_proxies import GrpcProxy, TcpProxy, first_only
from conftest import ServiceThread, local_service

from jobscheduler.client import (
    AlreadyExists,
    AsyncClient,
    Client,
    EventType,
    InvalidArgument,
    Job,
    JobEvent,
    JobPhase,
    NotFound,
    OutOfRange,
    Priority,
    TimerJob,
    Unavailable,
)

T = 15  # seconds: the longest any step may take
#: Never runs: every job built from it is held an hour (SCHEDULED), so no process starts.
HELD = TimerJob(1, "t", "http://127.0.0.1:9/")
#: The client's channel reconnects quickly after a refused connection (default backoff: 1 s).
FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 300)]


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def sink_url() -> Iterator[str]:
    """A completion report sink for timer jobs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/report"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[ServiceThread]:
    svc = local_service(tmp_path / "data")
    try:
        yield svc
    finally:
        svc.stop()


def target(svc: ServiceThread | TcpProxy | GrpcProxy) -> str:
    return f"127.0.0.1:{svc.port}"


# --- every method -------------------------------------------------------------------------------


def test_sync_client_schedules_follows_lists_and_cancels(server: ServiceThread, sink_url: str) -> None:
    with Client(target(server)) as client:
        job = client.schedule("runs", TimerJob(1, "tea", sink_url), labels={"team": "a"})
        assert job.phase in (JobPhase.PENDING, JobPhase.RUNNING) and job.labels["team"] == "a"
        assert job.request_id.startswith("py-")  # generated: a retry cannot make a second job
        events = list(client.watch(job.job_id, timeout=T))
        assert events[0].type is EventType.CREATED and events[-1].type is EventType.SUCCEEDED
        assert client.get(job.job_id).phase is JobPhase.SUCCEEDED
        assert any("timer completed" in line.line for line in client.logs(job.job_id))
        assert [line.attempt for line in client.logs(job.job_id, tail_lines=1)] == [1]

        held = [client.schedule(f"held-{i}", HELD, delay_seconds=3600, priority="high") for i in range(3)]
        assert held[0].phase is JobPhase.SCHEDULED and held[0].priority is Priority.HIGH
        # every page: 4 jobs, 1 per page, newest first
        assert [j.job_id for j in client.list(page_size=1)] == [j.job_id for j in (*held[::-1], job)]
        assert [j.name for j in client.list(phases=["scheduled"], name_prefix="held-1")] == ["held-1"]
        page = client.list_page(page_size=2)
        assert len(page.jobs) == 2 and page.next_page_token and page.resume_token
        cancelled = client.cancel(held[0].job_id, "no longer needed")
        assert cancelled.phase is JobPhase.CANCELLED
        assert client.cancel(held[0].job_id).phase is JobPhase.CANCELLED  # idempotent
        assert client.wait(held[0].job_id, timeout=T).phase is JobPhase.CANCELLED
        assert [q.name for q in client.queues()] == ["default"]
        assert client.get(job.job_id).to_dict()["phase"] == "SUCCEEDED"


def test_async_client_has_the_same_methods(server: ServiceThread) -> None:
    async def main() -> None:
        async with AsyncClient(target(server)) as client:
            held = [await client.schedule(f"a-{i}", HELD, delay_seconds=3600) for i in range(3)]
            assert [j.job_id async for j in client.list(page_size=2)] == [j.job_id for j in held[::-1]]
            assert (await client.get(held[0].job_id)).phase is JobPhase.SCHEDULED
            await client.cancel(held[0].job_id)
            assert (await client.wait(held[0].job_id, timeout=T)).phase is JobPhase.CANCELLED
            events = [e.type async for e in client.watch(held[0].job_id, timeout=T)]
            assert events == [EventType.CREATED]  # its current state, already final
            assert [q.name for q in await client.queues()] == ["default"]
            with pytest.raises(NotFound) as err:
                await client.get("job-doesnotexi")
            assert err.value.request_id

    asyncio.run(main())


def test_async_client_made_outside_the_loop_works_in_each_asyncio_run(server: ServiceThread) -> None:
    client = AsyncClient(target(server))  # no loop is running here: its channel comes on first use

    async def count() -> int:
        return len([j async for j in client.list()])

    assert asyncio.run(count()) == 0
    assert asyncio.run(count()) == 0  # another loop: another channel
    asyncio.run(client.close())


# --- errors -------------------------------------------------------------------------------------


def test_errors_map_to_classes_with_field_violations_and_request_id(server: ServiceThread) -> None:
    with Client(target(server)) as client:
        with pytest.raises(InvalidArgument) as invalid:
            client.schedule("bad", TimerJob(1, "t", "http://127.0.0.1:9/", env={"LD_PRELOAD": "x.so"}))
        fields = [v.field for v in invalid.value.field_violations]
        assert "timer_job.env[LD_PRELOAD]" in fields
        assert invalid.value.request_id and len(invalid.value.request_id) >= 8
        assert "timer_job.env[LD_PRELOAD]" in str(invalid.value)
        with pytest.raises(NotFound) as missing:
            client.get("job-doesnotexi")
        assert missing.value.code == "NOT_FOUND" and missing.value.request_id
        client.schedule("once", HELD, delay_seconds=3600, request_id="same-id")
        with pytest.raises(AlreadyExists):
            client.schedule("other", HELD, delay_seconds=3600, request_id="same-id")
        with pytest.raises(OutOfRange):
            next(client.watch_all(resume_token="0.99999999"))
        with pytest.raises(InvalidArgument) as bad_token:
            next(client.watch_all(resume_token="x" * 200))
        assert [v.field for v in bad_token.value.field_violations] == ["resume_token"]
    # Bad input the client can see is refused before it is sent, the same way.
    with Client(target(server)) as client, pytest.raises(InvalidArgument) as local:
        list(client.list(phases=["RUNNING", "RUNNIN"]))
    assert [v.field for v in local.value.field_violations] == ["filter.phases[1]"]
    assert local.value.request_id is None
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    with Client(f"127.0.0.1:{closed}", retries=1, timeout=3) as client, pytest.raises(Unavailable):
        client.get("job-doesnotexi")


# --- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_schedule_retried_after_a_lost_response_creates_one_job(server: ServiceThread, flavour: str) -> None:
    proxy = GrpcProxy(server.port, drop=first_only("ScheduleJob"))
    try:
        if flavour == "sync":
            with Client(target(proxy)) as client:
                job = client.schedule("once", HELD, delay_seconds=3600)
        else:

            async def main() -> Job:
                async with AsyncClient(target(proxy)) as client:
                    return await client.schedule("once", HELD, delay_seconds=3600)

            job = asyncio.run(main())
    finally:
        proxy.close()
    # The first ScheduleJob created the job but its answer was lost; the retry got the same job.
    assert proxy.calls.count("ScheduleJob") == 2
    with Client(target(server)) as direct:
        assert [j.job_id for j in direct.list()] == [job.job_id]


# --- watch_all across a dropped connection ------------------------------------------------------


def _watch_sync(address: str, token: str, out: queue.Queue[Any], stop_at: str) -> None:
    with Client(address, retries=50, options=FAST_RECONNECT) as client:
        for event in client.watch_all(resume_token=token, name_prefix="w-"):
            out.put(event)
            if event.job.name == stop_at:
                return


def _watch_async(address: str, token: str, out: queue.Queue[Any], stop_at: str) -> None:
    async def main() -> None:
        async with AsyncClient(address, retries=50, options=FAST_RECONNECT) as client:
            async for event in client.watch_all(resume_token=token, name_prefix="w-"):
                out.put(event)
                if event.job.name == stop_at:
                    return

    asyncio.run(main())


def _consume(run: Callable[..., None], *args: Any) -> tuple[queue.Queue[Any], threading.Thread]:
    out: queue.Queue[Any] = queue.Queue()

    def body() -> None:
        try:
            run(*args, out, "w-last")
        except BaseException as exc:
            out.put(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return out, thread


def _next(out: queue.Queue[Any]) -> JobEvent:
    item = out.get(timeout=T)
    if isinstance(item, BaseException):
        raise item
    assert isinstance(item, JobEvent)
    return item


@pytest.mark.parametrize("run", [_watch_sync, _watch_async], ids=["sync", "async"])
def test_watch_all_resumes_after_a_cut_connection_without_loss_or_repeat(
    server: ServiceThread, run: Callable[..., None]
) -> None:
    proxy = TcpProxy(server.port)
    direct = Client(target(server))
    try:
        token = direct.list_page(page_size=1).resume_token
        assert token
        reference, ref_thread = _consume(_watch_sync, target(server), token)
        watched, thread = _consume(run, target(proxy), token)
        a = direct.schedule("w-a", HELD, delay_seconds=3600)
        assert (_next(watched).type, _next(reference).type) == (EventType.CREATED, EventType.CREATED)
        # Cut the watcher off; while it cannot reconnect, two more changes happen.
        proxy.cut()
        b = direct.schedule("w-b", HELD, delay_seconds=3600)
        direct.cancel(a.job_id)
        before = [_next(reference), _next(reference)]
        proxy.resume()
        direct.cancel(b.job_id)
        direct.schedule("w-last", HELD, delay_seconds=3600)
        expected = [*before]
        while expected[-1].job.name != "w-last":
            expected.append(_next(reference))
        got = [_next(watched) for _ in expected]
        key: Callable[[JobEvent], tuple[Any, ...]] = lambda e: (e.type, e.job.job_id, e.resume_token)  # noqa: E731
        assert [key(e) for e in got] == [key(e) for e in expected]
        assert [(e.type, e.job.job_id) for e in got[:2]] == [
            (EventType.CREATED, b.job_id),
            (EventType.CANCELLED, a.job_id),
        ]
        assert proxy.connections >= 2  # it did reconnect
        thread.join(T)
        ref_thread.join(T)
        assert watched.empty()  # and stopped after w-last: nothing repeated after it either
    finally:
        direct.close()
        proxy.close()


def _watch_one_sync(address: str, job_id: str, out: queue.Queue[Any]) -> None:
    with Client(address, retries=50, options=FAST_RECONNECT) as client:
        for event in client.watch(job_id):
            out.put(event)
    out.put("end")


def _watch_one_async(address: str, job_id: str, out: queue.Queue[Any]) -> None:
    async def main() -> None:
        async with AsyncClient(address, retries=50, options=FAST_RECONNECT) as client:
            async for event in client.watch(job_id):
                out.put(event)

    asyncio.run(main())
    out.put("end")


@pytest.mark.parametrize("run", [_watch_one_sync, _watch_one_async], ids=["sync", "async"])
def test_watch_of_one_job_reconnects_and_reports_what_changed_meanwhile(
    server: ServiceThread, run: Callable[..., None]
) -> None:
    proxy = TcpProxy(server.port)
    direct = Client(target(server))
    try:
        job = direct.schedule("w-one", HELD, delay_seconds=3600)
        out: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=lambda: _safe(run, target(proxy), job.job_id, out), daemon=True).start()
        assert _next(out).type is EventType.CREATED
        proxy.cut()
        direct.cancel(job.job_id)
        proxy.resume()
        last = _next(out)
        assert (last.type, last.job.phase) == (EventType.CANCELLED, JobPhase.CANCELLED)
        assert out.get(timeout=T) == "end"  # nothing repeated: the watch ended after the final phase
    finally:
        direct.close()
        proxy.close()


def _safe(run: Callable[..., None], *args: Any) -> None:
    out: queue.Queue[Any] = args[-1]
    try:
        run(*args)
    except BaseException as exc:
        out.put(exc)
