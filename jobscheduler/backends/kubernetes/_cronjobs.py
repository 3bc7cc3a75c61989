"""Schedules on Kubernetes: each one a batch/v1 CronJob (core.schedules.cronjob builds and reads it).

The API server holds every schedule and the CronJob controller fires it, also while every replica
of the service is down (``fires_itself``). The jobs it makes are held (suspended) and admitted by
the service's admission loop like any other job. A CronJob's name is derived from (namespace,
owner, schedule name), so get, update and delete go straight to it; list reads our CronJobs
(label ``app.kubernetes.io/managed-by``) and keeps the owner's.

RBAC: cronjobs.batch get, list, create, update, delete (k8s/rbac.yaml).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from jobscheduler.backends.kubernetes._client import KubeApi
from jobscheduler.backends.kubernetes._errors import Call, Conflict
from jobscheduler.backends.kubernetes._informer import Informer, list_pages
from jobscheduler.core.errors import AlreadyExists, FailedPrecondition, JobSchedulerError, NotFound
from jobscheduler.core.manifests import OWNER_ANNOTATION, SCHEDULE_ANNOTATION, parse_time
from jobscheduler.core.schedules.cronjob import cronjob_manifest, cronjob_name, schedule_from_cronjob
from jobscheduler.core.schedules.model import Schedule, unreadable
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.backends.kubernetes")

CRONJOBS: Final = "cronjobs.batch"
#: How often an update is tried against a CronJob that keeps changing (the controller writes its
#: status): each try reads it again and replaces it if its resourceVersion is still the one read.
_UPDATE_ATTEMPTS: Final = 5
#: Schedules read back, by (uid, resourceVersion): a CronJob the controller has not changed since
#: is not parsed again (its stored request is JSON of up to 128 KiB).
_CACHE_MAX: Final = 10_000
#: A list yields to the event loop after this many CronJobs read (each up to ~0.2 ms uncached).
_YIELD_EVERY: Final = 32


class CronJobStore:
    """The ScheduleStore (core.schedules.ports) on the Kubernetes API, in one namespace."""

    fires_itself = True

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self._api = api
        self.namespace = namespace
        self._path = f"/apis/batch/v1/namespaces/{namespace}/cronjobs"
        self._cache: dict[tuple[str, str], Schedule] = {}

    def _call(self, verb: str, name: str | None = None) -> Call:
        return Call(verb=verb, resource=CRONJOBS, namespace=self.namespace, name=name)

    async def create(self, schedule: Schedule, job_template: Mapping[str, Any]) -> Schedule:
        manifest = cronjob_manifest(schedule, job_template, namespace=self.namespace)
        try:
            created = await self._api.request("POST", self._path, self._call("create"), body=manifest)
        except AlreadyExists:
            raise AlreadyExists(f"schedule {schedule.name!r} exists already") from None
        return schedule_from_cronjob(created)

    async def get(self, owner: str, name: str) -> Schedule:
        return self._schedule(await self._read(owner, name))

    async def list(
        self,
        owner: str | None = None,
        *,
        after: tuple[str, str] | None = None,
        prefix: str = "",
        limit: int = 0,
    ) -> list[Schedule]:
        """Every CronJob of ours is read (cached by resourceVersion); the page hints are the service's."""
        schedules: list[Schedule] = []
        async for items, _ in list_pages(self._api, Informer(CRONJOBS, self._path), self.namespace):
            for i, item in enumerate(items, start=1):
                if i % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                annotations = (item.get("metadata") or {}).get("annotations") or {}
                if SCHEDULE_ANNOTATION not in annotations:
                    continue
                if owner is not None and annotations.get(OWNER_ANNOTATION, "") != owner:
                    continue
                if not _named_for(item, annotations, self.namespace):
                    continue  # a copy under another name: get, update and delete never reach it
                try:
                    schedules.append(self._schedule(item))
                except FailedPrecondition as exc:
                    log.warning(
                        "CronJob skipped", cronjob=(item.get("metadata") or {}).get("name"), error=exc.message
                    )
        return schedules

    async def update(self, schedule: Schedule, job_template: Mapping[str, Any]) -> Schedule:
        manifest = cronjob_manifest(schedule, job_template, namespace=self.namespace)
        name = manifest["metadata"]["name"]
        for _ in range(_UPDATE_ATTEMPTS):
            current = await self._read(schedule.owner, schedule.name)
            meta = current["metadata"]
            # Replace spec, labels and annotations; the API server keeps the status (a subresource).
            body = {
                **manifest,
                "metadata": {
                    **manifest["metadata"],
                    "resourceVersion": meta.get("resourceVersion"),
                    "uid": meta.get("uid"),
                },
                "status": current.get("status") or {},
            }
            try:
                replaced = await self._api.request(
                    "PUT", f"{self._path}/{name}", self._call("update", name), body=body
                )
            except Conflict:
                continue  # changed since it was read (the controller's status): read it again
            return schedule_from_cronjob(replaced)
        raise FailedPrecondition(f"schedule {schedule.name!r} kept changing; not updated")

    async def delete(self, owner: str, name: str) -> Schedule:
        """Delete the CronJob; its Jobs stay (Orphan), as the port says: cancelling them is the
        service's choice. Only the CronJob that was read is deleted (uid precondition)."""
        current = await self._read(owner, name)
        try:
            schedule = self._schedule(current)
        except FailedPrecondition:  # edited by hand into no schedule: deleting it is the way out
            created = parse_time(current["metadata"].get("creationTimestamp"))
            schedule = unreadable(owner, name, created or datetime.fromtimestamp(0, UTC))
        meta = current["metadata"]
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Orphan",
            "preconditions": {"uid": meta.get("uid")},
        }
        try:
            await self._api.request(
                "DELETE",
                f"{self._path}/{meta['name']}",
                self._call("delete", meta["name"]),
                query=[("propagationPolicy", "Orphan")],
                body=options,
            )
        except NotFound:
            raise NotFound(f"schedule {name!r} not found") from None
        return schedule

    def _schedule(self, cronjob: Mapping[str, Any]) -> Schedule:
        meta = cronjob.get("metadata") or {}
        key = (str(meta.get("uid") or ""), str(meta.get("resourceVersion") or ""))
        if not all(key):
            return _schedule(cronjob)
        known = self._cache.get(key)
        if known is None:
            known = self._cache[key] = _schedule(cronjob)
            if len(self._cache) > _CACHE_MAX:
                del self._cache[next(iter(self._cache))]  # the oldest entry
        return known

    async def _read(self, owner: str, name: str) -> dict[str, Any]:
        """The owner's CronJob for schedule ``name``; NotFound unless it is that schedule's."""
        path = f"{self._path}/{cronjob_name(self.namespace, owner, name)}"
        try:
            cronjob = await self._api.request("GET", path, self._call("get", name))
        except NotFound:
            raise NotFound(f"schedule {name!r} not found") from None
        annotations = (cronjob.get("metadata") or {}).get("annotations") or {}
        if annotations.get(OWNER_ANNOTATION, "") != owner or annotations.get(SCHEDULE_ANNOTATION) != name:
            raise NotFound(f"schedule {name!r} not found")
        return cronjob


def _named_for(cronjob: Mapping[str, Any], annotations: Mapping[str, Any], namespace: str) -> bool:
    """Whether the CronJob bears the name derived from the owner and schedule it names."""
    owner, name = str(annotations.get(OWNER_ANNOTATION, "")), str(annotations.get(SCHEDULE_ANNOTATION, ""))
    return (cronjob.get("metadata") or {}).get("name") == cronjob_name(namespace, owner, name)


def _schedule(cronjob: Mapping[str, Any]) -> Schedule:
    """The schedule a CronJob of ours holds; FailedPrecondition (not the caller's INVALID_ARGUMENT)
    if it was edited by hand into something that is not a schedule any more."""
    try:
        return schedule_from_cronjob(cronjob)
    except JobSchedulerError as exc:
        name = (cronjob.get("metadata") or {}).get("name")
        raise FailedPrecondition(f"CronJob {name} is not a valid schedule (edited?): {exc.message}") from None
