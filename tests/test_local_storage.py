"""The local backend's DATA_DIR: one service at a time (its lock)."""

from __future__ import annotations

import os
import pathlib

import pytest
from conftest import ServeProcess
from local_harness import job, running_backend, running_pid

from jobscheduler.backends.local import LocalBackend
from jobscheduler.backends.local._lock import DataDirInUse
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
