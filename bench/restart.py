"""Restart at scale: how long a new ``jobscheduler serve`` takes to be ready with N Jobs in the
namespace, against the raw kubernetes client paging the same list on the same stand-in API,
in the same run.

Run by hand: ``.venv/bin/python bench/restart.py [--jobs 100000] [--rounds 2] [--profile FILE]``.
Prints numbers; asserts nothing.

One stand-in API (``bench/standin.py``) preloaded with ``--jobs`` realistic Jobs (the
service's own rendering of a timer job, varied as bench/cache.py describes). Alternating
rounds of:

1. the baseline: the official ``kubernetes.aio`` client paging the same label-selected list
   with the same page size as the service's informer (``list_namespaced_job``, which builds
   the client's models; also, for reference, the same pages read as raw JSON with
   ``list_namespaced_job_without_preload_content`` and ``json.loads``);
2. ``python -m jobscheduler serve`` from process start to ready: ``/readyz`` on the ops port
   answers 200 AND a GetJobStatus of the last listed job is answered (from the cache: the
   service reads the index once it has synced), then its RSS (VmRSS, and the peak VmHWM).

Prints each, the medians and the ratio (aim: ready within 1.5x the raw client's paging).
``--profile FILE`` runs the last service under cProfile (slower) and prints where the time went.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pathlib
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any
from unittest import mock

import grpc

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cache import Service, Standin, job_template, proc_kb  # noqa: E402

from jobscheduler._generated import jobscheduler_pb2 as pb  # noqa: E402
from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc  # noqa: E402
from jobscheduler.backends.kubernetes._informer import LIST_PAGE  # noqa: E402
from jobscheduler.core.manifests import MANAGED_SELECTOR  # noqa: E402


async def raw_paging(host: str, *, models: bool) -> tuple[float, int, str]:
    """Seconds for the official aio client to page through the Jobs; (seconds, items, last id)."""
    from kubernetes.aio import client

    async with client.ApiClient(client.Configuration(host=host)) as api_client:
        api = client.BatchV1Api(api_client)
        started = time.perf_counter()
        token, count, last = "", 0, ""
        while True:
            kwargs = {"label_selector": MANAGED_SELECTOR, "limit": LIST_PAGE}
            if token:
                kwargs["_continue"] = token
            if models:
                page = await api.list_namespaced_job("default", **kwargs)
                count += len(page.items)
                last = page.items[-1].metadata.name if page.items else last
                token = page.metadata._continue or ""
            else:
                response = await api.list_namespaced_job_without_preload_content("default", **kwargs)
                data = json.loads(await response.read())
                items = data.get("items") or []
                count += len(items)
                last = items[-1]["metadata"]["name"] if items else last
                token = (data.get("metadata") or {}).get("continue") or ""
            if not token:
                return time.perf_counter() - started, count, last


async def get_status(target: str, job_id: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        await pb_grpc.JobSchedulerStub(channel).GetJobStatus(
            pb.GetJobStatusRequest(job_id=job_id), timeout=30
        )


def start_to_ready(service: Service, job_id: str, timeout: float) -> tuple[float, float]:
    """(seconds to /readyz 200, seconds to the GetJobStatus answer after it), both from the start."""
    deadline = service.started + timeout
    while time.perf_counter() < deadline:
        if service.proc.poll() is not None:
            raise RuntimeError(f"jobscheduler serve exited ({service.proc.returncode}): {service.tail()}")
        if service.http("/readyz")[0] == 200:
            ready = time.perf_counter() - service.started
            asyncio.run(get_status(service.target, job_id))
            return ready, time.perf_counter() - service.started
        time.sleep(0.01)
    raise RuntimeError(f"jobscheduler serve not ready in {timeout:g} s: {service.tail()}")


def profiled(kubeconfig: str, workdir: str, profile: str) -> Service:
    """cache.Service, but under cProfile (its stop() ends it with SIGTERM: the profile is written)."""
    real_popen = subprocess.Popen

    def popen(command: list[str], **kwargs: Any) -> Any:
        return real_popen([command[0], "-m", "cProfile", "-o", profile, *command[1:]], **kwargs)

    with mock.patch.object(subprocess, "Popen", popen):
        return Service(kubeconfig, 0, workdir, "profiled")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="Jobs in the namespace")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; medians count")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--profile", default="", help="run one more service under cProfile, to FILE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        template_path = os.path.join(workdir, "template.json")
        with open(template_path, "w") as f:
            json.dump(job_template(), f)
        print(f"preloading the stand-in with {args.jobs} Jobs ...", flush=True)
        standin = Standin(args.jobs, template_path, workdir)
        try:
            print(
                f"stand-in API at {standin.url}; {os.cpu_count()} CPUs; page size {LIST_PAGE};"
                f" selector {MANAGED_SELECTOR}; {args.rounds} alternating rounds"
            )
            raws, bytes_, readies, answers = [], [], [], []
            for r in range(args.rounds):
                seconds, count, last = asyncio.run(raw_paging(standin.url, models=True))
                raws.append(seconds)
                print(
                    f"  round {r + 1}: raw kubernetes.aio list_namespaced_job, {count} items:"
                    f" {seconds:6.2f} s"
                )
                seconds, count, _ = asyncio.run(raw_paging(standin.url, models=False))
                bytes_.append(seconds)
                print(
                    f"           the same as raw JSON (without_preload_content, json.loads): {seconds:6.2f} s"
                )
                service = Service(standin.kubeconfig, 0, workdir, f"round{r}")
                try:
                    ready, answered = start_to_ready(service, last, args.timeout)
                    rss, hwm = proc_kb(service.pid, "VmRSS"), proc_kb(service.pid, "VmHWM")
                finally:
                    service.stop()
                readies.append(ready)
                answers.append(answered)
                print(
                    f"           jobscheduler serve: /readyz 200 after {ready:6.2f} s, GetJobStatus"
                    f" answered at {answered:6.2f} s; RSS {rss / 1024:.0f} MiB (peak {hwm / 1024:.0f} MiB),"
                    f" {rss * 1024 / max(1, count):,.0f} B per job"
                )
            raw, raw_json, answered = (statistics.median(x) for x in (raws, bytes_, answers))
            print(
                f"\nmedians: raw client paging {raw:.2f} s (raw JSON {raw_json:.2f} s);"
                f" serve start to ready and answering {answered:.2f} s"
            )
            print(
                f"ratio serve/raw client: {answered / raw:.2f} (aim <= 1.5);"
                f" against the raw-JSON paging: {answered / raw_json:.2f}"
            )
            if args.profile:
                service = profiled(standin.kubeconfig, workdir, args.profile)
                try:
                    ready, answered = start_to_ready(service, last, args.timeout)
                    print(f"\nunder cProfile: ready and answering after {answered:.2f} s")
                finally:
                    service.stop()
                stats = pstats.Stats(args.profile)
                stats.sort_stats("tottime").print_stats(25)
                stats.sort_stats("cumulative").print_stats(40)
        finally:
            standin.stop()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
