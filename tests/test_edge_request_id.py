"""``x-request-id`` comes back on every answer, errors included (where a caller needs it most),
over real channels."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from conftest import ServiceThread, kubernetes_service
from emulator import EmulatorThread

from jobscheduler._generated import jobscheduler_pb2 as pb

T = 10
HEADER = "x-request-id"


def _timer(name: str = "rid", **timer: Any) -> pb.ScheduleJobRequest:
    params: dict[str, Any] = {
        "duration_seconds": 1,
        "timer_name": "t",
        "control_plane_endpoint": "http://127.0.0.1:9/",
    }
    params.update(timer)
    return pb.ScheduleJobRequest(name=name, timer_job=pb.TimerJob(**params))


def _failure(call: Callable[[list[tuple[str, str]]], Any], request_id: str) -> tuple[grpc.StatusCode, str]:
    """Make the call with ``x-request-id: request_id``; its error code and the echoed id."""
    with pytest.raises(grpc.RpcError) as err:
        call([(HEADER, request_id)])
    trailing = dict(err.value.trailing_metadata() or ())
    return err.value.code(), trailing.get(HEADER, "")


def test_errors_carry_the_request_id(service: ServiceThread, emulator: EmulatorThread) -> None:
    stub = service.stub
    unknown = pb.GetJobStatusRequest(job_id="job-doesnotexist")
    assert _failure(lambda md: stub.GetJobStatus(unknown, metadata=md, timeout=T), "nf-1") == (
        grpc.StatusCode.NOT_FOUND,
        "nf-1",
    )
    bad = _timer(duration_seconds=0)
    assert _failure(lambda md: stub.ScheduleJob(bad, metadata=md, timeout=T), "inv-1") == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "inv-1",
    )
    # A stream that ends in an error.
    watch = pb.WatchJobRequest(job_id="job-doesnotexist")
    assert _failure(lambda md: list(stub.WatchJob(watch, metadata=md, timeout=T)), "stream-1") == (
        grpc.StatusCode.NOT_FOUND,
        "stream-1",
    )
    # INTERNAL: an API server answer nobody expects.
    emulator.inject("POST", r"/jobs$", 418, "I'm a teapot", times=1)
    assert _failure(lambda md: stub.ScheduleJob(_timer(), metadata=md, timeout=T), "int-1") == (
        grpc.StatusCode.INTERNAL,
        "int-1",
    )
    # A request that is not even a protobuf message: INVALID_ARGUMENT, not INTERNAL, with the id.
    raw = service.channel.unary_unary("/jobscheduler.JobScheduler/GetJobStatus")
    assert _failure(lambda md: raw(b"\xff\xff\xff", metadata=md, timeout=T), "garbage-1") == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "garbage-1",
    )
    # Without an id of its own, the caller still gets the server's.
    with pytest.raises(grpc.RpcError) as err:
        stub.GetJobStatus(unknown, timeout=T)
    assert len(dict(err.value.trailing_metadata() or ()).get(HEADER, "")) == 16
    # And on success, as before.
    _, call = stub.ListJobs.with_call(pb.ListJobsRequest(), metadata=[(HEADER, "ok-1")], timeout=T)
    assert dict(call.trailing_metadata())[HEADER] == "ok-1"


@pytest.fixture
def token_service(kubeconfig: pathlib.Path, tmp_path: pathlib.Path) -> Iterator[ServiceThread]:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("good-token-0123456789,alice\n")
    svc = kubernetes_service(kubeconfig, auth_mode="token", auth_token_file=str(tokens))
    try:
        yield svc
    finally:
        svc.stop()


def test_unauthenticated_answers_carry_the_request_id(token_service: ServiceThread) -> None:
    stub = token_service.stub
    assert _failure(lambda md: stub.ListJobs(pb.ListJobsRequest(), metadata=md, timeout=T), "auth-1") == (
        grpc.StatusCode.UNAUTHENTICATED,
        "auth-1",
    )
    watch = pb.WatchJobsRequest()
    assert _failure(lambda md: list(stub.WatchJobs(watch, metadata=md, timeout=T)), "auth-2") == (
        grpc.StatusCode.UNAUTHENTICATED,
        "auth-2",
    )
