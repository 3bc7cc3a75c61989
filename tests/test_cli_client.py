"""The client commands (submit, get, list, watch, logs, cancel): the ``jobscheduler`` program as a
subprocess against a real server on 127.0.0.1, on both backends (Kubernetes: the emulator, where the
test writes what the Job controller and the kubelet would; local: the jobs really run). Parsing and
formatting are tested in process in tests/test_cli_output.py.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shlex
import subprocess
import sys
from collections.abc import Iterator

import pytest
from cli_harness import Server, eventually, finished, first_line, stderr_line
from client_proxies import TcpProxy
from conftest import ROOT, kubernetes_service, local_service, write_kubeconfig
from emulator import EmulatorThread
from test_contract import Receiver
from test_informer import make_pod, running, set_pod_state, utcnow

from jobscheduler import client

pytestmark = pytest.mark.timeout(60)

JOB_ID = re.compile(r"job-[a-z0-9]{10}")

# --- the program against a server, both backends ---------------------------------------------------


@pytest.fixture(scope="module", params=["kubernetes", "local"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"cli-{request.param}")
    receiver = Receiver()
    emulator = None
    try:
        if request.param == "kubernetes":
            emulator = EmulatorThread()
            service = kubernetes_service(write_kubeconfig(tmp / "kubeconfig", emulator.url), queues="one=1")
        else:
            settings = {"local_backoff_seconds": 0.1, "default_backoff_limit": 0, "queues": "one=1"}
            service = local_service(tmp / "data", **settings)
        try:
            yield Server(request.param, service, receiver, emulator)
        finally:
            service.stop()
    finally:
        receiver.close()
        if emulator is not None:
            emulator.stop()


def test_submit_wait_exits_0_when_the_job_succeeds_and_get_prints_json(server: Server) -> None:
    proc = server.start("submit", "timer", *server.timer_flags(), "--name", "cli-ok", "--wait", "-o", "name")
    job_id = first_line(proc).strip()
    assert JOB_ID.fullmatch(job_id), job_id
    server.finish(job_id, succeed=True)
    code, out, err = finished(proc)
    assert code == 0, err
    assert out == "" and err == ""  # -o name: the id, once; nothing on stderr off a terminal

    result = server.run("get", job_id, "-o", "json")
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert (job["job_id"], job["name"], job["type"], job["phase"]) == (job_id, "cli-ok", "timer", "SUCCEEDED")
    assert job["queue"] == "default" and job["created_at"].endswith("Z")


def test_submit_wait_shows_a_live_status_line_only_on_a_terminal(server: Server) -> None:
    if server.emulator is None:
        pytest.skip("the status line does not depend on the backend: run once, on the emulator")
    primary, secondary = pty.openpty()  # stderr is a terminal, stdout a pipe
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobscheduler", "submit", "timer", *server.timer_flags(), "--wait"],
        env={k: v for k, v in server.env().items() if k != "NO_COLOR"},
        stdout=subprocess.PIPE,
        stderr=secondary,
        text=True,
        cwd=ROOT,
    )
    os.close(secondary)
    try:
        job_id = JOB_ID.search(first_line(proc)).group(0)  # type: ignore[union-attr]
        screen = ""
        line = re.compile(rf"{job_id}\s+PENDING\s+attempt 0\s+elapsed \d+s")
        while not line.search(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)):
            ready, _, _ = select.select([primary], [], [], 15)
            assert ready, f"no status line on the terminal: {screen!r}"
            screen += os.read(primary, 4096).decode(errors="replace")
        server.finish(job_id, succeed=True)
        code, out, _ = finished(proc)
    finally:
        os.close(primary)
    assert code == 0 and "\x1b" not in out  # the table on stdout (a pipe) has no colour


def test_submit_wait_exits_1_when_the_job_fails_after_its_retries(server: Server) -> None:
    flags = [*server.timer_flags(fail=True), "--retries", "1", "--retry-backoff", "0"]
    proc = server.start("submit", "timer", *flags, "--wait")
    first = first_line(proc)
    job_id = JOB_ID.search(first).group(0)  # type: ignore[union-attr]
    assert f"{job_id} submitted (timer 'timer'" in first
    server.finish(job_id, succeed=False)
    if server.emulator is not None:  # the retry, made by the service once the first failed, fails too
        with server.client() as c:
            selector = f"jobscheduler.io/retry-of={job_id}"
            retry = eventually(lambda: list(c.list(label_selector=selector)), "the retry")[0]
        server.finish(retry.job_id, succeed=False)
    code, out, err = finished(proc)
    assert code == 1, (out, err)
    retry_id = re.search(rf"^(job-\w+)  retry 1 of 1 of {job_id}$", out, re.M).group(1)  # type: ignore[union-attr]
    for failed in (job_id, retry_id):
        assert re.search(rf"^{failed}\s+FAILED\s+attempts \d+\s+\S+\s+BackoffLimitExceeded", out, re.M), out
    assert err == ""


def test_list_all_sees_every_job_across_pages(server: Server) -> None:
    with server.client() as c:
        ids = {
            c.schedule(
                "cli-page", client.TimerJob(60, "t", server.receiver.url), labels={"batch": "pages"}
            ).job_id
            for _ in range(5)
        }
    result = server.run("list", "--all", "--limit", "2", "-l", "batch=pages", "-o", "json")
    assert result.returncode == 0, result.stderr
    listed = [j["job_id"] for j in json.loads(result.stdout)["jobs"]]
    assert sorted(listed) == sorted(ids)  # each once, from three pages

    first_page = server.run("list", "--limit", "2", "--name-prefix", "cli-pa", "--phase", "pending,running")
    assert first_page.returncode == 0, first_page.stderr
    lines = first_page.stdout.splitlines()
    assert lines[0].split()[:4] == ["JOB", "ID", "NAME", "TYPE"] and len(lines) == 3
    assert first_page.stderr == "(the newest 2; --all lists every job)\n"
    for c_id in ids:  # stop them: they would run for a minute
        with server.client() as c:
            c.cancel(c_id)


def test_watch_prints_every_phase_change_of_one_job_and_of_all(server: Server) -> None:
    with server.client() as c:
        # The queue "one" runs one job at a time: the watched job waits QUEUED behind another
        # until both watches have printed that state.
        blocker = c.schedule("cli-block", client.TimerJob(60, "t", server.receiver.url), queue="one")
        timer = client.TimerJob(1, "t", server.receiver.url)
        job = c.schedule("cli-watch", timer, queue="one", labels={"w": "1"})
    assert job.phase is client.JobPhase.QUEUED
    one = server.start("watch", job.job_id, "-o", "json")
    every = server.start("watch", "-l", "w=1", "-o", "json")
    assert json.loads(first_line(one))["job"]["phase"] == "QUEUED"  # the current state first
    events = [json.loads(first_line(every))]
    with server.client() as c:
        c.cancel(blocker.job_id)
    # Admitted; on Kubernetes the test then plays the Job controller.
    if server.emulator is not None:
        eventually(lambda: not server.emulator.job(job.job_id)["spec"].get("suspend"), "resumed")  # type: ignore[union-attr]
        server.start_running(job.job_id)
        with server.client() as c:
            eventually(lambda: c.get(job.job_id).phase is client.JobPhase.RUNNING, "running")
    server.finish(job.job_id, succeed=True)
    code, out, err = finished(one)
    assert code == 0, err
    phases = ["QUEUED"] + [json.loads(line)["job"]["phase"] for line in out.splitlines()]
    changes = [p for i, p in enumerate(phases) if i == 0 or p != phases[i - 1]]
    assert changes[0] == "QUEUED" and changes[-2:] == ["RUNNING", "SUCCEEDED"], phases
    assert set(changes) <= {"QUEUED", "PENDING", "RUNNING", "SUCCEEDED"}

    while events[-1]["type"] != "SUCCEEDED":
        events.append(json.loads(first_line(every)))
    every.terminate()
    finished(every)
    assert {e["job"]["job_id"] for e in events} == {job.job_id}
    seen = [e["job"]["phase"] for e in events]
    assert seen[0] == "QUEUED" and "RUNNING" in seen and seen[-1] == "SUCCEEDED", seen
    assert all(e["resume_token"] for e in events)


def test_watch_resumes_after_the_connection_drops_without_losing_or_repeating(server: Server) -> None:
    if server.emulator is None:
        pytest.skip("the command's resuming does not depend on the backend: run once, on the emulator")
    with server.client() as c:
        job = c.schedule("cli-resume", client.TimerJob(60, "t", server.receiver.url), labels={"r": "1"})
    proxy = TcpProxy(server.service.port)
    other: client.Job | None = None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobscheduler", "watch", "-l", "r=1", "-o", "json"],
            env={**server.env(), "JOBSCHEDULER_ADDR": f"127.0.0.1:{proxy.port}"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        first = json.loads(first_line(proc))
        assert (first["type"], first["job"]["phase"]) == ("CREATED", "PENDING")
        proxy.cut()  # and refused until resumed: the client's own reconnects give up
        assert "connection lost; resuming the watch" in stderr_line(proc)
        with server.client() as c:  # changes while the command is cut off
            c.cancel(job.job_id)
            other = c.schedule("cli-resume", client.TimerJob(60, "t", server.receiver.url), labels={"r": "1"})
        proxy.resume()
        events = [json.loads(first_line(proc)) for _ in range(2)]
        proc.terminate()
        _, out, _ = finished(proc)
    finally:
        proxy.close()
        if other is not None:
            with server.client() as c:
                c.cancel(other.job_id)
    assert [(e["type"], e["job"]["job_id"]) for e in events] == [
        ("CANCELLED", job.job_id),
        ("CREATED", other.job_id),
    ]
    assert out == ""  # and nothing more: no event repeated


def test_logs_follow_waits_for_the_job_to_start_then_streams_lines_while_it_runs(server: Server) -> None:
    with server.client() as c:
        # Held QUEUED behind another job until `logs -f` said it waits.
        blocker = c.schedule("cli-block", client.TimerJob(60, "t", server.receiver.url), queue="one")
        job = c.schedule("cli-logs", client.TimerJob(2, "t", server.receiver.url), queue="one")
        proc = server.start("logs", "-f", job.job_id)
        assert stderr_line(proc) == f"jobscheduler: waiting for {job.job_id} to start\n"
        c.cancel(blocker.job_id)
        pod = ""
        if server.emulator is not None:  # the Job controller and the kubelet
            eventually(lambda: not server.emulator.job(job.job_id)["spec"].get("suspend"), "admitted")  # type: ignore[union-attr]
            pod = make_pod(server.emulator, job.job_id, "logs1", utcnow())
            set_pod_state(server.emulator, job.job_id, pod, running(utcnow()))
            server.start_running(job.job_id)
            server.emulator.write_log(pod, "first line")
        line = first_line(proc)
        # A line arrived while the job still runs: it is streamed, not printed at the end.
        assert c.get(job.job_id).phase is client.JobPhase.RUNNING, line
    if server.emulator is not None:
        assert line == "first line\n"
        server.emulator.write_log(pod, "second line")
        assert first_line(proc) == "second line\n"
        server.emulator.end_log(pod)  # the container exits
    else:
        assert json.loads(line)["event"] == "timer started"
    code, out, err = finished(proc)
    assert code == 0, err
    if server.emulator is None:
        assert "timer completed" in out


def test_a_bad_flag_value_names_the_field(server: Server) -> None:
    result = server.run(
        "submit",
        "timer",
        "--param",
        "duration_seconds=0",
        "--endpoint",
        "http://x/",
        "--env",
        "LD_PRELOAD=/x.so",
    )
    assert result.returncode == 4, result
    assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
    assert "timer_job.duration_seconds" in result.stderr and "timer_job.env[LD_PRELOAD]" in result.stderr
    assert result.stderr.startswith("jobscheduler: invalid argument: ")


def test_cancel_then_get_of_a_missing_job(server: Server) -> None:
    with server.client() as c:
        job = c.schedule("cli-cancel", client.TimerJob(60, "t", server.receiver.url))
    result = server.run("cancel", job.job_id, "--reason", "not needed", "-o", "yaml")
    assert result.returncode == 0, result.stderr
    assert f"job_id: {job.job_id}\n" in result.stdout and "phase: CANCELLED\n" in result.stdout
    missing = server.run("get", "job-0000000000")
    assert missing.returncode == 3 and missing.stdout == ""
    assert missing.stderr.startswith("jobscheduler: not found: ") and missing.stderr.count("\n") == 1


def test_the_readme_quick_start_runs_as_written(server: Server) -> None:
    if server.emulator is not None:
        pytest.skip("the quick start runs without a cluster: the local backend")
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert blocks[0].splitlines() == [
        "python3 -m venv .venv && . .venv/bin/activate",
        "pip install .",
        "jobscheduler serve",
    ]
    commands = blocks[1].replace("\\\n", " ").splitlines()
    assert commands[0].startswith("jobscheduler report-sink &")
    submit = shlex.split(next(c for c in commands if c.startswith("jobscheduler submit")))
    # The stand-in control plane of this test, instead of report-sink's default port.
    argv = [a.replace("http://127.0.0.1:50053", server.receiver.url) for a in submit[1:]]
    assert argv[-1] == "--wait"
    result = server.run(*argv)
    assert result.returncode == 0, result
    assert re.search(r"^job-\w+  SUCCEEDED  attempts 1  ", result.stdout, re.M), result.stdout
