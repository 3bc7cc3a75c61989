"""WatchJobs fan-out against the bare transport, and unary calls while streams are open.

Run by hand (never by the test suite)::

    .venv/bin/python bench/streams.py [--streams 1000] [--changes 1000] [--stream-procs 2]
        [--seconds 2] [--rounds 8] [--jobs-per-second 5] [--timeout 300] [--skip fanout,unary]

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
   alternating rounds of ``--seconds`` each, latencies pooled (many short rounds: on the shared
   VM a p99 with no stream at all drifts between 2 and 8 ms within minutes, and 3 rounds of
   5 s left the ratio to that drift). The streams
   are held by ``--stream-procs`` other processes that count the messages without decoding them,
   at ``--holder-nice`` (10): they stand in for clients on other machines, and are not to take
   the server's cores (reading 1,000 streams' messages in Python costs more than sending them).
   Aims: <= 3x.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import pathlib
import sys
import tempfile
import time
import zlib
from typing import Any

import grpc

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import cache  # noqa: E402
from _measure import cpu_seconds  # noqa: E402
from _streams_unary import NO_STREAM_LIMITS, unary  # noqa: E402

from jobscheduler._generated import jobscheduler_pb2 as pb  # noqa: E402
from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=1000, help="fan-out streams")
    parser.add_argument("--changes", type=int, default=1000, help="fan-out changes (messages per stream)")
    parser.add_argument("--stream-procs", type=int, default=2, help="client processes holding the streams")
    parser.add_argument("--seconds", type=float, default=2, help="latency measuring time per case and round")
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds (no streams, streams)")
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
