"""core.overlay: a request's set fields laid over a base (templates and reruns), as properties."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from jobscheduler.core.model import Priority, ScheduleRequest
from jobscheduler.core.overlay import NOTHING as EMPTY
from jobscheduler.core.overlay import is_unset, merge_params, overlay

TIMER = {"duration_seconds": 5, "timer_name": "t", "control_plane_endpoint": "http://127.0.0.1:9"}

# --- overlay -------------------------------------------------------------------------------------

_keys = st.sampled_from(["a", "b", "c", "d"])
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["", "x", "y"]))
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=3)),
    max_leaves=8,
)
_params = st.dictionaries(_keys, _values, max_size=4)
_members = st.sampled_from([None, "timer_job", "webhook_job"])


@st.composite
def requests(draw: st.DrawFn) -> ScheduleRequest:
    member = draw(_members)
    return ScheduleRequest(
        name=draw(st.sampled_from(["", "n1", "n2"])),
        job_field=member,
        params=draw(_params) if member else {},
        labels=draw(st.dictionaries(_keys, st.sampled_from(["1", "2"]), max_size=3)),
        timeout_seconds=draw(st.sampled_from([0, 10])),
        ttl_seconds_after_finished=draw(st.sampled_from([None, 0, 60])),
        max_retries=draw(st.sampled_from([0, 2])),
        queue=draw(st.sampled_from(["", "batch"])),
        priority=draw(st.sampled_from([None, Priority.HIGH, Priority.LOW])),
        depends_on=draw(st.sampled_from([(), ("job-aaaaaaaaaa",)])),
    )


_PLAIN_FIELDS = [
    f.name for f in dataclasses.fields(ScheduleRequest) if f.name not in ("labels", "job_field", "params")
]


@settings(max_examples=100, deadline=None)
@given(requests(), requests())
def test_overlay_lays_the_set_fields_over_the_base(base: ScheduleRequest, over: ScheduleRequest) -> None:
    out = overlay(base, over)
    for name in _PLAIN_FIELDS:
        unset = getattr(EMPTY, name)
        expected = getattr(base, name) if getattr(over, name) == unset else getattr(over, name)
        assert getattr(out, name) == expected, name
    assert dict(out.labels) == {**base.labels, **over.labels}
    if over.job_field is None:
        assert (out.job_field, out.params) == (base.job_field, base.params)
    elif over.job_field != base.job_field:
        assert (out.job_field, out.params) == (over.job_field, over.params)  # replaced whole
    else:
        assert out.job_field == base.job_field
        _check_merged(base.params, over.params, out.params)


def _check_merged(base: Mapping[str, Any], over: Mapping[str, Any], out: Mapping[str, Any]) -> None:
    assert set(out) == set(base) | set(over)
    for key, value in out.items():
        if key not in over or is_unset(over[key]):
            assert value == base.get(key, over.get(key))  # the base's (or the unset value itself)
        elif isinstance(over[key], dict) and isinstance(base.get(key), dict):
            _check_merged(base[key], over[key], value)  # maps merge recursively
        else:
            assert value == over[key]  # scalars and lists replace


@settings(max_examples=100, deadline=None)
@given(requests(), requests())
def test_overlay_is_idempotent_and_empty_changes_nothing(
    base: ScheduleRequest, over: ScheduleRequest
) -> None:
    once = overlay(base, over)
    assert overlay(once, over) == once
    assert overlay(base, EMPTY) == base
    assert overlay(EMPTY, over) == over


def test_overlay_examples() -> None:
    base = ScheduleRequest(
        name="base", job_field="timer_job", params={**TIMER, "env": {"A": "1", "B": "2"}}, labels={"x": "1"}
    )
    over = ScheduleRequest(
        name="", job_field="timer_job", params={"duration_seconds": 9, "timer_name": "", "env": {"B": "3"}}
    )
    out = overlay(base, over)
    assert out.name == "base"
    assert out.params == {**TIMER, "duration_seconds": 9, "env": {"A": "1", "B": "3"}}
    assert merge_params({"l": [1, 2]}, {"l": [3]}) == {"l": [3]}  # lists replace
    assert merge_params({"l": [1, 2]}, {"l": []}) == {"l": [1, 2]}  # an empty list is unset
    other = overlay(base, ScheduleRequest(name="", job_field="webhook_job", params={"url": "u"}))
    assert (other.job_field, other.params, other.labels) == ("webhook_job", {"url": "u"}, {"x": "1"})
