"""core.rerun: a rerun's request from a finished job's stored request and the overrides."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from jobscheduler.core.errors import FailedPrecondition, InvalidArgument
from jobscheduler.core.manifests import REQUEST_ANNOTATION
from jobscheduler.core.model import JobPhase, JobRecord, Priority, ScheduleRequest
from jobscheduler.core.overlay import NOTHING as EMPTY
from jobscheduler.core.requests import stored_request
from jobscheduler.core.rerun import rerun_request

TIMER = {"duration_seconds": 5, "timer_name": "t", "control_plane_endpoint": "http://127.0.0.1:9"}


def timer(**fields: Any) -> ScheduleRequest:
    return ScheduleRequest(name=fields.pop("name", ""), job_field="timer_job", params=TIMER, **fields)


# --- rerun ------------------------------------------------------------------------------------------


def _record(phase: JobPhase, **fields: Any) -> JobRecord:
    return JobRecord.build(
        job_id="job-aaaaaaaaaa", name="n", type="timer", namespace="default", phase=phase, **fields
    )


def _manifest(request: ScheduleRequest) -> dict[str, Any]:
    return {"metadata": {"annotations": {REQUEST_ANNOTATION: stored_request(request)}}}


def test_rerun_request_overlays_links_and_keeps_the_template() -> None:
    original = timer(name="orig", labels={"a": "1"})
    record = _record(JobPhase.FAILED, template="tpl", template_version=3)
    over = ScheduleRequest(name="", job_field=None, params={}, labels={"b": "2"}, priority=Priority.HIGH)
    request, origin, digest = rerun_request(record, _manifest(original), over, "req-1")
    assert (request.name, request.params, dict(request.labels)) == ("orig", TIMER, {"a": "1", "b": "2"})
    assert (request.priority, request.request_id) == (Priority.HIGH, "req-1")
    assert (origin.rerun_of, origin.template, origin.template_version) == ("job-aaaaaaaaaa", "tpl", 3)
    assert digest != rerun_request(record, _manifest(original), None, "req-1")[2]
    assert digest == rerun_request(record, _manifest(original), over, "req-1")[2]


@pytest.mark.parametrize("phase", [JobPhase.RUNNING, JobPhase.PENDING, JobPhase.QUEUED, JobPhase.WAITING])
def test_an_unfinished_job_cannot_be_rerun(phase: JobPhase) -> None:
    with pytest.raises(FailedPrecondition):
        rerun_request(_record(phase), _manifest(timer(name="n")), None, "")


@pytest.mark.parametrize("annotations", [{}, {REQUEST_ANNOTATION: "{"}, {REQUEST_ANNOTATION: '{"name": 1}'}])
def test_a_job_without_a_valid_stored_request_cannot_be_rerun(annotations: dict[str, str]) -> None:
    with pytest.raises(FailedPrecondition):
        rerun_request(_record(JobPhase.SUCCEEDED), {"metadata": {"annotations": annotations}}, None, "")


@pytest.mark.parametrize("field", ["request_id", "template", "template_version"])
def test_overrides_that_a_rerun_does_not_take(field: str) -> None:
    value = 2 if field == "template_version" else "x"
    over = dataclasses.replace(EMPTY, **{field: value})
    with pytest.raises(InvalidArgument) as caught:
        rerun_request(_record(JobPhase.SUCCEEDED), _manifest(timer(name="n")), over, "")
    assert [v.field for v in caught.value.violations] == [f"overrides.{field}"]
