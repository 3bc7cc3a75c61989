"""The columns of the tables: one (title, cell function) per column of each kind of row (job,
queue, type, event, schedule, template), and the ``-o wide`` extras. A cell function gets the
row (the client's ``to_dict()``) and now, and returns one line of printable text."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, Final

from jobscheduler.commands._time import age, human_duration, parse_rfc3339, seconds_text

Row = Mapping[str, Any]
Column = tuple[str, Callable[[Row, dt.datetime], str]]


def short(enum_name: object, prefix: str) -> str:
    """``JOB_PHASE_RUNNING`` -> ``RUNNING``; unset -> ``<none>``."""
    text = str(enum_name or "")
    text = text.removeprefix(prefix)
    return "<none>" if not text or text == "UNSPECIFIED" else text


def phase(job: Row) -> str:
    return short(job.get("phase"), "JOB_PHASE_")


def _text(value: object) -> str:
    if value is None or value == "":
        return "<none>"
    text = str(value)
    # One line per row: a message with line breaks or control characters would break the table.
    return "".join(ch if ch.isprintable() else " " for ch in text)


def _exit_code(job: Row) -> str:
    code = job.get("exit_code")
    return "<none>" if code is None else str(code)


def _attempts(job: Row) -> str:
    return str(job.get("attempts", 0) or 0)


def _retry(job: Row) -> str:
    if not job.get("retry_of"):
        return "<none>"
    return f"{job['retry_of']}#{job.get('retry_number', 0)}"


def _origin(job: Row) -> str:
    """What made the job: its schedule, the job it reruns, its template (``<none>``: submitted)."""
    parts = []
    if job.get("schedule"):
        parts.append(f"schedule/{_text(job['schedule'])}")
    if job.get("rerun_of"):
        parts.append(f"rerun/{_text(job['rerun_of'])}")
    if job.get("template"):
        parts.append(f"template/{_template_ref(job)}")
    return ",".join(parts) or "<none>"


JOB_COLUMNS: Final[tuple[Column, ...]] = (
    ("JOB ID", lambda j, now: _text(j.get("job_id"))),
    ("NAME", lambda j, now: _text(j.get("name"))),
    ("TYPE", lambda j, now: _text(j.get("type"))),
    ("PHASE", lambda j, now: phase(j)),
    ("ATTEMPTS", lambda j, now: _attempts(j)),
    ("DURATION", lambda j, now: seconds_text(j.get("duration"))),
    ("AGE", lambda j, now: age(j.get("created_at"), now)),
)
JOB_WIDE: Final[tuple[Column, ...]] = (
    ("QUEUE", lambda j, now: _text(j.get("queue"))),
    ("PRIORITY", lambda j, now: short(j.get("priority"), "JOB_PRIORITY_")),
    ("OWNER", lambda j, now: _text(j.get("owner"))),
    ("REASON", lambda j, now: _text(j.get("reason"))),
    ("EXIT", lambda j, now: _exit_code(j)),
    ("RETRY OF", lambda j, now: _retry(j)),
    ("ORIGIN", lambda j, now: _origin(j)),
    ("MESSAGE", lambda j, now: _text(j.get("message"))),
)


def _by_priority(queue: Row) -> str:
    by = queue.get("queued_by_priority") or {}
    counts = [f"{short(p, 'JOB_PRIORITY_')}={n}" for p, n in by.items()] if isinstance(by, Mapping) else []
    return ",".join(counts) or "<none>"


def _limit(queue: Row) -> str:
    return str(queue.get("max_running") or "none")


QUEUE_COLUMNS: Final[tuple[Column, ...]] = (
    ("NAME", lambda q, now: _text(q.get("name"))),
    ("MAX RUNNING", lambda q, now: _limit(q)),
    ("RUNNING", lambda q, now: str(q.get("running", 0))),
    ("QUEUED", lambda q, now: str(q.get("queued", 0))),
    ("WAITING", lambda q, now: str(q.get("waiting", 0))),
    ("OLDEST QUEUED", lambda q, now: seconds_text(q.get("oldest_queued_age"))),
)
QUEUE_WIDE: Final[tuple[Column, ...]] = (("QUEUED BY PRIORITY", lambda q, now: _by_priority(q)),)


def _source(t: Row) -> str:
    return "builtin" if t.get("builtin") else f"{_text(t.get('package'))} {_text(t.get('version'))}"


def _parameters(t: Row) -> str:
    schema = t.get("parameters_schema")
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    names = [str(n) for n in properties] if isinstance(properties, Mapping) else []
    return _text(",".join(names))


TYPE_COLUMNS: Final[tuple[Column, ...]] = (
    ("NAME", lambda t, now: _text(t.get("name"))),
    ("SOURCE", lambda t, now: _source(t)),
    ("DESCRIPTION", lambda t, now: _text(t.get("description"))),
)
TYPE_WIDE: Final[tuple[Column, ...]] = (
    ("REQUEST FIELD", lambda t, now: _text(t.get("request_field"))),
    ("PARAMETERS", lambda t, now: _parameters(t)),
)


def _until(value: object, now: dt.datetime) -> str:
    """``in 4m`` for a future protobuf JSON time (``now`` if it is due); ``<none>`` when unset."""
    when = parse_rfc3339(value)
    if when is None:
        return "<none>"
    ahead = (when - now).total_seconds()
    return f"in {human_duration(ahead)}" if ahead >= 1 else "now"


def _job_of(row: Row) -> Row:
    job = row.get("job")
    return job if isinstance(job, Mapping) else {}


def _template_ref(job: Row, resolved: object = 0) -> str:
    """``name@version`` of the job's template (``resolved``: the version a schedule resolved it to)."""
    name = job.get("template")
    if not name:
        return "<none>"
    version = job.get("template_version") or resolved or "latest"
    return f"{_text(name)}@{version}"


SCHEDULE_COLUMNS: Final[tuple[Column, ...]] = (
    ("NAME", lambda s, now: _text(s.get("name"))),
    ("SCHEDULE", lambda s, now: _text(s.get("cron"))),
    ("TIMEZONE", lambda s, now: _text(s.get("time_zone") or "UTC")),
    ("SUSPEND", lambda s, now: str(bool(s.get("suspend")))),
    ("ACTIVE", lambda s, now: str(len(s.get("active_job_ids") or ()))),
    ("LAST SCHEDULE", lambda s, now: age(s.get("last_schedule_time"), now)),
    ("NEXT RUN", lambda s, now: _until(s.get("next_run_time"), now)),
    ("AGE", lambda s, now: age(s.get("created_at"), now)),
)
SCHEDULE_WIDE: Final[tuple[Column, ...]] = (
    ("TYPE", lambda s, now: _text(s.get("job_type"))),
    ("POLICY", lambda s, now: short(s.get("concurrency_policy"), "CONCURRENCY_POLICY_")),
    ("QUEUE", lambda s, now: _text(_job_of(s).get("queue"))),
    ("MISSED", lambda s, now: str(s.get("missed_runs", 0) or 0)),
    ("SKIPPED", lambda s, now: str(s.get("skipped_runs", 0) or 0)),
    ("TEMPLATE", lambda s, now: _template_ref(_job_of(s), s.get("template_version"))),
    ("DESCRIPTION", lambda s, now: _text(s.get("description"))),
)

TEMPLATE_COLUMNS: Final[tuple[Column, ...]] = (
    ("NAME", lambda t, now: _text(t.get("name"))),
    ("VERSION", lambda t, now: str(t.get("version", 0) or 0)),
    ("TYPE", lambda t, now: _text(t.get("job_type"))),
    ("DESCRIPTION", lambda t, now: _text(t.get("description"))),
    ("UPDATED", lambda t, now: age(t.get("created_at"), now)),
    ("AGE", lambda t, now: age(t.get("first_created_at"), now)),
)
TEMPLATE_WIDE: Final[tuple[Column, ...]] = (
    ("QUEUE", lambda t, now: _text(_job_of(t).get("queue"))),
    ("PRIORITY", lambda t, now: short(_job_of(t).get("priority"), "JOB_PRIORITY_")),
    ("OWNER", lambda t, now: _text(t.get("owner"))),
)

EVENT_COLUMNS: Final[tuple[Column, ...]] = (
    ("EVENT", lambda e, now: short(e.get("type"), "JOB_EVENT_TYPE_")),
    *((title, (lambda f: lambda e, now: f(e.get("job") or {}, now))(fn)) for title, fn in JOB_COLUMNS),
)
EVENT_WIDE: Final[tuple[Column, ...]] = tuple(
    (title, (lambda f: lambda e, now: f(e.get("job") or {}, now))(fn)) for title, fn in JOB_WIDE
)


def columns_for(kind: str, wide: bool) -> tuple[Column, ...]:
    base, extra = {
        "job": (JOB_COLUMNS, JOB_WIDE),
        "queue": (QUEUE_COLUMNS, QUEUE_WIDE),
        "type": (TYPE_COLUMNS, TYPE_WIDE),
        "schedule": (SCHEDULE_COLUMNS, SCHEDULE_WIDE),
        "template": (TEMPLATE_COLUMNS, TEMPLATE_WIDE),
        "event": (EVENT_COLUMNS, EVENT_WIDE),
    }[kind]
    return base + extra if wide else base
