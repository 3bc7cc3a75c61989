"""The webhook job end to end: on the local backend (success, a failure's reason and exit code,
cancel) and on the Kubernetes emulator (the Job as created, the secret header by reference)."""

from __future__ import annotations

import json
import pathlib
import socket
from collections.abc import Iterator
from typing import Any

import grpc
import jsonschema
import pytest
from conftest import ServiceThread, kubernetes_service, local_service
from emulator import EmulatorThread
from pod_security import check_object
from webhook_server import Server, serve

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.webhook import EXIT_CONNECT_FAILED, EXIT_UNEXPECTED_STATUS

pytestmark = pytest.mark.timeout(60)
IMAGE = "jobscheduler:test"
T = 10
SECRET = "s3cr3t-header-value"
TERMINAL = (pb.JOB_PHASE_SUCCEEDED, pb.JOB_PHASE_FAILED, pb.JOB_PHASE_CANCELLED)


@pytest.fixture
def server() -> Iterator[Server]:
    with serve() as srv:
        yield srv


def closed_port_url() -> str:
    """A 127.0.0.1 URL on a port just bound and released: nothing listens there."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/"


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    [c] = manifest["spec"]["template"]["spec"]["containers"]
    return dict(c)


def request(url: str, **fields: Any) -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(name="hook", webhook_job=pb.WebhookJob(url=url, **fields))


def final(svc: ServiceThread, job_id: str) -> pb.Job:
    for event in svc.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=30):
        if event.job.phase in TERMINAL:
            return event.job
    raise AssertionError(f"{job_id}: the watch ended before a final phase")


@pytest.fixture
def local(tmp_path: pathlib.Path) -> Iterator[ServiceThread]:
    secrets_dir = tmp_path / "secrets"
    (secrets_dir / "hook-creds").mkdir(parents=True)
    (secrets_dir / "hook-creds" / "key").write_text(SECRET)
    svc = local_service(
        tmp_path / "data",
        local_secrets_dir=str(secrets_dir),
        allowed_secrets="hook-creds",
        local_backoff_seconds=0.1,
        local_kill_grace_seconds=2,
        timer_image=IMAGE,
    )
    try:
        yield svc
    finally:
        svc.stop()


def logs(svc: ServiceThread, job_id: str) -> str:
    return "\n".join(
        line.line for line in svc.stub.GetJobLogs(pb.GetJobLogsRequest(job_id=job_id), timeout=T)
    )


def test_local_success_failure_and_cancel(local: ServiceThread, server: Server) -> None:
    ok = local.stub.ScheduleJob(
        request(
            server.url,
            headers_from_secrets={"X-Api-Key": pb.SecretKeyRef(name="hook-creds", key="key")},
            retry_backoff_seconds=1,
        ),
        timeout=T,
    ).job
    job = final(local, ok.job_id)
    assert (job.phase, job.exit_code) == (pb.JOB_PHASE_SUCCEEDED, 0), job
    assert server.requests[0][1]["X-Api-Key"] == SECRET
    out = logs(local, ok.job_id)
    assert "webhook succeeded" in out and SECRET not in out

    server.statuses = [500]
    bad = local.stub.ScheduleJob(request(server.url, max_attempts=1), timeout=T).job
    job = final(local, bad.job_id)
    assert (job.phase, job.reason, job.exit_code) == (
        pb.JOB_PHASE_FAILED,
        "PodFailurePolicy",
        EXIT_UNEXPECTED_STATUS,
    ), job
    assert job.attempts == 1

    refused = local.stub.ScheduleJob(request(closed_port_url(), max_attempts=1), timeout=T).job
    job = final(local, refused.job_id)
    assert (job.phase, job.reason, job.exit_code) == (
        pb.JOB_PHASE_FAILED,
        "BackoffLimitExceeded",
        EXIT_CONNECT_FAILED,
    ), job
    assert job.attempts == 1  # not run again: the program retried already

    server.answer.clear()
    server.arrived.clear()
    slow = local.stub.ScheduleJob(request(server.url, timeout_seconds=300), timeout=T).job
    assert server.arrived.wait(15)
    cancelled = local.stub.CancelJob(pb.CancelJobRequest(job_id=slow.job_id), timeout=T).job
    assert cancelled.phase == pb.JOB_PHASE_CANCELLED
    assert final(local, slow.job_id).phase == pb.JOB_PHASE_CANCELLED


def test_kubernetes_job_carries_the_secret_header_by_reference(
    kubeconfig: pathlib.Path, emulator: EmulatorThread
) -> None:
    svc = kubernetes_service(kubeconfig, timer_image=IMAGE, allowed_secrets="hook-creds")
    try:
        created = svc.stub.ScheduleJob(
            request(
                "https://hooks.example.com/deploy",
                method="POST",
                body='{"ref": "main"}',
                headers={"X-Team": "ops"},
                headers_from_secrets={"Authorization": pb.SecretKeyRef(name="hook-creds", key="token")},
                expected_status=[200, 202],
            ),
            timeout=T,
        ).job
        assert created.type == "webhook"
        manifest = emulator.job(created.job_id)
        assert check_object(manifest) == []
        env = {e["name"]: e for e in container(manifest)["env"]}
        assert env["WEBHOOK_SECRET_HEADER_0"]["valueFrom"] == {
            "secretKeyRef": {"name": "hook-creds", "key": "token"}
        }
        assert env["WEBHOOK_EXPECTED_STATUS"]["value"] == "200,202"
        with pytest.raises(grpc.RpcError) as info:
            svc.stub.ScheduleJob(request("https://x.example.com", headers={"Host": "y"}), timeout=T)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "webhook_job.headers[Host]" in (info.value.details() or "")
        types = svc.stub.ListJobTypes(pb.ListJobTypesRequest(), timeout=T).types
        [webhook] = [t for t in types if t.name == "webhook"]
        assert (webhook.request_field, webhook.builtin) == ("webhook_job", True)
        schema = json.loads(webhook.parameters_schema)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["properties"]["max_attempts"]["maximum"] == 10
    finally:
        svc.stop()
