"""The container job (batch processing) and the shared pieces every job type renders through:
secretKeyRef env, per-job resources, parallelism/completions/Indexed, podFailurePolicy rules;
on the local backend: secrets from LOCAL_SECRETS_DIR, N processes at once, JOB_COMPLETION_INDEX."""

from __future__ import annotations

import pathlib
from typing import Any

import kubernetes_validate
import pytest
from local_harness import job, running_backend, wait_phase
from pod_security import check_object

from jobscheduler.core.errors import BackendError
from jobscheduler.core.manifests import RenderContext, job_manifest, validate_job_manifest
from jobscheduler.core.model import JobPhase
from jobscheduler.core.quantity import resource_problems

pytestmark = pytest.mark.timeout(60)
K8S_VERSION = "1.31.0"
CTX = RenderContext(job_id="job-abcdefghij", name="batch", job_type="container")


def full_manifest() -> dict[str, Any]:
    return job_manifest(
        CTX,
        image="ghcr.io/example/batch:1",
        command=["process"],
        args=["--all"],
        env={"MODE": "fast"},
        secret_env={"DB_PASSWORD": ("db", "password")},
        resources={"cpu_limit": "2", "memory_limit": "1Gi"},
        parallelism=2,
        completions=3,
        completion_mode="Indexed",
        backoff_limit_per_index=1,
        exit_code_rules=[("FailIndex", [3]), ("Ignore", [75]), ("FailJob", [2, 2])],
    )


def test_the_shared_options_render_a_valid_restricted_job() -> None:
    m = full_manifest()
    kubernetes_validate.validate(m, K8S_VERSION, strict=True)
    assert check_object(m) == []
    validate_job_manifest(m)
    spec = m["spec"]
    assert (spec["parallelism"], spec["completions"], spec["completionMode"]) == (2, 3, "Indexed")
    assert spec["backoffLimitPerIndex"] == 1 and "backoffLimit" not in spec
    container = spec["template"]["spec"]["containers"][0]
    assert container["env"] == [
        {"name": "MODE", "value": "fast"},
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
    ]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "64Mi"}
    rules = spec["podFailurePolicy"]["rules"]
    assert [(r["action"], r.get("onExitCodes", {}).get("values")) for r in rules] == [
        ("FailIndex", [3]),
        ("Ignore", [75]),
        ("FailJob", [2]),
        ("Ignore", None),
    ]
    # Nothing of a secret but its reference anywhere in the metadata.
    assert "password" not in str(m["metadata"])


@pytest.mark.parametrize(
    ("value_from", "problem"),
    [
        ({"configMapKeyRef": {"name": "c", "key": "k"}}, "valueFrom may only be"),
        ({"secretKeyRef": {"name": "s", "key": "k", "optional": True}}, "exactly a name and a key"),
        (
            {"secretKeyRef": {"name": "s", "key": "k"}, "fieldRef": {"fieldPath": "x"}},
            "valueFrom may only be",
        ),
    ],
)
def test_the_pod_policy_allows_only_plain_secret_key_refs(value_from: dict[str, Any], problem: str) -> None:
    m = full_manifest()
    m["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "X", "valueFrom": value_from})
    with pytest.raises(BackendError, match=problem):
        validate_job_manifest(m)


def test_resource_bounds() -> None:
    defaults = {"cpu_request": "100m", "memory_request": "64Mi", "cpu_limit": "500m", "memory_limit": "128Mi"}
    maxima = {"cpu": "4", "memory": "8Gi"}
    assert resource_problems({"cpu_limit": "4", "memory_limit": "8Gi"}, defaults, maxima) == {}
    assert set(resource_problems({"cpu_limit": "5"}, defaults, maxima)) == {"cpu_limit"}
    assert set(resource_problems({"memory_request": "9Gi"}, defaults, maxima)) == {"memory_request"}
    assert set(resource_problems({"cpu_request": "1"}, defaults, maxima)) == {"cpu_request"}  # > 500m
    assert set(resource_problems({"cpu_limit": "1e3", "memory_limit": "0"}, defaults, maxima)) == {
        "cpu_limit",
        "memory_limit",
    }


def secret_job(name: str, key: str) -> dict[str, Any]:
    m = job(["sh", "-c", 'test "$TOKEN" = s3cr3t'])
    container = m["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}]
    return m


@pytest.mark.asyncio
async def test_local_secret_env_is_read_from_the_secrets_dir_and_a_missing_one_fails_the_job(
    tmp_path: pathlib.Path,
) -> None:
    secrets_dir = tmp_path / "secrets"
    (secrets_dir / "api").mkdir(parents=True)
    (secrets_dir / "api" / "token").write_text("s3cr3t")
    async with running_backend(tmp_path / "data", secrets_dir=secrets_dir) as (backend, index):
        ok, no_key, no_secret, escape = (
            secret_job("api", "token"),
            secret_job("api", "other"),
            secret_job("missing", "token"),
            secret_job("api", ".."),
        )
        for m in (ok, no_key, no_secret, escape):
            await backend.create(m)
        records = [await wait_phase(index, m["metadata"]["name"]) for m in (ok, no_key, no_secret, escape)]
    assert records[0].phase is JobPhase.SUCCEEDED, records[0]
    for record in records[1:]:
        assert (record.phase, record.reason) == (JobPhase.FAILED, "CreateContainerConfigError"), record
        assert "s3cr3t" not in record.message
    assert "couldn't find key other in Secret default/api" in records[1].message
    assert 'secret "missing" not found' in records[2].message
