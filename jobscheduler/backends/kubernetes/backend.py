"""The Kubernetes backend: our jobs are batch/v1 Jobs, found by their labels.

Two informers (list, then watch: ``_informer``) keep the index fed: one over our Jobs, one
over their Pods (for pod names and the last container's exit). They resume each watch from the
last resourceVersion, take bookmarks, list again at once on 410 Gone, and reconnect with a
short capped backoff after errors. The index holds compact records built from the JSON, never
the API objects.

(The client's ``kubernetes.informer.SharedInformer`` is thread-based, works with the
synchronous client and keeps whole model objects, ~37 KB per Job; this service runs on one
asyncio loop and keeps ~1.1 KB per job: bench/cache.py.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any, Final

from jobscheduler import metrics, tracing
from jobscheduler.backends.kubernetes._client import KubeApi, paused_gc
from jobscheduler.backends.kubernetes._cronjobs import CronJobStore
from jobscheduler.backends.kubernetes._errors import Call, Conflict
from jobscheduler.backends.kubernetes._informer import (
    STALE_GRACE_SECONDS,
    Informer,
    caught_up,
    export_metrics,
    inform,
    list_pages,
    probe,
    version_number,
    watch_event,
)
from jobscheduler.backends.kubernetes._logs import pod_logs
from jobscheduler.backends.kubernetes._status import (
    PodSummary,
    is_managed,
    job_record,
    pod_summary,
    with_pods,
)
from jobscheduler.backends.kubernetes._templates import KubeTemplates
from jobscheduler.core.errors import FailedPrecondition, NotFound, Unavailable
from jobscheduler.core.index import JobIndex
from jobscheduler.core.manifests import (
    ADMISSION_ANNOTATION,
    ADMISSION_STATES_BY_PHASE,
    ADMITTED_AT_ANNOTATION,
    CANCEL_REASON_ANNOTATION,
    CANCELLED_AT_ANNOTATION,
    FAILED_AT_ANNOTATION,
    FAILURE_MESSAGE_ANNOTATION,
    FAILURE_REASON_ANNOTATION,
    format_precise_time,
)
from jobscheduler.core.model import JobPhase, JobRecord, LogLine
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.backends.kubernetes")

JOBS: Final = "jobs.batch"
PODS: Final = "pods"
_MERGE_PATCH: Final = "application/merge-patch+json"
#: How often a held job's compare-and-swap patch is tried against a changing object.
_CAS_ATTEMPTS: Final = 5


def _rv(obj: Mapping[str, Any]) -> int:
    """resourceVersion as a number for ordering one object's versions (0 if not numeric)."""
    return version_number(str((obj.get("metadata") or {}).get("resourceVersion") or ""))


def _number(record: JobRecord) -> int:
    """The resourceVersion a cached record was read from, as a number to order one object's
    versions (0 if not numeric)."""
    v = record.version
    return v if isinstance(v, int) else version_number(v)


class KubernetesBackend:
    """Creates and reads Jobs in one namespace.

    Cancel sets ``activeDeadlineSeconds: 1`` and annotates the Job: the Job
    controller fails it (DeadlineExceeded) and deletes its pods at once, and
    ``ttlSecondsAfterFinished`` then applies as for any finished Job.
    (Suspending would also remove the pods, but a suspended Job never
    finishes, so retention would never remove it; deleting it would lose
    the record, and without a propagation policy would leak its pods.)
    """

    name = "kubernetes"
    current_wait: float = STALE_GRACE_SECONDS  # list()'s wait for the Jobs watch to reach a fresh read

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self._api = api
        self.api = api
        self.namespace = namespace
        #: Schedules as CronJobs (core.schedules.ports.ScheduleStore): the controller fires them.
        self.schedules = CronJobStore(api, namespace)
        #: Job templates as immutable ConfigMaps, one per version (core.templates.TemplateStore).
        self.templates = KubeTemplates(api, namespace)
        self._jobs_path = f"/apis/batch/v1/namespaces/{namespace}/jobs"
        self._pods_path = f"/api/v1/namespaces/{namespace}/pods"
        self._index: JobIndex | None = None
        self._jobs: dict[str, JobRecord] = {}
        self._pods: dict[str, dict[str, PodSummary]] = {}
        self._informers = (Informer(JOBS, self._jobs_path), Informer(PODS, self._pods_path))
        #: While a list of Jobs is in flight: the Jobs our writes changed meanwhile (True: created).
        self._written: dict[str, bool] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # --- informers ------------------------------------------------------------------------

    async def start(self, index: JobIndex) -> None:
        self._index = index
        loop = asyncio.get_running_loop()
        for informer in self._informers:
            export_metrics(informer)
        self._tasks = [
            loop.create_task(
                inform(informer, self._api, self.namespace, self._list_into, self._on_event),
                name=f"informer-{informer.resource}",
            )
            for informer in self._informers
        ]

    def lag(self) -> str | None:
        """Why the index may be stale: an informer disconnected or relisting for longer than
        the grace (_informer.STALE_GRACE_SECONDS); None while both follow the API server."""
        now = time.monotonic()
        return next((reason for i in self._informers if (reason := i.lag(now)) is not None), None)

    async def _list_into(self, informer: Informer) -> None:
        # Each page is summarised as it arrives: the whole list is never held as API objects.
        jobs: dict[str, JobRecord] = {}
        pods: dict[str, dict[str, PodSummary]] = {}
        version = ""
        if informer.resource == JOBS:
            self._written = {}  # from now on, our writes are newer than (or the same as) the list
        try:
            async for items, page_version in list_pages(self._api, informer, self.namespace):
                version = page_version
                with paused_gc():
                    for item in items:
                        if informer.resource == JOBS:
                            if is_managed(item):
                                jobs[str(item["metadata"]["name"])] = job_record(item)
                        elif (pod := pod_summary(item)) is not None:
                            pods.setdefault(pod.job_id, {})[pod.name] = pod
            if informer.resource == JOBS:
                self._keep_written(jobs, self._written or {})
        finally:
            if informer.resource == JOBS:
                self._written = None
        if informer.lists:
            metrics.WATCH_RELISTS.labels(informer.resource).inc()
        informer.lists += 1
        if informer.resource == JOBS:
            self._jobs = jobs
        else:
            self._pods = pods
        informer.resource_version = version
        informer.synced = True
        if self._index is not None and all(i.synced for i in self._informers):
            self._index.replace_all(self._combined(job_id) for job_id in self._jobs)
            if not self._index.synced:
                log.info("jobs synced", jobs=len(self._jobs))
            self._index.mark_synced()

    def _keep_written(self, listed: dict[str, JobRecord], written: Mapping[str, bool]) -> None:
        """Never roll back our own writes: a Job we wrote (or created) after the list was requested
        may be newer than the list's snapshot. resourceVersions are opaque: the one we hold stays
        unless the list has the very same version; a Job we created that the list lacks stays too
        (the list was taken before it existed). Everything else the list has is newer than what we
        observed before asking for it."""
        for name, created in written.items():
            mine = self._jobs.get(name)
            theirs = listed.get(name)
            if mine is not None and (str(theirs.version) != str(mine.version) if theirs else created):
                listed[name] = mine

    def _on_event(self, informer: Informer, event: Mapping[str, Any]) -> None:
        change = watch_event(informer, event)
        if change is None:
            return
        kind, obj = change
        if informer.resource == JOBS:
            self._on_job(kind, obj)
        else:
            self._on_pod(kind, obj)

    def _on_job(self, kind: str, job: Mapping[str, Any]) -> None:
        name = str((job.get("metadata") or {}).get("name") or "")
        if kind == "DELETED" or not is_managed(job):
            if self._jobs.pop(name, None) is not None and self._index is not None and self._index.synced:
                self._index.remove(name)
            self._pods.pop(name, None)
            return
        self._remember(job)

    def _remember(
        self, job: Mapping[str, Any], *, own_write: bool = False, created: bool = False
    ) -> JobRecord:
        """Take a Job version (from a watch or our own write) unless a newer one is known.

        The answer to our own write can arrive after the watch has already gone past it
        (and seen the Job deleted): then it is only the caller's answer, not the index's.
        """
        name = str(job["metadata"]["name"])
        version = _rv(job)
        known = self._jobs.get(name)
        if known is not None and version and version <= _number(known):
            return self._combined(name)  # older, or the version we have (our write, then its watch event)
        watched = version_number(self._informers[0].resource_version)
        if own_write and known is None and version and version <= watched:
            return job_record(job)
        self._jobs[name] = job_record(job)
        if own_write and self._written is not None:
            self._written[name] = created or self._written.get(name, False)
        combined = self._combined(name)
        if self._index is not None and (self._index.synced or all(i.synced for i in self._informers)):
            self._index.apply(combined)
        return combined

    def _on_pod(self, kind: str, pod: Mapping[str, Any]) -> None:
        summary = pod_summary(pod)
        if summary is None:
            return
        pods = self._pods.setdefault(summary.job_id, {})
        if kind == "DELETED":
            pods.pop(summary.name, None)
        else:
            pods[summary.name] = summary
        if summary.job_id in self._jobs and self._index is not None and self._index.synced:
            self._index.apply(self._combined(summary.job_id))

    def _combined(self, job_id: str) -> JobRecord:
        return with_pods(self._jobs[job_id], self._pods.get(job_id, {}).values())

    def _call(self, verb: str, name: str | None = None) -> Call:
        return Call(verb=verb, resource=JOBS, namespace=self.namespace, name=name)

    async def create(self, manifest: Mapping[str, Any]) -> JobRecord:
        created = await self._api.request("POST", self._jobs_path, self._call("create"), body=manifest)
        return self._remember(created, own_write=True, created=True)

    async def get(self, job_id: str) -> JobRecord:
        job = await self._api.request("GET", f"{self._jobs_path}/{job_id}", self._call("get", job_id))
        if not is_managed(job):
            raise NotFound(f"job {job_id!r} not found in namespace {self.namespace!r}")
        return job_record(job)

    async def manifest(self, job_id: str) -> dict[str, Any]:
        job = await self._api.request("GET", f"{self._jobs_path}/{job_id}", self._call("get", job_id))
        if not is_managed(job):
            raise NotFound(f"job {job_id!r} not found in namespace {self.namespace!r}")
        return job

    async def list(self) -> list[JobRecord]:
        """Every job as of now: the index once the Jobs watch has caught up with a one-item read
        (a new leader's admission catch-up: no second full list), else a full list."""
        index, informer = self._index, self._informers[0]
        if (
            index is not None
            and index.synced
            and await caught_up(self._api, informer, self.namespace, self.current_wait)
        ):
            return index.records()
        records: list[JobRecord] = []
        async for items, _ in list_pages(self._api, informer, self.namespace):
            records.extend(job_record(item) for item in items if is_managed(item))
        return records

    async def cancel(self, job_id: str, *, reason: str, at: datetime) -> JobRecord:
        patch = {
            "metadata": {
                "annotations": {
                    CANCELLED_AT_ANNOTATION: at.isoformat().replace("+00:00", "Z"),
                    CANCEL_REASON_ANNOTATION: reason,
                }
            },
            # A suspended (SCHEDULED) Job never reaches a deadline: resume it with no pods
            # to run (parallelism 0) so that it fails at once, and TTL then applies. For a
            # running Job, parallelism 0 removes its pods just as the deadline does.
            "spec": {"activeDeadlineSeconds": 1, "suspend": False, "parallelism": 0},
        }
        return self._remember(await self._patch(job_id, patch), own_write=True)

    @tracing.traced_write("admission admit")
    async def admit(self, job_id: str, *, at: datetime) -> JobRecord:
        return await self._change_held(
            job_id,
            {"metadata": {"annotations": {ADMITTED_AT_ANNOTATION: format_precise_time(at)}}},
            {"suspend": False},
        )

    @tracing.traced_write("admission hold")
    async def hold(self, job_id: str, phase: JobPhase) -> JobRecord:
        state = ADMISSION_STATES_BY_PHASE[phase]
        return await self._change_held(job_id, {"metadata": {"annotations": {ADMISSION_ANNOTATION: state}}})

    @tracing.traced_write("admission fail")
    async def fail(self, job_id: str, *, reason: str, message: str, at: datetime) -> JobRecord:
        annotations = {
            FAILURE_REASON_ANNOTATION: reason,
            FAILURE_MESSAGE_ANNOTATION: message,
            FAILED_AT_ANNOTATION: format_precise_time(at),
        }
        # As cancel: resumed with nothing to run and a deadline, the Job fails at once and TTL applies.
        spec = {"activeDeadlineSeconds": 1, "suspend": False, "parallelism": 0}
        return await self._change_held(job_id, {"metadata": {"annotations": annotations}}, spec)

    async def _change_held(
        self, job_id: str, patch: Mapping[str, Any], spec: Mapping[str, Any] | None = None
    ) -> JobRecord:
        """Patch a held job only if it is still held: the patch carries the resourceVersion it was
        decided on (the API server's precondition), and a 409 Conflict means: read it again."""
        known = self._jobs.get(job_id)
        version = _number(known) if known is not None and known.phase.is_waiting else 0
        for _ in range(_CAS_ATTEMPTS):
            if not version:
                job = await self._api.request("GET", f"{self._jobs_path}/{job_id}", self._call("get", job_id))
                record = self._remember(job, own_write=True)
                if not record.phase.is_waiting:
                    raise FailedPrecondition(f"job {job_id} is no longer held ({record.phase.value})")
                version = _rv(job)
            body: dict[str, Any] = {"metadata": {**patch["metadata"], "resourceVersion": str(version)}}
            if spec:
                body["spec"] = dict(spec)
            try:
                patched = await self._patch(job_id, body)
            except Conflict:
                version = 0  # changed since: decide again on the current version
                continue
            tracing.link_job_trace((patched.get("metadata") or {}).get("annotations") or {})
            return self._remember(patched, own_write=True)
        raise FailedPrecondition(f"job {job_id} kept changing; not changed")

    async def _patch(self, job_id: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of one Job; the Job as the API server has it afterwards."""
        return await self._api.request(
            "PATCH",
            f"{self._jobs_path}/{job_id}",
            self._call("patch", job_id),
            body=patch,
            content_type=_MERGE_PATCH,
        )

    async def ping(self) -> None:
        """Unavailable unless the API server answers and the watches follow it: answering from
        an index whose watch is down (or relisting) beyond a short grace serves stale state."""
        await probe(self._api, self._informers[0], self.namespace)
        if (reason := self.lag()) is not None:
            raise Unavailable(reason)

    def logs(
        self, record: JobRecord, *, follow: bool, tail_lines: int, attempt: int
    ) -> AsyncIterator[LogLine]:
        known = tuple(sorted(self._pods.get(record.job_id, {}).values(), key=lambda p: (p.created, p.name)))
        return pod_logs(
            self._api,
            self.namespace,
            record.job_id,
            known,
            follow=follow,
            tail_lines=tail_lines,
            attempt=attempt,
        )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._api.close()
