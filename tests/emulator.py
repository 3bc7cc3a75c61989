"""kmock's KubernetesEmulator, extended where the real API server behaves differently, run on a thread.

Extensions (each faithful to the real API, and only what the tests rely on):
- metadata.uid, creationTimestamp, resourceVersion and generation on create;
  resourceVersion bumps on every change;
- label selectors on list (equality, inequality, exists, not-exists);
- injected faults: a Kubernetes ``Status`` answer with a chosen code for
  matching requests (by method, path and optionally query string), the way
  the API server reports errors; and late answers (``delay``): the request
  takes effect at once (watchers see the change) but its answer arrives late;
- trimming kmock's request log, which it otherwise matches every request against;
- when each request arrived (``request_times``: ``time.monotonic()`` of this process).

Watches (kmock replays every object as ADDED, ignores resourceVersion and
labelSelector, and never sends bookmarks or 410), now as the API server's
watch cache serves them:
- every change is kept with its resourceVersion (one counter for all
  resources, like etcd's revision; a deletion gets a new resourceVersion);
- ``resourceVersion`` unset or "0": the matching objects as ADDED, then the
  changes; a numeric ``resourceVersion``: the changes after it, so a watch
  resumed after a dropped connection misses nothing; one older than the last
  compaction (``compact``): an ERROR event with a 410 ``Status`` ("too old
  resource version"), then the stream ends (a non-numeric one: an ERROR
  event with a 400 ``Status``);
- ``labelSelector``: only matching objects; a change that makes an object
  match is sent as ADDED, one that makes it stop matching as DELETED;
- ``end_watches``: every open watch stream ends cleanly, as when the API
  server's watch timeout passes or a connection drops;
- ``bookmark``: a BOOKMARK event (an object of the resource's kind with only
  ``metadata.resourceVersion``, the current revision) to the open watches that
  asked for them with ``allowWatchBookmarks=true``;
- ``send_watch_event``: an event as is to the open watches of a resource
  (e.g. an ERROR with a 410 Status, after which the server ends the stream);
- ``open_watches``: how many watch streams of a resource are open.

Writes, as kube-apiserver answers them (one write at a time, checked and made atomically):
- create answers 201 (with apiVersion and kind); create of an existing name: 409
  ``AlreadyExists``; get, patch, replace or delete of a missing object: 404 ``NotFound``
  (both with kube's message and ``details``);
- replace (PUT) of a named object: the body becomes the object (uid, creationTimestamp and
  generation kept, a new resourceVersion, a MODIFIED event); 400 if the body's name or
  namespace is not the URL's;
- optimistic concurrency: a replace, or a merge patch, whose ``metadata.resourceVersion`` is
  set and is not the stored object's gets 409 ``Conflict`` ("Operation cannot be fulfilled on
  leases.coordination.k8s.io "x": the object has been modified; ..."); without one, the
  write is unconditional;
- ``coordination.k8s.io/v1`` ``leases`` are served (namespaced), for leader election;
  ``batch/v1`` ``cronjobs`` too (the CronJob controller's stand-in is in emulator_cronjobs.py);
  ``v1`` ``configmaps`` (job templates);
- ``clock`` (None: the real time) gives creationTimestamp, so that a test's injected clock and
  the objects' ages agree; ``deletions`` keeps (resource plural, object, propagationPolicy) of
  every delete, for the garbage collector's stand-in (Background unless the request said otherwise).

Pod logs at ``/api/v1/namespaces/<ns>/pods/<name>/log``, as the kubelet serves
them through the API server: text/plain, one line per log line; ``tailLines``
keeps the last lines; ``follow=true`` keeps the stream open and sends lines as
they are written (``write_log``) until the container exits (``end_log``).
404 for an unknown pod; 400 (a ``Status``: 'container "c" in pod "p" is
waiting to start: <reason>') while the pod's container has no running or
terminated state, as for a pod still being created; 400 without
``container`` for a pod with several containers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import datetime
import itertools
import json
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp.web
import attrs
import kmock
from kmock._internal import aiobus, enums, k8s_dicts, references, rendering


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    reason: str
    message: str
    remaining: int | None  # None: forever
    details: Mapping[str, Any] | None = None
    query: re.Pattern[str] | None = None  # None: any query string
    delay: float = 0.0  # > 0: not a fault; the (real) answer arrives this many seconds late


def _fault_matches(fault: Fault, request: rendering.Request) -> bool:
    if fault.query is not None and not fault.query.search(request.url.query_string):
        return False
    return fault.method in ("*", request.method.value) and bool(fault.path.search(request.url.path))


@dataclass(frozen=True)
class Change:
    """One change of one object, as the watch cache keeps it."""

    rv: int
    event: dict[str, Any]  # {"type": ADDED|MODIFIED|DELETED, "object": ...}
    namespace: str | None
    previous_labels: Mapping[str, str] | None  # None: the object did not exist before


@dataclass(frozen=True)
class Direct:
    """An event for the open watches as is: a bookmark or an error."""

    event: dict[str, Any]
    end: bool = False  # the server ends the stream after it


class EndWatch:
    """The open watches of a resource end (their connection drops)."""


class ChangeBus(aiobus.Bus[Any]):
    """kmock's per-resource event bus, keeping every change with its resourceVersion."""

    def __init__(self, next_rv: Callable[[], int]) -> None:
        super().__init__()
        self.next_rv = next_rv
        self.changes: list[Change] = []
        self.compacted = 0  # watches from a resourceVersion older than this get 410
        self.labels: dict[tuple[str | None, str | None], dict[str, str]] = {}

    async def put(self, *items: Any) -> None:
        await super().put(*(self._record(i) if isinstance(i, dict) else i for i in items))

    def _record(self, event: dict[str, Any]) -> Change:
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace"), meta.get("name"))
        if event.get("type") == "DELETED":  # a deletion is a change with its own resourceVersion
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            meta["resourceVersion"] = str(self.next_rv())
            event = {"type": "DELETED", "object": obj}
            previous = self.labels.pop(key, None)
        else:
            previous = self.labels.get(key)
            self.labels[key] = dict(meta.get("labels") or {})
        rv = str(meta.get("resourceVersion") or "")
        change = Change(int(rv) if rv.isdigit() else 0, event, key[0], previous)
        self.changes.append(change)
        return change

    def compact(self) -> None:
        self.compacted = self.next_rv()
        self.changes = [c for c in self.changes if c.rv >= self.compacted]


@dataclass
class PodLog:
    lines: list[str] = field(default_factory=list)
    ended: bool = False  # the container exited: followed streams end
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


TOKENREVIEWS_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
_LOG_PATH = re.compile(r"/api/v1/namespaces/(?P<namespace>[^/]+)/pods/(?P<name>[^/]+)/log")


def leases_path(namespace: str = "default") -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


def _status(code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    status = {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }
    if details is not None:
        status["details"] = dict(details)
    return status


def _answer(status: dict[str, Any]) -> aiohttp.web.StreamResponse:
    return aiohttp.web.json_response(status, status=int(status["code"]))


def _qualified(resource: references.resource) -> str:
    """kube's name for a resource in messages: ``leases.coordination.k8s.io``, ``pods``."""
    return f"{resource.plural}.{resource.group}" if resource.group else str(resource.plural)


def _object_error(
    code: int, reason: str, resource: references.resource, name: str, message: str
) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": resource.plural}
    if resource.group:
        details["group"] = resource.group
    return _status(code, reason, message, details)


def not_found(resource: references.resource, name: str) -> dict[str, Any]:
    return _object_error(404, "NotFound", resource, name, f'{_qualified(resource)} "{name}" not found')


def already_exists(resource: references.resource, name: str) -> dict[str, Any]:
    return _object_error(
        409, "AlreadyExists", resource, name, f'{_qualified(resource)} "{name}" already exists'
    )


def conflict(resource: references.resource, name: str) -> dict[str, Any]:
    message = (
        f'Operation cannot be fulfilled on {_qualified(resource)} "{name}": the object has been modified;'
        " please apply your changes to the latest version and try again"
    )
    return _object_error(409, "Conflict", resource, name, message)


def _now(clock: Callable[[], datetime.datetime] | None = None) -> str:
    now = clock() if clock is not None else datetime.datetime.now(datetime.UTC)
    return now.astimezone(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "==" in term or "=" in term:
            k, v = re.split("==?", term, maxsplit=1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    _rv: Any = attrs.field(factory=lambda: itertools.count(1000), init=False)
    faults: list[Fault] = attrs.field(factory=list, init=False)
    pod_logs: dict[tuple[str, str], PodLog] = attrs.field(factory=dict, init=False)
    #: TokenReview: bearer token -> (username, groups, audiences the token was issued for)
    tokens: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = attrs.field(factory=dict, init=False)
    #: (time.monotonic() on arrival, method, path) of every request since the last trim
    arrivals: list[tuple[float, str, str]] = attrs.field(factory=list, init=False)
    #: Held by every write from its checks (existence, resourceVersion) to its change: as in etcd's
    #: transactions, no other write comes between a precondition and the change it guards.
    _writes: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    clock: Callable[[], datetime.datetime] | None = attrs.field(default=None, init=False)
    deletions: list[tuple[str, dict[str, Any], str]] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.resources["batch/v1/jobs"] = kmock.ResourceInfo(kind="Job", namespaced=True)
        self.resources["v1/pods"] = kmock.ResourceInfo(kind="Pod", namespaced=True)
        self.resources["coordination.k8s.io/v1/leases"] = kmock.ResourceInfo(kind="Lease", namespaced=True)
        self.resources["batch/v1/cronjobs"] = kmock.ResourceInfo(kind="CronJob", namespaced=True)
        self.resources["v1/configmaps"] = kmock.ResourceInfo(kind="ConfigMap", namespaced=True)
        self._buses = collections.defaultdict(lambda: ChangeBus(lambda: next(self._rv)))

    def bus(self, resource: str) -> ChangeBus:
        """The change log of a resource, e.g. ``"batch/v1/jobs"`` or ``"v1/pods"``."""
        return cast(ChangeBus, self._buses[references.resource(resource)])

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        self.arrivals.append((time.monotonic(), request.method.value, request.url.path))
        delays = [f for f in self.faults if f.delay > 0 and _fault_matches(f, request)]
        if delays:
            response = await self._handle_now(request)
            await asyncio.sleep(max(f.delay for f in delays))  # committed, but the answer is late
            return response
        return await self._handle_now(request)

    async def _handle_now(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        path = request.url.path
        for fault in self.faults:
            if fault.delay <= 0 and _fault_matches(fault, request):
                if fault.remaining is not None:
                    if fault.remaining <= 0:
                        continue
                    fault.remaining -= 1
                return aiohttp.web.json_response(
                    {
                        "apiVersion": "v1",
                        "kind": "Status",
                        "metadata": {},
                        "status": "Failure",
                        "code": fault.status,
                        "reason": fault.reason,
                        "message": fault.message,
                        "details": dict(fault.details or {}),
                    },
                    status=fault.status,
                )
        if path == TOKENREVIEWS_PATH and request.method.value == "POST":
            return self._token_review(request.data if isinstance(request.data, dict) else {})
        log_path = _LOG_PATH.fullmatch(path)
        if log_path is not None and request.method.value == "GET":
            return await self._serve_log(request, log_path["namespace"], log_path["name"])
        if request.resource is not None and request.method.value in ("POST", "PUT", "PATCH", "DELETE"):
            async with self._writes:
                return await self._write(request)
        resource, name = request.resource, request.name
        if (
            resource is not None
            and name
            and request.action == enums.action.FETCH
            and self._stored(resource, request.namespace, name) is None
        ):
            return _answer(not_found(resource, name))
        return await super()._handle(request)

    # --- writes -----------------------------------------------------------------------------

    def _stored(
        self, resource: references.resource, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        key = (resource, namespace, name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        raw: dict[str, Any] = self._objects[key].raw
        return raw

    def _type_meta(self, resource: references.resource, obj: dict[str, Any]) -> None:
        """apiVersion and kind, which kube-apiserver's answers always have."""
        if not obj.get("apiVersion") and resource.version:
            obj["apiVersion"] = f"{resource.group}/{resource.version}" if resource.group else resource.version
        if not obj.get("kind") and resource in self.resources and self.resources[resource].kind:
            obj["kind"] = self.resources[resource].kind

    async def _write(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        """One write, under ``_writes``: its preconditions, then the change (kmock's, or a replace)."""
        resource = request.resource
        assert resource is not None
        data = request.data
        if request.method.value == "PUT" and request.subresource is None:
            return await self._replace(request)
        if request.action == enums.action.CREATE and isinstance(data, dict):
            name = (data.get("metadata") or {}).get("name")
            namespace = request.namespace or (data.get("metadata") or {}).get("namespace")
            if name and self._stored(resource, namespace, name) is not None:
                return _answer(already_exists(resource, name))
        elif request.action in (enums.action.UPDATE, enums.action.DELETE) and request.name:
            current = self._stored(resource, request.namespace, request.name)
            if current is None:
                return _answer(not_found(resource, request.name))
            wanted = (data.get("metadata") or {}).get("resourceVersion") if isinstance(data, dict) else None
            stored_rv = (current.get("metadata") or {}).get("resourceVersion")
            if request.action == enums.action.UPDATE and wanted is not None and str(wanted) != str(stored_rv):
                return _answer(conflict(resource, request.name))  # the merge patch's precondition
            if request.action == enums.action.DELETE:
                policy = request.params.get("propagationPolicy") or (
                    data.get("propagationPolicy") if isinstance(data, dict) else None
                )
                self.deletions.append((str(resource.plural), copy.deepcopy(current), policy or "Background"))
        if isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if request.action == enums.action.CREATE:
                self._type_meta(resource, data)
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", _now(self.clock))
                meta.setdefault("generation", 1)
                if request.namespace and not meta.get("namespace"):
                    meta["namespace"] = request.namespace
                meta["resourceVersion"] = str(next(self._rv))
            elif request.action == enums.action.UPDATE:
                meta["resourceVersion"] = str(next(self._rv))
        response = await super()._handle(request)
        if request.action == enums.action.CREATE and response.status == 200 and not response.prepared:
            response.set_status(201)  # kube-apiserver answers a create with 201 Created
        return response

    async def _replace(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        """PUT (kube's update): the body becomes the object, if its resourceVersion (when set) is
        the stored one; uid, creationTimestamp and generation stay the stored object's."""
        resource, namespace, name, body = request.resource, request.namespace, request.name, request.data
        assert resource is not None
        if not name:
            message = "the server does not allow this method on the requested resource"
            return _answer(_status(405, "MethodNotAllowed", message))
        if not isinstance(body, dict):
            return _answer(_status(400, "BadRequest", "the body of the request is not a JSON object"))
        meta = body.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != name:
            message = f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            return _answer(_status(400, "BadRequest", message))
        if namespace and meta.get("namespace") and meta["namespace"] != namespace:
            message = "the namespace of the provided object does not match the namespace sent on the request"
            return _answer(_status(400, "BadRequest", message))
        current = self._stored(resource, namespace, name)
        if current is None:
            return _answer(not_found(resource, name))
        stored_meta = current.get("metadata") or {}
        if meta.get("resourceVersion") and str(meta["resourceVersion"]) != stored_meta.get("resourceVersion"):
            return _answer(conflict(resource, name))
        if meta.get("uid") and meta["uid"] != stored_meta.get("uid"):
            message = (
                f"Precondition failed: UID in precondition: {meta['uid']},"
                f" UID in object meta: {stored_meta.get('uid')}"
            )
            return _answer(_object_error(409, "Conflict", resource, name, message))
        meta["name"] = name
        if namespace:
            meta["namespace"] = namespace
        for field_name in ("uid", "creationTimestamp", "generation"):
            if field_name in stored_meta:
                meta[field_name] = stored_meta[field_name]
        self._type_meta(resource, body)
        meta["resourceVersion"] = str(next(self._rv))
        key = (resource, namespace, name)
        async with self._lock:
            self._objects[key].history.append(k8s_dicts.ObjectVersion(body))
            raw = self._objects[key].raw
            await self._buses[resource].put({"type": "MODIFIED", "object": raw})
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                self._objects[key].delete()  # the last finalizer removed: the object goes
                await self._buses[resource].put({"type": "DELETED", "object": raw})
        return aiohttp.web.json_response(raw, status=200)

    def _token_review(self, review: dict[str, Any]) -> aiohttp.web.StreamResponse:
        """As kube-apiserver's TokenReview: not stored; status says who the token is, for which
        of the requested audiences (the intersection), or why it is not authenticated."""
        spec = review.get("spec") or {}
        wanted = list(spec.get("audiences") or ["https://kubernetes.default.svc"])
        known = self.tokens.get(str(spec.get("token") or ""))
        status: dict[str, Any]
        if known is None:
            status = {"authenticated": False, "user": {}, "error": "invalid bearer token"}
        else:
            username, groups, audiences = known
            common = [a for a in wanted if a in audiences]
            if not common:
                status = {
                    "authenticated": False,
                    "user": {},
                    "error": (
                        f"token audiences {list(audiences)} is invalid for the target audiences {wanted}"
                    ),
                }
            else:
                status = {
                    "authenticated": True,
                    "user": {
                        "username": username,
                        "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, username)),
                        "groups": list(groups),
                    },
                    "audiences": common,
                }
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": status,
        }
        return aiohttp.web.json_response(body, status=201)

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        result: Any = await super()._serve_list(request)
        selector = request.params.get("labelSelector", "")
        items = [
            i
            for i in result["items"]
            if selector_matches(selector, (i.get("metadata") or {}).get("labels") or {})
        ]
        return {
            "apiVersion": "v1",
            "kind": "List",
            "metadata": {"resourceVersion": str(next(self._rv))},
            "items": items,
        }

    # --- watches ----------------------------------------------------------------------------

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        yield b""  # the headers: the stream has started
        assert request.resource is not None
        bus = cast(ChangeBus, self._buses[request.resource])
        since = request.params.get("resourceVersion", "")
        backlog: list[Any]
        async with self._lock:  # every change is put under this lock: no change is missed or doubled
            marker = await bus.mark()
            if since in ("", "0"):
                backlog = [
                    Change(0, {"type": "ADDED", "object": obj.raw}, namespace, None)
                    for (resource, namespace, _), obj in self._objects.items()
                    if resource == request.resource and not obj.deleted
                ]
            elif not since.isdigit():
                message = f"invalid resource version: {since}"
                backlog = [Direct({"type": "ERROR", "object": _status(400, "BadRequest", message)}, end=True)]
            elif int(since) < bus.compacted:
                message = f"too old resource version: {since} ({bus.compacted})"
                backlog = [Direct({"type": "ERROR", "object": _status(410, "Expired", message)}, end=True)]
            else:
                backlog = [c for c in bus.changes if c.rv > int(since)]
        try:
            for item in backlog:
                event, end = self._watch_event(request, item)
                if event is not None:
                    yield event
                if end:
                    return
            async for item in bus.stream(since=marker):
                event, end = self._watch_event(request, item)
                if event is not None:
                    yield event
                if end:
                    return
        finally:
            await bus.unmark(marker)

    @staticmethod
    def _watch_event(request: rendering.Request, item: Any) -> tuple[dict[str, Any] | None, bool]:
        """What one watch request sees of a bus item, and whether its stream ends there."""
        if isinstance(item, EndWatch):
            return None, True
        if isinstance(item, Direct):
            if item.event.get("type") == "BOOKMARK" and request.params.get("allowWatchBookmarks") != "true":
                return None, False
            return item.event, item.end
        assert isinstance(item, Change)
        if request.namespace is not None and item.namespace != request.namespace:
            return None, False
        meta = item.event["object"].get("metadata") or {}
        if request.name is not None and meta.get("name") != request.name:
            return None, False
        selector = request.params.get("labelSelector", "")
        now = selector_matches(selector, meta.get("labels") or {})
        before = item.previous_labels is not None and selector_matches(selector, item.previous_labels)
        kind = item.event["type"]
        if kind == "DELETED":
            return (item.event if before or now else None), False
        if kind == "MODIFIED" and not before:
            kind = "ADDED" if now else ""
        elif kind == "MODIFIED" and not now:
            kind = "DELETED"
        elif kind == "ADDED" and not now:
            kind = ""
        return ({"type": kind, "object": item.event["object"]} if kind else None), False

    # --- pod logs ---------------------------------------------------------------------------

    async def _serve_log(
        self, request: rendering.Request, namespace: str, name: str
    ) -> aiohttp.web.StreamResponse:
        async with self._lock:
            pods = [
                obj.raw
                for (resource, ns, n), obj in self._objects.items()
                if resource == "v1/pods" and ns == namespace and n == name and not obj.deleted
            ]
        if not pods:
            return aiohttp.web.json_response(_status(404, "NotFound", f'pods "{name}" not found'), status=404)
        pod = pods[0]
        containers = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or ()]
        container = request.params.get("container") or (containers[0] if len(containers) == 1 else "")
        if not container:
            message = f"a container name must be specified for pod {name}, choose one of: {containers}"
            return aiohttp.web.json_response(_status(400, "BadRequest", message), status=400)
        statuses = (pod.get("status") or {}).get("containerStatuses") or ()
        state = next((s.get("state") or {} for s in statuses if s.get("name") == container), {})
        if not state.get("running") and not state.get("terminated"):
            why = (state.get("waiting") or {}).get("reason") or "ContainerCreating"
            message = f'container "{container}" in pod "{name}" is waiting to start: {why}'
            return aiohttp.web.json_response(_status(400, "BadRequest", message), status=400)

        log = self.pod_logs.setdefault((namespace, name), PodLog())
        lines = log.lines
        if "tailLines" in request.params:
            tail = int(request.params["tailLines"])
            lines = lines[len(lines) - tail :] if tail > 0 else []
        sent = len(log.lines)
        assert request._raw_request is not None
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain"})
        try:
            await response.prepare(request._raw_request)
            if lines:
                await response.write("".join(f"{line}\n" for line in lines).encode())
            while request.params.get("follow") == "true":
                async with log.changed:
                    while len(log.lines) <= sent and not log.ended:
                        await log.changed.wait()
                    new, sent, ended = log.lines[sent:], len(log.lines), log.ended
                if new:
                    await response.write("".join(f"{line}\n" for line in new).encode())
                if ended:
                    break
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        return response


class EmulatorThread:
    """The emulator served over HTTP on 127.0.0.1 from its own thread and event loop."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.emulator: Emulator | None = None
        self.url = ""
        self._thread = threading.Thread(target=self._run, name="k8s-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("emulator did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with Emulator() as emulator, kmock.Server(emulator) as server:
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def call(self, fn: Callable[[Emulator], Any]) -> Any:
        """Run ``fn(emulator)`` on the emulator's loop (its state is not thread-safe)."""

        async def run() -> Any:
            assert self.emulator is not None
            return fn(self.emulator)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def call_async(self, fn: Callable[[Emulator], Awaitable[Any]]) -> Any:
        """Await ``fn(emulator)`` on the emulator's loop."""

        async def run() -> Any:
            assert self.emulator is not None
            return await fn(self.emulator)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    # --- conveniences over HTTP, the way a controller or kubectl would do it ---

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"{}")

    def answer(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        """As ``request``, but an error is returned, not raised: (HTTP status, the JSON answer)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return int(resp.status), json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read() or b"{}")

    def leases(self, namespace: str = "default") -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.request("GET", leases_path(namespace))["items"]
        return items

    def lease(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        """The Lease, None if there is none."""
        code, lease = self.answer("GET", f"{leases_path(namespace)}/{name}")
        if code == 404:
            return None
        assert code == 200, (code, lease)
        return cast(dict[str, Any], lease)

    def lease_holder(self, name: str, namespace: str = "default") -> str | None:
        """The Lease's ``spec.holderIdentity`` (None: no Lease, or no holder)."""
        lease = self.lease(name, namespace)
        holder = ((lease or {}).get("spec") or {}).get("holderIdentity")
        return str(holder) if holder else None

    def jobs(self, namespace: str = "default") -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.request("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs")[
            "items"
        ]
        return items

    def job(self, name: str, namespace: str = "default") -> dict[str, Any]:
        job: dict[str, Any] = self.request("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")
        return job

    def patch_job(self, name: str, patch: Mapping[str, Any], namespace: str = "default") -> dict[str, Any]:
        """What the Job controller would write: e.g. ``{"status": {...}}``."""
        job: dict[str, Any] = self.request(
            "PATCH",
            f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
            patch,
            "application/merge-patch+json",
        )
        return job

    def inject(
        self,
        method: str,
        path_pattern: str,
        status: int,
        message: str = "injected fault",
        *,
        reason: str = "",
        times: int | None = None,
        details: Mapping[str, Any] | None = None,
        query: str | None = None,
    ) -> None:
        """Answer matching requests with a ``Status`` of ``status``; ``query`` (a regular expression
        searched in the query string) narrows it, e.g. ``query="watch=true"`` for watches only."""
        fault = Fault(
            method.upper(),
            re.compile(path_pattern),
            status,
            reason or str(status),
            message,
            times,
            details,
            re.compile(query) if query is not None else None,
        )
        self.call(lambda e: e.faults.append(fault))

    def delay(self, method: str, path_pattern: str, seconds: float, *, query: str | None = None) -> None:
        """Answer matching requests ``seconds`` late: the change is made (and watchers see it) at once,
        the answer arrives later, as over a slow network or from a loaded API server."""
        fault = Fault(
            method.upper(),
            re.compile(path_pattern),
            200,
            "",
            "",
            None,
            None,
            re.compile(query) if query is not None else None,
            delay=seconds,
        )
        self.call(lambda e: e.faults.append(fault))

    def clear_faults(self) -> None:
        self.call(lambda e: e.faults.clear())

    def add_token(
        self,
        token: str,
        username: str,
        *,
        groups: tuple[str, ...] = (),
        audiences: tuple[str, ...] = ("jobscheduler",),
    ) -> None:
        """Make TokenReview recognise ``token`` (issued for ``audiences``) as ``username``."""
        self.call(lambda e: e.tokens.__setitem__(token, (username, groups, audiences)))

    def trim_log(self) -> None:
        self.call(lambda e: (e._requests.clear(), e.arrivals.clear()))

    def requests(self) -> list[tuple[str, str]]:
        """(method, path?query) of every request served since the last trim."""
        return list(self.call(lambda e: [(r.method.value, str(r.url.path_qs)) for r in e._requests]))

    def request_times(self) -> list[tuple[float, str, str]]:
        """(time.monotonic() on arrival, method, path) of every request served since the last trim."""
        return list(self.call(lambda e: list(e.arrivals)))

    # --- watches ------------------------------------------------------------------------------

    def end_watches(self, resource: str | None = None) -> None:
        """End every open watch stream (of ``resource``, e.g. ``"batch/v1/jobs"``; else of all)."""

        async def end(e: Emulator) -> None:
            async with e._lock:
                buses = [e.bus(resource)] if resource else list(e._buses.values())
                for bus in buses:
                    await bus.put(EndWatch())

        self.call_async(end)

    def compact(self, resource: str) -> int:
        """Forget the changes so far: a watch from an older resourceVersion gets a 410 ERROR event.
        Open watches go on. Returns the compaction's resourceVersion."""

        def compact(e: Emulator) -> int:
            bus = e.bus(resource)
            bus.compact()
            return bus.compacted

        compacted: int = self.call(compact)
        return compacted

    def send_watch_event(self, resource: str, event: Mapping[str, Any], *, end: bool = False) -> None:
        """Send ``event`` as is to the open watches of ``resource``; ``end``: then end them."""

        async def send(e: Emulator) -> None:
            async with e._lock:
                await e.bus(resource).put(Direct(dict(event), end=end))

        self.call_async(send)

    def bookmark(self, resource: str, kind: str, api_version: str) -> str:
        """Send a BOOKMARK at the current resourceVersion to the open watches that allow bookmarks;
        returns that resourceVersion."""

        async def send(e: Emulator) -> str:
            async with e._lock:
                rv = str(next(e._rv))
                obj = {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rv}}
                await e.bus(resource).put(Direct({"type": "BOOKMARK", "object": obj}))
                return rv

        rv: str = self.call_async(send)
        return rv

    def open_watches(self, resource: str) -> int:
        """How many watch streams of ``resource`` are open."""
        count: int = self.call(lambda e: e.bus(resource).consumer_count)
        return count

    # --- pod logs -----------------------------------------------------------------------------

    def write_log(self, pod: str, *lines: str, namespace: str = "default") -> None:
        """The pod's container writes ``lines`` to its log."""

        async def write(e: Emulator) -> None:
            log = e.pod_logs.setdefault((namespace, pod), PodLog())
            async with log.changed:
                log.lines.extend(lines)
                log.changed.notify_all()

        self.call_async(write)

    def end_log(self, pod: str, namespace: str = "default") -> None:
        """The pod's container exits: followed log streams end."""

        async def end(e: Emulator) -> None:
            log = e.pod_logs.setdefault((namespace, pod), PodLog())
            async with log.changed:
                log.ended = True
                log.changed.notify_all()

        self.call_async(end)


@contextlib.contextmanager
def running_emulator() -> Any:
    thread = EmulatorThread()
    try:
        yield thread
    finally:
        thread.stop()
