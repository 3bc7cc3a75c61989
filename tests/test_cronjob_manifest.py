"""The pure CronJob builder (core.schedules.cronjob): a schedule and its rendered job -> a batch/v1
CronJob, valid against the API schema and Pod Security "restricted" for every job type, whose jobs
(as the CronJob controller makes them) are valid Jobs that name no placeholder id; and back."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pod_security import check_object
from test_pod_security import EXAMPLES, K8S_VERSION, REGISTRY

from jobscheduler.api.convert import schedule_request
from jobscheduler.api.convert_schedules import schedule as schedule_message
from jobscheduler.core.annotations import record_fields
from jobscheduler.core.errors import BackendError, InvalidArgument
from jobscheduler.core.manifests import (
    ADMISSION_ANNOTATION,
    CRONJOB_SCHEDULED_ANNOTATION,
    ENQUEUED_AT_ANNOTATION,
    JOB_ID_LABEL,
    REQUEST_ANNOTATION,
    SCHEDULE_LABEL,
    JobDefaults,
)
from jobscheduler.core.model import Priority, ScheduleRequest
from jobscheduler.core.naming import dns1123_label_problem
from jobscheduler.core.requests import render_request
from jobscheduler.core.schedules.cronjob import (
    JOB_ID_ENV,
    JOB_NAME_POD_LABEL,
    MAX_CRONJOB_NAME,
    active_job_names,
    cronjob_manifest,
    cronjob_name,
    schedule_from_cronjob,
    validate_cronjob_manifest,
)
from jobscheduler.core.schedules.model import (
    ConcurrencyPolicy,
    Schedule,
    ScheduleSpec,
    ScheduleStatus,
    ScheduleView,
)
from jobscheduler.core.schedules.spec import MAX_STARTING_DEADLINE_SECONDS

NS = "jobscheduler"
PLACEHOLDER = "job-placeholdr"
CREATED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rendered(request: ScheduleRequest, owner: str = "alice") -> dict[str, Any]:
    """The job as JobService.prepare(...).render(placeholder) renders it (held, enqueued-at set)."""
    handler = REGISTRY.for_request_field(request.job_field)
    manifest = render_request(
        handler,
        handler.parse(request.params),
        request,
        job_id=PLACEHOLDER,
        owner=owner,
        defaults=JobDefaults(namespace=NS),
    )
    manifest["spec"]["suspend"] = True
    manifest["metadata"]["annotations"][ENQUEUED_AT_ANNOTATION] = "2026-03-01T12:00:00.000000Z"
    return manifest


def a_schedule(job: ScheduleRequest, **spec: Any) -> Schedule:
    fields: dict[str, Any] = {"name": "nightly", "cron": "*/5 * * * *", "job": job, **spec}
    return Schedule(spec=ScheduleSpec(**fields), owner="alice", created_at=CREATED, updated_at=CREATED)


def timer() -> ScheduleRequest:
    return schedule_request(EXAMPLES["timer"][0])


TIMER = schedule_request(EXAMPLES["timer"][0])
TIMER_JOB = rendered(TIMER)


def made_job(cronjob: dict[str, Any], at: datetime) -> dict[str, Any]:
    """The Job the CronJob controller makes for the run due ``at`` (getJobFromTemplate2)."""
    template = cronjob["spec"]["jobTemplate"]
    annotations = {**template["metadata"]["annotations"], CRONJOB_SCHEDULED_ANNOTATION: at.isoformat()}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"{cronjob['metadata']['name']}-{int(at.timestamp()) // 60}",
            "namespace": NS,
            "labels": dict(template["metadata"]["labels"]),
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": cronjob["metadata"]["name"],
                    "uid": "5f0c1b8e-0000-4000-8000-000000000000",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": json.loads(json.dumps(template["spec"])),
    }


@pytest.mark.parametrize(
    "example", [e for examples in EXAMPLES.values() for e in examples], ids=lambda e: e.WhichOneof("job")
)
def test_every_job_type_makes_a_valid_cronjob_and_valid_jobs(example: Any) -> None:
    request = schedule_request(example)
    cronjob = cronjob_manifest(a_schedule(request), rendered(request), namespace=NS)
    kubernetes_validate.validate(cronjob, K8S_VERSION, strict=True)
    assert check_object(cronjob) == []
    job = made_job(cronjob, datetime(2026, 3, 29, 1, 5, tzinfo=UTC))
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    assert len(job["metadata"]["name"]) <= 63
    assert PLACEHOLDER not in json.dumps(cronjob)
    assert JOB_ID_LABEL not in json.dumps(cronjob)  # the id is the Job's name, nothing else


def test_the_job_id_comes_from_the_jobs_name() -> None:
    cronjob = cronjob_manifest(a_schedule(timer()), rendered(timer()), namespace=NS)
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["JOB_ID"] == {
        "name": "JOB_ID",
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{JOB_NAME_POD_LABEL}']"}},
    }
    assert JOB_ID_ENV not in env  # nothing else named the id


def test_a_value_containing_the_id_refers_to_it_by_expansion() -> None:
    job = rendered(timer())
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["env"].append({"name": "REPORT_URL", "value": f"http://cp:8080/jobs/{PLACEHOLDER}/report"})
    container["args"] = [*container.get("args", []), f"--tag={PLACEHOLDER}"]
    cronjob = cronjob_manifest(a_schedule(timer()), job, namespace=NS)
    (out,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    names = [e["name"] for e in out["env"]]
    assert names[0] == JOB_ID_ENV  # defined before the values that refer to it
    assert out["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == f"metadata.labels['{JOB_NAME_POD_LABEL}']"
    assert {"name": "REPORT_URL", "value": f"http://cp:8080/jobs/$({JOB_ID_ENV})/report"} in out["env"]
    assert out["args"][-1] == f"--tag=$({JOB_ID_ENV})"
    kubernetes_validate.validate(cronjob, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    ("where", "path"),
    [
        ("pod annotation", "spec.jobTemplate.spec.template.metadata.annotations[x.example/id]"),
        ("label value", "spec.jobTemplate.metadata.labels.team"),
    ],
)
def test_the_placeholder_anywhere_else_is_the_callers_invalid_argument(where: str, path: str) -> None:
    """A request may carry the placeholder's text (a label value): INVALID_ARGUMENT on job naming
    where, never an internal error, and never a Job with a wrong id."""
    job = rendered(timer())
    if where == "label value":
        job["metadata"]["labels"]["team"] = PLACEHOLDER
    else:
        job["spec"]["template"]["metadata"].setdefault("annotations", {})["x.example/id"] = PLACEHOLDER
    with pytest.raises(InvalidArgument) as info:
        cronjob_manifest(a_schedule(timer()), job, namespace=NS)
    ((field, message),) = [(v.field, v.description) for v in info.value.violations]
    assert field == "job" and path in message and PLACEHOLDER in message


def test_its_jobs_are_held_for_admission_and_name_their_schedule() -> None:
    job = rendered(timer())
    job["spec"]["suspend"] = False  # even if the job would have started at once
    cronjob = cronjob_manifest(a_schedule(timer()), job, namespace=NS)
    template = cronjob["spec"]["jobTemplate"]
    assert template["spec"]["suspend"] is True
    assert "name" not in template["metadata"]
    annotations = template["metadata"]["annotations"]
    assert annotations[ADMISSION_ANNOTATION] == "queued"
    assert ENQUEUED_AT_ANNOTATION not in annotations  # FIFO by the Job's creationTimestamp
    assert template["metadata"]["labels"][SCHEDULE_LABEL] == "nightly"
    made = made_job(cronjob, datetime(2026, 3, 29, 1, 5, tzinfo=UTC))
    fields = record_fields(made["metadata"]["annotations"])
    assert fields["schedule"] == "nightly"
    assert fields["scheduled_at"] == datetime(2026, 3, 29, 1, 5, tzinfo=UTC)
    assert fields["owner"] == "alice" and fields["enqueued_at"] is None


def test_the_spec_maps_to_the_cronjob_spec() -> None:
    schedule = a_schedule(
        timer(),
        time_zone="Europe/Berlin",
        concurrency_policy=ConcurrencyPolicy.FORBID,
        starting_deadline_seconds=120,
        suspend=True,
        successful_jobs_history_limit=5,
        failed_jobs_history_limit=2,
    )
    spec = cronjob_manifest(schedule, rendered(timer()), namespace=NS)["spec"]
    assert {k: v for k, v in spec.items() if k != "jobTemplate"} == {
        "schedule": "*/5 * * * *",
        "timeZone": "Europe/Berlin",
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": 120,
        "suspend": True,
        "successfulJobsHistoryLimit": 5,
        "failedJobsHistoryLimit": 2,
    }
    unset_zone = cronjob_manifest(a_schedule(timer()), rendered(timer()), namespace=NS)["spec"]
    assert unset_zone["timeZone"] == "Etc/UTC"  # not the controller manager's local zone
    assert "startingDeadlineSeconds" not in unset_zone


def stored(cronjob: dict[str, Any], **status: Any) -> dict[str, Any]:
    """The CronJob as the API server returns it: a creationTimestamp, and the controller's status."""
    out = json.loads(json.dumps(cronjob))
    out["metadata"]["creationTimestamp"] = "2026-03-01T12:00:00Z"
    out["status"] = status
    return out


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"time_zone": "Etc/UTC"},
        {
            "time_zone": "America/New_York",
            "concurrency_policy": ConcurrencyPolicy.REPLACE,
            "starting_deadline_seconds": 0,
            "suspend": True,
            "successful_jobs_history_limit": 0,
            "failed_jobs_history_limit": 7,
            "description": "the nightly report, ünïcode too",
            "template": "report",
            "template_version": 3,
        },
    ],
)
def test_round_trip(spec: dict[str, Any]) -> None:
    job = ScheduleRequest(
        name="report",
        job_field="timer_job",
        params=timer().params,
        labels={"team": "data"},
        timeout_seconds=600,
        max_retries=2,
        retry_backoff_seconds=10,
        queue="batch",
        priority=Priority.HIGH,
    )
    status = ScheduleStatus(
        missed_runs=4, last_missed_time=datetime(2026, 3, 2, 3, 0, tzinfo=UTC), skipped_runs=2
    )
    schedule = Schedule(
        spec=ScheduleSpec(name="nightly", cron="@daily", job=job, **spec),
        owner="system:serviceaccount:ci:runner",
        created_at=CREATED,
        updated_at=datetime(2026, 3, 1, 13, 0, 0, 123456, tzinfo=UTC),
        status=status,
    )
    cronjob = cronjob_manifest(schedule, rendered(job, schedule.owner), namespace=NS)
    back = schedule_from_cronjob(
        stored(
            cronjob,
            lastScheduleTime="2026-03-02T00:00:00Z",
            lastSuccessfulTime="2026-03-02T00:00:31Z",
            active=[{"kind": "Job", "name": "nightly-x-29548800", "namespace": NS}],
        )
    )
    assert back.spec == schedule.spec
    assert (back.owner, back.created_at, back.updated_at) == (schedule.owner, CREATED, schedule.updated_at)
    assert back.status == ScheduleStatus(
        last_schedule_time=datetime(2026, 3, 2, tzinfo=UTC),
        last_successful_time=datetime(2026, 3, 2, 0, 0, 31, tzinfo=UTC),
        missed_runs=4,
        last_missed_time=status.last_missed_time,
        skipped_runs=2,
    )
    assert active_job_names(stored(cronjob, active=[{"name": "a"}, {"kind": "Job"}])) == ("a",)


def test_validation_names_what_is_wrong() -> None:
    good = cronjob_manifest(a_schedule(timer()), rendered(timer()), namespace=NS)
    validate_cronjob_manifest(good)
    for mutate, fragment in [
        (lambda m: m["spec"]["jobTemplate"]["spec"].update(suspend=False), "suspend must be true"),
        (lambda m: m["spec"].update(schedule="TZ=UTC * * * * *"), "spec.schedule"),
        (lambda m: m["spec"].update(concurrencyPolicy="Sometimes"), "concurrencyPolicy"),
        (lambda m: m["metadata"].update(name="x" * 53), "metadata.name"),
        (lambda m: m["spec"]["jobTemplate"]["metadata"].update(name="job-1"), "must not name a job"),
        (
            lambda m: m["spec"]["jobTemplate"]["spec"]["template"]["spec"].update(hostNetwork=True),
            "host namespaces",
        ),
    ]:
        bad = json.loads(json.dumps(good))
        mutate(bad)
        with pytest.raises(BackendError, match=fragment):
            validate_cronjob_manifest(bad)


def test_an_edited_request_is_refused_when_read_back() -> None:
    cronjob = stored(cronjob_manifest(a_schedule(timer()), rendered(timer()), namespace=NS))
    cronjob["spec"]["jobTemplate"]["metadata"]["annotations"][REQUEST_ANNOTATION] = "{"
    with pytest.raises(Exception, match="not JSON"):
        schedule_from_cronjob(cronjob)


NAMES = st.from_regex(r"[a-z]([-a-z0-9]{0,50}[a-z0-9])?", fullmatch=True)


@given(namespace=st.sampled_from(["default", "jobs"]), owner=st.text(max_size=80), name=NAMES)
def test_cronjob_names_are_valid_and_short_enough(namespace: str, owner: str, name: str) -> None:
    derived = cronjob_name(namespace, owner, name)
    assert dns1123_label_problem(derived) is None
    assert len(derived) <= MAX_CRONJOB_NAME
    assert len(f"{derived}-{2**33}") <= 63  # the controller's Job names, for centuries to come
    assert derived.startswith(name[:10].rstrip("-"))


@given(owners=st.lists(st.text(max_size=20), min_size=2, max_size=2, unique=True), name=NAMES)
def test_owners_schedules_of_one_name_never_share_a_cronjob(owners: list[str], name: str) -> None:
    assert cronjob_name("default", owners[0], name) != cronjob_name("default", owners[1], name)


@given(
    name=NAMES,
    owner=st.text(max_size=40),
    zone=st.sampled_from(["", "Etc/UTC", "UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
    policy=st.sampled_from(list(ConcurrencyPolicy)),
    deadline=st.none() | st.integers(0, MAX_STARTING_DEADLINE_SECONDS),
    suspend=st.booleans(),
    limits=st.tuples(st.integers(0, 1000), st.integers(0, 1000)),
    description=st.text(max_size=200),
    template=st.sampled_from([("", 0), ("base", 1), ("nightly-report", 12)]),
)
def test_round_trip_of_any_spec(
    name: str,
    owner: str,
    zone: str,
    policy: ConcurrencyPolicy,
    deadline: int | None,
    suspend: bool,
    limits: tuple[int, int],
    description: str,
    template: tuple[str, int],
) -> None:
    spec = ScheduleSpec(
        name=name,
        cron="*/5 * * * *",
        job=TIMER,
        time_zone=zone,
        concurrency_policy=policy,
        starting_deadline_seconds=deadline,
        suspend=suspend,
        successful_jobs_history_limit=limits[0],
        failed_jobs_history_limit=limits[1],
        description=description,
        template=template[0],
        template_version=template[1],
    )
    schedule = Schedule(spec=spec, owner=owner, created_at=CREATED, updated_at=CREATED)
    back = schedule_from_cronjob(stored(cronjob_manifest(schedule, TIMER_JOB, namespace=NS)))
    assert (back.spec, back.owner, back.created_at) == (spec, owner, CREATED)


@pytest.mark.parametrize("deadline", [2**40, -1, True, "300", 366 * 86400 + 1])
def test_an_edited_starting_deadline_reads_back_as_none_and_converts(deadline: Any) -> None:
    """startingDeadlineSeconds is an int64 anyone in the namespace may set: one the API's int32 cannot
    hold made GetSchedule and the owner's whole ListSchedules INTERNAL."""
    cronjob = stored(
        cronjob_manifest(a_schedule(timer(), starting_deadline_seconds=60), rendered(timer()), namespace=NS)
    )
    assert schedule_from_cronjob(cronjob).spec.starting_deadline_seconds == 60
    cronjob["spec"]["startingDeadlineSeconds"] = deadline
    read = schedule_from_cronjob(cronjob)
    assert read.spec.starting_deadline_seconds is None
    assert not schedule_message(ScheduleView(read)).HasField("starting_deadline_seconds")
