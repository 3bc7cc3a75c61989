"""The gRPC API contract against the Kubernetes API emulator, through the public gRPC surface only.

Every RPC goes over a real channel to the in-process server (``service``), which talks HTTP to the
emulator; the emulator plays the Job controller (``patch_job``) and the API server's failures
(``inject``).
"""

from __future__ import annotations

import pathlib
import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from conftest import ServiceThread, kubernetes_service, write_kubeconfig
from emulator import EmulatorThread
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from jobscheduler._generated import jobscheduler_pb2 as pb

T = 10  # every RPC is bounded by this timeout (seconds)
NS = "default"
JOBS_PATH = f"/apis/batch/v1/namespaces/{NS}/jobs"
JOB_ID = re.compile(r"job-[a-z0-9]{10}")
MANAGED_BY = "app.kubernetes.io/managed-by"
CANCELLED_AT = "jobscheduler.io/cancelled-at"
CANCEL_REASON = "jobscheduler.io/cancel-reason"

# Fixed times the "Job controller" writes, in the API server's format.
T_START = "2030-01-02T10:00:00Z"
T_DONE = "2030-01-02T10:05:00Z"


# --- helpers -------------------------------------------------------------------------------------


def timer_request(
    name: str = "nightly-report", labels: dict[str, str] | None = None, **timer: Any
) -> pb.ScheduleJobRequest:
    params: dict[str, Any] = {
        "duration_seconds": 30,
        "timer_name": "Nightly report",
        "control_plane_endpoint": "http://control-plane.example:8080/report",
    }
    params.update(timer)
    return pb.ScheduleJobRequest(name=name, timer_job=pb.TimerJob(**params), labels=labels or {})


def schedule(service: ServiceThread, request: pb.ScheduleJobRequest | None = None) -> pb.ScheduleJobResponse:
    response: pb.ScheduleJobResponse = service.stub.ScheduleJob(request or timer_request(), timeout=T)
    return response


def get(service: ServiceThread, job_id: str) -> pb.Job:
    job: pb.Job = service.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=T).job
    return job


def rpc_error(call: Any, request: Any) -> Any:
    """The error ``call(request)`` fails with (a grpc.RpcError that is also a grpc.Call),
    checked to be a deliberate, clean status."""
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=T)
    err: Any = info.value
    assert err.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), err.details()
    assert err.code() is not grpc.StatusCode.DEADLINE_EXCEEDED, "the server hung"
    assert "Traceback" not in (err.details() or "")
    for key, value in err.trailing_metadata() or ():
        assert b"Traceback" not in (value if isinstance(value, bytes) else value.encode()), key
    return err


def violations(err: Any) -> list[tuple[str, str]]:
    """(field, description) of every google.rpc.BadRequest field violation in the error's details."""
    status = rpc_status.from_call(err)
    assert status is not None, "INVALID_ARGUMENT without google.rpc.Status details"
    out: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            out.extend((v.field, v.description) for v in bad_request.field_violations)
    return out


def when(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def k8s_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def controller_writes(
    emulator: EmulatorThread, service: ServiceThread, job_id: str, patch: dict[str, Any]
) -> None:
    """Write as the Job controller would, then wait (bounded) until the service's watch-fed view
    of the job has changed: reads answer from the index, which follows the cluster a moment later."""
    before = get(service, job_id)
    emulator.patch_job(job_id, patch)
    deadline = time.monotonic() + 5
    while get(service, job_id) == before and time.monotonic() < deadline:
        time.sleep(0.02)


def requests_to(emulator: EmulatorThread, method: str, path_prefix: str = JOBS_PATH) -> list[str]:
    return [p for m, p in emulator.requests() if m == method and p.startswith(path_prefix)]


def posted_names(emulator: EmulatorThread) -> list[str]:
    """metadata.name of every Job POSTed to the emulator (answered or refused by a fault)."""
    names: list[str] = emulator.call(
        lambda e: [
            r.data["metadata"]["name"]
            for r in e._requests
            if r.method.value == "POST" and isinstance(r.data, dict) and r.url.path.endswith("/jobs")
        ]
    )
    return names


def condition(type_: str, reason: str, message: str, at: str) -> dict[str, str]:
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": at,
        "lastTransitionTime": at,
    }


def running_status() -> dict[str, Any]:
    return {
        "status": {
            "startTime": T_START,
            "active": 1,
            "ready": 1,
            "terminating": 0,
            "uncountedTerminatedPods": {},
        }
    }


def succeeded_status() -> dict[str, Any]:
    message = "Reached expected number of succeeded pods"
    return {
        "status": {
            "startTime": T_START,
            "active": None,
            "ready": 0,
            "terminating": 0,
            "succeeded": 1,
            "completionTime": T_DONE,
            "conditions": [
                condition("SuccessCriteriaMet", "CompletionsReached", message, T_DONE),
                condition("Complete", "CompletionsReached", message, T_DONE),
            ],
        }
    }


def failed_status(reason: str, message: str, failed: int) -> dict[str, Any]:
    return {
        "status": {
            "startTime": T_START,
            "active": None,
            "ready": 0,
            "terminating": 0,
            "failed": failed,
            "conditions": [
                condition("FailureTarget", reason, message, T_DONE),
                condition("Failed", reason, message, T_DONE),
            ],
        }
    }


def unmanaged_job(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {"app": "someone-else"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox", "command": ["true"]}],
                }
            },
        },
    }


def health(channel: grpc.Channel, name: str) -> Any:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=T).status


# --- 1. ScheduleJob creates exactly one Job --------------------------------------------------------


def test_schedule_creates_one_labelled_job(emulator: EmulatorThread, service: ServiceThread) -> None:
    emulator.trim_log()
    before = datetime.now(UTC).replace(microsecond=0)
    resp = schedule(
        service, timer_request(name="nightly-report", labels={"team": "data"}, env={"EXTRA": "1"})
    )

    assert JOB_ID.fullmatch(resp.job_id), resp.job_id
    assert len(requests_to(emulator, "POST")) == 1
    jobs = emulator.jobs()
    assert [j["metadata"]["name"] for j in jobs] == [resp.job_id]
    k8s_job = jobs[0]
    assert k8s_job["apiVersion"] == "batch/v1" and k8s_job["kind"] == "Job"
    assert k8s_job["metadata"]["namespace"] == NS
    labels = k8s_job["metadata"]["labels"]
    assert labels[MANAGED_BY] == "jobscheduler"
    assert labels["jobscheduler.io/job-id"] == resp.job_id
    assert labels["jobscheduler.io/job-type"] == "timer"
    assert labels["jobscheduler.io/job-name"] == "nightly-report"
    assert labels["team"] == "data"
    env = {e["name"]: e["value"] for e in k8s_job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["JOB_ID"] == resp.job_id
    assert env["DURATION_SECONDS"] == "30"
    assert env["EXTRA"] == "1"

    job = resp.job
    assert job.job_id == resp.job_id
    assert job.phase == pb.JOB_PHASE_PENDING
    assert job.name == "nightly-report"
    assert job.type == "timer"
    assert job.namespace == NS
    assert job.HasField("created_at")
    assert when(job.created_at) == k8s_time(k8s_job["metadata"]["creationTimestamp"])
    assert before - timedelta(seconds=1) <= when(job.created_at) <= datetime.now(UTC) + timedelta(seconds=1)
    assert not job.HasField("started_at") and not job.HasField("finished_at")
    assert dict(job.labels) == labels
    assert job.backoff_limit == k8s_job["spec"]["backoffLimit"]
    assert (job.active, job.succeeded, job.failed) == (0, 0, 0)
    assert list(job.conditions) == []

    # GetJobStatus reports the same job.
    assert get(service, resp.job_id) == job


def test_schedule_accepts_names_the_proto_allows(emulator: EmulatorThread, service: ServiceThread) -> None:
    """proto: name is a label value, "at most 63 characters of [A-Za-z0-9_.-], starting and ending
    alphanumeric"; so "Nightly_Report.v2" is a valid name."""
    resp = schedule(service, timer_request(name="Nightly_Report.v2"))
    assert resp.job.name == "Nightly_Report.v2"
    assert emulator.job(resp.job_id)["metadata"]["labels"]["jobscheduler.io/job-name"] == "Nightly_Report.v2"


# --- 2. GetJobStatus derives the phase from the Job's status ---------------------------------------


def test_status_running(emulator: EmulatorThread, service: ServiceThread) -> None:
    job_id = schedule(service).job_id
    patch = running_status()
    # A condition that is not True must not count (the controller writes this after a resume).
    patch["status"]["conditions"] = [
        {
            "type": "Suspended",
            "status": "False",
            "reason": "JobResumed",
            "message": "Job resumed",
            "lastProbeTime": T_START,
            "lastTransitionTime": T_START,
        }
    ]
    controller_writes(emulator, service, job_id, patch)

    job = get(service, job_id)
    assert job.phase == pb.JOB_PHASE_RUNNING
    assert when(job.started_at) == k8s_time(T_START)
    assert not job.HasField("finished_at")
    assert job.reason == ""
    assert (job.active, job.succeeded, job.failed) == (1, 0, 0)
    assert job.backoff_limit == emulator.job(job_id)["spec"]["backoffLimit"]
    assert [(c.type, c.status, c.reason) for c in job.conditions] == [("Suspended", "False", "JobResumed")]


def test_status_running_after_failed_attempt(emulator: EmulatorThread, service: ServiceThread) -> None:
    job_id = schedule(service).job_id
    patch = running_status()
    patch["status"]["failed"] = 1
    controller_writes(emulator, service, job_id, patch)
    job = get(service, job_id)
    assert job.phase == pb.JOB_PHASE_RUNNING
    assert (job.active, job.succeeded, job.failed) == (1, 0, 1)


def test_status_pending_between_attempts(emulator: EmulatorThread, service: ServiceThread) -> None:
    job_id = schedule(service).job_id
    controller_writes(emulator, service, job_id, {"status": {"startTime": T_START, "failed": 1, "ready": 0}})
    job = get(service, job_id)
    assert job.phase == pb.JOB_PHASE_PENDING
    assert (job.active, job.failed) == (0, 1)
    assert not job.HasField("finished_at")


def test_status_succeeded(emulator: EmulatorThread, service: ServiceThread) -> None:
    job_id = schedule(service).job_id
    controller_writes(emulator, service, job_id, running_status())
    assert get(service, job_id).phase == pb.JOB_PHASE_RUNNING
    controller_writes(emulator, service, job_id, succeeded_status())

    job = get(service, job_id)
    assert job.phase == pb.JOB_PHASE_SUCCEEDED
    assert when(job.started_at) == k8s_time(T_START)
    assert when(job.finished_at) == k8s_time(T_DONE)
    assert job.reason == "CompletionsReached"
    assert (job.active, job.succeeded, job.failed) == (0, 1, 0)
    assert [(c.type, c.status, c.reason, c.message) for c in job.conditions] == [
        ("SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods"),
        ("Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods"),
    ]
    assert all(when(c.last_transition_time) == k8s_time(T_DONE) for c in job.conditions)


@pytest.mark.parametrize(
    ("reason", "message", "failed"),
    [
        ("BackoffLimitExceeded", "Job has reached the specified backoff limit", 4),
        ("DeadlineExceeded", "Job was active longer than specified deadline", 1),
    ],
)
def test_status_failed(
    emulator: EmulatorThread, service: ServiceThread, reason: str, message: str, failed: int
) -> None:
    job_id = schedule(service).job_id
    controller_writes(emulator, service, job_id, running_status())
    controller_writes(emulator, service, job_id, failed_status(reason, message, failed))

    job = get(service, job_id)
    assert job.phase == pb.JOB_PHASE_FAILED
    assert job.reason == reason
    assert message in job.message
    assert when(job.started_at) == k8s_time(T_START)
    assert when(job.finished_at) == k8s_time(T_DONE)
    assert (job.active, job.succeeded, job.failed) == (0, 0, failed)
    assert job.backoff_limit == emulator.job(job_id)["spec"]["backoffLimit"]
    assert [(c.type, c.status, c.reason, c.message) for c in job.conditions] == [
        ("FailureTarget", "True", reason, message),
        ("Failed", "True", reason, message),
    ]


# --- 3. ListJobs and unmanaged Jobs ----------------------------------------------------------------


def test_list_newest_first_and_only_managed(emulator: EmulatorThread, service: ServiceThread) -> None:
    assert list(service.stub.ListJobs(pb.ListJobsRequest(), timeout=T).jobs) == []

    ids = [schedule(service, timer_request(name=f"job-{i}")).job_id for i in range(3)]
    # creationTimestamp has second resolution: give the Jobs distinct ones, not in creation order.
    base = datetime(2030, 1, 1, tzinfo=UTC)
    offsets = {ids[0]: 10, ids[1]: 30, ids[2]: 20}
    for job_id, minutes in offsets.items():
        stamp = (base + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
        emulator.patch_job(job_id, {"metadata": {"creationTimestamp": stamp}})
    emulator.request("POST", JOBS_PATH, unmanaged_job("job-0000000001"))
    emulator.request(
        "POST", JOBS_PATH, unmanaged_job("job-0000000002", {MANAGED_BY: "someone-else", "x": "y"})
    )
    assert len(emulator.jobs()) == 5

    deadline = time.monotonic() + 10  # the watch brings the patched timestamps into the index
    while True:
        jobs = list(service.stub.ListJobs(pb.ListJobsRequest(), timeout=T).jobs)
        if [j.job_id for j in jobs] == [ids[1], ids[2], ids[0]] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [j.job_id for j in jobs] == [ids[1], ids[2], ids[0]]
    # The API server filters: the list and watch of Jobs only ever ask for managed ones.
    lists = [p for p in requests_to(emulator, "GET") if p.startswith(f"{JOBS_PATH}?")]
    assert lists and all("labelSelector=app.kubernetes.io/managed-by%3Djobscheduler" in p for p in lists), (
        lists
    )
    assert [when(j.created_at) for j in jobs] == [base + timedelta(minutes=m) for m in (30, 20, 10)]
    for j in jobs:
        assert j == get(service, j.job_id)


@pytest.mark.parametrize("labels", [None, {MANAGED_BY: "someone-else"}])
def test_unmanaged_job_is_not_found(
    emulator: EmulatorThread, service: ServiceThread, labels: dict[str, str] | None
) -> None:
    emulator.request("POST", JOBS_PATH, unmanaged_job("job-0000000001", labels))
    assert emulator.job("job-0000000001")["metadata"]["name"] == "job-0000000001"

    err = rpc_error(service.stub.GetJobStatus, pb.GetJobStatusRequest(job_id="job-0000000001"))
    assert err.code() is grpc.StatusCode.NOT_FOUND
    assert "job-0000000001" in err.details()

    emulator.trim_log()
    err = rpc_error(service.stub.CancelJob, pb.CancelJobRequest(job_id="job-0000000001"))
    assert err.code() is grpc.StatusCode.NOT_FOUND
    assert requests_to(emulator, "PATCH") == []
    assert "annotations" not in emulator.job("job-0000000001")["metadata"]


# --- 4. CancelJob ----------------------------------------------------------------------------------


def test_cancel_running_job(emulator: EmulatorThread, service: ServiceThread) -> None:
    job_id = schedule(service).job_id
    controller_writes(emulator, service, job_id, running_status())
    emulator.trim_log()
    before = datetime.now(UTC) - timedelta(seconds=1)

    job = service.stub.CancelJob(
        pb.CancelJobRequest(job_id=job_id, reason="user pressed stop"), timeout=T
    ).job
    assert job.job_id == job_id
    assert job.phase == pb.JOB_PHASE_CANCELLED
    assert job.reason == "Cancelled"
    assert "user pressed stop" in job.message

    assert requests_to(emulator, "PATCH") == [f"{JOBS_PATH}/{job_id}"]
    assert [r for r in emulator.requests() if r[0] == "DELETE"] == []
    k8s_job = emulator.job(job_id)  # still there
    assert k8s_job["spec"]["activeDeadlineSeconds"] == 1
    annotations = k8s_job["metadata"]["annotations"]
    assert annotations[CANCEL_REASON] == "user pressed stop"
    cancelled_at = k8s_time(annotations[CANCELLED_AT])
    assert before <= cancelled_at <= datetime.now(UTC) + timedelta(seconds=1)
    # The rest of the Job is untouched.
    assert k8s_job["metadata"]["labels"][MANAGED_BY] == "jobscheduler"
    assert annotations["jobscheduler.io/name"] == "nightly-report"

    assert get(service, job_id).phase == pb.JOB_PHASE_CANCELLED

    # The Job controller then fails it (DeadlineExceeded) and removes its pods: still CANCELLED.
    controller_writes(
        emulator,
        service,
        job_id,
        failed_status("DeadlineExceeded", "Job was active longer than specified deadline", 1),
    )
    later = get(service, job_id)
    assert later.phase == pb.JOB_PHASE_CANCELLED
    assert later.reason == "Cancelled"
    assert when(later.finished_at) == k8s_time(T_DONE)
    assert [c.type for c in later.conditions] == ["FailureTarget", "Failed"]

    # Cancelling again is an OK no-op.
    emulator.trim_log()
    again = service.stub.CancelJob(pb.CancelJobRequest(job_id=job_id, reason="twice"), timeout=T).job
    assert again.phase == pb.JOB_PHASE_CANCELLED
    assert again.reason == "Cancelled"
    assert requests_to(emulator, "PATCH") == []
    assert [r for r in emulator.requests() if r[0] == "DELETE"] == []
    assert emulator.job(job_id)["metadata"]["annotations"][CANCEL_REASON] == "user pressed stop"

    listed = list(service.stub.ListJobs(pb.ListJobsRequest(), timeout=T).jobs)
    assert [(j.job_id, j.phase) for j in listed] == [(job_id, pb.JOB_PHASE_CANCELLED)]


def test_cancel_pending_job_without_reason(emulator: EmulatorThread, service: ServiceThread) -> None:
    job_id = schedule(service).job_id
    job = service.stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=T).job
    assert job.phase == pb.JOB_PHASE_CANCELLED
    assert job.reason == "Cancelled"
    k8s_job = emulator.job(job_id)
    assert k8s_job["spec"]["activeDeadlineSeconds"] == 1
    assert k8s_job["metadata"]["annotations"][CANCELLED_AT]
    assert k8s_job["metadata"]["annotations"][CANCEL_REASON]  # a default reason is recorded


@pytest.mark.parametrize(
    "status",
    [
        succeeded_status(),
        failed_status("BackoffLimitExceeded", "Job has reached the specified backoff limit", 4),
    ],
    ids=["succeeded", "failed"],
)
def test_cancel_finished_job_is_failed_precondition(
    emulator: EmulatorThread, service: ServiceThread, status: dict[str, Any]
) -> None:
    job_id = schedule(service).job_id
    controller_writes(emulator, service, job_id, status)
    deadline = emulator.job(job_id)["spec"]["activeDeadlineSeconds"]
    emulator.trim_log()

    err = rpc_error(service.stub.CancelJob, pb.CancelJobRequest(job_id=job_id))
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert job_id in err.details()
    assert requests_to(emulator, "PATCH") == []
    k8s_job = emulator.job(job_id)
    assert k8s_job["spec"]["activeDeadlineSeconds"] == deadline
    assert CANCELLED_AT not in k8s_job["metadata"]["annotations"]
    assert get(service, job_id).phase != pb.JOB_PHASE_CANCELLED


def test_cancel_unknown_job_is_not_found(emulator: EmulatorThread, service: ServiceThread) -> None:
    emulator.trim_log()
    err = rpc_error(service.stub.CancelJob, pb.CancelJobRequest(job_id="job-zzzzzzzzzz"))
    assert err.code() is grpc.StatusCode.NOT_FOUND
    assert "job-zzzzzzzzzz" in err.details()
    assert requests_to(emulator, "PATCH") == []
    assert emulator.jobs() == []


def test_cancel_reason_too_long(emulator: EmulatorThread, service: ServiceThread) -> None:
    job_id = schedule(service).job_id
    emulator.trim_log()
    err = rpc_error(service.stub.CancelJob, pb.CancelJobRequest(job_id=job_id, reason="x" * 1000))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in violations(err)] == ["reason"]
    assert requests_to(emulator, "PATCH") == []
    assert get(service, job_id).phase == pb.JOB_PHASE_PENDING


# --- 5. Request validation -------------------------------------------------------------------------

INVALID_REQUESTS: list[tuple[str, pb.ScheduleJobRequest, list[str]]] = [
    ("duration-0", timer_request(duration_seconds=0), ["timer_job.duration_seconds"]),
    ("duration-negative", timer_request(duration_seconds=-5), ["timer_job.duration_seconds"]),
    ("duration-over-a-day", timer_request(duration_seconds=86401), ["timer_job.duration_seconds"]),
    ("timer-name-empty", timer_request(timer_name=""), ["timer_job.timer_name"]),
    (
        "endpoint-not-a-url",
        timer_request(control_plane_endpoint="not a url"),
        ["timer_job.control_plane_endpoint"],
    ),
    ("endpoint-ftp", timer_request(control_plane_endpoint="ftp://x"), ["timer_job.control_plane_endpoint"]),
    ("endpoint-empty", timer_request(control_plane_endpoint=""), ["timer_job.control_plane_endpoint"]),
    ("env-leading-digit", timer_request(env={"1BAD": "x"}), ["timer_job.env[1BAD]"]),
    ("env-dash", timer_request(env={"A-B": "x"}), ["timer_job.env[A-B]"]),
    ("env-reserved", timer_request(env={"DURATION_SECONDS": "1"}), ["timer_job.env[DURATION_SECONDS]"]),
    ("name-bad-chars", timer_request(name="My_Timer!"), ["name"]),
    ("name-empty", timer_request(name=""), ["name"]),
    ("name-64-chars", timer_request(name="a" * 64), ["name"]),
    ("no-job-type", pb.ScheduleJobRequest(name="nightly-report"), ["job"]),
    (
        "label-reserved-prefix",
        timer_request(labels={"jobscheduler.io/x": "y"}),
        ["labels[jobscheduler.io/x]"],
    ),
    ("label-managed-by", timer_request(labels={MANAGED_BY: "me"}), [f"labels[{MANAGED_BY}]"]),
    (
        "several",
        timer_request(
            name="Bad Name",
            duration_seconds=0,
            timer_name="",
            control_plane_endpoint="ftp://x",
            env={"1BAD": "x"},
        ),
        [
            "name",
            "timer_job.duration_seconds",
            "timer_job.timer_name",
            "timer_job.control_plane_endpoint",
            "timer_job.env[1BAD]",
        ],
    ),
]


@pytest.mark.parametrize(
    ("request_", "fields"), [c[1:] for c in INVALID_REQUESTS], ids=[c[0] for c in INVALID_REQUESTS]
)
def test_invalid_schedule_request(
    emulator: EmulatorThread, service: ServiceThread, request_: pb.ScheduleJobRequest, fields: list[str]
) -> None:
    emulator.trim_log()
    err = rpc_error(service.stub.ScheduleJob, request_)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    found = violations(err)
    assert sorted(f for f, _ in found) == sorted(fields), found
    assert all(description for _, description in found)
    for field in fields:
        assert field in err.details()  # the message names every bad field too

    # Nothing was sent to, or left behind in, the cluster.
    assert requests_to(emulator, "POST") == []
    assert emulator.jobs() == []

    # And the server still serves.
    resp = schedule(service)
    assert [j["metadata"]["name"] for j in emulator.jobs()] == [resp.job_id]


@pytest.mark.parametrize("job_id", ["", "Job-ABC", "job_1", "a" * 64, "job-x/../../pods", "job-x?watch=1"])
def test_invalid_job_id(emulator: EmulatorThread, service: ServiceThread, job_id: str) -> None:
    emulator.trim_log()
    for call, request in (
        (service.stub.GetJobStatus, pb.GetJobStatusRequest(job_id=job_id)),
        (service.stub.CancelJob, pb.CancelJobRequest(job_id=job_id)),
    ):
        err = rpc_error(call, request)
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in violations(err)] == ["job_id"]
    # Rejected before reaching the API server. (Leader election renews its Lease meanwhile, and
    # a new leader lists the jobs once: neither names a job.)
    assert [
        r for r in emulator.requests() if "/leases" not in r[1] and not r[1].startswith(f"{JOBS_PATH}?")
    ] == []


# --- 6. Kubernetes API errors ----------------------------------------------------------------------


def assert_serves_after_clearing(emulator: EmulatorThread, service: ServiceThread) -> None:
    emulator.clear_faults()
    resp = schedule(service)
    assert get(service, resp.job_id).job_id == resp.job_id
    assert resp.job_id in [j.job_id for j in service.stub.ListJobs(pb.ListJobsRequest(), timeout=T).jobs]


def test_create_forbidden(emulator: EmulatorThread, service: ServiceThread) -> None:
    emulator.inject(
        "POST",
        f"{JOBS_PATH}$",
        403,
        'jobs.batch is forbidden: User "system:serviceaccount:default:jobscheduler" cannot create'
        ' resource "jobs" in API group "batch" in the namespace "default"',
        reason="Forbidden",
        details={"group": "batch", "kind": "jobs"},
    )
    err = rpc_error(service.stub.ScheduleJob, timer_request())
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "create" in err.details()
    assert "jobs.batch" in err.details()
    assert emulator.jobs() == []
    assert_serves_after_clearing(emulator, service)


def test_create_conflict_every_time(emulator: EmulatorThread, service: ServiceThread) -> None:
    emulator.inject("POST", f"{JOBS_PATH}$", 409, "jobs.batch already exists", reason="AlreadyExists")
    err = rpc_error(service.stub.ScheduleJob, timer_request())
    assert err.code() is grpc.StatusCode.ALREADY_EXISTS
    names = posted_names(emulator)
    assert 2 <= len(names) <= 5, names  # retried with fresh ids, but not forever
    assert len(set(names)) == len(names)
    assert all(JOB_ID.fullmatch(n) for n in names)
    assert emulator.jobs() == []
    assert_serves_after_clearing(emulator, service)


def test_create_conflict_once_is_retried_with_a_fresh_id(
    emulator: EmulatorThread, service: ServiceThread
) -> None:
    emulator.inject(
        "POST", f"{JOBS_PATH}$", 409, "jobs.batch already exists", reason="AlreadyExists", times=1
    )
    resp = schedule(service)
    names = posted_names(emulator)
    assert len(names) == 2 and names[0] != names[1]
    assert resp.job_id == names[1]
    assert [j["metadata"]["name"] for j in emulator.jobs()] == [resp.job_id]
    assert resp.job.phase == pb.JOB_PHASE_PENDING


def test_create_invalid(emulator: EmulatorThread, service: ServiceThread) -> None:
    message = 'Job.batch "job-x" is invalid: spec.template.spec.containers[0].image: Required value'
    emulator.inject(
        "POST",
        f"{JOBS_PATH}$",
        422,
        message,
        reason="Invalid",
        details={
            "name": "job-x",
            "group": "batch",
            "kind": "Job",
            "causes": [
                {
                    "reason": "FieldValueRequired",
                    "message": "Required value",
                    "field": "spec.template.spec.containers[0].image",
                }
            ],
        },
    )
    err = rpc_error(service.stub.ScheduleJob, timer_request())
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.details()
    assert violations(err) == [("spec.template.spec.containers[0].image", "Required value")]
    assert emulator.jobs() == []
    assert_serves_after_clearing(emulator, service)


@pytest.mark.parametrize("code", [500, 503, 429])
def test_create_server_error_is_unavailable(
    emulator: EmulatorThread, service: ServiceThread, code: int
) -> None:
    emulator.inject("POST", f"{JOBS_PATH}$", code, "etcdserver: request timed out", reason="InternalError")
    err = rpc_error(service.stub.ScheduleJob, timer_request())
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert "etcdserver: request timed out" in err.details()
    assert emulator.jobs() == []
    assert_serves_after_clearing(emulator, service)


def test_get_not_found(emulator: EmulatorThread, service: ServiceThread) -> None:
    """CancelJob reads the Job from the API server itself: its 404 is NOT_FOUND.
    (GetJobStatus answers from the watch-fed index, which still has the job.)"""
    job_id = schedule(service).job_id
    emulator.inject(
        "GET", f"{JOBS_PATH}/{job_id}$", 404, f'jobs.batch "{job_id}" not found', reason="NotFound"
    )
    err = rpc_error(service.stub.CancelJob, pb.CancelJobRequest(job_id=job_id))
    assert err.code() is grpc.StatusCode.NOT_FOUND
    assert job_id in err.details()
    assert get(service, job_id).job_id == job_id
    assert_serves_after_clearing(emulator, service)


def test_unknown_job_is_not_found(emulator: EmulatorThread, service: ServiceThread) -> None:
    err = rpc_error(service.stub.GetJobStatus, pb.GetJobStatusRequest(job_id="job-zzzzzzzzzz"))
    assert err.code() is grpc.StatusCode.NOT_FOUND
    assert "job-zzzzzzzzzz" in err.details()


def test_get_and_list_server_errors(emulator: EmulatorThread, service: ServiceThread) -> None:
    """Reads are served from the index while the API server fails; writes fail UNAVAILABLE."""
    job_id = schedule(service).job_id
    emulator.inject("GET", f"{JOBS_PATH}", 500, "etcdserver: leader changed", reason="InternalError")
    assert get(service, job_id).job_id == job_id
    assert [j.job_id for j in service.stub.ListJobs(pb.ListJobsRequest(), timeout=T).jobs] == [job_id]
    assert service.recheck() is False
    err = rpc_error(service.stub.CancelJob, pb.CancelJobRequest(job_id=job_id))
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    emulator.clear_faults()
    assert CANCELLED_AT not in emulator.job(job_id)["metadata"]["annotations"]
    assert_serves_after_clearing(emulator, service)


def test_list_and_patch_forbidden(
    emulator: EmulatorThread, service: ServiceThread, kubeconfig: pathlib.Path
) -> None:
    job_id = schedule(service).job_id
    # A service that may not list Jobs never syncs; its ListJobs asks the API server and says why.
    emulator.inject("GET", f"{JOBS_PATH}$", 403, "cannot list resource", reason="Forbidden")
    forbidden = kubernetes_service(kubeconfig, sync_wait=0.5)
    try:
        err = rpc_error(forbidden.stub.ListJobs, pb.ListJobsRequest())
        assert err.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "list" in err.details() and "jobs.batch" in err.details()
        assert forbidden.readiness.get().ready is False
    finally:
        forbidden.stop()
    emulator.clear_faults()

    emulator.inject("PATCH", f"{JOBS_PATH}/", 403, "cannot patch resource", reason="Forbidden")
    err = rpc_error(service.stub.CancelJob, pb.CancelJobRequest(job_id=job_id))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "patch" in err.details() and "jobs.batch" in err.details()
    assert CANCELLED_AT not in emulator.job(job_id)["metadata"]["annotations"]
    assert_serves_after_clearing(emulator, service)


# --- 7. The API server unreachable -----------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def unreachable_service(tmp_path: pathlib.Path, closed_port: int) -> Iterator[ServiceThread]:
    svc = kubernetes_service(
        write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{closed_port}"), sync_wait=0.5
    )
    try:
        yield svc
    finally:
        svc.stop()


def test_connection_refused(unreachable_service: ServiceThread, closed_port: int) -> None:
    svc = unreachable_service
    assert svc.readiness.get().ready is False
    assert health(svc.channel, "") == health_pb2.HealthCheckResponse.NOT_SERVING
    for call, request in (
        (svc.stub.ScheduleJob, timer_request()),
        (svc.stub.GetJobStatus, pb.GetJobStatusRequest(job_id="job-0123456789")),
        (svc.stub.ListJobs, pb.ListJobsRequest()),
        (svc.stub.CancelJob, pb.CancelJobRequest(job_id="job-0123456789")),
    ):
        started = time.monotonic()
        err = rpc_error(call, request)
        assert err.code() is grpc.StatusCode.UNAVAILABLE
        assert f"127.0.0.1:{closed_port}" in err.details()
        assert "Kubernetes API" in err.details()
        assert time.monotonic() - started < 5
    assert svc.recheck() is False
    assert svc.readiness.get().ready is False


def test_api_server_goes_away(emulator: EmulatorThread, service: ServiceThread) -> None:
    """Writes fail UNAVAILABLE; reads keep answering from the index (last known state)."""
    job_id = schedule(service).job_id
    emulator.stop()
    for _ in range(2):
        assert get(service, job_id).job_id == job_id
        err = rpc_error(service.stub.ScheduleJob, timer_request())
        assert err.code() is grpc.StatusCode.UNAVAILABLE
        err = rpc_error(service.stub.CancelJob, pb.CancelJobRequest(job_id=job_id))
        assert err.code() is grpc.StatusCode.UNAVAILABLE
    # Validation still answers without the API server.
    err = rpc_error(service.stub.ScheduleJob, timer_request(duration_seconds=0))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert service.recheck() is False
    assert service.readiness.get().ready is False
    assert health(service.channel, "") == health_pb2.HealthCheckResponse.NOT_SERVING


# --- 8. grpc.health.v1 -----------------------------------------------------------------------------


def test_health_follows_the_api_server(emulator: EmulatorThread, service: ServiceThread) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    names = ("", "jobscheduler.JobScheduler")
    assert service.readiness.get().ready is True
    assert [health(service.channel, n) for n in names] == [serving, serving]

    emulator.inject("GET", f"{JOBS_PATH}$", 500, "etcdserver: leader changed", reason="InternalError")
    assert service.recheck() is False
    assert [health(service.channel, n) for n in names] == [not_serving, not_serving]
    assert service.readiness.get().ready is False
    assert any(
        m == "GET" and p.startswith(f"{JOBS_PATH}?") and "labelSelector=" in p and "limit=1" in p
        for m, p in emulator.requests()
    )

    emulator.clear_faults()
    assert service.recheck() is True
    assert [health(service.channel, n) for n in names] == [serving, serving]
    assert service.readiness.get().ready is True
