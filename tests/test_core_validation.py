"""Hostile input, unit by unit: reserved env names, control characters, sizes bounded before
work, capped error details, out-of-range times, malformed tokens and annotations."""

from __future__ import annotations

import base64
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.api import convert
from jobscheduler.api.errors import to_status
from jobscheduler.backends.kubernetes._status import job_record
from jobscheduler.core.errors import MAX_VIOLATIONS, FieldViolation, InvalidArgument
from jobscheduler.core.index import JobIndex
from jobscheduler.core.model import JobFilter, JobPhase, ScheduleRequest
from jobscheduler.core.naming import control_character_problem, reserved_env_problem
from jobscheduler.core.query import paginate
from jobscheduler.core.selectors import _split, parse_selector
from jobscheduler.core.validation import check_cancel_reason, label_violations, scheduling_violations
from jobscheduler.jobtypes.timer import TimerHandler

HANDLER = TimerHandler("ghcr.io/acme/jobscheduler:1")


def timer_params(**extra: Any) -> dict[str, Any]:
    return {
        "duration_seconds": 5,
        "timer_name": "t",
        "control_plane_endpoint": "http://127.0.0.1:9/",
        **extra,
    }


def violation_fields(exc: InvalidArgument) -> set[str]:
    return {v.field for v in exc.violations}


# --- item 1: env names that run code, control characters -------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "PYTHONPATH",
        "PYTHONWARNINGS",
        "PYTHONSTARTUP",
        "BROWSER",
        "PATH",
        "HOME",
        "TMPDIR",
        "JOBSCHEDULER_JOB_ID",
        "KUBERNETES_SERVICE_HOST",
        "BASH_ENV",
        "ENV",
        "PERL5OPT",
        "NODE_OPTIONS",
        "GCONV_PATH",
        "SSL_CERT_FILE",
        "GLIBC_TUNABLES",
        "ld_preload",  # compared case-insensitively
        "Path",
    ],
)
def test_reserved_env_names_are_refused_naming_the_key(name: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        HANDLER.parse(timer_params(env={name: "x"}))
    assert violation_fields(err.value) == {f"timer_job.env[{name}]"}
    assert "reserved" in err.value.violations[0].description


@pytest.mark.parametrize("name", ["REPORT_MAX_ATTEMPTS", "HTTPS_PROXY", "MY_PATH", "HOMEPAGE_URL", "LANG"])
def test_ordinary_env_names_are_allowed(name: str) -> None:
    assert reserved_env_problem(name) is None
    assert HANDLER.parse(timer_params(env={name: "x"})).env == {name: "x"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"env": {"A": "x\0y"}}, "timer_job.env[A]"),
        ({"env": {"A": "bell\x07"}}, "timer_job.env[A]"),
        ({"control_plane_endpoint": "http://127.0.0.1:9/\0x"}, "timer_job.control_plane_endpoint"),
        ({"control_plane_endpoint": "http://127.0.0.1:9/\x85"}, "timer_job.control_plane_endpoint"),
        ({"timer_name": "a\0b"}, "timer_job.timer_name"),
        ({"image": "ghcr.io/acme/x\0:1"}, "timer_job.image"),
    ],
)
def test_control_characters_are_refused(params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        HANDLER.parse(timer_params(**params))
    assert field in violation_fields(err.value)


def test_env_values_may_span_lines() -> None:
    value = "-----BEGIN X-----\r\n\tabc\n-----END X-----"
    assert HANDLER.parse(timer_params(env={"CERT": value})).env["CERT"] == value


def test_cancel_reason_refuses_control_characters() -> None:
    check_cancel_reason("fine, really")
    for reason in ("a\0b", "two\nlines", "x" * 257):
        with pytest.raises(InvalidArgument) as err:
            check_cancel_reason(reason)
        assert violation_fields(err.value) == {"reason"}


def test_control_character_problem_points_at_the_character() -> None:
    assert control_character_problem("plain text") is None
    assert control_character_problem("a\tb", multiline=True) is None
    problem = control_character_problem("ab\0")
    assert problem is not None and "position 2" in problem


@pytest.mark.parametrize(
    "value",
    ["a\u2028b", "reason\u202e", "http://ex\u200bample.com/", "\ufeffx", "x\u2066y", "lone \ud800"],
)
def test_invisible_and_direction_changing_characters_are_refused(value: str) -> None:
    """Zero-width, bidi and separator characters make text read as something it is not."""
    assert control_character_problem(value) is not None
    assert control_character_problem(value, multiline=True) is not None


def test_ordinary_unicode_is_allowed() -> None:
    assert control_character_problem("café ünïcode 😀 日本") is None


# --- item 7: bounded before any work -----------------------------------------------------------


def schedule_request(**fields: Any) -> ScheduleRequest:
    return ScheduleRequest(name="n", job_field="timer_job", params=timer_params(), **fields)


def test_huge_max_retries_is_refused_without_computing_its_backoff() -> None:
    request = schedule_request(max_retries=2**31 - 1, retry_backoff_seconds=1, ttl_seconds_after_finished=100)
    started = time.perf_counter()
    violations = scheduling_violations(request)
    assert time.perf_counter() - started < 0.5  # 2 ** (2**31 - 2) took 10-16 s
    assert {v.field for v in violations} == {"max_retries"}


def test_too_many_labels_is_one_violation_without_looking_at_them() -> None:
    labels = {f"-bad{i}": "v" for i in range(100_000)}
    assert label_violations(labels) == [FieldViolation("labels", "at most 32 labels (got 100000)")]


def test_too_many_env_variables_is_one_violation() -> None:
    with pytest.raises(InvalidArgument) as err:
        HANDLER.parse(timer_params(env={f"1BAD{i}": "x" for i in range(10_000)}))
    assert violation_fields(err.value) == {"timer_job.env"}


def test_a_huge_selector_is_refused_at_once() -> None:
    started = time.perf_counter()
    for text in ("a=b," * 1_000_000, "a" * 4097, ",".join(["a"] * 65)):
        with pytest.raises(InvalidArgument) as err:
            parse_selector(text, "filter.label_selector")
        assert violation_fields(err.value) == {"filter.label_selector"}
    assert time.perf_counter() - started < 0.5  # a 4 MB selector took 7-11 s


def _split_reference(text: str) -> list[str]:
    """The original (character by character) split on commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="a(), =!", max_size=40))
def test_selector_split_is_the_same_as_before(text: str) -> None:
    assert _split(text) == _split_reference(text)


_OLD_SET = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s*\(([^()]*)\)\s*$")
_OLD_EQ = re.compile(r"^\s*([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)\s*$")
_OLD_EXISTS = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*$")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab !=(),\t", max_size=20))
def test_requirement_patterns_accept_what_they_accepted_before(part: str) -> None:
    """The patterns now match the stripped requirement; the groups are the same as before."""
    from jobscheduler.core import selectors

    stripped = part.strip()
    for old, new in ((_OLD_SET, selectors._SET), (_OLD_EQ, selectors._EQ), (_OLD_EXISTS, selectors._EXISTS)):
        before, after = old.match(part), new.fullmatch(stripped)
        assert (before is None) == (after is None), (part, old.pattern)
        if before is not None and after is not None:
            assert before.groups() == after.groups()


def test_requirements_with_long_runs_of_spaces_are_linear() -> None:
    shapes = [" " * 4000 + "x y", "!" + " " * 4000 + "x y", " " * 2000 + "x" + " " * 2000 + "y"]
    started = time.perf_counter()
    for text in shapes * 3:
        with pytest.raises(InvalidArgument):
            parse_selector(text)
    assert time.perf_counter() - started < 0.2  # quadratic backtracking took ~150 ms per shape


def test_the_largest_valid_selector_parses_and_matches() -> None:
    text = ",".join(f"k{i} in (a,b,c)" for i in range(64))
    selector = parse_selector(text)
    assert selector.matches({f"k{i}": "b" for i in range(64)})
    assert not selector.matches({"k0": "b"})


def test_filter_strings_are_bounded() -> None:
    for name in ("type", "name_prefix", "owner", "queue"):
        with pytest.raises(InvalidArgument) as err:
            paginate([], JobFilter(**{name: "x" * 5000}), 0, "")
        assert violation_fields(err.value) == {f"filter.{name}"}


# --- item 9: error details stay small ------------------------------------------------------------


def test_invalid_argument_keeps_the_first_violations_cut_short() -> None:
    exc = InvalidArgument(FieldViolation(f"labels[{'k' * 10_000}{i}]", "d" * 100_000) for i in range(50_000))
    assert len(exc.violations) == MAX_VIOLATIONS
    assert exc.omitted == 50_000 - MAX_VIOLATIONS
    assert all(len(v.field) <= 128 and len(v.description) <= 256 for v in exc.violations)
    assert len(exc.message) <= 1024
    assert exc.message.endswith("...")


def test_status_trailers_stay_under_grpcs_metadata_limit() -> None:
    exc = InvalidArgument(FieldViolation(f"f{i}" + "é" * 500, "ü" * 5000) for i in range(10_000))
    status = to_status(exc)
    size = sum(len(key) + len(value) for key, value in status.trailing_metadata)
    assert size < 6 * 1024  # (grpc clients refuse trailers over 8 KiB)
    (_, raw), *_ = status.trailing_metadata
    details = status_pb2.Status.FromString(raw)
    bad = error_details_pb2.BadRequest()
    assert details.details[0].Unpack(bad)
    assert bad.field_violations[-1].description.startswith("... and ")
    assert len(bad.field_violations) <= MAX_VIOLATIONS + 1


def test_status_of_a_few_violations_is_complete() -> None:
    exc = InvalidArgument([FieldViolation("a", "x"), FieldViolation("b", "y")])
    (_, raw), *_ = to_status(exc).trailing_metadata
    bad = error_details_pb2.BadRequest()
    assert status_pb2.Status.FromString(raw).details[0].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [("a", "x"), ("b", "y")]


# --- item 13: bad input is INVALID_ARGUMENT, never INTERNAL -----------------------------------------


@pytest.mark.parametrize(
    "ts",
    [
        Timestamp(seconds=2**62),
        Timestamp(seconds=-(2**62)),
        Timestamp(seconds=253402300800),  # 10000-01-01
        Timestamp(seconds=-62135596801),  # before year 1
        Timestamp(seconds=1, nanos=-1),
        Timestamp(seconds=1, nanos=1_000_000_000),
    ],
)
def test_out_of_range_timestamps_name_their_field(ts: Timestamp) -> None:
    timer = pb.TimerJob(duration_seconds=1, timer_name="t", control_plane_endpoint="http://h/")
    with pytest.raises(InvalidArgument) as err:
        convert.schedule_request(pb.ScheduleJobRequest(name="n", timer_job=timer, start_after=ts))
    assert violation_fields(err.value) == {"start_after"}
    for name in ("created_after", "created_before"):
        with pytest.raises(InvalidArgument) as err:
            convert.job_filter(pb.JobFilter(**{name: ts}))
        assert violation_fields(err.value) == {f"filter.{name}"}


def test_the_extremes_of_the_timestamp_range_are_accepted() -> None:
    low, high = Timestamp(seconds=-62135596800), Timestamp(seconds=253402300799, nanos=999_999_999)
    f = convert.job_filter(pb.JobFilter(created_after=low, created_before=high))
    assert f.created_after == datetime(1, 1, 1, tzinfo=UTC)
    assert f.created_before is not None and f.created_before.year == 9999


def test_too_many_phases_is_refused() -> None:
    with pytest.raises(InvalidArgument) as err:
        convert.job_filter(pb.JobFilter(phases=[pb.JOB_PHASE_RUNNING] * 100_000))
    assert violation_fields(err.value) == {"filter.phases"}


@pytest.mark.parametrize(
    "token",
    [
        base64.urlsafe_b64encode(b"[" * 100_000).decode(),  # RecursionError in json
        base64.urlsafe_b64encode(b"[" * 500 + b"]" * 500).decode(),
        base64.urlsafe_b64encode(b'"just a string"').decode(),
        base64.urlsafe_b64encode(b'{"c": "0001-01-01T00:00:00+01:00", "i": "x", "f": "y"}').decode(),
        "x" * 1025,
        "%%%",
    ],
)
def test_malformed_page_tokens_are_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        paginate([], JobFilter(), 10, token)
    assert violation_fields(err.value) == {"page_token"}


@pytest.mark.parametrize("token", ["abcd." + "9" * 5000, "abcd." + "1" * 200, "x" * 101])
def test_malformed_resume_tokens_are_invalid_argument(token: str) -> None:
    index = JobIndex()
    with pytest.raises(InvalidArgument) as err:
        index.subscribe(lambda r: True, token)
    assert violation_fields(err.value) == {"resume_token"}


def _job(annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "job-aaaaaaaaaa",
            "namespace": "default",
            "creationTimestamp": "2026-11-27T10:00:00Z",
            "labels": {"app.kubernetes.io/managed-by": "jobscheduler"},
            "annotations": {"jobscheduler.io/name": "n", "jobscheduler.io/type": "timer", **annotations},
        },
        "spec": {"backoffLimit": 0},
        "status": {"active": 1, "startTime": "2026-11-27T10:00:01Z"},
    }


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "9999999-01-01",
        "12345",
        "20261127",  # a date without a time zone
        "2026-11-27T10:00:00",  # no time zone
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
        "x" * 100_000,
    ],
)
def test_a_malformed_cancelled_at_annotation_is_ignored(value: str) -> None:
    record = job_record(_job({"jobscheduler.io/cancelled-at": value}))
    assert record.phase is JobPhase.RUNNING
    convert.job_message(record)  # every read of the job answers


@pytest.mark.parametrize(
    "key",
    [
        "jobscheduler.io/start-after",
        "jobscheduler.io/enqueued-at",
        "jobscheduler.io/admitted-at",
    ],
)
def test_out_of_range_time_annotations_are_ignored(key: str) -> None:
    for value in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        convert.job_message(job_record(_job({key: value})))


def test_a_valid_cancelled_at_annotation_cancels() -> None:
    at = datetime(2026, 11, 27, 11, tzinfo=UTC)
    record = job_record(_job({"jobscheduler.io/cancelled-at": "2026-11-27T12:00:00+01:00"}))
    assert record.phase is JobPhase.CANCELLED
    assert record.finished_at == at and record.finished_at - at == timedelta(0)
