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
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, TextIO

import yaml

from jobscheduler.commands._columns import Column, Row
from jobscheduler.commands._columns import columns_for as columns_for  # (re-exported)

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
