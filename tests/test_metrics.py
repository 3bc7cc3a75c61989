"""/metrics after a scripted mix of RPCs and jobs, on both backends: go-grpc-prometheus's series
and label values (``grpc_code="NotFound"``), every streamed message counted, and the job
counters counting each job once (a replayed request_id, a repeated cancel, and a final record
seen again add nothing). The exposition is prometheus-client's: text and OpenMetrics parse,
HEAD is 200, gzip when asked.

The registry is the process's (other tests count in it too), so a test compares what its own
script added: the difference between two scrapes, series by series, exactly.
"""

from __future__ import annotations

import gzip
import http.client
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from conftest import ServiceThread, kubernetes_service
from emulator import EmulatorThread
from job_status import ended_status
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from test_contract import Harness, closed_port, running_harness

from jobscheduler import metrics
from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.ops.http import OpsHTTPServer
from jobscheduler.ops.readiness import Readiness

T = 20
SERVICE = "jobscheduler.JobScheduler"
Series = tuple[str, frozenset[tuple[str, str]]]


@pytest.fixture(scope="module")
def ops() -> Iterator[OpsHTTPServer]:
    server = OpsHTTPServer("127.0.0.1", 0, Readiness())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def fetch(
    ops: OpsHTTPServer, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", ops.port, timeout=10)
    try:
        conn.request(method, "/metrics", headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def scrape(ops: OpsHTTPServer) -> dict[Series, float]:
    status, _, body = fetch(ops)
    assert status == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in parse_text(body.decode())
        for s in family.samples
    }


def added(before: dict[Series, float], after: dict[Series, float], *prefixes: str) -> dict[Series, float]:
    """The series named ``prefixes*`` that the script changed, with what it added."""
    out: dict[Series, float] = {}
    for key, value in after.items():
        if key[0].endswith("_created"):  # when a series first appeared, not a count
            continue
        if key[0].startswith(prefixes) and value != before.get(key, 0.0):
            out[key] = value - before.get(key, 0.0)
    return out


def series(name: str, **labels: str) -> Series:
    return name, frozenset(labels.items())


def grpc_series(name: str, grpc_type: str, method: str, **more: str) -> Series:
    return series(name, grpc_type=grpc_type, grpc_service=SERVICE, grpc_method=method, **more)


def watch_to_end(h: Harness, job_id: str) -> tuple[int, pb.Job]:
    """WatchJob until the stream ends (after the job's final state): messages and last state."""
    events = list(h.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=T))
    return len(events), events[-1].job


def wait_leading(emulator: EmulatorThread | None) -> None:
    """Until the service leads (job metrics are counted by the Lease holder only): with a fresh
    emulator, the Lease has a holder only once the one service took it."""
    deadline = time.monotonic() + 15
    while metrics.REGISTRY.get_sample_value("jobscheduler_leader") != 1 or (
        emulator is not None and emulator.lease_holder("jobscheduler") is None
    ):
        assert time.monotonic() < deadline, "this replica never took the admission Lease"
        time.sleep(0.05)


def ended(h: Harness, *, succeed: bool) -> pb.Job:
    """A job that runs to SUCCEEDED or FAILED, the way this backend gets there (not waited for)."""
    if h.kind == "local":
        extra: dict[str, Any] = {}
        if not succeed:
            extra = {
                "control_plane_endpoint": f"http://127.0.0.1:{closed_port()}/",
                "env": {"REPORT_MAX_ATTEMPTS": "1", "REPORT_BACKOFF_SECONDS": "0.05"},
            }
        return h.stub.ScheduleJob(h.timer(duration=1, **extra), timeout=T).job
    assert h.emulator is not None
    job = h.stub.ScheduleJob(h.timer(duration=60), timeout=T).job
    h.emulator.patch_job(job.job_id, {"status": ended_status(succeed=succeed)})
    return job


@pytest.mark.parametrize("kind", ["kubernetes", "local"])
def test_scripted_rpcs_and_jobs_give_exact_series(
    kind: str, tmp_path: pathlib.Path, ops: OpsHTTPServer
) -> None:
    with running_harness(kind, tmp_path) as h:
        wait_leading(h.emulator)
        before = scrape(ops)
        stub = h.stub
        replayed = h.timer(duration=60)
        replayed.request_id = "metrics-once"
        cancelled = stub.ScheduleJob(replayed, timeout=T).job
        for _ in range(2):  # the client retries: the same job, nothing new
            assert stub.ScheduleJob(replayed, timeout=T).job.job_id == cancelled.job_id
        with pytest.raises(grpc.RpcError) as err:
            stub.ScheduleJob(h.timer(duration=0), timeout=T)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as err:
            stub.GetJobStatus(pb.GetJobStatusRequest(job_id="job-doesnotexist"), timeout=T)
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
        for _ in range(2):  # a repeated cancel: one cancelled job
            stub.CancelJob(pb.CancelJobRequest(job_id=cancelled.job_id), timeout=T)
        succeeded, failed = ended(h, succeed=True), ended(h, succeed=False)
        sent = 0
        final: dict[str, pb.Job] = {}
        for job in (cancelled, succeeded, failed):
            messages, final[job.job_id] = watch_to_end(h, job.job_id)
            sent += messages
        assert [final[j.job_id].phase for j in (cancelled, succeeded, failed)] == [
            pb.JOB_PHASE_CANCELLED,
            pb.JOB_PHASE_SUCCEEDED,
            pb.JOB_PHASE_FAILED,
        ]
        if h.emulator is not None:  # the Job controller writes the failed Job once more: not a new end
            h.emulator.patch_job(failed.job_id, {"metadata": {"labels": {"touched": "yes"}}})
            h.emulator.patch_job(failed.job_id, {"metadata": {"labels": {"touched": "twice"}}})
            deadline = time.monotonic() + 10
            while (record := h.service.index.get(failed.job_id)) is None or "touched" not in record.labels:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        after = scrape(ops)

    u, s = "unary", "server_stream"
    expected_grpc = {
        # ScheduleJob: three of one request_id, one invalid, two more jobs.
        grpc_series("grpc_server_started_total", u, "ScheduleJob"): 6,
        grpc_series("grpc_server_msg_received_total", u, "ScheduleJob"): 6,
        grpc_series("grpc_server_msg_sent_total", u, "ScheduleJob"): 5,
        grpc_series("grpc_server_handled_total", u, "ScheduleJob", grpc_code="OK"): 5,
        grpc_series("grpc_server_handled_total", u, "ScheduleJob", grpc_code="InvalidArgument"): 1,
        grpc_series("grpc_server_handling_seconds_count", u, "ScheduleJob"): 6,
        grpc_series("grpc_server_started_total", u, "GetJobStatus"): 1,
        grpc_series("grpc_server_msg_received_total", u, "GetJobStatus"): 1,
        grpc_series("grpc_server_handled_total", u, "GetJobStatus", grpc_code="NotFound"): 1,
        grpc_series("grpc_server_handling_seconds_count", u, "GetJobStatus"): 1,
        grpc_series("grpc_server_started_total", u, "CancelJob"): 2,
        grpc_series("grpc_server_msg_received_total", u, "CancelJob"): 2,
        grpc_series("grpc_server_msg_sent_total", u, "CancelJob"): 2,
        grpc_series("grpc_server_handled_total", u, "CancelJob", grpc_code="OK"): 2,
        grpc_series("grpc_server_handling_seconds_count", u, "CancelJob"): 2,
        grpc_series("grpc_server_started_total", s, "WatchJob"): 3,
        grpc_series("grpc_server_msg_received_total", s, "WatchJob"): 3,
        grpc_series("grpc_server_msg_sent_total", s, "WatchJob"): sent,
        grpc_series("grpc_server_handled_total", s, "WatchJob", grpc_code="OK"): 3,
        grpc_series("grpc_server_handling_seconds_count", s, "WatchJob"): 3,
    }
    got = added(before, after, "grpc_server_")
    assert {k: v for k, v in got.items() if not k[0].endswith(("_sum", "_bucket"))} == expected_grpc
    for key, value in got.items():  # every call falls in the +Inf bucket
        if key[0] == "grpc_server_handling_seconds_bucket" and ("le", "+Inf") in key[1]:
            method = dict(key[1])["grpc_method"]
            assert value == {"ScheduleJob": 6, "GetJobStatus": 1, "CancelJob": 2, "WatchJob": 3}[method]

    reason = final[succeeded.job_id].reason
    assert reason in ("Completed", "CompletionsReached")
    job = {"type": "timer", "queue": "default"}
    got = added(before, after, "jobscheduler_jobs_", "jobscheduler_job_")
    # The cancelled job's run time: locally it may or may not have started before the cancel.
    got = {
        k: v
        for k, v in got.items()
        if not (k[0].startswith("jobscheduler_job_run") and ("phase", "CANCELLED") in k[1])
    }
    assert {k: v for k, v in got.items() if not k[0].endswith(("_sum", "_bucket"))} == {
        series("jobscheduler_jobs_scheduled_total", type="timer"): 3,
        series("jobscheduler_jobs_cancelled_total", type="timer"): 1,
        series("jobscheduler_jobs_finished_total", **job, phase="CANCELLED", reason="Cancelled"): 1,
        series("jobscheduler_jobs_finished_total", **job, phase="SUCCEEDED", reason=reason): 1,
        series("jobscheduler_jobs_finished_total", **job, phase="FAILED", reason="BackoffLimitExceeded"): 1,
        series("jobscheduler_job_run_seconds_count", **job, phase="SUCCEEDED"): 1,
        series("jobscheduler_job_run_seconds_count", **job, phase="FAILED"): 1,
    }
    assert got[series("jobscheduler_job_run_seconds_bucket", **job, phase="FAILED", le="+Inf")] == 1


def test_exposition_parses_as_text_and_openmetrics_head_and_gzip(ops: OpsHTTPServer) -> None:
    metrics.GRPC_HANDLED.labels("unary", SERVICE, "Probe", "NotFound")  # at least one child
    status, headers, body = fetch(ops)
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    names = {family.name for family in parse_text(body.decode())}
    standard = {
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "python_info",
        "python_gc_collections",
    }
    assert {"grpc_server_handled", "grpc_server_started", *standard} <= {
        n.removesuffix("_total") for n in names
    }

    status, headers, body = fetch(ops, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200 and headers["content-type"].startswith("application/openmetrics-text")
    families = {family.name: family for family in parse_openmetrics(body.decode())}
    assert families["grpc_server_handled"].type == "counter"
    assert families["grpc_server_handling_seconds"].type == "histogram"
    assert families["jobscheduler_jobs_finished"].type == "counter"
    assert body.endswith(b"# EOF\n")

    status, headers, body = fetch(ops, "HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0

    status, headers, body = fetch(ops, headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert b"grpc_server_handled_total" in gzip.decompress(body)

    status, _, body = fetch(ops, headers={})
    assert status == 200

    conn = http.client.HTTPConnection("127.0.0.1", ops.port, timeout=10)
    try:
        conn.request("GET", "/metrics?name[]=jobscheduler_leader")
        only = conn.getresponse().read().decode()
    finally:
        conn.close()
    assert {family.name for family in parse_text(only)} == {"jobscheduler_leader"}


def finished_total() -> float:
    return sum(
        s.value
        for family in metrics.REGISTRY.collect()
        if family.name == "jobscheduler_jobs_finished"
        for s in family.samples
        if s.name == "jobscheduler_jobs_finished_total"
    )


def wait_until(check: Any, what: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_two_replicas_and_a_restart_count_a_job_once(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    """Both replicas' indexes see the job end (they share this process's registry: a count from
    each would add 2); only the Lease holder counts. A restarted replica loads the ended job
    and counts nothing."""
    first = kubernetes_service(kubeconfig)
    second: ServiceThread | None = None
    try:
        wait_leading(emulator)
        second = kubernetes_service(kubeconfig)
        before = finished_total()
        job = first.stub.ScheduleJob(
            pb.ScheduleJobRequest(
                name="once",
                timer_job=pb.TimerJob(
                    duration_seconds=60, timer_name="t", control_plane_endpoint="http://127.0.0.1:9/"
                ),
            ),
            timeout=T,
        ).job
        emulator.patch_job(job.job_id, {"status": ended_status(succeed=False)})
        for replica in (first, second):
            watch_phase = list(replica.stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), timeout=T))
            assert watch_phase[-1].job.phase == pb.JOB_PHASE_FAILED
        assert finished_total() == before + 1
    finally:
        first.stop()
        if second is not None:
            second.stop()
    restarted = kubernetes_service(kubeconfig)
    try:
        wait_until(lambda: restarted.index.get(job.job_id) is not None, "the restarted replica lists the job")
        assert finished_total() == before + 1
    finally:
        restarted.stop()


@pytest.mark.parametrize("kind", ["kubernetes", "local"])
def test_a_held_job_observes_its_queue_wait_once(kind: str, tmp_path: pathlib.Path) -> None:
    """A queue with room for one: the second job waits (QUEUED) until the first ends; each
    admitted job's wait, enqueued_at to admitted_at, is observed once."""
    key = ("jobscheduler_job_queue_wait_seconds_count", {"queue": "solo"})
    with running_harness(kind, tmp_path, queues="solo=1") as h:
        wait_leading(h.emulator)
        before = metrics.REGISTRY.get_sample_value(*key) or 0.0
        requests = [h.timer(duration=1 if kind == "local" else 60), h.timer(duration=1)]
        for request in requests:
            request.queue = "solo"
        first, held = (h.stub.ScheduleJob(request, timeout=T).job for request in requests)
        assert held.phase == pb.JOB_PHASE_QUEUED
        if h.emulator is not None:
            h.emulator.patch_job(first.job_id, {"status": ended_status(succeed=True)})
        wait_until(
            lambda: (r := h.service.index.get(held.job_id)) is not None and r.admitted_at is not None,
            "the held job is admitted",
            within=15,
        )
        record = h.service.index.get(held.job_id)
        assert record is not None and record.enqueued_at is not None and record.admitted_at is not None
        # The first job may be created running (never held) or held and admitted at once.
        admitted = [r for r in map(h.service.index.get, (first.job_id, held.job_id)) if r and r.admitted_at]
        assert (metrics.REGISTRY.get_sample_value(*key) or 0.0) == before + len(admitted)
        waited = (record.admitted_at - record.enqueued_at).total_seconds()
        total = metrics.REGISTRY.get_sample_value(
            "jobscheduler_job_queue_wait_seconds_sum", {"queue": "solo"}
        )
        assert total is not None and total >= waited >= 0


def test_a_retry_is_counted_once(emulator: EmulatorThread, kubeconfig: pathlib.Path) -> None:
    """max_retries=1: the failed job's retry is created (by the retry controller) and counted
    once; the retry's own failure ends the chain and adds no retry."""
    key = ("jobscheduler_job_retries_total", {"type": "timer", "queue": "default"})
    svc = kubernetes_service(kubeconfig)
    try:
        wait_leading(emulator)
        before = metrics.REGISTRY.get_sample_value(*key) or 0.0
        request = pb.ScheduleJobRequest(
            name="retried",
            max_retries=1,
            retry_backoff_seconds=0,
            timer_job=pb.TimerJob(
                duration_seconds=60, timer_name="t", control_plane_endpoint="http://127.0.0.1:9/"
            ),
        )
        first = svc.stub.ScheduleJob(request, timeout=T).job
        emulator.patch_job(first.job_id, {"status": ended_status(succeed=False)})

        def retry() -> str | None:
            return next((r.job_id for r in svc.index.records() if r.retry_of == first.job_id), None)

        wait_until(lambda: retry() is not None, "the retry is created")
        retry_id = retry()
        assert retry_id is not None
        emulator.patch_job(retry_id, {"status": ended_status(succeed=False)})
        events = list(svc.stub.WatchJob(pb.WatchJobRequest(job_id=retry_id), timeout=T))
        assert events[-1].job.phase == pb.JOB_PHASE_FAILED
        assert (metrics.REGISTRY.get_sample_value(*key) or 0.0) == before + 1
        assert [r.job_id for r in svc.index.records() if r.retry_of == first.job_id] == [retry_id]
    finally:
        svc.stop()
