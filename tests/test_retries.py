"""Retry rules, and a retry rendered again from the request stored on the failed Job (never a copy
of the failed Job's spec), with a Job as a real API server returns it."""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import kubernetes_validate
import pytest
from pod_security import check_object

from jobscheduler.core.annotations import origin_metadata, record_fields
from jobscheduler.core.errors import BackendError, InvalidArgument
from jobscheduler.core.index import JobIndex
from jobscheduler.core.limits import ImagePolicy
from jobscheduler.core.manifests import REQUEST_ANNOTATION, JobDefaults
from jobscheduler.core.model import JobOrigin, JobPhase, JobRecord, Priority, ScheduleRequest
from jobscheduler.core.ports import JobBackend
from jobscheduler.core.requests import check_manifest, parse_work, render_request
from jobscheduler.core.retries import MAX_RETRY_DELAY_SECONDS, RetryController, retry_due, retry_job_id
from jobscheduler.jobtypes import builtin_registry

K8S_VERSION = "1.31.0"
UID = "0e9d2f9a-5b0c-4f7e-9d8c-6c1b9b7f0a11"
IMAGE = "ghcr.io/jobscheduler/jobscheduler:1.0"
REGISTRY = builtin_registry(timer_image=IMAGE)
DEFAULTS = JobDefaults(namespace="jobs")
AT = datetime(2026, 11, 23, 10, 0, 1, 250000, tzinfo=UTC)
ROOT = "job-abcdefghij"
#: env not in name order: a retry renders it in the same order ($(Z) refers to Z defined before).
TIMER = {
    "duration_seconds": 5,
    "timer_name": "t",
    "control_plane_endpoint": "http://cp:1",
    "env": {"Z": "1", "A": "$(Z)"},
}


def request(**fields: Any) -> ScheduleRequest:
    base: dict[str, Any] = {
        "name": "nightly",
        "job_field": "timer_job",
        "params": TIMER,
        "labels": {"team": "a"},
        "timeout_seconds": 120,
        "ttl_seconds_after_finished": 0,
        "max_retries": 2,
        "retry_backoff_seconds": 5,
        "queue": "batch",
        "priority": Priority.HIGH,
        # This submission only: a retry inherits neither.
        "depends_on": ("job-other00001",),
        "request_id": "r-1",
    }
    return ScheduleRequest(**{**base, **fields})


def stored_job(req: ScheduleRequest | None = None, job_id: str = ROOT) -> dict[str, Any]:
    """The Job ScheduleJob creates for ``req``, as `kubectl get job -o json` shows it after it failed."""
    req = req or request()
    handler, params = parse_work(REGISTRY, req, None)
    job = render_request(handler, params, req, job_id=job_id, owner="alice", defaults=DEFAULTS)
    check_manifest(job, handler, None)
    job["metadata"]["annotations"].update(
        {
            "jobscheduler.io/cancel-reason": "should not be inherited",
            "jobscheduler.io/depends-on": "job-other00001",
            "jobscheduler.io/request-id": "r-1",
            "jobscheduler.io/request-hash": "0123456789abcdef",
        }
    )
    job["metadata"].update(
        uid=UID,
        resourceVersion="4711",
        creationTimestamp="2026-11-23T10:00:00Z",
        generation=1,
        managedFields=[{"manager": "kube-controller-manager", "operation": "Update"}],
    )
    job["spec"]["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": UID}}
    job["spec"]["suspend"] = False
    job["spec"]["template"]["metadata"]["labels"].update(
        {"batch.kubernetes.io/controller-uid": UID, "controller-uid": UID, "job-name": job_id}
    )
    job["status"] = {
        "failed": 1,
        "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
    }
    return job


def failed_record(job: dict[str, Any]) -> JobRecord:
    return JobRecord.build(
        job_id=job["metadata"]["name"],
        name="nightly",
        type="timer",
        namespace="jobs",
        phase=JobPhase.FAILED,
        reason="BackoffLimitExceeded",
        finished_at=AT,
        **record_fields(job["metadata"]["annotations"]),
    )


def controller(backend: Any = None, images: ImagePolicy | None = None, **options: Any) -> RetryController:
    return RetryController(
        cast(JobBackend, backend),
        JobIndex(),
        registry=REGISTRY,
        defaults=DEFAULTS,
        images=images,
        clock=lambda: AT,
        **options,
    )


def retry_of(job: dict[str, Any], number: int = 1, images: ImagePolicy | None = None) -> dict[str, Any]:
    return controller(images=images).render(
        job["metadata"]["annotations"],
        failed_record(job),
        job_id=retry_job_id(ROOT, number),
        root=ROOT,
        number=number,
    )


def test_a_retry_is_the_same_work_rendered_again_as_a_new_linked_held_job() -> None:
    failed = stored_job()
    before = copy.deepcopy(failed)
    retry = retry_of(failed)
    assert failed == before  # the failed Job is only read
    meta, job_id = retry["metadata"], retry_job_id(ROOT, 1)
    assert meta["name"] == job_id and meta["namespace"] == "jobs"
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"):
        assert key not in meta
    assert "status" not in retry and "selector" not in retry["spec"]
    # Held in the failed job's queue: admitted when that queue has room, like any job.
    assert retry["spec"]["suspend"] is True
    annotations, old = meta["annotations"], failed["metadata"]["annotations"]
    assert annotations["jobscheduler.io/admission"] == "queued"
    assert annotations["jobscheduler.io/enqueued-at"] == "2026-11-23T10:00:01.250000Z"
    assert (
        annotations["jobscheduler.io/retry-of"] == ROOT and annotations["jobscheduler.io/retry-number"] == "1"
    )
    for key in (
        "owner",
        "name",
        "type",
        "max-retries",
        "retry-backoff-seconds",
        "queue",
        "priority",
        "request",
    ):
        assert annotations[f"jobscheduler.io/{key}"] == old[f"jobscheduler.io/{key}"], key
    for key in ("cancel-reason", "depends-on", "request-id", "request-hash", "start-after"):
        assert f"jobscheduler.io/{key}" not in annotations
    assert meta["labels"] == {
        **failed["metadata"]["labels"],
        "jobscheduler.io/job-id": job_id,
        "jobscheduler.io/retry-of": ROOT,
    }
    template_labels = retry["spec"]["template"]["metadata"]["labels"]
    assert not {"controller-uid", "job-name", "batch.kubernetes.io/controller-uid"} & set(template_labels)
    assert template_labels["jobscheduler.io/job-id"] == job_id
    # The same work to the letter (JOB_ID included: the chain's first, as before), same limits.
    assert retry["spec"]["template"]["spec"] == failed["spec"]["template"]["spec"]
    for key in ("activeDeadlineSeconds", "backoffLimit", "podFailurePolicy"):
        assert retry["spec"][key] == failed["spec"][key]
    assert "ttlSecondsAfterFinished" not in retry["spec"]  # ttl 0: kept until deleted, as requested
    kubernetes_validate.validate(retry, K8S_VERSION, strict=True)
    assert check_object(retry) == []
    # A retry of a retry: still the chain's first job's work, linked to it.
    second = retry_of(stored_job(job_id=job_id), number=2)
    assert second["spec"]["template"]["spec"] == failed["spec"]["template"]["spec"]
    assert second["metadata"]["annotations"]["jobscheduler.io/retry-number"] == "2"


def forge(job: dict[str, Any]) -> None:
    """What anyone who may edit Jobs in the namespace could put in one that carries our labels."""
    pod = job["spec"]["template"]["spec"]
    pod["serviceAccountName"] = "jobscheduler"
    pod["automountServiceAccountToken"] = True
    pod["hostNetwork"] = True
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    pod["containers"][0]["image"] = "evil.example/miner:1"
    pod["containers"][0]["securityContext"]["privileged"] = True
    pod["initContainers"] = [{"name": "x", "image": "evil.example/miner:1", "command": ["sh"]}]


def test_a_forged_spec_is_not_copied_the_retry_is_rendered_from_the_request() -> None:
    clean = stored_job()
    forged = stored_job()
    forge(forged)
    retry = retry_of(forged, images=ImagePolicy(("ghcr.io/jobscheduler",)))
    assert retry["spec"]["template"]["spec"] == clean["spec"]["template"]["spec"]
    assert "evil" not in json.dumps(retry)


def _annotation(mutate: Any) -> Any:
    def apply(job: dict[str, Any]) -> None:
        body = json.loads(job["metadata"]["annotations"][REQUEST_ANNOTATION])
        mutate(body)
        job["metadata"]["annotations"][REQUEST_ANNOTATION] = json.dumps(body)

    return apply


def _set(key: str, value: Any) -> Any:
    return lambda job: job["metadata"]["annotations"].__setitem__(key, value)


#: (id, change to the failed Job, fragment of why it gets no retry)
REFUSED: list[tuple[str, Any, str]] = [
    ("no stored request", lambda job: job["metadata"]["annotations"].pop(REQUEST_ANNOTATION), "missing"),
    ("not JSON", _set(REQUEST_ANNOTATION, "{not json"), "not JSON"),
    ("nested", _set(REQUEST_ANNOTATION, "[" * 50_000 + "]" * 50_000), "nested too deeply"),
    ("too long", _set(REQUEST_ANNOTATION, " " * 200_000), "longer than"),
    ("not an object", _set(REQUEST_ANNOTATION, "[]"), "JSON object"),
    ("unknown field", _annotation(lambda b: b.update(command=["sh"])), "unknown fields: command"),
    ("wrong type", _annotation(lambda b: b.update(labels=["x"])), "request.labels"),
    ("negative", _annotation(lambda b: b.update(timeout_seconds=-1)), "request.timeout_seconds"),
    ("huge", _annotation(lambda b: b.update(retry_backoff_seconds=10**30)), "retry_backoff_seconds"),
    ("priority", _annotation(lambda b: b.update(priority="ULTRA")), "request.priority"),
    ("no job type", _annotation(lambda b: b.pop("job_field")), "request.job_field"),
    ("unknown job type", _annotation(lambda b: b.update(job_field="shell_job")), "shell_job"),
    (
        "bad params",
        _annotation(lambda b: b["params"].update(duration_seconds=0)),
        "timer_job.duration_seconds",
    ),
    ("steering env", _annotation(lambda b: b["params"]["env"].update(LD_PRELOAD="/x.so")), "env[LD_PRELOAD]"),
    ("image", _annotation(lambda b: b["params"].update(image="evil.example/miner:1")), "ALLOWED_IMAGES"),
    ("reserved label", _annotation(lambda b: b["labels"].update({"jobscheduler.io/x": "y"})), "reserved"),
    ("bad label", _annotation(lambda b: b["labels"].update({"a": "not a label value!"})), "labels[a]"),
    ("bad name", _annotation(lambda b: b.update(name="Not A Name!")), "name"),
    ("timeout", _annotation(lambda b: b.update(timeout_seconds=10**8)), "timeout_seconds"),
    ("retries used up", _annotation(lambda b: b.update(max_retries=0)), "allows 0 retries"),
]


@pytest.mark.parametrize(("change", "fragment"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_a_failed_job_without_a_valid_stored_request_gets_no_retry(change: Any, fragment: str) -> None:
    job = stored_job()
    change(job)
    with pytest.raises((InvalidArgument, BackendError)) as err:
        retry_of(job, images=ImagePolicy(("ghcr.io/jobscheduler",)))
    assert fragment in err.value.message


class FakeBackend:
    """The process edge: the failed Job as the API server returns it, and what is created."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.created: list[dict[str, Any]] = []

    async def manifest(self, job_id: str) -> dict[str, Any]:
        assert job_id == self.job["metadata"]["name"]
        return copy.deepcopy(self.job)

    async def create(self, manifest: dict[str, Any]) -> JobRecord:
        self.created.append(manifest)
        return failed_record(manifest)


@pytest.mark.parametrize("valid", [True, False])
def test_act_creates_the_retry_or_reports_why_not_once_without_raising(valid: bool) -> None:
    job = stored_job()
    if not valid:
        forge(job)
        del job["metadata"]["annotations"][REQUEST_ANNOTATION]
    backend = FakeBackend(job)
    refused: list[tuple[str, str]] = []
    retried: list[JobRecord] = []
    retries = controller(
        backend, on_refused=lambda r, why: refused.append((r.job_id, why)), on_retry=retried.append
    )
    asyncio.run(retries.act(failed_record(job)))
    if valid:
        assert [m["metadata"]["name"] for m in backend.created] == [retry_job_id(ROOT, 1)]
        assert len(retried) == 1 and refused == []
    else:
        assert backend.created == [] and retried == []
        assert len(refused) == 1 and refused[0][0] == ROOT and "missing" in refused[0][1]


def record(**fields: Any) -> JobRecord:
    base: dict[str, Any] = {
        "job_id": ROOT,
        "name": "n",
        "type": "timer",
        "namespace": "default",
        "phase": JobPhase.FAILED,
        "reason": "BackoffLimitExceeded",
        "finished_at": datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
        "max_retries": 3,
        "retry_backoff_seconds": 10,
    }
    base.update(fields)
    return JobRecord.build(**base)


@pytest.mark.parametrize(
    ("fields", "delay"),
    [
        ({}, 10),
        ({"retry_number": 1}, 20),
        ({"retry_number": 2}, 40),
        ({"retry_number": 3}, None),  # max_retries reached
        ({"retry_number": 2, "retry_backoff_seconds": 3000}, MAX_RETRY_DELAY_SECONDS),
        ({"reason": "PodFailurePolicy"}, None),  # a permanent exit code
        ({"reason": "DeadlineExceeded"}, 10),
        ({"phase": JobPhase.CANCELLED}, None),
        ({"phase": JobPhase.SUCCEEDED}, None),
        ({"max_retries": 0}, None),
    ],
)
def test_retry_due(fields: dict[str, Any], delay: int | None) -> None:
    r = record(**fields)
    due = retry_due(r)
    if delay is None:
        assert due is None
    else:
        assert r.finished_at is not None and due == r.finished_at + timedelta(seconds=delay)


def test_retry_ids_are_stable_distinct_job_ids() -> None:
    ids = {retry_job_id(ROOT, n) for n in range(1, 11)}
    assert len(ids) == 10
    assert retry_job_id(ROOT, 1) == retry_job_id(ROOT, 1)
    assert all(i.startswith("job-") and len(i) == 14 and i[4:].isalnum() and i.islower() for i in ids)


def test_a_retry_stays_its_schedules_and_templates_job_but_is_no_rerun() -> None:
    failed = stored_job()
    origin = JobOrigin(
        schedule="nightly",
        scheduled_at=datetime(2026, 11, 23, 2, 0, tzinfo=UTC),
        template="etl",
        template_version=3,
        rerun_of="job-a000000001",
    )
    labels, annotations = origin_metadata(origin)
    failed["metadata"]["labels"].update(labels)
    failed["metadata"]["annotations"].update(annotations)
    retry = retry_of(failed)
    meta = retry["metadata"]
    assert meta["labels"]["jobscheduler.io/schedule"] == "nightly"
    assert meta["labels"]["jobscheduler.io/template"] == "etl"
    assert "jobscheduler.io/rerun-of" not in meta["labels"]
    back = record_fields(meta["annotations"])
    assert (back["schedule"], back["scheduled_at"], back["template"], back["template_version"]) == (
        "nightly",
        origin.scheduled_at,
        "etl",
        3,
    )
    assert back["rerun_of"] == ""
    kubernetes_validate.validate(retry, K8S_VERSION, strict=True)
