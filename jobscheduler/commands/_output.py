"""Output: aligned tables for people, ``-o json|yaml|wide|name`` for scripts.

Everything printed is first turned into protobuf JSON (proto field names, every field present,
enums by name), so the human and the machine formats show the same data.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TextIO

import yaml

from jobscheduler.commands._time import age, human_duration, parse_rfc3339, seconds_text

Row = Mapping[str, Any]
Column = tuple[str, Callable[[Row, dt.datetime], str]]

_PHASE_COLOURS: Final = {
    "SUCCEEDED": "32",  # green
    "FAILED": "31",  # red
    "CANCELLED": "33",  # yellow
    "RUNNING": "36",  # cyan
}


#: Starting widths of a streamed table's columns (job ids, phase and event names fit).
_STREAM_WIDTHS: Final = {"EVENT": 9, "JOB ID": 14, "NAME": 12, "PHASE": 9, "TYPE": 5, "DURATION": 8}


def stream_widths(kind: str) -> list[int]:
    """Starting widths of a streamed table (it cannot be measured first)."""
    return [_STREAM_WIDTHS.get(title, 0) for title, _ in columns_for(kind, True)]


def colour_wanted(stream: TextIO) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (https://no-color.org)."""
    if os.environ.get("NO_COLOR", "") != "":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


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


def cells(rows: Iterable[Row], columns: Sequence[Column], now: dt.datetime | None = None) -> list[list[str]]:
    now = now or dt.datetime.now(dt.UTC)
    return [[fn(row, now) for _, fn in columns] for row in rows]


def _paint(cell: str, title: str, colour: bool) -> str:
    code = _PHASE_COLOURS.get(cell) if colour and title == "PHASE" else None
    return f"\x1b[{code}m{cell}\x1b[0m" if code else cell


def table(
    rows: Iterable[Row],
    columns: Sequence[Column],
    *,
    colour: bool = False,
    header: bool = True,
    widths: list[int] | None = None,
    now: dt.datetime | None = None,
) -> list[str]:
    """Rows as lines of columns three spaces apart, like kubectl; ``widths`` (updated in place)
    keeps a streamed table aligned with what was printed before."""
    body = cells(rows, columns, now)
    titles = [title for title, _ in columns]
    sizes = widths if widths is not None else [0] * len(columns)
    if len(sizes) < len(columns):
        sizes.extend([0] * (len(columns) - len(sizes)))
    for row in ([titles] if header else []) + body:
        for i, cell in enumerate(row):
            sizes[i] = max(sizes[i], len(cell))
    lines = []
    for row in ([titles] if header else []) + body:
        parts = [
            _paint(cell, titles[i], colour and row is not titles) + " " * (sizes[i] - len(cell))
            for i, cell in enumerate(row)
        ]
        lines.append("   ".join(parts).rstrip())
    return lines


#: What json.dumps leaves raw with ensure_ascii=False but a terminal may act on: DEL, the C1 controls
#: (0x9b is CSI) and the bidirectional overrides. They only occur inside strings, so escaping them
#: keeps the JSON equal.
_CONTROLS: Final = re.compile("[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape_controls(text: str) -> str:
    return _CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def to_json(value: Any) -> str:
    return _escape_controls(json.dumps(value, indent=2, ensure_ascii=False))


def to_yaml(value: Any) -> str:
    out: str = yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return out


def emit(
    value: Mapping[str, Any],
    *,
    fmt: str,
    rows: Sequence[Row],
    kind: str,
    name_key: str = "job_id",
    out: TextIO | None = None,
) -> None:
    """Print ``value`` (a whole answer, for json and yaml) or its ``rows`` (for tables and names)."""
    stream = out or sys.stdout
    if fmt == "json":
        stream.write(to_json(value) + "\n")
    elif fmt == "yaml":
        stream.write(to_yaml(value))
    elif fmt == "name":
        for row in rows:
            stream.write(f"{row.get(name_key, '')}\n")
    else:
        if not rows:
            sys.stderr.write("No resources found.\n")
            return
        lines = table(rows, columns_for(kind, fmt == "wide"), colour=colour_wanted(stream))
        stream.write("\n".join(lines) + "\n")
    stream.flush()


def emit_stream_item(
    value: Mapping[str, Any],
    *,
    fmt: str,
    kind: str,
    name_key: str,
    state: dict[str, Any],
    out: TextIO | None = None,
) -> None:
    """One item of a stream (watch): json is one object per line, yaml one document each, tables one
    row each (the header before the first)."""
    stream = out or sys.stdout
    if fmt == "json":
        stream.write(_escape_controls(json.dumps(value, ensure_ascii=False, separators=(",", ":"))) + "\n")
    elif fmt == "yaml":
        stream.write("---\n" + to_yaml(value))
    elif fmt == "name":
        stream.write(f"{_lookup(value, name_key)}\n")
    else:
        # A stream's table cannot be measured first: start from widths that fit the usual values.
        widths: list[int] = state.setdefault("widths", stream_widths(kind))
        first = not state.get("header_done")
        lines = table(
            [value],
            columns_for(kind, fmt == "wide"),
            colour=colour_wanted(stream),
            header=first,
            widths=widths,
        )
        state["header_done"] = True
        stream.write("\n".join(lines) + "\n")
    stream.flush()


def _lookup(value: Mapping[str, Any], dotted: str) -> Any:
    current: Any = value
    for part in dotted.split("."):
        current = current.get(part, "") if isinstance(current, Mapping) else ""
    return current
