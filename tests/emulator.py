"""kmock's KubernetesEmulator, extended where the real API server behaves differently, run on a thread.

Extensions (each faithful to the real API, and only what the tests rely on):
- metadata.uid, creationTimestamp, resourceVersion and generation on create;
  resourceVersion bumps on every change;
- label selectors on list (equality, inequality, exists, not-exists);
- injected faults: a Kubernetes ``Status`` answer with a chosen code for
  matching requests, the way the API server reports errors;
- trimming kmock's request log, which it otherwise matches every request against.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import re
import threading
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import enums, rendering


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    reason: str
    message: str
    remaining: int | None  # None: forever
    details: Mapping[str, Any] | None = None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


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

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.resources["batch/v1/jobs"] = kmock.ResourceInfo(kind="Job", namespaced=True)
        self.resources["v1/pods"] = kmock.ResourceInfo(kind="Pod", namespaced=True)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        path = request.url.path
        for fault in self.faults:
            if fault.method in ("*", request.method.value) and fault.path.search(path):
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
        if request.resource is not None and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if request.action == enums.action.CREATE:
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", _now())
                meta.setdefault("generation", 1)
                if request.namespace and not meta.get("namespace"):
                    meta["namespace"] = request.namespace
                meta["resourceVersion"] = str(next(self._rv))
            elif request.action == enums.action.UPDATE:
                meta["resourceVersion"] = str(next(self._rv))
        return await super()._handle(request)

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
    ) -> None:
        fault = Fault(
            method.upper(), re.compile(path_pattern), status, reason or str(status), message, times, details
        )
        self.call(lambda e: e.faults.append(fault))

    def clear_faults(self) -> None:
        self.call(lambda e: e.faults.clear())

    def trim_log(self) -> None:
        self.call(lambda e: e._requests.clear())

    def requests(self) -> list[tuple[str, str]]:
        """(method, path?query) of every request served since the last trim."""
        return list(self.call(lambda e: [(r.method.value, str(r.url.path_qs)) for r in e._requests]))


@contextlib.contextmanager
def running_emulator() -> Any:
    thread = EmulatorThread()
    try:
        yield thread
    finally:
        thread.stop()
