"""The live index (core/index.py), list pagination (core/query.py), label selectors
(core/selectors.py) and names (core/naming.py), in-process: unit and property tests.

The property test runs random sequences of apply/remove/replace_all/subscribe against a plain
model (a dict of records and the list of changes it implies) and checks what every subscription
receives, the newest-first order and resuming from tokens. Nothing here sleeps or uses the network.
"""

from __future__ import annotations

import asyncio
import itertools
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobscheduler.core.errors import InvalidArgument, OutOfRange
from jobscheduler.core.index import JobIndex, Subscription
from jobscheduler.core.model import JobEvent, JobEventType, JobFilter, JobPhase, JobRecord
from jobscheduler.core.naming import (
    JOB_ID_PREFIX,
    derived_job_id,
    dns1123_label_problem,
    env_name_problem,
    label_key_problem,
    label_value_problem,
    new_job_id,
)
from jobscheduler.core.query import order_key, paginate, paginate_newest_first
from jobscheduler.core.selectors import parse_selector

T0 = datetime(2026, 1, 1, tzinfo=UTC)
IDS = [f"job-{c * 10}" for c in "abcdef"]
PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


def record(job_id: str, phase: JobPhase = JobPhase.PENDING, *, created: int = 0, **kw: Any) -> JobRecord:
    defaults: dict[str, Any] = {"name": job_id.removeprefix("job-"), "type": "timer", "namespace": "default"}
    defaults.update(kw)
    at = None if created < 0 else T0 + timedelta(seconds=created)
    return JobRecord.build(job_id=job_id, phase=phase, created_at=at, **defaults)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def drain(subscription: Subscription) -> list[JobEvent]:
    """Every event the subscription has for its consumer now (replay and buffer), then checks
    that the next read would wait."""
    events: list[JobEvent] = []
    while True:
        task = asyncio.ensure_future(subscription.next())
        for _ in range(3):
            await asyncio.sleep(0)
        if not task.done():
            task.cancel()
            return events
        events.append(task.result())


# --- the model ------------------------------------------------------------------------------------

PREDICATES: dict[str, Callable[[JobRecord], bool]] = {
    "all": lambda r: True,
    "running": lambda r: r.phase is JobPhase.RUNNING,
    "team-a": lambda r: r.labels.get("team") == "a",
    "one-job": lambda r: r.job_id == IDS[0],
}
PHASE_EVENTS = {
    JobPhase.RUNNING: JobEventType.STARTED,
    JobPhase.SUCCEEDED: JobEventType.SUCCEEDED,
    JobPhase.FAILED: JobEventType.FAILED,
    JobPhase.CANCELLED: JobEventType.CANCELLED,
}


def expected_type(previous: JobRecord | None, current: JobRecord) -> JobEventType | None:
    if previous is None:
        return JobEventType.CREATED
    if previous == current:
        return None
    if previous.phase is not current.phase:
        if current.phase is JobPhase.RUNNING and previous.started_at is not None:
            return JobEventType.UPDATED
        return PHASE_EVENTS.get(current.phase, JobEventType.UPDATED)
    return JobEventType.UPDATED


@dataclass
class Model:
    records: dict[str, JobRecord]
    #: (event type, record, the record before the change)
    changes: list[tuple[JobEventType, JobRecord, JobRecord | None]]

    def apply(self, r: JobRecord) -> None:
        previous = self.records.get(r.job_id)
        kind = expected_type(previous, r)
        self.records[r.job_id] = r
        if kind is not None:
            self.changes.append((kind, r, previous))

    def remove(self, job_id: str) -> None:
        if (previous := self.records.pop(job_id, None)) is not None:
            self.changes.append((JobEventType.DELETED, previous, None))


records_st = st.builds(
    record,
    st.sampled_from(IDS),
    st.sampled_from(list(JobPhase)),
    created=st.integers(-1, 5),
    labels=st.sampled_from([{}, {"team": "a"}, {"team": "b"}]),
    started_at=st.sampled_from([None, T0]),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("apply"), records_st),
        st.tuples(st.just("remove"), st.sampled_from(IDS)),
        st.tuples(st.just("replace_all"), st.lists(records_st, max_size=4, unique_by=lambda r: r.job_id)),
        st.tuples(st.just("subscribe"), st.sampled_from(sorted(PREDICATES)), st.integers(-1, 40)),
    ),
    max_size=40,
)


@PROPERTY
@given(operations)
def test_index_follows_the_model_and_delivers_every_matching_change_in_order(ops: list[Any]) -> None:
    async def scenario() -> None:
        index = JobIndex(clock=Clock(), stream_buffer=10_000)
        index.mark_synced()  # (a list before the first sync that nobody watches is not logged)
        model = Model({}, [])
        subs: list[tuple[Subscription, str, int]] = []  # subscription, predicate, events before it
        for op in ops:
            if op[0] == "apply":
                event = index.apply(op[1])
                model.apply(op[1])
            elif op[0] == "remove":
                event = index.remove(op[1])
                model.remove(op[1])
            elif op[0] == "replace_all":
                index.replace_all(op[1])
                listed = {r.job_id for r in op[1]}
                for r in op[1]:
                    model.apply(r)
                for job_id in [j for j in model.records if j not in listed]:
                    model.remove(job_id)
                event = None
            else:
                _, name, back = op
                # From now, or from a token of an earlier position (resuming replays after it).
                after = len(model.changes) if back < 0 else max(0, len(model.changes) - back)
                token = index.token(after) if back >= 0 else ""
                subs.append((index.subscribe(PREDICATES[name], token), name, after))
                continue
            if event is not None:
                assert (event.type, event.record) == model.changes[-1][:2]
                assert event.seq == len(model.changes)
            assert index.current_token() == index.token(len(model.changes))

        assert {r.job_id: r for r in index.records()} == model.records
        assert len(index) == len(model.records)
        newest = sorted(model.records.values(), key=order_key, reverse=True)
        assert list(index.newest_first()) == newest
        for cursor in [order_key(r) for r in newest] + [(T0 + timedelta(seconds=3), "job-c")]:
            assert list(index.newest_first(cursor)) == [r for r in newest if order_key(r) < cursor]

        for subscription, name, after in subs:
            got = await drain(subscription)
            # Every change of a job that matches the filter, and the change that makes it leave
            # the filter (its record no longer matches: the last event of it that watch gets).
            matches = PREDICATES[name]
            want = [
                (seq, kind, r)
                for seq, (kind, r, before) in enumerate(model.changes, start=1)
                if seq > after and (matches(r) or (before is not None and matches(before)))
            ]
            assert [(e.seq, e.type, e.record) for e in got] == want
            assert all(a.seq < b.seq for a, b in itertools.pairwise(got))
            subscription.close()
        assert index.subscriptions == 0

    run(scenario())


# --- the index: unit tests ------------------------------------------------------------------------


def test_apply_classifies_changes() -> None:
    index = JobIndex(clock=Clock())

    def kind(r: JobRecord) -> JobEventType | None:
        event = index.apply(r)
        return event.type if event is not None else None

    a = record(IDS[0])
    assert kind(a) is JobEventType.CREATED
    assert kind(a) is None  # nothing changed: no event
    running = replace(a, phase=JobPhase.RUNNING, started_at=T0)
    assert kind(running) is JobEventType.STARTED
    retry = replace(running, phase=JobPhase.PENDING)
    assert kind(retry) is JobEventType.UPDATED
    assert kind(replace(retry, phase=JobPhase.RUNNING)) is JobEventType.UPDATED  # a retry's pod again
    done = replace(running, phase=JobPhase.SUCCEEDED)
    assert kind(done) is JobEventType.SUCCEEDED
    assert kind(replace(done, message="m")) is JobEventType.UPDATED
    deleted = index.remove(IDS[0])
    assert deleted is not None and deleted.type is JobEventType.DELETED
    assert deleted.record.message == "m"  # the last record known
    assert index.remove(IDS[0]) is None


def test_replace_all_applies_what_is_listed_and_deletes_the_rest() -> None:
    index = JobIndex(clock=Clock())
    events: list[JobEvent] = []
    index.add_listener(events.append)
    index.apply(record(IDS[0]))
    index.apply(record(IDS[1]))
    events.clear()
    index.replace_all([record(IDS[1]), record(IDS[2], created=1)])
    assert [(e.type, e.record.job_id) for e in events] == [
        (JobEventType.CREATED, IDS[2]),
        (JobEventType.DELETED, IDS[0]),
    ]
    assert [r.job_id for r in index.newest_first()] == [IDS[2], IDS[1]]


def test_creation_time_change_moves_the_record_in_order() -> None:
    index = JobIndex(clock=Clock())
    index.apply(record(IDS[0], created=1))
    index.apply(record(IDS[1], created=2))
    index.apply(record(IDS[0], created=3))
    assert [r.job_id for r in index.newest_first()] == [IDS[0], IDS[1]]
    index.remove(IDS[0])
    assert [r.job_id for r in index.newest_first()] == [IDS[1]]


def test_slow_consumer_is_ended_with_a_token_to_resume_from() -> None:
    async def scenario() -> None:
        index = JobIndex(clock=Clock(), stream_buffer=2)
        subscription = index.subscribe(lambda r: True)
        for i in range(3):
            index.apply(record(IDS[i]))
        with pytest.raises(OutOfRange) as info:
            await subscription.next()
        token = index.token(0)
        assert repr(token) in info.value.message
        # Resuming replays from the log, as fast as the consumer reads: catching up is not falling behind.
        resumed = index.subscribe(lambda r: True, token)
        assert [e.record.job_id for e in await drain(resumed)] == IDS[:3]

    run(scenario())


def test_resume_tokens_out_of_range_and_malformed() -> None:
    async def scenario() -> None:
        index = JobIndex(clock=Clock(), max_events=3)
        for i in range(5):
            index.apply(record(IDS[i]))
        # Events 3..5 are retained: resuming after 2 (or later) works, after 1 is OUT_OF_RANGE.
        assert [e.seq for e in await drain(index.subscribe(lambda r: True, index.token(2)))] == [3, 4, 5]
        assert await drain(index.subscribe(lambda r: True, index.token(5))) == []
        with pytest.raises(OutOfRange):
            index.subscribe(lambda r: True, index.token(1))
        with pytest.raises(OutOfRange):
            index.subscribe(lambda r: True, index.token(6))  # a position this index has not reached
        with pytest.raises(OutOfRange):
            index.subscribe(lambda r: True, JobIndex(clock=Clock()).token(0))  # another replica/run
        for bad in ["x", ".", f"{index.epoch}.", f"{index.epoch}.-1", f"{index.epoch}.1e3", "٣.٣"]:
            with pytest.raises(InvalidArgument) as info:
                index.subscribe(lambda r: True, bad, field="resume_token")
            assert info.value.violations[0].field == "resume_token"

    run(scenario())


def test_catching_up_past_the_retained_window_is_out_of_range() -> None:
    async def scenario() -> None:
        index = JobIndex(clock=Clock(), max_events=3)
        index.apply(record(IDS[0]))
        subscription = index.subscribe(lambda r: True, index.token(0))
        for i in range(1, 5):
            index.apply(record(IDS[i]))  # event 1 (next to replay) is dropped meanwhile
        with pytest.raises(OutOfRange):
            await subscription.next()

    run(scenario())


def test_retention_by_age() -> None:
    clock = Clock()
    index = JobIndex(clock=clock, retention=timedelta(seconds=10))
    index.apply(record(IDS[0]))
    clock.now += timedelta(seconds=11)
    index.apply(record(IDS[1]))
    with pytest.raises(OutOfRange):
        index.subscribe(lambda r: True, index.token(0))
    assert index.subscribe(lambda r: True, index.token(1)) is not None


def test_listener_sees_every_change_and_can_be_removed() -> None:
    index = JobIndex(clock=Clock())
    seen: list[int] = []
    remove = index.add_listener(lambda e: seen.append(e.seq))
    index.apply(record(IDS[0]))
    index.remove(IDS[0])
    remove()
    index.apply(record(IDS[0]))
    assert seen == [1, 2]


def test_synced_and_wait_synced() -> None:
    async def scenario() -> None:
        index = JobIndex(clock=Clock())
        assert not index.synced
        waiter = asyncio.ensure_future(index.wait_synced(within=5))
        await asyncio.sleep(0)
        index.mark_synced()
        assert await waiter is True
        assert await JobIndex().wait_synced(within=0) is False

    run(scenario())


# --- query.py: pagination and filters -------------------------------------------------------------

page_records = st.lists(
    st.builds(
        record,
        st.sampled_from([f"job-{i:02d}" for i in range(30)]),
        st.sampled_from(list(JobPhase)),
        created=st.integers(-1, 6),
        labels=st.sampled_from([{}, {"team": "a"}, {"team": "b", "tier": "x"}]),
        owner=st.sampled_from(["", "alice", "bob"]),
        queue=st.sampled_from(["default", "batch"]),
        type=st.sampled_from(["timer", "other"]),
    ),
    max_size=30,
    unique_by=lambda r: r.job_id,
)
filters = st.builds(
    JobFilter,
    type=st.sampled_from(["", "timer"]),
    phases=st.sampled_from([frozenset(), frozenset({JobPhase.RUNNING, JobPhase.PENDING})]),
    label_selector=st.sampled_from(["", "team=a", "team notin (a)", "!tier"]),
    name_prefix=st.sampled_from(["", "0", "1"]),
    created_after=st.sampled_from([None, T0 + timedelta(seconds=2)]),
    created_before=st.sampled_from([None, T0 + timedelta(seconds=5)]),
    owner=st.sampled_from(["", "alice"]),
    queue=st.sampled_from(["", "batch"]),
)


def reference_matches(f: JobFilter, r: JobRecord) -> bool:
    labels = dict(r.labels)
    selector = {
        "": True,
        "team=a": labels.get("team") == "a",
        "team notin (a)": labels.get("team") != "a",
        "!tier": "tier" not in labels,
    }[f.label_selector]
    created = r.created_at or datetime.min.replace(tzinfo=UTC)
    return (
        selector
        and (not f.type or r.type == f.type)
        and (not f.phases or r.phase in f.phases)
        and r.name.startswith(f.name_prefix)
        and (not f.owner or r.owner == f.owner)
        and (not f.queue or r.queue == f.queue)
        and (f.created_after is None or created >= f.created_after)
        and (f.created_before is None or created < f.created_before)
    )


def all_pages(page: Callable[[str], Any]) -> Iterator[list[JobRecord]]:
    token = ""
    for _ in range(100):
        result = page(token)
        yield result.records
        token = result.next_page_token
        if not token:
            return
    raise AssertionError("pagination did not end")


@PROPERTY
@given(page_records, filters, st.integers(1, 7))
def test_pages_walk_every_match_newest_first_once(records: list[JobRecord], f: JobFilter, size: int) -> None:
    want = sorted((r for r in records if reference_matches(f, r)), key=order_key, reverse=True)
    pages = list(all_pages(lambda token: paginate(records, f, size, token)))
    assert [r for p in pages for r in p] == want
    assert all(len(p) == size for p in pages[:-1]) and len(pages[-1]) <= size
    assert pages[-1] or not want  # no empty last page after a full one

    # The index's walk (JobIndex.newest_first) gives the same pages.
    index = JobIndex(clock=Clock())
    for r in records:
        index.apply(r)
    walked = list(all_pages(lambda token: paginate_newest_first(index.newest_first, f, size, token)))
    assert walked == pages


@PROPERTY
@given(page_records, st.lists(st.integers(10, 20), max_size=5))
def test_pages_stay_correct_while_newer_jobs_are_added(records: list[JobRecord], later: list[int]) -> None:
    index = JobIndex(clock=Clock())
    for r in records:
        index.apply(r)
    want = list(index.newest_first())
    first = paginate_newest_first(index.newest_first, JobFilter(), 3, "")
    for i, seconds in enumerate(later):
        index.apply(record(f"job-new{i}", created=seconds))  # newer than any cursor: before it
    got = list(first.records)
    token = first.next_page_token
    while token:
        page = paginate_newest_first(index.newest_first, JobFilter(), 3, token)
        got.extend(page.records)
        token = page.next_page_token
    assert got == want


def test_page_size_and_token_errors_name_the_field() -> None:
    records = [record(f"job-{i:02d}", created=i) for i in range(5)]
    assert len(paginate(records, JobFilter(), 0, "").records) == 5  # 0: the default size
    for size in (-1, 1001):
        with pytest.raises(InvalidArgument) as info:
            paginate(records, JobFilter(), size, "")
        assert info.value.violations[0].field == "page_size"
    token = paginate(records, JobFilter(), 2, "").next_page_token
    assert token
    with pytest.raises(InvalidArgument) as info:
        paginate(records, JobFilter(type="timer"), 2, token)  # issued for another filter
    assert info.value.violations[0].field == "page_token"
    assert "different filter" in info.value.message
    for bad in ["x", "!!!", "e30", token[:-3], "eyJjIjoiMjAyNiIsImkiOiJhIiwiZiI6IngifQ"]:
        with pytest.raises(InvalidArgument) as info:
            paginate(records, JobFilter(), 2, bad)
        assert info.value.violations[0].field == "page_token", bad
    with pytest.raises(InvalidArgument) as info:
        paginate(records, JobFilter(label_selector="a=(b"), 2, "")
    assert info.value.violations[0].field == "filter.label_selector"


def test_created_bounds_and_jobs_without_creation_time() -> None:
    records = [record("job-none", created=-1), record("job-one", created=1), record("job-two", created=2)]
    between = JobFilter(created_after=T0 + timedelta(seconds=1), created_before=T0 + timedelta(seconds=2))
    assert [r.job_id for r in paginate(records, between, 10, "").records] == ["job-one"]  # [after, before)
    assert [r.job_id for r in paginate(records, JobFilter(), 10, "").records] == [
        "job-two",
        "job-one",
        "job-none",  # no creation time sorts oldest
    ]


# --- selectors.py ---------------------------------------------------------------------------------

keys = st.sampled_from(["team", "tier", "example.com/app"])
values = st.sampled_from(["a", "b", "x-1", ""])
requirements = st.one_of(
    st.tuples(st.sampled_from(["=", "==", "!="]), keys, values),
    st.tuples(st.sampled_from(["in", "notin"]), keys, st.lists(values.filter(bool), min_size=1, max_size=3)),
    st.tuples(st.sampled_from(["exists", "!"]), keys, st.none()),
)
label_sets = st.dictionaries(keys, values, max_size=3)


def render(req: tuple[str, str, Any], pad: str) -> str:
    op, key, value = req
    if op in ("=", "==", "!="):
        return f"{pad}{key}{pad}{op}{pad}{value}{pad}"
    if op in ("in", "notin"):
        return f"{pad}{key} {op}{pad}({pad}{f'{pad},{pad}'.join(value)}{pad}){pad}"
    return f"{pad}{key}{pad}" if op == "exists" else f"{pad}!{pad}{key}{pad}"


def holds(req: tuple[str, str, Any], labels: dict[str, str]) -> bool:
    op, key, value = req
    if op in ("=", "=="):
        return labels.get(key) == value
    if op == "!=":
        return labels.get(key) != value  # also when the label is absent (as Kubernetes)
    if op == "in":
        return labels.get(key) in value
    if op == "notin":
        return labels.get(key) not in value  # absent: matches
    return (key in labels) == (op == "exists")


@PROPERTY
@given(st.lists(requirements, max_size=4), label_sets, st.sampled_from(["", " "]))
def test_selector_matches_as_kubernetes(reqs: list[Any], labels: dict[str, str], pad: str) -> None:
    text = ",".join(render(r, pad) for r in reqs)
    selector = parse_selector(text)
    assert selector.matches(labels) == all(holds(r, labels) for r in reqs), text


@pytest.mark.parametrize(
    "text",
    [
        "a=(b",
        "a in ()",
        "a in b",
        "=b",
        "a=b,",
        ",",
        "a=b=c",
        "-a=b",
        "a=-b",
        "a/b/c=d",
        "a b",
        "Foo.example.com/a=b",
        "a=" + "b" * 64,
        "x" * 64,
    ],
)
def test_bad_selectors_name_the_field(text: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_selector(text, "filter.label_selector")
    assert info.value.violations[0].field == "filter.label_selector"


def test_empty_selector_matches_everything() -> None:
    for text in ("", "   "):
        assert parse_selector(text).matches({}) and parse_selector(text).matches({"a": "b"})


# --- naming.py ------------------------------------------------------------------------------------


@PROPERTY
@given(st.lists(st.text(max_size=20), min_size=1, max_size=3))
def test_derived_job_ids_are_stable_valid_names(parts: list[str]) -> None:
    job_id = derived_job_id(*parts)
    assert job_id == derived_job_id(*parts)
    assert job_id.startswith(JOB_ID_PREFIX) and len(job_id) == len(JOB_ID_PREFIX) + 10
    assert dns1123_label_problem(job_id) is None
    assert derived_job_id(*parts, "x") != job_id


def test_new_job_ids_are_valid_and_distinct() -> None:
    ids = {new_job_id() for _ in range(2000)}
    assert len(ids) == 2000
    for job_id in ids:
        assert dns1123_label_problem(job_id) is None and len(job_id) == 14
        assert set(job_id.removeprefix(JOB_ID_PREFIX)) <= set(string.digits + string.ascii_lowercase)


@pytest.mark.parametrize(
    ("value", "ok"),
    [("a", True), ("a-1", True), ("1a", True), ("a" * 63, True), ("", False), ("a" * 64, False),
     ("-a", False), ("a-", False), ("A", False), ("a_b", False), ("a.b", False)],
)  # fmt: skip
def test_dns1123_label(value: str, ok: bool) -> None:
    assert (dns1123_label_problem(value) is None) is ok


@pytest.mark.parametrize(
    ("key", "ok"),
    [("app", True), ("A.b_c-d", True), ("example.com/app", True), ("a" * 63, True), ("/app", False),
     ("Example.com/app", False), ("example.com/", False), ("a" * 64, False), ("-app", False),
     ("app-", False), ("a/b/c", False), ("", False), (("a" * 63 + ".") * 4 + "a/b", False)],
)  # fmt: skip
def test_label_keys(key: str, ok: bool) -> None:
    assert (label_key_problem(key) is None) is ok, label_key_problem(key)


@pytest.mark.parametrize(
    ("value", "ok"),
    [("", True), ("a", True), ("A.b_c-1", True), ("a" * 63, True), ("a" * 64, False), ("-a", False),
     ("a b", False), ("a/b", False), ("ä", False)],
)  # fmt: skip
def test_label_values(value: str, ok: bool) -> None:
    assert (label_value_problem(value) is None) is ok


def test_env_names() -> None:
    assert env_name_problem("TIMER_X") is None and env_name_problem("_x1") is None
    for bad in ("1X", "A-B", "", "A B", "A=B", "Ä"):
        assert env_name_problem(bad) is not None, bad
