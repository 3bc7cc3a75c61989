"""The admission loop across replicas and restarts: `jobscheduler serve` processes on one
(emulated) API server, a coordination.k8s.io Lease deciding which one admits.

Whatever happens to the processes (kill -9 of the leader mid-admission, a restart with a
full queue), the Jobs' history in the API server must show each job admitted exactly once,
the queue's max_running never exceeded, and priority order kept.
"""

from __future__ import annotations

import pathlib
import signal
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from conftest import FAST_LEASE, ServeProcess, serve_env
from emulator import EmulatorThread
from test_admission import admissions, finish_on, most_running_at_once

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc

T = 15
LEASE = "/apis/coordination.k8s.io/v1/namespaces/default/leases/jobscheduler"


def env(kubeconfig: pathlib.Path, pod: str, queues: str) -> dict[str, str]:
    return serve_env(
        kubeconfig,
        QUEUES=queues,
        POD_NAME=pod,
        KUBE_API_QPS="0",
        RATE_LIMIT_RPS="0",
    )


class Replica:
    def __init__(self, kubeconfig: pathlib.Path, pod: str, queues: str) -> None:
        self.pod = pod
        self.proc = ServeProcess(env(kubeconfig, pod, queues))
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.proc.grpc_port}")
        self.stub = pb_grpc.JobSchedulerStub(self.channel)

    def close(self, sig: int = signal.SIGTERM) -> None:
        self.channel.close()
        self.proc.stop(sig)


@pytest.fixture
def started() -> Iterator[list[Replica]]:
    replicas: list[Replica] = []
    try:
        yield replicas
    finally:
        for replica in replicas:
            if replica.proc.proc.poll() is None:
                replica.close()


def holder(emulator: EmulatorThread) -> str:
    try:
        lease: dict[str, Any] = emulator.request("GET", LEASE)
    except Exception:
        return ""
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def wait_for_holder(emulator: EmulatorThread, pods: set[str], timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while (who := holder(emulator)) not in pods:
        assert time.monotonic() < deadline, f"no leader among {pods} (lease held by {who!r})"
        time.sleep(0.1)
    return who


def timer(priority: int = 0) -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(
        name="queued",
        queue="batch",
        priority=priority,  # type: ignore[arg-type]
        timer_job=pb.TimerJob(
            duration_seconds=600, timer_name="t", control_plane_endpoint="http://127.0.0.1:9/"
        ),
    )


def metrics(replica: Replica) -> str:
    url = f"http://127.0.0.1:{replica.proc.health_port}/metrics"
    with urllib.request.urlopen(url, timeout=T) as response:
        return str(response.read().decode())


def admitted_unfinished(emulator: EmulatorThread) -> list[str]:
    out = []
    for job in emulator.jobs():
        annotations = job["metadata"].get("annotations") or {}
        done = any(c.get("status") == "True" for c in (job.get("status") or {}).get("conditions") or [])
        if "jobscheduler.io/admitted-at" in annotations and not done:
            out.append(job["metadata"]["name"])
    return out


def test_killing_the_leader_mid_admission_hands_admission_over_without_double_admission(
    emulator: EmulatorThread, kubeconfig: pathlib.Path, started: list[Replica]
) -> None:
    started.append(Replica(kubeconfig, "replica-a", "batch=2"))
    started.append(Replica(kubeconfig, "replica-b", "batch=2"))
    by_pod = {r.pod: r for r in started}
    ids = [started[i % 2].stub.ScheduleJob(timer(), timeout=T).job_id for i in range(16)]
    leader = by_pod[wait_for_holder(emulator, set(by_pod))]
    follower = next(r for r in started if r is not leader)

    deadline = time.monotonic() + 30
    while len(admitted_unfinished(emulator)) < 2:
        assert time.monotonic() < deadline, "the leader admitted nothing"
        time.sleep(0.05)
    # End the two running jobs and kill the leader while it admits their successors.
    for name in admitted_unfinished(emulator):
        finish_on(emulator, name)
    time.sleep(0.02)
    leader.close(signal.SIGKILL)
    killed_at = time.monotonic()
    assert wait_for_holder(emulator, {follower.pod}, timeout=15) == follower.pod
    took_over = time.monotonic() - killed_at

    deadline = time.monotonic() + 90
    while True:
        states = {j["metadata"]["name"]: j for j in emulator.jobs()}
        done = [
            n
            for n in ids
            if any(c.get("type") == "Complete" for c in states[n].get("status", {}).get("conditions", []))
        ]
        if len(done) == len(ids):
            break
        assert time.monotonic() < deadline, f"{len(done)} of {len(ids)} jobs ran"
        for name in admitted_unfinished(emulator):
            finish_on(emulator, name)
        time.sleep(0.1)
    # lease duration + retry period, with slack for slow machines
    assert took_over < FAST_LEASE["lease_duration_seconds"] + FAST_LEASE["lease_retry_period_seconds"] + 3
    counts = admissions(emulator)
    assert set(counts) == set(ids) and set(counts.values()) == {1}
    assert most_running_at_once(emulator, "batch") <= 2
    # The survivor serves every job's final state from its cache.
    statuses = [follower.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=j), timeout=T).job for j in ids]
    assert {s.phase for s in statuses} == {pb.JOB_PHASE_SUCCEEDED}
    assert "jobscheduler_leader 1.0" in metrics(follower)


def test_a_restarted_service_resumes_a_full_queue_in_the_same_order(
    emulator: EmulatorThread, kubeconfig: pathlib.Path, started: list[Replica]
) -> None:
    started.append(Replica(kubeconfig, "first-run", "batch=1"))
    stub = started[0].stub
    first = stub.ScheduleJob(timer(), timeout=T).job_id
    deadline = time.monotonic() + 15
    while admitted_unfinished(emulator) != [first]:
        assert time.monotonic() < deadline, "the first job was not admitted"
        time.sleep(0.05)
    priorities = [pb.JOB_PRIORITY_LOW, pb.JOB_PRIORITY_HIGH, pb.JOB_PRIORITY_NORMAL, pb.JOB_PRIORITY_HIGH]
    queued = [stub.ScheduleJob(timer(p), timeout=T).job for p in priorities]
    assert {j.phase for j in queued} == {pb.JOB_PHASE_QUEUED}
    text = metrics(started[0])
    assert 'jobscheduler_queue_depth{priority="HIGH",queue="batch"} 2.0' in text
    assert 'jobscheduler_queue_depth{priority="CRITICAL",queue="batch"} 0.0' in text
    assert 'jobscheduler_queue_running{queue="batch"} 1.0' in text
    assert "jobscheduler_leader 1.0" in text
    assert 'jobscheduler_admissions_total{queue="batch"} 1.0' in text
    started[0].close(signal.SIGKILL)

    # A new process (another identity: it takes the Lease once the dead one's expires).
    started.append(Replica(kubeconfig, "second-run", "batch=1"))
    order = [first]
    deadline = time.monotonic() + 60
    while len(order) < 5:
        assert time.monotonic() < deadline, f"admitted so far: {order}"
        running = admitted_unfinished(emulator)
        if not running:
            time.sleep(0.05)
            continue
        assert len(running) == 1
        if running[0] != order[-1]:
            order.append(running[0])
        finish_on(emulator, running[0])
        time.sleep(0.05)
    expected = [first, queued[1].job_id, queued[3].job_id, queued[2].job_id, queued[0].job_id]
    assert order == expected
    assert set(admissions(emulator).values()) == {1}


def test_a_replica_stopped_cleanly_hands_admission_over_at_once(
    emulator: EmulatorThread, kubeconfig: pathlib.Path, started: list[Replica]
) -> None:
    started.append(Replica(kubeconfig, "old", "batch=1"))
    assert wait_for_holder(emulator, {"old"}) == "old"
    started.append(Replica(kubeconfig, "new", "batch=1"))
    started[0].close()  # SIGTERM: the Lease is released on the way out
    assert holder(emulator) != "old"  # released (not left to expire), perhaps already taken
    assert wait_for_holder(emulator, {"new"}, timeout=5) == "new"
    job = started[1].stub.ScheduleJob(timer(), timeout=T).job_id
    deadline = time.monotonic() + 10
    while admitted_unfinished(emulator) != [job]:
        assert time.monotonic() < deadline, "the new leader does not admit"
        time.sleep(0.05)
