"""Hostile requests over a real gRPC channel to a local-backend server: every one is
INVALID_ARGUMENT naming its field (never INTERNAL, UNKNOWN or RESOURCE_EXHAUSTED), answered at
once, and the server keeps serving."""

from __future__ import annotations

import base64
import pathlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from conftest import ServiceThread, local_service
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobscheduler._generated import jobscheduler_pb2 as pb

T = 10
#: Never created: a valid fuzzed job waits on it and then fails without running a process.
MISSING_DEPENDENCY = "job-zzzzzzzzzz"


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceThread]:
    # The largest MAX_MESSAGE_BYTES allowed, so that oversized fields reach the checks.
    service = local_service(tmp_path_factory.mktemp("hostile") / "data", max_message_bytes=4 * 1024 * 1024)
    try:
        yield service
    finally:
        service.stop()


def timer(**extra: Any) -> pb.TimerJob:
    params: dict[str, Any] = {
        "duration_seconds": 1,
        "timer_name": "t",
        "control_plane_endpoint": "http://127.0.0.1:9/",
        **extra,
    }
    return pb.TimerJob(**params)


def refused(call: Callable[[], Any]) -> tuple[grpc.RpcError, dict[str, str]]:
    """The error of ``call`` (which must be INVALID_ARGUMENT) and its BadRequest fields."""
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, (err.value.code(), err.value.details())
    status = rpc_status.from_call(err.value)  # type: ignore[arg-type]
    assert status is not None
    fields: dict[str, str] = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields.update({v.field: v.description for v in bad.field_violations})
    return err.value, fields


def first_event(svc: ServiceThread, request: pb.WatchJobsRequest, timeout: float = T) -> Any:
    return next(iter(svc.stub.WatchJobs(request, timeout=timeout)))


# --- item 1 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["LD_PRELOAD", "PYTHONWARNINGS", "BROWSER", "PATH", "JOBSCHEDULER_JOB_ID"])
def test_env_that_runs_code_is_refused_and_nothing_is_created(svc: ServiceThread, name: str) -> None:
    request = pb.ScheduleJobRequest(name="env", timer_job=timer(env={name: "/tmp/x"}))
    _, fields = refused(lambda: svc.stub.ScheduleJob(request, timeout=T))
    assert set(fields) == {f"timer_job.env[{name}]"}
    listed = svc.stub.ListJobs(pb.ListJobsRequest(filter=pb.JobFilter(name_prefix="env")), timeout=T)
    assert not listed.jobs


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ScheduleJobRequest(name="n", timer_job=timer(env={"A": "\0"})), "timer_job.env[A]"),
        (
            pb.ScheduleJobRequest(name="n", timer_job=timer(control_plane_endpoint="http://h/\0")),
            "timer_job.control_plane_endpoint",
        ),
        (pb.ScheduleJobRequest(name="n", timer_job=timer(timer_name="\0")), "timer_job.timer_name"),
        (pb.ScheduleJobRequest(name="n\0", timer_job=timer()), "name"),
        (pb.ScheduleJobRequest(name="n", request_id="r\0", timer_job=timer()), "request_id"),
        (pb.ScheduleJobRequest(name="n", labels={"k": "v\0"}, timer_job=timer()), "labels[k]"),
    ],
)
def test_nul_bytes_are_refused(svc: ServiceThread, request_: pb.ScheduleJobRequest, field: str) -> None:
    _, fields = refused(lambda: svc.stub.ScheduleJob(request_, timeout=T))
    assert field in fields


def test_nul_in_a_cancel_reason_is_refused(svc: ServiceThread) -> None:
    _, fields = refused(
        lambda: svc.stub.CancelJob(pb.CancelJobRequest(job_id="job-aaaaaaaaaa", reason="x\0"), timeout=T)
    )
    assert set(fields) == {"reason"}


# --- item 7 ------------------------------------------------------------------------------------


def test_huge_max_retries_is_answered_at_once(svc: ServiceThread) -> None:
    request = pb.ScheduleJobRequest(
        name="n",
        max_retries=2**31 - 1,
        retry_backoff_seconds=1,
        ttl_seconds_after_finished=100,
        timer_job=timer(),
    )
    started = time.monotonic()
    _, fields = refused(lambda: svc.stub.ScheduleJob(request, timeout=T))
    assert time.monotonic() - started < 2  # it blocked the event loop for 10-16 s
    assert set(fields) == {"max_retries"}


def test_a_huge_label_selector_is_answered_at_once(svc: ServiceThread) -> None:
    selector = "a=b," * 900_000  # 3.6 MB, within the 4 MiB message limit
    started = time.monotonic()
    _, fields = refused(
        lambda: svc.stub.ListJobs(pb.ListJobsRequest(filter=pb.JobFilter(label_selector=selector)), timeout=T)
    )
    assert time.monotonic() - started < 2  # it blocked the event loop for 7-11 s
    assert set(fields) == {"filter.label_selector"}


# --- item 9 ------------------------------------------------------------------------------------


def test_many_bad_entries_give_a_small_invalid_argument(svc: ServiceThread) -> None:
    """32 labels whose keys (echoed in field and description) are 100 KB each: 6 MB of details."""
    labels = {f"{i}{'x' * 100_000}./k": "v" for i in range(32)}
    err, fields = refused(
        lambda: svc.stub.ScheduleJob(
            pb.ScheduleJobRequest(name="n", labels=labels, timer_job=timer()), timeout=T
        )
    )
    assert fields and all(key.startswith("labels[") or key == "" for key in fields)
    assert all(len(key) <= 128 and len(text) <= 256 for key, text in fields.items())
    trailers = sum(len(k) + len(v) for k, v in err.trailing_metadata() or ())
    assert trailers < 8 * 1024
    assert len(err.details() or "") <= 512


# --- item 13 -----------------------------------------------------------------------------------


def test_out_of_range_timestamps_are_invalid_argument(svc: ServiceThread) -> None:
    bad = Timestamp(seconds=2**62)
    _, fields = refused(
        lambda: svc.stub.ScheduleJob(
            pb.ScheduleJobRequest(name="n", start_after=bad, timer_job=timer()), timeout=T
        )
    )
    assert set(fields) == {"start_after"}
    for name in ("created_after", "created_before"):
        job_filter = pb.JobFilter(**{name: Timestamp(seconds=1, nanos=-1)})
        list_request = pb.ListJobsRequest(filter=job_filter)
        _, fields = refused(lambda r=list_request: svc.stub.ListJobs(r, timeout=T))
        assert set(fields) == {f"filter.{name}"}
        watch_request = pb.WatchJobsRequest(filter=job_filter)
        _, fields = refused(lambda r=watch_request: first_event(svc, r))
        assert set(fields) == {f"filter.{name}"}


def test_malformed_tokens_are_invalid_argument(svc: ServiceThread) -> None:
    nested = base64.urlsafe_b64encode(b"[" * 100_000).decode()
    _, fields = refused(lambda: svc.stub.ListJobs(pb.ListJobsRequest(page_token=nested), timeout=T))
    assert set(fields) == {"page_token"}
    digits = "abcd1234." + "9" * 5000
    _, fields = refused(lambda: first_event(svc, pb.WatchJobsRequest(resume_token=digits)))
    assert set(fields) == {"resume_token"}


@pytest.mark.parametrize(
    ("method", "streaming"),
    [
        ("ScheduleJob", False),
        ("ListJobs", False),
        ("CancelJob", False),
        ("WatchJobs", True),
        ("GetJobLogs", True),
    ],
)
def test_an_undecodable_body_is_invalid_argument(svc: ServiceThread, method: str, streaming: bool) -> None:
    path = f"/jobscheduler.JobScheduler/{method}"
    body = b"\xff\xff\xff\xff"  # field 31, wire type 7: no such wire type
    if streaming:
        call: Callable[[], Any] = lambda: next(iter(svc.channel.unary_stream(path)(body, timeout=T)))  # noqa: E731
    else:
        call = lambda: svc.channel.unary_unary(path)(body, timeout=T)  # noqa: E731
    _, fields = refused(call)
    assert set(fields) == {"request"}


# --- fuzz: no request gives INTERNAL or UNKNOWN ------------------------------------------------

_EXTREME_TEXT = st.sampled_from(
    [
        "",
        "\0",
        "a\0b",
        "x" * 5000,
        "9" * 5000,
        "job-aaaaaaaaaa",
        "LD_PRELOAD",
        "a=b,c in (d",
        "((((((",
        "!",
        "é\u202e\u2028",
        base64.urlsafe_b64encode(b"[" * 3000).decode(),
        "abcd.12",
    ]
)
TEXT = st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=30), _EXTREME_TEXT)
INT32 = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31), 10, 11]))
TIMESTAMP = st.builds(
    Timestamp,
    seconds=st.one_of(
        st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -62135596801, 253402300800, 1_800_000_000])
    ),
    nanos=st.one_of(INT32, st.integers(0, 999_999_999)),
)
JOB_FILTER = st.builds(
    pb.JobFilter,
    type=TEXT,
    phases=st.lists(INT32, max_size=4),
    label_selector=TEXT,
    name_prefix=TEXT,
    created_after=st.one_of(st.none(), TIMESTAMP),
    created_before=st.one_of(st.none(), TIMESTAMP),
    owner=TEXT,
    queue=TEXT,
)
TIMER = st.builds(
    pb.TimerJob,
    duration_seconds=INT32,
    timer_name=TEXT,
    control_plane_endpoint=st.one_of(TEXT, st.just("http://127.0.0.1:9/")),
    image=TEXT,
    log_level=TEXT,
    env=st.dictionaries(TEXT, TEXT, max_size=4),
)


@st.composite
def schedule_requests(draw: st.DrawFn) -> pb.ScheduleJobRequest:
    request = pb.ScheduleJobRequest(
        name=draw(st.one_of(TEXT, st.just("fuzz"))),
        timer_job=draw(TIMER),
        labels=draw(st.dictionaries(TEXT, TEXT, max_size=3)),
        priority=draw(INT32),
        queue=draw(TEXT),
        delay_seconds=draw(INT32),
        max_retries=draw(INT32),
        retry_backoff_seconds=draw(INT32),
        request_id=draw(TEXT),
        timeout_seconds=draw(INT32),
        depends_on=[*draw(st.lists(TEXT, max_size=3)), MISSING_DEPENDENCY],
    )
    if draw(st.booleans()):
        request.start_after.CopyFrom(draw(TIMESTAMP))
    if draw(st.booleans()):
        request.ttl_seconds_after_finished = draw(INT32)
    return request


_SERVER_FAULTS = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=schedule_requests())
def test_fuzzed_schedule_requests_never_fault(svc: ServiceThread, request: pb.ScheduleJobRequest) -> None:
    assert code_of(lambda: svc.stub.ScheduleJob(request, timeout=T)) not in _SERVER_FAULTS


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(job_filter=JOB_FILTER, page_size=INT32, page_token=TEXT)
def test_fuzzed_list_requests_never_fault(
    svc: ServiceThread, job_filter: pb.JobFilter, page_size: int, page_token: str
) -> None:
    request = pb.ListJobsRequest(filter=job_filter, page_size=page_size, page_token=page_token)
    assert code_of(lambda: svc.stub.ListJobs(request, timeout=T)) not in _SERVER_FAULTS


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(job_filter=JOB_FILTER, resume_token=TEXT)
def test_fuzzed_watch_requests_never_fault(
    svc: ServiceThread, job_filter: pb.JobFilter, resume_token: str
) -> None:
    request = pb.WatchJobsRequest(filter=job_filter, resume_token=resume_token)
    # A valid watch waits for changes: its deadline ends it (DEADLINE_EXCEEDED is fine).
    assert code_of(lambda: first_event(svc, request, timeout=0.2)) not in _SERVER_FAULTS


def test_the_server_still_answers_after_the_fuzzing(svc: ServiceThread, tmp_path: pathlib.Path) -> None:
    job = svc.stub.ScheduleJob(
        pb.ScheduleJobRequest(name="after", timer_job=timer(), depends_on=[MISSING_DEPENDENCY]), timeout=T
    ).job
    assert svc.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job.job_id), timeout=T).job.name == "after"
