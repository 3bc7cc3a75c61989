"""The container job on the local backend: N processes at once, JOB_COMPLETION_INDEX, completed and
failed indexes, exit codes and reasons, cancel, LOCAL_ALLOW_COMMANDS; secret env (secretKeyRef)
read from LOCAL_SECRETS_DIR for every job type."""

from __future__ import annotations

import os
import pathlib
import sys
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from conftest import local_service
from local_harness import job, running_backend, wait_phase, wait_record
from test_container_job import parse_request, render

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.api.convert import job_message
from jobscheduler.config import Settings
from jobscheduler.core.errors import FailedPrecondition
from jobscheduler.core.model import JobPhase

pytestmark = pytest.mark.timeout(60)


def secret_job(name: str, key: str) -> dict[str, Any]:
    m = job(["sh", "-c", 'test "$TOKEN" = s3cr3t'])
    container = m["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}]
    return m


@pytest.mark.asyncio
async def test_local_secret_env_is_read_from_the_secrets_dir_and_a_missing_one_fails_the_job(
    tmp_path: pathlib.Path,
) -> None:
    secrets_dir = tmp_path / "secrets"
    (secrets_dir / "api").mkdir(parents=True)
    (secrets_dir / "api" / "token").write_text("s3cr3t")
    os.mkfifo(secrets_dir / "api" / "fifo")  # opening it for reading would block
    (secrets_dir / "api" / "dir").mkdir()
    async with running_backend(tmp_path / "data", secrets_dir=secrets_dir) as (backend, index):
        manifests = [
            secret_job("api", "token"),
            secret_job("api", "other"),
            secret_job("missing", "token"),
            secret_job("api", ".."),
            secret_job("api", "fifo"),
            secret_job("api", "dir"),
        ]
        for m in manifests:
            await backend.create(m)
        records = [await wait_phase(index, m["metadata"]["name"]) for m in manifests]
    assert records[0].phase is JobPhase.SUCCEEDED, records[0]
    for record in records[1:]:
        assert (record.phase, record.reason) == (JobPhase.FAILED, "CreateContainerConfigError"), record
        assert "s3cr3t" not in record.message
    assert "couldn't find key other in Secret default/api" in records[1].message
    assert 'secret "missing" not found' in records[2].message
    assert "couldn't find key fifo" in records[4].message and "couldn't find key dir" in records[5].message


# --- the local backend ---------------------------------------------------------------------------


def local_job(job_id: str, script: str, **fields: Any) -> dict[str, Any]:
    """A container job's manifest, as ScheduleJob renders it, running ``python -c script``."""
    return render(parse_request(command=[sys.executable, "-c", script], **fields), job_id)


@pytest.mark.asyncio
async def test_local_success_failure_indexes_and_cancel(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    indexed = (
        "import os, pathlib; i = os.environ['JOB_COMPLETION_INDEX'];"
        f" pathlib.Path({str(out)!r}, i).write_text(str(os.getpid()))"
    )
    flaky = "import os, sys; sys.exit(3 if os.environ['JOB_COMPLETION_INDEX'] == '1' else 0)"
    # Index 0 fails once then succeeds, index 1 always fails, index 2 succeeds.
    per_index = (
        "import os, pathlib, sys; i = os.environ['JOB_COMPLETION_INDEX'];"
        f" first = pathlib.Path({str(out)!r}, 'tried-' + i);"
        " failed = i == '1' or (i == '0' and not first.exists()); first.touch(); sys.exit(5 if failed else 0)"
    )
    async with running_backend(tmp_path / "data") as (backend, index):
        jobs = {
            "job-ok00000000": local_job("job-ok00000000", "print('done')"),
            "job-bad0000000": local_job("job-bad0000000", "import sys; print('boom'); sys.exit(7)"),
            "job-idx0000000": local_job(
                "job-idx0000000",
                indexed,
                parallelism=2,
                completions=3,
                completion_mode=pb.COMPLETION_MODE_INDEXED,
            ),
            "job-fix0000000": local_job(
                "job-fix0000000",
                flaky,
                parallelism=3,
                completions=3,
                completion_mode=pb.COMPLETION_MODE_INDEXED,
                backoff_limit_per_index=1,
                exit_code_rules=[pb.ExitCodeRule(action=pb.EXIT_CODE_ACTION_FAIL_INDEX, exit_codes=[3])],
            ),
            "job-per0000000": local_job(
                "job-per0000000",
                per_index,
                parallelism=2,
                completions=3,
                completion_mode=pb.COMPLETION_MODE_INDEXED,
                backoff_limit_per_index=1,
            ),
            "job-stop000000": local_job(
                "job-stop000000", "import time; time.sleep(60)", parallelism=2, completions=2
            ),
        }
        no_command = render(parse_request(args=["--all"]), "job-args000000")
        for m in [*jobs.values(), no_command]:
            await backend.create(m)
        ok, bad, idx, fix, per = [await wait_phase(index, j) for j in list(jobs)[:5]]
        per_attempts = sorted(a.completion_index for a in backend.get_row("job-per0000000").attempts)
        await wait_record(index, "job-stop000000", lambda r: r.active == 2)
        await backend.cancel("job-stop000000", reason="test", at=datetime.now(UTC))
        stop = await wait_record(index, "job-stop000000", lambda r: r.active == 0)
        args_only = await wait_phase(index, "job-args000000")
        pids = [a.pid for a in backend.get_row("job-stop000000").attempts]
    assert (ok.phase, ok.exit_code) == (JobPhase.SUCCEEDED, 0), ok
    assert (bad.phase, bad.reason, bad.exit_code) == (JobPhase.FAILED, "BackoffLimitExceeded", 7), bad
    assert "exited with code 7: boom" in bad.message
    assert idx.phase is JobPhase.SUCCEEDED, idx
    assert sorted(p.name for p in out.iterdir() if p.name.isdigit()) == ["0", "1", "2"]
    assert (idx.completed_indexes, idx.failed_indexes, idx.succeeded) == ("0-2", "", 3)
    assert job_message(idx).completed_indexes == "0-2"
    assert (fix.phase, fix.reason) == (JobPhase.FAILED, "FailedIndexes"), fix
    assert (fix.completed_indexes, fix.failed_indexes) == ("0,2", "1")
    assert (per.phase, per.reason, per.exit_code) == (JobPhase.FAILED, "FailedIndexes", 5), per
    assert (per.completed_indexes, per.failed_indexes, per_attempts) == ("0,2", "1", [0, 0, 1, 1, 2])
    assert stop.phase is JobPhase.CANCELLED and len(pids) == 2, stop
    assert (args_only.phase, args_only.reason) == (JobPhase.FAILED, "StartError"), args_only
    assert "entry point" in args_only.message
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # both processes are gone (and reaped)


@pytest.mark.asyncio
async def test_a_pod_stopped_because_the_job_failed_is_not_its_failure(tmp_path: pathlib.Path) -> None:
    """Index 1 fails the job (FailJob on exit 3) while index 0's retry runs: the job reports exit
    code 3 (not the stopped pod's -15), and index 0 (one counted failure, limit 1) is not failed."""
    out = tmp_path / "out"
    out.mkdir()
    script = (
        "import os, pathlib, sys, time; i = os.environ['JOB_COMPLETION_INDEX'];"
        f" first = pathlib.Path({str(out)!r}, 'tried-' + i); again = first.exists(); first.touch()\n"
        "if i == '1': time.sleep(1.0); sys.exit(3)\n"
        "if not again: sys.exit(5)\n"
        "time.sleep(60)"
    )
    async with running_backend(tmp_path / "data") as (backend, index):
        await backend.create(
            local_job(
                "job-kill000000",
                script,
                parallelism=2,
                completions=2,
                completion_mode=pb.COMPLETION_MODE_INDEXED,
                backoff_limit_per_index=1,
                exit_code_rules=[pb.ExitCodeRule(action=pb.EXIT_CODE_ACTION_FAIL_JOB, exit_codes=[3])],
            )
        )
        record = await wait_phase(index, "job-kill000000")
        codes = [a.exit_code for a in backend.get_row("job-kill000000").attempts]
    assert (record.phase, record.reason, record.exit_code) == (JobPhase.FAILED, "PodFailurePolicy", 3), record
    assert record.failed_indexes == "", record
    assert all(code is None or code >= 0 for code in codes), codes  # a signal is 128 + N


@pytest.mark.asyncio
async def test_local_container_jobs_are_refused_unless_commands_are_allowed(tmp_path: pathlib.Path) -> None:
    async with running_backend(tmp_path / "data", allow_commands=False) as (backend, _):
        with pytest.raises(FailedPrecondition, match="LOCAL_ALLOW_COMMANDS"):
            await backend.create(local_job("job-no00000000", "print(1)"))
    assert Settings(auth_mode="token", auth_token_file="x").local_allow_commands is None


# --- through ScheduleJob -------------------------------------------------------------------------


def test_schedule_job_runs_an_indexed_container_job_and_refuses_what_the_settings_forbid(
    tmp_path: pathlib.Path,
) -> None:
    svc = local_service(tmp_path / "data", allowed_images="ghcr.io/example", max_cpu_limit="1")

    def schedule(**fields: Any) -> pb.ScheduleJobResponse:
        fields.setdefault("image", "ghcr.io/example/batch:1")
        request = pb.ScheduleJobRequest(name="batch", container_job=pb.ContainerJob(**fields))
        response: pb.ScheduleJobResponse = svc.stub.ScheduleJob(request, timeout=10)
        return response

    def refused(**fields: Any) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as info:
            schedule(**fields)
        err: Any = info.value
        return err.code(), err.details()

    try:
        job_id = schedule(
            command=[sys.executable, "-c", "import os; print(os.environ['JOB_COMPLETION_INDEX'])"],
            parallelism=2,
            completions=3,
            completion_mode=pb.COMPLETION_MODE_INDEXED,
        ).job_id
        last = None
        for event in svc.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=30):
            last = event.job
        assert last is not None and last.type == "container"
        assert (last.phase, last.exit_code, last.completed_indexes) == (pb.JOB_PHASE_SUCCEEDED, 0, "0-2"), (
            last
        )
        code, details = refused(image="docker.io/evil/miner:1", command=["x"])
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "container_job.image" in details
        code, details = refused(command=["x"], resources=pb.Resources(cpu_limit="2"))
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "container_job.resources.cpu_limit" in details
    finally:
        svc.stop()
