"""The client-side write limit toward the API server (KUBE_API_QPS, KUBE_API_BURST).

Unit tests drive ``WriteThrottle`` with a fake clock; the end-to-end tests go over gRPC to the
in-process service and the API emulator, which records when each request arrived.
"""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
import pytest
from conftest import ServiceThread, kubernetes_service
from emulator import EmulatorThread

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.backends.kubernetes._throttle import WriteThrottle
from jobscheduler.metrics import REGISTRY

NS = "default"
JOBS_PATH = f"/apis/batch/v1/namespaces/{NS}/jobs"
CANCELLED_AT = "jobscheduler.io/cancelled-at"


# --- the limiter, with a fake clock ----------------------------------------------------------------


class FakeTime:
    """A clock that moves only when told to; ``sleep`` returns once the clock reaches its end."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, future))
        await future

    def move(self, seconds: float) -> None:
        """Advance the clock and wake the due sleepers, without letting any task run yet."""
        self.now += seconds
        due = [(end, f) for end, f in self._sleepers if end <= self.now + 1e-12]
        self._sleepers = [(end, f) for end, f in self._sleepers if end > self.now + 1e-12]
        for _, future in due:
            if not future.done():
                future.set_result(None)

    async def advance(self, seconds: float) -> None:
        self.move(seconds)
        await settle()


async def settle() -> None:
    """Let every runnable task run until all of them wait again."""
    for _ in range(20):
        await asyncio.sleep(0)


def run(scenario: Callable[[FakeTime], Awaitable[None]]) -> None:
    asyncio.run(scenario(FakeTime()))


def throttle(fake: FakeTime, qps: float, burst: int) -> WriteThrottle:
    return WriteThrottle(qps, burst, clock=fake.clock, sleep=fake.sleep)


def start(
    limiter: WriteThrottle, fake: FakeTime, got: list[tuple[int, float]], n: int, first: int = 0
) -> list[Any]:
    """``n`` writers, started in order; each records (its number, the time it got its token)."""

    async def writer(i: int) -> None:
        await limiter.acquire()
        got.append((i, fake.now))

    return [asyncio.create_task(writer(first + i)) for i in range(n)]


def test_burst_then_sustained_rate() -> None:
    async def scenario(fake: FakeTime) -> None:
        limiter = throttle(fake, qps=10, burst=3)
        got: list[tuple[int, float]] = []
        start(limiter, fake, got, 8)
        await settle()
        assert [t for _, t in got] == [0, 0, 0]  # the burst at once
        assert limiter.waiting == 5
        await fake.advance(0.05)
        assert len(got) == 3  # half a token is no token
        for _ in range(10):
            await fake.advance(0.05)
        assert [t for _, t in got] == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3, 0.4, 0.5], abs=1e-9)
        assert limiter.waiting == 0
        # Never more than burst + qps * elapsed.
        for k, (_, t) in enumerate(got):
            assert k + 1 <= 3 + 10 * t + 1e-9

        # Idle time saves up at most ``burst`` tokens.
        await fake.advance(60)
        assert limiter.tokens() == pytest.approx(3)
        later: list[tuple[int, float]] = []
        base = fake.now
        start(limiter, fake, later, 5)
        await settle()
        assert len(later) == 3
        await fake.advance(0.1)
        await fake.advance(0.1)
        assert [t - base for _, t in later] == pytest.approx([0, 0, 0, 0.1, 0.2], abs=1e-9)

    run(scenario)


def test_fifo_and_no_overtaking() -> None:
    async def scenario(fake: FakeTime) -> None:
        limiter = throttle(fake, qps=1, burst=1)
        got: list[tuple[int, float]] = []
        start(limiter, fake, got, 6)
        await settle()
        assert got == [(0, 0.0)]
        fake.move(1.0)  # a token is due for the head of the queue, which has not run yet
        assert not limiter.try_acquire()  # a newcomer does not take it from the waiters
        await settle()
        start(limiter, fake, got, 2, first=6)  # arrive while 1..5 still wait
        for _ in range(7):
            await fake.advance(1.0)
        assert [i for i, _ in got] == [0, 1, 2, 3, 4, 5, 6, 7]
        assert [t for _, t in got] == pytest.approx([0, 1, 2, 3, 4, 5, 6, 7])

    run(scenario)


def test_cancelled_waiters_take_no_token() -> None:
    async def scenario(fake: FakeTime) -> None:
        limiter = throttle(fake, qps=1, burst=1)
        got: list[tuple[int, float]] = []
        tasks = start(limiter, fake, got, 5)  # 0 gets the token; 1 (the head, sleeping), 2, 3, 4 wait
        await settle()
        assert got == [(0, 0.0)] and limiter.waiting == 4

        await fake.advance(0.5)
        tasks[1].cancel()  # the head, while it sleeps for the next token
        tasks[2].cancel()  # one further back
        await settle()
        assert tasks[1].cancelled() and tasks[2].cancelled()
        assert limiter.waiting == 2
        assert limiter.tokens() == pytest.approx(0.5)  # nothing was taken

        await fake.advance(0.5)
        assert got[1:] == [(3, 1.0)]  # 3 moved up and got the token that was 1's turn

        # The head is woken for its token and cancelled before it runs: it takes nothing.
        fake.move(1.0)
        tasks[4].cancel()
        await settle()
        assert tasks[4].cancelled()
        assert limiter.waiting == 0
        assert limiter.tokens() == pytest.approx(1.0)
        late: list[tuple[int, float]] = []
        start(limiter, fake, late, 1, first=5)
        await settle()
        assert late == [(5, 2.0)]  # the token 4 did not use

    run(scenario)


def test_zero_qps_disables_the_limit() -> None:
    async def scenario(fake: FakeTime) -> None:
        limiter = throttle(fake, qps=0, burst=1)
        assert not limiter.enabled
        got: list[tuple[int, float]] = []
        start(limiter, fake, got, 1000)
        await settle()
        assert len(got) == 1000 and limiter.waiting == 0

    run(scenario)


def test_invalid_settings() -> None:
    with pytest.raises(ValueError, match="qps"):
        WriteThrottle(-1, 1)
    with pytest.raises(ValueError, match="burst"):
        WriteThrottle(1, 0)


# --- end to end: gRPC -> service -> API emulator ---------------------------------------------------


def timer_request(name: str) -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(
        name=name,
        timer_job=pb.TimerJob(
            duration_seconds=30, timer_name="t", control_plane_endpoint="http://control-plane.example:8080/r"
        ),
    )


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def throttled(kubeconfig: pathlib.Path, request: pytest.FixtureRequest) -> Iterator[ServiceThread]:
    qps, burst = request.param
    svc = kubernetes_service(kubeconfig, kube_api_qps=qps, kube_api_burst=burst)
    try:
        yield svc
    finally:
        svc.stop()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.mark.parametrize("throttled", [(20, 5)], indirect=True)
def test_burst_of_schedules_is_paced(emulator: EmulatorThread, throttled: ServiceThread) -> None:
    qps, burst, n = 20, 5, 40
    waited_before = sample("jobscheduler_kube_write_wait_seconds_count")
    emulator.trim_log()
    started = time.monotonic()
    calls = [throttled.stub.ScheduleJob.future(timer_request(f"burst-{i}"), timeout=10) for i in range(n)]
    ids = {call.result().job_id for call in calls}
    took = time.monotonic() - started

    assert len(ids) == n
    assert len([j for j in emulator.jobs() if j["metadata"]["name"] in ids]) == n
    posts = sorted(
        t for t, method, path in emulator.request_times() if method == "POST" and path == JOBS_PATH
    )
    assert len(posts) == n
    # Token bucket: in every window, at most burst + qps * its length. The emulator sees arrival
    # times, which differ from send times by the request's own latency, and on a loaded machine
    # (the suite runs in parallel) requests sent apart can arrive together: 150 ms of slack
    # (3 tokens) for that; an unpaced burst of 40 would still break it, and the total below.
    for i in range(n):
        for j in range(i, n):
            assert j - i + 1 <= burst + qps * (posts[j] - posts[i] + 0.15), (i, j, posts[j] - posts[i])
    # ... and it was paced, not refused: all succeeded, in about (n - burst) / qps seconds.
    assert posts[-1] - posts[0] >= (n - burst) / qps - 0.1
    assert took < (n - burst) / qps + 2.0
    assert sample("jobscheduler_kube_write_wait_seconds_count") - waited_before >= n
    assert sample("jobscheduler_kube_writes_waiting") == 0


@pytest.mark.parametrize("throttled", [(0.5, 1)], indirect=True)
def test_deadline_while_waiting_creates_nothing(emulator: EmulatorThread, throttled: ServiceThread) -> None:
    stub = throttled.stub
    limiter = throttled.backend.api.write_throttle
    assert limiter is not None
    expired = {
        "grpc_type": "unary",
        "grpc_service": "jobscheduler.JobScheduler",
        "grpc_method": "ScheduleJob",
        "grpc_code": "DeadlineExceeded",
    }
    expired_before = sample("grpc_server_handled_total", **expired)
    t0 = time.monotonic()
    first = stub.ScheduleJob(timer_request("first"), timeout=10).job_id  # the one token of the burst

    # The next write would wait 2 s for a token; its caller gives up after 0.5 s.
    waiting = stub.ScheduleJob.future(timer_request("too-late"), timeout=0.5)
    wait_until(lambda: limiter.waiting == 1, 2, "the ScheduleJob to queue for a token")
    assert sample("jobscheduler_kube_writes_waiting") == 1
    # Reads do not queue behind writes.
    for read in (
        lambda: stub.GetJobStatus(pb.GetJobStatusRequest(job_id=first), timeout=1),
        lambda: stub.ListJobs(pb.ListJobsRequest(), timeout=1),
    ):
        began = time.monotonic()
        read()
        assert time.monotonic() - began < 0.25
    with pytest.raises(grpc.RpcError) as failed:
        waiting.result()
    assert failed.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 1.5
    # The server counts (and logs) it as the client saw it, not as CANCELLED.
    wait_until(
        lambda: sample("grpc_server_handled_total", **expired) == expired_before + 1,
        2,
        "the expired RPC counted",
    )
    wait_until(lambda: limiter.waiting == 0, 1, "the cancelled waiter to leave the queue")

    # The same for CancelJob: its PATCH waits, the deadline passes, the job is not cancelled.
    with pytest.raises(grpc.RpcError) as failed:
        stub.CancelJob(pb.CancelJobRequest(job_id=first, reason="too late"), timeout=0.5)
    assert failed.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: limiter.waiting == 0, 1, "the cancelled waiter to leave the queue")

    # Longer than the limiter needed for the next token: nothing was sent behind the clients' backs.
    time.sleep(max(0.0, t0 + 2.6 - time.monotonic()))
    jobs = emulator.jobs()
    assert [j["metadata"]["name"] for j in jobs] == [first]
    assert CANCELLED_AT not in (jobs[0]["metadata"].get("annotations") or {})
    writes = [
        (m, p)
        for _, m, p in emulator.request_times()
        if m in ("POST", "PUT", "PATCH", "DELETE") and "/leases" not in p  # (leader election's own)
    ]
    assert writes == [("POST", JOBS_PATH)]

    # And the cancelled waiters took no token: the one saved up since is there for the next caller.
    began = time.monotonic()
    second = stub.ScheduleJob(timer_request("next"), timeout=1).job_id
    assert time.monotonic() - began < 0.5
    assert sorted(j["metadata"]["name"] for j in emulator.jobs()) == sorted([first, second])
