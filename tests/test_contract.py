"""One gRPC contract, both backends: the Kubernetes backend (against the API emulator) and the local one.

Whatever a client can observe through the API must not depend on where jobs run.
Only making a job finish differs: on Kubernetes the test writes the status the
Job controller would write; locally the job really runs.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from conftest import ServiceThread, kubernetes_service, local_service, write_kubeconfig
from emulator import EmulatorThread
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from job_status import ended_status

from jobscheduler._generated import jobscheduler_pb2 as pb

JOB_ID = re.compile(r"job-[a-z0-9]{10}")


class Receiver:
    """A control plane stand-in: records the timer's JSON reports."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                outer.reports.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/report"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@dataclass
class Harness:
    kind: str
    service: ServiceThread
    receiver: Receiver
    emulator: EmulatorThread | None = None
    data_dir: pathlib.Path | None = None
    created: list[str] = field(default_factory=list)

    @property
    def stub(self) -> Any:
        return self.service.stub

    def timer(self, *, name: str = "contract", duration: int = 1, **extra: Any) -> pb.ScheduleJobRequest:
        params: dict[str, Any] = {
            "duration_seconds": duration,
            "timer_name": "contract-timer",
            "control_plane_endpoint": self.receiver.url,
            **extra,
        }
        return pb.ScheduleJobRequest(name=name, timer_job=pb.TimerJob(**params))

    def schedule(self, request: pb.ScheduleJobRequest | None = None) -> pb.Job:
        response = self.stub.ScheduleJob(request or self.timer(duration=60), timeout=10)
        assert response.job_id == response.job.job_id
        return response.job

    def get(self, job_id: str) -> pb.Job:
        job: pb.Job = self.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=10).job
        return job

    def wait_for(self, job_id: str, phase: int, timeout: float = 20) -> pb.Job:
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.phase == phase:
                return job
            assert time.monotonic() < deadline, f"{job_id} still {pb.JobPhase.Name(job.phase)}: {job.message}"
            time.sleep(0.1)

    def finished_job(self, *, succeed: bool) -> pb.Job:
        """A job that has run to SUCCEEDED or FAILED, the way this backend gets there."""
        if self.kind == "local":
            if succeed:
                job = self.schedule(self.timer(duration=1))
            else:
                job = self.schedule(
                    self.timer(
                        duration=1,
                        control_plane_endpoint=f"http://127.0.0.1:{closed_port()}/",
                        env={"REPORT_MAX_ATTEMPTS": "1", "REPORT_BACKOFF_SECONDS": "0.05"},
                    )
                )
            return self.wait_for(job.job_id, pb.JOB_PHASE_SUCCEEDED if succeed else pb.JOB_PHASE_FAILED)
        assert self.emulator is not None
        job = self.schedule()
        status = ended_status(succeed=succeed)
        self.emulator.patch_job(job.job_id, {"status": status})
        # The service learns of the Job controller's write through its watch.
        return self.wait_for(job.job_id, pb.JOB_PHASE_SUCCEEDED if succeed else pb.JOB_PHASE_FAILED)

    def stored_jobs(self) -> int:
        """How many jobs the backend itself holds (not what the API says)."""
        if self.emulator is not None:
            return len(self.emulator.jobs())
        assert self.data_dir is not None
        jobs_dir = self.data_dir / "jobs"
        with sqlite3.connect(self.data_dir / "jobscheduler.db") as db:
            rows = db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        dirs = len(list(jobs_dir.iterdir())) if jobs_dir.exists() else 0
        assert rows >= dirs
        return int(rows)


@contextlib.contextmanager
def running_harness(kind: str, tmp_path: pathlib.Path, **settings: Any) -> Iterator[Harness]:
    """A service on ``kind``'s backend (Kubernetes: a fresh emulator) with ``settings``."""
    receiver = Receiver()
    emulator: EmulatorThread | None = None
    try:
        if kind == "kubernetes":
            emulator = EmulatorThread()
            service = kubernetes_service(write_kubeconfig(tmp_path / "kubeconfig", emulator.url), **settings)
            h = Harness("kubernetes", service, receiver, emulator=emulator)
        else:
            data = tmp_path / "data"
            settings = {"local_backoff_seconds": 0.1, "default_backoff_limit": 0, **settings}
            service = local_service(data, **settings)
            h = Harness("local", service, receiver, data_dir=data)
        try:
            yield h
        finally:
            service.stop()
    finally:
        receiver.close()
        if emulator is not None:
            emulator.stop()


@pytest.fixture(params=["kubernetes", "local"])
def harness(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Harness]:
    with running_harness(request.param, tmp_path) as h:
        yield h


def bad_request_fields(err: grpc.RpcError) -> set[str]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    fields: set[str] = set()
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields.update(v.field for v in bad.field_violations)
    return fields


def test_schedule_get_and_list(harness: Harness) -> None:
    job = harness.schedule(harness.timer(name="first", duration=60))
    assert JOB_ID.fullmatch(job.job_id)
    assert (job.name, job.type, job.namespace) == ("first", "timer", "default")
    assert job.phase in (pb.JOB_PHASE_PENDING, pb.JOB_PHASE_RUNNING)
    assert job.created_at.seconds > 0
    assert job.labels["app.kubernetes.io/managed-by"] == "jobscheduler"
    got = harness.get(job.job_id)
    assert (got.job_id, got.name, got.type) == (job.job_id, "first", "timer")
    time.sleep(1.1)  # creation timestamps have one-second resolution on Kubernetes
    second = harness.schedule(harness.timer(name="second", duration=60))
    listed = harness.stub.ListJobs(pb.ListJobsRequest(), timeout=10).jobs
    assert [j.job_id for j in listed] == [second.job_id, job.job_id]


def test_request_labels_are_kept(harness: Harness) -> None:
    request = harness.timer(duration=60)
    request.labels["team"] = "build"
    job = harness.schedule(request)
    assert harness.get(job.job_id).labels["team"] == "build"


def test_unknown_and_malformed_ids(harness: Harness) -> None:
    for call, request in (
        (harness.stub.GetJobStatus, pb.GetJobStatusRequest(job_id="job-doesnotexi")),
        (harness.stub.CancelJob, pb.CancelJobRequest(job_id="job-doesnotexi")),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call(request, timeout=10)
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        harness.stub.GetJobStatus(pb.GetJobStatusRequest(job_id="Not/An/Id"), timeout=10)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(err.value) == {"job_id"}


def test_invalid_request_creates_nothing_and_the_server_keeps_serving(harness: Harness) -> None:
    request = harness.timer(duration=0)
    request.timer_job.env["1BAD"] = "x"
    with pytest.raises(grpc.RpcError) as err:
        harness.stub.ScheduleJob(request, timeout=10)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(err.value) == {"timer_job.duration_seconds", "timer_job.env[1BAD]"}
    with pytest.raises(grpc.RpcError) as err:
        harness.stub.ScheduleJob(pb.ScheduleJobRequest(name="no-type"), timeout=10)
    assert bad_request_fields(err.value) == {"job"}
    assert harness.stored_jobs() == 0
    assert list(harness.stub.ListJobs(pb.ListJobsRequest(), timeout=10).jobs) == []
    harness.schedule()
    assert harness.stored_jobs() == 1


def test_cancel_is_visible_and_idempotent(harness: Harness) -> None:
    job = harness.schedule(harness.timer(duration=60))
    cancelled = harness.stub.CancelJob(
        pb.CancelJobRequest(job_id=job.job_id, reason="not needed"), timeout=10
    ).job
    assert cancelled.phase == pb.JOB_PHASE_CANCELLED
    assert cancelled.reason == "Cancelled"
    assert "not needed" in cancelled.message
    again = harness.stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id), timeout=10).job
    assert again.phase == pb.JOB_PHASE_CANCELLED
    listed = {j.job_id: j for j in harness.stub.ListJobs(pb.ListJobsRequest(), timeout=10).jobs}
    assert listed[job.job_id].phase == pb.JOB_PHASE_CANCELLED
    assert harness.get(job.job_id).phase == pb.JOB_PHASE_CANCELLED


@pytest.mark.parametrize("succeed", [True, False], ids=["succeeded", "failed"])
def test_finished_jobs_report_and_refuse_cancel(harness: Harness, succeed: bool) -> None:
    job = harness.finished_job(succeed=succeed)
    if succeed:
        assert job.phase == pb.JOB_PHASE_SUCCEEDED
        assert any(c.type == "Complete" and c.status == "True" for c in job.conditions)
    else:
        assert job.phase == pb.JOB_PHASE_FAILED
        assert job.reason == "BackoffLimitExceeded"
        assert any(c.type == "Failed" and c.status == "True" for c in job.conditions)
        assert job.failed >= 1
    assert job.finished_at.seconds > 0
    with pytest.raises(grpc.RpcError) as err:
        harness.stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id), timeout=10)
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert harness.get(job.job_id).phase == job.phase


def test_health_is_serving(harness: Harness) -> None:
    health = health_pb2_grpc.HealthStub(harness.service.channel)
    for name in ("", "jobscheduler.JobScheduler"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


# --- request_id, timeout_seconds, ttl_seconds_after_finished ----------------------------------------


def test_request_id_makes_schedule_idempotent(harness: Harness) -> None:
    request = harness.timer(name="once", duration=60)
    request.request_id = "deploy-42/step-1"
    first = harness.schedule(request)
    again = harness.schedule(request)
    assert again.job_id == first.job_id
    assert again.request_id == "deploy-42/step-1"
    assert harness.stored_jobs() == 1
    # The same id with a different request is ALREADY_EXISTS and creates nothing.
    changed = harness.timer(name="once", duration=61)
    changed.request_id = "deploy-42/step-1"
    with pytest.raises(grpc.RpcError) as err:
        harness.stub.ScheduleJob(changed, timeout=10)
    assert err.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert first.job_id in (err.value.details() or "")
    # Another id is another job; no id is always a new job.
    other = harness.timer(name="once", duration=60)
    other.request_id = "deploy-42/step-2"
    assert harness.schedule(other).job_id != first.job_id
    plain = harness.timer(name="once", duration=60)
    assert harness.schedule(plain).job_id != harness.schedule(plain).job_id
    assert harness.stored_jobs() == 4


def test_scheduling_fields_are_validated(harness: Harness) -> None:
    request = harness.timer(duration=60)
    request.request_id = "has space"
    request.timeout_seconds = -1
    request.ttl_seconds_after_finished = -5
    with pytest.raises(grpc.RpcError) as err:
        harness.stub.ScheduleJob(request, timeout=10)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(err.value) == {"request_id", "timeout_seconds", "ttl_seconds_after_finished"}
    too_long = harness.timer(duration=60)
    too_long.request_id = "x" * 129
    with pytest.raises(grpc.RpcError) as err:
        harness.stub.ScheduleJob(too_long, timeout=10)
    assert bad_request_fields(err.value) == {"request_id"}
    assert harness.stored_jobs() == 0


def test_timeout_seconds_fails_the_job_with_deadline_exceeded(harness: Harness) -> None:
    request = harness.timer(duration=30)
    request.timeout_seconds = 1
    job = harness.schedule(request)
    if harness.emulator is not None:
        # No Job controller here: the contract is the manifest the API server receives.
        assert harness.emulator.job(job.job_id)["spec"]["activeDeadlineSeconds"] == 1
        return
    failed = harness.wait_for(job.job_id, pb.JOB_PHASE_FAILED, timeout=20)
    assert failed.reason == "DeadlineExceeded"


def test_ttl_seconds_after_finished_reaches_the_job(harness: Harness) -> None:
    if harness.emulator is None:
        pytest.skip("the local backend's TTL sweeper is tested in test_local_backend")
    default = harness.schedule(harness.timer(duration=60))
    keep = harness.timer(duration=60)
    keep.ttl_seconds_after_finished = 0
    short = harness.timer(duration=60)
    short.ttl_seconds_after_finished = 30
    kept, shortened = harness.schedule(keep), harness.schedule(short)
    spec = {j.job_id: harness.emulator.job(j.job_id)["spec"] for j in (default, kept, shortened)}
    assert spec[default.job_id]["ttlSecondsAfterFinished"] == 24 * 3600  # HISTORY_RETENTION
    assert "ttlSecondsAfterFinished" not in spec[kept.job_id]
    assert spec[shortened.job_id]["ttlSecondsAfterFinished"] == 30


# --- max_retries: a failed job runs again as a new, linked job --------------------------------------


def fail_job(harness: Harness, job_id: str, reason: str = "BackoffLimitExceeded") -> None:
    """Kubernetes: the Job controller's status write for a failed Job (the emulator has none)."""
    assert harness.emulator is not None
    harness.emulator.patch_job(job_id, {"status": ended_status(succeed=False, reason=reason)})


def retries_of(harness: Harness, job_id: str) -> list[pb.Job]:
    selector = f"jobscheduler.io/retry-of={job_id}"
    jobs = harness.stub.ListJobs(pb.ListJobsRequest(filter=pb.JobFilter(label_selector=selector)), timeout=10)
    return sorted(jobs.jobs, key=lambda j: j.retry_number)


def wait_for_retries(harness: Harness, job_id: str, count: int, timeout: float = 20) -> list[pb.Job]:
    deadline = time.monotonic() + timeout
    while True:
        found = retries_of(harness, job_id)
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{len(found)} of {count} retries of {job_id}"
        time.sleep(0.1)


def failing_timer(harness: Harness, **extra: Any) -> pb.ScheduleJobRequest:
    """A timer that fails fast on the local backend (its report cannot be delivered)."""
    return harness.timer(
        duration=1,
        control_plane_endpoint=f"http://127.0.0.1:{closed_port()}/",
        env={"REPORT_MAX_ATTEMPTS": "1", "REPORT_BACKOFF_SECONDS": "0.05"},
        **extra,
    )


def test_max_retries_runs_a_failed_job_again_as_linked_jobs(harness: Harness) -> None:
    request = failing_timer(harness)
    request.max_retries = 2
    request.retry_backoff_seconds = 0
    first = harness.schedule(request)
    assert first.max_retries == 2 and first.retry_number == 0
    chain = [first.job_id]
    for number in (1, 2):
        if harness.emulator is not None:
            fail_job(harness, chain[-1])
        retry = wait_for_retries(harness, first.job_id, number)[-1]
        assert (retry.retry_of, retry.retry_number, retry.max_retries) == (first.job_id, number, 2)
        assert retry.name == first.name and retry.owner == first.owner
        assert retry.job_id not in chain
        chain.append(retry.job_id)
    if harness.emulator is not None:
        manifest = harness.emulator.job(chain[-1])
        assert manifest["metadata"]["labels"]["jobscheduler.io/job-id"] == chain[-1]
        assert (
            manifest["spec"]["template"]["spec"]
            == harness.emulator.job(first.job_id)["spec"]["template"]["spec"]
        )
        fail_job(harness, chain[-1])
    # The last retry fails too: the chain ends after max_retries.
    harness.wait_for(chain[-1], pb.JOB_PHASE_FAILED)
    time.sleep(1.0)
    assert [j.job_id for j in retries_of(harness, first.job_id)] == chain[1:]
    assert harness.stored_jobs() == 3


def test_no_retry_after_a_permanent_failure_or_a_cancel(harness: Harness) -> None:
    cancelled = harness.timer(duration=60)
    cancelled.max_retries = 3
    job = harness.schedule(cancelled)
    harness.stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id), timeout=10)
    harness.wait_for(job.job_id, pb.JOB_PHASE_CANCELLED)
    if harness.emulator is not None:
        permanent = harness.schedule(cancelled)
        fail_job(harness, permanent.job_id, reason="PodFailurePolicy")
        harness.wait_for(permanent.job_id, pb.JOB_PHASE_FAILED)
        time.sleep(1.0)
        assert retries_of(harness, permanent.job_id) == []
    # (The local backend's PodFailurePolicy failures are made real in test_local_backend.)
    time.sleep(1.0)
    assert retries_of(harness, job.job_id) == []


def test_retention_must_outlast_the_retry_delay(harness: Harness) -> None:
    request = harness.timer(duration=60)
    request.max_retries = 3
    request.retry_backoff_seconds = 100  # the third retry waits 400 s
    request.ttl_seconds_after_finished = 300
    with pytest.raises(grpc.RpcError) as err:
        harness.stub.ScheduleJob(request, timeout=10)
    assert bad_request_fields(err.value) == {"ttl_seconds_after_finished"}
    request.ttl_seconds_after_finished = 460
    harness.schedule(request)
    assert harness.stored_jobs() == 1


# --- start_after / delay_seconds: created suspended, resumed on time ------------------------------


def test_delay_seconds_schedules_then_starts(harness: Harness) -> None:
    request = harness.timer(duration=1)
    request.delay_seconds = 2
    job = harness.schedule(request)
    assert job.phase == pb.JOB_PHASE_SCHEDULED
    start = job.start_after.ToDatetime()
    assert 1 <= (start - job.created_at.ToDatetime()).total_seconds() <= 3
    if harness.emulator is not None:
        assert harness.emulator.job(job.job_id)["spec"]["suspend"] is True
    time.sleep(1.0)
    assert harness.get(job.job_id).phase == pb.JOB_PHASE_SCHEDULED  # not yet
    if harness.emulator is not None:
        # Resumed by the service; the (absent) Job controller would now create the pod.
        deadline = time.monotonic() + 10
        while harness.emulator.job(job.job_id)["spec"].get("suspend"):
            assert time.monotonic() < deadline, "never resumed"
            time.sleep(0.1)
        assert harness.wait_for(job.job_id, pb.JOB_PHASE_PENDING).start_after == job.start_after
    else:
        done = harness.wait_for(job.job_id, pb.JOB_PHASE_SUCCEEDED, timeout=20)
        assert done.started_at.ToDatetime() >= start


def test_start_after_in_the_past_starts_now_and_both_fields_is_invalid(harness: Harness) -> None:
    past = harness.timer(duration=60)
    past.start_after.FromSeconds(int(time.time()) - 3600)
    assert harness.schedule(past).phase != pb.JOB_PHASE_SCHEDULED
    both = harness.timer(duration=60)
    both.start_after.FromSeconds(int(time.time()) + 3600)
    both.delay_seconds = 10
    with pytest.raises(grpc.RpcError) as err:
        harness.stub.ScheduleJob(both, timeout=10)
    assert bad_request_fields(err.value) == {"delay_seconds"}
    far = harness.timer(duration=60)
    far.start_after.FromSeconds(int(time.time()) + 400 * 86400)
    with pytest.raises(grpc.RpcError) as err:
        harness.stub.ScheduleJob(far, timeout=10)
    assert bad_request_fields(err.value) == {"start_after"}


def test_cancelling_a_scheduled_job_means_it_never_runs(harness: Harness) -> None:
    request = harness.timer(duration=1)
    request.delay_seconds = 1
    job = harness.schedule(request)
    cancelled = harness.stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id), timeout=10).job
    assert cancelled.phase == pb.JOB_PHASE_CANCELLED
    if harness.emulator is not None:
        # Resumed with no pods to run, so the deadline fails it at once and TTL applies.
        spec = harness.emulator.job(job.job_id)["spec"]
        assert (spec["suspend"], spec["parallelism"], spec["activeDeadlineSeconds"]) == (False, 0, 1)
    time.sleep(2.0)
    after = harness.get(job.job_id)
    assert after.phase == pb.JOB_PHASE_CANCELLED and after.attempts == 0
    if harness.emulator is not None:
        assert harness.emulator.job(job.job_id)["spec"]["parallelism"] == 0  # not resumed again
