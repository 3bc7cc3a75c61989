"""Retry rules and the retry manifest (pure functions), with a Job as a real API server returns it."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes_validate
import pytest

from jobscheduler.core.manifests import JobDefaults, RenderContext, retry_manifest, validate_job_manifest
from jobscheduler.core.model import JobPhase, JobRecord
from jobscheduler.core.retries import MAX_RETRY_DELAY_SECONDS, retry_due, retry_job_id
from jobscheduler.jobtypes import TimerHandler

K8S_VERSION = "1.31.0"
UID = "0e9d2f9a-5b0c-4f7e-9d8c-6c1b9b7f0a11"


def stored_job() -> dict[str, Any]:
    """A timer Job as `kubectl get job -o json` shows it after it failed: server fields included."""
    handler = TimerHandler("ghcr.io/jobscheduler/jobscheduler:1.0")
    params = handler.parse(
        {"duration_seconds": 5, "timer_name": "t", "control_plane_endpoint": "http://cp:1"}
    )
    job = handler.render(
        params,
        RenderContext(
            job_id="job-abcdefghij", name="nightly", job_type="timer", defaults=JobDefaults(), owner="alice"
        ),
    )
    job["metadata"]["annotations"]["jobscheduler.io/max-retries"] = "2"
    job["metadata"]["annotations"]["jobscheduler.io/cancel-reason"] = "should not be inherited"
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
        {
            "batch.kubernetes.io/controller-uid": UID,
            "batch.kubernetes.io/job-name": "job-abcdefghij",
            "controller-uid": UID,
            "job-name": "job-abcdefghij",
        }
    )
    job["status"] = {
        "failed": 1,
        "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
    }
    return job


def test_retry_manifest_is_a_new_object_with_the_same_work() -> None:
    failed = stored_job()
    before = copy.deepcopy(failed)
    at = datetime(2026, 11, 23, 10, 0, 1, 250000, tzinfo=UTC)
    retry = retry_manifest(
        failed, job_id="job-retry00001", retry_of="job-abcdefghij", retry_number=1, enqueued_at=at
    )
    assert failed == before  # pure
    meta = retry["metadata"]
    assert meta["name"] == "job-retry00001"
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"):
        assert key not in meta
    assert "status" not in retry and "selector" not in retry["spec"]
    # Held in the failed job's queue: admitted when that queue has room, like any job.
    assert retry["spec"]["suspend"] is True and "parallelism" not in retry["spec"]
    assert meta["annotations"]["jobscheduler.io/admission"] == "queued"
    assert meta["annotations"]["jobscheduler.io/enqueued-at"] == "2026-11-23T10:00:01.250000Z"
    assert meta["labels"]["jobscheduler.io/job-id"] == "job-retry00001"
    assert meta["labels"]["jobscheduler.io/retry-of"] == "job-abcdefghij"
    assert meta["annotations"]["jobscheduler.io/retry-number"] == "1"
    assert meta["annotations"]["jobscheduler.io/owner"] == "alice"
    assert meta["annotations"]["jobscheduler.io/max-retries"] == "2"
    assert "jobscheduler.io/cancel-reason" not in meta["annotations"]
    template_labels = retry["spec"]["template"]["metadata"]["labels"]
    assert not {"controller-uid", "job-name"} & set(template_labels)
    assert not any(k.startswith("batch.kubernetes.io/") for k in template_labels)
    assert template_labels["jobscheduler.io/job-id"] == "job-retry00001"
    assert retry["spec"]["template"]["spec"] == failed["spec"]["template"]["spec"]
    kubernetes_validate.validate(retry, K8S_VERSION, strict=True)
    validate_job_manifest(retry)


def record(**fields: Any) -> JobRecord:
    base: dict[str, Any] = {
        "job_id": "job-abcdefghij",
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
    return JobRecord(**base)


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
    ids = {retry_job_id("job-abcdefghij", n) for n in range(1, 11)}
    assert len(ids) == 10
    assert retry_job_id("job-abcdefghij", 1) == retry_job_id("job-abcdefghij", 1)
    assert all(i.startswith("job-") and len(i) == 14 and i[4:].isalnum() and i.islower() for i in ids)
