"""Measuring helpers the benchmarks share."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import socket
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_for(
    seconds: float, concurrency: int, call: Callable[[], Awaitable[None]], *, min_calls: int = 0
) -> tuple[list[float], float]:
    """``concurrency`` callers repeat ``call`` for ``seconds`` (and at least ``min_calls`` times
    in all); returns each call's latency and the elapsed time."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline or len(latencies) < min_calls:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_env(kubeconfig: str, grpc_port: int, health_port: int, **extra: str) -> dict[str, str]:
    """The environment of a ``jobscheduler serve`` under measurement: on the stand-in, on
    127.0.0.1, without the per-caller and write limits (they would measure themselves)."""
    return {
        **os.environ,
        "BACKEND": "kubernetes",
        "IN_CLUSTER": "false",
        "KUBECONFIG": kubeconfig,
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(grpc_port),
        "HEALTH_HOST": "127.0.0.1",
        "HEALTH_PORT": str(health_port),
        "RATE_LIMIT_RPS": "0",
        "KUBE_API_QPS": "0",
        "LOG_LEVEL": "warn",  # info would log every RPC
        **extra,
    }


def summarize(
    label: str, latencies: list[float], elapsed: float, cpu: float, cpu_owner: str, *, width: int = 34
) -> float:
    """Print one line (rate, p50, p99, CPU per call) and return the rate."""
    n = len(latencies)
    rate = n / elapsed
    lat = sorted(latencies)
    p50 = statistics.median(lat) * 1000
    p99 = lat[min(n - 1, int(n * 0.99))] * 1000
    print(
        f"  {label:<{width}} {rate:8.0f} jobs/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms"
        f"   {cpu_owner} CPU {cpu / n * 1000:5.2f} ms/call   (n={n})"
    )
    return rate


def write_kubeconfig(path: str, server: str) -> None:
    """A kubeconfig for the stand-in at ``server`` (any token: it checks none)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "s", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "s", "context": {"cluster": "s", "user": "u"}}],
        "current-context": "s",
    }
    with open(path, "w") as f:
        json.dump(config, f)


def stop_process(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
