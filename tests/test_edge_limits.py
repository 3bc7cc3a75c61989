"""Limits at the gRPC edge, over real channels: open streams per caller and in all."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from conftest import ServiceThread, kubernetes_service

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc

T = 10
ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789"


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def timer_request(name: str) -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(
        name=name,
        timer_job=pb.TimerJob(
            duration_seconds=600, timer_name="t", control_plane_endpoint="http://127.0.0.1:9/"
        ),
    )


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    code: grpc.StatusCode = err.value.code()
    return code


@pytest.fixture
def capped(kubeconfig: pathlib.Path, tmp_path: pathlib.Path) -> Iterator[ServiceThread]:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text(f"{ALICE},alice\n{BOB},bob\n")
    svc = kubernetes_service(
        kubeconfig,
        auth_mode="token",
        auth_token_file=str(tokens),
        max_streams_per_caller=3,
        max_streams=5,
    )
    try:
        yield svc
    finally:
        svc.stop()


def open_watch(stub: pb_grpc.JobSchedulerStub, job_id: str, token: str) -> Any:
    """A WatchJob stream that the server has accepted (its first event, the job's state, arrived)."""
    call = stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=auth(token), timeout=60)
    assert next(call).job.job_id == job_id
    return call


def open_watch_when_free(stub: pb_grpc.JobSchedulerStub, job_id: str, token: str) -> Any:
    """open_watch, once a slot is free again (the server sees a stream end a moment later)."""
    deadline = time.monotonic() + T
    while True:
        try:
            return open_watch(stub, job_id, token)
        except grpc.RpcError as exc:
            assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, exc
            assert time.monotonic() < deadline, "the slot of an ended stream was never released"
            time.sleep(0.05)


def test_open_streams_are_capped_per_caller_and_in_all(capped: ServiceThread) -> None:
    stub = capped.stub
    alices = stub.ScheduleJob(timer_request("a"), metadata=auth(ALICE), timeout=T).job_id
    bobs = stub.ScheduleJob(timer_request("b"), metadata=auth(BOB), timeout=T).job_id
    mine = [open_watch(stub, alices, ALICE) for _ in range(3)]

    # The caller's fourth stream, of any kind, is refused; unary calls and short log reads are not.
    for extra in (
        lambda: list(stub.WatchJob(pb.WatchJobRequest(job_id=alices), metadata=auth(ALICE), timeout=T)),
        lambda: list(stub.WatchJobs(pb.WatchJobsRequest(), metadata=auth(ALICE), timeout=T)),
        lambda: list(
            stub.GetJobLogs(pb.GetJobLogsRequest(job_id=alices, follow=True), metadata=auth(ALICE), timeout=T)
        ),
    ):
        assert code_of(extra) is grpc.StatusCode.RESOURCE_EXHAUSTED
    stub.GetJobStatus(pb.GetJobStatusRequest(job_id=alices), metadata=auth(ALICE), timeout=T)
    assert code_of(
        lambda: list(stub.GetJobLogs(pb.GetJobLogsRequest(job_id=alices), metadata=auth(ALICE), timeout=T))
    ) is (grpc.StatusCode.FAILED_PRECONDITION)  # no pod yet: the answer about the job, not the cap

    # Another caller has its own budget, up to the server's total (5).
    theirs = [open_watch(stub, bobs, BOB) for _ in range(2)]
    assert code_of(lambda: open_watch(stub, bobs, BOB)) is grpc.StatusCode.RESOURCE_EXHAUSTED

    # A cancelled stream gives its slot back.
    mine.pop().cancel()
    mine.append(open_watch_when_free(stub, alices, ALICE))
    # So does a client that goes away without cancelling (its channel closed).
    mine.pop().cancel()
    channel = grpc.insecure_channel(f"127.0.0.1:{capped.port}")
    open_watch_when_free(pb_grpc.JobSchedulerStub(channel), alices, ALICE)
    channel.close()
    mine.append(open_watch_when_free(stub, alices, ALICE))
    # And a stream that ends in an error: one slot free, used again and again.
    mine.pop().cancel()
    open_watch_when_free(stub, alices, ALICE).cancel()
    missing = pb.WatchJobRequest(job_id="job-doesnotexist")
    for _ in range(5):
        assert code_of(lambda: list(stub.WatchJob(missing, metadata=auth(ALICE), timeout=T))) is (
            grpc.StatusCode.NOT_FOUND
        )
    for call in mine + theirs:
        call.cancel()
