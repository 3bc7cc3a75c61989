"""The README quick start with no cluster: serve picks the local backend and a timer really runs."""

from __future__ import annotations

import json
import os
import pathlib
import queue
import subprocess
import sys
import threading
import time
from typing import Any

from conftest import ServeProcess

VENV_BIN = pathlib.Path(sys.executable).parent


def no_cluster_env(tmp_path: pathlib.Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "BACKEND", "DATA_DIR", "IN_CLUSTER")
    }
    env.update(HOME=str(home), DATA_DIR=str(tmp_path / "data"), GRPC_PORT="0", HEALTH_PORT="0")
    env.update(GRPC_HOST="127.0.0.1", PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return env


def grpcurl(data: dict[str, Any], port: int, method: str) -> dict[str, Any]:
    result = subprocess.run(
        [
            "grpcurl",
            "-plaintext",
            "-d",
            json.dumps(data),
            f"localhost:{port}",
            f"jobscheduler.JobScheduler/{method}",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_quick_start_without_a_cluster(tmp_path: pathlib.Path) -> None:
    env = no_cluster_env(tmp_path)
    sink = subprocess.Popen(
        [str(VENV_BIN / "jobscheduler"), "report-sink", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert sink.stdout is not None
    stdout = sink.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    server = ServeProcess(env, wait=False)
    try:
        chosen = server.wait_for("backend chosen")
        assert chosen["backend"] == "local"
        assert "no kubeconfig" in chosen["why"]
        serving = server.wait_for("serving")
        port = int(serving["grpc_port"])
        sink_url = json.loads(lines.get(timeout=10))["url"]

        answer = grpcurl(
            {
                "name": "my-timer",
                "timer_job": {
                    "duration_seconds": 2,
                    "timer_name": "build-timeout",
                    "control_plane_endpoint": sink_url,
                },
            },
            port,
            "ScheduleJob",
        )
        job_id = answer["job_id"]
        deadline = time.monotonic() + 30
        while True:
            job = grpcurl({"job_id": job_id}, port, "GetJobStatus")["job"]
            if job["phase"] in ("JOB_PHASE_SUCCEEDED", "JOB_PHASE_FAILED"):
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.3)
        assert job["phase"] == "JOB_PHASE_SUCCEEDED", job
        assert job["reason"] == "Completed"
        report = json.loads(lines.get(timeout=10))
        assert report["event"] == "report"
        assert report["report"]["status"] == "completed"
        assert report["report"]["timer_name"] == "build-timeout"
        assert report["report"]["job_id"] == job_id
        assert server.stop() == 0
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
        sink.terminate()
        sink.wait(10)
