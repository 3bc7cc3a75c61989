"""Queries and streams through the public gRPC surface: ListJobs filters and pagination, WatchJob,
WatchJobs (resume tokens, retention, slow consumers) and GetJobLogs.

Filters, pagination, resume tokens and slow consumers run against the Kubernetes backend and the API
emulator, where Jobs stay put and the test writes what the Job controller would (status, creation
time, deletion). Lifecycle streams and logs run against the local backend, where timer jobs really
run and report to a small HTTP receiver on 127.0.0.1.

Every stream is read on a thread into a queue (``Stream``), so each read has its own deadline; each
call also carries a gRPC deadline, and is cancelled when the test is done with it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import pathlib
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import grpc
import pytest
from conftest import ServiceThread, kubernetes_service, local_service
from emulator import EmulatorThread
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc

pytestmark = pytest.mark.timeout(60)

T = 10  # every unary RPC is bounded by this (seconds)
STREAM_DEADLINE = 30  # and every stream by this
TERMINAL = (pb.JOB_PHASE_SUCCEEDED, pb.JOB_PHASE_FAILED, pb.JOB_PHASE_CANCELLED)
E = pb.JobEventType  # E.Name(...) in messages
R = TypeVar("R")


# --- helpers ------------------------------------------------------------------------------------


class Receiver:
    """A control plane stand-in: records the timer's JSON reports and answers 204."""

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
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def closed_port_url() -> str:
    """A 127.0.0.1 URL nothing listens on: a timer reporting there fails (exit code 3)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/report"


_END = object()


class Stream:
    """A server stream pumped on a thread into a queue: reads with deadlines, and a bounded close."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.error: grpc.RpcError | None = None
        self.ended = threading.Event()
        self._items: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for item in self.call:
                self._items.put(item)
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.ended.set()
            self._items.put(_END)

    def next(self, timeout: float = T) -> Any:
        """The next item; None once the stream has ended (see ``error``)."""
        try:
            item = self._items.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no stream item within {timeout}s") from None
        if item is _END:
            self._items.put(_END)
            return None
        return item

    def take(self, n: int, timeout: float = T) -> list[Any]:
        deadline = time.monotonic() + timeout
        items: list[Any] = []
        while len(items) < n:
            item = self.next(max(0.01, deadline - time.monotonic()))
            assert item is not None, f"stream ended after {len(items)} of {n} items: {self.error}"
            items.append(item)
        return items

    def until(self, done: Callable[[list[Any]], bool], timeout: float = 15) -> list[Any]:
        """Items until ``done(items so far)`` holds."""
        deadline = time.monotonic() + timeout
        items: list[Any] = []
        while not done(items):
            left = deadline - time.monotonic()
            assert left > 0, f"condition not met within {timeout}s; got {describe(items)}"
            item = self.next(left)
            assert item is not None, f"stream ended early ({self.error}); got {describe(items)}"
            items.append(item)
        return items

    def rest(self, timeout: float = 15) -> list[Any]:
        """Everything up to the stream's own end (which must come within ``timeout``)."""
        deadline = time.monotonic() + timeout
        items: list[Any] = []
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"the stream did not end within {timeout}s; got {describe(items)}"
            item = self.next(left)
            if item is None:
                return items
            items.append(item)

    def quiet(self, seconds: float) -> None:
        """Nothing arrives (and the stream does not end) for ``seconds``."""
        try:
            item = self._items.get(timeout=seconds)
        except queue.Empty:
            return
        raise AssertionError(
            f"unexpected stream item: {describe([item]) if item is not _END else self.error}"
        )

    def close(self) -> None:
        self.call.cancel()
        self._thread.join(5)


@contextlib.contextmanager
def stream(call: Any) -> Iterator[Stream]:
    s = Stream(call)
    try:
        yield s
    finally:
        s.close()


@contextlib.contextmanager
def watching(svc: ServiceThread, request: pb.WatchJobsRequest | None = None) -> Iterator[Stream]:
    """A WatchJobs stream, once the server has subscribed it to the index: a stream without a
    resume token starts "now", and the client cannot otherwise tell when that was."""
    before = svc.index.subscriptions
    with stream(svc.stub.WatchJobs(request or pb.WatchJobsRequest(), timeout=STREAM_DEADLINE)) as s:
        wait_until(lambda: svc.index.subscriptions > before or s.ended.is_set(), 5, "the subscription")
        yield s


def describe(items: list[Any]) -> list[str]:
    out = []
    for item in items:
        if isinstance(item, pb.JobEvent):
            out.append(f"{E.Name(item.type)}:{item.job.job_id}:{pb.JobPhase.Name(item.job.phase)}")
        else:
            out.append(repr(item)[:120])
    return out


def drain(s: Stream, seconds: float) -> list[Any]:
    """Whatever arrives within ``seconds`` (the stream may go on)."""
    deadline = time.monotonic() + seconds
    items: list[Any] = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            item = s._items.get(timeout=left)
        except queue.Empty:
            break
        if item is _END:
            s._items.put(_END)
            break
        items.append(item)
    return items


def kinds(events: list[pb.JobEvent], job_id: str | None = None) -> list[str]:
    return [E.Name(e.type).removeprefix("JOB_EVENT_TYPE_") for e in events if job_id in (None, e.job.job_id)]


def seq(token: str) -> int:
    return int(token.rpartition(".")[2])


def bad_fields(err: grpc.RpcError) -> set[str]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, err
    fields: set[str] = set()
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields.update(v.field for v in bad.field_violations)
    return fields


def assert_invalid(err: grpc.RpcError | None, field: str) -> None:
    assert err is not None
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    assert field in bad_fields(err), (bad_fields(err), err.details())


def stream_error(call: Any, timeout: float = T) -> grpc.RpcError:
    """The error a stream ends with before its first item (it must not yield one)."""
    with stream(call) as s:
        item = s.next(timeout)
        assert item is None, f"expected an error, got {describe([item])}"
        assert s.error is not None, "the stream ended without an error"
        return s.error


def wait_until(check: Callable[[], R | None], timeout: float, what: str, interval: float = 0.05) -> R:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def timer(
    endpoint: str,
    *,
    name: str = "stream-timer",
    duration: int = 60,
    labels: dict[str, str] | None = None,
    **env: str,
) -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(
        name=name,
        timer_job=pb.TimerJob(
            duration_seconds=duration, timer_name="tea", control_plane_endpoint=endpoint, env=env
        ),
        labels=labels or {},
    )


def schedule(stub: pb_grpc.JobSchedulerStub, request: pb.ScheduleJobRequest) -> pb.Job:
    job: pb.Job = stub.ScheduleJob(request, timeout=T).job
    return job


def get(stub: pb_grpc.JobSchedulerStub, job_id: str) -> pb.Job:
    job: pb.Job = stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=T).job
    return job


def wait_phase(stub: pb_grpc.JobSchedulerStub, job_id: str, *phases: int, timeout: float = 15) -> pb.Job:
    return wait_until(
        lambda: job if (job := get(stub, job_id)).phase in phases else None,
        timeout,
        f"{job_id} in {[pb.JobPhase.Name(p) for p in phases]}",
    )


def list_ids(stub: pb_grpc.JobSchedulerStub, **filter_fields: Any) -> list[str]:
    response = stub.ListJobs(pb.ListJobsRequest(filter=pb.JobFilter(**filter_fields)), timeout=T)
    assert response.next_page_token == ""
    return [j.job_id for j in response.jobs]


def ts(value: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value)
    return out


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the Kubernetes side: what the Job controller (or kubectl) would do ---------------------------


def utc_now() -> str:
    return rfc3339(datetime.now(UTC))


def running_status() -> dict[str, Any]:
    return {"startTime": utc_now(), "active": 1}


def succeeded_status() -> dict[str, Any]:
    at = utc_now()
    return {
        "startTime": at,
        "completionTime": at,
        "active": 0,
        "succeeded": 1,
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached"},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached", "lastTransitionTime": at},
        ],
    }


def failed_status() -> dict[str, Any]:
    at = utc_now()
    return {
        "startTime": at,
        "active": 0,
        "failed": 1,
        "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
                "lastTransitionTime": at,
            },
        ],
    }


def delete_job(emulator: EmulatorThread, job_id: str) -> None:
    emulator.request("DELETE", f"/apis/batch/v1/namespaces/default/jobs/{job_id}")


@pytest.fixture
def k8s(kubeconfig: pathlib.Path) -> Iterator[Callable[..., ServiceThread]]:
    """Start in-process services on the Kubernetes backend (the emulator); all stopped at the end."""
    services: list[ServiceThread] = []

    def start(**settings: Any) -> ServiceThread:
        svc = kubernetes_service(kubeconfig, **settings)
        services.append(svc)
        return svc

    yield start
    for svc in services:
        svc.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    recv = Receiver()
    yield recv
    recv.close()


@pytest.fixture
def local(tmp_path: pathlib.Path) -> Iterator[Callable[..., ServiceThread]]:
    """Start in-process services on the local backend (jobs are real processes); stopped at the end."""
    services: list[ServiceThread] = []

    def start(**settings: Any) -> ServiceThread:
        options: dict[str, Any] = {
            "local_backoff_seconds": 0.1,
            "local_kill_grace_seconds": 2,
            "default_backoff_limit": 0,
        }
        options.update(settings)
        svc = local_service(tmp_path / f"data{len(services)}", **options)
        services.append(svc)
        return svc

    yield start
    for svc in services:
        svc.stop()


# --- 1. ListJobs filters --------------------------------------------------------------------------

BASE = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)


@pytest.fixture
def five_jobs(
    k8s: Callable[..., ServiceThread], emulator: EmulatorThread
) -> tuple[ServiceThread, dict[str, str]]:
    """Five jobs one day apart (created BASE + 0..4 days), in every phase, with and without a team."""
    svc = k8s()
    url = "http://127.0.0.1:9/report"
    spec = {
        # key: (name, labels, phase)
        "s": ("alpha-1", {"team": "a"}, pb.JOB_PHASE_SUCCEEDED),
        "f": ("alpha-2", {"team": "b"}, pb.JOB_PHASE_FAILED),
        "r": ("beta-1", {"team": "c"}, pb.JOB_PHASE_RUNNING),
        "p": ("beta-2", {}, pb.JOB_PHASE_PENDING),
        "c": ("gamma", {"team": "a"}, pb.JOB_PHASE_CANCELLED),
    }
    ids: dict[str, str] = {}
    for day, (key, (name, labels, phase)) in enumerate(spec.items()):
        job_id = schedule(svc.stub, timer(url, name=name, labels=labels)).job_id
        ids[key] = job_id
        created = BASE + timedelta(days=day)
        patch: dict[str, Any] = {"metadata": {"creationTimestamp": rfc3339(created)}}
        if phase == pb.JOB_PHASE_SUCCEEDED:
            patch["status"] = succeeded_status()
        elif phase == pb.JOB_PHASE_FAILED:
            patch["status"] = failed_status()
        elif phase == pb.JOB_PHASE_RUNNING:
            patch["status"] = running_status()
        emulator.patch_job(job_id, patch)
        if phase == pb.JOB_PHASE_CANCELLED:
            svc.stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=T)
        wait_until(
            lambda j=job_id, p=phase, c=created: (
                (job := get(svc.stub, j)).phase == p and job.created_at.ToDatetime(UTC) == c
            ),
            10,
            f"the index to show {job_id} as {pb.JobPhase.Name(phase)}, created {created}",
        )
    return svc, ids


def test_list_filters_by_type_phase_name_and_creation_time(
    five_jobs: tuple[ServiceThread, dict[str, str]],
) -> None:
    svc, ids = five_jobs
    s, f, r, p, c = (ids[k] for k in "sfrpc")
    stub = svc.stub
    newest_first = [c, p, r, f, s]

    assert list_ids(stub) == newest_first
    assert list_ids(stub, type="timer") == newest_first
    assert list_ids(stub, type="other") == []

    assert list_ids(stub, phases=[pb.JOB_PHASE_SUCCEEDED]) == [s]
    assert list_ids(stub, phases=[pb.JOB_PHASE_SUCCEEDED, pb.JOB_PHASE_FAILED]) == [f, s]
    assert list_ids(stub, phases=[pb.JOB_PHASE_RUNNING]) == [r]
    assert list_ids(stub, phases=[pb.JOB_PHASE_PENDING, pb.JOB_PHASE_CANCELLED]) == [c, p]
    assert list_ids(stub, phases=list(TERMINAL)) == [c, f, s]

    assert list_ids(stub, name_prefix="alpha") == [f, s]
    assert list_ids(stub, name_prefix="beta-") == [p, r]
    assert list_ids(stub, name_prefix="gamma") == [c]
    assert list_ids(stub, name_prefix="zeta") == []

    # created_after is inclusive, created_before exclusive (core/query.py).
    def day(n: int) -> Timestamp:
        return ts(BASE + timedelta(days=n))

    assert list_ids(stub, created_after=day(1)) == [c, p, r, f]
    assert list_ids(stub, created_after=ts(BASE + timedelta(days=1, seconds=1))) == [c, p, r]
    assert list_ids(stub, created_before=day(3)) == [r, f, s]
    assert list_ids(stub, created_before=ts(BASE + timedelta(days=3, seconds=1))) == [p, r, f, s]
    assert list_ids(stub, created_after=day(1), created_before=day(3)) == [r, f]
    assert list_ids(stub, created_after=day(2), created_before=day(2)) == []
    assert list_ids(stub, created_after=day(5)) == []

    # Every set field must match (AND).
    assert list_ids(stub, type="timer", phases=list(TERMINAL), label_selector="team=a") == [c, s]
    assert list_ids(stub, label_selector="team=a", name_prefix="alpha") == [s]
    assert list_ids(stub, label_selector="team", phases=[pb.JOB_PHASE_RUNNING, pb.JOB_PHASE_PENDING]) == [r]
    assert list_ids(stub, name_prefix="alpha", created_after=day(1)) == [f]
    assert list_ids(stub, type="other", name_prefix="alpha") == []


def test_list_filters_by_label_selector(five_jobs: tuple[ServiceThread, dict[str, str]]) -> None:
    svc, ids = five_jobs
    s, f, r, p, c = (ids[k] for k in "sfrpc")
    stub = svc.stub

    def sel(selector: str) -> list[str]:
        return list_ids(stub, label_selector=selector)

    assert sel("team=a") == [c, s]
    assert sel("team==a") == [c, s]
    assert sel("team!=a") == [p, r, f]  # Kubernetes semantics: a job without the label matches too
    assert sel("team in (a,b)") == [c, f, s]
    assert sel("team in ( a , b )") == [c, f, s]
    assert sel("team notin (a,b)") == [p, r]
    assert sel("!team") == [p]
    assert sel("team") == [c, r, f, s]
    assert sel("team,team!=c") == [c, f, s]
    assert sel("team=a,team=b") == []
    assert sel("app.kubernetes.io/managed-by=jobscheduler") == [c, p, r, f, s]
    assert sel("") == [c, p, r, f, s]
    # An empty value is valid Kubernetes syntax ("team==" selects team=""); no job has it.
    assert sel("team==") == []
    assert sel("team!=") == [c, p, r, f, s]  # "" is not team's value on any job (absent counts too)


@pytest.mark.parametrize(
    "selector", ["a b", "x in ()", "team===a", "team=a,", "team in (a", "=a", "!", "team=a b", "Bad Key=1"]
)
def test_malformed_label_selector_is_invalid_argument(
    k8s: Callable[..., ServiceThread], selector: str
) -> None:
    svc = k8s()
    with pytest.raises(grpc.RpcError) as err:
        svc.stub.ListJobs(pb.ListJobsRequest(filter=pb.JobFilter(label_selector=selector)), timeout=T)
    assert_invalid(err.value, "filter.label_selector")
    assert selector.strip() in err.value.details() or "label_selector" in err.value.details()
    # WatchJobs checks its filter the same way.
    call = svc.stub.WatchJobs(
        pb.WatchJobsRequest(filter=pb.JobFilter(label_selector=selector)), timeout=STREAM_DEADLINE
    )
    assert_invalid(stream_error(call), "filter.label_selector")


def test_unknown_phase_in_a_filter_is_invalid_argument(k8s: Callable[..., ServiceThread]) -> None:
    svc = k8s()
    bad = pb.JobFilter(phases=[pb.JOB_PHASE_SUCCEEDED, 42])  # type: ignore[list-item]
    with pytest.raises(grpc.RpcError) as err:
        svc.stub.ListJobs(pb.ListJobsRequest(filter=bad), timeout=T)
    assert_invalid(err.value, "filter.phases[1]")


# --- 2. pagination ----------------------------------------------------------------------------------


def seven_jobs(svc: ServiceThread, emulator: EmulatorThread) -> list[str]:
    """Seven jobs created a minute apart (BASE + 0..6 min); newest first."""
    ids = []
    for i in range(7):
        job_id = schedule(svc.stub, timer("http://127.0.0.1:9/", name=f"page-{i}")).job_id
        created = BASE + timedelta(minutes=i)
        emulator.patch_job(job_id, {"metadata": {"creationTimestamp": rfc3339(created)}})
        ids.append(job_id)
    wait_until(
        lambda: all(get(svc.stub, j).created_at.ToDatetime(UTC) < BASE + timedelta(days=1) for j in ids),
        10,
        "the index to show the patched creation times",
    )
    return ids[::-1]


def page(
    stub: pb_grpc.JobSchedulerStub, size: int, token: str = "", **filter_fields: Any
) -> tuple[list[str], str]:
    response = stub.ListJobs(
        pb.ListJobsRequest(filter=pb.JobFilter(**filter_fields), page_size=size, page_token=token), timeout=T
    )
    return [j.job_id for j in response.jobs], response.next_page_token


def test_pages_of_three_newest_first(k8s: Callable[..., ServiceThread], emulator: EmulatorThread) -> None:
    svc = k8s()
    newest_first = seven_jobs(svc, emulator)

    first, token1 = page(svc.stub, 3)
    assert first == newest_first[:3] and token1
    second, token2 = page(svc.stub, 3, token1)
    assert second == newest_first[3:6] and token2
    third, token3 = page(svc.stub, 3, token2)
    assert third == newest_first[6:]
    assert token3 == ""
    assert first + second + third == newest_first

    # The same token gives the same page again.
    assert page(svc.stub, 3, token1) == (second, token2)
    # page_size may change between pages (only the filter may not).
    assert page(svc.stub, 10, token1) == (newest_first[3:], "")
    # Exactly one full page: no token.
    assert page(svc.stub, 7) == (newest_first, "")
    # With a filter, the pages cover only its matches, and the token carries on with that filter.
    filtered, token = page(svc.stub, 2, name_prefix="page-", label_selector="!team")
    assert filtered == newest_first[:2] and token
    assert page(svc.stub, 5, token, name_prefix="page-", label_selector="!team") == (newest_first[2:], "")


def test_page_size_zero_means_fifty(k8s: Callable[..., ServiceThread], emulator: EmulatorThread) -> None:
    svc = k8s()
    for i in range(52):
        schedule(svc.stub, timer("http://127.0.0.1:9/", name=f"many-{i}"))
        if i % 20 == 19:
            emulator.trim_log()
    wait_until(
        lambda: len(svc.stub.ListJobs(pb.ListJobsRequest(page_size=1000), timeout=T).jobs) == 52, 10, "52"
    )
    first, token = page(svc.stub, 0)
    assert len(first) == 50 and token
    rest, last = page(svc.stub, 0, token)
    assert len(rest) == 2 and last == ""
    assert len(set(first + rest)) == 52
    assert page(svc.stub, 1000)[1] == ""
    assert len(page(svc.stub, 1)[0]) == 1


def test_page_size_and_token_errors(k8s: Callable[..., ServiceThread], emulator: EmulatorThread) -> None:
    svc = k8s()
    for i in range(3):
        schedule(svc.stub, timer("http://127.0.0.1:9/", name=f"err-{i}"))
    stub = svc.stub

    def error(**request: Any) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as err:
            stub.ListJobs(pb.ListJobsRequest(**request), timeout=T)
        return err.value

    assert_invalid(error(page_size=1001), "page_size")
    assert_invalid(error(page_size=-1), "page_size")
    for token in ("garbage", "!!!", "eyJ4IjoxfQ", "bm90IGpzb24"):  # not base64 JSON / JSON without the fields
        assert_invalid(error(page_token=token), "page_token")

    _, token = page(stub, 1)
    assert token
    other = error(filter=pb.JobFilter(name_prefix="err-"), page_token=token)
    assert_invalid(other, "page_token")
    assert "filter" in other.details()
    _, prefixed = page(stub, 1, name_prefix="err-")
    assert_invalid(error(page_token=prefixed), "page_token")
    assert_invalid(error(filter=pb.JobFilter(name_prefix="err"), page_token=prefixed), "page_token")
    # With its own filter the token still works.
    assert len(page(stub, 1, prefixed, name_prefix="err-")[0]) == 1


def test_token_stays_correct_while_jobs_are_added(
    k8s: Callable[..., ServiceThread], emulator: EmulatorThread
) -> None:
    svc = k8s()
    newest_first = seven_jobs(svc, emulator)

    first, token = page(svc.stub, 3)
    assert first == newest_first[:3]
    added = [schedule(svc.stub, timer("http://127.0.0.1:9/", name=f"late-{i}")).job_id for i in range(4)]
    wait_until(lambda: all(get(svc.stub, j) for j in added), 5, "the new jobs")
    second, token = page(svc.stub, 3, token)
    assert second == newest_first[3:6]
    added.append(schedule(svc.stub, timer("http://127.0.0.1:9/", name="later")).job_id)
    third, token = page(svc.stub, 3, token)
    assert (third, token) == (newest_first[6:], "")
    assert not set(added) & set(first + second + third)
    # A fresh listing starts with the new jobs (created within a second or so: ties go by id).
    fresh, _ = page(svc.stub, 5)
    assert set(fresh) == set(added)
    assert page(svc.stub, 12)[0][5:] == newest_first


def crafted_token(payload: dict[str, Any], job_filter: list[Any]) -> str:
    """A page token as core/query.py encodes one (base64 JSON with the filter's digest)."""
    digest = hashlib.sha256(json.dumps(job_filter).encode()).hexdigest()[:12]
    raw = json.dumps({**payload, "f": digest}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def test_tampered_page_tokens_are_invalid_argument(k8s: Callable[..., ServiceThread]) -> None:
    """Tokens are opaque, but one a client mangled must still be INVALID_ARGUMENT, never INTERNAL."""
    svc = k8s()
    for i in range(3):
        schedule(svc.stub, timer("http://127.0.0.1:9/", name=f"tamper-{i}"))
    no_filter: list[Any] = [
        "",
        [],
        "",
        "",
        None,
        None,
        "",
    ]  # type, phases, selector, prefix, after, before, owner
    _, genuine = page(svc.stub, 1)
    decoded = json.loads(base64.urlsafe_b64decode(genuine + "=" * (-len(genuine) % 4)))
    # crafted_token encodes exactly as the service does: the genuine token round-trips.
    assert crafted_token({"c": decoded["c"], "i": decoded["i"]}, no_filter) == genuine
    for payload in (
        {"c": 12, "i": "job-x"},
        {"c": "2024-05-01T10:00:00+00:00"},
        {"c": "2024-05-01T10:00:00", "i": "job-x"},  # no time zone
    ):
        with pytest.raises(grpc.RpcError) as err:
            svc.stub.ListJobs(
                pb.ListJobsRequest(page_size=1, page_token=crafted_token(payload, no_filter)), timeout=T
            )
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, (payload, err.value.details())
        assert "page_token" in bad_fields(err.value)


# --- 3. WatchJob (local backend: the job really runs) -----------------------------------------------


def test_watch_job_follows_a_timer_to_success_and_ends(
    local: Callable[..., ServiceThread], receiver: Receiver
) -> None:
    svc = local()
    job = schedule(svc.stub, timer(receiver.url, duration=1))
    with stream(svc.stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), timeout=STREAM_DEADLINE)) as s:
        events = s.rest(timeout=20)
        assert s.error is None, s.error
    assert events, "no events"
    first, last = events[0], events[-1]
    assert first.type == pb.JOB_EVENT_TYPE_CREATED
    assert first.job.job_id == job.job_id and first.job.name == "stream-timer"
    assert first.job.phase in (pb.JOB_PHASE_PENDING, pb.JOB_PHASE_RUNNING)
    assert last.type == pb.JOB_EVENT_TYPE_SUCCEEDED, describe(events)
    assert last.job.phase == pb.JOB_PHASE_SUCCEEDED
    assert all(e.job.job_id == job.job_id for e in events)
    middle = kinds(events[1:-1])
    assert set(middle) <= {"STARTED", "UPDATED"}, describe(events)
    if first.job.phase == pb.JOB_PHASE_PENDING:
        assert "STARTED" in middle, describe(events)
    assert all(e.resume_token for e in events)
    assert all(e.time.seconds > 0 for e in events)
    assert [seq(e.resume_token) for e in events] == sorted(seq(e.resume_token) for e in events)
    assert [r["status"] for r in receiver.reports] == ["completed"]

    # On a finished job: its state, once, then the end.
    with stream(svc.stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), timeout=STREAM_DEADLINE)) as s:
        again = s.rest(timeout=5)
        assert s.error is None, s.error
    assert len(again) == 1, describe(again)
    assert again[0].type == pb.JOB_EVENT_TYPE_CREATED
    assert again[0].job.phase == pb.JOB_PHASE_SUCCEEDED


def test_watch_job_unknown_and_malformed_ids(local: Callable[..., ServiceThread]) -> None:
    svc = local()
    err = stream_error(
        svc.stub.WatchJob(pb.WatchJobRequest(job_id="job-doesnotexi"), timeout=STREAM_DEADLINE)
    )
    assert err.code() is grpc.StatusCode.NOT_FOUND
    err = stream_error(svc.stub.WatchJob(pb.WatchJobRequest(job_id="Not/An/Id"), timeout=STREAM_DEADLINE))
    assert_invalid(err, "job_id")
    err = stream_error(svc.stub.WatchJob(pb.WatchJobRequest(), timeout=STREAM_DEADLINE))
    assert_invalid(err, "job_id")


def test_watch_job_sees_cancellation_and_ends(
    local: Callable[..., ServiceThread], receiver: Receiver
) -> None:
    svc = local()
    job = schedule(svc.stub, timer(receiver.url, duration=60))
    wait_phase(svc.stub, job.job_id, pb.JOB_PHASE_RUNNING, timeout=5)
    with stream(svc.stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), timeout=STREAM_DEADLINE)) as s:
        [first] = s.take(1)
        assert first.type == pb.JOB_EVENT_TYPE_CREATED
        assert first.job.phase == pb.JOB_PHASE_RUNNING
        svc.stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id, reason="enough"), timeout=T)
        rest = s.rest(timeout=10)
        assert s.error is None, s.error
    assert rest, "no event after the cancellation"
    assert rest[-1].type == pb.JOB_EVENT_TYPE_CANCELLED, describe(rest)
    assert rest[-1].job.phase == pb.JOB_PHASE_CANCELLED
    assert "enough" in rest[-1].job.message
    assert set(kinds(rest[:-1])) <= {"UPDATED"}, describe(rest)


def test_watch_job_ends_with_deleted_when_the_kubernetes_job_is_deleted(
    k8s: Callable[..., ServiceThread], emulator: EmulatorThread
) -> None:
    svc = k8s()
    job_id = schedule(svc.stub, timer("http://127.0.0.1:9/")).job_id
    with stream(svc.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=STREAM_DEADLINE)) as s:
        [first] = s.take(1)
        assert (first.type, first.job.phase) == (pb.JOB_EVENT_TYPE_CREATED, pb.JOB_PHASE_PENDING)
        emulator.patch_job(job_id, {"status": running_status()})
        [started] = s.take(1)
        assert (started.type, started.job.phase) == (pb.JOB_EVENT_TYPE_STARTED, pb.JOB_PHASE_RUNNING)
        delete_job(emulator, job_id)
        rest = s.rest(timeout=10)
        assert s.error is None, s.error
    assert kinds(rest) == ["DELETED"], describe(rest)
    assert rest[0].job.job_id == job_id


# --- 4. WatchJobs ------------------------------------------------------------------------------------


def test_watch_jobs_filtered_lifecycle_events_on_the_local_backend(
    local: Callable[..., ServiceThread], receiver: Receiver
) -> None:
    svc = local(default_backoff_limit=1)
    team_a = pb.JobFilter(label_selector="team=a")
    with watching(svc, pb.WatchJobsRequest(filter=team_a)) as s:
        ok = schedule(svc.stub, timer(receiver.url, name="ok", duration=1, labels={"team": "a"})).job_id
        other = schedule(svc.stub, timer(receiver.url, name="other", duration=1, labels={"team": "b"})).job_id
        bad = schedule(
            svc.stub,
            timer(
                closed_port_url(),
                name="bad",
                duration=1,
                labels={"team": "a"},
                REPORT_MAX_ATTEMPTS="1",
                REPORT_BACKOFF_SECONDS="0.05",
            ),
        ).job_id
        long = schedule(svc.stub, timer(receiver.url, name="long", duration=60, labels={"team": "a"})).job_id
        wait_phase(svc.stub, long, pb.JOB_PHASE_RUNNING, timeout=5)
        svc.stub.CancelJob(pb.CancelJobRequest(job_id=long), timeout=T)

        def done(events: list[pb.JobEvent]) -> bool:
            seen = {(e.job.job_id, e.type) for e in events}
            return {
                (ok, pb.JOB_EVENT_TYPE_SUCCEEDED),
                (bad, pb.JOB_EVENT_TYPE_FAILED),
                (long, pb.JOB_EVENT_TYPE_CANCELLED),
            } <= seen

        events = s.until(done, timeout=25)
        wait_phase(svc.stub, other, *TERMINAL)
        # Whatever else arrives must still be about team a's jobs.
        events += drain(s, 0.3)
    assert {e.job.job_id for e in events} == {ok, bad, long}, describe(events)
    assert all(e.job.labels["team"] == "a" for e in events)
    for job_id, end in ((ok, "SUCCEEDED"), (bad, "FAILED"), (long, "CANCELLED")):
        ks = kinds(events, job_id)
        assert ks[0] == "CREATED", (job_id, ks)
        assert "STARTED" in ks, (job_id, ks)
        assert ks.count("CREATED") == 1 and ks.count("STARTED") == 1, (job_id, ks)
        assert set(ks[ks.index("STARTED") + 1 : ks.index(end)]) <= {"UPDATED"}, (job_id, ks)
    # The failing job ran twice (backoff limit 1): the retry is an UPDATED while RUNNING, not a STARTED.
    failed = next(e for e in events if e.job.job_id == bad and e.type == pb.JOB_EVENT_TYPE_FAILED)
    assert failed.job.attempts == 2 and failed.job.reason == "BackoffLimitExceeded"
    tokens = [e.resume_token for e in events]
    assert all(tokens) and len(set(tokens)) == len(tokens)
    assert [seq(t) for t in tokens] == sorted(seq(t) for t in tokens)
    assert len({t.partition(".")[0] for t in tokens}) == 1


def test_watch_jobs_reports_a_job_leaving_its_filter(
    local: Callable[..., ServiceThread], receiver: Receiver
) -> None:
    """A watch of RUNNING jobs is told when one stops running (its last event of that job, with
    a record that no longer matches), and hears nothing of it afterwards."""
    svc = local()
    running = pb.JobFilter(phases=[pb.JOB_PHASE_RUNNING])
    with watching(svc, pb.WatchJobsRequest(filter=running)) as s:
        job_id = schedule(svc.stub, timer(receiver.url, name="leaves", duration=1)).job_id
        events = s.until(
            lambda es: any(e.job.job_id == job_id and e.type == pb.JOB_EVENT_TYPE_SUCCEEDED for e in es),
            timeout=15,
        )
        events += drain(s, 0.3)
    ks = kinds(events, job_id)
    assert ks[0] == "STARTED" and ks[-1] == "SUCCEEDED", ks
    assert all(e.job.phase == pb.JOB_PHASE_RUNNING for e in events[:-1]), describe(events)
    assert events[-1].job.phase == pb.JOB_PHASE_SUCCEEDED


def test_watch_jobs_reports_deletion_on_kubernetes(
    k8s: Callable[..., ServiceThread], emulator: EmulatorThread
) -> None:
    svc = k8s()
    with watching(svc) as s:
        job_id = schedule(svc.stub, timer("http://127.0.0.1:9/", labels={"team": "a"})).job_id
        [created] = s.take(1)
        assert (created.type, created.job.job_id) == (pb.JOB_EVENT_TYPE_CREATED, job_id)
        emulator.patch_job(job_id, {"status": succeeded_status()})
        [done] = s.take(1)
        assert (done.type, done.job.phase) == (pb.JOB_EVENT_TYPE_SUCCEEDED, pb.JOB_PHASE_SUCCEEDED)
        delete_job(emulator, job_id)
        [deleted] = s.take(1)
        assert deleted.type == pb.JOB_EVENT_TYPE_DELETED
        assert deleted.job.job_id == job_id and deleted.job.labels["team"] == "a"
        assert seq(created.resume_token) < seq(done.resume_token) < seq(deleted.resume_token)
    with pytest.raises(grpc.RpcError) as err:
        get(svc.stub, job_id)
    assert err.value.code() is grpc.StatusCode.NOT_FOUND


def test_resume_replays_exactly_the_events_after_the_token(
    k8s: Callable[..., ServiceThread], emulator: EmulatorThread
) -> None:
    svc = k8s()
    url = "http://127.0.0.1:9/"
    with watching(svc) as live:
        a = schedule(svc.stub, timer(url, name="a", labels={"team": "a"})).job_id
        b = schedule(svc.stub, timer(url, name="b", labels={"team": "b"})).job_id
        emulator.patch_job(a, {"status": running_status()})
        c = schedule(svc.stub, timer(url, name="c", labels={"team": "a"})).job_id
        emulator.patch_job(b, {"status": failed_status()})
        emulator.patch_job(a, {"status": succeeded_status()})
        events = live.take(6)

        def key(e: pb.JobEvent) -> tuple[Any, ...]:
            return (e.type, e.job.job_id, e.resume_token, e.job.phase)

        assert [(e.type, e.job.job_id) for e in events] == [
            (pb.JOB_EVENT_TYPE_CREATED, a),
            (pb.JOB_EVENT_TYPE_CREATED, b),
            (pb.JOB_EVENT_TYPE_STARTED, a),
            (pb.JOB_EVENT_TYPE_CREATED, c),
            (pb.JOB_EVENT_TYPE_FAILED, b),
            (pb.JOB_EVENT_TYPE_SUCCEEDED, a),
        ], describe(events)
        live.quiet(0.3)

        for k in range(len(events)):
            request = pb.WatchJobsRequest(resume_token=events[k].resume_token)
            with stream(svc.stub.WatchJobs(request, timeout=STREAM_DEADLINE)) as resumed:
                replayed = resumed.take(len(events) - k - 1)
                assert [key(e) for e in replayed] == [key(e) for e in events[k + 1 :]], k
                resumed.quiet(0.1)  # no duplicates after the replay

        # Resuming with a filter replays only the matching events after the token.
        wait_until(lambda: svc.index.subscriptions == 1, 5, "the resumed streams to end")
        request = pb.WatchJobsRequest(
            filter=pb.JobFilter(label_selector="team=a"), resume_token=events[0].resume_token
        )
        with watching(svc, request) as resumed:
            replayed = resumed.take(3)
            assert [key(e) for e in replayed] == [key(events[i]) for i in (2, 3, 5)]
            resumed.quiet(0.1)
            # ... and then goes on live, without a gap.
            d = schedule(svc.stub, timer(url, name="d", labels={"team": "a"})).job_id
            [next_event] = resumed.take(1)
            assert (next_event.type, next_event.job.job_id) == (pb.JOB_EVENT_TYPE_CREATED, d)
            [live_event] = live.take(1)
            assert key(live_event) == key(next_event)
            assert seq(next_event.resume_token) == seq(events[-1].resume_token) + 1


def test_resume_tokens_from_elsewhere_or_malformed(
    k8s: Callable[..., ServiceThread], emulator: EmulatorThread
) -> None:
    first = k8s()
    second = k8s()  # another instance on the same cluster: another epoch
    with watching(first) as s:
        schedule(first.stub, timer("http://127.0.0.1:9/"))
        [event] = s.take(1)
    token = event.resume_token
    epoch, _, number = token.partition(".")

    def error(svc: ServiceThread, resume_token: str) -> grpc.RpcError:
        request = pb.WatchJobsRequest(resume_token=resume_token)
        return stream_error(svc.stub.WatchJobs(request, timeout=STREAM_DEADLINE))

    wait_until(lambda: second.stub.ListJobs(pb.ListJobsRequest(), timeout=T).jobs, 5, "the second to sync")
    for svc, bad in (
        (second, token),  # another instance's token
        (first, f"{'0' * len(epoch)}.{number}"),  # an earlier run's epoch
        (first, f"{epoch}.{int(number) + 100}"),  # a position this instance never reached
    ):
        err = error(svc, bad)
        assert err.code() is grpc.StatusCode.OUT_OF_RANGE, (bad, err.code(), err.details())
    for bad in ("garbage", f"{epoch}.", f"{epoch}.x1", ".1", f"{epoch}.-1", f"{epoch}"):
        assert_invalid(error(first, bad), "resume_token")
    # The token still works where it came from.
    with stream(first.stub.WatchJobs(pb.WatchJobsRequest(resume_token=token), timeout=STREAM_DEADLINE)) as s:
        s.quiet(0.2)


def test_token_older_than_the_retained_window_is_out_of_range(
    k8s: Callable[..., ServiceThread], emulator: EmulatorThread
) -> None:
    svc = k8s(watch_max_events=100)
    with watching(svc) as s:
        job_id = schedule(svc.stub, timer("http://127.0.0.1:9/")).job_id
        [oldest] = s.take(1)
        for i in range(1, 106):  # 105 more changes: each a new failed-pod count, an UPDATED event
            emulator.patch_job(job_id, {"status": {"failed": i}})
            if i % 25 == 0:
                emulator.trim_log()
        events = s.until(lambda evs: bool(evs) and evs[-1].job.failed == 105, timeout=20)
    assert len(events) == 105, describe(events[:3])
    assert all(e.type == pb.JOB_EVENT_TYPE_UPDATED for e in events)

    err = stream_error(svc.stub.WatchJobs(pb.WatchJobsRequest(resume_token=oldest.resume_token), timeout=20))
    assert err.code() is grpc.StatusCode.OUT_OF_RANGE, err
    assert "list" in err.details()
    # The newest 100 are retained: resuming after the 5th-oldest event replays the last 100.
    recent = events[4]
    with stream(svc.stub.WatchJobs(pb.WatchJobsRequest(resume_token=recent.resume_token), timeout=20)) as s:
        replayed = s.take(100)
        assert [e.resume_token for e in replayed] == [e.resume_token for e in events[5:]]
        s.quiet(0.1)
    err = stream_error(
        svc.stub.WatchJobs(pb.WatchJobsRequest(resume_token=events[2].resume_token), timeout=20)
    )
    assert err.code() is grpc.StatusCode.OUT_OF_RANGE


def test_resume_token_with_non_ascii_digits_is_invalid_argument(k8s: Callable[..., ServiceThread]) -> None:
    """A superscript two passes str.isdigit() but not int(): INVALID_ARGUMENT, never INTERNAL."""
    svc = k8s()
    with watching(svc) as s:
        schedule(svc.stub, timer("http://127.0.0.1:9/"))
        [event] = s.take(1)
    epoch = event.resume_token.partition(".")[0]
    for bad in (f"{epoch}.\u00b2", f"{epoch}.1\u00b2"):
        err = stream_error(svc.stub.WatchJobs(pb.WatchJobsRequest(resume_token=bad), timeout=STREAM_DEADLINE))
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, (bad, err.code(), err.details())
        assert "resume_token" in bad_fields(err)


# --- 5. slow consumers ---------------------------------------------------------------------------

#: A label key with a long DNS prefix, and a long value: ~12 KB of labels per job, so that a few
#: events fill the HTTP/2 window of a stream nobody reads.
_PREFIX = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
BULKY = {f"{_PREFIX}/k{i:02d}{'x' * 59}": "v" * 63 for i in range(32)}


def slow_channel(svc: ServiceThread) -> grpc.Channel:
    """A connection of its own with a fixed 64 KiB receive window (no BDP probing, which would let
    the client's transport buffer megabytes for a stream nobody reads)."""
    return grpc.insecure_channel(
        f"127.0.0.1:{svc.port}",
        options=[("grpc.http2.bdp_probe", 0), ("grpc.use_local_subchannel_pool", 1)],
    )


def fall_behind(svc: ServiceThread, n: int = 30) -> tuple[Any, grpc.Channel, list[str], Stream]:
    """Open a WatchJobs stream that is not read (and a second one that keeps up), then schedule
    ``n`` bulky jobs; returns the unread call, its channel, the job ids and the keeping-up stream."""
    channel = slow_channel(svc)
    stalled = pb_grpc.JobSchedulerStub(channel).WatchJobs(pb.WatchJobsRequest(), timeout=STREAM_DEADLINE)
    keeping_up = Stream(svc.stub.WatchJobs(pb.WatchJobsRequest(), timeout=STREAM_DEADLINE))
    wait_until(lambda: svc.index.subscriptions == 2, 5, "both streams to subscribe")
    ids = []
    for i in range(n):
        ids.append(schedule(svc.stub, timer("http://127.0.0.1:9/", name=f"bulky-{i}", labels=BULKY)).job_id)
        keeping_up_events = keeping_up.take(1)
        assert keeping_up_events[0].job.job_id == ids[-1]
    return stalled, channel, ids, keeping_up


def read_until_error(call: Any, limit: int) -> tuple[list[pb.JobEvent], grpc.RpcError | None]:
    """Iterate a call (it has a deadline) until it fails, ends, or ``limit`` items arrived."""
    got: list[pb.JobEvent] = []
    try:
        for event in call:
            got.append(event)
            if len(got) >= limit:
                break
    except grpc.RpcError as exc:
        return got, exc
    return got, None


def test_a_stream_that_falls_behind_ends_with_out_of_range_and_a_resume_token(
    k8s: Callable[..., ServiceThread],
) -> None:
    svc = k8s(stream_buffer=5)
    stalled, channel, ids, keeping_up = fall_behind(svc)
    try:
        got, err = read_until_error(stalled, len(ids))
        assert err is not None, f"the stalled stream delivered {len(got)} events without failing"
        assert err.code() is grpc.StatusCode.OUT_OF_RANGE, (err.code(), err.details())
        assert "resume_token" in err.details()
        assert len(got) < len(ids)
        assert [e.job.job_id for e in got] == ids[: len(got)]  # what it did get is in order, no gap
        assert got, "not even the first event arrived"
        token = err.details().split("resume_token")[1].strip().strip("'\" ")
        assert token == got[-1].resume_token  # resume right after the last event delivered
        # The stream that kept up is unaffected, and the server goes on serving.
        keeping_up.quiet(0.2)
        extra = schedule(svc.stub, timer("http://127.0.0.1:9/", name="after")).job_id
        [event] = keeping_up.take(1)
        assert (event.type, event.job.job_id) == (pb.JOB_EVENT_TYPE_CREATED, extra)
        assert svc.stub.ListJobs(pb.ListJobsRequest(page_size=1000), timeout=T).jobs
        wait_until(lambda: svc.index.subscriptions == 1, 5, "the ended stream to unsubscribe")
    finally:
        stalled.cancel()
        keeping_up.close()
        channel.close()


def test_resume_after_falling_behind_catches_up(k8s: Callable[..., ServiceThread]) -> None:
    """The OUT_OF_RANGE message says to resume with a token; doing so (and reading promptly)
    must deliver the missed events, however many there are (they are within the retained window)."""
    svc = k8s(stream_buffer=5)
    stalled, channel, ids, keeping_up = fall_behind(svc)
    try:
        got, err = read_until_error(stalled, len(ids))
        assert err is not None and err.code() is grpc.StatusCode.OUT_OF_RANGE
        token = err.details().split("resume_token")[1].strip().strip("'\" ")
        with stream(
            svc.stub.WatchJobs(pb.WatchJobsRequest(resume_token=token), timeout=STREAM_DEADLINE)
        ) as s:
            missed = len(ids) - len(got)
            item = s.next(5)
            assert item is not None, (
                f"resuming {missed} events behind ended at once: {s.error and s.error.code()}"
                f" {s.error and s.error.details()}"
            )
            rest = s.take(missed - 1)
        assert [e.job.job_id for e in [item, *rest]] == ids[len(got) :]
    finally:
        stalled.cancel()
        keeping_up.close()
        channel.close()


# --- 6. GetJobLogs (local backend) ---------------------------------------------------------------


def logs(stub: pb_grpc.JobSchedulerStub, timeout: float = 15, **request: Any) -> list[pb.LogLine]:
    with stream(stub.GetJobLogs(pb.GetJobLogsRequest(**request), timeout=STREAM_DEADLINE)) as s:
        lines = s.rest(timeout)
        if s.error is not None:
            raise s.error
    return lines


def test_logs_of_a_finished_timer_tail_and_attempts(
    local: Callable[..., ServiceThread], receiver: Receiver
) -> None:
    svc = local()
    job_id = schedule(svc.stub, timer(receiver.url, duration=1)).job_id
    wait_phase(svc.stub, job_id, pb.JOB_PHASE_SUCCEEDED)
    log_file = svc.settings.data_path / "jobs" / job_id / "attempt-1.log"
    expected = log_file.read_text().splitlines()
    assert len(expected) >= 3

    lines = logs(svc.stub, job_id=job_id)
    assert [ln.line for ln in lines] == expected
    assert {(ln.attempt, ln.pod_name) for ln in lines} == {(1, f"{job_id}-1")}
    events = [json.loads(ln.line)["event"] for ln in lines]
    assert events[0] == "timer started" and "timer completed" in events
    assert events[-1] == "timer completion reported"

    assert [ln.line for ln in logs(svc.stub, job_id=job_id, attempt=1)] == expected
    [last] = logs(svc.stub, job_id=job_id, tail_lines=1)
    assert (last.line, last.attempt, last.pod_name) == (expected[-1], 1, f"{job_id}-1")
    assert [ln.line for ln in logs(svc.stub, job_id=job_id, tail_lines=2)] == expected[-2:]
    assert [ln.line for ln in logs(svc.stub, job_id=job_id, tail_lines=1000)] == expected
    # follow on a finished attempt: everything, then the end.
    assert [ln.line for ln in logs(svc.stub, job_id=job_id, follow=True, timeout=5)] == expected

    for bad, field in (
        ({"attempt": 2}, "attempt"),
        ({"attempt": -1}, "attempt"),
        ({"tail_lines": -1}, "tail_lines"),
        ({"tail_lines": 100_001}, "tail_lines"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            logs(svc.stub, job_id=job_id, **bad)
        assert_invalid(err.value, field)
    with pytest.raises(grpc.RpcError) as err:
        logs(svc.stub, job_id="job-doesnotexi")
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        logs(svc.stub, job_id="")
    assert_invalid(err.value, "job_id")


def test_logs_choose_the_attempt_of_a_retried_job(local: Callable[..., ServiceThread]) -> None:
    svc = local(default_backoff_limit=1)
    request = timer(closed_port_url(), duration=1, REPORT_MAX_ATTEMPTS="1", REPORT_BACKOFF_SECONDS="0.05")
    job_id = schedule(svc.stub, request).job_id
    job = wait_phase(svc.stub, job_id, pb.JOB_PHASE_FAILED, timeout=20)
    assert list(job.pod_names) == [f"{job_id}-1", f"{job_id}-2"]
    workdir = svc.settings.data_path / "jobs" / job_id
    for attempt, expected_attempt in ((1, 1), (2, 2), (0, 2)):
        lines = logs(svc.stub, job_id=job_id, attempt=attempt)
        expected = (workdir / f"attempt-{expected_attempt}.log").read_text().splitlines()
        assert [ln.line for ln in lines] == expected
        assert {(ln.attempt, ln.pod_name) for ln in lines} == {
            (expected_attempt, f"{job_id}-{expected_attempt}")
        }
    with pytest.raises(grpc.RpcError) as err:
        logs(svc.stub, job_id=job_id, attempt=3)
    assert_invalid(err.value, "attempt")


def test_follow_streams_lines_as_written_and_queued_jobs_have_no_logs(
    local: Callable[..., ServiceThread], receiver: Receiver
) -> None:
    svc = local(local_max_parallel=1)
    running = schedule(svc.stub, timer(receiver.url, name="running", duration=3)).job_id
    queued = schedule(svc.stub, timer(receiver.url, name="queued", duration=1)).job_id
    assert get(svc.stub, queued).phase == pb.JOB_PHASE_PENDING
    for follow in (False, True):
        with pytest.raises(grpc.RpcError) as err:
            logs(svc.stub, job_id=queued, follow=follow)
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION, err.value
    wait_phase(svc.stub, running, pb.JOB_PHASE_RUNNING, timeout=5)

    arrivals: list[tuple[float, pb.LogLine]] = []
    request = pb.GetJobLogsRequest(job_id=running, follow=True)
    with stream(svc.stub.GetJobLogs(request, timeout=STREAM_DEADLINE)) as s:
        first = s.next(10)
        assert first is not None, s.error
        arrivals.append((time.monotonic(), first))
        # The first line came while the job was still running.
        assert get(svc.stub, running).phase == pb.JOB_PHASE_RUNNING
        assert receiver.reports == []
        deadline = time.monotonic() + 15
        while (line := s.next(max(0.01, deadline - time.monotonic()))) is not None:
            arrivals.append((time.monotonic(), line))
        assert s.error is None, s.error
    ended = time.monotonic()
    expected = (svc.settings.data_path / "jobs" / running / "attempt-1.log").read_text().splitlines()
    assert [ln.line for _, ln in arrivals] == expected
    assert {(ln.attempt, ln.pod_name) for _, ln in arrivals} == {(1, f"{running}-1")}
    events = [json.loads(ln.line)["event"] for _, ln in arrivals]
    assert events[0] == "timer started" and events[-1] == "timer completion reported"
    assert events.count("timer progress") >= 1
    # Lines arrived over the timer's run, not all at the end.
    completed_at = next(t for t, ln in arrivals if json.loads(ln.line)["event"] == "timer completed")
    assert completed_at - arrivals[0][0] >= 2.0, [
        (round(t - arrivals[0][0], 2), e) for (t, _), e in zip(arrivals, events, strict=True)
    ]
    # The stream ended because the attempt did, soon after its last line.
    assert [r["status"] for r in receiver.reports] == ["completed"]
    assert ended - arrivals[-1][0] < 2
    # Now the queued job runs, and has logs.
    wait_phase(svc.stub, queued, pb.JOB_PHASE_SUCCEEDED)
    assert logs(svc.stub, job_id=queued)


def test_list_then_watch_from_its_resume_token_misses_nothing(
    k8s: Callable[..., ServiceThread], emulator: EmulatorThread
) -> None:
    """ListJobs says where it stands; WatchJobs from there gets every later change, none before."""
    svc = k8s()
    before = schedule(svc.stub, timer("http://127.0.0.1:9/")).job_id
    listing = svc.stub.ListJobs(pb.ListJobsRequest(), timeout=T)
    assert listing.resume_token and [j.job_id for j in listing.jobs] == [before]
    after = schedule(svc.stub, timer("http://127.0.0.1:9/")).job_id
    emulator.patch_job(before, {"status": succeeded_status()})
    wait_phase(svc.stub, before, pb.JOB_PHASE_SUCCEEDED)
    request = pb.WatchJobsRequest(resume_token=listing.resume_token)
    with stream(svc.stub.WatchJobs(request, timeout=STREAM_DEADLINE)) as s:
        events = s.take(2)
        assert [(e.type, e.job.job_id) for e in events] == [
            (pb.JOB_EVENT_TYPE_CREATED, after),
            (pb.JOB_EVENT_TYPE_SUCCEEDED, before),
        ]
        s.quiet(0.3)
