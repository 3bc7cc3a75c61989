"""``podFailurePolicy`` as the Job controller applies it to a local attempt's exit code."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.backends.local")


@dataclass(frozen=True, slots=True)
class RuleMatch:
    index: int
    #: FailJob, Ignore or Count.
    action: str
    #: As a container runtime reports it.
    exit_code: int


def match_pod_failure_policy(
    spec: Mapping[str, Any], container_name: str, returncode: int
) -> RuleMatch | None:
    """The first ``podFailurePolicy`` rule matching a failed attempt; None if no rule does.

    As the Job controller: rules in order; ``onExitCodes`` matches a non-zero exit code of the named
    container (any container without ``containerName``) with ``In``/``NotIn``; a matching rule
    whose action does not apply (``FailIndex`` without ``backoffLimitPerIndex``) is passed over;
    ``onPodConditions`` rules (e.g. DisruptionTarget) never match: a local process has no pod conditions.
    A process killed by signal N has exit code 128 + N, as a container's.
    """
    exit_code = returncode if returncode >= 0 else 128 - returncode
    policy = spec.get("podFailurePolicy") or {}
    per_index = spec.get("backoffLimitPerIndex") is not None
    for index, rule in enumerate(policy.get("rules") or []):
        requirement = rule.get("onExitCodes")
        if not isinstance(requirement, Mapping) or exit_code == 0:
            continue
        name = requirement.get("containerName")
        if name is not None and name != container_name:
            continue
        values = requirement.get("values") or []
        operator = requirement.get("operator")
        if not (
            (operator == "In" and exit_code in values) or (operator == "NotIn" and exit_code not in values)
        ):
            continue
        action = rule.get("action")
        if action in ("FailJob", "Ignore", "Count") or (action == "FailIndex" and per_index):
            return RuleMatch(index, str(action), exit_code)
    return None


def warn_about_pod_failure_policy(job_id: str, manifest: Mapping[str, Any]) -> None:
    """Log the ``onExitCodes`` rules that name no container of the Job: they can never match (and the
    Kubernetes API server would reject the Job)."""
    spec = manifest.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    names = {c.get("name") for c in pod.get("containers") or []}
    for index, rule in enumerate((spec.get("podFailurePolicy") or {}).get("rules") or []):
        name = (rule.get("onExitCodes") or {}).get("containerName")
        if name is not None and name not in names:
            log.warning(
                "podFailurePolicy rule names no container of the job; it never matches",
                job_id=job_id,
                rule=index,
                container_name=name,
                containers=sorted(str(n) for n in names),
            )
