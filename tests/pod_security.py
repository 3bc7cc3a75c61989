"""The Pod Security Standards (https://kubernetes.io/docs/concepts/security/pod-security-standards/),
"baseline" and "restricted" at version "latest", checked offline for a pod spec.

This is what Pod Security admission (``pod-security.kubernetes.io/enforce: restricted`` on the
namespace) checks when the API server is asked to create a pod, a Deployment or a Job: a manifest
that passes here is not refused there. Each check is one function over the pod spec (and the pod's
annotations, for AppArmor); a violation is a string naming the field, its value and the rule, e.g.
``spec.containers[0].securityContext.privileged: True (baseline: privileged containers)``.

Windows pods (``spec.os.name: windows``) are exempt from the Linux-only restricted checks
(allowPrivilegeEscalation, seccomp, capabilities), as in the admission plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, Literal

Level = Literal["baseline", "restricted"]
Obj = Mapping[str, Any]

#: Capabilities "baseline" lets containers add (restricted: only NET_BIND_SERVICE).
BASELINE_CAPABILITIES: Final = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
RESTRICTED_CAPABILITIES: Final = frozenset({"NET_BIND_SERVICE"})
#: Namespaced sysctls that cannot affect other pods on the node.
SAFE_SYSCTLS: Final = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
    }
)
SELINUX_TYPES: Final = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
#: The volume types "restricted" allows (every other source, hostPath first of all, is refused).
RESTRICTED_VOLUME_TYPES: Final = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
APPARMOR_ANNOTATION_PREFIX: Final = "container.apparmor.security.beta.kubernetes.io/"
CONTAINER_FIELDS: Final = ("containers", "initContainers", "ephemeralContainers")

# --------------------------------------------------------------------------- plumbing


def containers(spec: Obj) -> Iterator[tuple[str, Obj]]:
    """(path, container) of every container, init container and ephemeral container."""
    for field in CONTAINER_FIELDS:
        for i, container in enumerate(spec.get(field) or ()):
            yield f"spec.{field}[{i}]", container


def _sc(obj: Obj) -> Obj:
    sc: Obj = obj.get("securityContext") or {}
    return sc


def _is_windows(spec: Obj) -> bool:
    return ((spec.get("os") or {}).get("name") or "") == "windows"


Check = Callable[[Obj, Obj], list[str]]

# --------------------------------------------------------------------------- baseline


def _host_process(spec: Obj, meta: Obj) -> list[str]:
    out = []
    where = [("spec.securityContext", _sc(spec))]
    where += [(f"{path}.securityContext", _sc(c)) for path, c in containers(spec)]
    for path, sc in where:
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{path}.windowsOptions.hostProcess: True (baseline: HostProcess)")
    return out


def _host_namespaces(spec: Obj, meta: Obj) -> list[str]:
    return [
        f"spec.{field}: {spec[field]!r} (baseline: host namespaces)"
        for field in ("hostNetwork", "hostPID", "hostIPC")
        if spec.get(field)
    ]


def _privileged(spec: Obj, meta: Obj) -> list[str]:
    return [
        f"{path}.securityContext.privileged: True (baseline: privileged containers)"
        for path, c in containers(spec)
        if _sc(c).get("privileged")
    ]


def _added_capabilities(spec: Obj, meta: Obj, allowed: frozenset[str], level: str) -> list[str]:
    out = []
    for path, c in containers(spec):
        added = (_sc(c).get("capabilities") or {}).get("add") or ()
        bad = [cap for cap in added if cap not in allowed]
        if bad:
            out.append(f"{path}.securityContext.capabilities.add: {bad} ({level}: capabilities)")
    return out


def _baseline_capabilities(spec: Obj, meta: Obj) -> list[str]:
    return _added_capabilities(spec, meta, BASELINE_CAPABILITIES, "baseline")


def _host_path_volumes(spec: Obj, meta: Obj) -> list[str]:
    return [
        f"spec.volumes[{i}].hostPath: {v['hostPath']!r} (baseline: hostPath volumes)"
        for i, v in enumerate(spec.get("volumes") or ())
        if "hostPath" in v
    ]


def _host_ports(spec: Obj, meta: Obj) -> list[str]:
    return [
        f"{path}.ports[{i}].hostPort: {port['hostPort']} (baseline: host ports)"
        for path, c in containers(spec)
        for i, port in enumerate(c.get("ports") or ())
        if port.get("hostPort")
    ]


def _apparmor(spec: Obj, meta: Obj) -> list[str]:
    out = []
    where = [("spec.securityContext", _sc(spec))]
    where += [(f"{path}.securityContext", _sc(c)) for path, c in containers(spec)]
    for path, sc in where:
        kind = (sc.get("appArmorProfile") or {}).get("type")
        if kind is not None and kind not in ("RuntimeDefault", "Localhost"):
            out.append(f"{path}.appArmorProfile.type: {kind!r} (baseline: AppArmor)")
    for key, value in (meta.get("annotations") or {}).items():
        allowed = value in ("", "runtime/default") or str(value).startswith("localhost/")
        if key.startswith(APPARMOR_ANNOTATION_PREFIX) and not allowed:
            out.append(f"metadata.annotations[{key}]: {value!r} (baseline: AppArmor)")
    return out


def _selinux(spec: Obj, meta: Obj) -> list[str]:
    out = []
    where = [("spec.securityContext", _sc(spec))]
    where += [(f"{path}.securityContext", _sc(c)) for path, c in containers(spec)]
    for path, sc in where:
        options = sc.get("seLinuxOptions") or {}
        if options.get("type", "") not in SELINUX_TYPES:
            out.append(f"{path}.seLinuxOptions.type: {options['type']!r} (baseline: SELinux)")
        for field in ("user", "role"):
            if options.get(field):
                out.append(f"{path}.seLinuxOptions.{field}: {options[field]!r} (baseline: SELinux)")
    return out


def _proc_mount(spec: Obj, meta: Obj) -> list[str]:
    return [
        f"{path}.securityContext.procMount: {_sc(c)['procMount']!r} (baseline: /proc mount type)"
        for path, c in containers(spec)
        if _sc(c).get("procMount", "Default") != "Default"
    ]


def _baseline_seccomp(spec: Obj, meta: Obj) -> list[str]:
    out = []
    where = [("spec.securityContext", _sc(spec))]
    where += [(f"{path}.securityContext", _sc(c)) for path, c in containers(spec)]
    for path, sc in where:
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"{path}.seccompProfile.type: 'Unconfined' (baseline: seccomp)")
    return out


def _sysctls(spec: Obj, meta: Obj) -> list[str]:
    return [
        f"spec.securityContext.sysctls[{i}].name: {s.get('name')!r} (baseline: sysctls)"
        for i, s in enumerate(_sc(spec).get("sysctls") or ())
        if s.get("name") not in SAFE_SYSCTLS
    ]


def _probe_hosts(spec: Obj, meta: Obj) -> list[str]:
    """Probes and lifecycle hooks may not reach another host (checked since 1.34)."""
    out = []
    for path, c in containers(spec):
        handlers = [
            (probe, c.get(probe) or {}) for probe in ("livenessProbe", "readinessProbe", "startupProbe")
        ]
        handlers += [
            (f"lifecycle.{hook}", (c.get("lifecycle") or {}).get(hook) or {})
            for hook in ("postStart", "preStop")
        ]
        for name, handler in handlers:
            for action in ("httpGet", "tcpSocket"):
                host = (handler.get(action) or {}).get("host")
                if host:
                    out.append(f"{path}.{name}.{action}.host: {host!r} (baseline: host probes)")
    return out


BASELINE_CHECKS: Final[tuple[Check, ...]] = (
    _host_process,
    _host_namespaces,
    _privileged,
    _baseline_capabilities,
    _host_path_volumes,
    _host_ports,
    _apparmor,
    _selinux,
    _proc_mount,
    _baseline_seccomp,
    _sysctls,
    _probe_hosts,
)

# --------------------------------------------------------------------------- restricted


def _volume_types(spec: Obj, meta: Obj) -> list[str]:
    out = []
    for i, volume in enumerate(spec.get("volumes") or ()):
        sources = [k for k in volume if k != "name"]
        bad = [k for k in sources if k not in RESTRICTED_VOLUME_TYPES]
        if bad:
            out.append(f"spec.volumes[{i}]: {', '.join(bad)} (restricted: volume types)")
    return out


def _privilege_escalation(spec: Obj, meta: Obj) -> list[str]:
    if _is_windows(spec):
        return []
    return [
        f"{path}.securityContext.allowPrivilegeEscalation: {_sc(c).get('allowPrivilegeEscalation')!r},"
        " must be False (restricted: privilege escalation)"
        for path, c in containers(spec)
        if _sc(c).get("allowPrivilegeEscalation") is not False
    ]


def _run_as_non_root(spec: Obj, meta: Obj) -> list[str]:
    out = []
    pod = _sc(spec).get("runAsNonRoot")
    if pod is False:
        out.append("spec.securityContext.runAsNonRoot: False (restricted: running as non-root)")
    for path, c in containers(spec):
        own = _sc(c).get("runAsNonRoot")
        if own is False:
            out.append(f"{path}.securityContext.runAsNonRoot: False (restricted: running as non-root)")
        elif own is None and pod is not True:
            out.append(
                f"{path}.securityContext.runAsNonRoot: unset, and not True for the pod"
                " (restricted: running as non-root)"
            )
    return out


def _run_as_user(spec: Obj, meta: Obj) -> list[str]:
    where = [("spec.securityContext", _sc(spec))]
    where += [(f"{path}.securityContext", _sc(c)) for path, c in containers(spec)]
    return [
        f"{path}.runAsUser: 0 (restricted: running as non-root user)"
        for path, sc in where
        if sc.get("runAsUser") == 0
    ]


def _restricted_seccomp(spec: Obj, meta: Obj) -> list[str]:
    if _is_windows(spec):
        return []
    out = []
    allowed = ("RuntimeDefault", "Localhost")
    pod = (_sc(spec).get("seccompProfile") or {}).get("type")
    if pod is not None and pod not in allowed:
        out.append(f"spec.securityContext.seccompProfile.type: {pod!r} (restricted: seccomp)")
    for path, c in containers(spec):
        own = (_sc(c).get("seccompProfile") or {}).get("type")
        if own is not None and own not in allowed:
            out.append(f"{path}.securityContext.seccompProfile.type: {own!r} (restricted: seccomp)")
        elif own is None and pod not in allowed:
            out.append(
                f"{path}.securityContext.seccompProfile: unset, and the pod's is not RuntimeDefault"
                " or Localhost (restricted: seccomp)"
            )
    return out


def _restricted_capabilities(spec: Obj, meta: Obj) -> list[str]:
    if _is_windows(spec):
        return []
    out = _added_capabilities(spec, meta, RESTRICTED_CAPABILITIES, "restricted")
    for path, c in containers(spec):
        dropped = (_sc(c).get("capabilities") or {}).get("drop") or ()
        if "ALL" not in dropped:
            out.append(
                f"{path}.securityContext.capabilities.drop: {list(dropped)}, must include ALL"
                " (restricted: capabilities)"
            )
    return out


RESTRICTED_CHECKS: Final[tuple[Check, ...]] = (
    _volume_types,
    _privilege_escalation,
    _run_as_non_root,
    _run_as_user,
    _restricted_seccomp,
    _restricted_capabilities,
)

# --------------------------------------------------------------------------- entry points


def check_pod_spec(spec: Obj, metadata: Obj | None = None, *, level: Level = "restricted") -> list[str]:
    """Every violation of ``level`` by a pod (its spec, and its metadata for AppArmor annotations).

    "restricted" includes "baseline"; an empty list means Pod Security admission admits the pod.
    """
    if level not in ("baseline", "restricted"):
        raise ValueError(f"unknown Pod Security level {level!r}")
    checks = BASELINE_CHECKS + (RESTRICTED_CHECKS if level == "restricted" else ())
    meta = metadata or {}
    return [violation for check in checks for violation in check(spec, meta)]


def pod_template(obj: Obj) -> tuple[Obj, Obj]:
    """(metadata, spec) of the pod that a Pod, a workload (Deployment, Job, ...) or a CronJob makes."""
    kind = obj.get("kind")
    if kind == "Pod":
        return obj.get("metadata") or {}, obj["spec"]
    if kind == "CronJob":
        template = obj["spec"]["jobTemplate"]["spec"]["template"]
    elif kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController"):
        template = obj["spec"]["template"]
    else:
        raise ValueError(f"{kind} makes no pods")
    return template.get("metadata") or {}, template["spec"]


def check_object(obj: Obj, *, level: Level = "restricted") -> list[str]:
    """The violations of the pod that ``obj`` (a Pod, a workload or a CronJob) makes."""
    metadata, spec = pod_template(obj)
    return check_pod_spec(spec, metadata, level=level)
