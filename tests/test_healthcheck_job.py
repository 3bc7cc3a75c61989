"""The health-check job (issue 13 item 3): the handler's validation (examples and a hypothesis
fuzz), its manifest (kubernetes-validate, Pod Security restricted), the ``jobscheduler
healthcheck`` program against servers on 127.0.0.1 (HTTP, TCP, a grpc.aio health service), and
ScheduleJob on the local backend (runs to SUCCEEDED / FAILED) and on the Kubernetes emulator."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import kubernetes_validate
import pytest
from conftest import ServiceThread, kubernetes_service, local_service
from emulator import EmulatorThread
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from hypothesis import given, settings
from hypothesis import strategies as st
from pod_security import check_object

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.api.convert import schedule_request
from jobscheduler.core.errors import InvalidArgument
from jobscheduler.core.manifests import JobDefaults, RenderContext
from jobscheduler.healthcheck import EXIT_CONFIG_ERROR, EXIT_OK, EXIT_UNHEALTHY
from jobscheduler.jobtypes.healthcheck import HealthCheckHandler

pytestmark = pytest.mark.timeout(60)

T = 10
IMAGE = "ghcr.io/jobscheduler/jobscheduler:latest"
HANDLER = HealthCheckHandler(default_image=IMAGE)
ENDPOINT = "http://control-plane:50053/report"
FIELD_PATH = re.compile(
    r"healthcheck_job\.(control_plane_endpoint|image|targets(\[\d+\](\.(name|timeout_seconds|retries"
    r"|http(\.(url|expected_status(\[\d+\])?))?|tcp(\.(host|port))?|grpc(\.(target|service|tls))?))?)?)"
)


def request(*targets: pb.HealthCheckTarget, endpoint: str = ENDPOINT, **job: Any) -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(
        name="probe",
        healthcheck_job=pb.HealthCheckJob(targets=targets, control_plane_endpoint=endpoint, **job),
    )


def http_target(name: str, url: str, *statuses: int, **options: Any) -> pb.HealthCheckTarget:
    return pb.HealthCheckTarget(name=name, http=pb.HttpProbe(url=url, expected_status=statuses), **options)


def parse(req: pb.ScheduleJobRequest) -> Any:
    return HANDLER.parse(schedule_request(req).params)


def render(req: pb.ScheduleJobRequest) -> dict[str, Any]:
    ctx = RenderContext(job_id="job-abcdefghij", name="probe", job_type="healthcheck", defaults=JobDefaults())
    manifest: dict[str, Any] = HANDLER.render(parse(req), ctx)
    return manifest


def violations(req: pb.ScheduleJobRequest) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        parse(req)
    return {v.field: v.description for v in info.value.violations}


# --- the handler ---------------------------------------------------------------------------------

FULL = request(
    http_target("web", "https://api.example:8443/healthz?deep=1", 200, 204, timeout_seconds=3, retries=1),
    pb.HealthCheckTarget(name="db", tcp=pb.TcpProbe(host="10.0.0.7", port=5432)),
    pb.HealthCheckTarget(
        name="grpc", grpc=pb.GrpcProbe(target="[::1]:50051", service="pkg.Svc", tls=True), retries=10
    ),
    image="ghcr.io/jobscheduler/jobscheduler:v1.2.3",
)


def test_manifest_is_valid_restricted_and_carries_the_targets_with_their_defaults() -> None:
    manifest = render(FULL)
    kubernetes_validate.validate(manifest, "1.31.0", strict=True)
    assert check_object(manifest) == []
    spec = manifest["spec"]
    [container] = spec["template"]["spec"]["containers"]
    assert container["command"] == ["jobscheduler", "healthcheck"]
    assert container["image"] == "ghcr.io/jobscheduler/jobscheduler:v1.2.3"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CONTROL_PLANE_ENDPOINT"] == ENDPOINT
    assert (env["JOB_ID"], env["JOB_NAME"]) == ("job-abcdefghij", "probe")
    assert json.loads(env["HEALTHCHECK_TARGETS"]) == [
        {
            "name": "web",
            "http": {"url": "https://api.example:8443/healthz?deep=1", "expected_status": [200, 204]},
            "timeout_seconds": 3,
            "retries": 1,
        },
        {"name": "db", "tcp": {"host": "10.0.0.7", "port": 5432}, "timeout_seconds": 5, "retries": 2},
        {
            "name": "grpc",
            "grpc": {"target": "[::1]:50051", "service": "pkg.Svc", "tls": True},
            "timeout_seconds": 5,
            "retries": 10,
        },
    ]
    # Every attempt of every target timing out, the backoff between attempts, plus the grace:
    # web 2*3 + 0.5; db 3*5 + 0.5 + 1; grpc 11*5 + (0.5 + 1 + 2 + 4 + 8*6); 133.5 s, rounded up.
    assert spec["activeDeadlineSeconds"] == 134 + 60
    [fail, _] = spec["podFailurePolicy"]["rules"]
    assert fail["action"] == "FailJob"
    assert fail["onExitCodes"]["values"] == [EXIT_CONFIG_ERROR, EXIT_UNHEALTHY]
    assert HANDLER.image_override(parse(FULL)) == (
        "healthcheck_job.image",
        "ghcr.io/jobscheduler/jobscheduler:v1.2.3",
    )
    assert (
        render(request(pb.HealthCheckTarget(name="a", tcp=pb.TcpProbe(host="db", port=1))))["spec"][
            "template"
        ]["spec"]["containers"][0]["image"]
        == IMAGE
    )


T0 = "healthcheck_job.targets[0]"
BAD: list[tuple[pb.ScheduleJobRequest, str, str]] = [
    (request(), "healthcheck_job.targets", "at least one"),
    (
        request(*[pb.HealthCheckTarget(name=f"t{i}", tcp=pb.TcpProbe(host="h", port=1)) for i in range(33)]),
        "healthcheck_job.targets",
        "at most 32",
    ),
    (request(pb.HealthCheckTarget(name="x")), T0, "exactly one of http, tcp or grpc"),
    (request(http_target("", "http://a/")), f"{T0}.name", "must not be empty"),
    (request(http_target("a\x00b", "http://a/")), f"{T0}.name", "control characters"),
    (
        request(http_target("a", "http://a/"), http_target("a", "http://b/")),
        "healthcheck_job.targets[1].name",
        "duplicates",
    ),
    (request(http_target("a", "ftp://a/")), f"{T0}.http.url", "http:// or https://"),
    (request(http_target("a", "http://a/ b")), f"{T0}.http.url", "whitespace"),
    (request(http_target("a", "http://a/\x00")), f"{T0}.http.url", "control characters"),
    (request(http_target("a", "http://u:p@a/")), f"{T0}.http.url", "credentials"),
    (request(http_target("a", "http://bad_host!/")), f"{T0}.http.url", "DNS name or an IP"),
    (request(http_target("a", "http://" + "a" * 2050)), f"{T0}.http.url", "at most 2048"),
    (request(http_target("a", "http://a/", 99)), f"{T0}.http.expected_status[0]", "100-599"),
    (request(http_target("a", "http://a/", *range(200, 217))), f"{T0}.http.expected_status", "at most 16"),
    (request(pb.HealthCheckTarget(name="a", tcp=pb.TcpProbe(host="h", port=0))), f"{T0}.tcp.port", "1-65535"),
    (
        request(pb.HealthCheckTarget(name="a", tcp=pb.TcpProbe(host="h", port=70000))),
        f"{T0}.tcp.port",
        "1-65535",
    ),
    (
        request(pb.HealthCheckTarget(name="a", tcp=pb.TcpProbe(host="a b", port=1))),
        f"{T0}.tcp.host",
        "DNS name",
    ),
    (
        request(pb.HealthCheckTarget(name="a", tcp=pb.TcpProbe(host="fe80::1%a b\x00", port=1))),
        f"{T0}.tcp.host",
        "without a zone",
    ),
    (request(http_target("a", "http://[fe80::1%25x]/")), f"{T0}.http.url", "DNS name or an IP"),
    (
        request(pb.HealthCheckTarget(name="a", tcp=pb.TcpProbe(host="1.2.3.999", port=1))),
        f"{T0}.tcp.host",
        "DNS",
    ),
    (
        request(pb.HealthCheckTarget(name="a", grpc=pb.GrpcProbe(target="h"))),
        f"{T0}.grpc.target",
        "host:port",
    ),
    (
        request(pb.HealthCheckTarget(name="a", grpc=pb.GrpcProbe(target="::1:80"))),
        f"{T0}.grpc.target",
        "brackets",
    ),
    (
        request(pb.HealthCheckTarget(name="a", grpc=pb.GrpcProbe(target="h:1", service="a b"))),
        f"{T0}.grpc.service",
        "gRPC service name",
    ),
    (request(http_target("a", "http://a/", timeout_seconds=61)), f"{T0}.timeout_seconds", "to 60"),
    (request(http_target("a", "http://a/", timeout_seconds=-1)), f"{T0}.timeout_seconds", "to 60"),
    (request(http_target("a", "http://a/", retries=11)), f"{T0}.retries", "to 10"),
    (request(http_target("a", "http://a/"), endpoint=""), "healthcheck_job.control_plane_endpoint", "empty"),
    (
        request(http_target("a", "http://a/"), endpoint="http://a\nb/"),
        "healthcheck_job.control_plane_endpoint",
        "control",
    ),
    (
        request(http_target("a", "http://a/"), image="Not An Image"),
        "healthcheck_job.image",
        "image reference",
    ),
]


@pytest.mark.parametrize(("req", "field", "fragment"), BAD, ids=[f"{f}:{x}" for _, f, x in BAD])
def test_bad_parameters_are_invalid_argument_naming_the_field(
    req: pb.ScheduleJobRequest, field: str, fragment: str
) -> None:
    found = violations(req)
    assert field in found, found
    assert fragment in found[field]


_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "fe80::1%x y",
            "http://[::1]/",
            "[::1]:1",
            "http://a/",
            "https://127.0.0.1:8/x",
            "db",
            "::1",
            "[::1]:5",
            "h:0",
            "h:65536",
            "a" * 300,
        ]
    ),
)
_targets = st.builds(
    pb.HealthCheckTarget,
    name=_text,
    http=st.one_of(
        st.none(),
        st.builds(pb.HttpProbe, url=_text, expected_status=st.lists(st.integers(-1, 1000), max_size=20)),
    ),
    tcp=st.one_of(st.none(), st.builds(pb.TcpProbe, host=_text, port=st.integers(-(2**31), 2**31 - 1))),
    grpc=st.one_of(st.none(), st.builds(pb.GrpcProbe, target=_text, service=_text, tls=st.booleans())),
    timeout_seconds=st.integers(-5, 100),
    retries=st.integers(-5, 20),
)


@settings(max_examples=150, deadline=None)
@given(targets=st.lists(_targets, max_size=34), endpoint=_text, image=_text)
def test_any_request_is_ok_or_invalid_argument_naming_its_fields(
    targets: list[pb.HealthCheckTarget], endpoint: str, image: str
) -> None:
    try:
        params = parse(request(*targets, endpoint=endpoint, image=image))
    except InvalidArgument as exc:
        assert exc.violations
        for v in exc.violations:
            assert FIELD_PATH.fullmatch(v.field), v.field
        return
    manifest = render(request(*targets, endpoint=endpoint, image=image))
    assert check_object(manifest) == []
    assert 1 <= len(params.targets) <= 32
    for t in params.targets:  # nothing that reaches a socket, a URL or a log line unchecked
        assert all(c.isprintable() and not c.isspace() for c in t.host + t.url + t.target + t.service)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_keys = st.sampled_from(["name", "http", "tcp", "grpc", "url", "host", "port", "target", "retries", "tls"])


@settings(max_examples=150, deadline=None)
@given(
    targets=st.lists(
        st.dictionaries(_keys, _json | st.dictionaries(_keys, _json, max_size=3), max_size=5), max_size=3
    )
    | _json,
    endpoint=_json,
    image=_json,
)
def test_any_plain_data_is_ok_or_invalid_argument(targets: Any, endpoint: Any, image: Any) -> None:
    """What another decoder (a plugin's Struct, a stored request) could hand the handler."""
    try:
        HANDLER.parse({"targets": targets, "control_plane_endpoint": endpoint, "image": image})
    except InvalidArgument as exc:
        assert all(v.field.startswith("healthcheck_job.") for v in exc.violations)


# --- the program ---------------------------------------------------------------------------------


class Servers:
    """An HTTP server (GET /ok: 200, /down: 503; POST: a report, recorded), a TCP listener and a
    grpc.aio health service (``ok.Svc`` SERVING, ``down.Svc`` NOT_SERVING), all on 127.0.0.1."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.agents: list[str] = []
        self.reported = threading.Condition()
        servers = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(200 if self.path == "/ok" else 503)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                with servers.reported:
                    servers.agents.append(self.headers.get("User-Agent", ""))
                    servers.reports.append(body)
                    servers.reported.notify_all()
                self._answer(204)

            def _answer(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.grpc_port = asyncio.run_coroutine_threadsafe(self._start_grpc(), self.loop).result(10)

    async def _start_grpc(self) -> int:
        self.grpc_server = grpc.aio.server()
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, self.grpc_server)
        await servicer.set("ok.Svc", health_pb2.HealthCheckResponse.SERVING)
        await servicer.set("down.Svc", health_pb2.HealthCheckResponse.NOT_SERVING)
        port = self.grpc_server.add_insecure_port("127.0.0.1:0")
        await self.grpc_server.start()
        return port

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}"

    @property
    def tcp_port(self) -> int:
        port: int = self.listener.getsockname()[1]
        return port

    def healthy_targets(self) -> list[pb.HealthCheckTarget]:
        return [
            http_target("web", f"{self.base}/ok"),
            pb.HealthCheckTarget(name="socket", tcp=pb.TcpProbe(host="127.0.0.1", port=self.tcp_port)),
            pb.HealthCheckTarget(
                name="rpc", grpc=pb.GrpcProbe(target=f"127.0.0.1:{self.grpc_port}", service="ok.Svc")
            ),
            pb.HealthCheckTarget(name="rpc-all", grpc=pb.GrpcProbe(target=f"127.0.0.1:{self.grpc_port}")),
        ]

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.grpc_server.stop(0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.http.shutdown()
        self.http.server_close()
        self.listener.close()


@pytest.fixture
def servers() -> Iterator[Servers]:
    s = Servers()
    try:
        yield s
    finally:
        s.close()


def program_env(req: pb.ScheduleJobRequest) -> dict[str, str]:
    """The environment the rendered Job gives the program (plus the test's PATH)."""
    [container] = render(req)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    return {**env, "PATH": os.environ.get("PATH", ""), "REPORT_BACKOFF_SECONDS": "0.05"}


def run_program(env: dict[str, str]) -> tuple[int, list[dict[str, Any]]]:
    proc = subprocess.run(
        [sys.executable, "-m", "jobscheduler", "healthcheck"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines = [
        json.loads(ln) for ln in proc.stdout.splitlines() + proc.stderr.splitlines() if ln.startswith("{")
    ]
    return proc.returncode, lines


def test_program_all_healthy_exits_0_and_reports_each_target(servers: Servers) -> None:
    code, lines = run_program(
        program_env(request(*servers.healthy_targets(), endpoint=f"{servers.base}/report"))
    )
    assert code == EXIT_OK, lines
    [report] = servers.reports
    assert report["status"] == "healthy"
    assert (report["job_id"], report["job_name"], report["job_type"]) == (
        "job-abcdefghij",
        "probe",
        "healthcheck",
    )
    assert [(t["name"], t["kind"], t["healthy"], t["attempts"]) for t in report["targets"]] == [
        ("web", "http", True, 1),
        ("socket", "tcp", True, 1),
        ("rpc", "grpc", True, 1),
        ("rpc-all", "grpc", True, 1),
    ]
    assert [t["detail"] for t in report["targets"]] == ["HTTP 200", "connected", "SERVING", "SERVING"]
    assert all(t["latency_seconds"] >= 0 for t in report["targets"])
    assert report["started_at"] <= report["finished_at"]
    assert servers.agents == ["jobscheduler-healthcheck"]
    assert [ln["event"] for ln in lines if ln["event"].startswith("healthcheck")][
        -1
    ] == "healthcheck reported"


@pytest.mark.parametrize("down", ["http", "grpc", "tcp"])
def test_program_one_unhealthy_target_exits_4_and_the_report_says_which(servers: Servers, down: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        closed_port = closed.getsockname()[1]
    bad = {
        "http": http_target("bad", f"{servers.base}/down", retries=1),
        "grpc": pb.HealthCheckTarget(
            name="bad",
            grpc=pb.GrpcProbe(target=f"127.0.0.1:{servers.grpc_port}", service="down.Svc"),
            retries=1,
        ),
        "tcp": pb.HealthCheckTarget(
            name="bad", tcp=pb.TcpProbe(host="127.0.0.1", port=closed_port), retries=1
        ),
    }[down]
    targets = [*servers.healthy_targets()[:2], bad]
    code, _ = run_program(program_env(request(*targets, endpoint=f"{servers.base}/report")))
    assert code == EXIT_UNHEALTHY
    [report] = servers.reports
    assert report["status"] == "unhealthy"
    by_name = {t["name"]: t for t in report["targets"]}
    assert by_name["web"]["healthy"] and by_name["socket"]["healthy"]
    assert not by_name["bad"]["healthy"]
    assert by_name["bad"]["attempts"] == 2
    expected = {"http": "HTTP 503 (expected 2xx)", "grpc": "NOT_SERVING", "tcp": "ConnectionRefusedError"}[
        down
    ]
    assert by_name["bad"]["detail"].startswith(expected)


def test_program_sigterm_while_probing_reports_cancelled_and_exits_143(servers: Servers) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        slow = pb.HealthCheckTarget(name="slow", grpc=pb.GrpcProbe(target=target), timeout_seconds=60)
        env = program_env(request(slow, servers.healthy_targets()[1], endpoint=f"{servers.base}/report"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobscheduler", "healthcheck"], env=env, stdout=subprocess.DEVNULL
        )
        try:
            silent.settimeout(20)
            conn, _ = silent.accept()  # the gRPC probe is under way (signal handlers are in place)
            with conn:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=20) == 128 + signal.SIGTERM
        finally:
            proc.kill()
    [report] = servers.reports
    assert report["status"] == "cancelled"
    assert "slow" not in [t["name"] for t in report["targets"]]


def test_program_bad_configuration_exits_2_without_probing(servers: Servers) -> None:
    env = program_env(request(*servers.healthy_targets(), endpoint=f"{servers.base}/report"))
    env["HEALTHCHECK_TARGETS"] = json.dumps([{"name": "x", "tcp": {"host": "a b", "port": 1}}])
    code, lines = run_program(env)
    assert code == EXIT_CONFIG_ERROR
    assert "HEALTHCHECK_TARGETS[0].tcp.host" in lines[-1]["event"]
    assert servers.reports == []


# --- through ScheduleJob -------------------------------------------------------------------------


def watch_to_end(svc: ServiceThread, job_id: str) -> pb.Job:
    last = None
    for event in svc.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=30):
        last = event.job
    assert last is not None
    return last


def test_local_backend_runs_it_to_succeeded_and_to_failed_when_a_target_is_down(
    servers: Servers, tmp_path: pathlib.Path
) -> None:
    svc = local_service(tmp_path / "data", timer_image=IMAGE)
    try:
        good = svc.stub.ScheduleJob(
            request(*servers.healthy_targets(), endpoint=f"{servers.base}/report"), timeout=T
        )
        job = watch_to_end(svc, good.job_id)
        assert job.type == "healthcheck"
        assert (job.phase, job.exit_code) == (pb.JOB_PHASE_SUCCEEDED, 0), job
        bad_req = request(
            servers.healthy_targets()[0],
            http_target("down", f"{servers.base}/down"),
            endpoint=f"{servers.base}/report",
        )
        bad = svc.stub.ScheduleJob(bad_req, timeout=T)
        job = watch_to_end(svc, bad.job_id)
        assert (job.phase, job.reason, job.exit_code) == (
            pb.JOB_PHASE_FAILED,
            "PodFailurePolicy",
            EXIT_UNHEALTHY,
        ), job
        assert job.failed == 1  # not retried: an unhealthy target fails the Job at once
        reports = {r["job_id"]: r for r in servers.reports}
        assert reports[good.job_id]["status"] == "healthy"
        assert reports[bad.job_id]["status"] == "unhealthy"
        assert [t["name"] for t in reports[bad.job_id]["targets"] if not t["healthy"]] == ["down"]
    finally:
        svc.stop()


def test_local_backend_cancel_stops_the_probes_and_the_report_says_cancelled(
    servers: Servers, tmp_path: pathlib.Path
) -> None:
    svc = local_service(tmp_path / "data", timer_image=IMAGE)
    try:
        # A listener that accepts but never answers: the HTTP probe waits out its 60 s timeout.
        with socket.create_server(("127.0.0.1", 0)) as silent:
            slow = http_target("slow", f"http://127.0.0.1:{silent.getsockname()[1]}/", timeout_seconds=60)
            job_id = svc.stub.ScheduleJob(request(slow, endpoint=f"{servers.base}/report"), timeout=T).job_id
            silent.settimeout(20)
            probe, _ = silent.accept()  # the program is probing (its signal handlers are in place)
            with probe:
                svc.stub.CancelJob(pb.CancelJobRequest(job_id=job_id, reason="test"), timeout=T)
                job = watch_to_end(svc, job_id)
        assert job.phase == pb.JOB_PHASE_CANCELLED, job
        with servers.reported:  # the phase may be recorded before the process has reported and exited
            assert servers.reported.wait_for(lambda: servers.reports, timeout=10)
        [report] = [r for r in servers.reports if r["job_id"] == job_id]
        assert (report["status"], report["targets"]) == ("cancelled", [])
    finally:
        svc.stop()


def test_kubernetes_schedule_creates_the_rendered_job(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    svc = kubernetes_service(kubeconfig, timer_image=IMAGE)
    try:
        created = svc.stub.ScheduleJob(FULL, timeout=T)
        [job] = emulator.jobs()
        assert job["metadata"]["name"] == created.job_id
        assert job["metadata"]["labels"]["jobscheduler.io/job-type"] == "healthcheck"
        [container] = job["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["jobscheduler", "healthcheck"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert [t["name"] for t in json.loads(env["HEALTHCHECK_TARGETS"])] == ["web", "db", "grpc"]
        assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2, 4]
        target = http_target("a", "http://a/")
        for bad, field in [
            (request(http_target("a", "http://a b/")), "healthcheck_job.targets[0].http.url"),
            (
                request(target, image="docker.io/someone/else:1"),
                "healthcheck_job.image",
            ),  # not ALLOWED_IMAGES
        ]:
            with pytest.raises(grpc.RpcError) as info:
                svc.stub.ScheduleJob(bad, timeout=T)
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert field in str(info.value.details()) + str(info.value.trailing_metadata())
        assert len(emulator.jobs()) == 1
    finally:
        svc.stop()
