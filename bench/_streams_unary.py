"""Part 2 of bench/streams.py: unary calls while WatchJobs streams run (local backend).

GetJobStatus/ListJobs latency with no stream vs many open streams, while timer jobs are
submitted; the streams are held by other processes (``hold_proc``). Run bench/streams.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from _measure import cpu_seconds, free_port, stop_process
from cache import STREAMS_PER_CHANNEL

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc

#: Stream limits off: the benchmark's streams all come from one (anonymous) caller.
NO_STREAM_LIMITS = {"MAX_STREAMS_PER_CALLER": "0", "MAX_STREAMS": "0"}

# --- 2. unary calls while streams run --------------------------------------------------------------


class LocalService:
    """``jobscheduler serve`` on the local backend, in a data directory of its own."""

    def __init__(self, workdir: str) -> None:
        self.grpc_port, self.health_port = free_port(), free_port()
        env = {
            **os.environ,
            "BACKEND": "local",
            "DATA_DIR": os.path.join(workdir, "local-data"),
            "GRPC_HOST": "127.0.0.1",
            "GRPC_PORT": str(self.grpc_port),
            "HEALTH_HOST": "127.0.0.1",
            "HEALTH_PORT": str(self.health_port),
            "RATE_LIMIT_RPS": "0",
            "LOCAL_MAX_PARALLEL": "64",
            "LOG_LEVEL": "warn",
            **NO_STREAM_LIMITS,
        }
        self.log = open(os.path.join(workdir, "serve-local.log"), "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobscheduler", "serve"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid
        self.target = f"127.0.0.1:{self.grpc_port}"

    def metric(self, name: str) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/metrics", timeout=30) as answer:
                text = answer.read().decode()
        except (OSError, urllib.error.HTTPError):
            return None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=5) as answer,
            ):
                if answer.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("the local service did not become ready")

    def stop(self) -> None:
        stop_process(self.proc, 30)
        self.log.close()


def timer_request(i: int) -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(
        name=f"bench-{i}",
        timer_job=pb.TimerJob(
            duration_seconds=1, timer_name="bench", control_plane_endpoint="http://127.0.0.1:9/"
        ),
    )


async def probe(
    target: str, seconds: float, rate: float, call: Callable[[Any], Awaitable[object]]
) -> tuple[list[float], int]:
    """Latencies of ``call`` (one caller, back to back) for ``seconds``, while ``rate`` timer jobs
    a second are submitted; returns the latencies and the jobs submitted."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.JobSchedulerStub(channel)
        latencies: list[float] = []
        submitted = 0
        deadline = time.monotonic() + seconds

        async def submit() -> None:
            nonlocal submitted
            start = time.monotonic()
            while time.monotonic() < deadline:
                await stub.ScheduleJob(timer_request(submitted), timeout=30)
                submitted += 1
                await asyncio.sleep(max(0.0, start + submitted / rate - time.monotonic()))

        submitter = asyncio.ensure_future(submit())
        while time.monotonic() < deadline:
            started = time.perf_counter()
            await call(stub)
            latencies.append(time.perf_counter() - started)
        submitter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await submitter
    return latencies, submitted


def hold_proc(target: str, n: int, niceness: int, opened: Any, stop: Any, results: Any) -> None:
    """A client process holding ``n`` WatchJobs streams until told to stop, counting messages
    (not decoding them: cheap, so the machine's cores go to the server)."""
    os.nice(niceness)
    results.put(asyncio.run(_hold(target, n, opened, stop)))


async def _hold(target: str, n: int, opened: Any, stop: Any) -> dict[str, Any]:
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range((n + STREAMS_PER_CHANNEL - 1) // STREAMS_PER_CHANNEL)
    ]
    counts = [0] * n
    codes: list[str] = []

    async def consume(i: int) -> None:
        watch = channels[i // STREAMS_PER_CHANNEL].unary_stream(
            "/jobscheduler.JobScheduler/WatchJobs",
            request_serializer=pb.WatchJobsRequest.SerializeToString,
            response_deserializer=None,
        )
        try:
            async for _ in watch(pb.WatchJobsRequest()):
                counts[i] += 1
        except grpc.aio.AioRpcError as exc:
            codes.append(exc.code().name)

    tasks = [asyncio.ensure_future(consume(i)) for i in range(n)]
    await asyncio.sleep(0.5)
    opened.put(n)
    await asyncio.get_running_loop().run_in_executor(None, stop.get)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()
    return {"delivered": sum(counts), "codes": codes}


class Streams:
    """``n`` WatchJobs streams held by ``procs`` client processes (at ``niceness``) until ``stop``."""

    def __init__(self, service: LocalService, n: int, procs: int, niceness: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.opened, self.stops, self.results = ctx.Queue(), ctx.Queue(), ctx.Queue()
        shares = [n // procs + (1 if k < n % procs else 0) for k in range(procs)]
        self.workers = [
            ctx.Process(
                target=hold_proc,
                args=(service.target, share, niceness, self.opened, self.stops, self.results),
                daemon=True,
            )
            for share in shares
            if share
        ]
        for w in self.workers:
            w.start()
        for _ in self.workers:
            self.opened.get(timeout=120)
        deadline = time.monotonic() + 120
        while (open_now := service.metric('jobscheduler_open_streams{grpc_method="WatchJobs"}') or 0) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{n} WatchJobs streams did not open within 120 s ({open_now:g} open)")
            time.sleep(0.2)

    def stop(self) -> tuple[int, list[str]]:
        for _ in self.workers:
            self.stops.put(None)
        collected = [self.results.get(timeout=120) for _ in self.workers]
        for w in self.workers:
            w.join(30)
        return sum(r["delivered"] for r in collected), [c for r in collected for c in r["codes"]]


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def unary(args: argparse.Namespace, workdir: str) -> list[tuple[str, str, str, str]]:
    print(f"\n2. Unary calls while streams run (local backend, {args.jobs_per_second:g} timer jobs/s of 1 s)")
    service = LocalService(workdir)
    rows = []
    try:
        service.wait_ready()
        job_id = ""

        async def first() -> None:
            nonlocal job_id
            async with grpc.aio.insecure_channel(service.target) as channel:
                job_id = (
                    await pb_grpc.JobSchedulerStub(channel).ScheduleJob(timer_request(-1), timeout=30)
                ).job_id

        asyncio.run(first())

        def get_status(stub: Any) -> Awaitable[object]:
            return stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=30)

        def list_jobs(stub: Any) -> Awaitable[object]:
            return stub.ListJobs(pb.ListJobsRequest(page_size=100), timeout=30)

        asyncio.run(probe(service.target, 2, args.jobs_per_second, get_status))  # warm up
        for name, call, n, q_aims in (
            ("GetJobStatus", get_status, 200, ((0.5, "p50"), (0.99, "p99"))),
            ("ListJobs", list_jobs, 1000, ((0.5, "p50"),)),
        ):
            # Alternating rounds, latencies pooled: the machine's other load drifts.
            alone: list[float] = []
            loaded: list[float] = []
            jobs0 = jobs1 = delivered = 0
            cpu = 0.0
            codes: list[str] = []
            for _ in range(args.rounds):
                latencies, submitted = asyncio.run(
                    probe(service.target, args.seconds, args.jobs_per_second, call)
                )
                alone += latencies
                jobs0 += submitted
                streams = Streams(service, n, args.stream_procs, args.holder_nice)
                cpu0 = cpu_seconds(service.pid)
                latencies, submitted = asyncio.run(
                    probe(service.target, args.seconds, args.jobs_per_second, call)
                )
                cpu += cpu_seconds(service.pid) - cpu0
                loaded += latencies
                jobs1 += submitted
                got, ended = streams.stop()
                delivered += got
                codes += ended
            print(
                f"   {name}: no stream: n={len(alone)} p50 {p(alone, 0.5):.2f} ms p99 {p(alone, 0.99):.2f} ms"
                f" ({jobs0} jobs submitted);"
                f" {n} streams: n={len(loaded)} p50 {p(loaded, 0.5):.2f} ms p99 {p(loaded, 0.99):.2f} ms"
                f" ({jobs1} jobs; {delivered} events delivered to the streams, {delivered / n:.0f} each;"
                f" server CPU {cpu / args.seconds / args.rounds:.0%} of a core)"
                + (f"; streams ended: {sorted(set(codes))}" if codes else "")
            )
            for q, label in q_aims:
                ratio = p(loaded, q) / p(alone, q)
                print(f"   => {name} {label} with {n} streams / without: {ratio:.1f}x (aim <= 3x)")
                rows.append(
                    (
                        f"{name} {label}, {n} streams vs none",
                        "<= 3x",
                        f"{p(loaded, q):.2f} vs {p(alone, q):.2f} ms = {ratio:.1f}x",
                        "PASS" if ratio <= 3 else "MISS",
                    )
                )
    finally:
        service.stop()
    return rows
