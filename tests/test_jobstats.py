"""core/jobstats.JobObserver on a real JobIndex: each job counted once, by the leader only, never
for what a (re)start loads; label values bounded."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from jobscheduler.core.index import JobIndex
from jobscheduler.core.jobstats import JobObserver, label
from jobscheduler.core.model import JobPhase, JobRecord

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Seen:
    leading: bool = True
    finished: list[tuple[str, str, str, float | None]] = field(default_factory=list)
    admitted: list[tuple[str, float]] = field(default_factory=list)
    retries: list[str] = field(default_factory=list)

    def observer(self, index: JobIndex) -> JobObserver:
        return JobObserver(
            leading=lambda: self.leading,
            ready=lambda: index.synced,
            on_finished=lambda r, run: self.finished.append((r.job_id, r.phase.value, r.reason, run)),
            on_admitted=lambda r, wait: self.admitted.append((r.job_id, wait)),
            on_retry=lambda r: self.retries.append(r.job_id),
        )


def record(job_id: str, phase: JobPhase, **fields: object) -> JobRecord:
    return JobRecord(job_id=job_id, name="n", type="timer", namespace="ns", phase=phase).replace(**fields)


def watched(seen: Seen, *loaded: JobRecord) -> JobIndex:
    index = JobIndex(retention=timedelta(minutes=5), max_events=1000)
    index.add_listener(seen.observer(index))
    index.replace_all(loaded)  # what a start lists: nothing is counted
    index.mark_synced()
    return index


def test_a_start_or_relist_counts_nothing_it_did_not_see_happen() -> None:
    seen = Seen()
    done = record("job-a", JobPhase.FAILED, reason="BackoffLimitExceeded", finished_at=T0)
    retry = record("job-b", JobPhase.RUNNING, retry_of="job-a", retry_number=1)
    index = watched(seen, done, retry)
    index.replace_all([done, retry])  # a relist of the same state
    assert (seen.finished, seen.admitted, seen.retries) == ([], [], [])


def test_each_transition_is_counted_once_with_its_times() -> None:
    seen = Seen()
    index = watched(seen)
    held = record("job-q", JobPhase.QUEUED, enqueued_at=T0)
    index.apply(held)
    index.apply(
        held.replace(
            phase=JobPhase.RUNNING,
            admitted_at=T0 + timedelta(seconds=7),
            started_at=T0 + timedelta(seconds=8),
        )
    )
    done = index.get("job-q").replace(  # type: ignore[union-attr]
        phase=JobPhase.FAILED,
        reason="DeadlineExceeded",
        finished_at=T0 + timedelta(seconds=20),
    )
    index.apply(done)
    index.apply(done.replace(message="seen again"))  # the final record changes again
    index.apply(record("job-r", JobPhase.PENDING, retry_of="job-q", retry_number=1))  # its retry
    index.remove("job-q")
    assert seen.admitted == [("job-q", 7.0)]
    assert seen.finished == [("job-q", "FAILED", "DeadlineExceeded", 12.0)]
    assert seen.retries == ["job-r"]

    cancelled = record("job-c", JobPhase.PENDING)
    index.apply(cancelled)
    index.apply(cancelled.replace(phase=JobPhase.CANCELLED, reason="Cancelled", finished_at=T0))
    assert seen.finished[-1] == ("job-c", "CANCELLED", "Cancelled", None)  # never started: no run time


def test_a_replica_that_does_not_lead_counts_nothing() -> None:
    seen = Seen(leading=False)
    index = watched(seen)
    job = record("job-a", JobPhase.RUNNING)
    index.apply(job)
    index.apply(job.replace(phase=JobPhase.SUCCEEDED))
    index.apply(record("job-b", JobPhase.PENDING, retry_number=1))
    assert (seen.finished, seen.retries) == ([], [])
    seen.leading = True  # it takes the Lease: what happens from now on is counted
    index.apply(index.get("job-b").replace(phase=JobPhase.FAILED, reason="Failed"))  # type: ignore[union-attr]
    assert [f[0] for f in seen.finished] == ["job-b"]


def test_label_values_are_bounded() -> None:
    seen = Seen()
    index = watched(seen)
    job = record("job-a", JobPhase.RUNNING, type="x" * 200, queue="batch")
    index.apply(job)
    index.apply(job.replace(phase=JobPhase.FAILED, reason="bad reason\n{}"))
    assert seen.finished == [("job-a", "FAILED", "other", None)]
    assert [label(v) for v in ("", "BackoffLimitExceeded", "a.b-c_d", "x" * 64, "é")] == [
        "",
        "BackoffLimitExceeded",
        "a.b-c_d",
        "other",
        "other",
    ]


PHASES = list(JobPhase)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(PHASES), min_size=1, max_size=12))
def test_any_history_counts_a_job_at_most_once(phases: list[JobPhase]) -> None:
    """Whatever order the index sees a job's phases in (a final phase stays final), it is
    counted once if it became final after it was first seen, else never."""
    seen = Seen()
    index = watched(seen)
    history: list[JobPhase] = []
    for phase in phases:
        if history and history[-1].is_terminal:
            phase = history[-1]  # a final job stays final; its record may still change
        history.append(phase)
        index.apply(record("job-h", phase, message=str(len(history))))
    expected = 1 if history[-1].is_terminal and not history[0].is_terminal else 0
    assert len(seen.finished) == expected


def test_times_that_cannot_be_compared_give_no_observation_and_do_not_break_the_index() -> None:
    seen = Seen()
    index = watched(seen)
    naive = datetime(2026, 1, 1)  # a record from somewhere careless: no time zone
    job = record("job-a", JobPhase.QUEUED, enqueued_at=naive)
    index.apply(job)
    index.apply(job.replace(phase=JobPhase.RUNNING, admitted_at=T0, started_at=naive))
    index.apply(index.get("job-a").replace(phase=JobPhase.SUCCEEDED, finished_at=T0))  # type: ignore[union-attr]
    assert seen.admitted == []
    assert seen.finished == [("job-a", "SUCCEEDED", "", None)]
    assert index.get("job-a").phase is JobPhase.SUCCEEDED  # type: ignore[union-attr]
