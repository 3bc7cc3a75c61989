"""The Kubernetes informers behind the index, through public surfaces only.

The service (in-process ``ServiceThread``, or ``jobscheduler serve`` as a subprocess for /readyz and
/metrics) talks HTTP to the emulator, which plays the API server (its watch cache: resourceVersions,
bookmarks, 410 Gone, dropped connections), the Job controller (``patch_job``, pods made from the
Job's template) and the kubelet (pod statuses and logs). Every wait is a bounded poll.
"""

from __future__ import annotations

import json
import pathlib
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import pytest
from conftest import ServeProcess, ServiceThread, kubernetes_service, serve_env
from emulator import EmulatorThread
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jobscheduler import metrics
from jobscheduler._generated import jobscheduler_pb2 as pb

T = 10  # every RPC is bounded by this timeout (seconds)
NS = "default"
JOBS_PATH = f"/apis/batch/v1/namespaces/{NS}/jobs"
PODS_PATH = f"/api/v1/namespaces/{NS}/pods"
JOBS = "batch/v1/jobs"  # the emulator's name of the resource
PODS = "v1/pods"
MANAGED_BY = "app.kubernetes.io/managed-by"
JOB_ID_LABEL = "jobscheduler.io/job-id"
MERGE_PATCH = "application/merge-patch+json"

# --- helpers -------------------------------------------------------------------------------------


def eventually(probe: Callable[[], Any], what: str, timeout: float = 5.0, interval: float = 0.05) -> Any:
    """``probe()``'s first truthy answer within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what} (last: {last!r})")
        time.sleep(interval)


def utcnow() -> datetime:
    """Now, to the second (the API's timestamps have no fractions)."""
    return datetime.now(UTC).replace(microsecond=0)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def timer_request(name: str = "informer-test", **timer: Any) -> pb.ScheduleJobRequest:
    params: dict[str, Any] = {
        "duration_seconds": 30,
        "timer_name": "Informer",
        "control_plane_endpoint": "http://control-plane.example:8080/report",
    }
    params.update(timer)
    return pb.ScheduleJobRequest(name=name, timer_job=pb.TimerJob(**params))


def schedule(service: ServiceThread, request: pb.ScheduleJobRequest | None = None) -> str:
    job_id: str = service.stub.ScheduleJob(request or timer_request(), timeout=T).job_id
    return job_id


def get(service: ServiceThread, job_id: str) -> pb.Job:
    job: pb.Job = service.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=T).job
    return job


def get_code(service: ServiceThread, job_id: str) -> grpc.StatusCode:
    try:
        get(service, job_id)
    except grpc.RpcError as err:
        code: grpc.StatusCode = err.code()
        return code
    return grpc.StatusCode.OK


def phase_of(service: ServiceThread, job_id: str) -> int:
    phase: int = get(service, job_id).phase
    return phase


def listed(service: ServiceThread) -> dict[str, pb.Job]:
    jobs = service.stub.ListJobs(pb.ListJobsRequest(), timeout=T).jobs
    return {j.job_id: j for j in jobs}


def logs(service: ServiceThread, job_id: str, **kwargs: Any) -> list[pb.LogLine]:
    return list(service.stub.GetJobLogs(pb.GetJobLogsRequest(job_id=job_id, **kwargs), timeout=T))


def logs_error(service: ServiceThread, job_id: str, **kwargs: Any) -> Any:
    with pytest.raises(grpc.RpcError) as info:
        logs(service, job_id, **kwargs)
    err: Any = info.value
    assert err.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), err.details()
    assert "Traceback" not in (err.details() or "")
    return err


def query_of(path_qs: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(path_qs).query, keep_blank_values=True).items()}


def watches(emulator: EmulatorThread, path: str = JOBS_PATH) -> list[dict[str, str]]:
    """The query of every watch request on ``path`` since the last trim, in order."""
    return [
        q
        for m, p in emulator.requests()
        if m == "GET" and urlsplit(p).path == path and (q := query_of(p)).get("watch") == "true"
    ]


def informer_lists(emulator: EmulatorThread, path: str = JOBS_PATH) -> list[dict[str, str]]:
    """The informer's list requests on ``path`` (pages of 500; the readiness ping asks for 1)."""
    return [
        q
        for m, p in emulator.requests()
        if m == "GET"
        and urlsplit(p).path == path
        and (q := query_of(p)).get("watch") != "true"
        and q.get("limit") == "500"
    ]


def sample(name: str, resource: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, {"resource": resource}) or 0.0


def relists(resource: str = "jobs.batch") -> float:
    return sample("jobscheduler_watch_relists_total", resource)


def restarts(resource: str = "jobs.batch") -> float:
    return sample("jobscheduler_watch_restarts_total", resource)


def condition(type_: str, reason: str, message: str, at: str) -> dict[str, str]:
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": at,
        "lastTransitionTime": at,
    }


def succeeded_status(started: str, done: str) -> dict[str, Any]:
    message = "Reached expected number of succeeded pods"
    return {
        "status": {
            "startTime": started,
            "active": None,
            "ready": 0,
            "succeeded": 1,
            "completionTime": done,
            "conditions": [
                condition("SuccessCriteriaMet", "CompletionsReached", message, done),
                condition("Complete", "CompletionsReached", message, done),
            ],
        }
    }


def running_status(started: str, *, active: int = 1, failed: int = 0) -> dict[str, Any]:
    return {"status": {"startTime": started, "active": active, "ready": active, "failed": failed}}


def delete_job(emulator: EmulatorThread, job_id: str) -> None:
    """What ttlSecondsAfterFinished (or kubectl delete) does."""
    emulator.request("DELETE", f"{JOBS_PATH}/{job_id}")


def make_pod(emulator: EmulatorThread, job_id: str, suffix: str, created: datetime) -> str:
    """A pod the Job controller creates from the Job's template (labels, containers, owner)."""
    job = emulator.job(job_id)
    template = job["spec"]["template"]
    name = f"{job_id}-{suffix}"
    labels = {
        **(template.get("metadata") or {}).get("labels", {}),
        "batch.kubernetes.io/job-name": job_id,
        "batch.kubernetes.io/controller-uid": job["metadata"]["uid"],
        "job-name": job_id,
        "controller-uid": job["metadata"]["uid"],
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": labels,
            # The emulator keeps a given creationTimestamp: it orders the pods without sleeping.
            "creationTimestamp": iso(created),
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": job_id,
                    "uid": job["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": template["spec"],
        "status": {"phase": "Pending"},
    }
    emulator.request("POST", PODS_PATH, pod)
    return name


def container_name(emulator: EmulatorThread, job_id: str) -> str:
    name: str = emulator.job(job_id)["spec"]["template"]["spec"]["containers"][0]["name"]
    return name


def set_pod_state(
    emulator: EmulatorThread, job_id: str, pod: str, state: dict[str, Any], **extra: Any
) -> None:
    """What the kubelet writes: the pod's status subresource."""
    phase = "Running"
    if "terminated" in state:
        phase = "Succeeded" if state["terminated"].get("exitCode") == 0 else "Failed"
    elif "waiting" in state:
        phase = "Pending"
    status = {
        "name": container_name(emulator, job_id),
        "state": state,
        "ready": "running" in state,
        "restartCount": 0,
        "image": "example",
        **extra,
    }
    emulator.request(
        "PATCH",
        f"{PODS_PATH}/{pod}/status",
        {"status": {"phase": phase, "containerStatuses": [status]}},
        MERGE_PATCH,
    )


def running(started: datetime) -> dict[str, Any]:
    return {"running": {"startedAt": iso(started)}}


def terminated(reason: str, code: int, started: datetime, finished: datetime) -> dict[str, Any]:
    return {
        "terminated": {
            "reason": reason,
            "exitCode": code,
            "startedAt": iso(started),
            "finishedAt": iso(finished),
        }
    }


def gone_event() -> dict[str, Any]:
    return {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "code": 410,
            "reason": "Expired",
            "message": "too old resource version: 1 (2)",
        },
    }


def wait_watching(emulator: EmulatorThread, resource: str = JOBS) -> None:
    eventually(lambda: emulator.open_watches(resource) >= 1, f"an open watch of {resource}")


def stall_watch(emulator: EmulatorThread, path: str = JOBS_PATH, resource: str = JOBS) -> None:
    """Drop the watch connection and refuse new watches with 500 (lists still answer)."""
    emulator.inject(
        "GET", f"{path}$", 500, "etcdserver: leader changed", reason="InternalError", query="watch=true"
    )
    emulator.end_watches(resource)
    eventually(lambda: emulator.open_watches(resource) == 0, "the watch to be down")


# --- 1. the index follows the cluster ------------------------------------------------------------


def test_status_written_by_the_job_controller_is_served_from_the_watch(
    emulator: EmulatorThread, service: ServiceThread
) -> None:
    job_id = schedule(service)
    other = schedule(service)
    emulator.trim_log()
    started = utcnow() - timedelta(seconds=30)

    emulator.patch_job(job_id, running_status(iso(started)))
    eventually(lambda: phase_of(service, job_id) == pb.JOB_PHASE_RUNNING, "GetJobStatus RUNNING")
    assert listed(service)[job_id].phase == pb.JOB_PHASE_RUNNING

    done = started + timedelta(seconds=20)
    emulator.patch_job(job_id, succeeded_status(iso(started), iso(done)))
    job = eventually(
        lambda: (j := get(service, job_id)).phase == pb.JOB_PHASE_SUCCEEDED and j, "GetJobStatus SUCCEEDED"
    )
    assert job.finished_at.ToDatetime(UTC) == done
    assert job.duration.ToTimedelta() == timedelta(seconds=20)
    assert listed(service)[job_id].phase == pb.JOB_PHASE_SUCCEEDED
    assert listed(service)[other].phase == pb.JOB_PHASE_PENDING

    # Reads came from the index: the service never fetched a Job, nor listed Jobs again.
    requests = emulator.requests()
    assert not [p for m, p in requests if m == "GET" and urlsplit(p).path.startswith(f"{JOBS_PATH}/")]
    assert informer_lists(emulator) == []


def test_deleted_job_disappears(emulator: EmulatorThread, service: ServiceThread) -> None:
    """ttlSecondsAfterFinished deletes finished Jobs: the job is gone from the service too."""
    job_id = schedule(service)
    kept = schedule(service)
    assert get(service, job_id).job_id == job_id
    delete_job(emulator, job_id)
    eventually(lambda: get_code(service, job_id) is grpc.StatusCode.NOT_FOUND, "NOT_FOUND after deletion")
    assert set(listed(service)) == {kept}


def test_managed_job_created_by_someone_else_appears(
    emulator: EmulatorThread, service: ServiceThread
) -> None:
    """A managed Job created outside this replica (another replica, kubectl) shows up;
    an unmanaged Job never does."""
    unmanaged = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "someone-elses", "namespace": NS, "labels": {"app": "other"}},
        "spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}
        },
    }
    emulator.request("POST", JOBS_PATH, unmanaged)
    # Made by "another replica": what ScheduleJob would have written.
    template = schedule(service)
    external = json.loads(json.dumps(emulator.job(template)))
    job_id = "job-external00"
    meta = external["metadata"]
    external["metadata"] = {
        "name": job_id,
        "namespace": NS,
        "labels": {**meta["labels"], JOB_ID_LABEL: job_id, "jobscheduler.io/job-name": "from-elsewhere"},
        "annotations": {**meta["annotations"], "jobscheduler.io/name": "from-elsewhere"},
    }
    external.pop("status", None)
    emulator.request("POST", JOBS_PATH, external)

    job = eventually(
        lambda: get_code(service, job_id) is grpc.StatusCode.OK and get(service, job_id), "appears"
    )
    assert job.name == "from-elsewhere"
    assert job.type == "timer"
    assert job.phase == pb.JOB_PHASE_PENDING
    assert set(listed(service)) == {template, job_id}
    assert get_code(service, "someone-elses") is grpc.StatusCode.NOT_FOUND


# --- 2. read-your-writes -------------------------------------------------------------------------


def test_own_writes_are_visible_while_the_watch_is_down(
    emulator: EmulatorThread, service: ServiceThread
) -> None:
    stall_watch(emulator)
    emulator.trim_log()

    job_id = schedule(service)
    job = get(service, job_id)  # at once, with no watch event to deliver it
    assert job.job_id == job_id and job.phase == pb.JOB_PHASE_PENDING
    assert job_id in listed(service)
    assert not [p for m, p in emulator.requests() if m == "GET" and p.startswith(f"{JOBS_PATH}/{job_id}")]

    # The watch really is down: the controller's write does not arrive ...
    emulator.patch_job(job_id, running_status(iso(utcnow())))
    time.sleep(0.3)
    assert get(service, job_id).phase == pb.JOB_PHASE_PENDING

    # ... but our own cancel does, at once.
    cancelled = service.stub.CancelJob(pb.CancelJobRequest(job_id=job_id, reason="test"), timeout=T).job
    assert cancelled.phase == pb.JOB_PHASE_CANCELLED
    assert get(service, job_id).phase == pb.JOB_PHASE_CANCELLED
    assert listed(service)[job_id].phase == pb.JOB_PHASE_CANCELLED

    # When the watch comes back, the index converges on the cluster (and does not go back).
    emulator.clear_faults()
    job = eventually(lambda: (j := get(service, job_id)).active == 1 and j, "the controller's write arrives")
    assert job.phase == pb.JOB_PHASE_CANCELLED


# --- 3. not ready until synced -------------------------------------------------------------------


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def metric_value(text: str, name: str, resource: str) -> float:
    m = re.search(rf'^{name}\{{resource="{re.escape(resource)}"\}} (\S+)$', text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def grpc_health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        status: int = (
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(service=""), timeout=T)
            .status
        )
        return status


def test_serve_is_not_ready_until_both_informers_synced(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    """Pods cannot be listed (the Jobs ping works): not ready, NOT_SERVING, restarts counted;
    once the pods list answers, ready within a few seconds."""
    emulator.inject("GET", f"{PODS_PATH}$", 500, "etcdserver: request timed out", reason="InternalError")
    server = ServeProcess(serve_env(kubeconfig))
    try:
        base = f"http://127.0.0.1:{server.health_port}"
        code, body = http_get(f"{base}/readyz")
        assert code == 503, body
        assert "sync" in json.loads(body)["reason"]
        assert grpc_health(server.grpc_port) == health_pb2.HealthCheckResponse.NOT_SERVING
        eventually(
            lambda: (
                metric_value(http_get(f"{base}/metrics")[1], "jobscheduler_watch_restarts_total", "pods") >= 1
            ),
            "a counted restart of the pods informer",
        )
        time.sleep(0.6)  # a few readiness re-checks: still not ready
        assert http_get(f"{base}/readyz")[0] == 503

        emulator.clear_faults()
        eventually(lambda: http_get(f"{base}/readyz")[0] == 200, "ready", timeout=8, interval=0.1)
        assert grpc_health(server.grpc_port) == health_pb2.HealthCheckResponse.SERVING
        text = http_get(f"{base}/metrics")[1]
        assert metric_value(text, "jobscheduler_watch_relists_total", "pods") == 0  # the first list
    finally:
        server.stop()


def test_service_is_not_ready_while_jobs_cannot_be_listed(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    emulator.inject("GET", f"{JOBS_PATH}$", 500, "etcdserver: leader changed", reason="InternalError")
    svc = kubernetes_service(kubeconfig, sync_wait=0.3)
    try:
        assert svc.readiness.get().ready is False
        assert svc.recheck() is False
        with grpc.insecure_channel(f"127.0.0.1:{svc.port}") as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=T)
        assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
        emulator.clear_faults()
        eventually(svc.recheck, "ready after the fault clears", timeout=8, interval=0.1)
        assert svc.readiness.get().ready is True
    finally:
        svc.stop()


# --- 4. resume, bookmarks, relist, backoff -------------------------------------------------------


def test_watch_resumes_from_the_last_resource_version(
    emulator: EmulatorThread, service: ServiceThread
) -> None:
    """A dropped watch resumes where it was; changes made meanwhile arrive without a relist."""
    job_id = schedule(service)
    doomed = schedule(service)
    started = utcnow() - timedelta(seconds=10)
    emulator.patch_job(job_id, running_status(iso(started)))
    eventually(lambda: phase_of(service, job_id) == pb.JOB_PHASE_RUNNING, "RUNNING")
    last_rv = emulator.job(job_id)["metadata"]["resourceVersion"]
    wait_watching(emulator)
    relists_before = relists()

    emulator.trim_log()
    emulator.end_watches(JOBS)  # the connection drops: resume at once
    eventually(lambda: watches(emulator), "a new watch")
    first = watches(emulator)[0]
    assert first["resourceVersion"] == last_rv
    assert first["labelSelector"] == f"{MANAGED_BY}=jobscheduler"
    assert first["allowWatchBookmarks"] == "true"
    assert int(first["timeoutSeconds"]) > 0

    # Down for a while (500s), and meanwhile the Job finishes and another is deleted.
    stall_watch(emulator)
    emulator.patch_job(job_id, succeeded_status(iso(started), iso(started + timedelta(seconds=5))))
    delete_job(emulator, doomed)
    emulator.clear_faults()
    eventually(lambda: phase_of(service, job_id) == pb.JOB_PHASE_SUCCEEDED, "SUCCEEDED after resuming")
    eventually(lambda: get_code(service, doomed) is grpc.StatusCode.NOT_FOUND, "the deletion arrives")
    assert {q["resourceVersion"] for q in watches(emulator)} == {last_rv}
    assert informer_lists(emulator) == []
    assert relists() == relists_before


def test_bookmark_moves_the_resume_point(emulator: EmulatorThread, service: ServiceThread) -> None:
    schedule(service)
    wait_watching(emulator)
    emulator.trim_log()
    rv = emulator.bookmark(JOBS, "Job", "batch/v1")
    emulator.end_watches(JOBS)
    eventually(lambda: watches(emulator), "a new watch")
    assert watches(emulator)[0]["resourceVersion"] == rv

    pod_rv = emulator.bookmark(PODS, "Pod", "v1")
    emulator.end_watches(PODS)
    eventually(lambda: watches(emulator, PODS_PATH), "a new pods watch")
    assert watches(emulator, PODS_PATH)[0]["resourceVersion"] == pod_rv
    assert informer_lists(emulator) == [] and informer_lists(emulator, PODS_PATH) == []


@pytest.mark.parametrize("how", ["error-event", "http-410", "compacted"])
def test_gone_lists_again(emulator: EmulatorThread, service: ServiceThread, how: str) -> None:
    """410 Gone (as an ERROR event in the open stream, as the watch request's answer, or for a
    resume point older than the API server's compaction): list again, then watch from the list."""
    job_id = schedule(service)
    doomed = schedule(service)
    wait_watching(emulator)
    relists_before = relists()
    emulator.trim_log()
    newest = int(emulator.job(doomed)["metadata"]["resourceVersion"])

    if how == "error-event":
        emulator.send_watch_event(JOBS, gone_event(), end=True)
    elif how == "http-410":
        emulator.inject(
            "GET",
            f"{JOBS_PATH}$",
            410,
            "too old resource version",
            reason="Expired",
            times=1,
            query="watch=true",
        )
        emulator.end_watches(JOBS)
    else:
        # Down while the Job finishes and another is deleted; history is compacted meanwhile.
        stall_watch(emulator)
        now = utcnow()
        emulator.patch_job(job_id, succeeded_status(iso(now - timedelta(seconds=5)), iso(now)))
        delete_job(emulator, doomed)
        newest = emulator.compact(JOBS)
        emulator.clear_faults()

    eventually(lambda: informer_lists(emulator), "a list after 410")
    eventually(lambda: relists() == relists_before + 1, "jobscheduler_watch_relists_total +1")
    # The watch after the list starts from the list's resourceVersion, newer than anything before.
    eventually(lambda: [q for q in watches(emulator) if int(q["resourceVersion"]) > newest], "a new watch")
    assert len(informer_lists(emulator)) == 1
    if how == "compacted":
        assert phase_of(service, job_id) == pb.JOB_PHASE_SUCCEEDED
        assert get_code(service, doomed) is grpc.StatusCode.NOT_FOUND
        assert set(listed(service)) == {job_id}
    else:
        assert set(listed(service)) == {job_id, doomed}
    # And it keeps following the cluster.
    other = schedule(service)
    delete_job(emulator, other)
    eventually(lambda: get_code(service, other) is grpc.StatusCode.NOT_FOUND, "follows after the relist")


def test_watch_errors_back_off_and_recover(emulator: EmulatorThread, service: ServiceThread) -> None:
    job_id = schedule(service)
    started = utcnow()
    emulator.patch_job(job_id, running_status(iso(started)))
    eventually(lambda: phase_of(service, job_id) == pb.JOB_PHASE_RUNNING, "RUNNING")  # the watch saw it
    last_rv = emulator.job(job_id)["metadata"]["resourceVersion"]
    restarts_before = restarts()
    emulator.trim_log()

    stall_watch(emulator)
    time.sleep(2.0)
    attempts = watches(emulator)
    # Backoff from 0.5 s, doubling (with jitter): about 3 attempts in 2 s, not a hot loop.
    assert 2 <= len(attempts) <= 5, attempts
    assert restarts() - restarts_before >= len(attempts) - 1
    assert {q["resourceVersion"] for q in attempts} == {last_rv}  # a 500 is no reason to relist

    emulator.patch_job(job_id, succeeded_status(iso(started), iso(started + timedelta(seconds=1))))
    emulator.clear_faults()
    eventually(lambda: phase_of(service, job_id) == pb.JOB_PHASE_SUCCEEDED, "recovered", timeout=8)
    assert informer_lists(emulator) == []


# --- 5. rich status from pods --------------------------------------------------------------------


def test_status_from_pods(emulator: EmulatorThread, service: ServiceThread) -> None:
    job_id = schedule(service)
    now = utcnow()
    started = now - timedelta(minutes=2)
    # The first attempt's pod (named to sort after the second) failed with exit code 3;
    # the second one runs.
    first = make_pod(emulator, job_id, "zzzzz", started)
    set_pod_state(emulator, job_id, first, terminated("Error", 3, started, started + timedelta(seconds=30)))
    second = make_pod(emulator, job_id, "aaaaa", started + timedelta(seconds=40))
    set_pod_state(emulator, job_id, second, running(started + timedelta(seconds=41)))
    emulator.patch_job(job_id, running_status(iso(started), active=1, failed=1))

    job = eventually(
        lambda: (j := get(service, job_id)).exit_code == 3 and j.active == 1 and j, "pods in the status"
    )
    assert list(job.pod_names) == [first, second]  # oldest first
    assert job.termination_reason == "Error"
    assert job.attempts == 2 == job.active + job.succeeded + job.failed
    assert job.phase == pb.JOB_PHASE_RUNNING
    assert job.HasField("duration")
    assert job.duration.ToTimedelta() >= timedelta(minutes=2)
    assert list(listed(service)[job_id].pod_names) == [first, second]

    # The second attempt completes: its exit is now the last one.
    done = started + timedelta(seconds=70)
    set_pod_state(emulator, job_id, second, terminated("Completed", 0, started, done))
    emulator.patch_job(job_id, succeeded_status(iso(started), iso(done)))
    job = eventually(
        lambda: (j := get(service, job_id)).exit_code == 0 and j.phase == pb.JOB_PHASE_SUCCEEDED and j,
        "the last exit",
    )
    assert job.HasField("exit_code")
    assert job.termination_reason == "Completed"
    assert job.duration.ToTimedelta() == timedelta(seconds=70)


def test_status_from_restarted_container(emulator: EmulatorThread, service: ServiceThread) -> None:
    """restartPolicy OnFailure: the container runs again; its last exit is in lastState."""
    job_id = schedule(service)
    assert not get(service, job_id).HasField("exit_code")
    started = utcnow() - timedelta(seconds=30)
    pod = make_pod(emulator, job_id, "abcde", started)
    set_pod_state(
        emulator,
        job_id,
        pod,
        running(started + timedelta(seconds=20)),
        lastState=terminated("OOMKilled", 137, started, started + timedelta(seconds=10)),
        restartCount=1,
    )
    job = eventually(lambda: (j := get(service, job_id)).exit_code == 137 and j, "lastState's exit")
    assert job.termination_reason == "OOMKilled"
    assert list(job.pod_names) == [pod]

    # The pod is deleted (the Job controller replaces it): its name goes.
    emulator.request("DELETE", f"{PODS_PATH}/{pod}")
    eventually(lambda: list(get(service, job_id).pod_names) == [], "the pod's name goes")


# --- 6. GetJobLogs -------------------------------------------------------------------------------


def job_with_pod(emulator: EmulatorThread, service: ServiceThread) -> tuple[str, str]:
    job_id = schedule(service)
    now = utcnow()
    pod = make_pod(emulator, job_id, "logs1", now)
    set_pod_state(emulator, job_id, pod, running(now))
    eventually(lambda: list(get(service, job_id).pod_names) == [pod], "the pod known")
    return job_id, pod


def log_requests(emulator: EmulatorThread, pod: str) -> list[dict[str, str]]:
    return [
        query_of(p) for m, p in emulator.requests() if m == "GET" and p.startswith(f"{PODS_PATH}/{pod}/log")
    ]


def test_logs_stream_in_order(emulator: EmulatorThread, service: ServiceThread) -> None:
    job_id, pod = job_with_pod(emulator, service)
    emulator.write_log(pod, "starting", "tick 1", "tick 2", "", "done: ünïcode")
    emulator.trim_log()

    lines = logs(service, job_id)
    assert [line.line for line in lines] == ["starting", "tick 1", "tick 2", "", "done: ünïcode"]
    assert {(line.attempt, line.pod_name) for line in lines} == {(1, pod)}
    assert log_requests(emulator, pod) == [{"follow": "false"}]

    lines = logs(service, job_id, tail_lines=2, attempt=1)
    assert [line.line for line in lines] == ["", "done: ünïcode"]
    assert log_requests(emulator, pod)[-1] == {"follow": "false", "tailLines": "2"}


def test_logs_of_each_attempt(emulator: EmulatorThread, service: ServiceThread) -> None:
    job_id = schedule(service)
    started = utcnow() - timedelta(seconds=60)
    first = make_pod(emulator, job_id, "zzzzz", started)
    set_pod_state(emulator, job_id, first, terminated("Error", 1, started, started + timedelta(seconds=5)))
    second = make_pod(emulator, job_id, "aaaaa", started + timedelta(seconds=10))
    set_pod_state(emulator, job_id, second, running(started + timedelta(seconds=11)))
    emulator.write_log(first, "attempt one")
    emulator.write_log(second, "attempt two")
    eventually(lambda: len(get(service, job_id).pod_names) == 2, "both pods known")

    assert [(x.line, x.attempt, x.pod_name) for x in logs(service, job_id)] == [("attempt two", 2, second)]
    assert [(x.line, x.attempt, x.pod_name) for x in logs(service, job_id, attempt=1)] == [
        ("attempt one", 1, first)
    ]
    err = logs_error(service, job_id, attempt=3)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_logs_follow(emulator: EmulatorThread, service: ServiceThread) -> None:
    job_id, pod = job_with_pod(emulator, service)
    emulator.write_log(pod, "one", "two")
    stream: Any = service.stub.GetJobLogs(
        pb.GetJobLogsRequest(job_id=job_id, follow=True, tail_lines=1), timeout=T
    )
    try:
        assert next(stream).line == "two"
        emulator.write_log(pod, "three")
        assert next(stream).line == "three"
        emulator.write_log(pod, "four", "five")
        assert [next(stream).line, next(stream).line] == ["four", "five"]
        emulator.end_log(pod)  # the container exits
        assert list(stream) == []
    finally:
        stream.cancel()
    assert {"follow": "true", "tailLines": "1"} in log_requests(emulator, pod)


def test_logs_errors(emulator: EmulatorThread, service: ServiceThread) -> None:
    job_id = schedule(service)
    err = logs_error(service, job_id)
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert job_id in err.details()

    pod = make_pod(emulator, job_id, "waits", utcnow())
    set_pod_state(emulator, job_id, pod, {"waiting": {"reason": "ContainerCreating"}})
    eventually(lambda: list(get(service, job_id).pod_names) == [pod], "the pod known")
    err = logs_error(service, job_id)
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "waiting to start" in err.details()

    err = logs_error(service, job_id, attempt=5)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT

    err = logs_error(service, "job-zzzzzzzzzz")
    assert err.code() is grpc.StatusCode.NOT_FOUND


def test_logs_of_a_pod_the_watch_has_not_delivered(emulator: EmulatorThread, service: ServiceThread) -> None:
    """With the pods watch down, the pod is looked up by a list."""
    job_id = schedule(service)
    stall_watch(emulator, PODS_PATH, PODS)
    now = utcnow()
    pod = make_pod(emulator, job_id, "late1", now)
    set_pod_state(emulator, job_id, pod, running(now))
    emulator.write_log(pod, "hello")
    assert [(x.line, x.pod_name) for x in logs(service, job_id)] == [("hello", pod)]


def test_long_log_line(emulator: EmulatorThread, service: ServiceThread) -> None:
    """Containers print long lines (a JSON document, a base64 blob): they arrive whole."""
    job_id, pod = job_with_pod(emulator, service)
    long_line = "x" * 300_000
    emulator.write_log(pod, "before", long_line, "after")
    lines = [x.line for x in logs(service, job_id)]
    assert lines == ["before", long_line, "after"]


def test_large_job_does_not_stop_the_informer(emulator: EmulatorThread, service: ServiceThread) -> None:
    """A Job's JSON can reach ~1.5 MB (annotations alone may take 256 KiB, e.g. kubectl's
    last-applied-configuration): its watch event must not stop the index from following the cluster."""
    big = schedule(service)
    emulator.patch_job(big, {"metadata": {"annotations": {"example.com/blob": "y" * 200_000}}})
    small = schedule(service)
    emulator.patch_job(small, running_status(iso(utcnow())))
    eventually(lambda: phase_of(service, small) == pb.JOB_PHASE_RUNNING, "later changes still arrive")


def test_emulator_watch_is_faithful(emulator: EmulatorThread) -> None:
    """The emulator's watch extensions themselves: selector, resume, 410, bookmarks, end."""
    url = emulator.url + JOBS_PATH
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "a", "namespace": NS, "labels": {"x": "1"}},
        "spec": {},
    }
    created = emulator.request("POST", JOBS_PATH, job)
    rv = created["metadata"]["resourceVersion"]
    events: list[dict[str, Any]] = []

    def read(query: str) -> None:
        with urllib.request.urlopen(f"{url}?watch=true&{query}", timeout=5) as resp:
            for raw in resp:
                events.append(json.loads(raw))

    def watch(query: str) -> threading.Thread:
        thread = threading.Thread(target=read, args=(query,), daemon=True)
        thread.start()
        return thread

    # From a resourceVersion: only later changes; the selector turns label changes into ADDED/DELETED.
    thread = watch(f"resourceVersion={rv}&labelSelector=x%3D1&allowWatchBookmarks=true")
    eventually(lambda: emulator.open_watches(JOBS) == 1, "open")
    emulator.patch_job("a", {"metadata": {"labels": {"x": "2"}}})
    emulator.patch_job("a", {"metadata": {"labels": {"x": "1"}}})
    bookmark = emulator.bookmark(JOBS, "Job", "batch/v1")
    emulator.request("DELETE", f"{JOBS_PATH}/a")
    emulator.end_watches(JOBS)
    thread.join(5)
    assert not thread.is_alive()
    assert [e["type"] for e in events] == ["DELETED", "ADDED", "BOOKMARK", "DELETED"]
    assert events[2]["object"]["metadata"]["resourceVersion"] == bookmark
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and len(set(rvs)) == 4

    # Resuming replays what came after (bookmarks are not changes); a compacted one is 410.
    events.clear()
    thread = watch(f"resourceVersion={rv}")
    eventually(lambda: len(events) == 3, "replayed")
    emulator.end_watches(JOBS)
    thread.join(5)
    assert [e["type"] for e in events] == ["MODIFIED", "MODIFIED", "DELETED"]
    events.clear()
    emulator.compact(JOBS)
    watch(f"resourceVersion={rv}").join(5)
    assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 410)]


# --- races and rates -----------------------------------------------------------------------------


def test_job_deleted_while_our_write_is_answered_does_not_come_back(
    emulator: EmulatorThread, service: ServiceThread
) -> None:
    """CancelJob's PATCH takes effect, then the Job is deleted (TTL, kubectl) before the PATCH's
    answer arrives: the watch has already said DELETED, so the late answer must not resurrect it."""
    job_id = schedule(service)
    emulator.patch_job(job_id, running_status(iso(utcnow())))
    eventually(lambda: phase_of(service, job_id) == pb.JOB_PHASE_RUNNING, "RUNNING")
    emulator.delay("PATCH", f"{JOBS_PATH}/{job_id}$", 1.0)
    emulator.trim_log()

    result: list[Any] = []
    cancel = threading.Thread(
        target=lambda: result.append(service.stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=T)),
        daemon=True,
    )
    cancel.start()
    eventually(lambda: [m for m, _ in emulator.requests() if m == "PATCH"], "the PATCH arrives")
    delete_job(emulator, job_id)
    cancel.join(T)
    assert result and result[0].job.phase == pb.JOB_PHASE_CANCELLED

    eventually(
        lambda: get_code(service, job_id) is grpc.StatusCode.NOT_FOUND,
        "the deleted job to stay deleted (not a ghost from the late PATCH answer)",
        timeout=2,
    )
    assert job_id not in listed(service)


def test_repeated_gone_does_not_hammer_the_api_server_with_lists(
    emulator: EmulatorThread, service: ServiceThread
) -> None:
    """If every watch answers 410 (a watch cache lagging behind etcd, a misbehaving proxy), the informer
    must not LIST all Jobs in a tight loop: client-go's reflector backs off (800 ms, up to 30 s)."""
    schedule(service)
    wait_watching(emulator)
    emulator.trim_log()
    emulator.inject(
        "GET", f"{JOBS_PATH}$", 410, "too old resource version", reason="Expired", query="watch=true"
    )
    emulator.end_watches(JOBS)
    time.sleep(2.0)
    count = len(informer_lists(emulator))
    emulator.clear_faults()
    assert 1 <= count <= 5, f"{count} full LISTs of Jobs in 2 s"


# --- relists and outages -------------------------------------------------------------------------


def test_relist_does_not_roll_back_our_own_writes(emulator: EmulatorThread, service: ServiceThread) -> None:
    """A relist after 410 whose list was taken before our writes (a job created, one cancelled while
    the list is in flight): the index never reports the new job DELETED, nor the cancelled job going
    back to RUNNING; the list replaces only what we observed before asking for it."""
    running_job = schedule(service)
    emulator.patch_job(running_job, running_status(iso(utcnow())))
    eventually(lambda: phase_of(service, running_job) == pb.JOB_PHASE_RUNNING, "RUNNING")
    deleted_meanwhile = schedule(service)
    wait_watching(emulator)
    events: list[Any] = []
    remove = service.index.add_listener(events.append)  # every change the index makes, in order
    relists_before = relists()
    try:
        # The list's snapshot is taken when it arrives; its answer comes a second later.
        emulator.delay("GET", f"{JOBS_PATH}$", 1.0, query="limit=500")
        emulator.trim_log()
        emulator.send_watch_event(JOBS, gone_event(), end=True)
        eventually(lambda: informer_lists(emulator), "the relist in flight")
        created = schedule(service)
        cancelled = service.stub.CancelJob(pb.CancelJobRequest(job_id=running_job), timeout=T).job
        assert cancelled.phase == pb.JOB_PHASE_CANCELLED
        delete_job(emulator, deleted_meanwhile)  # after the snapshot: the watch from the list says so
        eventually(lambda: relists() == relists_before + 1, "the relist applied", timeout=5)
        eventually(lambda: get_code(service, deleted_meanwhile) is grpc.StatusCode.NOT_FOUND, "the deletion")
    finally:
        emulator.clear_faults()
        remove()
    assert phase_of(service, running_job) == pb.JOB_PHASE_CANCELLED
    assert get_code(service, created) is grpc.StatusCode.OK
    assert set(listed(service)) == {running_job, created}
    seen = [(e.type.name, e.record.job_id, e.record.phase.name) for e in events]
    assert [job for kind, job, _ in seen if kind == "DELETED"] == [deleted_meanwhile], seen
    phases = [phase for _, job, phase in seen if job == running_job]
    assert phases and set(phases) == {"CANCELLED"}, f"the cancelled job went backwards: {seen}"


def test_outage_not_ready_then_relists_at_once(emulator: EmulatorThread, service: ServiceThread) -> None:
    """The watch is down (500s; the API server answers pings) while the Job changes and history is
    compacted: readiness turns false past a short grace, naming the watch; once the API server is back
    the watch reconnects within the capped backoff, its 410 is followed by a list at once (no backoff),
    and readiness recovers with the state current."""
    job_id = schedule(service)
    wait_watching(emulator)
    assert service.recheck()
    assert sample("jobscheduler_watch_synced", "jobs.batch") == 1
    relists_before = relists()

    stall_watch(emulator)
    emulator.patch_job(job_id, running_status(iso(utcnow())))
    emulator.compact(JOBS)
    assert service.recheck()  # within the grace: a dropped watch alone is no reason
    eventually(lambda: not service.recheck(), "not ready while the watch is down", timeout=6, interval=0.2)
    reason = service.readiness.get().reason
    assert "jobs.batch watch" in reason and "etcdserver: leader changed" in reason, reason
    assert sample("jobscheduler_watch_synced", "jobs.batch") == 0
    assert phase_of(service, job_id) != pb.JOB_PHASE_RUNNING  # stale, as readiness says

    emulator.trim_log()
    emulator.clear_faults()
    # The backoff is capped at 5 s (+20% jitter): the watch comes back within ~6 s, not 16-30 s.
    eventually(lambda: watches(emulator), "the watch retried", timeout=7.5, interval=0.02)
    retried = time.monotonic()
    eventually(lambda: informer_lists(emulator), "the relist", timeout=6, interval=0.02)
    relisted = time.monotonic()
    assert relisted - retried < 0.4, f"410 relisted after {relisted - retried:.2f} s"
    eventually(service.recheck, "ready again", timeout=3, interval=0.1)
    assert phase_of(service, job_id) == pb.JOB_PHASE_RUNNING
    assert relists() == relists_before + 1
    assert sample("jobscheduler_watch_synced", "jobs.batch") == 1
    assert 0 <= sample("jobscheduler_watch_idle_seconds", "jobs.batch") < 5


def test_a_later_watch_failure_gets_its_own_grace(emulator: EmulatorThread, service: ServiceThread) -> None:
    """A watch that failed, then resumed and stayed open (with nothing to tell), has recovered: when it
    fails again much later, the grace counts from the new failure, not from the old one."""
    schedule(service)
    wait_watching(emulator)
    restarts_before = restarts()
    stall_watch(emulator)
    eventually(lambda: restarts() > restarts_before, "a failed watch")
    emulator.clear_faults()
    eventually(lambda: emulator.open_watches(JOBS) >= 1, "the watch resumed", timeout=3)
    eventually(lambda: sample("jobscheduler_watch_synced", "jobs.batch") == 1, "following again", timeout=3)
    assert service.recheck()
    time.sleep(3.5)  # the first failure is now longer ago than the grace (3 s); the watch stayed quiet
    stall_watch(emulator)
    assert service.recheck(), service.readiness.get().reason
