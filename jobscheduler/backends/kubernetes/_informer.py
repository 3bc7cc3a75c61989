"""One resource's list+watch loop, and whether it is following the API server.

The loop lists, then watches from the list's resourceVersion, resumes each watch from the
last resourceVersion seen (events and bookmarks), lists again at once on 410 Gone, and
reconnects after errors with a short capped backoff (0.5 s, doubling, at most 5 s, with
jitter, as client-go's reflector), so that the cache is current again within seconds of
the API server coming back. Only a 410 to a watch started from a list made just now backs
off (a watch cache lagging behind etcd, a misbehaving proxy): never LIST in a tight loop.

:meth:`Informer.lag` says, for readiness, why the informer may be serving stale state: it is
disconnected or relisting for longer than a short grace (``STALE_GRACE_SECONDS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from jobscheduler import metrics
from jobscheduler.backends.kubernetes._client import KubeApi, paused_gc
from jobscheduler.backends.kubernetes._errors import Call, Gone
from jobscheduler.backends.kubernetes._listbody import decode_list
from jobscheduler.core.errors import JobSchedulerError
from jobscheduler.core.manifests import MANAGED_SELECTOR
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.backends.kubernetes")

#: Server-side watch timeout; the API server ends each watch after about this long.
WATCH_TIMEOUT_SECONDS: Final = 290
LIST_PAGE: Final = 500
BACKOFF_FIRST: Final = 0.5
BACKOFF_MAX: Final = 5.0
#: A watch that ended (or failed) sooner than this did not really run.
SHORT_WATCH_SECONDS: Final = 1.0
#: How long an informer may be disconnected or relisting before readiness turns false.
STALE_GRACE_SECONDS: Final = 3.0


@dataclass(slots=True)
class Informer:
    """One resource's list+watch state (times are ``time.monotonic()``)."""

    resource: str
    path: str
    synced: bool = False
    resource_version: str = ""
    lists: int = 0
    #: Since when the informer has not been following the API server (None: it is).
    down_since: float | None = None
    #: Why not (the last error, or "relisting").
    problem: str = ""
    #: When the open watch was requested (None: no watch open).
    watch_opened: float | None = None
    #: When the last event, bookmark or list arrived.
    last_heard: float = 0.0
    #: Set by every event and bookmark (``caught_up`` waits on it).
    moved: asyncio.Event = field(default_factory=asyncio.Event)

    def following(self, now: float) -> bool:
        """Synced, and either never lost since, or watching for a while again."""
        if not self.synced:
            return False
        if self.down_since is None:
            return True
        return self.watch_opened is not None and now - self.watch_opened >= SHORT_WATCH_SECONDS

    def lag(self, now: float) -> str | None:
        """Why this informer's view may be stale, once that has lasted beyond the grace; else None."""
        if not self.synced or self.following(now) or self.down_since is None:
            return None  # never synced: the index itself is not synced yet (readiness says so)
        down = now - self.down_since
        if down < STALE_GRACE_SECONDS:
            return None
        return f"the {self.resource} watch has not followed the API server for {down:.0f} s: {self.problem}"

    def heard(self) -> None:
        self.down_since = None
        self.last_heard = time.monotonic()

    def lost(self, problem: str) -> None:
        self.watch_opened = None
        self.problem = problem
        if self.down_since is None:
            self.down_since = time.monotonic()

    def watch_ended(self, opened: float | None) -> bool:
        """Whether the watch opened at ``opened`` really ran (if so, a quiet one too had recovered)."""
        ran = opened is not None and time.monotonic() - opened >= SHORT_WATCH_SECONDS
        if ran:
            self.down_since = None
        return ran


def watch_event(informer: Informer, event: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """A watch event's (type, object), having moved the resume point; None for a bookmark.

    Gone for a 410 ERROR event; ValueError for any other ERROR event.
    """
    kind = event.get("type")
    obj = event.get("object") or {}
    if kind == "ERROR":
        code = obj.get("code")
        if code == 410:
            raise Gone(f"watch expired: {obj.get('message', '')}")
        raise ValueError(f"watch error {code}: {obj.get('message', '')}")
    version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    if version:
        informer.resource_version = version
    informer.moved.set()
    if kind == "BOOKMARK":
        return None
    return str(kind), obj


def export_metrics(informer: Informer) -> None:
    """jobscheduler_watch_synced{resource} and jobscheduler_watch_idle_seconds{resource}."""
    metrics.WATCH_SYNCED.labels(informer.resource).set_function(
        lambda: 1.0 if informer.following(time.monotonic()) else 0.0
    )
    metrics.WATCH_IDLE_SECONDS.labels(informer.resource).set_function(
        lambda: time.monotonic() - informer.last_heard if informer.last_heard else 0.0
    )


async def list_pages(
    api: KubeApi, informer: Informer, namespace: str
) -> AsyncIterator[tuple[Iterable[Mapping[str, Any]], str]]:
    """The list's pages (of LIST_PAGE items) as they arrive, each with the list's resourceVersion.

    The next page is asked for before a page is handed out: the API server prepares and sends it
    while this one is summarised. Each item is decoded only as it is read (_listbody.py): read
    them in turn, and keep only what you need of each."""
    call = Call(verb="list", resource=informer.resource, namespace=namespace)

    def fetch(token: str) -> asyncio.Future[dict[str, Any]]:
        query = [("labelSelector", MANAGED_SELECTOR), ("limit", str(LIST_PAGE))]
        if token:
            query.append(("continue", token))
        return asyncio.ensure_future(api.request("GET", informer.path, call, query=query, decode=decode_list))

    pending: asyncio.Future[dict[str, Any]] | None = fetch("")
    version = ""
    try:
        while pending is not None:
            page = await pending
            meta = page.get("metadata") or {}
            version = str(meta.get("resourceVersion") or version)
            token = str(meta.get("continue") or "")
            pending = fetch(token) if token else None
            yield page.get("items") or iter(()), version
    finally:
        if pending is not None:  # the consumer stopped early: the page asked for is not wanted
            pending.cancel()
            pending.add_done_callback(lambda f: f.cancelled() or f.exception())


def release_freed_memory() -> None:
    """Hand the heap pages a list freed back to the OS (glibc's ``malloc_trim``): parsing a page
    of Jobs takes ~16 KB per Job for a moment, and glibc keeps what is freed in the middle of
    the heap resident otherwise. Nothing where the C library has no malloc_trim."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


async def probe(api: KubeApi, informer: Informer, namespace: str) -> dict[str, Any]:
    """A one-item list: whether the API server answers, and its current resourceVersion (a list
    without a resourceVersion is a quorum read: at least as new as every write so far)."""
    call = Call(verb="list", resource=informer.resource, namespace=namespace)
    query = [("labelSelector", MANAGED_SELECTOR), ("limit", "1")]
    return await api.request("GET", informer.path, call, query=query)


def version_number(version: str) -> int:
    """A resourceVersion as a number, to order them (0 if it is not one: then none is ordered)."""
    return int(version) if version.isdigit() else 0


async def caught_up(api: KubeApi, informer: Informer, namespace: str, within: float) -> bool:
    """Whether the informer's watch delivers everything up to the resourceVersion of a fresh read
    (``probe``) within ``within`` seconds, by an event or a bookmark. False at once if it is not
    following the API server. (etcd's resourceVersions are one increasing revision for all
    objects; one that is not a number answers False.)"""
    if not informer.following(time.monotonic()):
        return False
    meta = (await probe(api, informer, namespace)).get("metadata") or {}
    wanted = version_number(str(meta.get("resourceVersion") or ""))
    try:
        async with asyncio.timeout(within):
            while wanted and version_number(informer.resource_version) < wanted:
                informer.moved.clear()
                await informer.moved.wait()
    except TimeoutError:
        log.info(
            "the watch did not reach a fresh resourceVersion in time; listing instead",
            resource=informer.resource,
            watched=informer.resource_version,
            wanted=wanted,
            waited_seconds=within,
        )
        return False
    return bool(wanted)


async def inform(
    informer: Informer,
    api: KubeApi,
    namespace: str,
    list_into: Callable[[Informer], Awaitable[None]],
    on_event: Callable[[Informer, Mapping[str, Any]], None],
) -> None:
    """List, then watch from the list's resourceVersion, forever; survive every failure."""
    backoff = BACKOFF_FIRST
    call = Call(verb="watch", resource=informer.resource, namespace=namespace)

    async def pause() -> None:
        nonlocal backoff
        await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
        backoff = min(backoff * 2, BACKOFF_MAX)

    while True:
        fresh = False  # the watch starts from a list made just now
        opened: float | None = None  # when the watch was requested
        try:
            if not informer.resource_version:
                if informer.synced:
                    informer.lost("relisting")
                # Before its first sync nothing is served from this informer: the GC waits for
                # the whole list (a relist pauses it for each page only).
                with paused_gc() if not informer.synced else contextlib.nullcontext():
                    await list_into(informer)
                release_freed_memory()
                informer.heard()
                fresh = True
            query = [
                ("labelSelector", MANAGED_SELECTOR),
                ("watch", "true"),
                ("allowWatchBookmarks", "true"),
                ("resourceVersion", informer.resource_version),
                ("timeoutSeconds", str(WATCH_TIMEOUT_SECONDS + random.randint(0, 20))),
            ]
            opened = informer.watch_opened = time.monotonic()
            async for raw in api.stream(
                informer.path, call, query=query, read_timeout=WATCH_TIMEOUT_SECONDS + 60
            ):
                if raw.strip():
                    on_event(informer, json.loads(raw))
                informer.heard()
                backoff = BACKOFF_FIRST
            if informer.watch_ended(opened):
                backoff = BACKOFF_FIRST
            else:
                # The server ended the watch at once (a proxy, a misconfiguration): do not spin.
                informer.lost("the API server ended the watch at once")
                await pause()
        except asyncio.CancelledError:
            raise
        except Gone:
            informer.resource_version = ""
            ran = informer.watch_ended(opened)
            informer.lost("410 Gone: relisting")
            if ran:
                backoff = BACKOFF_FIRST  # it had been watching for a while: list again at once
            elif fresh or opened is None:
                # The list just made is already too old (a lagging watch cache), or the list itself
                # expired (its continue token): never list in a tight loop.
                await pause()
            # else: resumed from an old resourceVersion (e.g. after an outage): list again at once
        except (JobSchedulerError, ValueError) as exc:
            if informer.watch_ended(opened):
                backoff = BACKOFF_FIRST  # it had been watching for a while: a fresh failure
            metrics.WATCH_RESTARTS.labels(informer.resource).inc()
            message = getattr(exc, "message", str(exc))
            informer.lost(message)
            log.warning(
                "watch failed; reconnecting",
                resource=informer.resource,
                error=message,
                retry_in=round(backoff, 2),
            )
            await pause()
