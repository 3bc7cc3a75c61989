"""Pod-level policy for every Job this service creates: what a pod template may ask of a node.

Job types render through :func:`jobscheduler.core.manifests.job_manifest`, which sets none of the
dangerous fields; this is the check that a handler (or anything else that puts a manifest in
front of the backend) cannot change that: no host volumes or host namespaces, no other
ServiceAccount and no token, no containers beyond the ones rendered, no privileged containers or
host ports, the restricted security context, and images from ALLOWED_IMAGES. Allow-lists, not
deny-lists: a pod field nobody thought about is refused until it is added here on purpose.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Final

from jobscheduler.core.limits import ImagePolicy

#: The container security context every job container has (Pod Security "restricted").
RESTRICTED_CONTAINER_SECURITY_CONTEXT: Final[Mapping[str, Any]] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

#: Pod spec fields a job's pod may have. Not here, so refused: hostNetwork, hostPID, hostIPC,
#: initContainers, ephemeralContainers, nodeName, tolerations, priorityClassName, ...
_POD_FIELDS: Final = frozenset(
    {
        "restartPolicy",
        "automountServiceAccountToken",
        "enableServiceLinks",
        "securityContext",
        "containers",
        "volumes",
        "serviceAccountName",
        "serviceAccount",
        "terminationGracePeriodSeconds",
        "dnsPolicy",
    }
)
#: Named separately, for a clearer message.
_HOST_NAMESPACES: Final = ("hostNetwork", "hostPID", "hostIPC", "hostUsers")
_EXTRA_CONTAINERS: Final = ("initContainers", "ephemeralContainers")
_CONTAINER_FIELDS: Final = frozenset(
    {
        "name",
        "image",
        "imagePullPolicy",
        "command",
        "args",
        "env",
        "resources",
        "securityContext",
        "volumeMounts",
        "workingDir",
        "ports",
        "terminationMessagePath",
        "terminationMessagePolicy",
    }
)
_CONTAINER_SECURITY_FIELDS: Final = frozenset(
    {*RESTRICTED_CONTAINER_SECURITY_CONTEXT, "runAsUser", "runAsGroup"}
)
_POD_SECURITY_FIELDS: Final = frozenset(
    {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "supplementalGroups", "seccompProfile"}
)
#: Volume sources a job's pod may use: scratch space only (hostPath, secrets, PVCs, ... are not).
_VOLUME_SOURCES: Final = frozenset({"emptyDir"})
#: env[].valueFrom sources: the pod's own fields, and one key of a Secret in the Job's namespace
#: (a job type's env_from_secrets). Not configMapKeyRef, and no envFrom (whole Secrets/ConfigMaps).
_ENV_SOURCES: Final = frozenset({"fieldRef", "resourceFieldRef", "secretKeyRef"})
#: secretKeyRef with exactly a name and a key ("optional" would hide a missing Secret).
_SECRET_KEY_REF_FIELDS: Final = frozenset({"name", "key"})
_SERVICE_ACCOUNTS: Final = ("", "default")
#: Pod annotations that weaken confinement (AppArmor, the pre-1.19 seccomp ones).
_CONFINEMENT_ANNOTATIONS: Final = (
    "container.apparmor.security.beta.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/",
    "container.seccomp.security.alpha.kubernetes.io/",
)


def pod_template_problems(
    template: Mapping[str, Any],
    *,
    images: ImagePolicy | None = None,
    trusted_images: Collection[str] = (),
) -> list[str]:
    """What is wrong with a Job's ``spec.template`` (empty: nothing). ``images``: ALLOWED_IMAGES
    (None: any image); ``trusted_images``: images the handlers use by configuration."""
    where = "spec.template"
    problems: list[str] = []
    meta = _mapping(template.get("metadata"))
    for key in _mapping(meta.get("annotations")):
        if str(key).startswith(_CONFINEMENT_ANNOTATIONS):
            problems.append(f"{where}.metadata.annotations[{key}] must not be set")
    pod = _mapping(template.get("spec"))
    where = f"{where}.spec"
    for key in pod:
        if key in _HOST_NAMESPACES:
            if pod[key]:
                problems.append(f"{where}.{key} must not be set (host namespaces)")
        elif key in _EXTRA_CONTAINERS:
            if pod[key]:
                problems.append(f"{where}.{key} must be empty (only the rendered containers run)")
        elif key not in _POD_FIELDS:
            problems.append(f"{where}.{key} is not allowed in a job's pod")
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        problems.append(f"{where}.restartPolicy must be Never or OnFailure")
    for key in ("serviceAccountName", "serviceAccount"):
        if pod.get(key, "") not in _SERVICE_ACCOUNTS:
            problems.append(f"{where}.{key} must be unset or default (got {pod[key]!r})")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}.automountServiceAccountToken must be false")
    problems.extend(_pod_security_problems(_mapping(pod.get("securityContext")), f"{where}.securityContext"))
    for i, volume in enumerate(_list(pod.get("volumes"))):
        sources = set(_mapping(volume)) - {"name"}
        if not sources or not sources <= _VOLUME_SOURCES:
            kinds = ", ".join(sorted(map(str, sources))) or "no source"
            problems.append(f"{where}.volumes[{i}] may only be an emptyDir (got {kinds})")
    containers = _list(pod.get("containers"))
    if not containers:
        problems.append(f"{where}.containers must not be empty")
    for i, container in enumerate(containers):
        problems.extend(
            _container_problems(_mapping(container), f"{where}.containers[{i}]", images, trusted_images)
        )
    return problems


def _container_problems(
    c: Mapping[str, Any], where: str, images: ImagePolicy | None, trusted_images: Collection[str]
) -> list[str]:
    problems = [
        f"{where}.{key} is not allowed in a job's container" for key in c if key not in _CONTAINER_FIELDS
    ]
    image = c.get("image")
    if not image or not isinstance(image, str):
        problems.append(f"{where}.image must be set")
    elif images is not None and image not in trusted_images and not images.allows(image):
        problems.append(f"{where}.image {image!r} is not allowed (ALLOWED_IMAGES)")
    sc = _mapping(c.get("securityContext"))
    for key, want in RESTRICTED_CONTAINER_SECURITY_CONTEXT.items():
        if sc.get(key) != want:
            problems.append(f"{where}.securityContext.{key} must be {want!r}")
    for key in sc:
        if key not in _CONTAINER_SECURITY_FIELDS:
            problems.append(f"{where}.securityContext.{key} is not allowed (privileged, ...)")
    if sc.get("runAsUser") == 0 or sc.get("runAsGroup") == 0:
        problems.append(f"{where}.securityContext must not run as root (0)")
    for j, port in enumerate(_list(c.get("ports"))):
        port = _mapping(port)
        if port.get("hostPort") or port.get("hostIP"):
            problems.append(f"{where}.ports[{j}].hostPort must not be set")
    for j, env in enumerate(_list(c.get("env"))):
        source = _mapping(_mapping(env).get("valueFrom"))
        if len(source) > 1 or not set(source) <= _ENV_SOURCES:
            problems.append(
                f"{where}.env[{j}].valueFrom may only be one fieldRef, resourceFieldRef or secretKeyRef"
            )
        elif "secretKeyRef" in source:
            ref = _mapping(source["secretKeyRef"])
            if set(ref) != _SECRET_KEY_REF_FIELDS or not all(isinstance(v, str) and v for v in ref.values()):
                problems.append(f"{where}.env[{j}].valueFrom.secretKeyRef must have exactly a name and a key")
    return problems


def _pod_security_problems(sc: Mapping[str, Any], where: str) -> list[str]:
    problems = [f"{where}.{key} is not allowed" for key in sc if key not in _POD_SECURITY_FIELDS]
    if sc.get("runAsNonRoot") is False:
        problems.append(f"{where}.runAsNonRoot must not be false")
    if sc.get("runAsUser") == 0 or sc.get("runAsGroup") == 0:
        problems.append(f"{where} must not run as root (0)")
    seccomp = _mapping(sc.get("seccompProfile")).get("type")
    if seccomp is not None and seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append(f"{where}.seccompProfile.type must be RuntimeDefault or Localhost")
    return problems


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
