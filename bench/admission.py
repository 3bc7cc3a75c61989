"""Admission queues: ScheduleJob into a full queue against the raw kubernetes client's create
rate, and the admission loop's drain rate against the raw client's unsuspend-PATCH rate, on the
same stand-in API, in the same run.

Run by hand: ``.venv/bin/python bench/admission.py [--jobs 10000] [--seconds 3] [--rounds 3]
[--concurrency 32] [--patch-jobs 3000] [--timeout 600] [--profile FILE]``. Prints numbers; asserts nothing.

One stand-in API (``bench/standin.py --keep``: posted Jobs are listed and announced on
watches, merge PATCH with the resourceVersion precondition, 409 Conflict) and
``python -m jobscheduler serve`` with LEADER_ELECTION=false (the admission loop runs without
a Lease; the stand-in has no coordination.k8s.io), KUBE_API_QPS=0 and RATE_LIMIT_RPS=0.

1. The raw create rate: the official ``kubernetes.aio`` client creating Jobs (c=32), as
   bench/schedule.py measures it; the Jobs are the service's own rendering of a held job
   (suspended, queue label and admission annotations), so both sides create the same object.
2. ScheduleJob with queue and priority into queue ``full`` (max_running 1, taken by one
   running Job made up front), so that every job is created held and answered QUEUED.
   Alternating rounds with (1); medians and the ratio.
3. The baseline for admission: the raw client resuming ``--patch-jobs`` held Jobs (created
   first, in a queue the service does not know) with one merge PATCH each, as the loop writes
   it (``spec.suspend: false``, the admitted-at annotation, the resourceVersion precondition),
   MAX_IN_FLIGHT (32) at a time, as the loop does; measured before the drain and again after
   it (the machine's load drifts), the drain's ratio is to their mean.
   Admission: ScheduleJob puts ``--jobs`` jobs (priorities LOW..CRITICAL in turn) into queue
   ``bench`` (max_running 1, also taken); the service is stopped and started again with
   ``bench=1000000``: it lists the cluster, rebuilds its queues and admits them all (one
   compare-and-swap PATCH each, counted by the stand-in when ``spec.suspend`` turns false).
   Prints the time to serving and to the first admission, admissions/s (first to last, and
   from the start), the ratios to the raw PATCH rate (aim >= 1) and to the raw create rate,
   the server's and the stand-in's CPU per admission, and how long the service's own view
   (ListQueues) takes to show them all running.
   ``--profile FILE`` runs that service under cProfile (slower) and prints where its time went.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import pathlib
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

import grpc

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _measure import (  # noqa: E402
    cpu_seconds,
    free_port,
    run_for,
    serve_env,
    stop_process,
    summarize,
    write_kubeconfig,
)

from jobscheduler._generated import jobscheduler_pb2 as pb  # noqa: E402
from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc  # noqa: E402
from jobscheduler.core import manifests as m  # noqa: E402
from jobscheduler.core.admission import MAX_IN_FLIGHT  # noqa: E402
from jobscheduler.core.manifests import RenderContext  # noqa: E402
from jobscheduler.core.model import JobPhase  # noqa: E402
from jobscheduler.jobtypes import TimerHandler  # noqa: E402

FULL, BENCH = "full", "bench"
RAW = "rawpatch"  # the raw client's held Jobs (a queue the service is not told about)
PRIORITIES = (pb.JOB_PRIORITY_LOW, pb.JOB_PRIORITY_NORMAL, pb.JOB_PRIORITY_HIGH, pb.JOB_PRIORITY_CRITICAL)
TIMER = pb.TimerJob(duration_seconds=300, timer_name="bench", control_plane_endpoint="http://cp:50053")
HANDLER = TimerHandler(default_image="timer:latest")
PARAMS = HANDLER.parse(
    {"duration_seconds": 300, "timer_name": "bench", "control_plane_endpoint": "http://cp:1"}
)


def job_manifest(job_id: str, queue: str, *, held: bool, priority: str = "NORMAL") -> dict[str, Any]:
    """A timer Job in ``queue`` as ScheduleJob renders it: held (suspended, QUEUED) or admitted."""
    job = HANDLER.render(PARAMS, RenderContext(job_id=job_id, name="bench", job_type="timer"))
    now = m.format_precise_time(datetime.now(UTC))
    job["metadata"]["labels"][m.QUEUE_LABEL] = queue
    annotations = job["metadata"]["annotations"]
    annotations[m.QUEUE_ANNOTATION] = queue
    annotations[m.PRIORITY_ANNOTATION] = priority
    annotations[m.ENQUEUED_AT_ANNOTATION] = now
    if held:
        annotations[m.ADMISSION_ANNOTATION] = m.ADMISSION_STATES_BY_PHASE[JobPhase.QUEUED]
        job["spec"]["suspend"] = True
    else:
        annotations[m.ADMITTED_AT_ANNOTATION] = now
    return job


def http(url: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


class Standin:
    """bench/standin.py --keep in a subprocess, with a kubeconfig pointing at it."""

    def __init__(self, workdir: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "standin.py"), "--keep"], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"
        self.kubeconfig = os.path.join(workdir, "standin.kubeconfig")
        write_kubeconfig(self.kubeconfig, self.url)

    def stats(self) -> dict[str, Any]:
        code, body = http(f"{self.url}/bench/stats")
        if code != 200:
            raise RuntimeError(f"stand-in stats: HTTP {code}")
        result: dict[str, Any] = json.loads(body)
        return result

    def reset(self) -> None:
        http(f"{self.url}/bench/stats/reset", "POST")

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Service:
    """``python -m jobscheduler serve`` against the stand-in (optionally under cProfile)."""

    def __init__(self, kubeconfig: str, queues: str, workdir: str, label: str, profile: str = "") -> None:
        self.grpc_port, self.health_port = free_port(), free_port()
        env = serve_env(
            kubeconfig,
            self.grpc_port,
            self.health_port,
            QUEUES=queues,
            LEADER_ELECTION="false",  # the loop runs at once, no Lease (the stand-in has none)
        )
        self.log_path = os.path.join(workdir, f"serve-{label}.log")
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        command = [sys.executable, "-m", "jobscheduler", "serve"]
        if profile:
            command[1:1] = ["-m", "cProfile", "-o", profile]
        self.started = time.perf_counter()
        self.started_mono = time.monotonic()  # the stand-in's clock for admissions
        self.proc = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.pid = self.proc.pid
        self.target = f"127.0.0.1:{self.grpc_port}"

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"jobscheduler serve exited ({self.proc.returncode}): {self.tail()}")
        return http(f"http://127.0.0.1:{self.health_port}/readyz")[0] == 200

    def wait_ready(self, timeout: float = 120) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.ready():
                return time.perf_counter() - self.started
            time.sleep(0.05)
        raise RuntimeError(f"jobscheduler serve not ready in {timeout:g} s: {self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        return pathlib.Path(self.log_path).read_text()[-2000:]

    def count(self, text: str) -> int:
        """Log lines that contain ``text``."""
        self.log.flush()
        return sum(text in line for line in pathlib.Path(self.log_path).read_text().splitlines())

    def stop(self) -> None:
        stop_process(self.proc, 60)
        self.log.close()


async def queues(target: str) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(target) as channel:
        answer = await pb_grpc.JobSchedulerStub(channel).ListQueues(pb.ListQueuesRequest(), timeout=30)
    return {q.name: q for q in answer.queues}


def wait_queue(target: str, name: str, *, running: int, queued: int, timeout: float) -> float | None:
    """Seconds until ListQueues shows ``name`` with these counts (None: not within ``timeout``)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        q = asyncio.run(queues(target)).get(name)
        if q is not None and q.running == running and q.queued == queued:
            return time.perf_counter() - started
        time.sleep(0.1)
    return None


IDS = itertools.count()


async def raw_create(host: str, seconds: float, concurrency: int, standin: Standin) -> float:
    """The official aio client creating held Jobs in ``full`` for ``seconds``."""
    from kubernetes.aio import client

    config = client.Configuration(host=host)
    config.connection_pool_maxsize = concurrency
    async with client.ApiClient(config) as api_client:
        api = client.BatchV1Api(api_client)

        async def call() -> None:
            body = job_manifest(f"job-raw{next(IDS):08d}", FULL, held=True, priority="HIGH")
            await api.create_namespaced_job("default", body)

        for _ in range(50):  # warm up
            await call()
        cpu0, standin0 = time.process_time(), standin.cpu()
        latencies, elapsed = await run_for(seconds, concurrency, call)
        standin_cpu = standin.cpu() - standin0
        rate = summarize(
            f"raw kubernetes.aio create (c={concurrency})",
            latencies,
            elapsed,
            time.process_time() - cpu0,
            "client",
            width=44,
        )
    print(f"    (stand-in CPU {standin_cpu / len(latencies) * 1000:5.2f} ms/call)")
    return rate


async def raw_unsuspend(host: str, count: int, concurrency: int, standin: Standin) -> float:
    """The official aio client resuming ``count`` held Jobs (created first, not measured), each
    with one merge PATCH as the admission loop writes it (``spec.suspend: false``, the
    admitted-at annotation, and the resourceVersion it was created with as the precondition),
    ``concurrency`` at a time (the loop's MAX_IN_FLIGHT)."""
    from kubernetes.aio import client

    config = client.Configuration(host=host)
    config.connection_pool_maxsize = concurrency
    async with client.ApiClient(config) as api_client:
        api = client.BatchV1Api(api_client)
        held: list[tuple[str, str]] = []
        names = iter(range(count))

        async def create() -> None:
            for _ in names:
                body = job_manifest(f"job-rawp{next(IDS):08d}", RAW, held=True)
                job = await api.create_namespaced_job("default", body)
                held.append((job.metadata.name, job.metadata.resource_version))

        await asyncio.gather(*(create() for _ in range(concurrency)))
        todo = iter(held)
        latencies: list[float] = []

        async def unsuspend() -> None:
            for name, version in todo:
                at = m.format_precise_time(datetime.now(UTC))
                body = {
                    "metadata": {"resourceVersion": version, "annotations": {m.ADMITTED_AT_ANNOTATION: at}},
                    "spec": {"suspend": False},
                }
                started = time.perf_counter()
                await api.patch_namespaced_job(
                    name, "default", body, _content_type="application/merge-patch+json"
                )
                latencies.append(time.perf_counter() - started)

        resumed0 = standin.stats()["admitted"]
        cpu0, standin0 = time.process_time(), standin.cpu()
        started = time.perf_counter()
        await asyncio.gather(*(unsuspend() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        standin_cpu = standin.cpu() - standin0
        rate = summarize(
            f"raw kubernetes.aio unsuspend PATCH (c={concurrency})",
            latencies,
            elapsed,
            time.process_time() - cpu0,
            "client",
            width=44,
        )
    admitted = standin.stats()["admitted"] - resumed0
    print(
        f"    (stand-in CPU {standin_cpu / len(latencies) * 1000:5.2f} ms/call;"
        f" {admitted} of {count} resumed, as the stand-in counts them)"
    )
    return rate


async def schedule_jobs(
    service: Service,
    standin: Standin,
    concurrency: int,
    *,
    queue: str,
    seconds: float = 0,
    count: int = 0,
    label: str = "",
) -> tuple[float, int]:
    """ScheduleJob into ``queue`` for ``seconds`` (or exactly ``count`` jobs); (jobs/s, answers
    that were not QUEUED)."""
    not_queued = 0
    priorities = itertools.cycle(PRIORITIES)
    async with grpc.aio.insecure_channel(service.target) as channel:
        stub = pb_grpc.JobSchedulerStub(channel)

        async def call() -> None:
            nonlocal not_queued
            request = pb.ScheduleJobRequest(
                name="bench", timer_job=TIMER, queue=queue, priority=next(priorities)
            )
            answer = await stub.ScheduleJob(request, timeout=30)
            if answer.job.phase != pb.JOB_PHASE_QUEUED:
                not_queued += 1

        if count:
            latencies: list[float] = []
            todo = iter(range(count))

            async def worker() -> None:
                for _ in todo:
                    t = time.perf_counter()
                    await call()
                    latencies.append(time.perf_counter() - t)

            cpu0, standin0 = cpu_seconds(service.pid), standin.cpu()
            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
        else:
            for _ in range(50):  # warm up
                await call()
            cpu0, standin0 = cpu_seconds(service.pid), standin.cpu()
            latencies, elapsed = await run_for(seconds, concurrency, call)
        cpu, standin_cpu = cpu_seconds(service.pid) - cpu0, standin.cpu() - standin0
        rate = summarize(
            label or f"ScheduleJob queue+priority (c={concurrency})",
            latencies,
            elapsed,
            cpu,
            "server",
            width=44,
        )
    print(f"    (stand-in CPU {standin_cpu / len(latencies) * 1000:5.2f} ms/call; not QUEUED: {not_queued})")
    return rate, not_queued


def measure_admission(
    args: argparse.Namespace,
    standin: Standin,
    workdir: str,
    raw_rate: float,
    patch_rate: float,
    total_jobs: int,
) -> float:
    """The drain rate (admissions/s, first to last; 0 if nothing was admitted)."""
    n = args.jobs
    rate = 0.0
    standin.reset()
    print(
        f"\n3. admission: restart with QUEUES={FULL}=1,{BENCH}=1000000; {n} held jobs in {BENCH!r},"
        f" {total_jobs} Jobs in the stand-in"
        + (f"  [under cProfile -> {args.profile}: slower]" if args.profile else "")
    )
    service = Service(standin.kubeconfig, f"{FULL}=1,{BENCH}=1000000", workdir, "admit", args.profile)
    standin_cpu0 = standin.cpu()
    serving_at: float | None = None
    first: tuple[float, int, float, float] | None = None  # (when, admitted, server cpu, stand-in cpu)
    stats: dict[str, Any] = {}
    deadline = service.started + args.timeout
    try:
        while time.perf_counter() < deadline:
            if serving_at is None and service.ready():
                serving_at = time.perf_counter() - service.started
            stats = standin.stats()
            if first is None and stats["admitted"]:
                first = (time.perf_counter(), stats["admitted"], cpu_seconds(service.pid), standin.cpu())
            if stats["admitted"] >= n:
                break
            if service.proc.poll() is not None:
                raise RuntimeError(f"jobscheduler serve exited ({service.proc.returncode}): {service.tail()}")
            time.sleep(0.02)
        done = time.perf_counter()
        server_cpu, standin_cpu = cpu_seconds(service.pid), standin.cpu()
        admitted = stats.get("admitted", 0)
        if admitted < n:
            print(f"  GAVE UP after {args.timeout:g} s: {admitted} of {n} admitted")
        print(f"  serving (readyz 200) after {serving_at or float('nan'):.2f} s")
        if not admitted or first is None:
            print(f"  nothing admitted; serve log: {service.tail()}")
            return rate
        # The stand-in's own clock (time.monotonic, as here) for the first and last admission.
        span = stats["last_admitted_at"] - stats["first_admitted_at"]
        since_start = done - service.started
        first_after = stats["first_admitted_at"] - service.started_mono
        rate = (admitted - 1) / span if span > 0 else float("nan")
        print(f"  first admission {first_after:.2f} s after the start (list, rebuild, catch-up)")
        print(
            f"  {admitted} admitted in {span:.2f} s (first to last): {rate:.0f} admissions/s;"
            f" ratio to the raw unsuspend-PATCH rate ({patch_rate:.0f}/s) {rate / patch_rate:.2f} (aim >= 1),"
            f" to the raw create rate ({raw_rate:.0f} jobs/s) {rate / raw_rate:.2f}"
        )
        print(
            f"  from the start to the last admission {since_start:.2f} s:"
            f" {admitted / since_start:.0f} admissions/s, ratio {admitted / since_start / patch_rate:.2f}"
            f" to the raw PATCH rate, {admitted / since_start / raw_rate:.2f} to the raw create rate"
        )
        steady = admitted - first[1]
        if steady > 0:
            print(
                f"  server CPU {(server_cpu - first[2]) / steady * 1000:.2f} ms/admission"
                f" (after the first admission; {server_cpu:.2f} s in all, {server_cpu / admitted * 1000:.2f}"
                f" ms/admission with startup and rebuild);"
                f" stand-in CPU {(standin_cpu - first[3]) / steady * 1000:.2f} ms/admission"
                f" ({(standin_cpu - standin_cpu0) / since_start:.0%} of a core over the run)"
            )
        print(
            f"  stand-in: {stats['patches']} PATCHes, {stats['conflicts']} 409 Conflicts,"
            f" {stats['gets']} GETs, {stats['posts']} POSTs;"
            f" 'admission write failed' in the serve log: {service.count('admission write failed')}"
        )
        caught_up = wait_queue(service.target, BENCH, running=n + 1, queued=0, timeout=60)
        print(
            "  ListQueues shows them all running "
            + (f"{caught_up:.2f} s after the last admission" if caught_up is not None else "NOT within 60 s")
        )
    finally:
        service.stop()
    if args.profile:
        print(f"\n  cProfile of the admitting service ({args.profile}), top 30 by own time:")
        stats_ = pstats.Stats(args.profile)
        stats_.sort_stats("tottime").print_stats(30)
        stats_.sort_stats("cumulative").print_stats(40)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="held jobs to admit")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per case and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median rate counts")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--patch-jobs", type=int, default=3000, help="held Jobs the raw client resumes (PATCH baseline)"
    )
    parser.add_argument("--timeout", type=float, default=600, help="give up admitting after this long")
    parser.add_argument("--profile", default="", help="run the admitting service under cProfile, to FILE")
    args = parser.parse_args()
    c = args.concurrency
    with tempfile.TemporaryDirectory() as workdir:
        standin = Standin(workdir)
        service: Service | None = None
        try:
            service = Service(standin.kubeconfig, f"{FULL}=1,{BENCH}=1", workdir, "submit")
            service.wait_ready()
            asyncio.run(prefill(standin.url))
            if wait_queue(service.target, BENCH, running=1, queued=0, timeout=30) is None:
                raise RuntimeError("the service does not see the running jobs that fill the queues")
            print(
                f"stand-in API at {standin.url}; {os.cpu_count()} CPUs; {args.rounds} alternating rounds"
                f" of {args.seconds:g} s per case; ratios of the median rates; LEADER_ELECTION=false"
            )
            print(f"1./2. create rate, concurrency {c} (queue {FULL!r} is full: every job is held):")
            raws, scheds = [], []
            for _ in range(args.rounds):
                raws.append(asyncio.run(raw_create(standin.url, args.seconds, c, standin)))
                scheds.append(
                    asyncio.run(schedule_jobs(service, standin, c, queue=FULL, seconds=args.seconds))[0]
                )
            raw, sched = statistics.median(raws), statistics.median(scheds)
            print(
                f"  median: raw client {raw:.0f} jobs/s, ScheduleJob {sched:.0f} jobs/s;"
                f" ratio {sched / raw:.2f}"
            )
            print(f"\n   filling queue {BENCH!r} (max_running 1, full) with {args.jobs} jobs:")
            asyncio.run(
                schedule_jobs(
                    service,
                    standin,
                    c,
                    queue=BENCH,
                    count=args.jobs,
                    label=f"ScheduleJob x{args.jobs} (c={c})",
                )
            )
            if wait_queue(service.target, BENCH, running=1, queued=args.jobs, timeout=60) is None:
                print("  WARNING: ListQueues does not show them all queued")
            service.stop()
            service = None
            print(f"\n   the raw client resuming {args.patch_jobs} held Jobs (baseline for 3.):")
            patch = asyncio.run(raw_unsuspend(standin.url, args.patch_jobs, MAX_IN_FLIGHT, standin))
            total = standin.stats()["jobs"]
            drain = measure_admission(args, standin, workdir, raw, patch, total)
            print(f"\n   the raw client resuming {args.patch_jobs} held Jobs again (after 3.):")
            again = asyncio.run(raw_unsuspend(standin.url, args.patch_jobs, MAX_IN_FLIGHT, standin))
            mean = (patch + again) / 2
            print(
                f"  drain {drain:.0f} admissions/s vs. the raw unsuspend PATCH before and after it"
                f" ({patch:.0f}/s, {again:.0f}/s; mean {mean:.0f}/s): ratio {drain / mean:.2f} (aim >= 1)"
            )
        finally:
            if service is not None:
                service.stop()
            standin.stop()


async def prefill(host: str) -> None:
    """One running (admitted, unfinished) Job in each limited queue: both are full."""
    from kubernetes.aio import client

    async with client.ApiClient(client.Configuration(host=host)) as api_client:
        api = client.BatchV1Api(api_client)
        for queue in (FULL, BENCH):
            await api.create_namespaced_job("default", job_manifest(f"job-run{queue}", queue, held=False))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
