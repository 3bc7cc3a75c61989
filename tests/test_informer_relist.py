"""The Kubernetes backend's relist against a scripted API server (a fake ``KubeApi``: the process
edge), where the test decides exactly what the list's snapshot holds and when its answer arrives.

A relist after 410 Gone must not roll back what our own writes (create, cancel) put into the index
while the list was in flight; everything else the list says wins. Complements the emulator tests in
test_informer.py with the cases the emulator cannot time: a Job we changed that the list's
snapshot already had at the very same resourceVersion, and one deleted before the snapshot.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from jobscheduler.backends.kubernetes import KubeApi, KubernetesBackend
from jobscheduler.backends.kubernetes._errors import Call
from jobscheduler.core.index import JobIndex
from jobscheduler.core.model import JobEvent, JobPhase

NS = "default"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
MANAGED = {"app.kubernetes.io/managed-by": "jobscheduler"}
GONE = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old resource version"}}


def merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """A JSON merge patch (RFC 7386), in place."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class ScriptedApi:
    """Jobs in memory with one resourceVersion counter; list answers wait for ``release`` and carry
    ``snapshot`` (taken when the list arrives; the test may change it); each Jobs watch takes its lines
    from ``watch_lines``; the Pods list is empty and its watch stays quiet."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.rv = 100
        self.snapshot: dict[str, dict[str, Any]] = {}
        self.listing = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()
        self.lists = 0
        self.watch_lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.watching = asyncio.Event()  # set when a Jobs watch starts

    def _bump(self, job: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        job["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(job)

    def add(self, name: str, **status: Any) -> dict[str, Any]:
        job = {
            "metadata": {
                "name": name,
                "namespace": NS,
                "labels": dict(MANAGED),
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": {},
            "status": dict(status),
        }
        self.jobs[name] = job
        return self._bump(job)

    async def request(
        self,
        method: str,
        path: str,
        call: Call,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str | None = None,
        decode: Any = None,
    ) -> dict[str, Any]:
        if method == "GET" and path == JOBS:
            if dict(query).get("limit") == "1":  # the readiness ping
                return {"metadata": {"resourceVersion": str(self.rv)}, "items": []}
            self.lists += 1
            self.snapshot = copy.deepcopy(self.jobs)
            version = str(self.rv)
            self.listing.set()
            await self.release.wait()
            return {"metadata": {"resourceVersion": version}, "items": list(self.snapshot.values())}
        if method == "GET":  # pods
            return {"metadata": {"resourceVersion": str(self.rv)}, "items": []}
        if method == "POST":
            job = copy.deepcopy(body)
            job["metadata"].setdefault("namespace", NS)
            self.jobs[job["metadata"]["name"]] = job
            return self._bump(job)
        if method == "PATCH":
            job = self.jobs[path.rsplit("/", 1)[1]]
            merge(job, body)
            return self._bump(job)
        raise AssertionError(f"unexpected {method} {path}")

    async def stream(
        self, path: str, call: Call, *, query: Sequence[tuple[str, str]] = (), read_timeout: float
    ) -> AsyncIterator[bytes]:
        if path != JOBS:
            await asyncio.Event().wait()  # pods: nothing happens
        self.watching.set()
        while True:
            line = await self.watch_lines.get()
            yield json.dumps(line).encode() + b"\n"
            if line["type"] == "ERROR":
                return

    async def close(self) -> None:
        pass


def phase(index: JobIndex, job_id: str) -> JobPhase | None:
    record = index.get(job_id)
    return record.phase if record is not None else None


def test_relist_keeps_our_writes_and_takes_everything_else_from_the_list() -> None:
    async def scenario() -> None:
        api = ScriptedApi()
        api.add("cancelled-meanwhile", active=1)
        api.add("same-version", active=1)
        api.add("deleted-after-our-write", active=1)
        api.add("deleted-meanwhile", active=1)
        started = api.add("started-meanwhile")
        backend = KubernetesBackend(cast(KubeApi, api), NS)
        index = JobIndex()
        await backend.start(index)
        assert await index.wait_synced(within=5)
        assert phase(index, "cancelled-meanwhile") is JobPhase.RUNNING
        events: list[JobEvent] = []
        index.add_listener(events.append)

        api.listing.clear()
        api.release.clear()
        api.watch_lines.put_nowait(GONE)
        await asyncio.wait_for(api.listing.wait(), 5)  # the relist: its snapshot is taken now
        assert api.lists == 2

        # Our writes while the list is in flight:
        now = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
        await backend.cancel("cancelled-meanwhile", reason="test", at=now)
        same = await backend.cancel("same-version", reason="test", at=now)
        await backend.cancel("deleted-after-our-write", reason="test", at=now)
        created = copy.deepcopy(started)
        created["metadata"] = {"name": "created-meanwhile", "labels": dict(MANAGED)}
        await backend.create(created)
        # ... and what the list's snapshot says: one of our writes was already in it (same version);
        # one Job was deleted after our write, another while the watch was down; one started.
        api.snapshot["same-version"] = copy.deepcopy(api.jobs["same-version"])
        del api.snapshot["deleted-after-our-write"]
        del api.snapshot["deleted-meanwhile"]
        api.snapshot["started-meanwhile"]["status"] = {"active": 1}
        api.snapshot["started-meanwhile"]["metadata"]["resourceVersion"] = "99999"
        assert same.phase is JobPhase.CANCELLED
        events.clear()
        api.watching.clear()
        api.release.set()
        await asyncio.wait_for(api.watching.wait(), 5)  # the list applied, the next watch started

        changes = sorted((e.type.name, e.record.job_id, e.record.phase.name) for e in events)
        assert changes == [
            ("DELETED", "deleted-after-our-write", "CANCELLED"),  # not a ghost of our write
            ("DELETED", "deleted-meanwhile", "RUNNING"),
            ("STARTED", "started-meanwhile", "RUNNING"),
        ]
        assert phase(index, "cancelled-meanwhile") is JobPhase.CANCELLED
        assert phase(index, "same-version") is JobPhase.CANCELLED
        assert index.get("created-meanwhile") is not None
        assert sorted(r.job_id for r in index.records()) == [
            "cancelled-meanwhile",
            "created-meanwhile",
            "same-version",
            "started-meanwhile",
        ]
        await backend.close()

    asyncio.run(scenario())
