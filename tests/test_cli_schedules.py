"""The command line's rerun, schedules and templates (and submit --template, list --schedule):
the ``jobscheduler`` program as a subprocess against a recording gRPC server on 127.0.0.1 (what
each command sends, what it prints), flag errors in process, and end to end against the service
(local backend)."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator

import grpc
import pytest
import yaml
from conftest import ROOT, ServeProcess
from schedule_recorder import Recorder, RecordingServer, recording_server, skip_unless_served

from jobscheduler import cli, client
from jobscheduler._generated import jobscheduler_pb2 as pb

pytestmark = pytest.mark.timeout(60)


def run(addr: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JOBSCHEDULER_ADDR": addr, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "jobscheduler", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def recording() -> Iterator[RecordingServer]:
    with recording_server() as server:
        yield server


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def cmd(capsys: pytest.CaptureFixture[str]) -> Callable[..., str]:
    """The program in process (the same main() as the subprocess runs, much faster): its stdout,
    after asserting it exited 0."""

    def call(addr: str, *args: str) -> str:
        code = cli.main([*args, "--addr", addr])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        return captured.out

    return call


def test_schedules_create_sends_the_schedule_and_its_job(recording: RecordingServer) -> None:
    out = ok(
        run(
            recording.addr,
            *("schedules", "create", "nightly", "--cron", "*/5 * * * *", "--time-zone", "Europe/Berlin"),
            *("--concurrency-policy", "Forbid", "--starting-deadline", "5m", "--suspend"),
            *("timer", "--duration", "30s", "--endpoint", "http://sink/", "--queue", "batch"),
            *("--label", "team=a", "--failed-history", "2"),
        )
    )
    sent: pb.CreateScheduleRequest = recording.recorder.sent("CreateSchedule")[-1]
    assert (sent.name, sent.cron, sent.time_zone) == ("nightly", "*/5 * * * *", "Europe/Berlin")
    assert sent.concurrency_policy == pb.CONCURRENCY_POLICY_FORBID and sent.starting_deadline_seconds == 300
    assert sent.suspend and sent.failed_jobs_history_limit == 2
    assert not sent.HasField("successful_jobs_history_limit")
    # the job: submit's flags; its name (and the timer's) default to the schedule's
    assert (sent.job.name, sent.job.queue, dict(sent.job.labels)) == ("nightly", "batch", {"team": "a"})
    timer = sent.job.timer_job
    assert (timer.duration_seconds, timer.timer_name, timer.control_plane_endpoint) == (
        30,
        "nightly",
        "http://sink/",
    )
    header, row = out.splitlines()
    assert header.split()[:3] == ["NAME", "SCHEDULE", "TIMEZONE"]
    assert row.startswith("nightly") and "*/5 * * * *" in row and "Europe/Berlin" in row


def test_schedules_get_list_update_suspend_resume_trigger_delete(
    recording: RecordingServer, cmd: Callable[..., str]
) -> None:
    rec, addr = recording.recorder, recording.addr
    listed = json.loads(cmd(addr, "schedules", "list", "--name-prefix", "n", "-o", "json"))
    assert [s["name"] for s in listed["schedules"]] == [f"n{i}" for i in range(6)]  # every page
    assert listed["schedules"][0]["next_run_time"] == "2026-11-27T17:00:00Z"
    assert cmd(addr, "schedules", "get", "nightly", "-o", "name") == "nightly\n"
    wide = cmd(addr, "schedules", "get", "nightly", "-o", "wide").splitlines()
    assert wide[0].split()[-7:] == ["TYPE", "POLICY", "QUEUE", "MISSED", "SKIPPED", "TEMPLATE", "DESCRIPTION"]

    cmd(addr, "schedules", "update", "nightly", "--cron", "@daily", "--no-starting-deadline")
    cmd(addr, "schedules", "suspend", "nightly", "-o", "name")
    cmd(addr, "schedules", "resume", "nightly", "-o", "name")
    updates = rec.sent("UpdateSchedule")[-3:]
    assert updates[0] == pb.UpdateScheduleRequest(name="nightly", cron="@daily", clear_starting_deadline=True)
    assert [u.suspend for u in updates[1:]] == [True, False]
    assert all(u.HasField("suspend") for u in updates[1:])

    assert cmd(addr, "schedules", "trigger", "nightly", "-o", "name") == "job-trig\n"
    out = cmd(addr, "schedules", "delete", "nightly", "--cancel-jobs")
    assert out == "schedule/nightly deleted (cancelled job-a)\n"
    assert rec.sent("DeleteSchedule")[-1].cancel_jobs


def test_templates_submit_from_a_template_rerun_and_list_by_origin(
    recording: RecordingServer, cmd: Callable[..., str]
) -> None:
    rec, addr = recording.recorder, recording.addr
    made = yaml.safe_load(
        cmd(
            addr,
            *("templates", "create", "nightly", "--description", "the nightly run", "timer"),
            *("--duration", "5s", "--priority", "high", "-o", "yaml"),
        )
    )
    assert (made["name"], made["version"], made["job_type"]) == ("nightly", 1, "timer")
    sent = rec.sent("CreateJobTemplate")[-1]
    assert sent.description == "the nightly run" and sent.job.priority == pb.JOB_PRIORITY_HIGH
    # a template's request may be partial: what is not given is not sent
    assert sent.job.timer_job == pb.TimerJob(duration_seconds=5, timer_name="nightly")
    assert sent.job.name == "nightly"

    table = cmd(addr, "templates", "get", "nightly", "--version", "3")
    assert table.split("\n")[1].split()[:3] == ["nightly", "3", "timer"]
    assert cmd(addr, "templates", "delete", "nightly") == "template/nightly deleted (3 versions)\n"

    job_id = cmd(addr, "submit", "--template", "nightly", "--template-version", "2", "-o", "name")
    assert job_id == "job-new\n"
    submitted = rec.sent("ScheduleJob")[-1]
    assert (submitted.template, submitted.template_version, submitted.name) == ("nightly", 2, "")
    assert submitted.WhichOneof("job") is None

    rerun = json.loads(
        cmd(addr, "rerun", "job-old", "--param", "duration_seconds=9", "--label", "try=2", "-o", "json")
    )
    assert (rerun["job_id"], rerun["rerun_of"]) == ("job-rerun", "job-old")
    overrides = rec.sent("RerunJob")[-1].overrides
    # only what was given: the rest stays the original job's (whose type was asked for)
    assert overrides == pb.ScheduleJobRequest(timer_job=pb.TimerJob(duration_seconds=9), labels={"try": "2"})
    assert rec.sent("GetJobStatus")[-1].job_id == "job-old"

    wide = cmd(addr, "list", "--schedule", "nightly", "--rerun-of", "job-x", "--template", "t", "-o", "wide")
    assert "ORIGIN" in wide.splitlines()[0] and "schedule/nightly" in wide.splitlines()[1]
    f = rec.sent("ListJobs")[-1].filter
    assert (f.schedule, f.rerun_of, f.template) == ("nightly", "job-x", "t")


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["schedules", "update", "s", "--queue", "q"], 4, "TYPE: --queue goes with a job"),
        (["schedules", "update", "s"], 4, "nothing to change"),
        (["schedules", "create", "s", "--cron", "@daily"], 4, "TYPE: give the job's TYPE"),
        (
            ["schedules", "create", "s", "--cron", "@daily", "--concurrency-policy", "never", "timer"],
            4,
            "--concurrency-policy",
        ),
        (
            ["schedules", "create", "s", "--cron", "@daily", "--successful-history", "-1", "timer"],
            4,
            "--successful-history",
        ),
        (["schedules", "create", "s", "timer"], 2, "--cron"),
        (["submit", "--queue", "q"], 4, "TYPE: give a job type"),
        (["submit", "timer", "--template-version", "2"], 4, "--template-version: goes with --template"),
        (["templates", "create", "t"], 2, "TYPE"),
        (["templates", "update", "t", "--param", "a=b"], 4, "TYPE: --param goes with a job"),
        (["templates", "get", "t", "--version", "0"], 4, "--version"),
    ],
)
def test_flag_errors_name_the_flag_before_anything_is_sent(
    argv: list[str],
    code: int,
    words: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # nothing listens: a request sent would fail otherwise
    monkeypatch.setenv("JOBSCHEDULER_ADDR", "127.0.0.1:9")
    with pytest.raises(SystemExit) if code == 2 else contextlib.nullcontext():
        assert cli.main(argv) == code
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1, err


# --- end to end: the service (local backend) ------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``jobscheduler serve`` on the local backend, as a process of its own (its log is not mixed
    into the output the in-process commands print); its address."""
    data = tmp_path_factory.mktemp("cli-schedules") / "data"
    env = {"BACKEND": "local", "DATA_DIR": str(data), "GRPC_PORT": "0", "HEALTH_PORT": "0"}
    proc = ServeProcess({**env, "GRPC_HOST": "127.0.0.1", "RATE_LIMIT_RPS": "0"})
    try:
        yield f"127.0.0.1:{proc.grpc_port}"
    finally:
        proc.stop()


def test_a_schedule_from_a_template_triggered_and_its_job_rerun(served: str, cmd: Callable[..., str]) -> None:
    addr = served
    with client.Client(addr) as c:
        skip_unless_served("templates", lambda: c.get_template("probe"))
        skip_unless_served("schedules", lambda: c.get_schedule("probe"))
    tpl = ("cli-tpl", "timer", "--duration", "1h", "--endpoint", "http://127.0.0.1:9/")
    ok(run(addr, "templates", "create", *tpl))  # (the program itself, once)
    # the template, its duration overridden (only that parameter is sent)
    sched = ("cli-sched", "--cron", "0 3 * * *", "--template", "cli-tpl", "--suspend")
    cmd(addr, "schedules", "create", *sched, "timer", "--duration", "2h")
    shown = json.loads(cmd(addr, "schedules", "get", "cli-sched", "-o", "json"))
    assert shown["suspend"] is True and shown["job"]["template"] == "cli-tpl"
    job_id = cmd(addr, "schedules", "trigger", "cli-sched", "-o", "name").strip()
    listed = json.loads(cmd(addr, "list", "--schedule", "cli-sched", "-o", "json"))
    assert [j["job_id"] for j in listed["jobs"]] == [job_id] and listed["jobs"][0]["template"] == "cli-tpl"
    cmd(addr, "cancel", job_id)
    again = cmd(addr, "rerun", job_id, "-o", "name").strip()
    assert json.loads(cmd(addr, "get", again, "-o", "json"))["rerun_of"] == job_id
    cmd(addr, "cancel", again)
    assert "deleted" in cmd(addr, "schedules", "delete", "cli-sched", "--cancel-jobs")
    assert cmd(addr, "templates", "delete", "cli-tpl").startswith("template/cli-tpl deleted")


def test_completion_knows_the_actions_their_flags_and_the_policies(tmp_path: pathlib.Path) -> None:
    from jobscheduler.commands._completion import script

    bash = script(cli.build_parser(), "bash")
    path = tmp_path / "c.sh"
    path.write_text(bash)
    if not shutil.which("bash"):
        pytest.skip("no bash here")
    probe = tmp_path / "probe.sh"
    probe.write_text(
        f"source {path}\n"
        'complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _jobscheduler_complete;'
        ' echo "${COMPREPLY[*]}"; }\n'
        "complete_words jobscheduler schedules ''\n"
        "complete_words jobscheduler schedules create n --concurrency-policy ''\n"
        "complete_words jobscheduler templates get n --ver\n"
        "complete_words jobscheduler list --rerun\n"
        "complete_words jobscheduler rerun job-x --req\n"
    )
    result = subprocess.run(["bash", str(probe)], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "create update get suspend resume trigger delete list --help",
        "allow forbid replace",
        "--version",
        "--rerun-of",
        "--request-id --request-timeout",
    ]


class _LaggingRecorder(Recorder):
    """WatchJobs: the first stream delivers two events, then ends OUT_OF_RANGE as a server does
    with a stream that fell behind (naming the last event's token); a stream resumed from that
    token delivers the third and ends; a stream from any other token is OUT_OF_RANGE (expired)."""

    def __init__(self) -> None:
        super().__init__()
        self.watches: list[str] = []

    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        self._record("ListJobs", request, context)
        return pb.ListJobsResponse(resume_token="e.0")

    def WatchJobs(self, request: pb.WatchJobsRequest, context: grpc.ServicerContext) -> Iterator[pb.JobEvent]:
        self.watches.append(request.resume_token)
        job = pb.Job(job_id="job-w", name="n", type="timer", phase=pb.JOB_PHASE_RUNNING)
        if len(self.watches) == 1:
            for seq in (1, 2):
                yield pb.JobEvent(type=pb.JOB_EVENT_TYPE_UPDATED, job=job, resume_token=f"e.{seq}")
            context.abort(grpc.StatusCode.OUT_OF_RANGE, "fell behind; resume with resume_token 'e.2'")
        if request.resume_token != "e.2":
            context.abort(grpc.StatusCode.OUT_OF_RANGE, "the resume token is older than the window")
        yield pb.JobEvent(type=pb.JOB_EVENT_TYPE_SUCCEEDED, job=job, resume_token="e.3")


def test_watch_that_fell_behind_resumes_from_its_last_event_without_listing_again() -> None:
    lagging = _LaggingRecorder()
    server = RecordingServer(lagging)
    try:
        result = run(server.addr, "watch", "--watch-only", "-o", "json")
        assert result.returncode == 0, result.stderr
        events = [json.loads(line) for line in result.stdout.splitlines()]
        assert [e["resume_token"] for e in events] == ["e.1", "e.2", "e.3"]  # nothing lost or repeated
        assert lagging.watches == ["e.0", "e.2"]  # resumed from the last event's token ...
        assert len(lagging.sent("ListJobs")) == 1  # ... not listed again (the client resumed)
        assert "listing the jobs again" not in result.stderr
    finally:
        server.stop()
