"""The container job (batch processing) and the shared pieces every job type renders through:
secretKeyRef env, per-job resources, parallelism/completions/Indexed, podFailurePolicy rules;
on the local backend: secrets from LOCAL_SECRETS_DIR, N processes at once, JOB_COMPLETION_INDEX;
on the Kubernetes emulator: the rendered Job is what is created, its status indexes are reported."""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import kubernetes_validate
import pytest
from emulator import EmulatorThread
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from local_harness import wait_record
from pod_security import check_object

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.api.convert import schedule_request
from jobscheduler.app._build import build_backend, builtin_types, image_policy
from jobscheduler.config import Settings
from jobscheduler.core.errors import BackendError, InvalidArgument
from jobscheduler.core.index import JobIndex
from jobscheduler.core.limits import ImagePolicy
from jobscheduler.core.manifests import RenderContext, job_manifest, validate_job_manifest
from jobscheduler.core.quantity import fill_resources, resource_problems
from jobscheduler.core.requests import image_violations
from jobscheduler.jobtypes.container import ContainerHandler

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
    maxima = {"cpu": "4", "memory": "8Gi"}
    assert resource_problems({"cpu_limit": "4", "memory_limit": "8Gi"}, maxima) == {}
    assert set(resource_problems({"cpu_limit": "5"}, maxima)) == {"cpu_limit"}
    assert set(resource_problems({"memory_request": "9Gi"}, maxima)) == {"memory_request"}
    assert set(resource_problems({"cpu_request": "2", "cpu_limit": "1"}, maxima)) == {"cpu_request"}
    assert set(resource_problems({"cpu_limit": "1e3", "memory_limit": "0"}, maxima)) == {
        "cpu_limit",
        "memory_limit",
    }
    defaults = {"cpu_request": "100m", "memory_request": "64Mi", "cpu_limit": "500m", "memory_limit": "128Mi"}
    assert fill_resources({"cpu_limit": "50m", "memory_request": "1Gi"}, defaults) == {
        "cpu_request": "50m",
        "cpu_limit": "50m",
        "memory_request": "1Gi",
        "memory_limit": "1Gi",
    }


# --- the handler ---------------------------------------------------------------------------------

HANDLER = ContainerHandler()
IMAGE = "ghcr.io/example/batch:1"


def parse_request(**fields: Any) -> Any:
    """The handler's parameters for a ContainerJob message (decoded as ScheduleJob does)."""
    fields.setdefault("image", IMAGE)
    decoded = schedule_request(pb.ScheduleJobRequest(name="batch", container_job=pb.ContainerJob(**fields)))
    assert decoded.job_field == "container_job"
    return HANDLER.parse(decoded.params)


def violations(**fields: Any) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        parse_request(**fields)
    return {v.field: v.description for v in info.value.violations}


def render(params: Any, job_id: str = "job-abcdefghij") -> dict[str, Any]:
    return HANDLER.render(params, RenderContext(job_id=job_id, name="batch", job_type="container"))


def test_a_full_request_renders_a_valid_restricted_job_within_allowed_images() -> None:
    params = parse_request(
        command=["python", "-c", "print(1)"],
        args=["--x"],
        env={"MODE": "fast"},
        env_from_secrets={"TOKEN": pb.SecretKeyRef(name="api-creds", key="token")},
        resources=pb.Resources(cpu_limit="2", memory_request="256Mi"),
        parallelism=2,
        completions=4,
        completion_mode=pb.COMPLETION_MODE_INDEXED,
        backoff_limit_per_index=2,
        exit_code_rules=[
            pb.ExitCodeRule(action=pb.EXIT_CODE_ACTION_FAIL_INDEX, exit_codes=[3]),
            pb.ExitCodeRule(action=pb.EXIT_CODE_ACTION_FAIL_JOB, exit_codes=[42, 43]),
        ],
    )
    m = render(params)
    kubernetes_validate.validate(m, K8S_VERSION, strict=True)
    assert check_object(m) == []
    validate_job_manifest(m, images=ImagePolicy(("ghcr.io/example",)))
    with pytest.raises(BackendError, match="ALLOWED_IMAGES"):
        validate_job_manifest(m, images=ImagePolicy(("ghcr.io/other",)))
    c = m["spec"]["template"]["spec"]["containers"][0]
    assert (c["image"], c["command"], c["args"]) == (IMAGE, ["python", "-c", "print(1)"], ["--x"])
    assert c["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "2", "memory": "256Mi"},  # the default 128Mi limit raised to the request
    }
    assert {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api-creds", "key": "token"}}} in c["env"]
    assert m["spec"]["completionMode"] == "Indexed" and m["spec"]["backoffLimitPerIndex"] == 2
    plain = render(parse_request(command=["true"]))
    kubernetes_validate.validate(plain, K8S_VERSION, strict=True)
    assert "completionMode" not in plain["spec"] and plain["spec"]["completions"] == 1


def test_the_image_is_checked_against_allowed_images_by_default_only_the_timer_images() -> None:
    params = parse_request(command=["true"])
    default = image_policy(Settings(timer_image="ghcr.io/jobscheduler/jobscheduler:1.0"))
    [violation] = image_violations(HANDLER, params, default)
    assert violation.field == "container_job.image" and "ALLOWED_IMAGES" in violation.description
    assert image_violations(HANDLER, params, image_policy(Settings(allowed_images="ghcr.io/example"))) == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"image": ""}, "container_job.image"),
        ({"image": "Not An Image"}, "container_job.image"),
        ({"env": {"LD_PRELOAD": "/x.so"}}, "container_job.env[LD_PRELOAD]"),
        ({"env": {"JOB_COMPLETION_INDEX": "1"}}, "container_job.env[JOB_COMPLETION_INDEX]"),
        (
            {"env_from_secrets": {"PYTHONPATH": pb.SecretKeyRef(name="s", key="k")}},
            "container_job.env_from_secrets[PYTHONPATH]",
        ),
        (
            {"env_from_secrets": {"T": pb.SecretKeyRef(name="Bad_Name", key="k")}},
            "container_job.env_from_secrets[T].name",
        ),
        (
            {"env_from_secrets": {"T": pb.SecretKeyRef(name="s", key="../etc")}},
            "container_job.env_from_secrets[T].key",
        ),
        ({"args": ["a\0b"]}, "container_job.args[0]"),
        ({"command": ["x"] * 300}, "container_job.command"),
        ({"resources": pb.Resources(cpu_limit="5")}, "container_job.resources.cpu_limit"),
        ({"resources": pb.Resources(memory_limit="9Gi")}, "container_job.resources.memory_limit"),
        ({"resources": pb.Resources(cpu_request="2", cpu_limit="1")}, "container_job.resources.cpu_request"),
        ({"resources": pb.Resources(memory_limit="lots")}, "container_job.resources.memory_limit"),
        ({"completions": 101}, "container_job.completions"),
        ({"parallelism": -1}, "container_job.parallelism"),
        ({"backoff_limit_per_index": 1}, "container_job.backoff_limit_per_index"),
        (
            {"exit_code_rules": [pb.ExitCodeRule(action=pb.EXIT_CODE_ACTION_FAIL_INDEX, exit_codes=[3])]},
            "container_job.exit_code_rules",
        ),
        (
            {"exit_code_rules": [pb.ExitCodeRule(action=pb.EXIT_CODE_ACTION_IGNORE, exit_codes=[0])]},
            "container_job.exit_code_rules[0].exit_codes",
        ),
        ({"exit_code_rules": [pb.ExitCodeRule(exit_codes=[1])]}, "container_job.exit_code_rules[0].action"),
        (  # podFailurePolicy takes 20 rules, one of them ours (DisruptionTarget)
            {"exit_code_rules": [pb.ExitCodeRule(action=pb.EXIT_CODE_ACTION_IGNORE, exit_codes=[1])] * 20},
            "container_job.exit_code_rules",
        ),
    ],
)
def test_bad_fields_are_invalid_argument_naming_the_field(fields: dict[str, Any], field: str) -> None:
    assert field in violations(**fields)


def test_the_configured_maxima_bound_resources() -> None:
    handler = builtin_types(Settings(max_cpu_limit="500m", max_memory_limit="1Gi")).for_type("container")
    assert handler is not None
    with pytest.raises(InvalidArgument, match="500m"):
        handler.parse({"image": IMAGE, "resources": {"cpu_limit": "1"}})
    with pytest.raises(InvalidArgument, match="1Gi"):
        handler.parse({"image": IMAGE, "resources": {"memory_request": "2Gi"}})


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
_keys = st.sampled_from(
    [
        "image",
        "command",
        "args",
        "env",
        "env_from_secrets",
        "resources",
        "parallelism",
        "completions",
        "completion_mode",
        "backoff_limit_per_index",
        "exit_code_rules",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _json, max_size=11))
def test_any_parameters_are_accepted_and_render_or_are_invalid_argument(params: dict[str, Any]) -> None:
    try:
        parsed = HANDLER.parse(params)
    except InvalidArgument as exc:
        assert all(v.field.startswith("container_job") for v in exc.violations)
        return
    validate_job_manifest(render(parsed))


# --- the Kubernetes emulator ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_kubernetes_creates_the_rendered_job_and_reports_its_indexes(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    backend = await build_backend(
        Settings(backend="kubernetes", in_cluster=False, kubeconfig=str(kubeconfig))
    )
    index = JobIndex()
    manifest = render(
        parse_request(
            command=["work"],
            completions=3,
            parallelism=3,
            completion_mode=pb.COMPLETION_MODE_INDEXED,
            backoff_limit_per_index=0,
        ),
        "job-k8sidx0000",
    )
    try:
        await backend.start(index)
        await backend.create(manifest)
        created = await asyncio.to_thread(emulator.job, "job-k8sidx0000")
        assert created["spec"]["completionMode"] == "Indexed"
        assert created["spec"]["template"]["spec"]["containers"][0]["command"] == ["work"]
        status = {
            "startTime": "2030-01-02T10:00:00Z",
            "active": 1,
            "succeeded": 1,
            "failed": 1,
            "completedIndexes": "0",
            "failedIndexes": "2",
        }
        await asyncio.to_thread(emulator.patch_job, "job-k8sidx0000", {"status": status})
        record = await wait_record(index, "job-k8sidx0000", lambda r: r.completed_indexes == "0")
    finally:
        await backend.close()
    assert (record.completed_indexes, record.failed_indexes) == ("0", "2")


@pytest.mark.parametrize(
    "params",
    [
        {"args": ["\ud800"]},
        {"command": ["sh", "\udfff"]},
        {"env": {"A": "\ud800"}},
        {"env": {"\ud800": "x"}},
    ],
)
def test_lone_surrogates_from_a_stored_request_are_invalid_argument(params: dict[str, Any]) -> None:
    """A retry reads the stored request back with json.loads, which makes "\\ud800" a lone
    surrogate (gRPC never delivers one): an InvalidArgument, not a UnicodeEncodeError."""
    with pytest.raises(InvalidArgument):
        HANDLER.parse({"image": IMAGE, **params})
