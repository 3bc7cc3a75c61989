"""The cached record's compact parts: JobDetails behind one slot (core/model.py) and the shared
condition words (core/conditions.py) read exactly as the plain fields they replace."""

from __future__ import annotations

import dataclasses
import sys
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobscheduler.core import conditions as conditions_module
from jobscheduler.core.conditions import Conditions, compact_conditions
from jobscheduler.core.labels import LabelShape
from jobscheduler.core.model import DETAIL_FIELDS, NO_DETAILS, JobCondition, JobDetails, JobPhase, JobRecord

T0 = datetime(2026, 11, 27, tzinfo=UTC)
times = st.one_of(st.none(), st.integers(0, 3).map(lambda s: T0 + timedelta(seconds=s)))
condition_lists = st.lists(
    st.builds(
        JobCondition,
        type=st.sampled_from(["Complete", "SuccessCriteriaMet", "Failed", "FailureTarget"]),
        status=st.sampled_from(["True", "False"]),
        reason=st.sampled_from(["", "CompletionsReached", "BackoffLimitExceeded"]),
        message=st.text(max_size=4),
        last_transition_time=times,
    ),
    max_size=4,
)


@given(condition_lists, condition_lists)
def test_conditions_compare_as_their_tuples(a: list[JobCondition], b: list[JobCondition]) -> None:
    assert (compact_conditions(a) == compact_conditions(b)) == (tuple(a) == tuple(b))
    assert compact_conditions(a) == compact_conditions(list(a))


@given(condition_lists)
def test_conditions_read_as_the_tuple(listed: list[JobCondition]) -> None:
    plain = tuple(listed)
    compact = compact_conditions(listed)
    assert compact == plain and plain == compact
    assert tuple(compact) == plain and len(compact) == len(plain)
    assert [compact[i] for i in range(-len(plain), len(plain))] == [
        plain[i] for i in range(-len(plain), len(plain))
    ]
    assert compact[1:] == plain[1:] and compact[::-1] == plain[::-1]
    assert hash(compact) == hash(plain)
    assert repr(compact) == repr(plain)
    assert compact != (*plain, JobCondition("Other", "True"))


def test_conditions_share_their_words_and_one_time() -> None:
    def finished(at: datetime) -> list[JobCondition]:
        return [
            JobCondition("SuccessCriteriaMet", "True", "CompletionsReached", "done", at),
            JobCondition("Complete", "True", "CompletionsReached", "done", at),
        ]

    a, b = compact_conditions(finished(T0)), compact_conditions(finished(T0 + timedelta(1)))
    assert isinstance(a, Conditions) and isinstance(b, Conditions)
    assert a._words is b._words  # one tuple of words for both jobs
    assert a._times == T0 and b._times == T0 + timedelta(1)  # one datetime, not a tuple
    assert a != b
    assert compact_conditions([]) == ()
    assert (
        sys.getsizeof(a)
        <= 48
        < sum(sys.getsizeof(c) for c in finished(T0)) + sys.getsizeof(tuple(finished(T0)))
    )


def test_conditions_beyond_the_shared_limit_stay_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conditions_module, "_WORDS", {})
    monkeypatch.setattr(conditions_module, "MAX_WORDS", 2)
    made = [compact_conditions([JobCondition("Failed", "True", "R", f"message {i}")]) for i in range(4)]
    assert [type(c) for c in made] == [Conditions, Conditions, tuple, tuple]
    assert [c[0].message for c in made] == [f"message {i}" for i in range(4)]


def record(**fields: object) -> JobRecord:
    return JobRecord.build(
        job_id="job-a", name="n", type="timer", namespace="ns", phase=JobPhase.RUNNING, **fields
    )


def test_every_detail_reads_as_the_records_own_field() -> None:
    assert {f.name for f in dataclasses.fields(JobDetails)} == DETAIL_FIELDS
    values = {
        "retry_of": "job-z",
        "retry_number": 2,
        "max_retries": 3,
        "retry_backoff_seconds": 7,
        "start_after": T0,
        "depends_on": ("job-x",),
        "enqueued_at": T0,
        "admitted_at": T0,
        "completed_indexes": "0-2",
        "failed_indexes": "3",
        "schedule": "nightly",
        "scheduled_at": T0,
        "template": "tpl",
        "template_version": 4,
        "rerun_of": "job-y",
    }
    assert values.keys() == DETAIL_FIELDS
    for name, value in values.items():
        one = record(**{name: value})
        assert getattr(one, name) == value
        assert getattr(one.details, name) == value
        assert getattr(record(), name) == getattr(NO_DETAILS, name)
        assert one != record() and one.replace(**{name: getattr(NO_DETAILS, name)}) == record()
    assert record(**values).details == JobDetails(**values)  # type: ignore[arg-type]


def test_a_record_without_details_shares_the_empty_ones() -> None:
    assert record().details is NO_DETAILS
    assert record(retry_of="job-z").replace(retry_of="").details is NO_DETAILS
    assert record(message="m").replace(message="n").message == "n"
    with pytest.raises(TypeError):
        JobRecord(job_id="job-a", name="n", type="t", namespace="ns", phase=JobPhase.RUNNING, retry_of="x")  # type: ignore[call-arg]


def test_the_backend_version_is_carried_but_not_compared() -> None:
    assert record(version=41) == record(version=42)
    assert record(version=41).replace(message="m").version == 41


def test_a_cached_record_stays_compact() -> None:
    # 26 slots: the 15 rarely set fields are one (details). A new field belongs in JobDetails
    # unless most jobs set it; this guards the per-job cost bench/cache.py measures.
    assert len(JobRecord.__slots__) <= 26
    assert sys.getsizeof(record()) <= 32 + 26 * 8  # (the GC's and the object's headers, the slots)


def test_a_records_labels_are_a_shared_shape_read_with_its_id_and_name() -> None:
    def labelled(job_id: str, name: str) -> JobRecord:
        return JobRecord.build(
            job_id=job_id,
            name=name,
            type="timer",
            namespace="ns",
            phase=JobPhase.RUNNING,
            labels={"team": "a", "jobscheduler.io/job-id": job_id, "jobscheduler.io/job-name": name},
        )

    one, two = labelled("job-1", "first"), labelled("job-2", "second")
    assert isinstance(one.stored_labels, LabelShape) and one.stored_labels is two.stored_labels
    assert dict(two.labels) == {
        "team": "a",
        "jobscheduler.io/job-id": "job-2",
        "jobscheduler.io/job-name": "second",
    }
    renamed = one.replace(name="renamed")  # the labels stay what they were
    assert renamed.name == "renamed" and renamed.labels == one.labels
    relabelled = one.replace(labels={"team": "b"})
    assert dict(relabelled.labels) == {"team": "b"} and relabelled != one
    assert one == labelled("job-1", "first") and one != two
    long = one.replace(labels={"v": "x" * 64})  # a value too long to share: a plain dict
    assert long.stored_labels == {"v": "x" * 64} and long.labels == {"v": "x" * 64}
    assert "<job id>" in repr(one.stored_labels)
