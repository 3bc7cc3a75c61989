"""Hostile requests to the schedule, template and rerun RPCs, over a real gRPC channel on the
local backend: each is INVALID_ARGUMENT naming its field (or another definite code), never
INTERNAL or UNKNOWN, and nothing is stored for a refused one. And stored templates edited by hand
(a ConfigMap on the emulator, a SQLite row) into what no request could store."""

from __future__ import annotations

import pathlib
import sqlite3
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from conftest import EmulatorThread, ServiceThread, kubernetes_service, local_service
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_schedules_api import T, refused, timer_job
from test_templates_api import timer

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.backends.kubernetes._templates import configmap_name


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceThread]:
    service = local_service(tmp_path_factory.mktemp("hostile-schedules"))
    try:
        yield service
    finally:
        service.stop()


@pytest.mark.parametrize("description", ["a\0b", "\x1b[31mred", "bell\x07", "\u202eevil", "😀" * 300])
def test_a_schedule_description_is_bounded_and_printable(svc: ServiceThread, description: str) -> None:
    """As a template's: at most 1024 bytes, no control characters (it goes to logs, terminals and
    a CronJob annotation); on create and on update."""
    create = pb.CreateScheduleRequest(
        name="described", cron="0 3 * * *", job=timer_job(), description=description
    )
    code, details = refused(svc.stub.CreateSchedule, create)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and details.startswith("description:"), details
    svc.stub.CreateSchedule(
        pb.CreateScheduleRequest(name="plain", cron="0 3 * * *", job=timer_job()), timeout=T
    )
    try:
        update = pb.UpdateScheduleRequest(name="plain", description=description)
        code, details = refused(svc.stub.UpdateSchedule, update)
        assert code is grpc.StatusCode.INVALID_ARGUMENT and details.startswith("description:"), details
        got = svc.stub.GetSchedule(pb.GetScheduleRequest(name="plain"), timeout=T)
        assert got.description == ""
    finally:
        svc.stub.DeleteSchedule(pb.DeleteScheduleRequest(name="plain"), timeout=T)
    names = [s.name for s in svc.stub.ListSchedules(pb.ListSchedulesRequest(), timeout=T).schedules]
    assert "described" not in names


def test_a_schedule_whose_template_was_deleted_is_a_failed_precondition(svc: ServiceThread) -> None:
    """Its stored job names nothing any more: TriggerSchedule (whose request has no template field)
    and an UpdateSchedule that gives no job are FAILED_PRECONDITION saying so, not INVALID_ARGUMENT on
    a field the request does not have; an update with a job mends it."""
    stub = svc.stub
    stub.CreateJobTemplate(pb.CreateJobTemplateRequest(name="gone", job=timer_job()), timeout=T)
    job = pb.ScheduleJobRequest(template="gone")
    stub.CreateSchedule(pb.CreateScheduleRequest(name="orphan", cron="0 3 * * *", job=job), timeout=T)
    stub.DeleteJobTemplate(pb.DeleteJobTemplateRequest(name="gone"), timeout=T)
    try:
        code, details = refused(stub.TriggerSchedule, pb.TriggerScheduleRequest(name="orphan"))
        assert code is grpc.StatusCode.FAILED_PRECONDITION and "no job template 'gone'" in details, details
        code, details = refused(stub.UpdateSchedule, pb.UpdateScheduleRequest(name="orphan", suspend=True))
        assert code is grpc.StatusCode.FAILED_PRECONDITION and "give UpdateSchedule a job" in details, details
        # A bad field of the update itself is still the caller's INVALID_ARGUMENT, naming it.
        code, details = refused(
            stub.UpdateSchedule, pb.UpdateScheduleRequest(name="orphan", cron="61 * * * *")
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT and details.startswith("cron:"), details
        code, details = refused(stub.UpdateSchedule, pb.UpdateScheduleRequest(name="orphan", job=job))
        assert code is grpc.StatusCode.INVALID_ARGUMENT and details.startswith("job.template:"), details
        mended = stub.UpdateSchedule(pb.UpdateScheduleRequest(name="orphan", job=timer_job()), timeout=T)
        assert mended.job.timer_job.duration_seconds == 30 and not mended.job.template
        triggered = stub.TriggerSchedule(pb.TriggerScheduleRequest(name="orphan"), timeout=T)
        stub.CancelJob(pb.CancelJobRequest(job_id=triggered.job_id), timeout=T)
    finally:
        stub.DeleteSchedule(pb.DeleteScheduleRequest(name="orphan"), timeout=T)


INT32 = st.integers(-(2**31), 2**31 - 1)
TEXT = st.text(max_size=80) | st.sampled_from(
    ["", "nightly", "0 3 * * *", "@hourly", "Europe/Berlin", "a" * 60]
)
CRON = TEXT | st.lists(
    st.sampled_from(["*", "*/5", "0", "59", "1-5", "MON", "JAN", "31", "2", "?"]), max_size=6
).map(" ".join)


@st.composite
def jobs(draw: st.DrawFn) -> pb.ScheduleJobRequest | None:
    kind = draw(st.sampled_from(["none", "timer", "template", "bare"]))
    if kind == "none":
        return None
    fields: dict[str, Any] = {
        "labels": draw(st.dictionaries(TEXT, TEXT, max_size=3)),
        "priority": draw(st.integers(-3, 9)),
        "max_retries": draw(INT32),
        "template_version": draw(st.sampled_from([0, 1, -1, 2**31 - 1])),
    }
    if kind == "timer":
        return timer_job(**fields)
    if kind == "template":
        return pb.ScheduleJobRequest(template=draw(st.sampled_from(["known", "gone", "X", ""])), **fields)
    return pb.ScheduleJobRequest(name=draw(TEXT), **fields)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


@st.composite
def schedule_calls(draw: st.DrawFn) -> tuple[str, Any]:
    rpc = draw(st.sampled_from(["CreateSchedule", "UpdateSchedule", "ListSchedules", "TriggerSchedule"]))
    name = draw(st.sampled_from(["fuzz", "fuzz-2"]) | TEXT)
    if rpc == "ListSchedules":
        return rpc, pb.ListSchedulesRequest(
            page_size=draw(INT32), page_token=draw(TEXT), owner=draw(TEXT), name_prefix=draw(TEXT)
        )
    if rpc == "TriggerSchedule":
        return rpc, pb.TriggerScheduleRequest(name=name)
    fields = {
        "cron": draw(optional(CRON)),
        "time_zone": draw(optional(TEXT)),
        "job": draw(jobs()),
        "concurrency_policy": draw(optional(st.integers(-1, 5))),
        "starting_deadline_seconds": draw(optional(INT32)),
        "successful_jobs_history_limit": draw(optional(INT32)),
        "failed_jobs_history_limit": draw(optional(INT32)),
        "description": draw(optional(TEXT)),
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    if rpc == "CreateSchedule":
        return rpc, pb.CreateScheduleRequest(name=name, suspend=True, **fields)
    return rpc, pb.UpdateScheduleRequest(name=name, clear_starting_deadline=draw(st.booleans()), **fields)


@st.composite
def template_calls(draw: st.DrawFn) -> tuple[str, Any]:
    rpc = draw(
        st.sampled_from(
            ["CreateJobTemplate", "UpdateJobTemplate", "GetJobTemplate", "ListJobTemplates", "RerunJob"]
        )
    )
    name = draw(st.sampled_from(["known", "fuzz-t"]) | TEXT)
    if rpc == "GetJobTemplate":
        return rpc, pb.GetJobTemplateRequest(name=name, version=draw(INT32))
    if rpc == "ListJobTemplates":
        return rpc, pb.ListJobTemplatesRequest(
            page_size=draw(INT32), page_token=draw(TEXT), name_prefix=draw(TEXT)
        )
    if rpc == "RerunJob":
        return rpc, pb.RerunJobRequest(job_id=draw(TEXT), overrides=draw(jobs()), request_id=draw(TEXT))
    job, description = draw(jobs()), draw(optional(TEXT))
    fields = {k: v for k, v in {"job": job, "description": description}.items() if v is not None}
    if rpc == "CreateJobTemplate":
        return rpc, pb.CreateJobTemplateRequest(name=name, **fields)
    return rpc, pb.UpdateJobTemplateRequest(name=name, **fields)


FAULTS = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


def answered(svc: ServiceThread, call: tuple[str, Any]) -> None:
    rpc, request = call
    try:
        getattr(svc.stub, rpc)(request, timeout=T)
    except grpc.RpcError as exc:
        assert exc.code() not in FAULTS, (rpc, request, exc.details())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=schedule_calls())
def test_fuzzed_schedule_calls_never_fault(svc: ServiceThread, call: tuple[str, Any]) -> None:
    answered(svc, call)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=template_calls())
def test_fuzzed_template_and_rerun_calls_never_fault(svc: ServiceThread, call: tuple[str, Any]) -> None:
    answered(svc, call)


@pytest.mark.parametrize(
    ("version", "description", "created"),
    [(2**31, "big", ""), (5, "\x1b[2Jwiped", ""), (5, "early", "0001-01-01T00:00:00+14:00")],
)
def test_on_kubernetes_an_edited_configmap_no_request_could_store_is_not_a_version(
    emulator: EmulatorThread, kubeconfig: pathlib.Path, version: int, description: str, created: str
) -> None:
    """A ConfigMap under a version's own name and labels (anyone in the namespace may make one) with
    a version past the API's int32 (GetJobTemplate, ListJobTemplates and every job made from it were
    INTERNAL), a description no request may set or a time out of range is not read as a version."""
    svc = kubernetes_service(kubeconfig)
    try:
        job = pb.ScheduleJobRequest(timer_job=timer())
        svc.stub.CreateJobTemplate(pb.CreateJobTemplateRequest(name="a", job=job), timeout=T)
        (real,) = emulator.request("GET", "/api/v1/namespaces/default/configmaps")["items"]
        name = configmap_name("default", "anonymous", "a", version)
        labels = {**real["metadata"]["labels"], "jobscheduler.io/job-template-version": str(version)}
        data = {**real["data"], "version": str(version), "description": description}
        data["created-at"] = created or data["created-at"]
        forged = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels},
            "data": data,
        }
        emulator.request("POST", "/api/v1/namespaces/default/configmaps", forged)
        got = svc.stub.GetJobTemplate(pb.GetJobTemplateRequest(name="a"), timeout=T)
        assert got.version == 1 and got.description == ""
        listed = svc.stub.ListJobTemplates(pb.ListJobTemplatesRequest(), timeout=T).templates
        assert [(t.name, t.version) for t in listed] == [("a", 1)]
        made = svc.stub.ScheduleJob(pb.ScheduleJobRequest(template="a"), timeout=T)
        assert made.job.template_version == 1
    finally:
        svc.stop()


@pytest.mark.parametrize(
    "edit",
    [
        "version = 1099511627776",
        "created_at = '0001-01-01T00:00:00+14:00'",
        "created_at = '2026-01-01T00:00:00'",
        "description = 'a' || char(27) || '[2J'",
    ],
)
def test_locally_a_version_row_edited_into_what_no_request_stores_is_a_failed_precondition(
    tmp_path: pathlib.Path, edit: str
) -> None:
    """A version past the API's int32 or a time out of range in UTC made GetJobTemplate and the
    owner's whole ListJobTemplates INTERNAL; now the version is FAILED_PRECONDITION and left out of
    the list, the other templates still listed."""
    svc = local_service(tmp_path / "data")
    try:
        job = pb.ScheduleJobRequest(timer_job=timer())
        for name in ("edited", "intact"):
            svc.stub.CreateJobTemplate(pb.CreateJobTemplateRequest(name=name, job=job), timeout=T)
        db = sqlite3.connect(tmp_path / "data" / "jobscheduler.db")
        with db:
            db.execute(f"UPDATE job_templates SET {edit} WHERE name = 'edited'")
        db.close()
        with pytest.raises(grpc.RpcError) as info:
            svc.stub.GetJobTemplate(pb.GetJobTemplateRequest(name="edited"), timeout=T)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
        listed = svc.stub.ListJobTemplates(pb.ListJobTemplatesRequest(), timeout=T).templates
        assert [t.name for t in listed] == ["intact"]
    finally:
        svc.stop()
