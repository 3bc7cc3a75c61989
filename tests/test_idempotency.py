"""request_id across replicas: two `jobscheduler serve` processes on one (emulated) API server."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from conftest import ServeProcess, serve_env
from emulator import EmulatorThread

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc

T = 15


@pytest.fixture
def replicas(kubeconfig: pathlib.Path, tmp_path: pathlib.Path) -> Iterator[list[ServeProcess]]:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("alice-token,alice\nbob-token,bob\n")
    env = serve_env(
        kubeconfig, GRPC_PORT="0", HEALTH_PORT="0", AUTH_MODE="token", AUTH_TOKEN_FILE=str(tokens)
    )
    procs = [ServeProcess(env), ServeProcess(env)]
    try:
        yield procs
    finally:
        for proc in procs:
            assert proc.stop() == 0


def request(request_id: str, duration: int = 60) -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(
        name="idem",
        request_id=request_id,
        timer_job=pb.TimerJob(
            duration_seconds=duration, timer_name="t", control_plane_endpoint="http://127.0.0.1:9/"
        ),
    )


def test_concurrent_identical_submits_on_two_replicas_create_one_job(
    replicas: list[ServeProcess], emulator: EmulatorThread
) -> None:
    channels = [grpc.insecure_channel(f"127.0.0.1:{p.grpc_port}") for p in replicas]
    stubs = [pb_grpc.JobSchedulerStub(c) for c in channels]
    alice = [("authorization", "Bearer alice-token")]
    try:

        def submit(i: int) -> str:
            response = stubs[i % 2].ScheduleJob(request("release-7"), metadata=alice, timeout=T)
            return str(response.job_id)

        with ThreadPoolExecutor(max_workers=50) as pool:
            ids = list(pool.map(submit, range(50)))
        assert len(set(ids)) == 1
        assert [j["metadata"]["name"] for j in emulator.jobs()] == [ids[0]]
        # The same request_id from another caller is that caller's own job.
        bobs = stubs[1].ScheduleJob(
            request("release-7"), metadata=[("authorization", "Bearer bob-token")], timeout=T
        )
        assert bobs.job_id != ids[0] and bobs.job.owner == "bob"
        # A different body under alice's id is refused on either replica.
        for stub in stubs:
            with pytest.raises(grpc.RpcError) as err:
                stub.ScheduleJob(request("release-7", duration=5), metadata=alice, timeout=T)
            assert err.value.code() is grpc.StatusCode.ALREADY_EXISTS
        assert len(emulator.jobs()) == 2
    finally:
        for channel in channels:
            channel.close()


def test_retries_are_created_once_by_two_replicas_and_survive_a_restart(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    from conftest import kubernetes_service
    from test_contract import Harness, fail_job, retries_of, wait_for_retries

    replicas = [kubernetes_service(kubeconfig), kubernetes_service(kubeconfig)]
    try:
        req = request("r", duration=60)
        req.request_id = ""
        req.max_retries = 2
        req.retry_backoff_seconds = 1
        job = replicas[0].stub.ScheduleJob(req, timeout=T).job
        h = Harness("kubernetes", replicas[0], receiver=None, emulator=emulator)  # type: ignore[arg-type]
        fail_job(h, job.job_id)
        retry = wait_for_retries(h, job.job_id, 1)[0]
        time.sleep(1.5)  # both replicas had their chance
        assert len(emulator.jobs()) == 2
    finally:
        for svc in replicas:
            svc.stop()
    # The retry fails while no replica runs: the next retry is owed, and the restarted
    # service works it out from the cluster alone.
    fail_job(h, retry.job_id)
    third = kubernetes_service(kubeconfig)
    try:
        h3 = Harness("kubernetes", third, receiver=None, emulator=emulator)  # type: ignore[arg-type]
        chain = wait_for_retries(h3, job.job_id, 2)
        assert [r.retry_number for r in chain] == [1, 2]
        assert len(emulator.jobs()) == 3
        assert retries_of(h3, job.job_id)[-1].retry_of == job.job_id
    finally:
        third.stop()


def test_a_scheduled_start_survives_a_restart(emulator: EmulatorThread, kubeconfig: pathlib.Path) -> None:
    from conftest import kubernetes_service

    first = kubernetes_service(kubeconfig)
    try:
        req = request("", duration=60)
        req.delay_seconds = 2
        job_id = first.stub.ScheduleJob(req, timeout=T).job_id
    finally:
        first.stop()
    time.sleep(2.5)  # the start time passes while no replica runs
    assert emulator.job(job_id)["spec"]["suspend"] is True
    second = kubernetes_service(kubeconfig)
    try:
        deadline = time.monotonic() + 10
        while emulator.job(job_id)["spec"].get("suspend"):
            assert time.monotonic() < deadline, "the restarted service never started the job"
            time.sleep(0.1)
        job = second.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=T).job
        assert job.phase == pb.JOB_PHASE_PENDING
    finally:
        second.stop()
