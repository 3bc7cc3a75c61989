"""A list answer decoded one item at a time, as its reader takes them.

``json.loads`` of a page of 500 Jobs builds about 8 MB of objects at once (some 16 KB per
Job), of which a few hundred bytes per Job live on in the cache. Python's allocator then keeps
the whole page's worth of freed blocks around the ones that live on: about 130 bytes of
resident memory per cached job after a first list, for nothing. Decoding each item only when
the reader asks for it (and dropping it before the next) keeps one Job's worth in flight.

The API server writes a list as ``{"kind", "apiVersion", "metadata", "items"}`` in that order
(the Go struct's field order); an answer with ``items`` before ``metadata`` (or anything this
reader does not follow) is decoded whole, as before.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, Final

from jobscheduler.core.errors import BackendError

_DECODER: Final = json.JSONDecoder()
_SPACE: Final = re.compile(r"[ \t\n\r]*")


class MalformedList(BackendError):
    """A list answer that is not a JSON object with ``items`` (an item's fault is found only when
    that item is read). Never read as an empty list: that would delete every cached job."""


def decode_list(raw: bytes) -> dict[str, Any]:
    """The answer with ``items`` an iterator that decodes each item as it is read (``"items":
    null``, as Go writes an empty list, is no items)."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise MalformedList(f"the list answer is not UTF-8: {exc}") from None
    try:
        head, start = _head(text)
    except (ValueError, IndexError):
        head, start = None, -1
    if head is None:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise MalformedList(f"the list answer is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or "items" not in data or not isinstance(data["items"], list | None):
            raise MalformedList(f"the list answer is not a list (a {type(data).__name__} without items)")
        return data
    if start < 0:
        raise MalformedList("the list answer has no items")
    head["items"] = _items(text, start)
    return head


def _skip(text: str, pos: int) -> int:
    match = _SPACE.match(text, pos)
    return match.end() if match else pos


def _head(text: str) -> tuple[dict[str, Any] | None, int]:
    """The members before ``items`` and where its array starts (-1: no items); None: not a list
    answer this reader follows (decode it whole)."""
    pos = _skip(text, 0)
    if text[pos] != "{":
        return None, -1
    head: dict[str, Any] = {}
    pos = _skip(text, pos + 1)
    if text[pos] == "}":
        return head, -1
    while True:
        key, pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        if not isinstance(key, str) or text[pos] != ":":
            return None, -1
        pos = _skip(text, pos + 1)
        if key == "items":
            if "metadata" not in head or text[pos] != "[":  # (the continue token comes first)
                return None, -1
            return head, pos + 1
        head[key], pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        if text[pos] == "}":
            return head, -1
        if text[pos] != ",":
            return None, -1
        pos = _skip(text, pos + 1)


def _items(text: str, pos: int) -> Iterator[Any]:
    try:
        pos = _skip(text, pos)
        if text[pos] == "]":
            return
        while True:
            item, pos = _DECODER.raw_decode(text, pos)
            yield item
            pos = _skip(text, pos)
            if text[pos] == "]":
                return
            if text[pos] != ",":
                raise ValueError(f"expected ',' or ']' at {pos}")
            pos = _skip(text, pos + 1)
    except (ValueError, IndexError) as exc:
        raise MalformedList(f"the list answer is not valid JSON: {exc}") from None
