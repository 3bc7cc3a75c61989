"""The live job cache under load: reads, lists, memory and watch fan-out with 100,000 jobs.

Run by hand (never by the test suite)::

    .venv/bin/python bench/cache.py [--jobs 100000] [--seconds 3] [--rounds 3]
        [--streams 1000] [--changes 10000] [--stream-procs 2] [--timeout 600]
        [--watch 1000x1000,100x10000] [--skip rps,latency,memory,watch]

(``--watch`` runs several fan-out configurations, streams x changes, one after the other
on the same server; ``--skip`` leaves parts out.)

A stand-in API server (``bench/standin.py``) is preloaded with ``--jobs`` realistic Jobs
(rendered by the service's own TimerHandler, then varied: ids, names, team/env/app labels,
owners, request ids, pending/running/Complete/Failed/cancelled status with conditions) and
``python -m jobscheduler serve`` lists and watches them. In one run it measures:

1. Memory per cached job: the server's VmRSS after the sync minus that of a server synced
   with 0 jobs, divided by ``--jobs``; and in-process with tracemalloc: the same Jobs,
   parsed as the informer does (every page of 500, then the records), into job_record(),
   its map of records and a JobIndex.
   Aim: <= 1 KB per job.
2. GetJobStatus (random ids) vs grpc.health.v1 Health/Check on the same server: requests/s
   with ``--concurrency`` callers on one grpc.aio channel, alternating rounds, medians.
   Aim: GetJobStatus >= 70% of Health/Check.
3. Latency at concurrency 1: GetJobStatus p50/p99 vs ListJobs (page_size 100, filter
   ``team=t3`` and phases RUNNING/SUCCEEDED, following next_page_token for up to 5 pages).
   Aim: ListJobs p50 <= 2x GetJobStatus p50 (no full scan per page).
4. WatchJobs fan-out: ``--streams`` streams (no filter) over ``--stream-procs`` client
   processes (50 streams per channel), then a burst of ``--changes`` MODIFIED events on
   the stand-in's Job watch. Every stream must get every event, in order (counted, and a
   CRC over the job ids compared with the stand-in's); prints the time from the burst to
   the last delivery, events/s, how long the server took to apply the burst to its cache
   (with and without the streams), and any stream that ended early with its status code.
   Bounded by ``--timeout`` seconds; partial results are printed if it runs out.

Ends with a summary table of the four aims (PASS/MISS).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import multiprocessing.synchronize
import os
import pathlib
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import standin  # noqa: E402
from _measure import cpu_seconds, free_port, run_for, serve_env, stop_process, write_kubeconfig  # noqa: E402

from jobscheduler._generated import jobscheduler_pb2 as pb  # noqa: E402
from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc  # noqa: E402
from jobscheduler.backends.kubernetes._listbody import decode_list  # noqa: E402
from jobscheduler.backends.kubernetes._status import is_managed, job_record  # noqa: E402
from jobscheduler.core import manifests  # noqa: E402
from jobscheduler.core.index import JobIndex  # noqa: E402
from jobscheduler.core.manifests import RenderContext  # noqa: E402
from jobscheduler.core.model import JobRecord  # noqa: E402
from jobscheduler.jobtypes import TimerHandler  # noqa: E402

PAGE = 500  # the informer's list page (backend._LIST_PAGE)
LIST_FILTER = pb.JobFilter(label_selector="team=t3", phases=[pb.JOB_PHASE_RUNNING, pb.JOB_PHASE_SUCCEEDED])
STREAMS_PER_CHANNEL = 50


# --- the stand-in and the service -----------------------------------------------------------


def job_template() -> dict[str, Any]:
    """A timer Job exactly as the service renders one; the stand-in varies it per job."""
    for name in (
        "MANAGED_BY_LABEL",
        "JOB_ID_LABEL",
        "JOB_TYPE_LABEL",
        "JOB_NAME_LABEL",
        "JOB_NAME_ANNOTATION",
        "JOB_TYPE_ANNOTATION",
        "OWNER_ANNOTATION",
        "REQUEST_ID_ANNOTATION",
        "REQUEST_HASH_ANNOTATION",
        "CANCELLED_AT_ANNOTATION",
        "CANCEL_REASON_ANNOTATION",
    ):
        if getattr(standin, name) != getattr(manifests, name):
            raise SystemExit(f"bench/standin.py's {name} no longer matches jobscheduler/core/manifests.py")
    handler = TimerHandler(default_image="ghcr.io/jobscheduler/jobscheduler:latest")
    params = handler.parse(
        {
            "duration_seconds": 300,
            "timer_name": "template",
            "control_plane_endpoint": "http://control-plane.ci.svc:50053/reports",
        }
    )
    return handler.render(params, RenderContext(job_id="job-template00", name="template", job_type="timer"))


def proc_kb(pid: int, key: str) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all processes, all cores)."""
    fields = pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Standin:
    """bench/standin.py in a subprocess, with a kubeconfig pointing at it."""

    def __init__(self, jobs: int, template_path: str, workdir: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "standin.py"),
                "--jobs",
                str(jobs),
                "--template",
                template_path,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"
        self.kubeconfig = os.path.join(workdir, f"standin-{jobs}.kubeconfig")
        write_kubeconfig(self.kubeconfig, self.url)

    def burst(self, n: int) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.url}/bench/burst?n={n}", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=120) as answer:
            result: dict[str, Any] = json.loads(answer.read())
        return result

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Service:
    """``python -m jobscheduler serve`` against a stand-in, on ports picked here.

    (LOG_LEVEL=warn leaves out the "serving" line that bench/schedule.py reads the ports
    from; info would also log every RPC and measure the logging.)
    """

    def __init__(self, kubeconfig: str, changes: int, workdir: str, label: str) -> None:

        self.grpc_port, self.health_port = free_port(), free_port()
        env = serve_env(
            kubeconfig,
            self.grpc_port,
            self.health_port,
            STREAM_BUFFER=str(min(1_000_000, max(1000, 2 * changes))),
            WATCH_MAX_EVENTS=str(max(100_000, changes)),
        )
        self.log_path = os.path.join(workdir, f"serve-{label}.log")
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobscheduler", "serve"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        self.pid = self.proc.pid
        self.target = f"127.0.0.1:{self.grpc_port}"

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=30) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name: str, labels: str = "") -> float | None:
        code, text = self.http("/metrics")
        if code != 200:
            return None
        match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
        return float(match.group(1)) if match else None

    def wait_synced(self, jobs: int, timeout: float = 600) -> float:
        """Seconds from start until /readyz is 200 and the cache holds ``jobs`` jobs."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jobscheduler serve exited ({self.proc.returncode}): {self.tail()}")
            if self.http("/readyz")[0] == 200 and self.metric("jobscheduler_cache_jobs") == jobs:
                return time.perf_counter() - self.started
            time.sleep(0.1)
        raise RuntimeError(f"jobscheduler serve did not sync {jobs} jobs in {timeout:g} s: {self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        return pathlib.Path(self.log_path).read_text()[-2000:]

    def rss_kb(self) -> int:
        return proc_kb(self.pid, "VmRSS")

    def stop(self) -> None:
        stop_process(self.proc, 30)
        self.log.close()


# --- measuring helpers ------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def page_all(target: str) -> list[str]:
    """Every job id, through ListJobs pages of 1000."""
    ids: list[str] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.JobSchedulerStub(channel)
        token = ""
        while True:
            answer = await stub.ListJobs(pb.ListJobsRequest(page_size=1000, page_token=token), timeout=120)
            ids.extend(job.job_id for job in answer.jobs)
            token = answer.next_page_token
            if not token:
                return ids


async def warm_up(target: str, ids: list[str]) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.JobSchedulerStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        for i in range(200):
            await health.Check(health_pb2.HealthCheckRequest())
            with contextlib.suppress(grpc.aio.AioRpcError):  # NOT_FOUND on the empty server
                await stub.GetJobStatus(
                    pb.GetJobStatusRequest(job_id=ids[i % len(ids)] if ids else "job-none")
                )
        for _ in range(3):
            await stub.ListJobs(pb.ListJobsRequest(filter=LIST_FILTER, page_size=100), timeout=120)


@dataclass
class Report:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(self, target: str, aim: str, measured: str, ok: bool | None) -> None:
        self.rows.append((target, aim, measured, "-" if ok is None else "PASS" if ok else "MISS"))


# --- 1. requests per second -------------------------------------------------------------------


async def rps_round(
    service: Service, kind: str, seconds: float, concurrency: int, ids: list[str]
) -> tuple[float, float, float, float]:
    """Requests/s, server CPU ms per call, and the cores the client and everything else used."""
    rng = random.Random(len(kind))
    requests = [pb.GetJobStatusRequest(job_id=rng.choice(ids)) for _ in range(10_000)]
    async with grpc.aio.insecure_channel(service.target) as channel:
        stub = pb_grpc.JobSchedulerStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest()
        counter = iter(range(10**12))

        async def get() -> None:
            await stub.GetJobStatus(requests[next(counter) % len(requests)], timeout=30)

        async def ping() -> None:
            await health.Check(check, timeout=30)

        call = get if kind == "get" else ping
        for _ in range(100):
            await call()
        cpu0, own0, busy0 = cpu_seconds(service.pid), time.process_time(), busy_seconds()
        latencies, elapsed = await run_for(seconds, concurrency, call)
        cpu = cpu_seconds(service.pid) - cpu0
        client = time.process_time() - own0
        others = busy_seconds() - busy0 - cpu - client
    return len(latencies) / elapsed, cpu / len(latencies) * 1000, client / elapsed, max(0.0, others) / elapsed


def measure_rps(service: Service, args: argparse.Namespace, ids: list[str], report: Report) -> None:
    print(f"\n2. requests/s, {args.concurrency} concurrent callers, {args.rounds} alternating rounds:")
    rates: dict[str, list[float]] = {"health": [], "get": []}
    cpus: dict[str, list[float]] = {"health": [], "get": []}
    for _ in range(args.rounds):
        for kind in ("health", "get"):
            rate, cpu, client, others = asyncio.run(
                rps_round(service, kind, args.seconds, args.concurrency, ids)
            )
            rates[kind].append(rate)
            cpus[kind].append(cpu)
            label = "Health/Check" if kind == "health" else "GetJobStatus"
            print(
                f"   {label:<13} {rate:8.0f} req/s   server CPU {cpu:5.3f} ms/call"
                f"   (client used {client:.2f} cores, other processes {others:.2f})"
            )
    health, get = statistics.median(rates["health"]), statistics.median(rates["get"])
    ratio = get / health
    print(
        f"   median: Health/Check {health:.0f} req/s ({statistics.median(cpus['health']):.3f} ms server CPU),"
        f" GetJobStatus {get:.0f} req/s ({statistics.median(cpus['get']):.3f} ms);"
        f" ratio {ratio:.2f} (aim >= 0.70); by server CPU per call"
        f" {statistics.median(cpus['health']) / statistics.median(cpus['get']):.2f}"
    )
    report.add(
        "GetJobStatus rps / Health/Check rps",
        ">= 70%",
        f"{get:.0f} / {health:.0f} = {ratio:.0%}",
        ratio >= 0.70,
    )


# --- 2. latency at concurrency 1 --------------------------------------------------------------


async def latencies(service: Service, seconds: float, ids: list[str]) -> dict[str, list[float]]:
    rng = random.Random(2)
    async with grpc.aio.insecure_channel(service.target) as channel:
        stub = pb_grpc.JobSchedulerStub(channel)

        async def get() -> None:
            await stub.GetJobStatus(pb.GetJobStatusRequest(job_id=rng.choice(ids)), timeout=30)

        token, pages = "", 0
        first: list[float] = []
        later: list[float] = []
        sizes: list[int] = []

        async def list_page() -> None:
            nonlocal token, pages
            started = time.perf_counter()
            answer = await stub.ListJobs(
                pb.ListJobsRequest(filter=LIST_FILTER, page_size=100, page_token=token), timeout=60
            )
            (later if token else first).append(time.perf_counter() - started)
            sizes.append(len(answer.jobs))
            pages += 1
            token = answer.next_page_token if pages % 5 else ""

        for _ in range(50):
            await get()
        get_lat, _ = await run_for(seconds, 1, get)
        list_lat, _ = await run_for(seconds, 1, list_page, min_calls=20)
    return {
        "get": get_lat,
        "list": list_lat,
        "first": first,
        "later": later,
        "sizes": [float(s) for s in sizes],
    }


def measure_latency(service: Service, args: argparse.Namespace, ids: list[str], report: Report) -> None:
    print("\n3. latency at concurrency 1:")
    lat = asyncio.run(latencies(service, args.seconds, ids))
    get50, get99 = statistics.median(lat["get"]) * 1000, pct(lat["get"], 0.99) * 1000
    list50, list99 = statistics.median(lat["list"]) * 1000, pct(lat["list"], 0.99) * 1000
    print(
        f"   GetJobStatus                     p50 {get50:8.3f} ms   p99 {get99:8.3f} ms"
        f"   (n={len(lat['get'])})"
    )
    print(
        f"   ListJobs page_size=100 filtered  p50 {list50:8.3f} ms   p99 {list99:8.3f} ms"
        f"   (n={len(lat['list'])};"
        f" first pages p50 {statistics.median(lat['first']) * 1000:.1f} ms, next pages p50"
        f" {statistics.median(lat['later']) * 1000 if lat['later'] else float('nan'):.1f} ms;"
        f" {statistics.mean(lat['sizes']):.0f} jobs per page)"
    )
    ratio = list50 / get50
    print(f"   ListJobs p50 / GetJobStatus p50 = {ratio:.1f}x (aim <= 2x)")
    report.add(
        "ListJobs p50 / GetJobStatus p50",
        "<= 2x",
        f"{list50:.2f} / {get50:.3f} ms = {ratio:.1f}x",
        ratio <= 2,
    )


# --- 3. memory ----------------------------------------------------------------------------------


def in_process_memory(jobs: int, template: dict[str, Any], max_events: int) -> dict[str, Any]:
    """The informer's work in this process, under tracemalloc: pages -> items -> records -> index."""
    raw = list(standin.realistic_jobs(jobs, template))
    pages = [standin.list_page(raw, offset, PAGE, 1, "JobList") for offset in range(0, max(jobs, 1), PAGE)]
    json_bytes = sum(len(r) for r in raw)
    del raw
    gc.collect()
    tracemalloc.start()
    index = JobIndex(max_events=max_events)
    states: dict[str, JobRecord] = {}
    for page in pages:  # as backend._list_into: each item decoded and summarised in turn
        for item in decode_list(page)["items"]:
            if is_managed(item):
                states[str(item["metadata"]["name"])] = job_record(item)
    _, peak = tracemalloc.get_traced_memory()
    index.replace_all(states.values())
    index.mark_synced()
    gc.collect()
    with_log, _ = tracemalloc.get_traced_memory()
    snapshot = tracemalloc.take_snapshot()
    index.log.clear()
    gc.collect()
    records_only, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    sites = []
    for stat in snapshot.statistics("lineno")[:8]:
        frame = stat.traceback[0]
        if frame.filename.startswith(str(ROOT)):
            where = os.path.relpath(frame.filename, ROOT)
        else:  # the standard library: json's decoder makes the strings the records keep
            where = "/".join(pathlib.Path(frame.filename).parts[-2:])
        sites.append((f"{where}:{frame.lineno}", stat.size / max(jobs, 1)))
    n = max(jobs, 1)
    assert len(index) == jobs and len(states) == jobs
    return {
        "with_log": with_log / n,
        "records_only": records_only / n,
        "peak": peak / n,
        "json": json_bytes / n,
        "sites": sites,
    }


def measure_memory(
    baseline_kb: int, full_kb: int, full_hwm_kb: int, args: argparse.Namespace, template: dict[str, Any]
) -> dict[str, Any]:
    print("\n1. memory per cached job:")
    per_job = (full_kb - baseline_kb) * 1024 / args.jobs
    print(
        f"   server VmRSS: {baseline_kb / 1024:.1f} MiB with 0 jobs,"
        f" {full_kb / 1024:.1f} MiB with {args.jobs}"
        f" (peak VmHWM {full_hwm_kb / 1024:.1f} MiB during the list) -> {per_job:.0f} bytes per job"
    )
    mem = in_process_memory(args.jobs, template, max(100_000, args.changes))
    print(
        f"   in-process (tracemalloc): {mem['with_log']:.0f} bytes per job in the index and the"
        f" backend's map, with the retained change log (the first list is not logged: see core/index.py);"
        f" {mem['records_only']:.0f} bytes without it.\n   Peak while listing {mem['peak']:.0f} bytes"
        f" per job (the Jobs are {mem['json']:.0f} bytes of JSON each)"
    )
    print("   largest allocation sites (bytes per job):")
    for where, size in mem["sites"]:
        print(f"     {size:7.0f}  {where}")
    mem["rss"] = per_job
    return mem


# --- 4. WatchJobs fan-out --------------------------------------------------------------------


def stream_proc(
    target: str,
    streams: int,
    changes: int,
    opened: Any,
    go: Any,
    results: Any,
    progress: Any,
    slot: int,
) -> None:
    """A client process: ``streams`` WatchJobs streams, counting events until told to stop."""
    results.put(asyncio.run(_stream_proc(target, streams, changes, opened, go, progress, slot)))


async def _stream_proc(
    target: str, streams: int, changes: int, opened: Any, go: Any, progress: Any, slot: int
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range((streams + STREAMS_PER_CHANNEL - 1) // STREAMS_PER_CHANNEL)
    ]
    counts = [0] * streams
    crcs = [0] * streams
    done_at: list[float | None] = [None] * streams
    first_at: list[float | None] = [None] * streams
    last_at: list[float | None] = [None] * streams
    codes: list[str] = [""] * streams
    all_done = asyncio.Event()
    finished = 0

    async def consume(i: int) -> None:
        nonlocal finished
        stub = pb_grpc.JobSchedulerStub(channels[i // STREAMS_PER_CHANNEL])
        call = stub.WatchJobs(pb.WatchJobsRequest())
        count, crc = 0, 0
        try:
            async for event in call:
                count += 1
                crc = zlib.crc32(event.job.job_id.encode(), crc)
                now = time.monotonic()
                if count == 1:
                    first_at[i] = now
                last_at[i] = now
                counts[i], crcs[i] = count, crc
                if count == changes:
                    done_at[i] = now
                    finished += 1
                    if finished == streams:
                        all_done.set()
            codes[i] = "ended OK"
        except grpc.aio.AioRpcError as exc:
            codes[i] = exc.code().name
        except asyncio.CancelledError:
            codes[i] = ""  # still open when the benchmark stopped it
            raise

    tasks = [loop.create_task(consume(i)) for i in range(streams)]
    await asyncio.sleep(0.5)
    opened.put(slot)

    async def report_progress() -> None:
        while True:
            progress[slot] = sum(counts)
            await asyncio.sleep(1)

    reporter = loop.create_task(report_progress())
    deadline = await loop.run_in_executor(None, go.get)  # the burst's time.monotonic() + --timeout
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_done.wait(), max(0.0, deadline - time.monotonic()))
    await asyncio.sleep(1.0)  # anything beyond the burst would show up as extra events
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    reporter.cancel()
    progress[slot] = sum(counts)
    for channel in channels:
        await channel.close()
    return {
        "counts": counts,
        "crcs": crcs,
        "done_at": done_at,
        "first_at": first_at,
        "last_at": last_at,
        "codes": codes,
        "cpu": time.process_time(),
    }


def wait_applied(service: Service, last: dict[str, Any], since: float, timeout: float) -> float | None:
    """Seconds from ``since`` (monotonic) until GetJobStatus shows the burst's last change."""

    async def poll() -> float | None:
        async with grpc.aio.insecure_channel(service.target) as channel:
            stub = pb_grpc.JobSchedulerStub(channel)
            request = pb.GetJobStatusRequest(job_id=last["job_id"])
            while time.monotonic() < since + timeout:
                job = (await stub.GetJobStatus(request, timeout=timeout)).job
                if (job.active, job.failed, job.succeeded) == (
                    last["active"],
                    last["failed"],
                    last["succeeded"],
                ):
                    return time.monotonic() - since
                await asyncio.sleep(0.005)
        return None

    return asyncio.run(poll())


def measure_watch(
    service: Service, stand: Standin, streams: int, changes: int, procs: int, timeout: float, report: Report
) -> dict[str, Any]:
    print(f"\n4. WatchJobs: {streams} streams over {procs} client processes, a burst of {changes} changes:")
    burst = stand.burst(changes)
    applied = wait_applied(service, burst["last"], burst["sent_at"], 120)
    print(
        f"   with no stream open, the server applied the burst to its cache in"
        f" {applied or float('nan'):.2f} s"
        f" (stand-in prepared it in {burst['prepare_seconds']:.2f} s)"
    )
    ctx = multiprocessing.get_context("spawn")
    opened, results = ctx.Queue(), ctx.Queue()
    gos = [ctx.Queue() for _ in range(procs)]
    progress = ctx.Array("q", procs, lock=False)
    shares = [streams // procs + (1 if k < streams % procs else 0) for k in range(procs)]
    workers = [
        ctx.Process(
            target=stream_proc,
            args=(service.target, shares[k], changes, opened, gos[k], results, progress, k),
            daemon=True,
        )
        for k in range(procs)
        if shares[k]
    ]
    for w in workers:
        w.start()
    try:
        for _ in workers:
            opened.get(timeout=120)
        deadline = time.monotonic() + 120
        while service.metric("jobscheduler_open_streams", '{grpc_method="WatchJobs"}') != streams:
            if time.monotonic() > deadline:
                raise RuntimeError("the WatchJobs streams did not all open within 120 s")
            time.sleep(0.2)
        time.sleep(1.0)  # each handler subscribes right after the gauge counts it
        cpu0 = cpu_seconds(service.pid)
        burst = stand.burst(changes)
        sent = burst["sent_at"]
        for k in range(len(workers)):
            gos[k].put(sent + timeout)
        applied_streams = wait_applied(service, burst["last"], sent, timeout)
        print(
            f"   with the streams open, the server applied the burst to its cache in"
            f" {applied_streams or float('nan'):.2f} s; delivering..."
        )
        collected: list[dict[str, Any]] = []
        next_note = time.monotonic() + 15
        while len(collected) < len(workers):
            try:
                collected.append(results.get(timeout=1))
            except Exception:  # queue.Empty
                if time.monotonic() > sent + timeout + 120:
                    raise RuntimeError("client processes did not report") from None
                if time.monotonic() > next_note:
                    delivered = sum(progress)
                    print(
                        f"   ... {time.monotonic() - sent:5.0f} s: {delivered} of {streams * changes} events"
                        f" delivered ({delivered / (time.monotonic() - sent):.0f}/s)",
                        flush=True,
                    )
                    next_note += 15
        server_cpu = cpu_seconds(service.pid) - cpu0
    finally:
        for w in workers:
            w.join(30)
            if w.is_alive():
                w.terminate()
    counts = [c for r in collected for c in r["counts"]]
    crcs = [c for r in collected for c in r["crcs"]]
    done = [d for r in collected for d in r["done_at"]]
    last = [t for r in collected for t in r["last_at"] if t is not None]
    codes = [c for r in collected for c in r["codes"]]
    total = sum(counts)
    complete = sum(1 for c, x in zip(counts, crcs, strict=True) if c == changes and x == burst["crc"])
    extra = sum(1 for c in counts if c > changes)
    wrong = sum(1 for c, x in zip(counts, crcs, strict=True) if c == changes and x != burst["crc"])
    ended: dict[str, int] = {}
    for code in codes:
        if code:
            ended[code] = ended.get(code, 0) + 1
    every = complete == streams and not extra
    span = (max(last) - sent) if last else float("nan")
    finished = sorted(d - sent for d in done if d is not None)
    print(
        f"   delivered {total} of {streams * changes} events ({total / (streams * changes):.1%});"
        f" {complete} of {streams} streams got all {changes}, in order"
        + (f"; {extra} got more" if extra else "")
        + (f"; {wrong} got {changes} but not the burst's sequence" if wrong else "")
    )
    if ended:
        print("   streams ended early: " + ", ".join(f"{n} x {code}" for code, n in sorted(ended.items())))
    else:
        print("   no stream ended early")
    if finished:
        print(
            f"   burst -> stream complete: first {finished[0]:.2f} s,"
            f" median {statistics.median(finished):.2f} s,"
            f" last {finished[-1]:.2f} s" + ("" if len(finished) == streams else " (of the complete ones)")
        )
    if len(finished) < streams:
        print(
            f"   TIMED OUT after {timeout:g} s: partial results; events per stream: min {min(counts)},"
            f" median {statistics.median(counts):.0f}, max {max(counts)}"
        )
    rate = total / span if span > 0 else float("nan")
    client_cpu = sum(r["cpu"] for r in collected)
    print(
        f"   burst -> last delivery {span:.2f} s, {rate:,.0f} events/s;"
        f" server CPU {server_cpu:.1f} s ({server_cpu / max(total, 1) * 1e6:.1f} us per delivered event),"
        f" client CPU {client_cpu:.1f} s"
    )
    report.add(
        f"WatchJobs {streams} x {changes}",
        "every stream every event",
        f"{'all' if every else f'{complete}/{streams} complete'}, {span:.1f} s, {rate:,.0f} ev/s,"
        f" cache apply {applied_streams or float('nan'):.2f} s",
        every,
    )
    return {"every": every, "span": span, "rate": rate, "applied": applied_streams, "applied_alone": applied}


def memory_rows(
    baseline_kb: int,
    full_kb: int,
    full_hwm_kb: int,
    args: argparse.Namespace,
    template: dict[str, Any],
    report: Report,
) -> None:
    mem = measure_memory(baseline_kb, full_kb, full_hwm_kb, args, template)
    report.add("memory per cached job (server RSS)", "<= 1 KB", f"{mem['rss']:.0f} B", mem["rss"] <= 1024)
    report.add(
        "memory per cached job (tracemalloc)",
        "<= 1 KB",
        f"{mem['with_log']:.0f} B ({mem['records_only']:.0f} B without the change log)",
        mem["with_log"] <= 1024,
    )


def guarded(name: str, report: Report, part: Callable[[], object]) -> None:
    """Run one part; if it fails, say so and go on with the others (the summary still prints)."""
    try:
        part()
    except Exception as exc:
        print(f"   {name} FAILED: {type(exc).__name__}: {exc}")
        report.add(name, "", f"failed: {type(exc).__name__}", False)


# --- main --------------------------------------------------------------------------------------


def parse_watch_configs(text: str, streams: int, changes: int) -> list[tuple[int, int]]:
    if not text:
        return [(streams, changes)]
    configs = []
    for part in text.split(","):
        s, _, c = part.strip().partition("x")
        configs.append((int(s), int(c)))
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100_000, help="Jobs in the cache")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per case and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating RPS rounds; the medians count")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent callers for the RPS part")
    parser.add_argument("--streams", type=int, default=1000, help="WatchJobs streams")
    parser.add_argument("--changes", type=int, default=10_000, help="changes in the burst")
    parser.add_argument("--stream-procs", type=int, default=2, help="client processes holding the streams")
    parser.add_argument("--timeout", type=float, default=600, help="give up on the watch burst after this")
    parser.add_argument(
        "--watch",
        default="",
        help="several watch runs instead, e.g. '1000x1000,100x10000' (streams x changes)",
    )
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: rps,latency,memory,watch")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    configs = parse_watch_configs(args.watch, args.streams, args.changes)
    args.changes = max(c for _, c in configs)
    report = Report()
    template = job_template()
    print(
        f"{args.jobs} jobs; {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.2f});"
        f" Python {sys.version.split()[0]}, grpcio {grpc.__version__};"
        f" RPS {args.rounds} alternating rounds of {args.seconds:g} s"
    )
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as workdir:
        template_path = os.path.join(workdir, "template.json")
        with open(template_path, "w") as f:
            json.dump(template, f)

        baseline_kb = 0
        if "memory" not in skip:
            stand = Standin(0, template_path, workdir)
            service = Service(stand.kubeconfig, args.changes, workdir, "empty")
            try:
                service.wait_synced(0)
                asyncio.run(warm_up(service.target, []))
                time.sleep(0.5)
                baseline_kb = service.rss_kb()
            finally:
                service.stop()
                stand.stop()

        started = time.perf_counter()
        stand = Standin(args.jobs, template_path, workdir)
        print(f"stand-in with {args.jobs} Jobs ready in {time.perf_counter() - started:.1f} s at {stand.url}")
        service = Service(stand.kubeconfig, args.changes, workdir, "full")
        try:
            synced = service.wait_synced(args.jobs)
            synced_kb = service.rss_kb()
            started = time.perf_counter()
            ids = asyncio.run(page_all(service.target))
            if len(ids) != args.jobs or len(set(ids)) != args.jobs:
                raise RuntimeError(
                    f"ListJobs returned {len(ids)} ids ({len(set(ids))} distinct), not {args.jobs}"
                )
            print(
                f"service: VmRSS {synced_kb / 1024:.1f} MiB right after the sync"
                f" ({(synced_kb - baseline_kb) * 1024 / args.jobs:.0f} bytes per job over the empty server's)"
                if baseline_kb
                else ""
            )
            print(
                f"service: started and synced {args.jobs} jobs in {synced:.1f} s (to /readyz 200 and"
                f" the cache gauge); ListJobs pages of 1000 list them all in"
                f" {time.perf_counter() - started:.1f} s"
            )
            asyncio.run(warm_up(service.target, ids))
            time.sleep(0.5)
            full_kb = service.rss_kb()
            full_hwm_kb = proc_kb(service.pid, "VmHWM")

            if "memory" not in skip:
                guarded(
                    "memory",
                    report,
                    lambda: memory_rows(baseline_kb, full_kb, full_hwm_kb, args, template, report),
                )
            if "rps" not in skip:
                guarded("rps", report, lambda: measure_rps(service, args, ids, report))
            if "latency" not in skip:
                guarded("latency", report, lambda: measure_latency(service, args, ids, report))
            if "watch" not in skip:
                for streams, changes in configs:
                    guarded(
                        f"watch {streams}x{changes}",
                        report,
                        lambda s=streams, c=changes: measure_watch(
                            service, stand, s, c, args.stream_procs, args.timeout, report
                        ),
                    )
        finally:
            service.stop()
            stand.stop()

    print(f"\nsummary ({args.jobs} jobs in the cache):")
    widths = [
        max(len(r[i]) for r in [("target", "aim", "measured", "result"), *report.rows]) for i in range(4)
    ]
    for row in [("target", "aim", "measured", "result"), *report.rows]:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
