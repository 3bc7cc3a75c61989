"""The client commands in process: ages and durations, ``--param`` parsing, tables and the machine
formats, colour, error lines and exit codes, connection settings, usage errors, shell completion.
(tests/test_cli_client.py runs the program against servers.)"""

from __future__ import annotations

import datetime as dt
import io
import json
import pathlib
import re
import shutil
import subprocess
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobscheduler import cli, client
from jobscheduler.commands import _connect, _output
from jobscheduler.commands._errors import EXIT_CODES, describe, exit_code
from jobscheduler.commands._params import BadValue, build_spec
from jobscheduler.commands._time import ValueProblem, human_duration, parse_duration, parse_time

# --- in process: ages, durations, parameters, tables, errors -------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (192, "3m12s"),
        (599, "9m59s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (5 * 3600 + 120, "5h2m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (40 * 86400, "40d"),
        (2 * 365 * 86400 + 30 * 86400, "2y30d"),
        (9 * 365 * 86400, "9y"),
        (-0.5, "0s"),
        (-5, "<invalid>"),
    ],
)
def test_ages_are_kubectl_style(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


@given(st.integers(0, 99), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999))
@settings(max_examples=50, deadline=None)
def test_durations_parse_in_any_combination(h: int, m: int, s: int, ms: int) -> None:
    assert parse_duration(f"{h}h{m}m{s}s{ms}ms") == pytest.approx(h * 3600 + m * 60 + s + ms / 1000)
    assert parse_duration(str(s)) == s


@pytest.mark.parametrize("bad", ["", "5x", "m", "1h 2m", "-3s", "1e3s", "5" * 100])
def test_bad_durations_say_what_is_expected(bad: str) -> None:
    with pytest.raises(ValueProblem, match="is not a duration like 30s"):
        parse_duration(bad)


def test_times_are_rfc3339_and_utc_without_an_offset() -> None:
    assert parse_time("2026-05-01T12:00:00Z") == dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
    assert parse_time("2026-05-01T14:00:00+02:00") == dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
    assert parse_time("2026-05-01T12:00:00").tzinfo is dt.UTC
    with pytest.raises(ValueProblem, match="RFC 3339"):
        parse_time("tomorrow")


def test_params_become_the_job_types_fields_and_maps_take_dotted_keys() -> None:
    spec = build_spec(
        "timer",
        client.TimerJob,
        ["duration_seconds=30", "control_plane_endpoint=http://cp:1/?a=b", "env.MODE=fast", "env.X=a=b"],
        {"timer_name": "nightly"},
    )
    assert spec == client.TimerJob(30, "nightly", "http://cp:1/?a=b", env={"MODE": "fast", "X": "a=b"})


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        (["duration_seconds=soon"], "timer_job.duration_seconds", "must be an integer"),
        (["bogus=1"], "timer_job.bogus", "is not a parameter of timer jobs"),
        (["env=x"], "timer_job.env", "is a map"),
        (["timer_name.x=1"], "timer_job.timer_name.x", "is not a map"),
        (["no-equals-sign"], "--param", "must be KEY=VALUE"),
        (["duration_seconds=3"], "timer_job.control_plane_endpoint", "is required"),
        (["x=1"] * 300, "timer_job", "at most 256"),
    ],
)
def test_bad_params_name_the_field(params: list[str], field: str, words: str) -> None:
    with pytest.raises(BadValue) as caught:
        build_spec("timer", client.TimerJob, params, {"timer_name": "t"})
    assert caught.value.field == field
    assert words in caught.value.description


def job_dict(**extra: Any) -> dict[str, Any]:
    job = client.Job(
        job_id="job-abcdefghij",
        name="nightly",
        type="timer",
        phase=client.JobPhase.RUNNING,
        created_at=dt.datetime(2026, 5, 1, 12, 0, 0, tzinfo=dt.UTC),
        attempts=1,
        duration=dt.timedelta(seconds=192),
        message="line one\nline\x1b[31mtwo",
    )
    return {**job.to_dict(), **extra}


def test_tables_align_columns_and_keep_each_row_on_one_line() -> None:
    now = dt.datetime(2026, 5, 1, 12, 3, 12, tzinfo=dt.UTC)
    rows = [job_dict(), job_dict(job_id="job-0123456789", name="a-much-longer-name", phase="SUCCEEDED")]
    lines = _output.table(rows, _output.columns_for("job", wide=True), now=now)
    assert lines[0].split()[:3] == ["JOB", "ID", "NAME"]
    assert lines[1].split()[:7] == ["job-abcdefghij", "nightly", "timer", "RUNNING", "1", "3m12s", "3m12s"]
    # Every column starts at the same offset in every line.
    starts = [line.index(word) for line, word in zip(lines, ("PHASE", "RUNNING", "SUCCEEDED"), strict=True)]
    assert len(set(starts)) == 1
    assert len(lines) == 3 and "\x1b" not in "".join(lines)  # the message's escape and line break are gone


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert _output.colour_wanted(Tty()) and not _output.colour_wanted(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not _output.colour_wanted(Tty())
    out = Tty()
    monkeypatch.delenv("NO_COLOR")
    _output.emit({}, fmt="table", rows=[job_dict(phase="FAILED")], kind="job", out=out)
    assert "\x1b[31mFAILED\x1b[0m" in out.getvalue()


def test_machine_formats_print_the_whole_answer(capsys: pytest.CaptureFixture[str]) -> None:
    row = job_dict()
    for fmt in ("json", "yaml", "name"):
        _output.emit({"jobs": [row]}, fmt=fmt, rows=[row], kind="job")
    out = capsys.readouterr().out
    document, rest = out.split("\n}\n", 1)
    assert json.loads(document + "}")["jobs"][0]["duration"] == 192.0
    assert "jobs:\n- job_id: job-abcdefghij\n" in rest and rest.endswith("\njob-abcdefghij\n")


def test_every_error_class_has_its_exit_code_and_one_line() -> None:
    bad = client.InvalidArgument(
        "bad request",
        field_violations=(client.FieldViolation("timer_job.env[LD_PRELOAD]", "is reserved\nreally"),),
        request_id="r1",
    )
    assert describe(bad) == "invalid argument: timer_job.env[LD_PRELOAD]: is reserved really (request id r1)"
    assert exit_code(bad) == 4
    assert exit_code(client.NotFound("x")) == 3
    assert exit_code(client.Unavailable("x")) == exit_code(client.DeadlineExceeded("x")) == 5
    assert exit_code(client.Internal("x")) == 1
    assert len({code for _, code in EXIT_CODES} | {1, 2}) == 8  # usage 2, failed 1, and six more


def test_connection_settings_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = cli.build_parser()
    monkeypatch.setenv("JOBSCHEDULER_ADDR", "env-host:1")
    monkeypatch.setenv("JOBSCHEDULER_TOKEN_FILE", "/run/token")
    conn = _connect.resolve(parser.parse_args(["get", "job-x"]))
    assert (conn.addr, conn.token, conn.token_file, conn.tls) == ("env-host:1", None, "/run/token", None)
    conn = _connect.resolve(parser.parse_args(["get", "job-x", "--addr", "flag:2", "--token", "t"]))
    assert (conn.addr, conn.token, conn.token_file) == ("flag:2", "t", None)
    monkeypatch.setenv("JOBSCHEDULER_CERT_FILE", "/c.pem")
    with pytest.raises(_connect.ConnectionProblem, match="go together"):
        _connect.resolve(parser.parse_args(["get", "job-x"]))


def test_usage_errors_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["get"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "required: ID" in err


def test_completion_scripts_know_every_command_and_parse(tmp_path: pathlib.Path) -> None:
    parser = cli.build_parser()
    from jobscheduler.commands._completion import script

    bash = script(parser, "bash")
    for word in ("submit", "watch", "--selector", "--depends-on", "succeeded", "critical", "timer"):
        assert word in bash
    assert script(parser, "zsh").startswith("autoload -U +X bashcompinit")
    if shutil.which("bash"):
        (tmp_path / "c.sh").write_text(bash)
        assert subprocess.run(["bash", "-n", str(tmp_path / "c.sh")], timeout=10).returncode == 0


def test_server_strings_cannot_drive_the_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    hostile = "a\x1b]0;owned\x07b\x9b31mc\u202ed ünï"
    row = job_dict(name=hostile, message=hostile)
    _output.emit({"jobs": [row]}, fmt="json", rows=[row], kind="job")
    _output.emit({}, fmt="wide", rows=[row], kind="job")
    out = capsys.readouterr().out
    document, table = out.split("\n}\n", 1)
    assert json.loads(document + "}")["jobs"][0]["name"] == hostile  # the same data, escaped
    for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert raw not in out
    assert "ünï" in document and "ünï" in table


@given(st.lists(st.text(max_size=40), max_size=6), st.text(max_size=40))
@settings(max_examples=150, deadline=None)
def test_any_flag_text_is_a_value_or_a_problem_naming_the_flag(params: list[str], text: str) -> None:
    """Whatever is typed, a flag value parses or is refused with a field or flag name: no other
    exception (which would be a traceback)."""
    from jobscheduler.commands import _values

    try:
        build_spec("timer", client.TimerJob, params, {"timer_name": "t"})
    except BadValue as exc:
        assert exc.field.startswith(("timer_job", "--param"))
    for check in (
        lambda: _values.seconds("--delay", text),
        lambda: _values.integer("--retries", text, 0, 10),
        lambda: _values.time("--after", text),
        lambda: _values.priority(text),
        lambda: _values.phases([text]),
    ):
        try:
            check()
        except BadValue as exc:
            assert exc.field.startswith("--")


def test_an_unreadable_connection_file_is_a_usage_error_naming_it(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "ca.pem"
    assert cli.main(["get", "job-x", "--addr", "127.0.0.1:1", "--ca-file", str(missing)]) == 2
    assert capsys.readouterr().err == f"jobscheduler: cannot read {missing}: No such file or directory\n"


def test_wait_prints_the_end_of_a_retry_that_had_ended_before_it_was_watched(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The first job ended FAILED, and so had its retry by the time --wait watched it: the retry's
    FAILED line was not printed (its phase equalled the previous job's last one)."""
    from jobscheduler import client
    from jobscheduler.commands._follow import wait

    first = client.Job(
        "job-first00000",
        "t",
        "timer",
        client.JobPhase.FAILED,
        reason="BackoffLimitExceeded",
        max_retries=1,
        attempts=1,
    )
    retry = client.Job(
        "job-retry00000",
        "t",
        "timer",
        client.JobPhase.FAILED,
        reason="BackoffLimitExceeded",
        max_retries=1,
        retry_number=1,
        retry_of=first.job_id,
        attempts=1,
    )

    class Fake:
        def watch(self, job_id: str) -> Any:
            job = first if job_id == first.job_id else retry
            return iter([client.JobEvent(client.EventType.FAILED, job)])

        def list_page(self, **_: Any) -> Any:
            return client.JobPage(jobs=(), next_page_token="", resume_token="")

        def list(self, **_: Any) -> Any:
            return iter([retry])

    last = wait(Fake(), first, None)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert last is retry
    assert f"{retry.job_id}  retry 1 of 1 of {first.job_id}" in out
    assert re.search(rf"^{retry.job_id}\s+FAILED\s+attempts 1", out, re.M), out
