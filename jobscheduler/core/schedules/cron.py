"""Cron expressions and time zones: validation with positions, due times, the shortest gap.

The grammar is what both backends accept alike (Kubernetes' CronJob parser, robfig/cron's
standard one, and `cronsim`, which computes the times here): five fields (minute hour
day-of-month month day-of-week), each a comma list of ``*``, ``N`` or ``N-M``, optionally
``/step``; month and weekday names (``JAN``, ``MON``), any case; or a macro (``@yearly``,
``@annually``, ``@monthly``, ``@weekly``, ``@daily``, ``@midnight``, ``@hourly``). Day of month
and day of week combine as in Vixie/Debian cron: both restricted (neither starts with ``*``):
either matches; otherwise both must.

Time zones and daylight saving time follow Debian cron (cronsim implements its rules):

* an expression with a fixed minute and hour (``30 2 * * *``) fires once per matching day: a
  wall time skipped by a spring-forward change fires at the first minute after the gap, one
  repeated by a fall-back change fires the first time only;
* any other expression (``*/1 * * * *``, ``0 * * * *``) fires on the real minutes whose local
  wall time matches: none in a skipped hour, both times round in a repeated one. So
  ``*/1 * * * *`` fires exactly once per real minute, whatever the clocks do.
"""

from __future__ import annotations

import heapq
import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import cache
from typing import Final

from cronsim import CronSim, CronSimError

from jobscheduler.core.errors import FieldViolation, InvalidArgument

MAX_CRON_CHARS: Final = 128
MAX_TIME_ZONE_CHARS: Final = 64
#: The shortest gap is taken over this many upcoming runs, at most this far ahead.
GAP_RUNS: Final = 200
GAP_HORIZON: Final = timedelta(days=400)
#: A single next-time computation gives up after this many candidates (a safety bound; a valid
#: expression needs a few).
_MAX_CANDIDATES: Final = 5000

MACROS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FIELD_NAMES: Final = ("minute", "hour", "day-of-month", "month", "day-of-week")
_BOUNDS: Final = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_NAMES: Final = {
    3: {
        m: i + 1
        for i, m in enumerate(
            ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
        )
    },
    4: {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])},
}
_ITEM: Final = re.compile(r"(\*|(\w+)(?:-(\w+))?)(?:/(\w+))?\Z", re.ASCII)
_ALLOWED: Final = re.compile(r"[0-9A-Za-z*,/\- ]", re.ASCII)


def _problem(position: int, text: str, offset: int, what: str) -> FieldViolation:
    return FieldViolation(
        "cron",
        f"field {position + 1} ({FIELD_NAMES[position]}) {text!r} at character {offset}: {what}",
    )


def _value(position: int, token: str) -> int | str:
    """The token's number, or what is wrong with it."""
    names = _NAMES.get(position, {})
    if token.upper() in names:
        return names[token.upper()]
    if not token.isdigit() or len(token) > 2:
        return f"{token!r} is not a number" + (f" or a name ({', '.join(names)})" if names else "")
    low, high = _BOUNDS[position]
    value = int(token)
    return value if low <= value <= high else f"{value} is out of range {low}-{high}"


def _field_problem(position: int, text: str) -> str | None:
    for item in text.split(","):
        match = _ITEM.match(item)
        if match is None:
            return f"{item!r} is not *, N, N-M or one of them with /STEP"
        _, start, end, step = match.groups()
        values = [_value(position, t) for t in (start, end) if t is not None]
        for value in values:
            if isinstance(value, str):
                return value
        if len(values) == 2 and values[0] > values[1]:  # type: ignore[operator]
            return f"range {item!r} ends before it starts"
        if step is not None and (not step.isdigit() or len(step) > 2 or int(step) == 0):
            return f"step {step!r} is not a number 1-99"
    return None


@dataclass(frozen=True, slots=True)
class CronRule:
    """A valid expression (macros expanded) in a time zone: its due times."""

    expression: str
    zone: tzinfo
    #: Debian's fixed-time rules apply (fixed minute and hour, a zone other than UTC).
    fixed_time: bool

    def times_after(self, after: datetime) -> Iterator[datetime]:
        """Due times strictly after ``after`` (aware), ascending, as aware UTC datetimes."""
        after = after.astimezone(UTC)
        local = after.astimezone(self.zone)
        start = local.replace(tzinfo=None)
        if not self.fixed_time and local.fold == 0 and _ambiguous(start, self.zone):
            # The repeated hour comes round again after ``after``: look back over it.
            fold1 = start.replace(tzinfo=self.zone, fold=1)
            start -= local.utcoffset() - fold1.utcoffset()  # type: ignore[operator]
        walls = CronSim(self.expression, start.replace(tzinfo=self.zone))
        pending: list[datetime] = []
        last: datetime | None = None
        for count, wall in enumerate(walls):
            if count >= _MAX_CANDIDATES:
                return
            instants = self._instants(wall)
            if not instants:
                continue
            horizon = instants[0]
            for instant in instants:
                heapq.heappush(pending, instant)
            while pending and pending[0] <= horizon:
                instant = heapq.heappop(pending)
                if instant > after and (last is None or instant > last):
                    last = instant
                    yield instant

    def next_after(self, after: datetime) -> datetime | None:
        """The first due time after ``after``; None if there is none within 50 years."""
        return next(self.times_after(after), None)

    def _instants(self, wall: datetime) -> list[datetime]:
        naive = wall.replace(tzinfo=None)
        first = naive.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        if self.fixed_time or self.zone is UTC:
            return [first]
        if first.astimezone(self.zone).replace(tzinfo=None) != naive:
            return []  # skipped by a spring-forward change
        second = naive.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        return [first] if second == first else [first, second]


def _ambiguous(naive: datetime, zone: tzinfo) -> bool:
    return naive.replace(tzinfo=zone, fold=0).utcoffset() != naive.replace(tzinfo=zone, fold=1).utcoffset()


#: Files of the zone directory that are not IANA zones: the host's own zone (a link to whatever
#: zone that machine is set to: the server's and the CronJob controller's differ) and tzcode's.
_NOT_ZONES: Final = frozenset({"localtime", "posixrules", "posix", "right"})


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(n for n in zoneinfo.available_timezones() if n.split("/")[0] not in _NOT_ZONES)


def parse_zone(name: str) -> tzinfo:
    """The zone of an IANA name ("": UTC); InvalidArgument on ``time_zone`` otherwise.

    Only names from the zone database's own list reach ZoneInfo (a name is a file path)."""
    if name == "":
        return UTC
    if len(name) > MAX_TIME_ZONE_CHARS:
        raise InvalidArgument.field("time_zone", f"at most {MAX_TIME_ZONE_CHARS} characters")
    if name not in _zone_names():
        raise InvalidArgument.field("time_zone", f"{name!r} is not an IANA time zone name (Europe/Berlin)")
    return zoneinfo.ZoneInfo(name)


def cron_violation(expression: str) -> FieldViolation | None:
    """What is wrong with the expression's syntax (field, its text, the character offset), if anything."""
    if len(expression) > MAX_CRON_CHARS:
        return FieldViolation("cron", f"at most {MAX_CRON_CHARS} characters")
    if expression.startswith("@"):
        if expression.lower() in MACROS:
            return None
        return FieldViolation("cron", f"unknown macro {expression!r}; one of {', '.join(MACROS)}")
    fields = [(m.start(), m.group()) for m in re.finditer(r"\S+", expression)]
    for offset, char in enumerate(expression):
        if not _ALLOWED.match(char):
            what = f"character {offset} ({char!r}) is not allowed"
            position = next(
                (i for i, (start, text) in enumerate(fields) if start <= offset < start + len(text)), 5
            )
            if position < 5:
                return _problem(position, fields[position][1], fields[position][0], what)
            return FieldViolation("cron", what)
    if len(fields) != 5:
        return FieldViolation(
            "cron", f"{len(fields)} fields; want 5 (minute hour day-of-month month day-of-week) or a macro"
        )
    for position, (offset, text) in enumerate(fields):
        problem = _field_problem(position, text)
        if problem is not None:
            return _problem(position, text, offset, problem)
    return None


def parse_cron(expression: str, zone: tzinfo) -> CronRule:
    """A rule for a valid expression; InvalidArgument naming ``cron`` (and the field) otherwise."""
    violation = cron_violation(expression)
    if violation is not None:
        raise InvalidArgument([violation])
    text = MACROS.get(expression.lower(), expression)
    fields = text.split()
    try:
        CronSim(text, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError:  # e.g. "0 0 31 2 *": grammar fine, no such day in those months
        offset = expression.find(fields[2]) if not expression.startswith("@") else 0
        raise InvalidArgument([_problem(2, fields[2], offset, "no month given has such a day")]) from None
    fixed = zone is not UTC and not fields[0].startswith("*") and not fields[1].startswith("*")
    return CronRule(text, zone, fixed)


def shortest_gap(rule: CronRule, after: datetime, below: timedelta, runs: int = GAP_RUNS) -> timedelta | None:
    """The first gap shorter than ``below`` between two of the next ``runs`` due times (at most
    GAP_HORIZON ahead), else the shortest one; None with fewer than two."""
    gap: timedelta | None = None
    previous: datetime | None = None
    for count, time in enumerate(rule.times_after(after)):
        if previous is not None and (gap is None or time - previous < gap):
            gap = time - previous
            if gap < below:
                break
        previous = time
        if count + 1 >= runs or time - after > GAP_HORIZON:
            break
    return gap


def validate(expression: str, time_zone: str, *, after: datetime, min_interval_seconds: int) -> CronRule:
    """Parse both and refuse what never fires or fires more often than ``min_interval_seconds``."""
    zone = parse_zone(time_zone)
    rule = parse_cron(expression, zone)
    if rule.next_after(after) is None:
        raise InvalidArgument.field("cron", f"{expression!r} never fires (no due time within 50 years)")
    if min_interval_seconds <= 60:
        return rule  # due times are distinct whole minutes: never closer than 60 s
    gap = shortest_gap(rule, after, timedelta(seconds=min_interval_seconds))
    if gap is not None and gap.total_seconds() < min_interval_seconds:
        raise InvalidArgument.field(
            "cron",
            f"{expression!r} fires {int(gap.total_seconds())} s apart; "
            f"the shortest interval allowed is {min_interval_seconds} s (MIN_SCHEDULE_INTERVAL)",
        )
    return rule
