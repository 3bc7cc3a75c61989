"""ScheduleJob throughput vs. the raw kubernetes client's create rate, against one fast stand-in API.

Run by hand: ``.venv/bin/python bench/schedule.py [--seconds 5]``. Prints, for
concurrency 1 and 32: jobs/s, p50/p99 latency, server CPU per call (ScheduleJob)
or client CPU per call (raw client), and the ratio ScheduleJob / raw client.
The target is ScheduleJob >= 80% of the raw client's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import grpc

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _measure import cpu_seconds, run_for, serve_env, summarize  # noqa: E402

from jobscheduler._generated import jobscheduler_pb2 as pb  # noqa: E402
from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc  # noqa: E402
from jobscheduler.core.manifests import RenderContext  # noqa: E402
from jobscheduler.jobtypes import TimerHandler  # noqa: E402

REQUEST = pb.ScheduleJobRequest(
    name="bench",
    timer_job=pb.TimerJob(duration_seconds=300, timer_name="bench", control_plane_endpoint="http://cp:50053"),
)


def manifest(i: int) -> dict[str, Any]:
    handler = TimerHandler(default_image="timer:latest")
    params = handler.parse(
        {"duration_seconds": 300, "timer_name": "bench", "control_plane_endpoint": "http://cp:1"}
    )
    return handler.render(params, RenderContext(job_id=f"job-raw{i:08d}", name="bench", job_type="timer"))


def raw_client_sync(host: str, seconds: float) -> float:
    from kubernetes import client

    config = client.Configuration(host=host)
    api = client.BatchV1Api(client.ApiClient(config))
    bodies = [manifest(i) for i in range(20000)]
    latencies: list[float] = []
    cpu0 = time.process_time()
    started = time.perf_counter()
    deadline = started + seconds
    i = 0
    while time.perf_counter() < deadline and i < len(bodies):
        t = time.perf_counter()
        api.create_namespaced_job("default", bodies[i])
        latencies.append(time.perf_counter() - t)
        i += 1
    elapsed = time.perf_counter() - started
    return summarize("raw kubernetes client (sync)", latencies, elapsed, time.process_time() - cpu0, "client")


async def raw_client_aio(host: str, seconds: float, concurrency: int) -> float:
    from kubernetes.aio import client

    config = client.Configuration(host=host)
    config.connection_pool_maxsize = concurrency
    async with client.ApiClient(config) as api_client:
        api = client.BatchV1Api(api_client)
        counter = iter(range(10**9))

        async def call() -> None:
            await api.create_namespaced_job("default", manifest(next(counter)))

        cpu0 = time.process_time()
        latencies, elapsed = await run_for(seconds, concurrency, call)
        return summarize(
            f"raw kubernetes.aio client (c={concurrency})",
            latencies,
            elapsed,
            time.process_time() - cpu0,
            "client",
        )


async def schedule_job(port: int, server_pid: int, seconds: float, concurrency: int) -> float:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.JobSchedulerStub(channel)
        for _ in range(50):  # warm up
            await stub.ScheduleJob(REQUEST)

        async def call() -> None:
            await stub.ScheduleJob(REQUEST, timeout=30)

        cpu0 = cpu_seconds(server_pid)
        latencies, elapsed = await run_for(seconds, concurrency, call)
        return summarize(
            f"ScheduleJob over gRPC (c={concurrency})",
            latencies,
            elapsed,
            cpu_seconds(server_pid) - cpu0,
            "server",
        )


def start_serve(kubeconfig: str) -> tuple[subprocess.Popen[str], int]:
    # Ports are read from the "serving" log line (LOG_LEVEL info).
    env = serve_env(kubeconfig, 0, 0, LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "info"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobscheduler", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event.get("event") == "serving":
            # Keep draining stdout so logging never blocks the server.
            threading_drain(proc)
            return proc, int(event["grpc_port"])
    raise RuntimeError("jobscheduler serve did not start")


def threading_drain(proc: subprocess.Popen[str]) -> None:
    import threading

    def drain() -> None:
        assert proc.stdout is not None
        for _ in proc.stdout:
            pass

    threading.Thread(target=drain, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per case and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median rate counts")
    args = parser.parse_args()
    standin = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "standin.py")], stdout=subprocess.PIPE, text=True
    )
    assert standin.stdout is not None
    host = f"http://127.0.0.1:{int(standin.stdout.readline())}"
    with tempfile.NamedTemporaryFile("w", suffix=".kubeconfig", delete=False) as f:
        json.dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "s", "cluster": {"server": host}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "s", "context": {"cluster": "s", "user": "u"}}],
                "current-context": "s",
            },
            f,
        )
    serve, port = start_serve(f.name)
    try:
        print(
            f"stand-in API at {host}; {os.cpu_count()} CPUs; {args.rounds} alternating rounds"
            f" of {args.seconds:g} s per case; ratios of the median rates"
        )
        for concurrency in (1, 32):
            print(f"concurrency {concurrency}:")
            raws, scheds = [], []
            for _ in range(args.rounds):
                if concurrency == 1:
                    raws.append(raw_client_sync(host, args.seconds))
                else:
                    raws.append(asyncio.run(raw_client_aio(host, args.seconds, concurrency)))
                scheds.append(asyncio.run(schedule_job(port, serve.pid, args.seconds, concurrency)))
            raw, sched = statistics.median(raws), statistics.median(scheds)
            print(
                f"  median: raw client {raw:.0f} jobs/s, ScheduleJob {sched:.0f} jobs/s;"
                f" ratio {sched / raw:.2f}  (target >= 0.80)"
            )
    finally:
        serve.terminate()
        serve.wait(30)
        standin.terminate()
        standin.wait(10)
        os.unlink(f.name)


if __name__ == "__main__":
    main()
