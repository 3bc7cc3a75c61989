"""Measuring helpers the benchmarks share."""

from __future__ import annotations

import asyncio
import os
import pathlib
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
