"""Job templates on Kubernetes: one immutable, labelled ConfigMap per template version.

Named ``jobtemplate-<key>-v<version>``, where ``key`` hashes (namespace, owner, template name):
a version's name is known without a lookup, and create-if-absent (POST) decides which of two
concurrent updates gets a version number. Labels find a template's versions (``key``), an
owner's templates (a hash of namespace and owner: identities are not label values) and the
latest versions (``latest``, taken off the previous version after an update; where that
failed, the highest labelled version is the latest). The data
holds the request (core.requests.stored_request's JSON), description, owner, name, version and
times; a ConfigMap whose data does not match its labels and name is not a template of ours.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from jobscheduler.backends.kubernetes._client import KubeApi
from jobscheduler.backends.kubernetes._errors import Call
from jobscheduler.core.errors import AlreadyExists, JobSchedulerError, NotFound
from jobscheduler.core.manifests import MANAGED_BY, MANAGED_BY_LABEL, parse_time
from jobscheduler.core.templates import StoredTemplate, description_problem
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.backends.kubernetes")

CONFIGMAPS: Final = "configmaps"
KIND_LABEL: Final = "jobscheduler.io/kind"
KIND: Final = "job-template"
OWNER_LABEL: Final = "jobscheduler.io/job-template-owner"
KEY_LABEL: Final = "jobscheduler.io/job-template-key"
NAME_LABEL: Final = "jobscheduler.io/job-template-name"
VERSION_LABEL: Final = "jobscheduler.io/job-template-version"
#: On the latest version (and, for a moment after an update, on the one before): reading a
#: template's latest version, or listing the latest of each, does not read every version.
LATEST_LABEL: Final = "jobscheduler.io/job-template-latest"
#: The highest version number (the API's int32): a ConfigMap edited past it is not a template.
MAX_VERSION: Final = 2**31 - 1


def _digest(*parts: str) -> str:
    raw = hashlib.sha256("\0".join(parts).encode()).digest()
    return base64.b32encode(raw).decode().lower().rstrip("=")[:20]


def configmap_name(namespace: str, owner: str, name: str, version: int) -> str:
    return f"jobtemplate-{_digest(namespace, owner, name)}-v{version}"


def _time(value: Any) -> datetime:
    """A stored time (ValueError if it is none: no offset, or out of range in UTC)."""
    parsed = parse_time(value)
    if parsed is None:
        raise ValueError(f"{value!r} is not a time")
    return parsed


class KubeTemplates:
    """core.templates.TemplateStore over ConfigMaps in the service's namespace."""

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self._api = api
        self.namespace = namespace
        self._path = f"/api/v1/namespaces/{namespace}/configmaps"

    def _call(self, verb: str, name: str | None = None) -> Call:
        return Call(verb=verb, resource=CONFIGMAPS, namespace=self.namespace, name=name)

    def _configmap(self, t: StoredTemplate) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": configmap_name(self.namespace, t.owner, t.name, t.version),
                "labels": {
                    MANAGED_BY_LABEL: MANAGED_BY,
                    KIND_LABEL: KIND,
                    OWNER_LABEL: _digest(self.namespace, t.owner),
                    KEY_LABEL: _digest(self.namespace, t.owner, t.name),
                    NAME_LABEL: t.name,
                    VERSION_LABEL: str(t.version),
                    LATEST_LABEL: "true",
                },
            },
            "immutable": True,
            "data": {
                "owner": t.owner,
                "name": t.name,
                "version": str(t.version),
                "description": t.description,
                "request": t.request,
                "created-at": t.created_at.isoformat(),
                "first-created-at": t.first_created_at.isoformat(),
            },
        }

    def _template(self, obj: Mapping[str, Any], owner: str, name: str | None = None) -> StoredTemplate | None:
        """The version a ConfigMap holds, if it is one of ``owner``'s (and named ``name``)."""
        data = obj.get("data") or {}
        try:
            t = StoredTemplate(
                owner=str(data["owner"]),
                name=str(data["name"]),
                version=int(str(data["version"])[:10]),
                description=str(data.get("description", "")),
                request=str(data["request"]),
                created_at=_time(data["created-at"]),
                first_created_at=_time(data["first-created-at"]),
            )
        except (KeyError, ValueError, TypeError):
            return None
        if t.owner != owner or (name is not None and t.name != name) or not 1 <= t.version <= MAX_VERSION:
            return None
        if description_problem(t.description) is not None:  # an edited one: as no request could store
            return None
        expected = configmap_name(self.namespace, t.owner, t.name, t.version)
        return t if (obj.get("metadata") or {}).get("name") == expected else None

    async def _list(self, selector: str) -> list[dict[str, Any]]:
        query = [("labelSelector", f"{MANAGED_BY_LABEL}={MANAGED_BY},{KIND_LABEL}={KIND},{selector}")]
        page = await self._api.request("GET", self._path, self._call("list"), query=query)
        return [i for i in page.get("items") or () if isinstance(i, dict)]

    async def _versions(self, owner: str, name: str, *, latest: bool = False) -> list[StoredTemplate]:
        selector = f"{KEY_LABEL}={_digest(self.namespace, owner, name)}"
        items = await self._list(f"{selector},{LATEST_LABEL}=true" if latest else selector)
        found = (self._template(i, owner, name) for i in items)
        return sorted((t for t in found if t is not None), key=lambda t: t.version)

    async def get(self, owner: str, name: str, version: int) -> StoredTemplate | None:
        if not version:
            versions = await self._versions(owner, name, latest=True)
            return versions[-1] if versions else None
        cm_name = configmap_name(self.namespace, owner, name, version)
        try:
            obj = await self._api.request("GET", f"{self._path}/{cm_name}", self._call("get", cm_name))
        except NotFound:
            return None
        return self._template(obj, owner, name)

    async def add(self, template: StoredTemplate) -> bool:
        try:
            await self._api.request("POST", self._path, self._call("create"), body=self._configmap(template))
        except AlreadyExists:
            return False
        if template.version > 1:  # the previous version is no longer the latest
            previous = configmap_name(self.namespace, template.owner, template.name, template.version - 1)
            patch = {"metadata": {"labels": {LATEST_LABEL: None}}}
            try:
                await self._api.request(
                    "PATCH",
                    f"{self._path}/{previous}",
                    self._call("patch", previous),
                    body=patch,
                    content_type="application/merge-patch+json",
                )
            except JobSchedulerError as exc:  # the version is stored: a stale label only costs reads
                log.warning("job template: the previous version keeps its latest label", error=exc.message)
        return True

    async def latest(self, owner: str, *, prefix: str, after: str, limit: int) -> list[StoredTemplate]:
        latest: dict[str, StoredTemplate] = {}
        for item in await self._list(f"{OWNER_LABEL}={_digest(self.namespace, owner)},{LATEST_LABEL}=true"):
            t = self._template(item, owner)
            if t is None or not t.name.startswith(prefix) or t.name <= after:
                continue
            if t.name not in latest or latest[t.name].version < t.version:
                latest[t.name] = t
        return [latest[n] for n in sorted(latest)[:limit]]

    async def delete(self, owner: str, name: str) -> int:
        """Oldest version first: a delete cut short leaves the latest versions, and a retry
        finishes it."""
        deleted = 0
        for t in await self._versions(owner, name):
            cm_name = configmap_name(self.namespace, owner, name, t.version)
            try:
                await self._api.request("DELETE", f"{self._path}/{cm_name}", self._call("delete", cm_name))
            except NotFound:
                continue  # deleted meanwhile
            deleted += 1
        return deleted
