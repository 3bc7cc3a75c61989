"""Admission queues through the gRPC API, on both backends: priority then FIFO, max_running,
start times, dependencies (success, failure, not found, cycles), and the queue's state.

On Kubernetes (the emulator has no Job controller) the test writes the status the controller
would write when a job ends, and checks the whole history of the Jobs the emulator kept:
how many admitted, unfinished Jobs a queue had at any moment, and how often each was admitted.
"""

from __future__ import annotations

import itertools
import pathlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from conftest import kubernetes_service
from emulator import Emulator, EmulatorThread
from job_status import ended_status
from test_contract import Harness, bad_request_fields, running_harness

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.core.service import request_job_id

QUEUES = "batch=1,wide=3"


@pytest.fixture(params=["kubernetes", "local"])
def harness(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Harness]:
    extra = {"local_max_parallel": 8} if request.param == "local" else {}
    with running_harness(request.param, tmp_path, queues=QUEUES, **extra) as h:
        yield h


def timer(
    h: Harness, *, queue: str = "", priority: int = 0, duration: int = 1, request_id: str = ""
) -> pb.ScheduleJobRequest:
    request = h.timer(duration=duration if h.kind == "local" else 600)
    request.request_id = request_id
    request.queue = queue
    request.priority = priority  # type: ignore[assignment]
    return request


def finish(h: Harness, job_id: str, *, succeed: bool = True) -> None:
    """Kubernetes: the Job controller's status write for a Job whose pod ended. Local: the
    timer ends by itself."""
    if h.emulator is not None:
        finish_on(h.emulator, job_id, succeed=succeed)


def finish_on(emulator: EmulatorThread, job_id: str, *, succeed: bool = True) -> None:
    """The Job controller's status write for a Job whose pod ended."""
    emulator.patch_job(job_id, {"status": ended_status(succeed=succeed)})


def wait_until(predicate: Any, what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def admitted(job: pb.Job) -> bool:
    return job.HasField("admitted_at")


def run_queue_to_the_end(h: Harness, job_ids: list[str], timeout: float = 60) -> list[pb.Job]:
    """Let every job run (Kubernetes: end each admitted one); the jobs, in admission order."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = [h.get(j) for j in job_ids]
        if all(j.phase == pb.JOB_PHASE_SUCCEEDED for j in jobs):
            return sorted(jobs, key=lambda j: j.admitted_at.ToDatetime())
        assert time.monotonic() < deadline, [(j.job_id, pb.JobPhase.Name(j.phase)) for j in jobs]
        for job in jobs:
            if admitted(job) and job.phase != pb.JOB_PHASE_SUCCEEDED:
                finish(h, job.job_id)
        time.sleep(0.1)


# --- emulator history --------------------------------------------------------------------------


def job_history(emulator: EmulatorThread) -> list[dict[str, Any]]:
    """Every version of every Job the emulator stored, in resourceVersion order."""

    def read(e: Emulator) -> list[dict[str, Any]]:
        return [dict(c.event) for c in sorted(e.bus("batch/v1/jobs").changes, key=lambda c: c.rv)]

    events: list[dict[str, Any]] = emulator.call(read)
    return events


def is_running(job: dict[str, Any]) -> bool:
    """Admitted (not suspended) and not finished, as the Job controller would see it."""
    conditions = (job.get("status") or {}).get("conditions") or []
    done = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)
    spec = job.get("spec") or {}
    return not spec.get("suspend") and not done and spec.get("parallelism", 1) != 0


def most_running_at_once(emulator: EmulatorThread, queue: str) -> int:
    running: set[str] = set()
    most = 0
    for event in job_history(emulator):
        job = event["object"]
        if (job["metadata"].get("labels") or {}).get("jobscheduler.io/queue") != queue:
            continue
        name = job["metadata"]["name"]
        if event["type"] != "DELETED" and is_running(job):
            running.add(name)
        else:
            running.discard(name)
        most = max(most, len(running))
    return most


def admissions(emulator: EmulatorThread) -> Counter[str]:
    """How often each Job went from suspended to not suspended."""
    suspended: dict[str, bool] = {}
    counts: Counter[str] = Counter()
    for event in job_history(emulator):
        job = event["object"]
        name = job["metadata"]["name"]
        now = bool((job.get("spec") or {}).get("suspend"))
        if (
            suspended.get(name)
            and not now
            and "jobscheduler.io/admitted-at" in job["metadata"].get("annotations", {})
        ):
            counts[name] += 1
        suspended[name] = now
    return counts


# --- tests ---------------------------------------------------------------------------------------


def test_a_queue_admits_by_priority_then_first_come_first_served(harness: Harness) -> None:
    first = harness.schedule(timer(harness, queue="batch", duration=3))
    wait_until(lambda: admitted(harness.get(first.job_id)), "the first job's admission")
    low = harness.schedule(timer(harness, queue="batch", priority=pb.JOB_PRIORITY_LOW))
    normal_1 = harness.schedule(timer(harness, queue="batch"))
    high = harness.schedule(timer(harness, queue="batch", priority=pb.JOB_PRIORITY_HIGH))
    normal_2 = harness.schedule(timer(harness, queue="batch", priority=pb.JOB_PRIORITY_NORMAL))
    critical = harness.schedule(timer(harness, queue="batch", priority=pb.JOB_PRIORITY_CRITICAL))
    waiting = [low, normal_1, high, normal_2, critical]
    assert {j.phase for j in waiting} == {pb.JOB_PHASE_QUEUED}
    assert harness.get(high.job_id).priority == pb.JOB_PRIORITY_HIGH
    assert harness.get(high.job_id).queue == "batch"

    (batch,) = [
        q for q in harness.stub.ListQueues(pb.ListQueuesRequest(), timeout=10).queues if q.name == "batch"
    ]
    assert (batch.max_running, batch.queued) in ((1, 5), (1, 4))  # the first may be done (local)
    by_priority = {c.priority: c.count for c in batch.queued_by_priority}
    assert by_priority[pb.JOB_PRIORITY_NORMAL] == 2 and by_priority[pb.JOB_PRIORITY_CRITICAL] == 1

    order = run_queue_to_the_end(harness, [first.job_id] + [j.job_id for j in waiting])
    assert [j.job_id for j in order] == [
        first.job_id,
        critical.job_id,
        high.job_id,
        normal_1.job_id,
        normal_2.job_id,
        low.job_id,
    ]
    for earlier, later in itertools.pairwise(order):
        # One at a time: each was admitted only after the one before it had finished.
        assert later.admitted_at.ToDatetime() >= earlier.finished_at.ToDatetime()
    if harness.emulator is not None:
        assert most_running_at_once(harness.emulator, "batch") == 1
        assert set(admissions(harness.emulator).values()) == {1}


def test_max_running_holds_under_a_burst_and_every_job_is_admitted_once(harness: Harness) -> None:
    results: list[pb.Job] = []
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            for _ in range(6):
                results.append(harness.schedule(timer(harness, queue="wide")))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 30
    queues = {q.name: q for q in harness.stub.ListQueues(pb.ListQueuesRequest(), timeout=10).queues}
    assert queues["wide"].running <= 3
    run_queue_to_the_end(harness, [j.job_id for j in results], timeout=120)
    if harness.emulator is not None:
        assert most_running_at_once(harness.emulator, "wide") == 3
        counts = admissions(harness.emulator)
        assert len(counts) == 30 and set(counts.values()) == {1}


def test_jobs_waiting_for_a_start_time_or_a_dependency_do_not_hold_back_the_queue(harness: Harness) -> None:
    later = timer(harness, queue="batch", priority=pb.JOB_PRIORITY_CRITICAL)
    later.delay_seconds = 3
    scheduled = harness.schedule(later)
    assert scheduled.phase == pb.JOB_PHASE_SCHEDULED
    # Nor is a critical job whose dependency (in another queue) is still running.
    dependency = harness.schedule(timer(harness, duration=30))
    blocked = timer(harness, queue="batch", priority=pb.JOB_PRIORITY_CRITICAL)
    blocked.depends_on.append(dependency.job_id)
    waiting = harness.schedule(blocked)
    assert waiting.phase == pb.JOB_PHASE_WAITING
    now = harness.schedule(timer(harness, queue="batch", priority=pb.JOB_PRIORITY_LOW))
    # The critical jobs are not admissible yet: the low one behind them runs first.
    wait_until(lambda: admitted(harness.get(now.job_id)), "the admissible job's admission")
    assert harness.get(scheduled.job_id).phase == pb.JOB_PHASE_SCHEDULED
    assert harness.get(waiting.job_id).phase == pb.JOB_PHASE_WAITING
    harness.stub.CancelJob(pb.CancelJobRequest(job_id=waiting.job_id), timeout=10)
    order = run_queue_to_the_end(harness, [now.job_id, scheduled.job_id])
    assert [j.job_id for j in order] == [now.job_id, scheduled.job_id]
    assert order[1].admitted_at.ToDatetime() >= scheduled.start_after.ToDatetime()


def test_a_start_time_is_kept_to_the_microsecond_and_never_anticipated(harness: Harness) -> None:
    request = timer(harness)
    wanted = datetime.now(UTC) + timedelta(seconds=1.5)
    wanted = wanted.replace(microsecond=wanted.microsecond or 1)  # never on a whole second
    request.start_after.FromDatetime(wanted)
    job = harness.schedule(request)
    assert job.phase == pb.JOB_PHASE_SCHEDULED
    assert job.start_after.ToDatetime(UTC) == wanted  # not cut to whole seconds
    job = wait_until(lambda: (j := harness.get(job.job_id)).HasField("admitted_at") and j, "its admission")
    assert job.admitted_at.ToDatetime(UTC) >= wanted


def test_a_dependent_job_waits_for_its_dependencies_to_succeed(harness: Harness) -> None:
    first = harness.schedule(timer(harness))
    second = harness.schedule(timer(harness, duration=4))
    request = timer(harness)
    request.depends_on.extend([first.job_id, second.job_id])
    dependent = harness.schedule(request)
    assert dependent.phase == pb.JOB_PHASE_WAITING
    assert list(dependent.depends_on) == [first.job_id, second.job_id]
    finish(harness, first.job_id)
    harness.wait_for(first.job_id, pb.JOB_PHASE_SUCCEEDED)
    time.sleep(0.5)
    assert harness.get(dependent.job_id).phase == pb.JOB_PHASE_WAITING  # the second is still running
    finish(harness, second.job_id)
    harness.wait_for(second.job_id, pb.JOB_PHASE_SUCCEEDED)
    wait_until(lambda: admitted(harness.get(dependent.job_id)), "the dependent's admission")
    job = harness.get(dependent.job_id)
    assert job.admitted_at.ToDatetime() >= harness.get(second.job_id).finished_at.ToDatetime()


def test_a_failed_dependency_fails_its_dependents_and_theirs(harness: Harness) -> None:
    first = harness.schedule(timer(harness) if harness.kind == "kubernetes" else failing(harness))
    request = timer(harness)
    request.depends_on.append(first.job_id)
    dependent = harness.schedule(request)
    request = timer(harness)
    request.depends_on.append(dependent.job_id)
    transitive = harness.schedule(request)
    finish(harness, first.job_id, succeed=False)
    failed = harness.wait_for(dependent.job_id, pb.JOB_PHASE_FAILED)
    assert failed.reason == "DependencyFailed" and first.job_id in failed.message
    assert failed.attempts == 0
    assert harness.wait_for(transitive.job_id, pb.JOB_PHASE_FAILED).reason == "DependencyFailed"
    if harness.emulator is not None:
        spec = harness.emulator.job(dependent.job_id)["spec"]
        assert (spec["suspend"], spec["parallelism"]) == (False, 0)  # never ran a pod


def test_a_cancelled_dependency_fails_its_dependent(harness: Harness) -> None:
    first = harness.schedule(timer(harness, duration=30))
    request = timer(harness)
    request.depends_on.append(first.job_id)
    dependent = harness.schedule(request)
    harness.stub.CancelJob(pb.CancelJobRequest(job_id=first.job_id), timeout=10)
    assert harness.wait_for(dependent.job_id, pb.JOB_PHASE_FAILED).reason == "DependencyFailed"


def test_a_dependency_that_does_not_exist_fails_the_job(harness: Harness) -> None:
    request = timer(harness)
    request.depends_on.append("job-doesnotexi")
    job = harness.schedule(request)
    failed = harness.wait_for(job.job_id, pb.JOB_PHASE_FAILED)
    assert failed.reason == "DependencyNotFound" and "job-doesnotexi" in failed.message


def test_a_dependency_cycle_is_invalid(harness: Harness) -> None:
    own_id = request_job_id("default", "anonymous", "cyclic")
    request = timer(harness, request_id="cyclic")
    request.depends_on.append(own_id)
    with pytest.raises(grpc.RpcError) as err:
        harness.stub.ScheduleJob(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(err.value) == {"depends_on"} and "cycle" in (err.value.details() or "")
    # Through another job: a depends on b's (future) id, then b on a.
    b_id = request_job_id("default", "anonymous", "b")
    a_request = timer(harness, request_id="a")
    a_request.depends_on.append(b_id)
    a = harness.schedule(a_request)
    b_request = timer(harness, request_id="b")
    b_request.depends_on.append(a.job_id)
    with pytest.raises(grpc.RpcError) as err:
        harness.stub.ScheduleJob(b_request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{b_id} -> {a.job_id} -> {b_id}" in (err.value.details() or "")
    assert harness.stored_jobs() == 1


def test_cancelling_a_queued_job_frees_nothing_and_it_never_runs(harness: Harness) -> None:
    first = harness.schedule(timer(harness, queue="batch", duration=2))
    queued = harness.schedule(timer(harness, queue="batch"))
    assert queued.phase == pb.JOB_PHASE_QUEUED
    cancelled = harness.stub.CancelJob(pb.CancelJobRequest(job_id=queued.job_id), timeout=10).job
    assert cancelled.phase == pb.JOB_PHASE_CANCELLED
    run_queue_to_the_end(harness, [first.job_id])
    time.sleep(0.5)
    after = harness.get(queued.job_id)
    assert after.phase == pb.JOB_PHASE_CANCELLED and after.attempts == 0 and not admitted(after)


def failing(harness: Harness) -> pb.ScheduleJobRequest:
    from test_contract import failing_timer

    return failing_timer(harness)


def test_admission_goes_on_after_the_api_server_refuses_its_writes(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    service = kubernetes_service(kubeconfig, queues=QUEUES)
    try:
        stub = service.stub
        request = pb.ScheduleJobRequest(
            name="held",
            queue="batch",
            timer_job=pb.TimerJob(
                duration_seconds=60, timer_name="t", control_plane_endpoint="http://127.0.0.1:9/"
            ),
        )
        # The admitting PATCH fails twice (the API server overloaded), then goes through.
        emulator.inject("PATCH", r"/jobs/job-[a-z0-9]+$", 503, "etcd is overloaded", times=2)
        job = stub.ScheduleJob(request, timeout=10).job
        assert job.phase == pb.JOB_PHASE_QUEUED
        deadline = time.monotonic() + 20
        while not stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job.job_id), timeout=10).job.HasField(
            "admitted_at"
        ):
            assert time.monotonic() < deadline, "never admitted after the API server recovered"
            time.sleep(0.1)
        patches = [p for m, p in emulator.requests() if m == "PATCH" and job.job_id in p]
        assert len(patches) == 3  # two refused, one admitted
        assert admissions(emulator)[job.job_id] == 1
        # Meanwhile the service kept serving.
        assert stub.ListQueues(pb.ListQueuesRequest(), timeout=10).queues
    finally:
        service.stop()


def test_a_dependency_with_retries_left_is_waited_for_through_its_retries(harness: Harness) -> None:
    from test_contract import failing_timer, wait_for_retries

    request = failing_timer(harness) if harness.kind == "local" else timer(harness)
    request.max_retries = 1
    first = harness.schedule(request)
    dependent_request = timer(harness)
    dependent_request.depends_on.append(first.job_id)
    dependent = harness.schedule(dependent_request)
    finish(harness, first.job_id, succeed=False)
    harness.wait_for(first.job_id, pb.JOB_PHASE_FAILED)
    (retry,) = wait_for_retries(harness, first.job_id, 1)
    if harness.kind == "kubernetes":
        # The first attempt failed, its retry is to come: the dependent still waits.
        assert harness.get(dependent.job_id).phase == pb.JOB_PHASE_WAITING
        wait_until(lambda: admitted(harness.get(retry.job_id)), "the retry's admission")
        time.sleep(0.3)
        assert harness.get(dependent.job_id).phase == pb.JOB_PHASE_WAITING
        finish(harness, retry.job_id)
        wait_until(lambda: admitted(harness.get(dependent.job_id)), "the dependent's admission")
    else:
        # Locally the retry fails too: only then does the dependent fail.
        retried = harness.wait_for(retry.job_id, pb.JOB_PHASE_FAILED)
        failed = harness.wait_for(dependent.job_id, pb.JOB_PHASE_FAILED)
        assert failed.reason == "DependencyFailed" and retry.job_id in failed.message
        assert failed.finished_at.ToDatetime() >= retried.finished_at.ToDatetime()
