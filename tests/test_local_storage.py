"""The local backend's DATA_DIR: one service at a time (its lock), and a full disk."""

from __future__ import annotations

import asyncio
import os
import pathlib
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from conftest import ServeProcess, local_service
from local_harness import job, running_backend, running_pid, wait_phase

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.backends.local import LocalBackend
from jobscheduler.backends.local._lock import DataDirInUse
from jobscheduler.backends.local._store import JobRow
from jobscheduler.backends.local._ttl import DELETE_RETRY_SECONDS, TtlSweeper
from jobscheduler.core.errors import Unavailable
from jobscheduler.core.model import JobPhase

pytestmark = pytest.mark.timeout(60)

#: Settings that would leak into ``jobscheduler serve`` subprocesses from the test's own environment.
INTERFERING = ("KUBECONFIG", "BACKEND", "DATA_DIR", "IN_CLUSTER", "XDG_DATA_HOME")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


@pytest.mark.asyncio
async def test_a_second_backend_on_the_same_data_dir_leaves_the_first_ones_jobs_alone(
    tmp_path: pathlib.Path,
) -> None:
    data = tmp_path / "data"
    async with running_backend(data) as (backend, index):
        manifest = job(["sleep", "30"])
        job_id = str(manifest["metadata"]["name"])
        await backend.create(manifest)
        leader = await running_pid(index, data, job_id)
        assert alive(leader)

        with pytest.raises(DataDirInUse) as raised:
            await LocalBackend.open(data, "default")
        assert str(data) in str(raised.value)
        assert f"pid {os.getpid()}" in str(raised.value)

        # The first service's job was not touched: still running, its process alive.
        assert alive(leader)
        assert (await backend.get(job_id)).phase is JobPhase.RUNNING

    # Once the first one is closed, the directory is free again.
    async with running_backend(data) as (_backend, index):
        record = index.get(job_id)
        assert record is not None and record.reason == "ServiceRestarted"


def test_a_second_serve_on_the_same_data_dir_exits_2_naming_it_and_the_holder(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in INTERFERING:
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "data"
    env = {
        "BACKEND": "local",
        "DATA_DIR": str(data),
        "GRPC_PORT": "0",
        "HEALTH_PORT": "0",
        "GRPC_HOST": "127.0.0.1",
    }
    first = ServeProcess(env)
    try:
        second = ServeProcess(env, wait=False)
        try:
            code = second.proc.wait(20)
        finally:
            if second.proc.poll() is None:
                second.proc.kill()
                second.proc.wait(5)
        assert second.proc.stderr is not None
        stderr = second.proc.stderr.read()
        assert code == 2, stderr
        assert "DATA_DIR" in stderr and str(data) in stderr, stderr
        assert f"pid {first.proc.pid}" in stderr, stderr
        assert "Traceback" not in stderr
        assert first.proc.poll() is None
    finally:
        first.stop()


class FullDisk:
    """The store's SQLite connection, with writes refused as on a full disk while ``full`` is set
    (reads go through: SQLite reads a full disk fine)."""

    WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "BEGIN", "CREATE", "ALTER")

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.full = False
        #: Set by each refused write.
        self.refused = asyncio.Event()

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        if self.full and sql.lstrip().upper().startswith(self.WRITES):
            self.refused.set()
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, params)

    def __enter__(self) -> FullDisk:
        self._db.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._db.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def fill_disk(backend: LocalBackend) -> FullDisk:
    disk = FullDisk(backend._store._db)
    backend._store._db = disk  # type: ignore[assignment]
    return disk


@pytest.mark.asyncio
async def test_a_full_disk_is_unavailable_and_a_finished_job_reaches_its_phase_once_space_returns(
    tmp_path: pathlib.Path,
) -> None:
    data = tmp_path / "data"
    async with running_backend(data, write_retry_max_seconds=0.2) as (backend, index):
        # A job that runs until the test lets it finish (a file in its directory).
        manifest = job(["sh", "-c", "while [ ! -e go ]; do sleep 0.02; done"])
        job_id = str(manifest["metadata"]["name"])
        await backend.create(manifest)
        await running_pid(index, data, job_id)
        assert backend.problem is None
        await backend.ping()

        disk = fill_disk(backend)
        disk.full = True
        # ScheduleJob: UNAVAILABLE (retryable), and nothing half-stored.
        refused = job(["true"])
        with pytest.raises(Unavailable, match="disk is full"):
            await backend.create(refused)
        assert index.get(str(refused["metadata"]["name"])) is None
        assert backend.problem is not None and "disk is full" in backend.problem
        # Readiness: not ready while writes fail.
        with pytest.raises(Unavailable):
            await backend.ping()

        # The job ends while nothing can be written: its runner keeps the transition and retries.
        disk.refused.clear()
        (data / "jobs" / job_id / "go").touch()
        await asyncio.wait_for(disk.refused.wait(), 10)
        disk.refused.clear()
        await asyncio.wait_for(disk.refused.wait(), 10)  # retried, not dropped
        record = index.get(job_id)
        assert record is not None and record.phase is JobPhase.RUNNING

        disk.full = False
        done = await wait_phase(index, job_id)
        assert (done.phase, done.reason, done.exit_code) == (JobPhase.SUCCEEDED, "Completed", 0)
        await backend.ping()
        assert backend.problem is None
        # And it is in the store, not only in the index.
        stored = await backend.get(job_id)
        assert (stored.phase, stored.active, stored.succeeded) == (JobPhase.SUCCEEDED, 0, 1)


def test_a_full_disk_makes_schedule_job_unavailable_and_the_service_not_ready(tmp_path: pathlib.Path) -> None:
    svc = local_service(tmp_path / "data")
    try:
        assert svc.recheck()
        disk = FullDisk(svc.backend._store._db)  # type: ignore[attr-defined]
        svc.backend._store._db = disk  # type: ignore[attr-defined]
        disk.full = True
        request = pb.ScheduleJobRequest(
            name="full-disk",
            timer_job=pb.TimerJob(
                timer_name="t", duration_seconds=1, control_plane_endpoint="http://127.0.0.1:9"
            ),
        )
        with pytest.raises(grpc.RpcError) as raised:
            svc.stub.ScheduleJob(request, timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value
        assert not svc.recheck()
        disk.full = False
        assert svc.recheck()
        assert svc.stub.ScheduleJob(request, timeout=10).job_id
    finally:
        svc.stop()


def test_an_expired_job_the_full_disk_kept_is_deleted_once_space_returns() -> None:
    """The TTL sweeper alone: a deletion refused with Unavailable is tried again, not forgotten."""
    current = datetime(2026, 1, 1, tzinfo=UTC)
    refusals = [Unavailable("database or disk is full")]
    deleted: list[str] = []

    def delete(job_id: str) -> None:
        if refusals:
            raise refusals.pop()
        deleted.append(job_id)

    sweeper = TtlSweeper(clock=lambda: current, delete=delete, busy=lambda job_id: False)
    row = JobRow(
        job_id="job-ttl",
        namespace="default",
        manifest={"spec": {"ttlSecondsAfterFinished": 0}},
        phase=JobPhase.SUCCEEDED.value,
        reason="Completed",
        message="",
        created_at=current,
        started_at=current,
        finished_at=current,
        cancelled_at=None,
        cancel_reason="",
        attempts=(),
    )
    sweeper.track(row)
    retry_at = sweeper.sweep()
    assert deleted == [] and "job-ttl" in sweeper
    assert retry_at == current + timedelta(seconds=DELETE_RETRY_SECONDS)
    assert sweeper.sweep() == retry_at  # not due yet
    current = retry_at
    assert sweeper.sweep() is None
    assert deleted == ["job-ttl"] and "job-ttl" not in sweeper
