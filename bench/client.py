"""The Python client's overhead per call: ``Client.get`` vs a bare generated stub's GetJobStatus.

Run by hand (never by the test suite)::

    .venv/bin/python bench/client.py [--calls 250] [--rounds 20]

A ``jobscheduler serve`` (local backend, no rate limit, LOG_LEVEL=warn) runs as a subprocess on
127.0.0.1, holding one job. In the same run, alternating rounds of ``--calls`` sequential calls
(which side goes first alternates too)
(concurrency 1: the overhead is per call, not hidden by parallelism) measure:

1. blocking: ``Client.get(job_id)`` (deadline, token metadata, retry loop, the Job dataclass)
   against ``JobSchedulerStub.GetJobStatus`` on its own grpc channel with a deadline;
2. asyncio: ``AsyncClient.get`` against the grpc.aio stub;
3. in-process, no network: the client's conversion of the Job message to its dataclass.

Prints the medians over the rounds (us per call, wall clock; and the CPU time of this process,
grpc's threads included, which a loaded machine disturbs less) and the client/stub ratios.
Aim: the client within 10% of the bare stub (ratio <= 1.10).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

import grpc

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _measure import free_port  # noqa: E402

from jobscheduler._generated import jobscheduler_pb2 as pb  # noqa: E402
from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc  # noqa: E402
from jobscheduler.client import AsyncClient, Client, TimerJob, Unavailable  # noqa: E402
from jobscheduler.client import _convert as convert  # noqa: E402

AIM = 1.10


def start_server(data_dir: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "BACKEND": "local",
        "DATA_DIR": data_dir,
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(port),
        "HEALTH_PORT": str(free_port()),
        "RATE_LIMIT_RPS": "0",
        "LOG_LEVEL": "warn",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobscheduler", "serve"], env=env, stdout=subprocess.DEVNULL, cwd=ROOT
    )
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    with Client(target, retries=0, timeout=1) as client:
        while True:
            try:
                list(client.list_page(page_size=1).jobs)
                return proc, target
            except Unavailable:
                if time.monotonic() > deadline or proc.poll() is not None:
                    proc.kill()
                    raise SystemExit("the server did not start") from None
                time.sleep(0.1)


Sample = tuple[float, float]  # (wall, CPU of this process) microseconds per call


def per_call(calls: int, call: Callable[[], object]) -> Sample:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        call()
    return (time.perf_counter() - wall) / calls * 1e6, (time.process_time() - cpu) / calls * 1e6


async def per_call_async(calls: int, call: Callable[[], Awaitable[object]]) -> Sample:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - wall) / calls * 1e6, (time.process_time() - cpu) / calls * 1e6


def line(label: str, client: list[Sample], stub: list[Sample]) -> float:
    """One result line; returns the wall-clock ratio (the aim)."""
    cw, sw = statistics.median(w for w, _ in client), statistics.median(w for w, _ in stub)
    cc, sc = statistics.median(c for _, c in client), statistics.median(c for _, c in stub)
    ratio = cw / sw
    print(
        f"  {label:<9} client {cw:6.0f} us/call  stub {sw:6.0f} us/call  ratio {ratio:5.3f}"
        f" {'PASS' if ratio <= AIM else 'MISS'}   client-process CPU {cc:5.0f} vs {sc:5.0f} us/call"
        f" (ratio {cc / sc:5.3f})"
    )
    return ratio


def bench_sync(target: str, job_id: str, calls: int, rounds: int) -> float:
    request = pb.GetJobStatusRequest(job_id=job_id)
    samples: tuple[list[Sample], list[Sample]] = ([], [])
    with Client(target) as client, grpc.insecure_channel(target) as channel:
        stub = pb_grpc.JobSchedulerStub(channel)
        calls_of = (lambda: client.get(job_id), lambda: stub.GetJobStatus(request, timeout=10))
        for call in calls_of:  # warm-up: connections, caches
            per_call(200, call)
        for i in range(rounds):  # (which goes first alternates: load drifts on a shared machine)
            for which in (0, 1) if i % 2 else (1, 0):
                samples[which].append(per_call(calls, calls_of[which]))
    return line("blocking", *samples)


async def bench_async(target: str, job_id: str, calls: int, rounds: int) -> float:
    request = pb.GetJobStatusRequest(job_id=job_id)
    samples: tuple[list[Sample], list[Sample]] = ([], [])
    async with AsyncClient(target) as client, grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.JobSchedulerStub(channel)
        calls_of = (lambda: client.get(job_id), lambda: stub.GetJobStatus(request, timeout=10))
        for call in calls_of:
            await per_call_async(200, call)
        for i in range(rounds):
            for which in (0, 1) if i % 2 else (1, 0):
                samples[which].append(await per_call_async(calls, calls_of[which]))
    return line("asyncio", *samples)


def bench_convert(target: str, job_id: str, calls: int) -> None:
    with grpc.insecure_channel(target) as channel:
        message = pb_grpc.JobSchedulerStub(channel).GetJobStatus(
            pb.GetJobStatusRequest(job_id=job_id), timeout=10
        )
    us, _ = per_call(calls * 10, lambda: convert.job(message.job))
    print(f"  {'convert':<9} Job message -> dataclass {us:5.1f} us/call (in-process, part of the client's)")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        proc, target = start_server(data_dir)
        try:
            with Client(target) as client:
                job = client.schedule("bench", TimerJob(1, "b", "http://127.0.0.1:9/"), delay_seconds=3600)
            print(f"GetJobStatus of one job, {args.calls} sequential calls x {args.rounds} rounds (medians):")
            ratios = [bench_sync(target, job.job_id, args.calls, args.rounds)]
            ratios.append(asyncio.run(bench_async(target, job.job_id, args.calls, args.rounds)))
            bench_convert(target, job.job_id, args.calls)
        finally:
            proc.terminate()
            proc.wait(20)
    print(f"aim: client/stub <= {AIM:.2f}: {'PASS' if max(ratios) <= AIM else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
