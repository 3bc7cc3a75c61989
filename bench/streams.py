"""WatchJobs fan-out against the bare transport, and unary calls while streams are open.

Run by hand (never by the test suite)::

    .venv/bin/python bench/streams.py [--streams 1000] [--changes 1000] [--stream-procs 2]
        [--seconds 5] [--rounds 3] [--jobs-per-second 5] [--timeout 300] [--skip fanout,unary]

In one run:

1. Fan-out. (a) Baseline: a bare grpc.aio server (its own process) sends ``--changes``
   pre-serialised ``JobEvent`` messages (real jobs of the stand-in, as the service sends them)
   to each of ``--streams`` streams. (b) The service (``jobscheduler serve``, Kubernetes
   backend against ``bench/standin.py``) with ``--streams`` WatchJobs streams open, then a
   burst of ``--changes`` changes on the stand-in's Job watch. The same client processes
   (``bench/cache.py``'s, 50 streams a channel) read both; every stream must get every event,
   in order (counted, CRC of the job ids). Rate: events delivered / (burst -> last delivery).
   Aim: (b) >= 50% of (a).
2. Unary calls while streams run (local backend, ``--jobs-per-second`` timer jobs of 1 s
   submitted throughout): GetJobStatus p50/p99 (one caller) with no stream vs 200 open
   WatchJobs streams; ListJobs (page of 100) p50 with no stream vs 1,000 streams; ``--rounds``
   alternating rounds of ``--seconds`` each, latencies pooled. The streams
   are held by ``--stream-procs`` other processes that count the messages without decoding them,
   at ``--holder-nice`` (10): they stand in for clients on other machines, and are not to take
   the server's cores (reading 1,000 streams' messages in Python costs more than sending them).
   Aims: <= 3x.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import cache  # noqa: E402
from _measure import cpu_seconds, free_port  # noqa: E402

from jobscheduler._generated import jobscheduler_pb2 as pb  # noqa: E402
from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc  # noqa: E402

#: Stream limits off: the benchmark's streams all come from one (anonymous) caller.
NO_STREAM_LIMITS = {"MAX_STREAMS_PER_CALLER": "0", "MAX_STREAMS": "0"}


# --- 1a. the bare transport ---------------------------------------------------------------------


def bare_server(streams: int, payloads: list[bytes], ready: Any, started: Any) -> None:
    asyncio.run(_bare_server(streams, payloads, ready, started))


async def _bare_server(streams: int, payloads: list[bytes], ready: Any, started: Any) -> None:
    """WatchJobs as bytes: once all ``streams`` are open, each gets every payload."""
    opened = 0
    go = asyncio.Event()

    async def watch(request: bytes, context: Any) -> Any:
        nonlocal opened
        opened += 1
        if opened == streams:
            started.put(time.monotonic())
            go.set()
        await go.wait()
        for payload in payloads:
            yield payload

    handler = grpc.method_handlers_generic_handler(
        "jobscheduler.JobScheduler", {"WatchJobs": grpc.unary_stream_rpc_method_handler(watch)}
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ready.put(port)
    await server.wait_for_termination()


def collect(collected: list[dict[str, Any]], changes: int, crc: int, since: float) -> dict[str, Any]:
    counts = [c for r in collected for c in r["counts"]]
    crcs = [c for r in collected for c in r["crcs"]]
    last = [t for r in collected for t in r["last_at"] if t is not None]
    total = sum(counts)
    complete = sum(1 for c, x in zip(counts, crcs, strict=True) if c == changes and x == crc)
    span = (max(last) - since) if last else float("nan")
    return {"total": total, "complete": complete, "span": span, "rate": total / span if span > 0 else 0.0}


def measure_bare(streams: int, payloads: list[bytes], crc: int, procs: int, timeout: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    ready, started = ctx.Queue(), ctx.Queue()
    server = ctx.Process(target=bare_server, args=(streams, payloads, ready, started), daemon=True)
    server.start()
    target = f"127.0.0.1:{ready.get(timeout=60)}"
    opened, results = ctx.Queue(), ctx.Queue()
    gos = [ctx.Queue() for _ in range(procs)]
    progress = ctx.Array("q", procs, lock=False)
    shares = [streams // procs + (1 if k < streams % procs else 0) for k in range(procs)]
    workers = [
        ctx.Process(
            target=cache.stream_proc,
            args=(target, shares[k], len(payloads), opened, gos[k], results, progress, k),
            daemon=True,
        )
        for k in range(procs)
        if shares[k]
    ]
    try:
        assert server.pid is not None
        cpu0 = cpu_seconds(server.pid)
        for w in workers:
            w.start()
        since = started.get(timeout=120)
        for go in gos[: len(workers)]:
            go.put(since + timeout)
        collected = [results.get(timeout=timeout + 120) for _ in workers]
        server_cpu = cpu_seconds(server.pid) - cpu0
    finally:
        for w in workers:
            w.join(30)
        server.terminate()
        server.join(10)
    result = collect(collected, len(payloads), crc, since)
    result["cpu_us"] = server_cpu / max(result["total"], 1) * 1e6
    return result


async def real_events(target: str, changes: int) -> tuple[list[bytes], int]:
    """``changes`` JobEvents as the service sends them, of the stand-in's jobs (their ids' CRC)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.JobSchedulerStub(channel)
        page = await stub.ListJobs(pb.ListJobsRequest(page_size=1000), timeout=60)
    jobs = list(page.jobs)
    payloads, crc = [], 0
    for i in range(changes):
        job = jobs[i % len(jobs)]
        event = pb.JobEvent(type=pb.JOB_EVENT_TYPE_UPDATED, job=job, resume_token=f"0123abcd.{i + 1}")
        event.time.GetCurrentTime()
        payloads.append(event.SerializeToString())
        crc = zlib.crc32(job.job_id.encode(), crc)
    return payloads, crc


def fanout(args: argparse.Namespace, workdir: str) -> list[tuple[str, str, str, str]]:
    print(
        f"\n1. Fan-out: {args.streams} streams x {args.changes} changes, {args.stream_procs} client processes"
    )
    template_path = os.path.join(workdir, "template.json")
    with open(template_path, "w") as f:
        json.dump(cache.job_template(), f)
    jobs = max(10 * args.changes, 10_000)  # (a burst changes unfinished jobs; two bursts run)
    stand = cache.Standin(jobs, template_path, workdir)
    os.environ.update(NO_STREAM_LIMITS)  # (cache.Service's environment is this one's plus its own)
    service = cache.Service(stand.kubeconfig, args.changes, workdir, "fanout")
    try:
        service.wait_synced(jobs, timeout=300)
        payloads, _ = asyncio.run(real_events(service.target, args.changes))
        crc = 0
        for p in payloads:
            crc = zlib.crc32(pb.JobEvent.FromString(p).job.job_id.encode(), crc)
        print(f"   (a) bare grpc.aio, {len(payloads[0])} B messages ...", flush=True)
        bare = measure_bare(args.streams, payloads, crc, args.stream_procs, args.timeout)
        print(
            f"   (a) bare grpc.aio: {bare['complete']}/{args.streams} streams complete,"
            f" {bare['rate']:,.0f} messages/s, server CPU {bare['cpu_us']:.1f} us each"
        )
        print("   (b) the service ...", flush=True)
        watch = cache.measure_watch(
            service, stand, args.streams, args.changes, args.stream_procs, args.timeout, cache.Report()
        )
    finally:
        service.stop()
        stand.stop()
    ratio = watch["rate"] / bare["rate"] if bare["rate"] else float("nan")
    print(f"   => service / bare transport: {ratio:.0%} (aim >= 50%)")
    return [
        (
            f"WatchJobs fan-out {args.streams} x {args.changes}",
            ">= 50% of bare grpc.aio",
            f"{watch['rate']:,.0f} vs {bare['rate']:,.0f} msg/s = {ratio:.0%}"
            + ("" if watch["every"] else " (NOT every event delivered)"),
            "PASS" if ratio >= 0.5 and watch["every"] else "MISS",
        )
    ]


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
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
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
        for _ in range((n + cache.STREAMS_PER_CHANNEL - 1) // cache.STREAMS_PER_CHANNEL)
    ]
    counts = [0] * n
    codes: list[str] = []

    async def consume(i: int) -> None:
        watch = channels[i // cache.STREAMS_PER_CHANNEL].unary_stream(
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=1000, help="fan-out streams")
    parser.add_argument("--changes", type=int, default=1000, help="fan-out changes (messages per stream)")
    parser.add_argument("--stream-procs", type=int, default=2, help="client processes holding the streams")
    parser.add_argument("--seconds", type=float, default=5, help="latency measuring time per case and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (no streams, streams)")
    parser.add_argument("--jobs-per-second", type=float, default=5, help="jobs submitted during part 2")
    parser.add_argument(
        "--holder-nice", type=int, default=10, help="niceness of the processes holding part 2's streams"
    )
    parser.add_argument("--timeout", type=float, default=300, help="give up on a fan-out after this")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: fanout,unary")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as workdir:
        if "fanout" not in skip:
            rows += fanout(args, workdir)
        if "unary" not in skip:
            rows += unary(args, workdir)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nSummary (the machine's load average, 1/5/15 minutes: {load}):")
    for target, aim, measured, verdict in rows:
        print(f"  {verdict:4}  {target:<40} {aim:<26} {measured}")


if __name__ == "__main__":
    main()
