"""core.schedules: cron validation, due times across DST, the shortest gap, the loop's decision."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobscheduler.core.errors import InvalidArgument
from jobscheduler.core.index import JobIndex
from jobscheduler.core.model import JobPhase, JobRecord, ScheduleRequest
from jobscheduler.core.schedules import cron
from jobscheduler.core.schedules.codec import spec_from_json, spec_to_json, status_from_json, status_to_json
from jobscheduler.core.schedules.loop import MAX_COUNTED_DUE_TIMES, decide, latest_due, run_request_id
from jobscheduler.core.schedules.model import ConcurrencyPolicy, Schedule, ScheduleSpec, ScheduleStatus
from jobscheduler.core.schedules.service import ScheduleService, schedule_jobs

NY = cron.parse_zone("America/New_York")
BERLIN = cron.parse_zone("Europe/Berlin")
#: Daylight saving changes: (zone, the instant the clocks change).
CHANGES = [
    (NY, datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),  # 02:00 EST -> 03:00 EDT
    (NY, datetime(2026, 11, 1, 6, 0, tzinfo=UTC)),  # 02:00 EDT -> 01:00 EST
    (BERLIN, datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),  # 02:00 CET -> 03:00 CEST
    (BERLIN, datetime(2026, 10, 25, 1, 0, tzinfo=UTC)),  # 03:00 CEST -> 02:00 CET
]


def take(rule: cron.CronRule, after: datetime, n: int) -> list[datetime]:
    return [t for _, t in zip(range(n), rule.times_after(after), strict=False)]


@pytest.mark.parametrize(("zone", "change"), CHANGES)
def test_every_minute_fires_once_per_real_minute_across_a_dst_change(zone: object, change: datetime) -> None:
    rule = cron.parse_cron("*/1 * * * *", zone)  # type: ignore[arg-type]
    start = change - timedelta(hours=2, seconds=30)
    times = take(rule, start, 240)
    assert times == [change - timedelta(hours=2) + timedelta(minutes=i) for i in range(240)]


def test_fixed_times_follow_debian_cron_across_dst() -> None:
    # Spring forward: 02:30 does not exist on 8 March; it runs at 03:00 (the first minute after).
    spring = [
        t.astimezone(NY).isoformat()
        for t in take(cron.parse_cron("30 2 * * *", NY), CHANGES[0][1] - timedelta(days=1, hours=3), 3)
    ]
    assert spring == ["2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
    # Fall back: 01:30 happens twice on 1 November; it runs the first time only.
    fall = [
        t.astimezone(NY).isoformat()
        for t in take(cron.parse_cron("30 1 * * *", NY), CHANGES[1][1] - timedelta(days=1, hours=6), 3)
    ]
    assert fall == ["2026-10-31T01:30:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    # Hourly (a wildcard hour): no run in the skipped hour, two in the repeated one.
    hourly = take(cron.parse_cron("@hourly", NY), CHANGES[1][1] - timedelta(hours=3, minutes=1), 5)
    assert [b - a for a, b in itertools.pairwise(hourly)] == [timedelta(hours=1)] * 4


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("61 * * * *", "field 1 (minute) '61' at character 0: 61 is out of range 0-59"),
        ("* 24 * * *", "field 2 (hour) '24' at character 2"),
        ("*  *  0 * *", "field 3 (day-of-month) '0' at character 6"),
        ("* * * 13 *", "field 4 (month) '13' at character 6"),
        ("* * * * 7", "field 5 (day-of-week) '7' at character 8"),
        ("* * * FOO *", "'FOO' is not a number or a name"),
        ("*/0 * * * *", "step '0'"),
        ("5-1 * * * *", "range '5-1' ends before it starts"),
        ("* * L * *", "field 3 (day-of-month) 'L'"),
        ("* * * * MON#2", "field 5 (day-of-week) 'MON#2' at character 8: character 11 ('#') is not allowed"),
        ("* * * * * *", "6 fields"),
        ("", "0 fields"),
        ("@every 1h", "unknown macro"),
        ("0 0 30 2 *", "field 3 (day-of-month) '30' at character 4: no month given has such a day"),
        ("x" * 200, "at most 128"),
    ],
)
def test_bad_expressions_name_the_field_and_position(expression: str, expected: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        cron.parse_cron(expression, UTC)
    assert info.value.violations[0].field == "cron" and expected in info.value.violations[0].description


@pytest.mark.parametrize(
    "expression", ["0 3 * * *", "*/5 1-3 * JAN-MAR mon-fri", "0 0 1,15 * *", "@weekly", "@DAILY"]
)
def test_good_expressions(expression: str) -> None:
    assert cron.parse_cron(expression, BERLIN).next_after(datetime(2026, 1, 1, tzinfo=UTC)) is not None


@pytest.mark.parametrize(
    "name",
    ["Mars/Olympus", "../../etc/passwd", "/etc/localtime", "UTC\0", "x" * 65, "localtime", "posixrules"],
)
def test_unknown_time_zones_are_refused_without_touching_files(name: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        cron.parse_zone(name)
    assert info.value.violations[0].field == "time_zone"


def test_the_shortest_interval() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    cron.validate("*/1 * * * *", "", after=now, min_interval_seconds=60)
    with pytest.raises(InvalidArgument, match="fires 60 s apart"):
        cron.validate("*/1 * * * *", "", after=now, min_interval_seconds=61)
    cron.validate("*/2 * * * *", "", after=now, min_interval_seconds=120)
    # Debian's rule moves 02:59 (skipped by spring-forward) to 03:00: one minute after 01:59.
    spring = datetime(2026, 3, 7, tzinfo=UTC)
    with pytest.raises(InvalidArgument, match="fires 60 s apart"):
        cron.validate("59 1,2 * * *", "America/New_York", after=spring, min_interval_seconds=3600)
    cron.validate("59 1,2 * * *", "", after=spring, min_interval_seconds=3600)
    # Rare but close together: 00:00 and 00:01 once a day.
    with pytest.raises(InvalidArgument, match="fires 60 s apart"):
        cron.validate("0,1 0 * * *", "", after=now, min_interval_seconds=120)
    with pytest.raises(InvalidArgument, match="no month given has such a day"):
        cron.validate("0 0 31 2,4 *", "", after=now, min_interval_seconds=60)


@settings(max_examples=60, deadline=None)
@given(
    minute=st.sampled_from(["*", "*/7", "5", "0,30", "10-20/5"]),
    hour=st.sampled_from(["*", "2", "1-3", "*/6"]),
    zone=st.sampled_from(["", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata"]),
    start=st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2028, 1, 1), timezones=st.just(UTC)
    ),
)
def test_due_times_ascend_and_next_after_agrees(minute: str, hour: str, zone: str, start: datetime) -> None:
    rule = cron.parse_cron(f"{minute} {hour} * * *", cron.parse_zone(zone))
    times = take(rule, start, 50)
    assert times and times[0] > start
    assert all(a < b for a, b in itertools.pairwise(times))
    for a, b in itertools.pairwise(times):
        assert rule.next_after(a) == b  # a resumed iteration finds the same next time


T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
MINUTELY = cron.parse_cron("*/1 * * * *", UTC)


def test_decide_one_catch_up_run_within_the_deadline() -> None:
    # Down for three periods: the latest runs, the two before are missed.
    now = T0 + timedelta(minutes=3, seconds=10)
    d = decide(latest_due(MINUTELY, T0, now), now, deadline_seconds=30)
    assert (d.run, d.missed, d.handled_until) == (T0 + timedelta(minutes=3), 2, T0 + timedelta(minutes=3))
    # Too late for the deadline: all three missed, nothing runs.
    d = decide(latest_due(MINUTELY, T0, now), now, deadline_seconds=5)
    assert (d.run, d.missed, d.last_missed) == (None, 3, T0 + timedelta(minutes=3))
    # Nothing due.
    d = decide(latest_due(MINUTELY, T0, T0 + timedelta(seconds=59)), T0 + timedelta(seconds=59), None)
    assert d.run is None and d.missed == 0 and d.handled_until is None


@settings(max_examples=100, deadline=None)
@given(
    down=st.integers(min_value=0, max_value=3 * MAX_COUNTED_DUE_TIMES),
    late=st.integers(min_value=0, max_value=59),
    deadline=st.none() | st.integers(min_value=0, max_value=600),
)
def test_decide_never_runs_more_than_once_and_counts_every_due_time(
    down: int, late: int, deadline: int | None
) -> None:
    now = T0 + timedelta(minutes=down, seconds=late)
    d = decide(latest_due(MINUTELY, T0, now), now, deadline)
    due = min(down, MAX_COUNTED_DUE_TIMES)
    ran = 1 if d.run is not None else 0
    assert d.missed + ran == due
    if down:
        assert d.handled_until == T0 + timedelta(minutes=down)  # the latest, even past the count bound
        assert (d.run is not None) == (deadline is None or late <= deadline)


def test_run_request_ids_are_per_due_time() -> None:
    assert run_request_id("nightly", T0) == f"schedule/nightly/{int(T0.timestamp())}"


def test_the_stored_spec_round_trips() -> None:
    job = ScheduleRequest(name="n", job_field="timer_job", params={"duration_seconds": 5}, labels={"a": "b"})
    full = ScheduleSpec(
        name="full",
        job=job,
        cron="0 3 * * MON",
        time_zone="Asia/Kolkata",
        concurrency_policy=ConcurrencyPolicy.REPLACE,
        starting_deadline_seconds=90,
        suspend=True,
        successful_jobs_history_limit=7,
        failed_jobs_history_limit=0,
        description="ünïcode",
    )
    templated = ScheduleSpec(
        name="t",
        cron="@daily",
        job=ScheduleRequest(name="", job_field=None, params={}, template="base"),
        template="base",
        template_version=4,
    )
    for original in (full, templated):
        back = spec_from_json(spec_to_json(original))
        assert (
            replace(back, job=replace(back.job, priority=original.job.priority, queue=original.job.queue))
            == original
        )
    status = ScheduleStatus(
        last_schedule_time=datetime(2026, 1, 1, tzinfo=UTC), missed_runs=2, skipped_runs=1
    )
    assert status_from_json(status_to_json(status)) == status


_TOKENS = st.sampled_from(
    ["*", "0", "5", "59", "60", "7", "-", "/", ",", "MON", "jan", "L", "#", "?", "", "99", "1-5", "*/0"]
)


@settings(max_examples=300, deadline=None)
@given(
    expression=st.one_of(
        st.text(max_size=150),
        st.lists(st.lists(_TOKENS, max_size=4).map("".join), min_size=0, max_size=7).map(" ".join),
    ),
    zone=st.one_of(st.text(max_size=80), st.sampled_from(["", "UTC", "Europe/Berlin", "Etc/GMT+5"])),
)
def test_any_text_is_a_rule_or_invalid_argument_naming_its_field(expression: str, zone: str) -> None:
    try:
        rule = cron.validate(expression, zone, after=T0, min_interval_seconds=60)
    except InvalidArgument as exc:
        assert exc.violations and exc.violations[0].field in ("cron", "time_zone")
    else:
        assert rule.next_after(T0) is not None


T0 = datetime(2026, 1, 1, tzinfo=UTC)
RECORDS = st.lists(
    st.builds(
        lambda i, owner, schedule, phase, minutes: JobRecord.build(
            job_id=f"job-{i}",
            name="n",
            type="timer",
            namespace="default",
            phase=phase,
            owner=owner,
            schedule=schedule,
            created_at=T0 + timedelta(minutes=minutes),
        ),
        st.integers(0, 10**6),
        st.sampled_from(["alice", "bob", ""]),
        st.sampled_from(["nightly", "hourly", ""]),
        st.sampled_from(list(JobPhase)),
        st.integers(0, 3),
    ),
    max_size=30,
    unique_by=lambda r: r.job_id,
)


class NoScan(JobIndex):
    def records(self) -> list[JobRecord]:
        raise AssertionError("a schedule's jobs are read from the postings, not by a scan of every job")


@settings(max_examples=60, deadline=None)
@given(RECORDS, st.sampled_from(["alice", "bob", ""]), st.sampled_from(["nightly", "hourly"]))
def test_a_schedules_jobs_come_from_the_postings_oldest_first(
    records: list[JobRecord], owner: str, name: str
) -> None:
    """GetSchedule, ListSchedules (each schedule of a page) and every local run read a schedule's jobs:
    a scan of every job held the event loop ~45 ms per call at 100,000 jobs."""
    index = NoScan()
    index.replace_all(records)
    expected = sorted(
        (r for r in records if r.owner == owner and r.schedule == name),
        key=lambda r: (r.created_at, r.job_id),
    )
    assert schedule_jobs(index, owner, name) == expected
    schedule = Schedule(
        spec=ScheduleSpec(name=name, cron="@daily", job=ScheduleRequest(name="", job_field=None, params={})),
        owner=owner,
        created_at=T0,
        updated_at=T0,
    )
    service = ScheduleService(cast(Any, None), cast(Any, SimpleNamespace(index=index)), clock=lambda: T0)
    view = service.view(schedule)
    assert view.active_job_ids == tuple(r.job_id for r in expected if not r.phase.is_terminal)
