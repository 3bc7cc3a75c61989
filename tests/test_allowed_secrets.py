"""ALLOWED_SECRETS: a job may read only the Secrets an operator listed (the service's namespace also
holds the service's own token file and keys), through any job type; the refusal names the field."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from conftest import ServiceThread, local_service

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.core.errors import InvalidArgument
from jobscheduler.core.limits import ImagePolicy
from jobscheduler.core.requests import check_manifest, secret_names
from jobscheduler.jobtypes.container import ContainerHandler

T = 10


def container(**env_from_secrets: pb.SecretKeyRef) -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(
        name="reads-secret",
        container_job=pb.ContainerJob(
            image="ghcr.io/example/batch:1", command=["true"], env_from_secrets=env_from_secrets
        ),
    )


def webhook(secret: str) -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(
        name="hook",
        webhook_job=pb.WebhookJob(
            url="http://127.0.0.1:9/",
            headers_from_secrets={"Authorization": pb.SecretKeyRef(name=secret, key="token")},
        ),
    )


@pytest.fixture
def svc(tmp_path: pathlib.Path) -> Iterator[ServiceThread]:
    service = local_service(
        tmp_path / "data", allowed_images="ghcr.io/example", allowed_secrets="job-creds, other"
    )
    try:
        yield service
    finally:
        service.stop()


def refused(svc: ServiceThread, request: pb.ScheduleJobRequest) -> Any:
    with pytest.raises(grpc.RpcError) as info:
        svc.stub.ScheduleJob(request, timeout=T)
    err: Any = info.value
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()
    return err


def test_a_secret_not_listed_is_refused_naming_the_field_and_nothing_is_created(svc: ServiceThread) -> None:
    err = refused(svc, container(TOKEN=pb.SecretKeyRef(name="jobscheduler-tokens", key="tokens.csv")))
    assert "container_job" in err.details() and "jobscheduler-tokens" in err.details()
    err = refused(svc, webhook("jobscheduler-tls"))
    assert "webhook_job" in err.details() and "jobscheduler-tls" in err.details()
    assert list(svc.stub.ListJobs(pb.ListJobsRequest(), timeout=T).jobs) == []
    # A listed one is accepted.
    assert svc.stub.ScheduleJob(container(TOKEN=pb.SecretKeyRef(name="job-creds", key="t")), timeout=T).job_id


def test_no_secret_may_be_read_by_default(tmp_path: pathlib.Path) -> None:
    service = local_service(tmp_path / "data")
    try:
        err = refused(service, webhook("anything"))
        assert "ALLOWED_SECRETS: none" in err.details()
    finally:
        service.stop()


def test_check_manifest_reads_the_secrets_of_every_container() -> None:
    handler = ContainerHandler()
    manifest: dict[str, Any] = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s1", "key": "k"}}}]},
                        {"env": [{"name": "B", "value": "plain"}]},
                    ],
                    "initContainers": [
                        {"env": [{"name": "C", "valueFrom": {"secretKeyRef": {"name": "s2", "key": "k"}}}]}
                    ],
                }
            }
        }
    }
    assert secret_names(manifest) == {"s1", "s2"}
    with pytest.raises(InvalidArgument) as info:
        check_manifest(manifest, handler, ImagePolicy(("ghcr.io/example",), frozenset({"s1"})))
    assert "s2" in info.value.message and "s1" not in info.value.message.split("(")[0]


@pytest.mark.parametrize("name", ["a..b", "a.-b", "-a", "A", "a" * 254])
def test_secret_names_are_dns_subdomains_for_every_type(name: str) -> None:
    """A name Kubernetes refuses at create would be INTERNAL there: refused here, naming it."""
    from jobscheduler.jobtypes import builtin_registry

    registry = builtin_registry(timer_image="ghcr.io/jobscheduler/jobscheduler:1")
    ref = {"name": name, "key": "k"}
    cases = {
        "container_job": (
            {
                "image": "ghcr.io/jobscheduler/jobscheduler:1",
                "command": ["true"],
                "env_from_secrets": {"T": ref},
            },
            "container_job.env_from_secrets[T]",
        ),
        "webhook_job": (
            {"url": "http://127.0.0.1:9/", "headers_from_secrets": {"X-A": ref}},
            "webhook_job.headers_from_secrets[X-A]",
        ),
    }
    for field, (params, path) in cases.items():
        with pytest.raises(InvalidArgument) as info:
            registry.for_request_field(field, params).parse(params)
        assert any(v.field.startswith(path) for v in info.value.violations), info.value.violations
