"""The local backend (no cluster: jobs run as local processes), through the public gRPC surface.

Jobs are real ``jobscheduler timer`` processes reporting to a tiny HTTP receiver on 127.0.0.1.
In-process servers come from ``local_service``; restart, backend choice and shutdown use
``jobscheduler serve`` subprocesses (``ServeProcess``). A job's processes are found by the
``JOBSCHEDULER_JOB_ID`` variable every local job process carries (``/proc/<pid>/environ``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import secrets
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import grpc
import pytest
from conftest import ServeProcess, ServiceThread, local_service

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc
from jobscheduler.backends.local._controller import match_pod_failure_policy

pytestmark = pytest.mark.timeout(60)

T = 10  # every RPC is bounded by this timeout (seconds)
MARKER = "JOBSCHEDULER_JOB_ID"
PATH = "/internal/timers/report"
TERMINAL = (pb.JOB_PHASE_SUCCEEDED, pb.JOB_PHASE_FAILED, pb.JOB_PHASE_CANCELLED)
#: Settings that would leak into ``jobscheduler serve`` subprocesses from the test's own environment.
INTERFERING = (
    "KUBECONFIG",
    "BACKEND",
    "DATA_DIR",
    "IN_CLUSTER",
    "LOCAL_MAX_PARALLEL",
    "LOCAL_KILL_GRACE_SECONDS",
    "LOCAL_BACKOFF_SECONDS",
    "DEADLINE_GRACE_SECONDS",
    "DEFAULT_BACKOFF_LIMIT",
    "XDG_DATA_HOME",
)

R = TypeVar("R")


# --- helpers -------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """Records the JSON bodies POSTed to it and answers 200."""

    server: ThreadingHTTPServer
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}{PATH}"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r["body"] for r in self.requests]

    def bodies_for(self, job_id: str) -> list[dict[str, Any]]:
        return [b for b in self.bodies if b.get("job_id") == job_id]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver.lock:
                receiver.requests.append({"path": self.path, "body": json.loads(raw)})
            payload = b'{"ok":true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    recv = Receiver(server=server)
    server.RequestHandlerClass = _handler(recv)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield recv
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port_url() -> str:
    """A URL on a 127.0.0.1 port that was just bound and released, so nothing listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{PATH}"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A listening port that never accepts: connections complete (backlog) but no answer ever comes."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}{PATH}"


def timer_request(
    endpoint: str, *, name: str = "local-timer", duration: int = 1, timer_name: str = "Tea", **env: str
) -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(
        name=name,
        timer_job=pb.TimerJob(
            duration_seconds=duration, timer_name=timer_name, control_plane_endpoint=endpoint, env=env
        ),
    )


def schedule(stub: pb_grpc.JobSchedulerStub, request: pb.ScheduleJobRequest) -> pb.Job:
    job: pb.Job = stub.ScheduleJob(request, timeout=T).job
    return job


def get(stub: pb_grpc.JobSchedulerStub, job_id: str) -> pb.Job:
    job: pb.Job = stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=T).job
    return job


def wait_until(check: Callable[[], R | None], timeout: float, what: str, interval: float = 0.05) -> R:
    """Poll ``check`` until it returns something truthy, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_phase(
    stub: pb_grpc.JobSchedulerStub,
    job_id: str,
    *phases: pb.JobPhase.ValueType,
    timeout: float = 15,
    seen: list[pb.Job] | None = None,
) -> pb.Job:
    last: list[pb.Job] = []

    def check() -> pb.Job | None:
        job = get(stub, job_id)
        last[:] = [job]
        if seen is not None:
            seen.append(job)
        return job if job.phase in phases else None

    try:
        return wait_until(check, timeout, f"{job_id} in {[pb.JobPhase.Name(p) for p in phases]}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last state: {last}") from None


def job_pids(job_id: str) -> list[int]:
    """Live processes (zombies have no environ) carrying ``JOBSCHEDULER_JOB_ID=<job_id>``."""
    marker = f"{MARKER}={job_id}".encode()
    pids = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def pid_gone(pid: int) -> bool:
    """No such process, or only a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        status = pathlib.Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    state = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("State:")), "?")
    return state in ("Z", "X")


def all_gone(pids: list[int], job_id: str) -> bool:
    return all(pid_gone(p) for p in pids) and not job_pids(job_id)


def ts(value: Any) -> datetime:
    dt: datetime = value.ToDatetime()
    return dt


def attempts(data_dir: pathlib.Path, job_id: str) -> list[sqlite3.Row]:
    """The backend's attempt rows (its durable SQLite state), read through a connection of our own."""
    db = sqlite3.connect(data_dir / "jobscheduler.db", timeout=5)
    try:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM attempts WHERE job_id = ? ORDER BY number", (job_id,)).fetchall()
    finally:
        db.close()


@pytest.fixture
def reaper(tmp_path: pathlib.Path) -> Iterator[None]:
    """Safety net: SIGKILL any job process of this test (its HOME is under tmp_path) left behind."""
    yield
    prefix = f"HOME={tmp_path}".encode()
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(v.startswith(MARKER.encode()) for v in env) and any(v.startswith(prefix) for v in env):
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)


@pytest.fixture
def start_local(tmp_path: pathlib.Path, reaper: None) -> Iterator[Callable[..., ServiceThread]]:
    services: list[ServiceThread] = []

    def start(**settings: Any) -> ServiceThread:
        options: dict[str, Any] = {"local_backoff_seconds": 0.1, "local_kill_grace_seconds": 2}
        options.update(settings)
        svc = local_service(tmp_path / "data", **options)
        services.append(svc)
        return svc

    yield start
    for svc in services:
        svc.stop()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ServeProcess`` starts from os.environ: drop what would change the backend choice or its settings."""
    for name in INTERFERING:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def local_serve_env(data_dir: pathlib.Path, **extra: str) -> dict[str, str]:
    return {
        "BACKEND": "local",
        "DATA_DIR": str(data_dir),
        "GRPC_PORT": "0",
        "HEALTH_PORT": "0",
        "GRPC_HOST": "127.0.0.1",
        "READINESS_INTERVAL_SECONDS": "0.5",
        "LOCAL_KILL_GRACE_SECONDS": "2",
        **extra,
    }


@contextlib.contextmanager
def serve_process(env: dict[str, str]) -> Iterator[tuple[ServeProcess, pb_grpc.JobSchedulerStub]]:
    server = ServeProcess(env)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    try:
        yield server, pb_grpc.JobSchedulerStub(channel)
    finally:
        channel.close()
        if server.proc.poll() is None:
            server.stop()


def backend_chosen(server: ServeProcess) -> dict[str, Any]:
    [line] = [ln for ln in server.lines if ln.get("event") == "backend chosen"]
    return line


# --- 1. a job runs to completion ------------------------------------------------------------------


def test_timer_job_runs_to_success_and_reports(
    start_local: Callable[..., ServiceThread], receiver: Receiver, tmp_path: pathlib.Path
) -> None:
    svc = start_local()
    created = schedule(svc.stub, timer_request(receiver.url, name="tea-timer", timer_name="Earl Grey"))
    job_id = created.job_id
    assert created.phase in (pb.JOB_PHASE_PENDING, pb.JOB_PHASE_RUNNING)
    assert created.type == "timer"
    assert created.name == "tea-timer"

    job = wait_phase(svc.stub, job_id, *TERMINAL)

    assert job.phase == pb.JOB_PHASE_SUCCEEDED, job
    assert job.reason == "Completed"
    assert job.HasField("started_at")
    assert job.HasField("finished_at")
    assert ts(job.created_at) <= ts(job.started_at) < ts(job.finished_at)
    assert (job.succeeded, job.failed, job.active) == (1, 0, 0)
    [condition] = job.conditions
    assert (condition.type, condition.status) == ("Complete", "True")
    assert condition.HasField("last_transition_time")

    [body] = receiver.bodies
    assert body["status"] == "completed"
    assert body["timer_name"] == "Earl Grey"
    assert body["job_id"] == job_id
    assert body["duration_seconds"] == 1

    log_file = tmp_path / "data" / "jobs" / job_id / "attempt-1.log"
    assert log_file.is_file()
    lines = [json.loads(ln) for ln in log_file.read_text().splitlines() if ln.strip()]
    assert all(ln["logger"] == "jobscheduler.timer" for ln in lines)
    events = [ln["event"] for ln in lines]
    assert events[0] == "timer started"
    assert lines[0]["job_id"] == job_id
    assert "timer completed" in events
    assert events[-1] == "timer completion reported"
    assert not (tmp_path / "data" / "jobs" / job_id / "attempt-2.log").exists()


# --- 2. retries up to the backoff limit -----------------------------------------------------------


def test_failing_command_is_retried_up_to_the_backoff_limit(
    start_local: Callable[..., ServiceThread], closed_port_url: str, tmp_path: pathlib.Path
) -> None:
    svc = start_local(default_backoff_limit=2, local_backoff_seconds=0.3)
    job_id = schedule(
        svc.stub,
        timer_request(closed_port_url, REPORT_MAX_ATTEMPTS="1", REPORT_BACKOFF_SECONDS="0.05"),
    ).job_id

    seen: list[pb.Job] = []
    job = wait_phase(svc.stub, job_id, *TERMINAL, timeout=25, seen=seen)

    assert job.phase == pb.JOB_PHASE_FAILED, job
    assert job.reason == "BackoffLimitExceeded"
    assert job.backoff_limit == 2
    assert (job.failed, job.succeeded, job.active) == (3, 0, 0)
    assert "exited with code 3" in job.message
    assert "backoff limit (2)" in job.message
    [condition] = job.conditions
    assert (condition.type, condition.status, condition.reason) == ("Failed", "True", "BackoffLimitExceeded")
    # Between attempts the job stays RUNNING and says why and when it retries.
    assert any("retrying in" in j.message for j in seen if j.phase == pb.JOB_PHASE_RUNNING), [
        j.message for j in seen
    ]

    workdir = tmp_path / "data" / "jobs" / job_id
    assert sorted(p.name for p in workdir.glob("attempt-*.log")) == [
        "attempt-1.log",
        "attempt-2.log",
        "attempt-3.log",
    ]
    for n in (1, 2, 3):
        text = (workdir / f"attempt-{n}.log").read_text()
        assert "could not be delivered" in text, text

    rows = attempts(tmp_path / "data", job_id)
    assert [r["number"] for r in rows] == [1, 2, 3]
    assert [r["exit_code"] for r in rows] == [3, 3, 3]
    starts = [datetime.fromisoformat(r["started_at"]) for r in rows]
    ends = [datetime.fromisoformat(r["finished_at"]) for r in rows]
    # The idle time before a retry doubles: 0.3 s, then 0.6 s.
    idle = [(starts[i + 1] - ends[i]).total_seconds() for i in range(2)]
    assert 0.25 <= idle[0] < 2, idle
    assert 0.55 <= idle[1] < 3, idle
    assert idle[1] > idle[0] + 0.15, idle
    gaps = [(starts[i + 1] - starts[i]).total_seconds() for i in range(2)]
    assert gaps[1] > gaps[0], gaps


# --- 3. the deadline ------------------------------------------------------------------------------


def test_deadline_kills_a_job_that_runs_too_long(
    start_local: Callable[..., ServiceThread], silent_url: str
) -> None:
    svc = start_local(deadline_grace_seconds=1, local_kill_grace_seconds=1)
    began = time.monotonic()
    # duration 1 + grace 1 = activeDeadlineSeconds 2; the report then hangs on a server that never answers.
    job_id = schedule(svc.stub, timer_request(silent_url, REPORT_TIMEOUT_SECONDS="30")).job_id
    wait_phase(svc.stub, job_id, pb.JOB_PHASE_RUNNING, timeout=5)
    pids = wait_until(lambda: job_pids(job_id), 5, "the job's process")

    job = wait_phase(svc.stub, job_id, *TERMINAL, timeout=8)
    took = time.monotonic() - began

    assert job.phase == pb.JOB_PHASE_FAILED, job
    assert job.reason == "DeadlineExceeded"
    assert "deadline (2s)" in job.message
    assert 2 <= took < 6, took
    assert job.failed == 1
    assert job.active == 0
    wait_until(lambda: all_gone(pids, job_id), 3, f"the processes {pids} of {job_id} to be gone")


# --- 4. cancellation --------------------------------------------------------------------------------


def test_cancel_kills_the_process_group_and_the_timer_reports_cancellation(
    start_local: Callable[..., ServiceThread], receiver: Receiver
) -> None:
    svc = start_local()
    short_id = schedule(svc.stub, timer_request(receiver.url, name="short")).job_id
    long_id = schedule(svc.stub, timer_request(receiver.url, name="long", duration=60)).job_id
    wait_phase(svc.stub, long_id, pb.JOB_PHASE_RUNNING, timeout=5)
    pids = wait_until(lambda: job_pids(long_id), 5, "the job's process")
    # Signals are handled once the timer has logged its start; give it that moment.
    wait_until(
        lambda: (
            (pathlib.Path(svc.settings.data_path) / "jobs" / long_id / "attempt-1.log")
            .read_text()
            .count("timer started")
        ),
        5,
        "the timer to start",
    )

    cancelled = svc.stub.CancelJob(
        pb.CancelJobRequest(job_id=long_id, reason="changed my mind"), timeout=T
    ).job
    assert cancelled.phase == pb.JOB_PHASE_CANCELLED
    assert cancelled.reason == "Cancelled"
    assert cancelled.HasField("finished_at")
    assert get(svc.stub, long_id).phase == pb.JOB_PHASE_CANCELLED

    wait_until(lambda: all_gone(pids, long_id), 5, f"the processes {pids} of {long_id} to be gone")
    [report] = wait_until(lambda: receiver.bodies_for(long_id), 5, "the cancelled report")
    assert report["status"] == "cancelled"
    assert report["timer_name"] == "Tea"
    job = get(svc.stub, long_id)
    assert job.phase == pb.JOB_PHASE_CANCELLED
    assert "changed my mind" in job.message
    assert job.active == 0

    again = svc.stub.CancelJob(pb.CancelJobRequest(job_id=long_id), timeout=T).job
    assert again.phase == pb.JOB_PHASE_CANCELLED

    assert wait_phase(svc.stub, short_id, *TERMINAL).phase == pb.JOB_PHASE_SUCCEEDED
    with pytest.raises(grpc.RpcError) as info:
        svc.stub.CancelJob(pb.CancelJobRequest(job_id=short_id), timeout=T)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert get(svc.stub, short_id).phase == pb.JOB_PHASE_SUCCEEDED


def test_cancel_a_queued_job_never_starts_it(
    start_local: Callable[..., ServiceThread], receiver: Receiver, tmp_path: pathlib.Path
) -> None:
    svc = start_local(local_max_parallel=1)
    first = schedule(svc.stub, timer_request(receiver.url, name="first"))
    queued = schedule(svc.stub, timer_request(receiver.url, name="queued"))
    assert queued.phase == pb.JOB_PHASE_PENDING
    cancelled = svc.stub.CancelJob(pb.CancelJobRequest(job_id=queued.job_id), timeout=T).job
    assert cancelled.phase == pb.JOB_PHASE_CANCELLED

    assert wait_phase(svc.stub, first.job_id, *TERMINAL).phase == pb.JOB_PHASE_SUCCEEDED
    time.sleep(0.3)  # the freed slot must not go to the cancelled job
    job = get(svc.stub, queued.job_id)
    assert job.phase == pb.JOB_PHASE_CANCELLED
    assert not job.HasField("started_at")
    assert not (tmp_path / "data" / "jobs" / queued.job_id / "attempt-1.log").exists()
    assert receiver.bodies_for(queued.job_id) == []


# --- 5. the concurrency limit ----------------------------------------------------------------------


def test_concurrency_limit_and_fifo_order(
    start_local: Callable[..., ServiceThread], receiver: Receiver
) -> None:
    svc = start_local(local_max_parallel=2)
    created = [schedule(svc.stub, timer_request(receiver.url, name=f"t{i}")) for i in range(5)]
    ids = [j.job_id for j in created]
    for job in created[2:]:
        assert job.phase == pb.JOB_PHASE_PENDING
        assert "waiting for a free slot" in job.message, job.message

    most = 0
    waiting_messages: set[str] = set()
    deadline = time.monotonic() + 20
    while True:
        jobs = {j.job_id: j for j in svc.stub.ListJobs(pb.ListJobsRequest(), timeout=T).jobs}
        running = [j for j in jobs.values() if j.phase == pb.JOB_PHASE_RUNNING]
        assert len(running) <= 2, [(j.job_id, pb.JobPhase.Name(j.phase)) for j in jobs.values()]
        most = max(most, len(running))
        waiting_messages |= {j.message for j in jobs.values() if j.phase == pb.JOB_PHASE_PENDING}
        if all(jobs[i].phase in TERMINAL for i in ids):
            break
        assert time.monotonic() < deadline, "the 5 jobs did not finish within 20 s"
        time.sleep(0.05)

    assert most == 2
    assert all("waiting for a free slot" in m for m in waiting_messages), waiting_messages
    assert [jobs[i].phase for i in ids] == [pb.JOB_PHASE_SUCCEEDED] * 5
    by_start = sorted(ids, key=lambda i: ts(jobs[i].started_at))
    assert by_start == ids
    assert sorted(ids, key=lambda i: ts(jobs[i].created_at)) == ids
    # A queued job starts only once a slot is free: the third starts after the first finished.
    first_finish = min(ts(jobs[i].finished_at) for i in ids[:2])
    assert ts(jobs[ids[2]].started_at) >= first_finish
    assert sorted(b["job_id"] for b in receiver.bodies) == sorted(ids)


# --- 6. restart ---------------------------------------------------------------------------------------


def test_restart_keeps_history_fails_running_jobs_and_requeues_pending(
    clean_env: None, reaper: None, receiver: Receiver, tmp_path: pathlib.Path
) -> None:
    data = tmp_path / "data"
    env = local_serve_env(data, LOCAL_MAX_PARALLEL="1")
    with serve_process(env) as (server, stub):
        done_id = schedule(stub, timer_request(receiver.url, name="done")).job_id
        assert wait_phase(stub, done_id, *TERMINAL).phase == pb.JOB_PHASE_SUCCEEDED
        long_id = schedule(stub, timer_request(receiver.url, name="long", duration=60)).job_id
        wait_phase(stub, long_id, pb.JOB_PHASE_RUNNING, timeout=5)
        queued = schedule(stub, timer_request(receiver.url, name="queued"))
        assert queued.phase == pb.JOB_PHASE_PENDING
        orphans = wait_until(lambda: job_pids(long_id), 5, "the long job's process")

        server.proc.kill()
        server.proc.wait(10)

    # The job's process group survives the service (its own session), orphaned.
    time.sleep(0.2)
    assert not any(pid_gone(p) for p in orphans), orphans
    assert job_pids(long_id) == orphans

    with serve_process(env) as (_server, stub):
        long = get(stub, long_id)
        assert long.phase == pb.JOB_PHASE_FAILED, long
        assert long.reason == "ServiceRestarted"
        assert long.active == 0
        [condition] = long.conditions
        assert (condition.type, condition.reason) == ("Failed", "ServiceRestarted")
        wait_until(lambda: all_gone(orphans, long_id), 5, f"the orphans {orphans} to be gone")

        listed = {j.job_id: j for j in stub.ListJobs(pb.ListJobsRequest(), timeout=T).jobs}
        assert set(listed) == {done_id, long_id, queued.job_id}
        assert listed[done_id].phase == pb.JOB_PHASE_SUCCEEDED
        assert listed[done_id].reason == "Completed"

        # The job still queued when the service died runs now.
        requeued = wait_phase(stub, queued.job_id, *TERMINAL)
        assert requeued.phase == pb.JOB_PHASE_SUCCEEDED, requeued
        assert [b["status"] for b in receiver.bodies_for(queued.job_id)] == ["completed"]
    # The SIGKILLed timer never reported.
    assert receiver.bodies_for(long_id) == []


# --- 7. choosing the backend ---------------------------------------------------------------------------


def test_auto_without_kubernetes_config_chooses_local(clean_env: None, tmp_path: pathlib.Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "IN_CLUSTER": "false",
        "HOME": str(home),
        "DATA_DIR": str(tmp_path / "data"),
        "GRPC_PORT": "0",
        "HEALTH_PORT": "0",
        "GRPC_HOST": "127.0.0.1",
    }
    with serve_process(env) as (server, stub):
        chosen = backend_chosen(server)
        assert chosen["backend"] == "local"
        assert "kubeconfig" in chosen["why"]
        assert chosen["data_dir"] == str(tmp_path / "data")
        assert list(stub.ListJobs(pb.ListJobsRequest(), timeout=T).jobs) == []
        assert server.stop() == 0
    assert (tmp_path / "data" / "jobscheduler.db").is_file()


def test_auto_with_a_kubeconfig_chooses_kubernetes(
    clean_env: None, kubeconfig: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    env = {
        "IN_CLUSTER": "false",
        "KUBECONFIG": str(kubeconfig),
        "HOME": str(tmp_path),
        "DATA_DIR": str(tmp_path / "data"),
        "GRPC_PORT": "0",
        "HEALTH_PORT": "0",
        "GRPC_HOST": "127.0.0.1",
    }
    with serve_process(env) as (server, _stub):
        chosen = backend_chosen(server)
        assert chosen["backend"] == "kubernetes"
        assert chosen["why"]
    assert not (tmp_path / "data").exists()


def test_backend_local_wins_over_a_kubeconfig(
    clean_env: None, kubeconfig: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    env = local_serve_env(tmp_path / "data", KUBECONFIG=str(kubeconfig), IN_CLUSTER="false")
    with serve_process(env) as (server, _stub):
        chosen = backend_chosen(server)
        assert chosen["backend"] == "local"
        assert chosen["why"] == "BACKEND=local"


def test_data_dir_that_is_a_file_exits_2(clean_env: None, tmp_path: pathlib.Path) -> None:
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("not a directory")
    server = ServeProcess(local_serve_env(not_a_dir), wait=False)
    try:
        code = server.proc.wait(20)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(5)
    assert code == 2
    assert server.proc.stderr is not None
    stderr = server.proc.stderr.read()
    assert "DATA_DIR" in stderr, stderr
    assert "Traceback" not in stderr


# --- 8. graceful shutdown -------------------------------------------------------------------------------


def test_sigterm_stops_the_service_and_its_jobs(
    clean_env: None, reaper: None, receiver: Receiver, tmp_path: pathlib.Path
) -> None:
    env = local_serve_env(tmp_path / "data")
    with serve_process(env) as (server, stub):
        job_id = schedule(stub, timer_request(receiver.url, duration=60)).job_id
        wait_phase(stub, job_id, pb.JOB_PHASE_RUNNING, timeout=5)
        pids = wait_until(lambda: job_pids(job_id), 5, "the job's process")

        began = time.monotonic()
        assert server.stop(signal.SIGTERM) == 0
        assert time.monotonic() - began < 10
        assert any(ln.get("event") == "stopped" for ln in server.lines)
        assert all_gone(pids, job_id), (pids, job_pids(job_id))

    # Stopped with the service, the job is reported ServiceRestarted by the next run.
    with serve_process(env) as (_server, stub):
        job = get(stub, job_id)
        assert job.phase == pb.JOB_PHASE_FAILED, job
        assert job.reason == "ServiceRestarted"
        assert job.active == 0


def test_restart_reaps_a_cancelled_job_still_in_its_kill_grace(
    clean_env: None, reaper: None, silent_url: str, tmp_path: pathlib.Path
) -> None:
    """Cancel sends SIGTERM; a process that does not exit yet (here: blocked on a report that never gets an
    answer) is SIGKILLed after LOCAL_KILL_GRACE_SECONDS. If the service dies within that grace, the
    restarted service must still reap the process and close its attempt."""
    data = tmp_path / "data"
    env = local_serve_env(data, LOCAL_KILL_GRACE_SECONDS="30")
    with serve_process(env) as (server, stub):
        job_id = schedule(stub, timer_request(silent_url, REPORT_TIMEOUT_SECONDS="30")).job_id
        log_file = data / "jobs" / job_id / "attempt-1.log"
        wait_until(
            lambda: log_file.is_file() and "timer completed" in log_file.read_text(), 5, "the report to hang"
        )
        pids = job_pids(job_id)
        assert pids
        cancelled = stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=T).job
        assert cancelled.phase == pb.JOB_PHASE_CANCELLED
        time.sleep(0.3)
        assert not any(pid_gone(p) for p in pids), "the SIGTERMed timer exited at once; no grace to test"
        server.proc.kill()
        server.proc.wait(10)

    with serve_process(env) as (_server, stub):
        job = get(stub, job_id)
        assert job.phase == pb.JOB_PHASE_CANCELLED
        wait_until(lambda: all_gone(pids, job_id), 5, f"the leftover processes {pids} of {job_id} to be gone")
        assert get(stub, job_id).active == 0


# --- 9. ttlSecondsAfterFinished and podFailurePolicy (manifests built here, created on the backend) ------

#: The batch/v1 podFailurePolicy the timer job carries: exit code 2 fails the Job, disruptions are ignored.
FAIL_ON_2 = {
    "rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [2]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    ]
}


def manifest(
    script: str,
    *,
    ttl: int | None = None,
    backoff_limit: int = 0,
    policy: dict[str, Any] | None = None,
    container: str = "main",
) -> dict[str, Any]:
    """A minimal batch/v1 Job running ``sh -c script``, with a fresh job id as its name."""
    spec: dict[str, Any] = {
        "backoffLimit": backoff_limit,
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": container, "image": "busybox", "command": ["sh", "-c", script]}],
            }
        },
    }
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    if policy is not None:
        spec["podFailurePolicy"] = policy
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"job-{secrets.token_hex(5)}", "labels": {"test": "local"}},
        "spec": spec,
    }


def create(svc: ServiceThread, job: dict[str, Any]) -> str:
    """Create the Job on the service's own backend, on its event loop (as ScheduleJob would)."""
    asyncio.run_coroutine_threadsafe(svc.backend.create(job), svc._loop).result(T)
    return str(job["metadata"]["name"])


def not_found(stub: pb_grpc.JobSchedulerStub, job_id: str) -> bool:
    try:
        get(stub, job_id)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND, err
        return True
    return False


def stored(data_dir: pathlib.Path, job_id: str) -> tuple[int, int]:
    """The backend's (job rows, attempt rows) for ``job_id``."""
    db = sqlite3.connect(data_dir / "jobscheduler.db", timeout=5)
    try:
        jobs = db.execute("SELECT COUNT(*) FROM jobs WHERE job_id = ?", (job_id,)).fetchone()[0]
        rows = db.execute("SELECT COUNT(*) FROM attempts WHERE job_id = ?", (job_id,)).fetchone()[0]
    finally:
        db.close()
    return int(jobs), int(rows)


class Watch:
    """A WatchJobs stream consumed by a thread: ``events`` grows as they arrive, every change after now
    (it resumes from a ListJobs answer, so nothing is missed while the stream is being set up)."""

    def __init__(self, stub: pb_grpc.JobSchedulerStub) -> None:
        self.events: list[pb.JobEvent] = []
        token = stub.ListJobs(pb.ListJobsRequest(), timeout=T).resume_token
        self._call = stub.WatchJobs(pb.WatchJobsRequest(resume_token=token), timeout=60)
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        with contextlib.suppress(grpc.RpcError):
            for event in self._call:
                self.events.append(event)

    def types(self, job_id: str) -> list[str]:
        return [pb.JobEventType.Name(e.type) for e in list(self.events) if e.job.job_id == job_id]

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(5)


def test_ttl_deletes_a_finished_job_its_rows_logs_and_directory(
    start_local: Callable[..., ServiceThread], tmp_path: pathlib.Path
) -> None:
    svc = start_local()
    data = tmp_path / "data"
    watch = Watch(svc.stub)
    try:
        ttl_id = create(svc, manifest("echo hello", ttl=1))
        at_once_id = create(svc, manifest("echo failing; exit 1", ttl=0))
        kept_id = create(svc, manifest("echo hello"))

        done = wait_phase(svc.stub, ttl_id, *TERMINAL)
        assert done.phase == pb.JOB_PHASE_SUCCEEDED, done
        workdir = data / "jobs" / ttl_id
        assert (workdir / "attempt-1.log").read_text() == "hello\n"
        assert stored(data, ttl_id) == (1, 1)

        # ttlSecondsAfterFinished: 0 deletes the job right after it finished (here: FAILED).
        wait_until(lambda: not_found(svc.stub, at_once_id), 10, f"{at_once_id} to be deleted")
        # The stream's events reach this client a moment after the deletion itself.
        wait_until(lambda: "JOB_EVENT_TYPE_DELETED" in watch.types(at_once_id), 10, "its DELETED event")
        assert watch.types(at_once_id)[-2:] == ["JOB_EVENT_TYPE_FAILED", "JOB_EVENT_TYPE_DELETED"]

        wait_until(lambda: not_found(svc.stub, ttl_id), 10, f"{ttl_id} to be deleted")
        deleted = wait_until(
            lambda: [
                e
                for e in list(watch.events)
                if e.type == pb.JOB_EVENT_TYPE_DELETED and e.job.job_id == ttl_id
            ],
            3,
            "the DELETED event",
        )
        after = (ts(deleted[0].time) - ts(done.finished_at)).total_seconds()
        assert 0.95 <= after < 6, after  # never early; late only by scheduling delays on a busy machine
        types = watch.types(ttl_id)
        assert types[0] == "JOB_EVENT_TYPE_CREATED", types
        assert types[-2:] == ["JOB_EVENT_TYPE_SUCCEEDED", "JOB_EVENT_TYPE_DELETED"], types
        assert types.count("JOB_EVENT_TYPE_DELETED") == 1, types
        assert stored(data, ttl_id) == (0, 0)
        assert not workdir.exists()
        assert stored(data, at_once_id) == (0, 0)
        assert not (data / "jobs" / at_once_id).exists()
        listed = {j.job_id for j in svc.stub.ListJobs(pb.ListJobsRequest(), timeout=T).jobs}
        assert listed == {kept_id}

        # No ttlSecondsAfterFinished: kept.
        kept = get(svc.stub, kept_id)
        assert kept.phase == pb.JOB_PHASE_SUCCEEDED
        assert stored(data, kept_id) == (1, 1)
        assert (data / "jobs" / kept_id / "attempt-1.log").is_file()
        assert "JOB_EVENT_TYPE_DELETED" not in watch.types(kept_id)
    finally:
        watch.close()


def test_ttl_survives_a_restart(
    start_local: Callable[..., ServiceThread], reaper: None, tmp_path: pathlib.Path
) -> None:
    data = tmp_path / "data"
    first = local_service(data, local_backoff_seconds=0.1, local_kill_grace_seconds=2)
    try:
        expired_id = create(first, manifest("echo expired", ttl=1))
        later_id = create(first, manifest("echo later", ttl=3))
        kept_id = create(first, manifest("echo kept"))
        finished = {
            job_id: wait_phase(first.stub, job_id, *TERMINAL) for job_id in (expired_id, later_id, kept_id)
        }
    finally:
        first.stop()
    assert all(j.phase == pb.JOB_PHASE_SUCCEEDED for j in finished.values()), finished
    later = finished[later_id]
    assert stored(data, expired_id) == (1, 1)
    # Down for longer than the first job's TTL (1 s) and shorter than the second's (3 s).
    last_finish = max(ts(j.finished_at).timestamp() for j in finished.values())
    time.sleep(max(0.0, last_finish + 1.3 - time.time()))

    second = start_local()
    # Expired while the service was down: gone by the time the service serves.
    assert not_found(second.stub, expired_id)
    assert stored(data, expired_id) == (0, 0)
    assert not (data / "jobs" / expired_id).exists()
    assert get(second.stub, later_id).phase == pb.JOB_PHASE_SUCCEEDED
    assert (data / "jobs" / later_id / "attempt-1.log").is_file()

    # Not yet expired: deleted 3 s after it finished (its stored finish time), not 3 s after the restart.
    wait_until(lambda: not_found(second.stub, later_id), 5, f"{later_id} to be deleted")
    after = time.time() - ts(later.finished_at).timestamp()
    assert 2.95 <= after < 4.0, after
    assert stored(data, later_id) == (0, 0)
    assert not (data / "jobs" / later_id).exists()
    assert get(second.stub, kept_id).phase == pb.JOB_PHASE_SUCCEEDED


def test_pod_failure_policy_fail_job_stops_retries_other_codes_are_retried(
    start_local: Callable[..., ServiceThread], tmp_path: pathlib.Path
) -> None:
    svc = start_local(local_backoff_seconds=0.05)
    fatal_id = create(svc, manifest("echo bad config; exit 2", backoff_limit=2, policy=FAIL_ON_2))
    retried_id = create(svc, manifest("echo flaky; exit 3", backoff_limit=2, policy=FAIL_ON_2))
    # A rule for another container never matches this one: exit 2 is counted as any failure.
    other_id = create(svc, manifest("exit 2", backoff_limit=1, policy=FAIL_ON_2, container="sidecar"))

    fatal = wait_phase(svc.stub, fatal_id, *TERMINAL)
    assert fatal.phase == pb.JOB_PHASE_FAILED, fatal
    assert fatal.reason == "PodFailurePolicy"
    assert fatal.message == (
        f"Container main for pod default/{fatal_id}-1 failed with exit code 2"
        " matching FailJob rule at index 0"
    )
    [condition] = fatal.conditions
    assert (condition.type, condition.status, condition.reason) == ("Failed", "True", "PodFailurePolicy")
    assert (fatal.failed, fatal.active, fatal.exit_code) == (1, 0, 2)

    retried = wait_phase(svc.stub, retried_id, *TERMINAL)
    assert retried.phase == pb.JOB_PHASE_FAILED, retried
    assert retried.reason == "BackoffLimitExceeded"
    assert retried.failed == 3
    assert [r["exit_code"] for r in attempts(tmp_path / "data", retried_id)] == [3, 3, 3]

    other = wait_phase(svc.stub, other_id, *TERMINAL)
    assert (other.phase, other.reason, other.failed) == (pb.JOB_PHASE_FAILED, "BackoffLimitExceeded", 2)

    # No retry came after the FailJob (the others have finished all of theirs by now).
    assert [r["exit_code"] for r in attempts(tmp_path / "data", fatal_id)] == [2]
    assert not (tmp_path / "data" / "jobs" / fatal_id / "attempt-2.log").exists()


def test_pod_failure_policy_ignore_does_not_count_towards_the_backoff_limit(
    start_local: Callable[..., ServiceThread], tmp_path: pathlib.Path
) -> None:
    svc = start_local(local_backoff_seconds=0.05)
    # The first attempt exits 5 and leaves a mark in the job's directory; the next one succeeds.
    once = "if [ -e failed-once ]; then echo ok; else touch failed-once; echo transient; exit 5; fi"
    ignore_5 = {"rules": [{"action": "Ignore", "onExitCodes": {"operator": "In", "values": [5]}}]}
    ignored_id = create(svc, manifest(once, backoff_limit=0, policy=ignore_5))
    counted_id = create(svc, manifest(once, backoff_limit=0))
    count_id = create(
        svc,
        manifest(
            once,
            backoff_limit=0,
            policy={
                "rules": [
                    {"action": "Count", "onExitCodes": {"operator": "In", "values": [5]}},
                    *ignore_5["rules"],
                ]
            },
        ),
    )

    ignored = wait_phase(svc.stub, ignored_id, *TERMINAL)
    assert ignored.phase == pb.JOB_PHASE_SUCCEEDED, ignored
    # As Kubernetes' status.failed, the ignored failure is not counted; its pod is still listed.
    assert (ignored.succeeded, ignored.failed) == (1, 0)
    assert list(ignored.pod_names) == [f"{ignored_id}-1", f"{ignored_id}-2"]
    rows = attempts(tmp_path / "data", ignored_id)
    assert [(r["exit_code"], r["ignored"]) for r in rows] == [(5, 1), (0, 0)]

    # Without the rule (or when a Count rule comes first) backoffLimit 0 allows no retry.
    for job_id in (counted_id, count_id):
        job = wait_phase(svc.stub, job_id, *TERMINAL)
        assert (job.phase, job.reason, job.failed) == (pb.JOB_PHASE_FAILED, "BackoffLimitExceeded", 1), job
        assert "exited with code 5" in job.message


@pytest.mark.parametrize(
    ("rules", "container", "returncode", "expected"),
    [
        (
            [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}}],
            "main",
            2,
            (0, "FailJob"),
        ),
        ([{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}}], "main", 3, None),
        (
            [{"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [2]}}],
            "main",
            3,
            (0, "FailJob"),
        ),
        ([{"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [2]}}], "main", 0, None),
        (
            [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                {
                    "action": "Count",
                    "onExitCodes": {"containerName": "other", "operator": "In", "values": [1]},
                },
                {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [1]}},
                {
                    "action": "Ignore",
                    "onExitCodes": {"containerName": "main", "operator": "In", "values": [1]},
                },
            ],
            "main",
            1,
            (3, "Ignore"),
        ),
        # A process killed by SIGKILL: the exit code a container would have, 137.
        (
            [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [137]}}],
            "main",
            -9,
            (0, "FailJob"),
        ),
        ([], "main", 1, None),
    ],
)
def test_pod_failure_policy_rule_matching(
    rules: list[dict[str, Any]], container: str, returncode: int, expected: tuple[int, str] | None
) -> None:
    match = match_pod_failure_policy({"podFailurePolicy": {"rules": rules}}, container, returncode)
    assert (None if match is None else (match.index, match.action)) == expected
