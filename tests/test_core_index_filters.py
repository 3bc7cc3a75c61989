"""The live index's filter lists (core/postings.py): a page read through them is exactly the plain
predicate (core.query.compile_filter) over every record newest first, after any sequence of
changes, with cursors. In-process; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobscheduler.core.index import JobIndex
from jobscheduler.core.manifests import JOB_ID_LABEL, JOB_NAME_LABEL
from jobscheduler.core.model import JobFilter, JobPhase, JobRecord
from jobscheduler.core.postings import record_terms
from jobscheduler.core.query import Page, compile_filter, order_key, paginate_newest_first

T0 = datetime(2026, 1, 1, tzinfo=UTC)
IDS = [f"job-{c}{i}" for c in "abcd" for i in range(4)]
PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


def record(job_id: str, phase: JobPhase = JobPhase.PENDING, created: int | None = 0, **kw: Any) -> JobRecord:
    at = None if created is None else T0 + timedelta(seconds=created)
    fields: dict[str, Any] = {"name": job_id[4:], "type": "timer", "namespace": "default", **kw}
    return JobRecord.build(job_id=job_id, phase=phase, created_at=at, **fields)


labels_st = st.dictionaries(
    st.sampled_from(["team", "env", JOB_ID_LABEL, JOB_NAME_LABEL]),
    st.sampled_from(["a", "b", "job-a0", "job-b1"]),
    max_size=3,
)


def _own_id_label(r: JobRecord, own: bool) -> JobRecord:
    """As the service labels its jobs (the job-id label is the job's id), or as given."""
    return r.replace(labels={**r.labels, JOB_ID_LABEL: r.job_id}) if own else r


records_st = st.builds(
    record,
    st.sampled_from(IDS),
    st.sampled_from(list(JobPhase)),
    st.one_of(st.none(), st.integers(0, 6)),
    type=st.sampled_from(["timer", "webhook"]),
    owner=st.sampled_from(["", "alice", "bob"]),
    queue=st.sampled_from(["default", "batch"]),
    schedule=st.sampled_from(["", "nightly"]),
    template=st.sampled_from(["", "tpl"]),
    rerun_of=st.sampled_from(["", "job-a0"]),
    labels=labels_st,
).flatmap(lambda r: st.booleans().map(lambda own: _own_id_label(r, own)))
operations = st.lists(
    st.one_of(
        st.tuples(st.just("apply"), records_st),
        st.tuples(st.just("remove"), st.sampled_from(IDS)),
        st.tuples(st.just("replace_all"), st.lists(records_st, max_size=6)),
    ),
    max_size=30,
)
selectors = st.sampled_from(
    [
        "",
        "team=a",
        "team==b",
        "team in (a,b)",
        "team=a,env=b",
        "team notin (a)",
        "env!=a",
        "env",
        "!team",
        "team=zz",
        f"{JOB_ID_LABEL}=job-a0",
        f"{JOB_ID_LABEL} in (job-a0,job-b1,job-zz)",
        f"{JOB_ID_LABEL} in (job-a0,a)",
        f"{JOB_ID_LABEL}=job-zz",
        f"{JOB_NAME_LABEL} in (a,job-a0)",
    ]
)
FILTER_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "type": st.sampled_from(["timer", "webhook", "other"]),
    "phases": st.frozensets(st.sampled_from(list(JobPhase)), min_size=1, max_size=3),
    "label_selector": selectors,
    "name_prefix": st.sampled_from(["a", "b1"]),
    "created_after": st.sampled_from([T0 + timedelta(seconds=2)]),
    "created_before": st.sampled_from([T0 + timedelta(seconds=4)]),
    "owner": st.sampled_from(["alice", "carol"]),
    "queue": st.sampled_from(["batch", "default"]),
    "schedule": st.sampled_from(["nightly"]),
    "template": st.sampled_from(["tpl"]),
    "rerun_of": st.sampled_from(["job-a0"]),
}
#: A few fields set at a time (with all of them, hardly any record would match).
filters = (
    st.lists(st.sampled_from(sorted(FILTER_FIELDS)), max_size=3, unique=True)
    .flatmap(lambda names: st.fixed_dictionaries({n: FILTER_FIELDS[n] for n in names}))
    .map(lambda fields: JobFilter(**fields))
)


def pages(index: JobIndex, f: JobFilter, size: int) -> Iterator[Page]:
    token = ""
    for _ in range(100):
        page = paginate_newest_first(index.newest_first, f, size, token)
        yield page
        token = page.next_page_token
        if not token:
            return
    raise AssertionError("pagination did not end")


def check(index: JobIndex, records: dict[str, JobRecord], f: JobFilter, size: int) -> None:
    newest = sorted(records.values(), key=order_key, reverse=True)
    matches = compile_filter(f)
    want = [r for r in newest if matches(r)]
    got = list(pages(index, f, size))
    assert [r for p in got for r in p.records] == want
    assert all(len(p.records) == size for p in got[:-1])
    # Any cursor: the walk from below it has every match below it, newest first.
    for cursor in [order_key(r) for r in newest[:4]]:
        walked = [r for r in index.newest_first(cursor, f) if matches(r)]
        assert walked == [r for r in want if order_key(r) < cursor]


def check_lists(index: JobIndex) -> None:
    """White box: every id list is sorted and holds exactly the jobs with its term."""
    postings = index._postings
    records = index._records
    assert postings.all == sorted(records, key=lambda j: order_key(records[j]))
    want: dict[object, list[str]] = {}
    for job_id in postings.all:
        for term in record_terms(records[job_id]):
            want.setdefault(term, []).append(job_id)
    assert postings._lists == want


@PROPERTY
@given(operations, st.lists(filters, min_size=1, max_size=4), st.integers(1, 4))
def test_indexed_pages_equal_the_plain_predicate_after_any_changes(
    ops: list[Any], fs: list[JobFilter], size: int
) -> None:
    index = JobIndex()
    model: dict[str, JobRecord] = {}
    for op in ops:
        if op[0] == "apply":
            index.apply(op[1])
            model[op[1].job_id] = op[1]
        elif op[0] == "remove":
            index.remove(op[1])
            model.pop(op[1], None)
        else:
            index.replace_all(op[1])
            model = {r.job_id: r for r in op[1]}
    check_lists(index)
    for f in fs:
        check(index, model, f, size)


def test_a_big_relist_rebuilds_the_lists_and_later_changes_keep_them() -> None:
    rng = random.Random(7)

    def random_record(i: int) -> JobRecord:
        return record(
            f"job-{i:04d}",
            rng.choice(list(JobPhase)),
            rng.choice([None, *range(50)]),
            owner=rng.choice(["", "alice", "bob"]),
            labels={"team": rng.choice("abc"), JOB_ID_LABEL: f"job-{i:04d}"},
        )

    index = JobIndex()
    model = {r.job_id: r for r in (random_record(i) for i in range(600))}
    index.replace_all(model.values())  # more than _REBUILD_AFTER changes: one sort
    check_lists(index)
    for i in rng.sample(range(600), 200):
        changed = random_record(i)
        index.apply(changed)
        model[changed.job_id] = changed
    for i in rng.sample(range(600), 50):
        index.remove(f"job-{i:04d}")
        model.pop(f"job-{i:04d}", None)
    relisted = dict(list(model.items())[:400])
    index.replace_all(relisted.values())  # few changes, 150 deletions: one at a time
    check_lists(index)
    for f in [
        JobFilter(),
        JobFilter(label_selector="team=a", phases=frozenset({JobPhase.RUNNING, JobPhase.SUCCEEDED})),
        JobFilter(owner="alice", created_after=T0 + timedelta(seconds=20)),
        JobFilter(label_selector="team=nobody"),
    ]:
        check(index, relisted, f, 37)


def test_a_selective_filter_reads_only_its_candidates() -> None:
    index = JobIndex()
    for i in range(1000):
        index.apply(record(f"job-{i:04d}", created=i, labels={"team": "rare" if i % 100 == 0 else "common"}))
    read = list(index.newest_first(None, JobFilter(label_selector="team=rare")))
    assert [r.job_id for r in read] == [f"job-{i:04d}" for i in range(900, -1, -100)]
    assert list(index.newest_first(None, JobFilter(label_selector="team=nobody"))) == []
    assert list(index.newest_first(None, JobFilter(owner="nobody"))) == []
    # created_before starts the walk there, created_after ends it.
    window = JobFilter(created_after=T0 + timedelta(seconds=10), created_before=T0 + timedelta(seconds=13))
    assert [r.job_id for r in index.newest_first(None, window)] == ["job-0012", "job-0011", "job-0010"]


def test_the_first_list_before_the_sync_is_not_logged_but_listeners_get_it() -> None:
    async def scenario() -> None:
        index = JobIndex()
        heard: list[str] = []
        index.add_listener(lambda e: heard.append(f"{e.type.value} {e.record.job_id}"))
        index.replace_all([record("job-a0"), record("job-b0", created=1)])
        assert heard == ["CREATED job-a0", "CREATED job-b0"]
        assert index.current_token() == index.token(0)  # nothing retained: nobody could read it
        index.mark_synced()
        index.replace_all([record("job-a0", JobPhase.RUNNING), record("job-b0", created=1)])
        assert index.current_token() == index.token(1)  # after the sync every change is logged
        assert heard[-1] == "STARTED job-a0"

        early = JobIndex()
        with early.subscribe(lambda r: True):  # someone reads the log: it is kept
            early.replace_all([record("job-a0")])
            assert early.current_token() == early.token(1)

    asyncio.run(scenario())


def test_a_job_id_selector_reads_those_jobs_and_any_labelled_so_by_hand() -> None:
    index = JobIndex()
    for i in range(100):
        index.apply(record(f"job-{i:04d}", created=i, labels={JOB_ID_LABEL: f"job-{i:04d}"}))
    # Relabelled by hand: job-0007 now says it is job-0003 (the plain predicate goes by the label).
    index.apply(record("job-0007", created=7, labels={JOB_ID_LABEL: "job-0003"}))
    f = JobFilter(label_selector=f"{JOB_ID_LABEL} in (job-0003,job-0007,job-0050,job-none)")
    assert [r.job_id for r in index.newest_first(None, f)] == ["job-0050", "job-0007", "job-0003"]
    check(index, {r.job_id: r for r in index.records()}, f, 1)
