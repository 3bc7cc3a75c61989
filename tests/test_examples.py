"""examples/ run against a local-backend server (so they cannot rot), and the .proto shipped inside
the package is the one in proto/."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tomllib
from collections.abc import Iterator

import pytest
from conftest import ROOT, ServiceThread, local_service
from grpc_tools import protoc
from test_client import sink_url  # noqa: F401 - the fixture

from jobscheduler.client import proto_path

EXAMPLES = ROOT / "examples"


@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[ServiceThread]:
    svc = local_service(tmp_path / "data")
    try:
        yield svc
    finally:
        svc.stop()


def test_the_proto_ships_inside_the_package() -> None:
    shipped = proto_path()
    assert shipped.read_bytes() == (ROOT / "proto" / "jobscheduler.proto").read_bytes(), (
        "jobscheduler/proto/jobscheduler.proto differs from proto/: run `task proto:generate`"
    )
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(shipped.relative_to(ROOT / "jobscheduler").match(p) for p in package_data["jobscheduler"])


def run_example(script: pathlib.Path, server: ServiceThread, report_url: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "JOBSCHEDULER_ADDR": f"127.0.0.1:{server.port}", "REPORT_URL": report_url, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout


def test_client_example(server: ServiceThread, sink_url: str) -> None:  # noqa: F811
    out = run_example(EXAMPLES / "schedule_and_follow.py", server, sink_url)
    assert out.startswith("scheduled job-") and "SUCCEEDED" in out.splitlines()[-1]


def test_plain_stubs_example_from_the_shipped_proto(
    server: ServiceThread,
    sink_url: str,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{proto_path().parent}", f"-I{include}", f"--python_out={tmp_path}"]
    assert protoc.main([*args, f"--grpc_python_out={tmp_path}", "jobscheduler.proto"]) == 0
    out = run_example(EXAMPLES / "plain_stubs.py", server, sink_url, PYTHONPATH=str(tmp_path))
    assert out.startswith("scheduled job-") and "JOB_PHASE_SUCCEEDED" in out.splitlines()[-1]
