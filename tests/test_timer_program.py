"""The timer program (``python -m jobscheduler.timer``) run as a subprocess against a local HTTP receiver."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# The exit-code contract (jobscheduler.timer.EXIT_*), spelled out: the tests run the program as a
# subprocess and do not need the package importable in-process.
EXIT_OK = 0
EXIT_CONFIG_ERROR = 2
EXIT_REPORT_FAILED = 3
EXIT_CANCELLED = 143
PATH = "/internal/timers/report"

pytestmark = pytest.mark.timeout(30)


@dataclass
class Receiver:
    """Records the JSON bodies POSTed to it; answers ``statuses`` in order, then 200."""

    server: ThreadingHTTPServer
    statuses: list[int] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    received: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.received = threading.Condition(self.lock)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}{PATH}"

    @property
    def bodies(self) -> list[Any]:
        with self.lock:
            return [r["body"] for r in self.requests]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        with self.received:
            self.received.wait_for(lambda: len(self.requests) >= count, timeout=timeout)
            return list(self.requests)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver.lock:
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.requests.append(
                    {
                        "path": self.path,
                        "content_type": self.headers.get("Content-Type"),
                        "body": json.loads(raw),
                        "answered": status,
                    }
                )
                receiver.received.notify_all()
            payload = b'{"ok":true}' if status < 300 else b'{"error":"nope"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    recv = Receiver(server=server)
    server.RequestHandlerClass = _handler(recv)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield recv
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port_url() -> str:
    """A URL on a 127.0.0.1 port that was just bound and released, so nothing listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{PATH}"


_CONFIG_VARS = (
    "TIMER_NAME",
    "DURATION_SECONDS",
    "CONTROL_PLANE_ENDPOINT",
    "LOG_LEVEL",
    "JOB_ID",
    "REPORT_MAX_ATTEMPTS",
    "REPORT_BACKOFF_SECONDS",
    "REPORT_TIMEOUT_SECONDS",
    "HOSTNAME",
)


def _env(**overrides: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _CONFIG_VARS and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def _timer_env(url: str, **overrides: str) -> dict[str, str]:
    base = {
        "TIMER_NAME": "tea",
        "DURATION_SECONDS": "0.3",
        "CONTROL_PLANE_ENDPOINT": url,
        "JOB_ID": "job-123",
        "REPORT_BACKOFF_SECONDS": "0.05",
        "REPORT_TIMEOUT_SECONDS": "2",
    }
    base.update(overrides)
    return _env(**base)


def _run(env: dict[str, str], *args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobscheduler.timer", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _log_lines(stdout: str) -> list[dict[str, Any]]:
    """Every stdout line must be one JSON object (structlog renders JSON when stdout is a pipe)."""
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert lines, "no log output"
    for line in lines:
        assert isinstance(line, dict)
        assert line["logger"] == "jobscheduler.timer"
        assert {"event", "level", "timestamp"} <= line.keys()
    return lines


def _events(lines: list[dict[str, Any]]) -> list[str]:
    return [str(line["event"]) for line in lines]


def _parse_rfc3339(value: str) -> datetime:
    assert value.endswith("Z"), value
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.utcoffset() == timedelta(0)
    return parsed


class _Process:
    """A timer subprocess whose stdout lines are collected by a thread, for waiting on a given log event."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "jobscheduler.timer", *args],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line)

    def wait_for_event(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {event!r} log line within {timeout}s; got {self.seen}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(line)
            parsed: dict[str, Any] = json.loads(line)
            if parsed.get("event") == event:
                return parsed

    def finish(self, timeout: float) -> tuple[int, list[dict[str, Any]]]:
        returncode = self.popen.wait(timeout=timeout)
        self._reader.join(timeout=5)
        while not self.lines.empty():
            self.seen.append(self.lines.get_nowait())
        return returncode, _log_lines("".join(self.seen))

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=5)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def spawn() -> Iterator[Any]:
    procs: list[_Process] = []

    def start(env: dict[str, str], *args: str) -> _Process:
        proc = _Process(env, *args)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()


# --- completion ---------------------------------------------------------------------------------


def test_completion_is_reported(receiver: Receiver) -> None:
    began = time.monotonic()
    result = _run(_timer_env(receiver.url, DURATION_SECONDS="1.2"))
    took = time.monotonic() - began

    assert result.returncode == EXIT_OK == 0, result.stdout + result.stderr
    assert 1.2 <= took < 10
    [request] = receiver.wait_for(1)
    assert request["path"] == PATH
    assert request["content_type"] == "application/json"
    body = request["body"]
    assert set(body) == {"job_id", "timer_name", "status", "duration_seconds", "started_at", "finished_at"}
    assert body["job_id"] == "job-123"
    assert body["timer_name"] == "tea"
    assert body["status"] == "completed"
    assert body["duration_seconds"] == 1.2
    started, finished = _parse_rfc3339(body["started_at"]), _parse_rfc3339(body["finished_at"])
    assert 1.1 <= (finished - started).total_seconds() < 10

    lines = _log_lines(result.stdout)
    events = _events(lines)
    start = lines[events.index("timer started")]
    assert start["level"] == "info"
    assert start["timer_name"] == "tea"
    assert start["duration_seconds"] == 1.2
    assert start["job_id"] == "job-123"
    assert start["endpoint"] == receiver.url
    # Progress every max(1, min(30, 1.2 / 10)) = 1 s: exactly one line, at ~1 s elapsed.
    [progress] = [line for line in lines if line["event"] == "timer progress"]
    assert progress["elapsed_seconds"] >= 1.0
    assert 0 < progress["remaining_seconds"] <= 0.2
    assert "timer completed" in events
    assert events.index("timer started") < events.index("timer progress") < events.index("timer completed")
    assert events[-1] == "timer completion reported"


def test_flags_override_environment_and_job_id_defaults_to_hostname(receiver: Receiver) -> None:
    env = _timer_env(
        "not a url",
        TIMER_NAME="from-env",
        DURATION_SECONDS="-1",
        LOG_LEVEL="error",
        HOSTNAME="pod-abc",
    )
    del env["JOB_ID"]
    result = _run(
        env,
        "--timer-name",
        "from-flag",
        "--duration-seconds",
        "0.1",
        "--control-plane-endpoint",
        receiver.url,
        "--log-level",
        "debug",
    )

    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    [body] = receiver.bodies
    assert body["timer_name"] == "from-flag"
    assert body["duration_seconds"] == 0.1
    assert body["job_id"] == "pod-abc"
    levels = {line["level"] for line in _log_lines(result.stdout)}
    assert "debug" in levels  # --log-level debug won over LOG_LEVEL=error


def test_retries_after_server_errors_then_succeeds(receiver: Receiver) -> None:
    receiver.statuses = [500, 503, 429]
    result = _run(_timer_env(receiver.url, DURATION_SECONDS="0.1", REPORT_BACKOFF_SECONDS="0.05"))

    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    requests = receiver.wait_for(4)
    assert [r["answered"] for r in requests] == [500, 503, 429, 200]
    assert all(r["body"]["status"] == "completed" for r in requests)
    assert len({json.dumps(r["body"], sort_keys=True) for r in requests}) == 1  # the same report each time
    lines = _log_lines(result.stdout)
    retries = [line for line in lines if line["event"] == "timer report attempt failed, retrying"]
    assert [line["attempt"] for line in retries] == [1, 2, 3]
    assert [line["retry_in_seconds"] for line in retries] == [0.05, 0.1, 0.2]  # doubling backoff
    assert "HTTP 500" in retries[0]["error"]
    assert lines[-1]["event"] == "timer completion reported"
    assert lines[-1]["attempts"] == 4


def test_client_error_is_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [400]
    result = _run(_timer_env(receiver.url, DURATION_SECONDS="0.1"))

    assert result.returncode == EXIT_REPORT_FAILED, result.stdout + result.stderr
    assert len(receiver.bodies) == 1
    final = _log_lines(result.stdout)[-1]
    assert final["level"] == "error"
    assert final["attempts"] == 1
    assert final["http_status"] == 400


def test_unreachable_endpoint_exits_3_with_a_clear_error(closed_port_url: str) -> None:
    began = time.monotonic()
    result = _run(
        _timer_env(
            closed_port_url,
            DURATION_SECONDS="0.1",
            REPORT_MAX_ATTEMPTS="3",
            REPORT_BACKOFF_SECONDS="0.01",
            REPORT_TIMEOUT_SECONDS="1",
        )
    )
    took = time.monotonic() - began

    assert result.returncode == EXIT_REPORT_FAILED == 3, result.stdout + result.stderr
    assert took < 8
    lines = _log_lines(result.stdout)
    assert "timer completed" in _events(lines)
    errors = [line for line in lines if line["level"] == "error"]
    assert len(errors) == 1
    [error] = errors
    assert "could not be delivered" in error["event"]
    assert error["endpoint"] == closed_port_url
    assert error["attempts"] == 3
    assert "refused" in error["last_error"].lower()


# --- cancellation -------------------------------------------------------------------------------


def test_sigterm_sends_cancelled_report_and_exits_143(receiver: Receiver, spawn: Any) -> None:
    proc = spawn(_timer_env(receiver.url, DURATION_SECONDS="60"))
    proc.wait_for_event("timer started")
    time.sleep(0.2)
    signalled = time.monotonic()
    proc.popen.send_signal(signal.SIGTERM)
    returncode, lines = proc.finish(timeout=5)
    took = time.monotonic() - signalled

    assert returncode == EXIT_CANCELLED == 143
    assert took < 2.5
    [body] = receiver.bodies
    assert body["status"] == "cancelled"
    assert body["timer_name"] == "tea"
    assert body["job_id"] == "job-123"
    assert body["duration_seconds"] == 60
    started, finished = _parse_rfc3339(body["started_at"]), _parse_rfc3339(body["finished_at"])
    assert 0 < (finished - started).total_seconds() < 5
    events = _events(lines)
    cancelled = lines[events.index("timer cancelled")]
    assert cancelled["signal"] == "SIGTERM"
    assert cancelled["remaining_seconds"] > 50
    assert "timer completed" not in events
    assert events[-1] == "timer cancellation reported"


def test_sigterm_exits_143_even_when_cancellation_cannot_be_reported(
    closed_port_url: str, spawn: Any
) -> None:
    proc = spawn(_timer_env(closed_port_url, DURATION_SECONDS="60"))
    proc.wait_for_event("timer started")
    signalled = time.monotonic()
    proc.popen.send_signal(signal.SIGTERM)
    returncode, lines = proc.finish(timeout=8)

    assert returncode == EXIT_CANCELLED
    assert time.monotonic() - signalled < 5
    [error] = [line for line in lines if line["level"] == "error"]
    assert "cancellation report could not be delivered" in error["event"]
    assert error["attempts"] == 2  # the cancellation report is bounded to 2 attempts
    assert error["endpoint"] == closed_port_url


def test_sigterm_while_retrying_the_completion_report_stops_promptly(receiver: Receiver, spawn: Any) -> None:
    receiver.statuses = [500] * 10
    proc = spawn(_timer_env(receiver.url, DURATION_SECONDS="0.1", REPORT_BACKOFF_SECONDS="5"))
    proc.wait_for_event("timer report attempt failed, retrying")
    signalled = time.monotonic()
    proc.popen.send_signal(signal.SIGTERM)
    returncode, lines = proc.finish(timeout=5)

    assert returncode == EXIT_CANCELLED
    assert time.monotonic() - signalled < 2.5  # the 5 s backoff was cut short
    assert len(receiver.bodies) == 1
    assert any("could not be delivered" in line["event"] for line in lines if line["level"] == "error")


# --- configuration ------------------------------------------------------------------------------


def test_backoff_delay_is_capped_for_any_number_of_failures() -> None:
    from jobscheduler.timer._report import MAX_BACKOFF_SECONDS, backoff_delay

    assert backoff_delay(0.5, 1) == 0.5
    assert backoff_delay(0.5, 2) == 1.0
    assert backoff_delay(0.5, 1025) == MAX_BACKOFF_SECONDS  # was OverflowError (2.0 ** 1024)
    assert backoff_delay(0.0, 10**9) == 0.0


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"DURATION_SECONDS": "-1"}, "DURATION_SECONDS"),
        ({"DURATION_SECONDS": "soon"}, "DURATION_SECONDS"),
        ({"DURATION_SECONDS": ""}, "DURATION_SECONDS"),
        ({"CONTROL_PLANE_ENDPOINT": "not-a-url"}, "CONTROL_PLANE_ENDPOINT"),
        ({"CONTROL_PLANE_ENDPOINT": "ftp://example.com/x"}, "CONTROL_PLANE_ENDPOINT"),
        ({"TIMER_NAME": ""}, "TIMER_NAME"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL"),
        ({"REPORT_MAX_ATTEMPTS": "0"}, "REPORT_MAX_ATTEMPTS"),
        # Set through a request's env: a bounded number of reports, not a flood of them.
        ({"REPORT_MAX_ATTEMPTS": "100000000"}, "REPORT_MAX_ATTEMPTS"),
        ({"REPORT_TIMEOUT_SECONDS": "0"}, "REPORT_TIMEOUT_SECONDS"),
    ],
)
def test_invalid_configuration_exits_2_naming_the_variable(
    receiver: Receiver, overrides: dict[str, str], variable: str
) -> None:
    result = _run(_timer_env(receiver.url, **overrides), timeout=10)

    assert result.returncode == EXIT_CONFIG_ERROR == 2, result.stdout + result.stderr
    [line] = _log_lines(result.stdout)
    assert line["level"] == "error"
    assert variable in line["event"]
    assert line["variables"] == [variable]
    assert receiver.bodies == []


def test_missing_configuration_names_every_missing_variable() -> None:
    result = _run(_env(), timeout=10)

    assert result.returncode == EXIT_CONFIG_ERROR, result.stdout + result.stderr
    [line] = _log_lines(result.stdout)
    assert line["variables"] == ["TIMER_NAME", "DURATION_SECONDS", "CONTROL_PLANE_ENDPOINT"]
    for name in line["variables"]:
        assert name in line["event"]


def test_unknown_flag_exits_2(receiver: Receiver) -> None:
    result = _run(_timer_env(receiver.url), "--no-such-flag", timeout=10)

    assert result.returncode == EXIT_CONFIG_ERROR
    [line] = _log_lines(result.stdout)
    assert "--no-such-flag" in line["event"]


def test_public_exit_code_constants() -> None:
    code = (
        "import json, jobscheduler.timer as t; "
        "print(json.dumps([t.EXIT_OK, t.EXIT_CONFIG_ERROR, t.EXIT_REPORT_FAILED, t.EXIT_CANCELLED]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [EXIT_OK, EXIT_CONFIG_ERROR, EXIT_REPORT_FAILED, EXIT_CANCELLED]
