"""GetJobLogs on Kubernetes: a job's pods (from the informer, else a list) and one pod's log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

from jobscheduler.backends.kubernetes._client import KubeApi
from jobscheduler.backends.kubernetes._errors import Call
from jobscheduler.backends.kubernetes._status import PodSummary, pod_summary
from jobscheduler.core.errors import FailedPrecondition, InvalidArgument
from jobscheduler.core.manifests import JOB_ID_LABEL, MANAGED_SELECTOR
from jobscheduler.core.model import LogLine
from jobscheduler.core.schedules.cronjob import JOB_NAME_POD_LABEL

PODS: Final = "pods"


async def pod_logs(
    api: KubeApi,
    namespace: str,
    job_id: str,
    known: tuple[PodSummary, ...],
    *,
    follow: bool,
    tail_lines: int,
    attempt: int,
) -> AsyncIterator[LogLine]:
    """The log of the job's pod ``attempt`` (1-based; 0: the latest) by line; ``known``: its pods
    as the informer has them, oldest first (a list asks the API server when there are none)."""
    pods = known or await list_pods(api, namespace, job_id)
    if not pods:
        raise FailedPrecondition(f"job {job_id} has no pod yet; its logs appear once one starts")
    if attempt > len(pods):
        raise InvalidArgument.field("attempt", f"job {job_id} has {len(pods)} pod(s)")
    number = attempt or len(pods)
    pod = pods[number - 1]
    query = [("follow", "true" if follow else "false")]
    if tail_lines:
        query.append(("tailLines", str(tail_lines)))
    call = Call(verb="get", resource="pods/log", namespace=namespace, name=pod.name)
    pending = b""
    try:
        async for chunk in api.stream(
            f"/api/v1/namespaces/{namespace}/pods/{pod.name}/log", call, query=query, read_timeout=3600
        ):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield LogLine(line.decode("utf-8", "replace"), number, pod.name)
    except InvalidArgument as exc:  # 400: e.g. 'container "timer" ... is waiting to start'
        raise FailedPrecondition(f"logs of pod {pod.name} are not available yet: {exc.message}") from None
    if pending:
        yield LogLine(pending.decode("utf-8", "replace"), number, pod.name)


async def list_pods(api: KubeApi, namespace: str, job_id: str) -> tuple[PodSummary, ...]:
    """The job's pods, oldest first, read from the API server (by its job-id label, or for a Job
    a schedule's CronJob made, which has none, by the Job controller's job-name label)."""
    call = Call(verb="list", resource=PODS, namespace=namespace)
    pods: list[PodSummary] = []
    for label in (JOB_ID_LABEL, JOB_NAME_POD_LABEL):
        selector = f"{MANAGED_SELECTOR},{label}={job_id}"
        page = await api.request(
            "GET", f"/api/v1/namespaces/{namespace}/pods", call, query=[("labelSelector", selector)]
        )
        pods = [p for item in page.get("items") or () if (p := pod_summary(item)) and p.job_id == job_id]
        if pods:
            break
    return tuple(sorted(pods, key=lambda p: (p.created, p.name)))
