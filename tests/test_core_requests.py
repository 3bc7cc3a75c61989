"""core.requests: ScheduleRequest's fields declared once. The digest covers every field but the
declared exclusions, every ScheduleJobRequest field reaches a ScheduleRequest field, and the
stored request (what a retry is rendered from) round-trips."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.api.convert import schedule_request
from jobscheduler.core.errors import InvalidArgument
from jobscheduler.core.manifests import REQUEST_ANNOTATION
from jobscheduler.core.model import Priority, ScheduleRequest
from jobscheduler.core.requests import (
    MAX_STORED_REQUEST_BYTES,
    NOT_DIGESTED,
    STORED_FIELDS,
    SUBMISSION_FIELDS,
    digested_fields,
    parse_stored_request,
    request_digest,
    stored_request,
)

FIELDS = [f.name for f in dataclasses.fields(ScheduleRequest)]
TIMER = {"duration_seconds": 5, "timer_name": "t", "control_plane_endpoint": "http://cp:1"}
BASE = ScheduleRequest(name="n", job_field="timer_job", params=TIMER)

#: A value other than BASE's for each field. A new ScheduleRequest field needs one here (the
#: test below says so), and must be in STORED_FIELDS or SUBMISSION_FIELDS (or NOT_DIGESTED).
OTHER: dict[str, Any] = {
    "name": "m",
    "job_field": "other_job",
    "params": {**TIMER, "duration_seconds": 6},
    "labels": {"team": "a"},
    "request_id": "r-1",
    "timeout_seconds": 60,
    "ttl_seconds_after_finished": 0,
    "max_retries": 1,
    "retry_backoff_seconds": 5,
    "start_after": datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
    "delay_seconds": 5,
    "queue": "batch",
    "priority": Priority.HIGH,
    "depends_on": ("job-a000000001",),
    "template": "nightly",
    "template_version": 2,
}


def test_every_field_is_declared_once_stored_submission_or_not_digested() -> None:
    stored, submission = set(STORED_FIELDS), set(SUBMISSION_FIELDS)
    assert len(STORED_FIELDS) == len(stored)
    assert not stored & submission and not (stored | submission) & NOT_DIGESTED
    undeclared = set(FIELDS) - stored - submission - NOT_DIGESTED
    assert not undeclared, f"declare {undeclared} in core/requests.py: STORED_FIELDS or SUBMISSION_FIELDS"
    assert set(FIELDS) >= stored | submission | NOT_DIGESTED
    assert set(digested_fields()) == stored | submission


@pytest.mark.parametrize("name", FIELDS)
def test_each_digested_field_changes_the_digest(name: str) -> None:
    assert name in OTHER, f"add another value for the new ScheduleRequest field {name!r} to OTHER"
    changed = dataclasses.replace(BASE, **{name: OTHER[name]})
    assert (request_digest(changed) != request_digest(BASE)) is (name not in NOT_DIGESTED)


def test_values_that_mean_the_same_have_one_digest() -> None:
    same = [
        BASE,
        dataclasses.replace(BASE, queue="default"),
        dataclasses.replace(BASE, priority=Priority.NORMAL),
        dataclasses.replace(BASE, params=dict(reversed(list(TIMER.items())))),
        dataclasses.replace(BASE, request_id="another"),
    ]
    assert len({request_digest(r) for r in same}) == 1
    a = dataclasses.replace(BASE, labels={"a": "1", "b": "2"})
    assert request_digest(a) == request_digest(dataclasses.replace(BASE, labels={"b": "2", "a": "1"}))
    # ttl unset (the configured default) and 0 (keep until deleted) are different requests.
    assert request_digest(BASE) != request_digest(dataclasses.replace(BASE, ttl_seconds_after_finished=0))


def _other_value(message: Any, field: Any) -> None:
    """Set ``field`` of ``message`` to a value other than its default."""
    name = field.name
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        getattr(message, name)["team"] = "a"
    elif field.is_repeated and field.message_type is not None:
        inner = getattr(message, name).add()
        _other_value(inner, inner.DESCRIPTOR.fields[0])
    elif field.is_repeated:
        getattr(message, name).append("job-a000000001")
    elif field.message_type is not None and field.message_type.full_name == "google.protobuf.Timestamp":
        getattr(message, name).FromDatetime(datetime(2026, 11, 23, 10, 0, tzinfo=UTC))
    elif field.message_type is not None:
        inner = getattr(message, name)
        _other_value(inner, inner.DESCRIPTOR.fields[0])
    elif field.enum_type is not None:
        setattr(message, name, field.enum_type.values[-1].number)
    elif field.type == field.TYPE_STRING:
        setattr(message, name, "x")
    elif field.type == field.TYPE_BOOL:
        setattr(message, name, True)
    else:
        setattr(message, name, 7)


@pytest.mark.parametrize("field", list(pb.ScheduleJobRequest.DESCRIPTOR.fields), ids=lambda f: f.name)
def test_every_proto_field_reaches_a_schedule_request_field(field: Any) -> None:
    """A ScheduleJobRequest field that api/convert.py forgets, or that ScheduleRequest lacks,
    would make two different requests the same request (and a retry drop it)."""
    base = pb.ScheduleJobRequest(name="n", timer_job=pb.TimerJob(**TIMER))
    changed = pb.ScheduleJobRequest()
    changed.CopyFrom(base)
    _other_value(changed, field)
    assert changed != base
    before, after = schedule_request(base), schedule_request(changed)
    if field.containing_oneof is not None and field.containing_oneof.name == "job":
        assert after.job_field == field.name  # the job type's fields are params
    else:
        assert field.name in FIELDS, f"ScheduleJobRequest.{field.name} has no ScheduleRequest field"
    assert before != after, f"api/convert.py drops ScheduleJobRequest.{field.name}"
    assert (request_digest(before) != request_digest(after)) is (field.name not in NOT_DIGESTED)


REQUESTS = st.builds(
    ScheduleRequest,
    name=st.text(min_size=1, max_size=20),
    job_field=st.sampled_from(["timer_job", "other_job"]),
    params=st.fixed_dictionaries(
        {
            "duration_seconds": st.integers(1, 86400),
            "env": st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=5),
            "log_level": st.text(max_size=10),
        }
    ),
    labels=st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=10), max_size=4),
    request_id=st.text(max_size=10),
    timeout_seconds=st.integers(0, 7 * 86400),
    ttl_seconds_after_finished=st.none() | st.integers(0, 366 * 86400),
    max_retries=st.integers(0, 10),
    retry_backoff_seconds=st.integers(0, 3600),
    start_after=st.none() | st.datetimes(timezones=st.just(UTC)),
    delay_seconds=st.integers(0, 100),
    queue=st.sampled_from(["", "default", "batch"]),
    priority=st.none() | st.sampled_from(Priority),
    depends_on=st.lists(st.text(max_size=14), max_size=3).map(tuple),
)


@settings(max_examples=100, deadline=None)
@given(request=REQUESTS)
def test_the_stored_request_round_trips_the_work_and_only_the_work(request: ScheduleRequest) -> None:
    raw = stored_request(request)
    assert len(raw.encode()) <= MAX_STORED_REQUEST_BYTES
    back = parse_stored_request({REQUEST_ANNOTATION: raw})
    for name in FIELDS:
        if name in STORED_FIELDS:
            assert _same(name, getattr(back, name), getattr(request, name)), name
        else:  # this submission's own: a retry does not inherit them
            assert getattr(back, name) == getattr(BASE, name), name
    # Maps keep the request's order (env order matters to $(VAR) references).
    assert list(back.params["env"]) == list(request.params["env"])
    assert stored_request(back) == raw


def _same(name: str, a: Any, b: Any) -> bool:
    if name == "queue":
        return (a or "default") == (b or "default")
    if name == "priority":
        return (a or Priority.NORMAL) == (b or Priority.NORMAL)
    return bool(a == b)


def test_a_request_too_large_to_store_is_invalid_argument_on_its_job_field() -> None:
    big = dataclasses.replace(BASE, params={**TIMER, "env": {f"V{i}": "x" * 4096 for i in range(40)}})
    with pytest.raises(InvalidArgument) as err:
        stored_request(big)
    assert [v.field for v in err.value.violations] == ["timer_job"]


def test_the_stored_request_is_plain_canonical_json() -> None:
    request = dataclasses.replace(BASE, labels={"b": "2", "a": "1"}, priority=Priority.LOW, max_retries=2)
    body = json.loads(stored_request(request))
    assert body == {
        "name": "n",
        "job_field": "timer_job",
        "params": TIMER,
        "labels": {"b": "2", "a": "1"},
        "max_retries": 2,
        "priority": "LOW",
    }
