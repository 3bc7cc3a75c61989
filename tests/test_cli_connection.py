"""The command line's connection settings end to end: an unreachable server, a bearer token from
the environment (tests/test_cli_client.py has the commands against servers)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
from conftest import ROOT, local_service
from test_contract import closed_port

pytestmark = pytest.mark.timeout(60)


def test_an_unreachable_server_is_one_line_and_exit_5() -> None:
    addr = f"127.0.0.1:{closed_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "jobscheduler", "list", "--request-timeout", "5"],
        env={**os.environ, "JOBSCHEDULER_ADDR": addr, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert result.returncode == 5, result
    assert result.stderr.startswith(f"jobscheduler: unavailable: {addr}: ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_the_token_comes_from_the_environment_and_a_refusal_exits_6(tmp_path: pathlib.Path) -> None:
    token = "cli-token-0123456789"
    tokens = tmp_path / "tokens.csv"
    tokens.write_text(f"{token},carol\n")
    (tmp_path / "token").write_text(token + "\n")
    svc = local_service(tmp_path / "data", auth_mode="token", auth_token_file=str(tokens))
    env = {**os.environ, "JOBSCHEDULER_ADDR": f"127.0.0.1:{svc.port}", "PYTHONPATH": str(ROOT)}
    env.pop("JOBSCHEDULER_TOKEN", None)
    argv = [sys.executable, "-m", "jobscheduler", "get", "job-0000000000"]
    try:
        refused = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, cwd=ROOT)
        env["JOBSCHEDULER_TOKEN_FILE"] = str(tmp_path / "token")
        allowed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, cwd=ROOT)
    finally:
        svc.stop()
    assert refused.returncode == 6 and refused.stderr.startswith("jobscheduler: unauthenticated: "), refused
    assert allowed.returncode == 3 and allowed.stderr.startswith("jobscheduler: not found: "), allowed
