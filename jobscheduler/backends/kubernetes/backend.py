"""The Kubernetes backend: our jobs are batch/v1 Jobs, found by their labels."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from jobscheduler.backends.kubernetes._client import KubeApi
from jobscheduler.backends.kubernetes._errors import Call
from jobscheduler.backends.kubernetes._status import is_managed, job_record
from jobscheduler.core.errors import NotFound
from jobscheduler.core.manifests import CANCEL_REASON_ANNOTATION, CANCELLED_AT_ANNOTATION, MANAGED_SELECTOR
from jobscheduler.core.model import JobRecord

JOBS: Final = "jobs.batch"
_LIST_PAGE: Final = 500
_MERGE_PATCH: Final = "application/merge-patch+json"


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

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self._api = api
        self.namespace = namespace
        self._jobs_path = f"/apis/batch/v1/namespaces/{namespace}/jobs"

    def _call(self, verb: str, name: str | None = None) -> Call:
        return Call(verb=verb, resource=JOBS, namespace=self.namespace, name=name)

    async def create(self, manifest: Mapping[str, Any]) -> JobRecord:
        created = await self._api.request("POST", self._jobs_path, self._call("create"), body=manifest)
        return job_record(created)

    async def get(self, job_id: str) -> JobRecord:
        job = await self._api.request("GET", f"{self._jobs_path}/{job_id}", self._call("get", job_id))
        if not is_managed(job):
            raise NotFound(f"job {job_id!r} not found in namespace {self.namespace!r}")
        return job_record(job)

    async def list(self) -> list[JobRecord]:
        records: list[JobRecord] = []
        token = ""
        while True:
            query = [("labelSelector", MANAGED_SELECTOR), ("limit", str(_LIST_PAGE))]
            if token:
                query.append(("continue", token))
            page = await self._api.request("GET", self._jobs_path, self._call("list"), query=query)
            records.extend(job_record(item) for item in page.get("items") or () if is_managed(item))
            token = str((page.get("metadata") or {}).get("continue") or "")
            if not token:
                return records

    async def cancel(self, job_id: str, *, reason: str, at: datetime) -> JobRecord:
        patch = {
            "metadata": {
                "annotations": {
                    CANCELLED_AT_ANNOTATION: at.isoformat().replace("+00:00", "Z"),
                    CANCEL_REASON_ANNOTATION: reason,
                }
            },
            "spec": {"activeDeadlineSeconds": 1},
        }
        patched = await self._api.request(
            "PATCH",
            f"{self._jobs_path}/{job_id}",
            self._call("patch", job_id),
            body=patch,
            content_type=_MERGE_PATCH,
        )
        return job_record(patched)

    async def ping(self) -> None:
        await self._api.request(
            "GET",
            self._jobs_path,
            self._call("list"),
            query=[("labelSelector", MANAGED_SELECTOR), ("limit", "1")],
        )

    async def close(self) -> None:
        await self._api.close()
