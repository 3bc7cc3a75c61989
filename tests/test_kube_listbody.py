"""A list answer decoded item by item (backends/kubernetes/_listbody.py): the same as json.loads."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobscheduler.backends.kubernetes._listbody import MalformedList, decode_list

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


def whole(decoded: dict[str, Any]) -> dict[str, Any]:
    items = decoded.get("items")
    return decoded if items is None or isinstance(items, list) else {**decoded, "items": list(items)}


@given(
    metadata=st.dictionaries(st.text(max_size=5), _JSON, max_size=3),
    items=st.lists(_JSON, max_size=5),
    indent=st.sampled_from([None, 0, 2]),
    items_first=st.booleans(),
)
def test_the_same_as_decoding_it_whole(
    metadata: dict[str, Any], items: list[Any], indent: int | None, items_first: bool
) -> None:
    answer = {"items": items, "kind": "JobList", "metadata": metadata}
    if not items_first:
        answer = {"kind": "JobList", "apiVersion": "batch/v1", "metadata": metadata, "items": items}
    raw = json.dumps(answer, indent=indent).encode()
    assert whole(decode_list(raw)) == json.loads(raw)


def test_items_are_decoded_only_as_they_are_read() -> None:
    raw = b'{"kind": "JobList", "metadata": {"continue": "t"}, "items": [{"a": 1}, {"b": 2}, nonsense]}'
    decoded = decode_list(raw)
    assert decoded["metadata"] == {"continue": "t"}
    items = iter(decoded["items"])
    assert next(items) == {"a": 1}
    assert next(items) == {"b": 2}
    with pytest.raises(MalformedList, match="not valid JSON"):
        next(items)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"nonsense",
        b'{"metadata": {}, "items": [1, 2',
        b'{"metadata": {"a": }, "items": []}',
        b"\xff\xfe{}",  # not UTF-8
        # JSON, but not a list: never an empty list, which would delete every cached job
        b"[1, 2]",
        b"null",
        b"{}",
        b'{"metadata": {}}',
        b'{"kind": "Status", "status": "Failure", "message": "m"}',
        b'{"metadata": {}, "items": {"a": 1}}',
    ],
)
def test_an_answer_that_is_not_a_json_list_is_a_backend_error(raw: bytes) -> None:
    with pytest.raises(MalformedList):
        whole(decode_list(raw))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"metadata": {}, "items": []}', {"metadata": {}, "items": []}),
        (b'{"metadata": {}, "items": null}', {"metadata": {}, "items": None}),  # Go's empty list
        (b'{"items": [{"a": 1}], "metadata": {}}', {"metadata": {}, "items": [{"a": 1}]}),
    ],
)
def test_odd_answers(raw: bytes, expected: dict[str, Any]) -> None:
    assert whole(decode_list(raw)) == expected
