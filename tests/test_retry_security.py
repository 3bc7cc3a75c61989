"""Regression (issue 11, item 3): a failed Job that carries our labels is never copied into a retry.

Anyone who may write Jobs in the namespace can create one with our labels and retry policy, and
with a hostPath volume, a powerful ServiceAccount, host namespaces, an init container and an
image of their choosing. Before, the retry controller copied such a Job's spec into a new Job
made by the service (under its identity). Now a retry is rendered from the request stored on the
failed Job, so: a forged Job without a stored request gets no retry at all, and one with a
(copied) stored request gets the stored request's work, none of the forged pod settings.

Against the Kubernetes API emulator, with the real Kubernetes backend and the service's own
registry, defaults and image policy (app.py's), waiting on the controller's callbacks.
"""

from __future__ import annotations

import asyncio
import copy
import json
import pathlib
from typing import Any

from emulator import EmulatorThread
from job_status import ended_status

from jobscheduler.app import build_backend, build_index, image_policy, job_defaults
from jobscheduler.config import Settings
from jobscheduler.core.manifests import REQUEST_ANNOTATION
from jobscheduler.core.model import JobRecord, Priority, ScheduleRequest
from jobscheduler.core.requests import parse_work, render_request
from jobscheduler.core.retries import RetryController, retry_job_id
from jobscheduler.jobtypes import builtin_registry

JOBS = "/apis/batch/v1/namespaces/default/jobs"
EVIL = "evil.example/miner:1"


def legit_job(settings: Settings, job_id: str) -> dict[str, Any]:
    """A Job as ScheduleJob makes it for a timer with max_retries=1."""
    registry = builtin_registry(timer_image=settings.timer_image)
    request = ScheduleRequest(
        name="nightly",
        job_field="timer_job",
        params={"duration_seconds": 5, "timer_name": "t", "control_plane_endpoint": "http://127.0.0.1:9/"},
        max_retries=1,
        priority=Priority.HIGH,
    )
    handler, params = parse_work(registry, request, None)
    return render_request(
        handler, params, request, job_id=job_id, owner="mallory", defaults=job_defaults(settings)
    )


def forge(job: dict[str, Any]) -> dict[str, Any]:
    job = copy.deepcopy(job)
    pod = job["spec"]["template"]["spec"]
    pod.update(serviceAccountName="jobscheduler", automountServiceAccountToken=True, hostNetwork=True)
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    pod["initContainers"] = [{"name": "x", "image": EVIL, "command": ["sh", "-c", "cat /host/etc/shadow"]}]
    container = pod["containers"][0]
    container["image"] = EVIL
    container["securityContext"]["privileged"] = True
    container["volumeMounts"].append({"name": "host", "mountPath": "/host"})
    return job


def test_a_forged_failed_job_is_never_copied_into_a_retry(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    settings = Settings(backend="kubernetes", in_cluster=False, kubeconfig=str(kubeconfig), rate_limit_rps=0)
    # A: forged from scratch (no stored request); B: a legitimate Job's stored request copied
    # into a forged spec.
    no_request = forge(legit_job(settings, "job-forged0001"))
    del no_request["metadata"]["annotations"][REQUEST_ANNOTATION]
    stolen = forge(legit_job(settings, "job-forged0002"))
    for job in (no_request, stolen):
        emulator.request("POST", JOBS, job)
        emulator.patch_job(job["metadata"]["name"], {"status": ended_status(succeed=False)})

    refused: dict[str, str] = {}
    retried: list[JobRecord] = []

    async def run() -> None:
        backend = await build_backend(settings)
        index = build_index(settings)
        await backend.start(index)
        done = asyncio.Event()

        def note() -> None:
            if len(refused) == 1 and len(retried) == 1:
                done.set()

        def on_refused(record: JobRecord, why: str) -> None:
            refused[record.job_id] = why
            note()

        def on_retry(record: JobRecord) -> None:
            retried.append(record)
            note()

        controller = RetryController(
            backend,
            index,
            registry=builtin_registry(timer_image=settings.timer_image),
            defaults=job_defaults(settings),
            images=image_policy(settings),
            on_refused=on_refused,
            on_retry=on_retry,
        )
        task = asyncio.create_task(controller.run())
        try:
            await asyncio.wait_for(done.wait(), 15)
        finally:
            task.cancel()
            await backend.close()

    asyncio.run(run())

    assert list(refused) == ["job-forged0001"] and "jobscheduler.io/request" in refused["job-forged0001"]
    retry_id = retry_job_id("job-forged0002", 1)
    assert [r.job_id for r in retried] == [retry_id]
    names = sorted(j["metadata"]["name"] for j in emulator.jobs())
    assert names == sorted(["job-forged0001", "job-forged0002", retry_id])  # nothing for A
    retry = emulator.job(retry_id)
    # The stored request's work, rendered again: none of the forged pod settings.
    expected = legit_job(settings, "job-forged0002")["spec"]["template"]["spec"]
    pod = retry["spec"]["template"]["spec"]
    assert pod == expected
    assert "serviceAccountName" not in pod and pod["automountServiceAccountToken"] is False
    assert EVIL not in json.dumps(retry) and "hostPath" not in json.dumps(retry)
    assert retry["metadata"]["annotations"]["jobscheduler.io/retry-of"] == "job-forged0002"
    assert retry["metadata"]["annotations"]["jobscheduler.io/owner"] == "mallory"
    assert retry["spec"]["suspend"] is True  # held in its queue, like any retry
