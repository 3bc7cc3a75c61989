"""Filtering, ordering and pagination of job lists (pure)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from jobscheduler.core.errors import FieldViolation, InvalidArgument
from jobscheduler.core.model import JobFilter, JobRecord
from jobscheduler.core.selectors import parse_selector

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: Page tokens this service issues are ~120 characters; anything much longer is not one.
MAX_PAGE_TOKEN_CHARS = 1024
#: The filter's plain strings (a longer one could match nothing anyway).
_MAX_FILTER_STRINGS = {
    "type": 63,
    "name_prefix": 63,
    "owner": 1024,
    "queue": 63,
    "schedule": 63,
    "rerun_of": 63,
    "template": 63,
}
#: The creation time a record without one sorts and filters as.
EPOCH = datetime.min.replace(tzinfo=UTC)


def filter_violations(f: JobFilter, field: str = "filter") -> list[FieldViolation]:
    """Sizes of the filter's strings (the selector checks its own when parsed)."""
    out: list[FieldViolation] = []
    for name, limit in _MAX_FILTER_STRINGS.items():
        value: str = getattr(f, name)
        if len(value) > limit:
            out.append(
                FieldViolation(f"{field}.{name}", f"must be at most {limit} characters (got {len(value)})")
            )
    return out


def compile_filter(f: JobFilter, field: str = "filter") -> Callable[[JobRecord], bool]:
    """A predicate for ``f``; InvalidArgument if it is too big or its selector is malformed."""
    if violations := filter_violations(f, field):
        raise InvalidArgument(violations)
    selector = parse_selector(f.label_selector, f"{field}.label_selector")

    def matches(r: JobRecord) -> bool:
        if f.type and r.type != f.type:
            return False
        if f.phases and r.phase not in f.phases:
            return False
        if f.name_prefix and not r.name.startswith(f.name_prefix):
            return False
        if f.owner and r.owner != f.owner:
            return False
        if f.queue and r.queue != f.queue:
            return False
        if f.schedule and r.schedule != f.schedule:
            return False
        if f.rerun_of and r.rerun_of != f.rerun_of:
            return False
        if f.template and r.template != f.template:
            return False
        created = r.created_at or EPOCH
        if f.created_after is not None and created < f.created_after:
            return False
        if f.created_before is not None and created >= f.created_before:
            return False
        return selector.matches(r.labels)

    return matches


def order_key(r: JobRecord) -> tuple[datetime, str]:
    return (r.created_at or EPOCH, r.job_id)


def _filter_digest(f: JobFilter) -> str:
    raw = json.dumps(
        [
            f.type,
            sorted(p.value for p in f.phases),
            f.label_selector,
            f.name_prefix,
            f.created_after.isoformat() if f.created_after else None,
            f.created_before.isoformat() if f.created_before else None,
            f.owner,
            # (fields added later only when set: page tokens without them stay valid)
            *([f.queue] if f.queue else []),
            *([f"schedule={f.schedule}"] if f.schedule else []),
            *([f"rerun_of={f.rerun_of}"] if f.rerun_of else []),
            *([f"template={f.template}"] if f.template else []),
        ]
    )
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Page:
    records: list[JobRecord]
    next_page_token: str
    #: Where a watch continues from to see every change after this list ("" if unknown).
    resume_token: str = ""


#: Where a page starts: below this (created, job id) in newest-first order; None: the newest.
Cursor = tuple[datetime, str]


def paginate(records: Iterable[JobRecord], f: JobFilter, page_size: int, page_token: str) -> Page:
    """``paginate_newest_first`` over records in any order (sorted here: for small or unsynced sets)."""
    ordered = sorted(records, key=order_key, reverse=True)

    def below(cursor: Cursor | None, _: JobFilter) -> Iterator[JobRecord]:
        return (r for r in ordered if cursor is None or order_key(r) < cursor)

    return paginate_newest_first(below, f, page_size, page_token)


def paginate_newest_first(
    below: Callable[[Cursor | None, JobFilter], Iterator[JobRecord]],
    f: JobFilter,
    page_size: int,
    page_token: str,
) -> Page:
    """Newest first; the token is a cursor (the last item's creation time and id), so pages stay
    correct while jobs are added: new jobs sort before the cursor.

    ``below(cursor, f)`` yields the records newest first from just below the cursor: at least
    every one ``f`` matches (an index may leave out records that cannot match; each is checked
    here). A page reads only until it has one match more than it returns, so it costs its
    page, not the whole set."""
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise InvalidArgument.field(
            "page_size", f"must be between 1 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})"
        )
    size = page_size or DEFAULT_PAGE_SIZE
    matches = compile_filter(f)
    digest = _filter_digest(f)
    cursor: tuple[datetime, str] | None = None
    if page_token:
        cursor = _decode_token(page_token, digest)
    page: list[JobRecord] = []
    for record in below(cursor, f):
        if matches(record):
            page.append(record)
            if len(page) > size:
                break
    token = ""
    if len(page) > size:
        del page[size:]
        created, job_id = order_key(page[-1])
        token = _encode_token(created, job_id, digest)
    return Page(page, token)


def _encode_token(created: datetime, job_id: str, digest: str) -> str:
    raw = json.dumps({"c": created.isoformat(), "i": job_id, "f": digest}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_token(token: str, digest: str) -> tuple[datetime, str]:
    if len(token) > MAX_PAGE_TOKEN_CHARS:
        raise InvalidArgument.field(
            "page_token", f"is not a page token from this service (too long: {len(token)})"
        )
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise TypeError("not an object")
        created = datetime.fromisoformat(data["c"])
        job_id = str(data["i"])
        token_digest = str(data["f"])
        if created.tzinfo is None:
            raise ValueError("no time zone")
        created = created.astimezone(UTC)
    except (ValueError, KeyError, TypeError, RecursionError, OverflowError):
        raise InvalidArgument.field("page_token", "is not a page token from this service") from None
    if token_digest != digest:
        raise InvalidArgument.field(
            "page_token", "was issued for a different filter; start from the first page"
        )
    return created, job_id
