"""The job counters count what really happened: a replayed request_id or a repeated cancel adds nothing."""

from __future__ import annotations

from conftest import ServiceThread

from jobscheduler import metrics
from jobscheduler._generated import jobscheduler_pb2 as pb

T = 10


def _count(name: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, {"type": "timer"}) or 0.0


def _timer(request_id: str = "") -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(
        name="counted",
        request_id=request_id,
        timer_job=pb.TimerJob(
            duration_seconds=60, timer_name="t", control_plane_endpoint="http://127.0.0.1:9/"
        ),
    )


def test_a_replayed_request_id_and_a_repeated_cancel_are_not_counted(service: ServiceThread) -> None:
    stub = service.stub
    scheduled, cancelled = "jobscheduler_jobs_scheduled_total", "jobscheduler_jobs_cancelled_total"
    before = _count(scheduled), _count(cancelled)
    first = stub.ScheduleJob(_timer("once-only"), timeout=T)
    for _ in range(3):  # the client retries: the same job comes back, nothing new is created
        assert stub.ScheduleJob(_timer("once-only"), timeout=T).job_id == first.job_id
    assert _count(scheduled) == before[0] + 1
    stub.ScheduleJob(_timer(), timeout=T)  # without a request_id: a new job each time
    assert _count(scheduled) == before[0] + 2

    for _ in range(3):
        job = stub.CancelJob(pb.CancelJobRequest(job_id=first.job_id), timeout=T).job
        assert job.phase == pb.JOB_PHASE_CANCELLED
    assert _count(cancelled) == before[1] + 1
