"""ListSchedules pages: by (owner, name), with opaque tokens bound to the query."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from typing import Final

from jobscheduler.core.errors import InvalidArgument
from jobscheduler.core.schedules.model import Schedule

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 1000
#: A token holds an owner's identity, which can be long (a ServiceAccount's
#: ``system:serviceaccount:<namespace>:<name>`` is up to 339 characters, a token file's any):
#: decoding 8 KiB is microseconds.
MAX_PAGE_TOKEN_CHARS: Final = 8192
#: Work over many schedules (decoding rows, building views, the due-time loop's pass) gives the
#: event loop back after this many (each ~30-50 us: a page of 1000 is ~80 ms in all).
YIELD_EVERY: Final = 32


def page_size(size: int) -> int:
    if not 0 <= size <= MAX_PAGE_SIZE:
        raise InvalidArgument.field("page_size", f"must be 0-{MAX_PAGE_SIZE} (0: {DEFAULT_PAGE_SIZE})")
    return size or DEFAULT_PAGE_SIZE


def _digest(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:16]


def encode_token(last: Schedule, query: str) -> str:
    raw = json.dumps([last.owner, last.name, _digest(query)], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_token(token: str, query: str) -> tuple[str, str] | None:
    """The (owner, name) a page starts after; None for the first page."""
    if not token:
        return None
    if len(token) > MAX_PAGE_TOKEN_CHARS:
        raise InvalidArgument.field("page_token", "is not a page token from this service (too long)")
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        owner, name, digest = (str(item) for item in data)
    except (ValueError, TypeError, RecursionError):
        raise InvalidArgument.field("page_token", "is not a page token from this service") from None
    if digest != _digest(query):
        raise InvalidArgument.field("page_token", "is for a different query; start from the first page")
    return owner, name


def paginate(schedules: Sequence[Schedule], size: int, token: str, query: str) -> tuple[list[Schedule], str]:
    """One page of ``schedules`` by (owner, name) and the next page's token ("": the last page)."""
    size = page_size(size)
    start = decode_token(token, query)
    ordered = sorted(schedules, key=lambda s: (s.owner, s.name))
    if start is not None:
        ordered = [s for s in ordered if (s.owner, s.name) > start]
    page = ordered[:size]
    more = len(ordered) > size
    return page, encode_token(page[-1], query) if more else ""
