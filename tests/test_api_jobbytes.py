"""The serialised-Job cache (api/jobbytes.py): whatever the changes, what it sends parses to exactly
``convert.job_message(record, now)``, a running job's duration included. In-process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.api.convert import job_message
from jobscheduler.api.jobbytes import JobBytes
from jobscheduler.core.model import JobCondition, JobPhase, JobRecord, Priority

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
times = st.one_of(st.none(), st.integers(0, 10**6).map(lambda us: T0 + timedelta(microseconds=us * 997)))
records = st.builds(
    JobRecord.build,
    job_id=st.sampled_from(["job-a", "job-b", "job-c"]),
    name=st.text(max_size=5),
    type=st.sampled_from(["timer", "webhook"]),
    namespace=st.just("default"),
    phase=st.sampled_from(list(JobPhase)),
    created_at=times,
    started_at=times,
    finished_at=times,
    message=st.text(max_size=8),
    labels=st.dictionaries(st.sampled_from(["team", "env"]), st.sampled_from(["a", "b"])),
    conditions=st.lists(
        st.builds(
            JobCondition,
            type=st.sampled_from(["Complete", "Failed"]),
            status=st.just("True"),
            last_transition_time=times,
        ),
        max_size=2,
    ).map(tuple),
    active=st.integers(0, 3),
    failed=st.integers(0, 3),
    exit_code=st.one_of(st.none(), st.integers(-1, 255)),
    pod_names=st.lists(st.text(max_size=4), max_size=2).map(tuple),
    priority=st.sampled_from(list(Priority)),
    depends_on=st.lists(st.sampled_from(["job-x", "job-y"]), max_size=2).map(tuple),
)
nows = st.integers(0, 2 * 10**9).map(lambda ms: T0 + timedelta(milliseconds=ms))


@PROPERTY
@given(st.lists(st.tuples(records, nows), min_size=1, max_size=12), st.integers(1, 3))
def test_sent_jobs_equal_job_message_after_every_change(
    changes: list[tuple[JobRecord, datetime]], size: int
) -> None:
    cache = JobBytes(max_entries=size)
    current: dict[str, JobRecord] = {}
    for record, now in changes:
        current[record.job_id] = record
        for r in current.values():  # also the unchanged ones, later (a running job: later duration)
            got = pb.GetJobStatusResponse.FromString(cache.get_response(r, now)).job
            assert got == job_message(r, now)
        assert len(cache) <= size
        page = list(current.values())
        answer = pb.ListJobsResponse.FromString(cache.list_response(page, "next", "resume", now))
        assert answer == pb.ListJobsResponse(
            jobs=[job_message(r, now) for r in page], next_page_token="next", resume_token="resume"
        )


def test_a_running_jobs_duration_is_the_time_of_sending() -> None:
    cache = JobBytes()
    running = JobRecord.build(
        job_id="job-r", name="r", type="timer", namespace="default", phase=JobPhase.RUNNING, started_at=T0
    )
    first = pb.GetJobStatusResponse.FromString(cache.get_response(running, T0 + timedelta(seconds=5))).job
    later = pb.GetJobStatusResponse.FromString(cache.get_response(running, T0 + timedelta(seconds=65))).job
    assert (first.duration.seconds, later.duration.seconds) == (5, 65)
    assert len(cache) == 1  # one encoding, two durations
    assert pb.ListJobsResponse.FromString(cache.list_response([])) == pb.ListJobsResponse()


def test_long_fields_take_longer_length_prefixes() -> None:
    cache = JobBytes()
    for size in (0, 100, 200, 20_000, 3_000_000):  # 1, 2, 3 and 4-byte lengths
        record = JobRecord.build(
            job_id="job-l",
            name="l",
            type="timer",
            namespace="default",
            phase=JobPhase.FAILED,
            message="m" * size,
        )
        answer = pb.ListJobsResponse.FromString(cache.list_response([record], "t" * size))
        assert answer == pb.ListJobsResponse(jobs=[job_message(record)], next_page_token="t" * size)
