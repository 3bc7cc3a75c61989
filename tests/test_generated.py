"""The committed protobuf code is what tools/generate_proto.py makes from proto/ today."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_generated_code_is_fresh(tmp_path: pathlib.Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "generate_proto.py"), str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    fresh = tmp_path / "jobscheduler" / "_generated"
    committed = ROOT / "jobscheduler" / "_generated"
    fresh_files = sorted(p.name for p in fresh.iterdir() if p.is_file())
    committed_files = sorted(
        p.name for p in committed.iterdir() if p.is_file() and p.suffix in (".py", ".pyi")
    )
    assert fresh_files == committed_files
    stale = [name for name in fresh_files if (fresh / name).read_bytes() != (committed / name).read_bytes()]
    assert not stale, f"generated code is stale: {stale}; run `task proto:generate` and commit the result"


def test_proto_changes_are_additive() -> None:
    """Field numbers of released messages never change (renumbering breaks every client)."""
    from jobscheduler._generated import jobscheduler_pb2 as pb

    expected = {
        "ScheduleJobRequest": {
            "name": 1,
            "timer_job": 2,
            "labels": 10,
            "start_after": 13,
            "delay_seconds": 14,
            "max_retries": 16,
            "retry_backoff_seconds": 17,
            "request_id": 18,
            "timeout_seconds": 19,
            "ttl_seconds_after_finished": 20,
        },
        "TimerJob": {
            "duration_seconds": 1,
            "timer_name": 2,
            "control_plane_endpoint": 3,
            "image": 4,
            "log_level": 5,
            "env": 6,
        },
        "GetJobStatusRequest": {"job_id": 1},
        "CancelJobRequest": {"job_id": 1, "reason": 2},
        "Job": {
            "job_id": 1,
            "name": 2,
            "type": 3,
            "namespace": 4,
            "phase": 5,
            "created_at": 6,
            "exit_code": 21,
            "owner": 24,
            "request_id": 25,
            "retry_of": 26,
            "retry_number": 27,
            "max_retries": 28,
            "start_after": 29,
        },
        "JobFilter": {"type": 1, "phases": 2, "label_selector": 3, "owner": 7},
    }
    for message, fields in expected.items():
        descriptor = pb.DESCRIPTOR.message_types_by_name[message]
        for name, number in fields.items():
            assert descriptor.fields_by_name[name].number == number, (message, name)
    phases = pb.JobPhase.DESCRIPTOR.values_by_name
    assert {n: v.number for n, v in phases.items()} == {
        "JOB_PHASE_UNSPECIFIED": 0,
        "JOB_PHASE_PENDING": 1,
        "JOB_PHASE_RUNNING": 2,
        "JOB_PHASE_SUCCEEDED": 3,
        "JOB_PHASE_FAILED": 4,
        "JOB_PHASE_CANCELLED": 5,
        "JOB_PHASE_QUEUED": 6,
        "JOB_PHASE_SCHEDULED": 7,
        "JOB_PHASE_WAITING": 8,
    }
