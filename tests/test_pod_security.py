"""Every Job manifest a registered handler renders meets Pod Security "restricted".

The deployment's namespace enforces the restricted profile (k8s/namespace.yaml), so a job type
whose pods fall short would be refused by the API server at ScheduleJob time. Each registered job
type is rendered from the example requests in ``EXAMPLES`` (through the same request decoding as
ScheduleJob) and checked with ``pod_security`` (a Pod Security Standards checker), and the checker
itself is shown to catch each kind of violation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest
from pod_security import check_object, check_pod_spec, pod_template

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.api.convert import schedule_request
from jobscheduler.core.manifests import JobDefaults, RenderContext
from jobscheduler.jobtypes import builtin_registry

IMAGE = "ghcr.io/jobscheduler/jobscheduler:latest"
REGISTRY = builtin_registry(timer_image=IMAGE)
K8S_VERSION = "1.31.0"

#: Example ScheduleJob requests per job type: the plainest one, and one with every option set.
#: A new job type needs an entry here (the test below says so).
EXAMPLES: dict[str, list[pb.ScheduleJobRequest]] = {
    "timer": [
        pb.ScheduleJobRequest(
            name="nightly-report",
            timer_job=pb.TimerJob(
                duration_seconds=30,
                timer_name="Nightly report",
                control_plane_endpoint="http://control-plane:50053",
            ),
        ),
        pb.ScheduleJobRequest(
            name="build-timeout",
            labels={"team": "a", "example.com/tier": "batch"},
            timer_job=pb.TimerJob(
                duration_seconds=86400,
                timer_name="build-timeout",
                control_plane_endpoint="https://control-plane.example:8443/report",
                image="ghcr.io/jobscheduler/jobscheduler:v1.2.3",
                log_level="debug",
                env={"REPORT_MAX_ATTEMPTS": "5", "HTTPS_PROXY": "http://proxy:3128"},
            ),
        ),
    ],
    "container": [
        pb.ScheduleJobRequest(
            name="batch", container_job=pb.ContainerJob(image="ghcr.io/acme/batch:1", command=["run"])
        ),
        pb.ScheduleJobRequest(
            name="batch-indexed",
            container_job=pb.ContainerJob(
                image="ghcr.io/acme/batch:1",
                command=["run"],
                args=["--fast"],
                env={"MODE": "all"},
                env_from_secrets={"TOKEN": pb.SecretKeyRef(name="api", key="token")},
                resources=pb.Resources(cpu_request="1", cpu_limit="4", memory_limit="8Gi"),
                parallelism=3,
                completions=10,
                completion_mode=pb.COMPLETION_MODE_INDEXED,
                backoff_limit_per_index=2,
                exit_code_rules=[pb.ExitCodeRule(action=pb.EXIT_CODE_ACTION_FAIL_INDEX, exit_codes=[3])],
            ),
        ),
    ],
    "healthcheck": [
        pb.ScheduleJobRequest(
            name="probe-api",
            healthcheck_job=pb.HealthCheckJob(
                targets=[pb.HealthCheckTarget(name="api", tcp=pb.TcpProbe(host="api", port=443))],
                control_plane_endpoint="http://control-plane:50053",
            ),
        ),
        pb.ScheduleJobRequest(
            name="probe-all",
            labels={"team": "a"},
            healthcheck_job=pb.HealthCheckJob(
                targets=[
                    pb.HealthCheckTarget(
                        name="web",
                        http=pb.HttpProbe(url="https://web.example/healthz", expected_status=[200, 204]),
                        timeout_seconds=60,
                        retries=10,
                    ),
                    pb.HealthCheckTarget(
                        name="rpc", grpc=pb.GrpcProbe(target="rpc:50051", service="a.B", tls=True)
                    ),
                ],
                control_plane_endpoint="https://control-plane.example:8443/report",
                image="ghcr.io/jobscheduler/jobscheduler:v1.2.3",
            ),
        ),
    ],
    "webhook": [
        pb.ScheduleJobRequest(name="hook", webhook_job=pb.WebhookJob(url="https://hooks.example/x")),
        pb.ScheduleJobRequest(
            name="hook-all",
            webhook_job=pb.WebhookJob(
                url="http://hooks.example:8080/deploy?ref=main",
                method="PUT",
                headers={"X-Team": "ops"},
                headers_from_secrets={"Authorization": pb.SecretKeyRef(name="hook-creds", key="token")},
                body='{"ref": "main"}',
                timeout_seconds=300,
                expected_status=[200, 202],
                max_attempts=10,
                retry_backoff_seconds=60,
                image="ghcr.io/jobscheduler/jobscheduler:v1.2.3",
            ),
        ),
    ],
}


def render(request: pb.ScheduleJobRequest, *, job_id: str = "job-abcdefghij") -> dict[str, Any]:
    """The Job manifest ScheduleJob would send for ``request``."""
    decoded = schedule_request(request)
    handler = REGISTRY.for_request_field(decoded.job_field)
    params = handler.parse(decoded.params)
    ctx = RenderContext(
        job_id=job_id,
        name=decoded.name,
        job_type=handler.job_type,
        defaults=JobDefaults(namespace="jobscheduler"),
        labels=dict(decoded.labels),
    )
    manifest: dict[str, Any] = handler.render(params, ctx)
    return manifest


def test_the_registry_has_job_types() -> None:
    assert len(REGISTRY) >= 1
    assert set(EXAMPLES) <= {h.job_type for h in REGISTRY}, "EXAMPLES names a job type nobody registers"


@pytest.mark.parametrize("job_type", [h.job_type for h in REGISTRY])
def test_every_job_type_renders_restricted_pods(job_type: str) -> None:
    examples = EXAMPLES.get(job_type)
    if not examples:
        pytest.fail(f"add an example for job type {job_type!r} to EXAMPLES in {__name__}")
    handler = REGISTRY.for_type(job_type)
    assert handler is not None
    for request in examples:
        assert request.WhichOneof("job") == handler.request_field, f"example of another type: {request}"
        manifest = render(request)
        assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
        assert check_object(manifest) == [], f"{job_type} job from {request}"


# --------------------------------------------------------------------------- the checker itself

Mutation = Callable[[dict[str, Any]], None]


def _container(spec: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = spec["containers"][0]
    return container


def _with_init_container(spec: dict[str, Any], **security: Any) -> None:
    init = copy.deepcopy(_container(spec))
    init["name"] = "init"
    init["securityContext"].update(security)
    spec["initContainers"] = [init]


def _with_ephemeral_container(spec: dict[str, Any], **security: Any) -> None:
    debug = {"name": "debug", "image": "busybox", "securityContext": security}
    spec["ephemeralContainers"] = [debug]


# (id, mutation of the pod spec, expected fragment of a violation, also a baseline violation)
MUTATIONS: list[tuple[str, Mutation, str, bool]] = [
    ("privileged", lambda s: _container(s)["securityContext"].update(privileged=True), "privileged", True),
    (
        "hostPath",
        lambda s: s["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
        "hostPath",
        True,
    ),
    ("hostNetwork", lambda s: s.update(hostNetwork=True), "hostNetwork", True),
    ("hostPID", lambda s: s.update(hostPID=True), "hostPID", True),
    ("hostIPC", lambda s: s.update(hostIPC=True), "hostIPC", True),
    (
        "hostPort",
        lambda s: _container(s).update(ports=[{"containerPort": 80, "hostPort": 80}]),
        "hostPort",
        True,
    ),
    (
        "add SYS_ADMIN",
        lambda s: _container(s)["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
        "capabilities.add",
        True,
    ),
    (
        "unsafe sysctl",
        lambda s: s["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
        "sysctls",
        True,
    ),
    (
        "AppArmor unconfined",
        lambda s: _container(s)["securityContext"].update(appArmorProfile={"type": "Unconfined"}),
        "appArmorProfile",
        True,
    ),
    (
        "SELinux type",
        lambda s: s["securityContext"].update(seLinuxOptions={"type": "spc_t"}),
        "seLinuxOptions.type",
        True,
    ),
    (
        "SELinux user",
        lambda s: _container(s)["securityContext"].update(seLinuxOptions={"user": "system_u"}),
        "seLinuxOptions.user",
        True,
    ),
    (
        "procMount",
        lambda s: _container(s)["securityContext"].update(procMount="Unmasked"),
        "procMount",
        True,
    ),
    (
        "seccomp unconfined",
        lambda s: _container(s)["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        "seccompProfile",
        True,
    ),
    (
        "hostProcess",
        lambda s: s["securityContext"].update(windowsOptions={"hostProcess": True}),
        "hostProcess",
        True,
    ),
    (
        "probe host",
        lambda s: _container(s).update(
            livenessProbe={"httpGet": {"host": "169.254.169.254", "path": "/", "port": 80}}
        ),
        "livenessProbe.httpGet.host",
        True,
    ),
    (
        "nfs volume",
        lambda s: s["volumes"].append({"name": "nfs", "nfs": {"server": "nfs", "path": "/"}}),
        "volume types",
        False,
    ),
    (
        "privilege escalation",
        lambda s: _container(s)["securityContext"].update(allowPrivilegeEscalation=True),
        "allowPrivilegeEscalation",
        False,
    ),
    (
        "privilege escalation unset",
        lambda s: _container(s)["securityContext"].pop("allowPrivilegeEscalation"),
        "allowPrivilegeEscalation",
        False,
    ),
    (
        "runAsNonRoot false",
        lambda s: _container(s)["securityContext"].update(runAsNonRoot=False),
        "runAsNonRoot",
        False,
    ),
    (
        "runAsNonRoot nowhere",
        lambda s: [
            s["securityContext"].pop("runAsNonRoot"),
            _container(s)["securityContext"].pop("runAsNonRoot"),
        ],
        "runAsNonRoot",
        False,
    ),
    ("runAsUser 0", lambda s: s["securityContext"].update(runAsUser=0), "runAsUser", False),
    (
        "seccomp nowhere",
        lambda s: [
            s["securityContext"].pop("seccompProfile"),
            _container(s)["securityContext"].pop("seccompProfile"),
        ],
        "seccompProfile",
        False,
    ),
    (
        "capabilities not dropped",
        lambda s: _container(s)["securityContext"].pop("capabilities"),
        "capabilities.drop",
        False,
    ),
    (
        "add CHOWN",
        lambda s: _container(s)["securityContext"]["capabilities"].update(add=["CHOWN"]),
        "capabilities.add",
        False,
    ),
    (
        "privileged init container",
        lambda s: _with_init_container(s, privileged=True),
        "spec.initContainers[0].securityContext.privileged",
        True,
    ),
    (
        "ephemeral container without a security context",
        lambda s: _with_ephemeral_container(s),
        "spec.ephemeralContainers[0].securityContext.allowPrivilegeEscalation",
        False,
    ),
]


@pytest.mark.parametrize(
    ("mutate", "fragment", "baseline"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS]
)
def test_the_checker_reports_each_violation(mutate: Mutation, fragment: str, baseline: bool) -> None:
    job = render(EXAMPLES["timer"][0])
    assert check_object(job) == []
    mutated = copy.deepcopy(job)
    spec = mutated["spec"]["template"]["spec"]
    mutate(spec)
    violations = check_object(mutated)
    assert any(fragment in v for v in violations), violations
    baseline_violations = check_pod_spec(spec, level="baseline")
    assert any(fragment in v for v in baseline_violations) is baseline, baseline_violations


def test_the_checker_reads_apparmor_annotations() -> None:
    job = render(EXAMPLES["timer"][0])
    metadata, spec = pod_template(job)
    key = "container.apparmor.security.beta.kubernetes.io/timer"
    for value, allowed in (("runtime/default", True), ("localhost/profile", True), ("unconfined", False)):
        violations = check_pod_spec(spec, {**metadata, "annotations": {key: value}})
        assert (violations == []) is allowed, (value, violations)


def test_windows_pods_skip_the_linux_only_checks() -> None:
    spec = render(EXAMPLES["timer"][0])["spec"]["template"]["spec"]
    del _container(spec)["securityContext"]["allowPrivilegeEscalation"]
    assert check_pod_spec(spec)
    spec["os"] = {"name": "windows"}
    assert check_pod_spec(spec) == []


def test_pod_template_of_each_kind() -> None:
    spec = {"containers": [{"name": "c", "image": "i"}]}
    template = {"metadata": {"labels": {"a": "b"}}, "spec": spec}
    assert pod_template({"kind": "Pod", "metadata": {"name": "p"}, "spec": spec}) == ({"name": "p"}, spec)
    assert pod_template({"kind": "Deployment", "spec": {"template": template}}) == (
        {"labels": {"a": "b"}},
        spec,
    )
    cron = {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": template}}}}
    assert pod_template(cron)[1] is spec
    with pytest.raises(ValueError, match="makes no pods"):
        pod_template({"kind": "Service", "spec": {}})
