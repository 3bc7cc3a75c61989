"""The timer handler: parameter validation and the batch/v1 Job it renders (pure functions)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobscheduler.core.errors import InvalidArgument
from jobscheduler.core.manifests import JobDefaults, RenderContext, validate_job_manifest
from jobscheduler.core.registry import HandlerRegistry
from jobscheduler.jobtypes import TimerHandler, builtin_registry
from jobscheduler.jobtypes.timer import RESERVED_ENV

K8S_VERSION = "1.34.0"
VALID: dict[str, Any] = {
    "duration_seconds": 300,
    "timer_name": "build-timeout",
    "control_plane_endpoint": "http://control-plane:50053",
}


def render(params: dict[str, Any] | None = None, **ctx: Any) -> dict[str, Any]:
    handler = TimerHandler(default_image="timer-service:latest")
    parsed = handler.parse({**VALID, **(params or {})})
    context = RenderContext(job_id="job-abc1234567", name="my-timer", job_type="timer", **ctx)
    return handler.render(parsed, context)


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = manifest["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_structure_and_defaults() -> None:
    m = render()
    assert m["apiVersion"] == "batch/v1" and m["kind"] == "Job"
    assert m["metadata"]["name"] == "job-abc1234567"
    assert m["metadata"]["namespace"] == "default"
    spec = m["spec"]
    assert spec["backoffLimit"] == 3
    assert spec["activeDeadlineSeconds"] == 300 + 60
    assert spec["ttlSecondsAfterFinished"] == 86400
    # A configuration error (exit code 2) fails the Job at once; disruptions are not failures.
    assert spec["podFailurePolicy"] == {
        "rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "timer", "operator": "In", "values": [2]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }
    assert container(m)["name"] == "timer"
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    c = container(m)
    assert c["image"] == "timer-service:latest"
    assert c["command"] == ["jobscheduler", "timer"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env == {
        "TIMER_NAME": "build-timeout",
        "DURATION_SECONDS": "300",
        "CONTROL_PLANE_ENDPOINT": "http://control-plane:50053",
        "LOG_LEVEL": "info",
        "JOB_ID": "job-abc1234567",
    }
    assert c["resources"] == {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"cpu": "500m", "memory": "128Mi"},
    }


def test_overrides() -> None:
    defaults = JobDefaults(
        namespace="jobs",
        cpu_request="250m",
        memory_request="128Mi",
        cpu_limit="1",
        memory_limit="1Gi",
        backoff_limit=0,
        deadline_grace_seconds=5,
        ttl_seconds_after_finished=None,
    )
    m = render(
        {"image": "registry.example:5000/team/timer:v2", "log_level": "debug", "env": {"EXTRA": "1"}},
        defaults=defaults,
        labels={"team": "build"},
    )
    c = container(m)
    assert c["image"] == "registry.example:5000/team/timer:v2"
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["LOG_LEVEL"] == "debug" and env["EXTRA"] == "1"
    assert c["resources"]["requests"] == {"cpu": "250m", "memory": "128Mi"}
    assert c["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert m["metadata"]["namespace"] == "jobs"
    assert m["spec"]["backoffLimit"] == 0
    assert m["spec"]["activeDeadlineSeconds"] == 305
    assert "ttlSecondsAfterFinished" not in m["spec"]
    assert m["metadata"]["labels"]["team"] == "build"


def test_restricted_security_context() -> None:
    m = render()
    pod = m["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsUser"] > 0
    sc = container(m)["securityContext"]
    assert sc == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")


def test_labels_and_annotations_describe_the_job() -> None:
    m = render()
    labels = m["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "jobscheduler"
    assert labels["jobscheduler.io/job-id"] == "job-abc1234567"
    assert labels["jobscheduler.io/job-type"] == "timer"
    assert labels["jobscheduler.io/job-name"] == "my-timer"
    assert m["metadata"]["annotations"]["jobscheduler.io/name"] == "my-timer"
    assert m["metadata"]["annotations"]["jobscheduler.io/type"] == "timer"
    pod_labels = m["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["jobscheduler.io/job-id"] == "job-abc1234567"


def test_manifest_validates_against_the_kubernetes_schema() -> None:
    kubernetes_validate.validate(render(), K8S_VERSION, strict=True)
    validate_job_manifest(render())


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"duration_seconds": 0}, "timer_job.duration_seconds"),
        ({"duration_seconds": -1}, "timer_job.duration_seconds"),
        ({"duration_seconds": 86401}, "timer_job.duration_seconds"),
        ({"timer_name": ""}, "timer_job.timer_name"),
        ({"timer_name": "   "}, "timer_job.timer_name"),
        ({"timer_name": "a\nb"}, "timer_job.timer_name"),
        ({"control_plane_endpoint": ""}, "timer_job.control_plane_endpoint"),
        ({"control_plane_endpoint": "control-plane:50053"}, "timer_job.control_plane_endpoint"),
        ({"control_plane_endpoint": "ftp://host/x"}, "timer_job.control_plane_endpoint"),
        ({"control_plane_endpoint": "http://"}, "timer_job.control_plane_endpoint"),
        ({"control_plane_endpoint": "http://host:99999"}, "timer_job.control_plane_endpoint"),
        ({"control_plane_endpoint": "http://ho st/"}, "timer_job.control_plane_endpoint"),
        ({"image": "Not An Image"}, "timer_job.image"),
        ({"log_level": "loud"}, "timer_job.log_level"),
        ({"env": {"1BAD": "x"}}, "timer_job.env[1BAD]"),
        ({"env": {"A-B": "x"}}, "timer_job.env[A-B]"),
        ({"env": {"DURATION_SECONDS": "1"}}, "timer_job.env[DURATION_SECONDS]"),
    ],
)
def test_invalid_parameters_name_the_field(params: dict[str, Any], field: str) -> None:
    handler = TimerHandler(default_image="timer-service:latest")
    with pytest.raises(InvalidArgument) as err:
        handler.parse({**VALID, **params})
    assert [v.field for v in err.value.violations] == [field]


def test_every_bad_field_is_reported_at_once() -> None:
    handler = TimerHandler(default_image="x")
    with pytest.raises(InvalidArgument) as err:
        handler.parse({"duration_seconds": 0, "timer_name": "", "control_plane_endpoint": "nope"})
    assert {v.field for v in err.value.violations} == {
        "timer_job.duration_seconds",
        "timer_job.timer_name",
        "timer_job.control_plane_endpoint",
    }


def test_registry_finds_handlers_and_rejects_duplicates() -> None:
    registry = builtin_registry(timer_image="x")
    assert registry.for_request_field("timer_job").job_type == "timer"
    with pytest.raises(InvalidArgument) as err:
        registry.for_request_field(None)
    assert err.value.violations[0].field == "job"
    with pytest.raises(ValueError):
        registry.register(TimerHandler(default_image="y"))
    assert len(HandlerRegistry()) == 0  # fresh registries share nothing


@settings(max_examples=40, deadline=None)
@given(
    duration=st.integers(min_value=1, max_value=86400),
    timer_name=st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")),
        min_size=1,
        max_size=60,
    ).filter(lambda s: s.strip() and s.isprintable()),
    env=st.dictionaries(
        # (Names that steer a process, LD_* and the like, and control characters are refused.)
        st.from_regex(r"APP_[A-Z0-9_]{0,16}", fullmatch=True),
        st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs")), max_size=50),
        max_size=5,
    ),
)
def test_any_valid_request_renders_a_valid_manifest(
    duration: int, timer_name: str, env: dict[str, str]
) -> None:
    env = {k: v for k, v in env.items() if k not in RESERVED_ENV}
    m = render({"duration_seconds": duration, "timer_name": timer_name, "env": env})
    validate_job_manifest(m)
    kubernetes_validate.validate(m, K8S_VERSION, strict=True)
    assert m["spec"]["activeDeadlineSeconds"] == duration + 60
