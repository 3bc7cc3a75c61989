"""The command line's test harness: a server on 127.0.0.1 (either backend) and the ``jobscheduler``
program run against it as a subprocess, with bounded reads of its output (no fixed sleeps)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conftest import ROOT, ServiceThread
from emulator import EmulatorThread
from job_status import ended_status
from test_contract import Receiver, closed_port

from jobscheduler import client


@dataclass
class Server:
    """A server on one backend, its control plane stand-in and (Kubernetes) the API emulator."""

    kind: str
    service: ServiceThread
    receiver: Receiver
    emulator: EmulatorThread | None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.service.port}"

    def client(self) -> client.Client:
        return client.Client(self.addr)

    def env(self) -> dict[str, str]:
        return {**os.environ, "JOBSCHEDULER_ADDR": self.addr, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jobscheduler", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "jobscheduler", *args],
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    def timer_flags(self, *, fail: bool = False, duration: int = 1) -> list[str]:
        """A timer that succeeds, or (locally) fails at once: its report cannot be delivered."""
        if not fail:
            return ["--duration", f"{duration}s", "--endpoint", self.receiver.url]
        return [
            *("--duration", f"{duration}s", "--endpoint", f"http://127.0.0.1:{closed_port()}/"),
            *("--env", "REPORT_MAX_ATTEMPTS=1", "--env", "REPORT_BACKOFF_SECONDS=0.05"),
        ]

    def finish(self, job_id: str, *, succeed: bool) -> None:
        """Kubernetes: the Job controller's final status write (locally the job ends by itself)."""
        if self.emulator is not None:
            self.emulator.patch_job(job_id, {"status": ended_status(succeed=succeed)})

    def start_running(self, job_id: str) -> None:
        """Kubernetes: the Job controller's write when its pod starts (locally it starts by itself)."""
        if self.emulator is not None:
            self.emulator.patch_job(job_id, {"status": {"startTime": _now(), "active": 1, "ready": 1}})


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def first_line(proc: subprocess.Popen[str], timeout: float = 15) -> str:
    """The next line the process prints, within ``timeout`` (a reader thread: no fixed sleeps)."""
    assert proc.stdout is not None
    stdout = proc.stdout
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not box:
        proc.kill()
        raise AssertionError(f"no line within {timeout}s")
    return box[0]


def finished(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"still running after {timeout}s: {out} {err}") from None
    return proc.returncode, out, err


def eventually(probe: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.05)
    return found


def stderr_line(proc: subprocess.Popen[str], timeout: float = 15) -> str:
    assert proc.stderr is not None
    stderr = proc.stderr
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stderr.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not box:
        proc.kill()
        raise AssertionError(f"no line on stderr within {timeout}s")
    return box[0]
