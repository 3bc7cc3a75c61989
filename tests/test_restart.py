"""A fast restart: a new leader's catch-up reads the informer's state once its watch has caught up
with a one-item read (no second full list), the first list runs with the GC paused, and
readiness turns true as soon as the first sync ends."""

from __future__ import annotations

import asyncio
import gc
import pathlib
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from conftest import ROOT, ServeProcess, serve_env, write_kubeconfig
from emulator import EmulatorThread
from test_informer import JOBS, JOBS_PATH, PODS_PATH, eventually, http_get, informer_lists, query_of

from jobscheduler.backends.kubernetes._client import ConfigSource, connect, paused_gc
from jobscheduler.backends.kubernetes._informer import LIST_PAGE
from jobscheduler.backends.kubernetes.backend import KubernetesBackend
from jobscheduler.core.index import JobIndex
from jobscheduler.core.manifests import RenderContext
from jobscheduler.jobtypes import TimerHandler

R = TypeVar("R")
HANDLER = TimerHandler(default_image="timer:latest")


def manifest(job_id: str) -> dict[str, Any]:
    params = HANDLER.parse(
        {"duration_seconds": 60, "timer_name": "t", "control_plane_endpoint": "http://cp:1"}
    )
    return HANDLER.render(params, RenderContext(job_id=job_id, name="restart", job_type="timer"))


def probes(emulator: EmulatorThread) -> int:
    """One-item lists of the Jobs (the readiness ping and the catch-up's fresh read)."""
    return sum(
        1
        for m, p in emulator.requests()
        if m == "GET" and p.startswith(JOBS_PATH + "?") and query_of(p).get("limit") == "1"
    )


def with_backend(
    kubeconfig: pathlib.Path, scenario: Callable[[KubernetesBackend, JobIndex], Awaitable[R]]
) -> R:
    """``scenario`` on a started, synced backend of this process (no controllers, no ping)."""

    async def main() -> R:
        source = ConfigSource("kubeconfig", "test", str(kubeconfig))
        backend = KubernetesBackend(await connect(source, request_timeout=5), "default")
        index = JobIndex()
        await backend.start(index)
        try:
            assert await index.wait_synced(10)
            assert gc.isenabled()  # paused for the first list only
            return await scenario(backend, index)
        finally:
            await backend.close()

    return asyncio.run(main())


def listing_meanwhile(
    emulator: EmulatorThread, meanwhile: Callable[[], object]
) -> Callable[[KubernetesBackend, JobIndex], Awaitable[list[str]]]:
    """A scenario: backend.list(), with ``meanwhile`` done once its fresh read has been made."""

    async def scenario(backend: KubernetesBackend, index: JobIndex) -> list[str]:
        probed = await asyncio.to_thread(probes, emulator)
        listing = asyncio.create_task(backend.list())
        await asyncio.to_thread(eventually, lambda: probes(emulator) > probed, "the fresh read", 10.0)
        assert not listing.done()  # waiting for the watch to reach the fresh read's resourceVersion
        await asyncio.to_thread(meanwhile)
        return sorted(r.job_id for r in await listing)

    return scenario


def test_catch_up_takes_the_informers_view_once_an_event_passes_a_fresh_read(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    """A job another replica admitted just now: the catch-up sees it without listing again."""
    emulator.request("POST", JOBS_PATH, manifest("job-before0000"))
    scenario = listing_meanwhile(
        emulator, lambda: emulator.request("POST", JOBS_PATH, manifest("job-after00000"))
    )
    assert with_backend(kubeconfig, scenario) == ["job-after00000", "job-before0000"]
    assert len(informer_lists(emulator)) == 1  # the informer's own list only


def test_catch_up_takes_the_informers_view_once_a_bookmark_passes_a_fresh_read(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    emulator.request("POST", JOBS_PATH, manifest("job-quiet00000"))
    scenario = listing_meanwhile(emulator, lambda: emulator.bookmark(JOBS, "Job", "batch/v1"))
    assert with_backend(kubeconfig, scenario) == ["job-quiet00000"]
    assert len(informer_lists(emulator)) == 1


def test_catch_up_lists_in_full_when_the_watch_does_not_get_there_in_time(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    """A quiet watch (no event, no bookmark): after current_wait, a full list, as before."""
    emulator.request("POST", JOBS_PATH, manifest("job-quiet00000"))

    async def scenario(backend: KubernetesBackend, index: JobIndex) -> list[str]:
        backend.current_wait = 0.2
        return [r.job_id for r in await backend.list()]

    assert with_backend(kubeconfig, scenario) == ["job-quiet00000"]
    assert len(informer_lists(emulator)) == 2  # the informer's, then the catch-up's


def test_paused_gc_resumes_it_when_the_last_interleaved_pause_ends() -> None:
    assert gc.isenabled()
    first, second = paused_gc(), paused_gc()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # ends before the other one (as across awaits)
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()
    gc.disable()  # someone else's: left as it is
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_ready_as_soon_as_the_first_sync_ends_not_a_readiness_period_later(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    """READINESS_INTERVAL_SECONDS=60 and a first list that takes a few seconds: ready within
    seconds of the sync (the informer's retry), not at the next periodic check."""
    emulator.inject("GET", f"{PODS_PATH}$", 500, "etcdserver: request timed out", reason="InternalError")
    server = ServeProcess(serve_env(kubeconfig, READINESS_INTERVAL_SECONDS="60"))
    try:
        base = f"http://127.0.0.1:{server.health_port}"
        assert http_get(f"{base}/readyz")[0] == 503  # (the first check came and went: not synced)
        emulator.clear_faults()
        eventually(lambda: http_get(f"{base}/readyz")[0] == 200, "ready", timeout=15, interval=0.1)
    finally:
        server.stop()


def test_a_restart_pages_through_every_job(tmp_path: pathlib.Path) -> None:
    """bench/standin.py (it pages by ``limit`` and ``continue``) with 2.5 pages of Jobs: every
    one is in the index once synced (each next page is asked for while one is summarised)."""
    jobs = 2 * LIST_PAGE + LIST_PAGE // 2
    standin = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "standin.py"), "--jobs", str(jobs)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert standin.stdout is not None
        port = int(standin.stdout.readline())
        kubeconfig = write_kubeconfig(tmp_path / "standin.kubeconfig", f"http://127.0.0.1:{port}")

        async def scenario(backend: KubernetesBackend, index: JobIndex) -> int:
            return len({r.job_id for r in index.records()})

        assert with_backend(kubeconfig, scenario) == jobs
    finally:
        standin.terminate()
        standin.wait(10)
