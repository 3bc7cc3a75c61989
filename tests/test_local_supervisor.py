"""The local backend's process supervisor: what a job's manifest can make the server's user run.

Manifests are built here and created on the backend directly (bypassing the request validation
that refuses such names), so these are the backend's own defences.
"""

from __future__ import annotations

import pathlib
import stat

import pytest
from local_harness import job, running_backend, wait_phase

from jobscheduler.backends.local._supervisor import reserved
from jobscheduler.core.model import JobPhase

pytestmark = pytest.mark.timeout(60)


def evil_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    """A directory of traps: each creates ``pwned-<name>`` next to it when it runs."""
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "sitecustomize.py").write_text(f"open({str(evil / 'pwned-sitecustomize')!r}, 'w').close()\n")
    for name in ("sh", "browser"):
        trap = evil / name
        trap.write_text(f"#!/bin/sh\ntouch {evil / ('pwned-' + name)}\n")
        trap.chmod(trap.stat().st_mode | stat.S_IXUSR)
    return evil


def hostile_env(evil: pathlib.Path) -> dict[str, str]:
    return {
        "PYTHONPATH": str(evil),
        "LD_PRELOAD": str(evil / "missing.so"),
        "PATH": str(evil),
        "HOME": str(evil),
        "JOBSCHEDULER_JOB_ID": "someone-else",
        # A warnings filter naming antigravity imports it, which opens $BROWSER.
        "PYTHONWARNINGS": "ignore::antigravity.Nothing",
        "BROWSER": str(evil / "browser"),
        "GREETING": "hello",
    }


@pytest.mark.asyncio
async def test_a_hostile_env_runs_nothing_extra_and_the_marker_is_the_jobs_own(
    tmp_path: pathlib.Path,
) -> None:
    evil = evil_dir(tmp_path)
    env = hostile_env(evil)
    data = tmp_path / "data"
    async with running_backend(data) as (backend, index):
        python_job = job(["jobscheduler", "version"], env=env)
        shell_job = job(["sh", "-c", "env > env.txt"], env=env)
        for manifest in (python_job, shell_job):
            await backend.create(manifest)
        ids = [str(m["metadata"]["name"]) for m in (python_job, shell_job)]
        for job_id in ids:
            record = await wait_phase(index, job_id)
            log = (data / "jobs" / job_id / "attempt-1.log").read_text()
            assert record.phase is JobPhase.SUCCEEDED, (record, log)
            assert "preload" not in log, log
    assert sorted(p.name for p in evil.iterdir() if p.name.startswith("pwned-")) == []
    dumped = dict(
        line.split("=", 1)
        for line in (data / "jobs" / ids[1] / "env.txt").read_text().splitlines()
        if "=" in line
    )
    assert dumped["JOBSCHEDULER_JOB_ID"] == ids[1]
    assert dumped["HOME"] == str(data / "jobs" / ids[1])
    assert str(evil) not in dumped.get("PATH", "")
    assert not {"LD_PRELOAD", "PYTHONWARNINGS", "BROWSER"} & set(dumped)
    assert dumped["GREETING"] == "hello"  # an ordinary variable still arrives


@pytest.mark.parametrize(
    ("command", "env", "named"),
    [
        (["sh", "-c", "true"], {"BAD": "a\0b"}, "env['BAD']"),
        (["sh", "-c", "true"], {"A=B": "x"}, "env['A=B']"),
        (["sh", "-c", "tr\0ue"], {}, "argument 2"),
    ],
)
@pytest.mark.asyncio
async def test_nul_bytes_fail_the_job_with_a_clear_reason(
    tmp_path: pathlib.Path, command: list[str], env: dict[str, str], named: str
) -> None:
    async with running_backend(tmp_path / "data") as (backend, index):
        manifest = job(command, env=env)
        await backend.create(manifest)
        record = await wait_phase(index, str(manifest["metadata"]["name"]))
        assert (record.phase, record.reason) == (JobPhase.FAILED, "StartError")
        assert named in record.message, record.message
        # The service goes on: the next job runs.
        fine = job(["sh", "-c", "true"])
        await backend.create(fine)
        assert (await wait_phase(index, str(fine["metadata"]["name"]))).phase is JobPhase.SUCCEEDED


@pytest.mark.parametrize(
    ("name", "is_reserved"),
    [
        ("LD_PRELOAD", True),
        ("ld_library_path", True),
        ("PYTHONSTARTUP", True),
        ("PATH", True),
        ("HOME", True),
        ("TMPDIR", True),
        ("BROWSER", True),
        ("JOBSCHEDULER_JOB_ID", True),
        ("KUBERNETES_SERVICE_HOST", True),
        ("GREETING", False),
        ("MY_PATH", False),
        ("TIMER_NAME", False),
    ],
)
def test_reserved_names(name: str, is_reserved: bool) -> None:
    assert reserved(name) is is_reserved
