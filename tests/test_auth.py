"""Authentication (AUTH_MODE token and kubernetes), owner-scoped access and the limits against abuse,
over real gRPC channels; TokenReview against the API emulator."""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from conftest import ServeProcess, ServiceThread, kubernetes_service, local_service, serve_env
from emulator import TOKENREVIEWS_PATH, EmulatorThread
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from jobscheduler._generated import jobscheduler_pb2 as pb

T = 10  # seconds: deadline of every RPC

ALICE, BOB, ADMIN = "alice-token-0123456789", "bob-token-0123456789", "admin-token-0123456789"
TOKEN_FILE = f"""# token,identity,"roles"
{ALICE},alice
{BOB},bob,""
{ADMIN},ops,"admin,viewer"
"""


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def timer_request(name: str = "job", **timer: Any) -> pb.ScheduleJobRequest:
    params = {"duration_seconds": 1, "timer_name": "t", "control_plane_endpoint": "http://127.0.0.1:9/"}
    params.update(timer)
    return pb.ScheduleJobRequest(name=name, timer_job=pb.TimerJob(**params))


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    code: grpc.StatusCode = err.value.code()
    return code


@pytest.fixture
def token_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "tokens.csv"
    path.write_text(TOKEN_FILE)
    return path


@pytest.fixture
def k8s_token(kubeconfig: pathlib.Path, token_file: pathlib.Path) -> Iterator[ServiceThread]:
    svc = kubernetes_service(kubeconfig, auth_mode="token", auth_token_file=str(token_file))
    try:
        yield svc
    finally:
        svc.stop()


# --- token mode ----------------------------------------------------------------------------------


def test_token_mode_requires_a_valid_bearer_token(k8s_token: ServiceThread) -> None:
    stub = k8s_token.stub
    for metadata in ([], auth("wrong"), [("authorization", "Basic " + ALICE)], [("authorization", "Bearer")]):
        with pytest.raises(grpc.RpcError) as err:
            stub.ListJobs(pb.ListJobsRequest(), metadata=metadata, timeout=T)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED, metadata
        assert ALICE not in (err.value.details() or "")
    # Streams too, and nothing was created by a refused ScheduleJob.
    assert code_of(lambda: list(stub.WatchJob(pb.WatchJobRequest(job_id="job-x"), timeout=T))) is (
        grpc.StatusCode.UNAUTHENTICATED
    )
    assert code_of(lambda: stub.ScheduleJob(timer_request(), timeout=T)) is grpc.StatusCode.UNAUTHENTICATED
    assert stub.ListJobs(pb.ListJobsRequest(), metadata=auth(ADMIN), timeout=T).jobs == []
    # The scheme is case-insensitive (RFC 7235).
    stub.ListJobs(pb.ListJobsRequest(), metadata=[("authorization", f"bearer {ALICE}")], timeout=T)


def test_health_and_reflection_need_no_token(k8s_token: ServiceThread) -> None:
    health = health_pb2_grpc.HealthStub(k8s_token.channel)
    answer = health.Check(health_pb2.HealthCheckRequest(service="jobscheduler.JobScheduler"), timeout=T)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(k8s_token.channel)
    responses = list(
        reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=T
        )
    )
    names = {s.name for s in responses[0].list_services_response.service}
    assert "jobscheduler.JobScheduler" in names


def test_token_file_is_reloaded_when_it_changes(k8s_token: ServiceThread, token_file: pathlib.Path) -> None:
    stub = k8s_token.stub
    newcomer = "carol-token-0123456789"
    assert code_of(lambda: stub.ListJobs(pb.ListJobsRequest(), metadata=auth(newcomer), timeout=T)) is (
        grpc.StatusCode.UNAUTHENTICATED
    )
    # Replace the file as a Secret update does (a new file renamed over the old one); bob is removed.
    replacement = token_file.with_suffix(".new")
    replacement.write_text(f"{ALICE},alice\n{newcomer},carol\n")
    os.replace(replacement, token_file)
    deadline = time.monotonic() + 10
    while True:
        try:
            stub.ListJobs(pb.ListJobsRequest(), metadata=auth(newcomer), timeout=T)
            break
        except grpc.RpcError as exc:
            assert exc.code() is grpc.StatusCode.UNAUTHENTICATED
            assert time.monotonic() < deadline, "the new token was never accepted"
            time.sleep(0.2)
    assert code_of(lambda: stub.ListJobs(pb.ListJobsRequest(), metadata=auth(BOB), timeout=T)) is (
        grpc.StatusCode.UNAUTHENTICATED
    )
    # A malformed replacement is refused as a whole: the tokens in force stay.
    replacement.write_text("just-a-token-without-identity\n")
    os.replace(replacement, token_file)
    time.sleep(1.5)
    stub.ListJobs(pb.ListJobsRequest(), metadata=auth(newcomer), timeout=T)


def test_the_token_never_appears_in_logs(tmp_path: pathlib.Path, kubeconfig: pathlib.Path) -> None:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text(TOKEN_FILE)
    env = serve_env(
        kubeconfig,
        AUTH_MODE="token",
        AUTH_TOKEN_FILE=str(tokens),
        LOG_LEVEL="debug",
        GRPC_PORT="0",
        HEALTH_PORT="0",
    )
    proc = ServeProcess(env)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{proc.grpc_port}") as channel:
            from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc

            stub = pb_grpc.JobSchedulerStub(channel)
            job = stub.ScheduleJob(timer_request("logged"), metadata=auth(ALICE), timeout=T)
            stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job.job_id), metadata=auth(ALICE), timeout=T)
            unknown = "never-issued-token-987654321"
            assert code_of(
                lambda: stub.ListJobs(pb.ListJobsRequest(), metadata=auth(unknown), timeout=T)
            ) is (grpc.StatusCode.UNAUTHENTICATED)
    finally:
        assert proc.stop() == 0
    out = repr(proc.lines) + (proc.proc.stderr.read() if proc.proc.stderr else "")
    rpc_lines = [line for line in proc.lines if line.get("event") == "rpc"]
    assert any(line.get("caller") == "alice" for line in rpc_lines), rpc_lines
    for secret in (ALICE, BOB, ADMIN, unknown):
        assert secret not in out


def test_token_mode_without_a_usable_file_does_not_start(
    tmp_path: pathlib.Path, kubeconfig: pathlib.Path
) -> None:
    for extra in ({}, {"AUTH_TOKEN_FILE": str(tmp_path / "missing.csv")}):
        env = serve_env(kubeconfig, AUTH_MODE="token", GRPC_PORT="0", HEALTH_PORT="0", **extra)
        proc = ServeProcess(env, wait=False)
        assert proc.proc.wait(20) == 2
        err = proc.proc.stderr.read() if proc.proc.stderr else ""
        assert "AUTH_TOKEN_FILE" in err, err


def test_auth_none_only_on_loopback(kubeconfig: pathlib.Path) -> None:
    env = serve_env(kubeconfig, GRPC_HOST="0.0.0.0", GRPC_PORT="0", HEALTH_PORT="0", AUTH_MODE="none")
    proc = ServeProcess(env, wait=False)
    assert proc.proc.wait(20) == 2
    err = proc.proc.stderr.read() if proc.proc.stderr else ""
    assert "ALLOW_INSECURE" in err, err


# --- owner-scoped access ---------------------------------------------------------------------------


def test_owners_see_only_their_own_jobs_through_every_rpc(k8s_token: ServiceThread) -> None:
    stub = k8s_token.stub
    mine = stub.ScheduleJob(timer_request("alices"), metadata=auth(ALICE), timeout=T).job
    theirs = stub.ScheduleJob(timer_request("bobs"), metadata=auth(BOB), timeout=T).job
    assert (mine.owner, theirs.owner) == ("alice", "bob")
    job_id = mine.job_id

    # Bob: alice's job does not exist for him, whatever he calls.
    as_bob = auth(BOB)
    assert code_of(
        lambda: stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), metadata=as_bob, timeout=T)
    ) is (grpc.StatusCode.NOT_FOUND)
    assert code_of(
        lambda: stub.CancelJob(pb.CancelJobRequest(job_id=job_id), metadata=as_bob, timeout=T)
    ) is (grpc.StatusCode.NOT_FOUND)
    assert (
        code_of(lambda: list(stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=as_bob, timeout=T)))
        is grpc.StatusCode.NOT_FOUND
    )
    assert (
        code_of(
            lambda: list(stub.GetJobLogs(pb.GetJobLogsRequest(job_id=job_id), metadata=as_bob, timeout=T))
        )
        is grpc.StatusCode.NOT_FOUND
    )
    listed = stub.ListJobs(pb.ListJobsRequest(), metadata=as_bob, timeout=T).jobs
    assert [j.job_id for j in listed] == [theirs.job_id]
    with pytest.raises(grpc.RpcError) as err:
        stub.ListJobs(pb.ListJobsRequest(filter=pb.JobFilter(owner="alice")), metadata=as_bob, timeout=T)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    # Filtering by one's own name is fine.
    own = stub.ListJobs(pb.ListJobsRequest(filter=pb.JobFilter(owner="bob")), metadata=as_bob, timeout=T).jobs
    assert [j.job_id for j in own] == [theirs.job_id]

    # Alice herself: the logs answer is about the job (no pod yet), not NOT_FOUND.
    as_alice = auth(ALICE)
    assert (
        stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), metadata=as_alice, timeout=T).job.owner
        == "alice"
    )
    assert (
        code_of(
            lambda: list(stub.GetJobLogs(pb.GetJobLogsRequest(job_id=job_id), metadata=as_alice, timeout=T))
        )
        is grpc.StatusCode.FAILED_PRECONDITION
    )
    watched = stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=as_alice, timeout=T)
    assert next(watched).job.job_id == job_id
    watched.cancel()

    # The admin sees everyone's jobs and can filter by owner; and can cancel alice's job.
    as_admin = auth(ADMIN)
    everyone = stub.ListJobs(pb.ListJobsRequest(), metadata=as_admin, timeout=T).jobs
    assert {j.job_id for j in everyone} == {job_id, theirs.job_id}
    alices = stub.ListJobs(
        pb.ListJobsRequest(filter=pb.JobFilter(owner="alice")), metadata=as_admin, timeout=T
    )
    assert [j.job_id for j in alices.jobs] == [job_id]
    cancelled = stub.CancelJob(pb.CancelJobRequest(job_id=job_id), metadata=as_admin, timeout=T).job
    assert cancelled.phase == pb.JOB_PHASE_CANCELLED


def test_watch_jobs_streams_only_the_callers_jobs(k8s_token: ServiceThread) -> None:
    stub = k8s_token.stub
    bobs_stream = stub.WatchJobs(pb.WatchJobsRequest(), metadata=auth(BOB), timeout=T)
    admin_stream = stub.WatchJobs(pb.WatchJobsRequest(), metadata=auth(ADMIN), timeout=T)
    time.sleep(0.3)  # both streams subscribed
    alices = stub.ScheduleJob(timer_request("a"), metadata=auth(ALICE), timeout=T).job_id
    bobs = stub.ScheduleJob(timer_request("b"), metadata=auth(BOB), timeout=T).job_id
    assert next(bobs_stream).job.job_id == bobs  # alice's job, created first, was not sent to bob
    seen = [next(admin_stream).job.job_id, next(admin_stream).job.job_id]
    assert seen == [alices, bobs]
    bobs_stream.cancel()
    admin_stream.cancel()
    with pytest.raises(grpc.RpcError) as err:
        list(
            stub.WatchJobs(
                pb.WatchJobsRequest(filter=pb.JobFilter(owner="alice")), metadata=auth(BOB), timeout=T
            )
        )
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_owner_survives_a_restart(
    emulator: EmulatorThread, kubeconfig: pathlib.Path, token_file: pathlib.Path
) -> None:
    first = kubernetes_service(kubeconfig, auth_mode="token", auth_token_file=str(token_file))
    try:
        job_id = first.stub.ScheduleJob(timer_request("kept"), metadata=auth(ALICE), timeout=T).job_id
    finally:
        first.stop()
    assert emulator.job(job_id)["metadata"]["annotations"]["jobscheduler.io/owner"] == "alice"
    second = kubernetes_service(kubeconfig, auth_mode="token", auth_token_file=str(token_file))
    try:
        stub = second.stub
        assert stub.GetJobStatus(
            pb.GetJobStatusRequest(job_id=job_id), metadata=auth(ALICE), timeout=T
        ).job.owner == ("alice")
        assert (
            code_of(
                lambda: stub.GetJobStatus(
                    pb.GetJobStatusRequest(job_id=job_id), metadata=auth(BOB), timeout=T
                )
            )
            is grpc.StatusCode.NOT_FOUND
        )
    finally:
        second.stop()


def test_local_backend_keeps_owners(tmp_path: pathlib.Path, token_file: pathlib.Path) -> None:
    settings: dict[str, Any] = {"auth_mode": "token", "auth_token_file": str(token_file)}
    first = local_service(tmp_path / "data", **settings)
    try:
        job_id = first.stub.ScheduleJob(timer_request("local"), metadata=auth(BOB), timeout=T).job_id
    finally:
        first.stop()
    second = local_service(tmp_path / "data", **settings)
    try:
        assert (
            code_of(
                lambda: second.stub.GetJobStatus(
                    pb.GetJobStatusRequest(job_id=job_id), metadata=auth(ALICE), timeout=T
                )
            )
            is grpc.StatusCode.NOT_FOUND
        )
        job = second.stub.GetJobStatus(
            pb.GetJobStatusRequest(job_id=job_id), metadata=auth(BOB), timeout=T
        ).job
        assert job.owner == "bob"
    finally:
        second.stop()


# --- kubernetes mode (TokenReview) -----------------------------------------------------------------

SA = "system:serviceaccount:team-a:builder"


@pytest.fixture
def k8s_review(emulator: EmulatorThread, kubeconfig: pathlib.Path) -> Iterator[ServiceThread]:
    emulator.add_token("sa-token", SA, groups=("system:serviceaccounts", "system:serviceaccounts:team-a"))
    emulator.add_token("ops-token", "system:serviceaccount:ops:admin", groups=("system:serviceaccounts:ops",))
    emulator.add_token("wrong-audience", SA, audiences=("https://kubernetes.default.svc",))
    svc = kubernetes_service(
        kubeconfig,
        auth_mode="kubernetes",
        auth_audience="jobscheduler",
        auth_admins="system:serviceaccounts:ops",
    )
    try:
        yield svc
    finally:
        svc.stop()


def test_kubernetes_mode_verifies_tokens_with_a_token_review(
    emulator: EmulatorThread, k8s_review: ServiceThread
) -> None:
    stub = k8s_review.stub
    job = stub.ScheduleJob(timer_request("sa"), metadata=auth("sa-token"), timeout=T).job
    assert job.owner == SA
    for token in ("wrong-audience", "never-issued"):
        with pytest.raises(grpc.RpcError) as err:
            stub.ListJobs(pb.ListJobsRequest(), metadata=auth(token), timeout=T)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED, token
    assert "audience" in code_details(
        lambda: stub.ListJobs(pb.ListJobsRequest(), metadata=auth("wrong-audience"), timeout=T)
    )
    assert code_of(lambda: stub.ListJobs(pb.ListJobsRequest(), timeout=T)) is grpc.StatusCode.UNAUTHENTICATED
    # The ops group is admin: it sees the team's job; the team sees only its own.
    assert [
        j.job_id for j in stub.ListJobs(pb.ListJobsRequest(), metadata=auth("ops-token"), timeout=T).jobs
    ] == [job.job_id]
    # Reviews are cached: repeated calls with a verified token ask the API server once.
    emulator.trim_log()
    for _ in range(5):
        stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job.job_id), metadata=auth("sa-token"), timeout=T)
    assert [r for r in emulator.requests() if r[1].startswith(TOKENREVIEWS_PATH)] == []


def code_details(call: Callable[[], Any]) -> str:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.details() or ""


def test_kubernetes_mode_unavailable_when_the_api_server_fails(
    emulator: EmulatorThread, k8s_review: ServiceThread
) -> None:
    emulator.inject("POST", TOKENREVIEWS_PATH, 503, "etcd is down", reason="ServiceUnavailable")
    with pytest.raises(grpc.RpcError) as err:
        k8s_review.stub.ListJobs(pb.ListJobsRequest(), metadata=auth("sa-token"), timeout=T)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    emulator.clear_faults()
    k8s_review.stub.ListJobs(pb.ListJobsRequest(), metadata=auth("sa-token"), timeout=T)


def reviews(emulator: EmulatorThread) -> int:
    return len([r for r in emulator.requests() if r[1].startswith(TOKENREVIEWS_PATH)])


def test_refused_tokens_are_cached_and_concurrent_reviews_of_one_token_are_shared(
    emulator: EmulatorThread, k8s_review: ServiceThread
) -> None:
    stub = k8s_review.stub
    emulator.trim_log()
    for _ in range(5):  # a refused token is refused again for a while without asking
        assert code_of(
            lambda: stub.ListJobs(pb.ListJobsRequest(), metadata=auth("garbage-1"), timeout=T)
        ) is (grpc.StatusCode.UNAUTHENTICATED)
    assert reviews(emulator) == 1
    # Slow answers: 10 calls with a new good token and 10 with a new bad one, all at once,
    # while the first review of each is still under way.
    emulator.add_token("fresh-token", SA)
    emulator.delay("POST", TOKENREVIEWS_PATH, 0.5)
    emulator.trim_log()
    good = [
        stub.ListJobs.future(pb.ListJobsRequest(), metadata=auth("fresh-token"), timeout=T) for _ in range(10)
    ]
    bad = [
        stub.ListJobs.future(pb.ListJobsRequest(), metadata=auth("garbage-2"), timeout=T) for _ in range(10)
    ]
    for call in good:
        call.result()
    for call in bad:
        assert call.exception() is not None and call.code() is grpc.StatusCode.UNAUTHENTICATED
    assert reviews(emulator) == 2


def test_failed_authentications_are_limited_per_peer_before_any_review(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    emulator.add_token("sa-token", SA)
    svc = kubernetes_service(kubeconfig, auth_mode="kubernetes", auth_failure_rps=0.001, auth_failure_burst=3)
    try:
        stub = svc.stub
        stub.ListJobs(pb.ListJobsRequest(), metadata=auth("sa-token"), timeout=T)
        emulator.trim_log()
        for i in range(3):
            with pytest.raises(grpc.RpcError) as err:
                stub.ListJobs(pb.ListJobsRequest(), metadata=auth(f"garbage-{i}"), timeout=T)
            assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert reviews(emulator) == 3
        # The peer's budget of failures is spent: refused before its credentials are looked at,
        # with a retry delay; new garbage costs the API server nothing.
        for i in range(3, 20):
            with pytest.raises(grpc.RpcError) as err:
                stub.ListJobs(pb.ListJobsRequest(), metadata=auth(f"garbage-{i}"), timeout=T)
            assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "failed authentications" in (err.value.details() or "")
        status = rpc_status.from_call(err.value)
        assert status is not None
        assert any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)
        assert reviews(emulator) == 3
    finally:
        svc.stop()


def test_a_concurrent_wave_of_garbage_tokens_costs_at_most_the_peers_budget(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    """Sent all at once (the reviews are slow), 30 different garbage tokens from one peer may not
    all pass the check before the first failure is counted: each is charged before its review."""
    emulator.add_token("sa-token", SA)
    svc = kubernetes_service(kubeconfig, auth_mode="kubernetes", auth_failure_rps=0.001, auth_failure_burst=3)
    try:
        stub = svc.stub
        emulator.delay("POST", TOKENREVIEWS_PATH, 0.5)
        emulator.trim_log()
        calls = [
            stub.ListJobs.future(pb.ListJobsRequest(), metadata=auth(f"wave-{i}"), timeout=T)
            for i in range(30)
        ]
        codes = [call.exception().code() for call in calls if call.exception() is not None]
        assert len(codes) == 30
        assert codes.count(grpc.StatusCode.UNAUTHENTICATED) == 3, codes
        assert reviews(emulator) == 3
    finally:
        svc.stop()


# --- limits ----------------------------------------------------------------------------------------


def test_rate_limit_per_identity_with_retry_info(kubeconfig: pathlib.Path, token_file: pathlib.Path) -> None:
    svc = kubernetes_service(
        kubeconfig, auth_mode="token", auth_token_file=str(token_file), rate_limit_rps=0.5, rate_limit_burst=3
    )
    try:
        stub = svc.stub
        for _ in range(3):
            stub.ListJobs(pb.ListJobsRequest(), metadata=auth(ALICE), timeout=T)
        with pytest.raises(grpc.RpcError) as err:
            stub.ListJobs(pb.ListJobsRequest(), metadata=auth(ALICE), timeout=T)
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(err.value)
        assert status is not None
        retry = error_details_pb2.RetryInfo()
        assert any(d.Unpack(retry) for d in status.details)
        assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= 2
        # Another identity has its own budget, and the server keeps serving.
        stub.ListJobs(pb.ListJobsRequest(), metadata=auth(BOB), timeout=T)
        time.sleep(retry.retry_delay.ToTimedelta().total_seconds() + 0.1)
        stub.ListJobs(pb.ListJobsRequest(), metadata=auth(ALICE), timeout=T)
    finally:
        svc.stop()


def bad_fields(err: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)
    assert status is not None
    out: dict[str, str] = {}
    for detail in status.details:
        request = error_details_pb2.BadRequest()
        if detail.Unpack(request):
            out.update({v.field: v.description for v in request.field_violations})
    return out


def test_image_allowlist(kubeconfig: pathlib.Path, emulator: EmulatorThread) -> None:
    svc = kubernetes_service(kubeconfig, allowed_images="ghcr.io/acme,registry.local/tools/")
    try:
        stub = svc.stub
        for image in (
            "ghcr.io/acme/timer:1",
            "ghcr.io/acme:2",
            "registry.local/tools/timer@sha256:" + "a" * 64,
        ):
            stub.ScheduleJob(timer_request("ok", image=image), timeout=T)
        for image in ("ghcr.io/acme-evil/timer:1", "docker.io/library/busybox", "registry.local/toolsx/t"):
            with pytest.raises(grpc.RpcError) as err:
                stub.ScheduleJob(timer_request("no", image=image), timeout=T)
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "timer_job.image" in bad_fields(err.value), image
        assert len(emulator.jobs()) == 3  # refused requests created nothing
    finally:
        svc.stop()


def test_default_allowlist_is_the_timer_image_repository(kubeconfig: pathlib.Path) -> None:
    svc = kubernetes_service(kubeconfig, timer_image="ghcr.io/jobscheduler/jobscheduler:1.0")
    try:
        svc.stub.ScheduleJob(timer_request("ok", image="ghcr.io/jobscheduler/jobscheduler:1.1"), timeout=T)
        with pytest.raises(grpc.RpcError) as err:
            svc.stub.ScheduleJob(timer_request("no", image="busybox"), timeout=T)
        assert "timer_job.image" in bad_fields(err.value)
    finally:
        svc.stop()


def test_request_limits_reject_and_the_server_keeps_serving(kubeconfig: pathlib.Path) -> None:
    svc = kubernetes_service(kubeconfig, max_message_bytes=64 * 1024)
    try:
        stub = svc.stub
        too_big = timer_request("big", env={"BLOB": "x" * 70_000})
        assert code_of(lambda: stub.ScheduleJob(too_big, timeout=T)) is grpc.StatusCode.RESOURCE_EXHAUSTED
        cases: dict[str, pb.ScheduleJobRequest] = {
            "timer_job.env": timer_request("env", env={f"V{i}": "x" for i in range(65)}),
            "timer_job.duration_seconds": timer_request("long", duration_seconds=86401),
            "labels": pb.ScheduleJobRequest(
                name="labels", timer_job=timer_request().timer_job, labels={f"k{i}": "v" for i in range(33)}
            ),
            "labels[k]": pb.ScheduleJobRequest(
                name="labels", timer_job=timer_request().timer_job, labels={"k": "v" * 64}
            ),
            "name": timer_request("n" * 64),
        }
        for field, request in cases.items():
            with pytest.raises(grpc.RpcError) as err:
                stub.ScheduleJob(request, timeout=T)
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, field
            assert field in bad_fields(err.value), (field, bad_fields(err.value))
        # Total size of the environment, under the message limit but over the env budget.
        env_total = timer_request("envsize", env={f"V{i}": "x" * 4000 for i in range(9)})
        with pytest.raises(grpc.RpcError) as err:
            stub.ScheduleJob(env_total, timeout=T)
        assert "timer_job.env" in bad_fields(err.value)
        assert stub.ScheduleJob(timer_request("fine"), timeout=T).job_id
    finally:
        svc.stop()


def test_a_request_over_256_kib_is_refused_before_it_is_decoded(service: ServiceThread) -> None:
    """The default MAX_MESSAGE_BYTES: a 4 MB request used to be decoded whole (125 ms of event
    loop) before any check, also for callers that were not even authenticated."""
    big = pb.ScheduleJobRequest(
        name="big", timer_job=timer_request().timer_job, labels={f"k{i}": "v" * 60 for i in range(5000)}
    )
    assert big.ByteSize() > 256 * 1024
    with pytest.raises(grpc.RpcError) as err:
        service.stub.ScheduleJob(big, timeout=T)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert service.stub.ScheduleJob(timer_request("fine"), timeout=T).job_id


# --- mtls mode: the client certificate is the identity ---------------------------------------------


def test_mtls_mode_takes_the_identity_from_the_client_certificate(tmp_path: pathlib.Path) -> None:
    import trustme

    from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    (tmp_path / "cert.pem").write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems))
    svc = local_service(
        tmp_path / "data",
        auth_mode="mtls",
        auth_admins="ops",
        tls_cert_file=str(tmp_path / "cert.pem"),
        tls_key_file=str(tmp_path / "key.pem"),
        tls_client_ca_file=str(tmp_path / "ca.pem"),
    )

    def stub_for(name: str) -> tuple[grpc.Channel, Any]:
        # The identity is the DNS subject alternative name, not the common name.
        client = ca.issue_cert(name, common_name=f"cn-{name}")
        credentials = grpc.ssl_channel_credentials(
            ca.cert_pem.bytes(),
            client.private_key_pem.bytes(),
            b"".join(b.bytes() for b in client.cert_chain_pems),
        )
        channel = grpc.secure_channel(
            f"127.0.0.1:{svc.port}", credentials, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        return channel, pb_grpc.JobSchedulerStub(channel)

    try:
        (ch_a, alice), (ch_b, bob), (ch_o, ops) = stub_for("alice"), stub_for("bob"), stub_for("ops")
        with ch_a, ch_b, ch_o:
            job = alice.ScheduleJob(timer_request("mine"), timeout=T).job
            assert job.owner == "alice"
            assert code_of(
                lambda: bob.GetJobStatus(pb.GetJobStatusRequest(job_id=job.job_id), timeout=T)
            ) is (grpc.StatusCode.NOT_FOUND)
            assert [j.job_id for j in ops.ListJobs(pb.ListJobsRequest(), timeout=T).jobs] == [job.job_id]
            assert bob.ListJobs(pb.ListJobsRequest(), timeout=T).jobs == []
    finally:
        svc.stop()


def test_mtls_mode_needs_a_client_ca(tmp_path: pathlib.Path, kubeconfig: pathlib.Path) -> None:
    env = serve_env(kubeconfig, AUTH_MODE="mtls", GRPC_PORT="0", HEALTH_PORT="0")
    proc = ServeProcess(env, wait=False)
    assert proc.proc.wait(20) == 2
    err = proc.proc.stderr.read() if proc.proc.stderr else ""
    assert "TLS_CLIENT_CA_FILE" in err, err
