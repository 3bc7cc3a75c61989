"""A minimal, fast stand-in for the Kubernetes API: stores posted Jobs and answers 201.

Run as ``python bench/standin.py [--jobs N] [--template FILE] [--seed S]`` (prints its port).
It speaks just enough HTTP/1.1 (keep-alive, Content-Length, chunked answers) for the
client's create, get, list and watch calls, so that a benchmark measures the caller's
cost, not the emulator's. Standard library only.

- ``POST .../jobs``: stores the Job and answers 201 (resourceVersion "1"); posted Jobs are
  not listed and not announced on watches (what ``bench/schedule.py`` measures). With
  ``--keep`` they are kept as a cluster would: the next resourceVersion, listed, and an
  ADDED event on every open Job watch.
- ``PATCH .../jobs/<name>``: a JSON merge patch (RFC 7386) of a stored Job. A
  ``metadata.resourceVersion`` in the patch is a precondition: 409 Conflict (reason
  "Conflict") unless it is the Job's current one. Bumps the resourceVersion, answers the
  patched Job and sends MODIFIED on every open Job watch.
- ``GET .../jobs``: the preloaded Jobs (``--jobs N``, see :func:`realistic_jobs`), paged by
  ``limit`` and ``continue`` (an offset), with the list's resourceVersion. Selectors are
  ignored: every preloaded Job carries ``app.kubernetes.io/managed-by=jobscheduler``.
- ``GET .../jobs/<name>``: one Job, or 404.
- ``GET .../pods`` (and any other list): an empty list.
- ``GET /bench/stats``: counts of POSTs, GETs of one Job, PATCHes, 409s and admissions (a PATCH that turns
  ``spec.suspend`` from true to false), and the time.monotonic() of the first and last;
  ``POST /bench/stats/reset`` sets them back to zero.
- ``GET ...?watch=true``: a chunked stream, one JSON event per line, kept open until the
  client goes; a BOOKMARK every 60 s (with ``allowWatchBookmarks``); events after the
  given ``resourceVersion`` are replayed from a bounded log (410 if it is older).
- ``POST /bench/burst?n=N``: N MODIFIED events, each a real change of an existing Job
  (pending -> running, a failed attempt, or failed with BackoffLimitExceeded), every one
  with the next resourceVersion, written to every open Job watch. Answers
  ``{"n", "first_rv", "last_rv", "sent_at" (time.monotonic()), "prepare_seconds",
  "watchers", "crc" (zlib.crc32 chained over the job ids, in order), "last": {...}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import random
import sys
import time
import urllib.parse
import uuid
import zlib
from collections import deque
from collections.abc import Iterator
from typing import Any

# The names jobscheduler/core/manifests.py gives its labels and annotations (bench/cache.py
# checks that they still agree, and renders the template with the service's own code).
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
JOB_ID_LABEL = "jobscheduler.io/job-id"
JOB_TYPE_LABEL = "jobscheduler.io/job-type"
JOB_NAME_LABEL = "jobscheduler.io/job-name"
JOB_NAME_ANNOTATION = "jobscheduler.io/name"
JOB_TYPE_ANNOTATION = "jobscheduler.io/type"
OWNER_ANNOTATION = "jobscheduler.io/owner"
REQUEST_ID_ANNOTATION = "jobscheduler.io/request-id"
REQUEST_HASH_ANNOTATION = "jobscheduler.io/request-hash"
CANCELLED_AT_ANNOTATION = "jobscheduler.io/cancelled-at"
CANCEL_REASON_ANNOTATION = "jobscheduler.io/cancel-reason"

#: Used without ``--template``: the shape job_manifest() renders for a timer job.
FALLBACK_TEMPLATE: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {
        "name": "job-template00",
        "namespace": "default",
        "labels": {
            MANAGED_BY_LABEL: "jobscheduler",
            JOB_ID_LABEL: "job-template00",
            JOB_TYPE_LABEL: "timer",
            JOB_NAME_LABEL: "template",
        },
        "annotations": {JOB_NAME_ANNOTATION: "template", JOB_TYPE_ANNOTATION: "timer"},
    },
    "spec": {
        "backoffLimit": 3,
        "activeDeadlineSeconds": 360,
        "ttlSecondsAfterFinished": 86400,
        "template": {
            "metadata": {
                "labels": {
                    MANAGED_BY_LABEL: "jobscheduler",
                    JOB_ID_LABEL: "job-template00",
                    JOB_TYPE_LABEL: "timer",
                }
            },
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "timer",
                        "image": "ghcr.io/jobscheduler/jobscheduler:latest",
                        "command": ["jobscheduler", "timer"],
                        "env": [{"name": "JOB_ID", "value": "job-template00"}],
                    }
                ],
            },
        },
    },
}

_NAMES = ("nightly", "build", "deploy", "cleanup", "report", "backup", "sync", "index", "export", "audit")
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_T0 = datetime.datetime(2026, 11, 20, tzinfo=datetime.UTC)
_MESSAGES = {
    "CompletionsReached": "Reached expected number of succeeded pods",
    "BackoffLimitExceeded": "Job has reached the specified backoff limit",
    "DeadlineExceeded": "Job was active longer than specified deadline",
}


def _ts(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _conditions(kinds: tuple[str, str], reason: str, message: str, at: str) -> list[dict[str, str]]:
    return [
        {
            "type": kind,
            "status": "True",
            "lastProbeTime": at,
            "lastTransitionTime": at,
            "reason": reason,
            "message": message,
        }
        for kind in kinds
    ]


def _status(state: str, rng: random.Random, created: datetime.datetime, job_id: str) -> dict[str, Any]:
    start = created + datetime.timedelta(seconds=rng.randint(1, 5))
    end = _ts(start + datetime.timedelta(seconds=rng.randint(30, 3600)))
    base: dict[str, Any] = {"ready": 0, "terminating": 0, "uncountedTerminatedPods": {}}
    if state == "pending":
        return base
    base["startTime"] = _ts(start)
    if state == "running":
        return {**base, "active": 1, "ready": rng.choice((0, 1)), "failed": rng.choice((0, 0, 0, 1))}
    if state == "succeeded":
        conditions = _conditions(
            ("SuccessCriteriaMet", "Complete"), "CompletionsReached", _MESSAGES["CompletionsReached"], end
        )
        return {**base, "succeeded": 1, "completionTime": end, "conditions": conditions}
    if state == "podfailurepolicy":
        message = (
            f"Container timer for pod default/{job_id}-{rng.choice(_ALNUM)}{rng.choice(_ALNUM)}x7q"
            " failed with exit code 2 matching FailJob rule at index 0"
        )
        return {
            **base,
            "failed": 1,
            "conditions": _conditions(("FailureTarget", "Failed"), "PodFailurePolicy", message, end),
        }
    reason = "DeadlineExceeded" if state in ("deadline", "cancelled") else "BackoffLimitExceeded"
    failed = 1 if reason == "DeadlineExceeded" else 4
    conditions = _conditions(("FailureTarget", "Failed"), reason, _MESSAGES[reason], end)
    return {**base, "failed": failed, "conditions": conditions}


#: (state, weight): 10% pending, 20% running, 50% succeeded, 18% failed (three reasons), 2% cancelled.
_STATES = (
    ("pending", 10),
    ("running", 20),
    ("succeeded", 50),
    ("backofflimit", 10),
    ("deadline", 5),
    ("podfailurepolicy", 3),
    ("cancelled", 2),
)


def realistic_jobs(n: int, template: dict[str, Any] | None = None, seed: int = 1) -> Iterator[bytes]:
    """``n`` Jobs as the API server returns them (JSON), deterministic for a seed.

    Each is ``template`` (a manifest rendered by the service) with its own id and name,
    user labels ``team`` (t0..t9), ``env`` and ``app``, an owner (20 of them), a request
    id on a third of them, the fields the API server adds (uid, resourceVersion,
    generation, a distinct creationTimestamp, selector, defaults, managedFields) and a
    status by the weights in ``_STATES``: pending, running, Complete, Failed (backoff
    limit, deadline, pod failure policy) with conditions, or cancelled.
    """
    rng = random.Random(seed)
    raw_template = json.dumps(template or FALLBACK_TEMPLATE)
    states = [s for s, w in _STATES for _ in range(w)]
    seen: set[str] = set()
    for i in range(n):
        while True:
            job_id = "job-" + "".join(rng.choices(_ALNUM, k=10))
            if job_id not in seen:
                seen.add(job_id)
                break
        job = json.loads(raw_template)
        state = states[rng.randrange(len(states))]
        created = _T0 - datetime.timedelta(seconds=7 * i + rng.randint(0, 6))
        uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        name = f"{_NAMES[i % len(_NAMES)]}-{i // len(_NAMES)}"
        team = f"t{rng.randrange(10)}"
        meta = job["metadata"]
        meta.update(
            name=job_id,
            uid=uid,
            resourceVersion=str(1000 + i),
            generation=1,
            creationTimestamp=_ts(created),
        )
        meta["labels"] = {
            "team": team,
            "env": rng.choice(("dev", "test", "prod")),
            "app": _NAMES[i % len(_NAMES)],
            **meta["labels"],
            JOB_ID_LABEL: job_id,
            JOB_NAME_LABEL: name,
        }
        annotations = meta.setdefault("annotations", {})
        annotations[JOB_NAME_ANNOTATION] = name
        annotations[OWNER_ANNOTATION] = f"system:serviceaccount:team-{team}:builder-{rng.randrange(2)}"
        if rng.random() < 1 / 3:
            annotations[REQUEST_ID_ANNOTATION] = f"{name}-{_ts(created)}"
            annotations[REQUEST_HASH_ANNOTATION] = f"{rng.getrandbits(64):016x}"
        if state == "cancelled":
            annotations[CANCELLED_AT_ANNOTATION] = _ts(created + datetime.timedelta(seconds=40))
            annotations[CANCEL_REASON_ANNOTATION] = "no longer needed"
        meta["managedFields"] = [
            {
                "manager": "jobscheduler",
                "operation": "Update",
                "apiVersion": "batch/v1",
                "time": _ts(created),
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:annotations": {}, "f:labels": {}}, "f:spec": {}},
            },
            {
                "manager": "kube-controller-manager",
                "operation": "Update",
                "apiVersion": "batch/v1",
                "time": _ts(created),
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:status": {"f:ready": {}, "f:terminating": {}}},
                "subresource": "status",
            },
        ]
        spec = job["spec"]
        spec.update(
            completions=1,
            parallelism=1,
            completionMode="NonIndexed",
            suspend=False,
            podReplacementPolicy="TerminatingOrFailed",
            manualSelector=False,
            selector={"matchLabels": {"batch.kubernetes.io/controller-uid": uid}},
        )
        pod_meta = spec["template"].setdefault("metadata", {})
        pod_meta["labels"] = {
            **pod_meta.get("labels", {}),
            JOB_ID_LABEL: job_id,
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": job_id,
            "controller-uid": uid,
            "job-name": job_id,
        }
        for container in spec["template"]["spec"].get("containers", ()):
            for var in container.get("env", ()):
                if var.get("name") == "JOB_ID":
                    var["value"] = job_id
                elif var.get("name") == "TIMER_NAME":
                    var["value"] = name
        job["status"] = _status(state, rng, created, job_id)
        yield json.dumps(job, separators=(",", ":")).encode()


def list_page(items: list[bytes], offset: int, limit: int, resource_version: int, kind: str) -> bytes:
    """A list answer with ``items[offset:offset+limit]`` (all of them when ``limit`` is 0)."""
    end = len(items) if limit <= 0 else min(len(items), offset + limit)
    meta: dict[str, Any] = {"resourceVersion": str(resource_version)}
    if end < len(items):
        meta["continue"] = str(end)
        meta["remainingItemCount"] = len(items) - end
    head = json.dumps(
        {"apiVersion": "batch/v1" if kind == "JobList" else "v1", "kind": kind, "metadata": meta}
    )
    return head[:-1].encode() + b',"items":[' + b",".join(items[offset:end]) + b"]}"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Watcher:
    def __init__(self, transport: asyncio.Transport, resource: str, bookmarks: bool) -> None:
        self.transport = transport
        self.resource = resource
        self.bookmarks = bookmarks


class State:
    """Everything the stand-in serves; one per process."""

    def __init__(self, jobs: list[bytes]) -> None:
        self.jobs = jobs
        self.by_name: dict[str, int] = {}
        self.rv = 1000 + len(jobs)
        self.posted: dict[str, bytes] = {}
        self.keep = False  # --keep: posted Jobs are listed and announced
        self.stats: dict[str, Any] = {
            "posts": 0,
            "gets": 0,
            "patches": 0,
            "conflicts": 0,
            "admitted": 0,
            "first_admitted_at": None,
            "last_admitted_at": None,
        }
        self.pending: list[bytes] = []  # watch events not written yet (see announce)
        self.watchers: set[Watcher] = set()
        self.log: deque[tuple[int, bytes]] = deque(maxlen=200_000)
        # What a burst changes: a shuffled cycle over the jobs that are not finished.
        self.cursor = 0
        self.order: list[int] = []
        self.finished = bytearray(len(jobs))
        for i, raw in enumerate(jobs):
            job = json.loads(raw)
            self.by_name[job["metadata"]["name"]] = i
            if any(c.get("status") == "True" for c in job["status"].get("conditions", ())):
                self.finished[i] = 1
            else:
                self.order.append(i)
        random.Random(7).shuffle(self.order)

    def _change(self, i: int, now: str) -> dict[str, Any]:
        job = json.loads(self.jobs[i])
        status = job["status"]
        limit = int(job["spec"].get("backoffLimit", 6))
        if not status.get("active"):
            status.update(active=1, ready=1, startTime=status.get("startTime") or now)
        elif int(status.get("failed") or 0) < limit:
            status["failed"] = int(status.get("failed") or 0) + 1
        else:
            status.update(active=0, ready=0, failed=limit + 1)
            self.finished[i] = 1
            status["conditions"] = _conditions(
                ("FailureTarget", "Failed"), "BackoffLimitExceeded", _MESSAGES["BackoffLimitExceeded"], now
            )
        self.rv += 1
        job["metadata"]["resourceVersion"] = str(self.rv)
        return job

    def burst(self, n: int) -> dict[str, Any]:
        started = time.perf_counter()
        now = _ts(datetime.datetime.now(datetime.UTC))
        first_rv = self.rv + 1
        lines: list[bytes] = []
        crc = 0
        last: dict[str, Any] = {}
        for _ in range(n):
            for _ in range(len(self.order)):
                i = self.order[self.cursor % len(self.order)]
                self.cursor += 1
                if not self.finished[i]:
                    break
            else:
                raise RuntimeError("no unfinished job left to change")
            job = self._change(i, now)
            raw = json.dumps(job, separators=(",", ":")).encode()
            self.jobs[i] = raw
            line = b'{"type":"MODIFIED","object":' + raw + b"}\n"
            self.log.append((self.rv, line))
            lines.append(line)
            name = job["metadata"]["name"]
            crc = zlib.crc32(name.encode(), crc)
            status = job["status"]
            last = {
                "job_id": name,
                "active": int(status.get("active") or 0),
                "failed": int(status.get("failed") or 0),
                "succeeded": int(status.get("succeeded") or 0),
            }
        blob = b"".join(_chunk(b"".join(lines[k : k + 64])) for k in range(0, len(lines), 64))
        prepared = time.perf_counter() - started
        watchers = [w for w in self.watchers if w.resource == "jobs"]
        sent_at = time.monotonic()
        for w in watchers:
            w.transport.write(blob)
        return {
            "n": n,
            "first_rv": first_rv,
            "last_rv": self.rv,
            "sent_at": sent_at,
            "prepare_seconds": prepared,
            "watchers": len(watchers),
            "crc": crc,
            "last": last,
        }

    def announce(self, line: bytes) -> None:
        """Log a watch event and write it to the Job watches once this turn of the loop ends
        (the events of many requests in one write)."""
        self.log.append((self.rv, line))
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending.append(line)

    def flush(self) -> None:
        if not self.pending:
            return
        blob = _chunk(b"".join(self.pending))
        self.pending = []
        for w in self.watchers:
            if w.resource == "jobs":
                w.transport.write(blob)

    def stored(self, name: str) -> bytes | None:
        if name in self.by_name:
            return self.jobs[self.by_name[name]]
        return self.posted.get(name)

    def store(self, name: str, raw: bytes) -> None:
        if name in self.by_name:
            self.jobs[self.by_name[name]] = raw
        elif self.keep:
            self.by_name[name] = len(self.jobs)
            self.jobs.append(raw)
            self.finished.append(0)  # never in a burst's order
        else:
            self.posted[name] = raw

    def post(self, obj: dict[str, Any]) -> tuple[str, bytes]:
        meta = obj.setdefault("metadata", {})
        name = str(meta.get("name", ""))
        if self.keep and self.stored(name) is not None:
            return "409 Conflict", _failure(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
        meta["uid"] = str(uuid.uuid4())
        now = datetime.datetime.now(datetime.UTC)
        meta["creationTimestamp"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.keep:
            self.rv += 1
            meta["resourceVersion"] = str(self.rv)
        else:
            meta["resourceVersion"] = "1"
        out = json.dumps(obj, separators=(",", ":")).encode()
        self.store(name, out)
        self.stats["posts"] += 1
        if self.keep:
            self.announce(b'{"type":"ADDED","object":' + out + b"}\n")
        return "201 Created", out

    def patch(self, name: str, patch: dict[str, Any]) -> tuple[str, bytes]:
        raw = self.stored(name)
        if raw is None:
            return "404 Not Found", _failure(404, "NotFound", f'jobs.batch "{name}" not found')
        self.stats["patches"] += 1
        job = json.loads(raw)
        meta = job["metadata"]
        wanted = (patch.get("metadata") or {}).pop("resourceVersion", None)
        if wanted is not None and str(wanted) != meta.get("resourceVersion"):
            self.stats["conflicts"] += 1
            message = (
                f'Operation cannot be fulfilled on jobs.batch "{name}": the object has been modified;'
                " please apply your changes to the latest version and try again"
            )
            return "409 Conflict", _failure(409, "Conflict", message)
        was_suspended = bool((job.get("spec") or {}).get("suspend"))
        job = merge_patch(job, patch)
        if was_suspended and not (job.get("spec") or {}).get("suspend"):
            at = time.monotonic()
            self.stats["admitted"] += 1
            self.stats["last_admitted_at"] = at
            if self.stats["first_admitted_at"] is None:
                self.stats["first_admitted_at"] = at
        self.rv += 1
        job["metadata"]["resourceVersion"] = str(self.rv)
        out = json.dumps(job, separators=(",", ":")).encode()
        self.store(name, out)
        self.announce(b'{"type":"MODIFIED","object":' + out + b"}\n")
        return "200 OK", out

    def bookmark(self, w: Watcher) -> bytes:
        kind, api = ("Job", "batch/v1") if w.resource == "jobs" else ("Pod", "v1")
        obj = {"kind": kind, "apiVersion": api, "metadata": {"resourceVersion": str(self.rv)}}
        return _chunk(json.dumps({"type": "BOOKMARK", "object": obj}).encode() + b"\n")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _failure(code: int, reason: str, message: str) -> bytes:
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return json.dumps(status).encode()


STATE = State([])


class Standin(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""
        self.watcher: Watcher | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.watcher is not None:
            STATE.watchers.discard(self.watcher)

    def data_received(self, data: bytes) -> None:
        if self.watcher is not None:
            return
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            lines = head.split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            total = head_end + 4 + length
            if len(self.buffer) < total:
                return
            body = self.buffer[head_end + 4 : total]
            self.buffer = self.buffer[total:]
            self.respond(method, path, body)
            if self.watcher is not None:
                return

    def send(self, status: str, out: bytes) -> None:
        head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(out)}\r\n\r\n"
        self.transport.write(head.encode() + out)

    def respond(self, method: str, path: str, body: bytes) -> None:
        url = urllib.parse.urlsplit(path)
        query = dict(urllib.parse.parse_qsl(url.query))
        parts = url.path.rstrip("/").split("/")
        resource = "jobs" if "jobs" in parts else "pods" if "pods" in parts else ""
        if query.get("watch") == "true":
            self.watch(resource, query)
        elif url.path == "/bench/burst" and method == "POST":
            try:
                self.send("200 OK", json.dumps(STATE.burst(int(query.get("n", "1")))).encode())
            except (RuntimeError, ValueError) as exc:
                self.send("500 Internal Server Error", json.dumps({"error": str(exc)}).encode())
        elif url.path == "/bench/stats/reset" and method == "POST":
            STATE.stats.update(posts=0, gets=0, patches=0, conflicts=0, admitted=0)
            STATE.stats.update(first_admitted_at=None, last_admitted_at=None)
            self.send("200 OK", b"{}")
        elif url.path == "/bench/stats":
            self.send("200 OK", json.dumps({**STATE.stats, "jobs": len(STATE.jobs), "rv": STATE.rv}).encode())
        elif method == "POST":
            self.send(*STATE.post(json.loads(body)))
        elif method == "PATCH" and resource == "jobs" and parts[-1] != "jobs":
            self.send(*STATE.patch(urllib.parse.unquote(parts[-1]), json.loads(body)))
        elif resource == "jobs" and parts[-1] != "jobs":
            name = urllib.parse.unquote(parts[-1])
            STATE.stats["gets"] += 1
            raw = STATE.stored(name)
            if raw is not None:
                self.send("200 OK", raw)
            else:
                self.send("404 Not Found", _failure(404, "NotFound", f'jobs.batch "{name}" not found'))
        elif resource == "jobs":
            offset = int(query.get("continue") or 0)
            limit = int(query.get("limit") or 0)
            self.send("200 OK", list_page(STATE.jobs, offset, limit, STATE.rv, "JobList"))
        else:
            self.send("200 OK", list_page([], 0, 0, STATE.rv, "PodList" if resource == "pods" else "List"))

    def watch(self, resource: str, query: dict[str, str]) -> None:
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        self.watcher = Watcher(self.transport, resource, query.get("allowWatchBookmarks") == "true")
        STATE.flush()  # events already logged go out to the existing watches, not twice here
        since = query.get("resourceVersion") or ""
        if resource == "jobs" and since.isdigit() and int(since) not in (0, STATE.rv):
            oldest = STATE.log[0][0] if STATE.log else STATE.rv + 1
            if int(since) < oldest - 1:
                gone = {"kind": "Status", "status": "Failure", "reason": "Expired", "code": 410}
                self.transport.write(_chunk(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n"))
                self.transport.write(b"0\r\n\r\n")
                return
            replay = [line for rv, line in STATE.log if rv > int(since)]
            if replay:
                self.transport.write(_chunk(b"".join(replay)))
        STATE.watchers.add(self.watcher)


async def bookmarks() -> None:
    while True:
        await asyncio.sleep(60)
        for w in list(STATE.watchers):
            if w.bookmarks:
                w.transport.write(STATE.bookmark(w))


async def serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Standin, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    task = asyncio.create_task(bookmarks())
    async with server:
        await server.serve_forever()
    task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=0, help="preload this many realistic Jobs")
    parser.add_argument("--template", help="a Job manifest (JSON) to build them from")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--keep", action="store_true", help="list posted Jobs and announce them on watches (ADDED)"
    )
    args = parser.parse_args()
    template = None
    if args.template:
        with open(args.template) as f:
            template = json.load(f)
    global STATE
    STATE = State(list(realistic_jobs(args.jobs, template, args.seed)))
    STATE.keep = args.keep
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
