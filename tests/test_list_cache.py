"""GetJobStatus and ListJobs served from the cached Job encodings and the filter indexes, end to end:
gRPC on 127.0.0.1, the Kubernetes backend on the emulator.

Every job's answer equals the one GetJobStatus gives (the same cache, the same record), a running
job's duration is that of the moment of the answer, a change shows at once, and filtered pages
are newest first and complete.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import ServiceThread
from emulator import EmulatorThread

from jobscheduler._generated import jobscheduler_pb2 as pb

T = 10


def _request(i: int) -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(
        name=f"cached-{i}",
        labels={"team": "a" if i % 3 == 0 else "b"},
        timer_job=pb.TimerJob(
            duration_seconds=30, timer_name="t", control_plane_endpoint="http://control-plane.example:8080/r"
        ),
    )


def _wait(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + T
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _get(service: ServiceThread, job_id: str) -> pb.Job:
    job: pb.Job = service.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=T).job
    return job


def _pages(service: ServiceThread, size: int, **fields: Any) -> list[pb.Job]:
    jobs: list[pb.Job] = []
    token = ""
    for _ in range(50):
        answer = service.stub.ListJobs(
            pb.ListJobsRequest(filter=pb.JobFilter(**fields), page_size=size, page_token=token), timeout=T
        )
        assert answer.resume_token
        jobs.extend(answer.jobs)
        token = answer.next_page_token
        if not token:
            return jobs
    raise AssertionError("pagination did not end")


def test_cached_answers_equal_get_and_follow_changes(
    service: ServiceThread, emulator: EmulatorThread
) -> None:
    ids = [service.stub.ScheduleJob(_request(i), timeout=T).job_id for i in range(12)]
    started = datetime.now(UTC) - timedelta(seconds=30)
    running = ids[3]  # team a
    emulator.patch_job(
        running, {"status": {"active": 1, "ready": 1, "startTime": started.strftime("%Y-%m-%dT%H:%M:%SZ")}}
    )
    _wait(lambda: _get(service, running).phase == pb.JOB_PHASE_RUNNING, "the job to run")

    # A running job's duration is the time of each answer (the encoding is cached without it).
    first, second = _get(service, running).duration, _get(service, running).duration
    assert 30 <= first.seconds < 60
    assert second.ToNanoseconds() > first.ToNanoseconds()

    by_id = {job_id: _get(service, job_id) for job_id in ids}
    newest_first = sorted(by_id.values(), key=lambda j: (j.created_at.ToDatetime(), j.job_id), reverse=True)

    team_a = _pages(service, 2, label_selector="team=a")
    assert [j.job_id for j in team_a] == [j.job_id for j in newest_first if j.labels["team"] == "a"]
    running_a = _pages(service, 2, label_selector="team=a", phases=[pb.JOB_PHASE_RUNNING])
    assert [j.job_id for j in running_a] == [running]
    for job in team_a:
        want = by_id[job.job_id]
        if job.job_id == running:
            assert job.duration.ToNanoseconds() > want.duration.ToNanoseconds()
            job.ClearField("duration")
            want.ClearField("duration")
        assert job == want
    assert _pages(service, 5, label_selector="team=nobody") == []
    assert _pages(service, 5, owner="nobody") == []

    # A change is answered at once (the record changed: its encoding is built again).
    emulator.patch_job(running, {"status": {"active": 0, "succeeded": 1}})
    _wait(lambda: _get(service, running).succeeded == 1, "the change to show")
    assert [j.succeeded for j in _pages(service, 3, label_selector="team=a") if j.job_id == running] == [1]
