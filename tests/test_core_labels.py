"""Compact label maps (core/labels.py): a Labels reads exactly as the dict it was made from."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobscheduler.core import labels as labels_module
from jobscheduler.core.labels import Labels, compact_labels

PROPERTY = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
KEYS = ["team", "env", "jobscheduler.io/job-id", "jobscheduler.io/job-name"]
VALUES = ["a", "b", "", "job-1", "job-2", "nightly", "x" * 64]
label_maps = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=4)
ids = st.sampled_from(["job-1", "job-2"])
names = st.sampled_from(["nightly", "a", "other"])


@PROPERTY
@given(label_maps, ids, names, label_maps, ids, names, st.sampled_from([*KEYS, "missing"]))
def test_compact_labels_read_as_the_dict(
    a: dict[str, str], a_id: str, a_name: str, b: dict[str, str], b_id: str, b_name: str, key: str
) -> None:
    x, y = compact_labels(a, a_id, a_name), compact_labels(b, b_id, b_name)
    assert x == a and a == x and dict(x) == a and list(x) == list(a) and len(x) == len(a)
    assert list(x.items()) == list(a.items())
    assert x.get(key) == a.get(key) and x.get(key, "d") == a.get(key, "d") and (key in x) == (key in a)
    assert (x == y) == (a == b) and (x != y) == (a != b)
    assert repr(x) == repr(a)


def test_jobs_with_the_same_labels_apart_from_their_own_share_one_shape() -> None:
    one = compact_labels({"team": "a", "id": "job-1", "name": "n1"}, "job-1", "n1")
    two = compact_labels({"team": "a", "id": "job-2", "name": "n2"}, "job-2", "n2")
    assert isinstance(one, Labels) and isinstance(two, Labels)
    assert one._shape is two._shape
    assert two["id"] == "job-2" and two["name"] == "n2"
    assert compact_labels({"v": "x" * 64}, "job-1", "n1") == {"v": "x" * 64}  # not shared: a dict
    assert type(compact_labels({"v": "x" * 64}, "job-1", "n1")) is dict


def test_past_max_shapes_labels_stay_dicts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(labels_module, "_SHAPES", {})
    monkeypatch.setattr(labels_module, "MAX_SHAPES", 2)
    made = [compact_labels({"team": str(i)}, "job-1", "n") for i in range(4)]
    assert [type(m) for m in made] == [Labels, Labels, dict, dict]
    assert made == [{"team": str(i)} for i in range(4)]
