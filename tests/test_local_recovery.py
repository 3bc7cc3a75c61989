"""Recovery of the local backend: what an earlier run left behind (its rows and process groups).

The earlier run is built here: real process groups (as the backend starts them, each in a new
session) and the rows it would have written, then a backend opens the directory.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from local_harness import job, running_backend

from jobscheduler.backends.local import _supervisor
from jobscheduler.backends.local._store import Store
from jobscheduler.backends.local._supervisor import MARKER_ENV, process_start
from jobscheduler.core.model import JobPhase

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes started by a test; whatever is left of their groups is killed afterwards."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, 9)
        if proc.poll() is None:
            proc.wait(5)


def spawn(procs: list[subprocess.Popen[str]], script: str, job_id: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["sh", "-c", script],
        env={"PATH": os.environ["PATH"], MARKER_ENV: job_id},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    procs.append(proc)
    return proc


def earlier_run(data: pathlib.Path, job_id: str, pid: int, started: str | None) -> None:
    """The rows a run that died while ``job_id``'s first attempt (process group ``pid``) ran left."""
    store = Store(data / "jobscheduler.db")
    try:
        now = datetime.now(UTC)
        store.insert_job(job_id, "default", job(["sleep", "60"], job_id=job_id), now)
        store.update_job(job_id, phase=JobPhase.RUNNING.value, started_at=now)
        store.start_attempt(job_id, 1, pid, now, str(data / "attempt-1.log"), pgid=pid, process_start=started)
    finally:
        store.close()


def gone(pid: int) -> bool:
    """No such process any more, or a zombie (reaped by its parent, the test, later)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


async def recover(data: pathlib.Path, job_id: str) -> None:
    """Open (recover) and close a backend on ``data``; the job is then FAILED/ServiceRestarted."""
    async with running_backend(data) as (backend, _index):
        record = await backend.get(job_id)
        assert (record.phase, record.reason, record.active) == (JobPhase.FAILED, "ServiceRestarted", 0)


@pytest.mark.asyncio
async def test_a_group_whose_leader_is_gone_is_still_killed(
    tmp_path: pathlib.Path, spawned: list[subprocess.Popen[str]]
) -> None:
    """The leader exited (a shell that started a background child), its child lives on in the group."""
    job_id = "job-orphaned"
    leader = spawn(spawned, "sleep 60 & echo $!; read line; exit 0", job_id)
    assert leader.stdout is not None
    child = int(leader.stdout.readline())
    earlier_run(tmp_path, job_id, leader.pid, process_start(leader.pid))
    assert leader.stdin is not None
    leader.stdin.close()
    assert leader.wait(5) == 0  # reaped: no /proc/<leader> any more
    assert not gone(child)

    await recover(tmp_path, job_id)
    assert gone(child)


@pytest.mark.asyncio
async def test_a_leader_with_another_start_time_is_not_ours(
    tmp_path: pathlib.Path, spawned: list[subprocess.Popen[str]]
) -> None:
    """A pid reused by a process that started later is left alone, whatever its environment says:
    the recorded start time, not the marker variable (which any process may carry), decides."""
    job_id = "job-reused"
    stranger = spawn(spawned, "exec sleep 60", job_id)
    earlier_run(tmp_path, job_id, stranger.pid, "another-boot:12345")

    await recover(tmp_path, job_id)
    assert not gone(stranger.pid)


@pytest.mark.asyncio
async def test_the_recorded_leader_is_killed(
    tmp_path: pathlib.Path, spawned: list[subprocess.Popen[str]]
) -> None:
    job_id = "job-leftover"
    leader = spawn(spawned, "exec sleep 60", job_id)
    earlier_run(tmp_path, job_id, leader.pid, process_start(leader.pid))

    await recover(tmp_path, job_id)
    assert leader.wait(5) == -9


@pytest.mark.asyncio
async def test_without_proc_the_recorded_group_is_killed(
    tmp_path: pathlib.Path, spawned: list[subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where there is no /proc (macOS), recovery goes by the recorded process group alone."""
    monkeypatch.setattr(_supervisor, "PROC", tmp_path / "no-proc")
    job_id = "job-no-proc"
    leader = spawn(spawned, "sleep 60 & echo $!; exec sleep 60", job_id)
    assert leader.stdout is not None
    child = int(leader.stdout.readline())
    assert process_start(leader.pid) is None
    earlier_run(tmp_path, job_id, leader.pid, None)

    await recover(tmp_path, job_id)
    assert leader.wait(5) == -9
    assert gone(child)


@pytest.mark.asyncio
async def test_a_process_started_before_its_attempt_was_recorded_is_killed(
    tmp_path: pathlib.Path, spawned: list[subprocess.Popen[str]]
) -> None:
    """The service died after starting the process but before writing its attempt's row: the
    job's marker in the process's environment is all that names it."""
    job_id = "job-unrecorded"
    leader = spawn(spawned, "sleep 60 & exec sleep 60", job_id)
    stranger = spawn(spawned, "exec sleep 60", "job-of-another-service")
    store = Store(tmp_path / "jobscheduler.db")
    try:
        now = datetime.now(UTC)
        store.insert_job(job_id, "default", job(["sleep", "60"], job_id=job_id), now)
        store.update_job(job_id, phase=JobPhase.RUNNING.value, started_at=now)  # and no attempt row
    finally:
        store.close()

    await recover(tmp_path, job_id)
    assert leader.wait(5) == -9
    assert not gone(stranger.pid)  # a marker of a job this service does not have: left alone
