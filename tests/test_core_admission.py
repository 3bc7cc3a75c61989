"""Unit tests of admission's pure parts: QUEUES, ready_at, the owner-checked dependency verdict
(at submit and in the loop), QueueBook; and what JobService.schedule writes for start times and
dependencies (two callers)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobscheduler.core.admission import QueueBook, QueueConfigError, parse_queues, ready_at, waiting_phase
from jobscheduler.core.annotations import start_after
from jobscheduler.core.auth import Caller
from jobscheduler.core.dependencies import DependencyState, dependency_state
from jobscheduler.core.errors import InvalidArgument
from jobscheduler.core.index import JobIndex
from jobscheduler.core.manifests import ADMISSION_ANNOTATION, ADMISSION_STATES_BY_PHASE, JobDefaults
from jobscheduler.core.model import JobPhase, JobRecord, ScheduleRequest
from jobscheduler.core.retries import retry_job_id
from jobscheduler.core.service import JobService, request_job_id
from jobscheduler.jobtypes import builtin_registry

NOW = datetime(2026, 1, 1, 12, 0, 0, 700_000, tzinfo=UTC)
ALICE, BOB = Caller("alice", frozenset()), Caller("bob", frozenset())


def job(job_id: str, phase: JobPhase = JobPhase.SUCCEEDED, *, owner: str = "alice", **more: Any) -> JobRecord:
    return JobRecord.build(
        job_id=job_id, name=job_id, type="timer", namespace="ns", phase=phase, owner=owner, **more
    )


def index_of(*records: JobRecord) -> JobIndex:
    index = JobIndex()
    for record in records:
        index.apply(record)
    return index


# --- QUEUES, ready_at ----------------------------------------------------------------------------


def test_parse_queues() -> None:
    queues = parse_queues(" batch=2, wide ,,")
    assert {name: q.max_running for name, q in queues.items()} == {"default": 0, "batch": 2, "wide": 0}
    for bad in ("Batch=1", "batch=x", "batch=-1", "batch=1000001", "a" * 64):
        with pytest.raises(QueueConfigError):
            parse_queues(bad)


def test_ready_at_is_the_later_of_submission_and_start_time() -> None:
    assert ready_at(job("a", JobPhase.QUEUED, enqueued_at=NOW)) == NOW
    later = NOW + timedelta(seconds=5)
    assert ready_at(job("a", JobPhase.QUEUED, enqueued_at=NOW, start_after=later)) == later
    assert ready_at(job("a", JobPhase.QUEUED, created_at=NOW, start_after=NOW - timedelta(1))) == NOW


# --- the dependency verdict ------------------------------------------------------------------------


def test_another_owners_job_is_a_missing_dependency_whatever_its_phase() -> None:
    for phase in JobPhase:
        index = index_of(job("theirs", phase, owner="bob"))
        found = dependency_state(index, "theirs", "alice")
        assert (found.state, found.detail) == (DependencyState.MISSING, "dependency theirs does not exist")
        assert dependency_state(index, "nowhere", "alice").state is DependencyState.MISSING


def test_the_verdict_of_the_owners_own_dependencies() -> None:
    index = index_of(
        job("ok"),
        job("running", JobPhase.RUNNING),
        job("cancelled", JobPhase.CANCELLED),
        job("failed", JobPhase.FAILED, reason="BackoffLimitExceeded", message="boom"),
    )
    assert dependency_state(index, "ok", "alice").state is DependencyState.OK
    assert dependency_state(index, "running", "alice").state is DependencyState.WAITING
    assert dependency_state(index, "cancelled", "alice").state is DependencyState.FAILED
    failed = dependency_state(index, "failed", "alice")
    assert failed.state is DependencyState.FAILED and "BackoffLimitExceeded: boom" in failed.detail


def test_a_failed_dependency_with_a_retry_to_come_is_followed_to_its_retry() -> None:
    first = job("dep", JobPhase.FAILED, max_retries=1, finished_at=NOW, reason="BackoffLimitExceeded")
    retry = retry_job_id("dep", 1)
    assert dependency_state(index_of(first), "dep", "alice").state is DependencyState.WAITING
    assert dependency_state(index_of(first), "dep", "alice").watched == ("dep", retry)
    succeeded = job(retry, retry_of="dep", retry_number=1, max_retries=1)
    assert dependency_state(index_of(first, succeeded), "dep", "alice").state is DependencyState.OK
    theirs = job(retry, owner="bob", retry_of="dep", retry_number=1, max_retries=1)
    assert dependency_state(index_of(first, theirs), "dep", "alice").state is DependencyState.WAITING


def test_waiting_phase() -> None:
    index = index_of(job("mine"), job("theirs", owner="bob"), job("running", JobPhase.RUNNING))
    assert waiting_phase(index, ("mine",), None, NOW, "alice") is None
    assert waiting_phase(index, ("mine", "theirs"), None, NOW, "alice") is JobPhase.WAITING
    assert waiting_phase(index, ("running",), None, NOW, "alice") is JobPhase.WAITING
    assert (
        waiting_phase(index, ("mine",), NOW + timedelta(microseconds=1), NOW, "alice") is JobPhase.SCHEDULED
    )
    assert waiting_phase(index, (), NOW, NOW, "alice") is None


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["alice", "bob"]), st.sampled_from(list(JobPhase))),
        min_size=1,
        max_size=5,
    ),
    st.lists(st.integers(0, 5), max_size=4),
)
def test_a_new_job_starts_at_once_only_if_all_its_dependencies_are_its_owners_and_succeeded(
    jobs: list[tuple[str, JobPhase]], picks: list[int]
) -> None:
    records = [job(f"j{i}", phase, owner=owner) for i, (owner, phase) in enumerate(jobs)]
    deps = tuple(f"j{p}" for p in picks)  # j5 never exists
    at_once = waiting_phase(index_of(*records), deps, None, NOW, "alice") is None
    by_id = {r.job_id: r for r in records}
    assert at_once == all(
        d in by_id and by_id[d].owner == "alice" and by_id[d].phase is JobPhase.SUCCEEDED for d in deps
    )


# --- QueueBook -------------------------------------------------------------------------------------


def test_the_queue_book_counts_running_and_queued_jobs_from_the_index() -> None:
    index = index_of(job("r1", JobPhase.RUNNING, queue="batch"), job("q1", JobPhase.QUEUED, queue="batch"))
    book = QueueBook(index, parse_queues("batch=2"))
    seen: list[str] = []
    book.add_listener(lambda event: seen.append(event.record.job_id))
    assert (book.running("batch"), book.limit("batch"), book.limit("other")) == (1, 2, 0)
    index.apply(job("q1", JobPhase.PENDING, queue="batch"))
    index.apply(job("w1", JobPhase.WAITING, queue="batch"))
    assert book.running("batch") == 2
    index.apply(job("r1", JobPhase.SUCCEEDED, queue="batch"))
    index.remove("q1")
    assert book.running("batch") == 0
    (batch,) = [s for s in book.status() if s.name == "batch"]
    assert (batch.running, batch.waiting, batch.queued) == (0, 1, {})
    assert seen == ["q1", "w1", "r1", "q1"]


# --- JobService.schedule -----------------------------------------------------------------------------


class CreatingBackend:
    """Just enough of a backend for ScheduleJob: keeps what it is asked to create."""

    name = "test"

    def __init__(self, index: JobIndex) -> None:
        self.index = index
        self.created: dict[str, Mapping[str, Any]] = {}

    async def create(self, manifest: Mapping[str, Any]) -> JobRecord:
        job_id = manifest["metadata"]["name"]
        self.created[job_id] = manifest
        return job(job_id, JobPhase.PENDING)


def schedule(service: JobService, caller: Caller, **fields: Any) -> Mapping[str, Any]:
    params = {"duration_seconds": 1, "timer_name": "t", "control_plane_endpoint": "http://127.0.0.1:9"}
    request = ScheduleRequest(name="t", job_field="timer_job", params=params, **fields)
    record = asyncio.run(service.schedule(request, caller))
    return service.backend.created[record.job_id]  # type: ignore[attr-defined,no-any-return]


def service_with(*records: JobRecord) -> JobService:
    index = index_of(*records)
    backend: Any = CreatingBackend(index)
    return JobService(
        backend, builtin_registry(timer_image="timer:1"), JobDefaults(), index, clock=lambda: NOW
    )


def test_schedule_job_does_not_start_a_job_on_another_owners_succeeded_job() -> None:
    service = service_with(job("bobs", owner=BOB.identity), job("alices", owner=ALICE.identity))
    own = schedule(service, ALICE, depends_on=("alices",))
    assert not own["spec"].get("suspend")  # its own succeeded dependency: at once
    theirs = schedule(service, ALICE, depends_on=("bobs",))
    assert theirs["spec"]["suspend"] is True  # held: the admission loop fails it (DependencyNotFound)
    assert (
        theirs["metadata"]["annotations"][ADMISSION_ANNOTATION] == ADMISSION_STATES_BY_PHASE[JobPhase.WAITING]
    )
    assert not schedule(service, BOB, depends_on=("bobs",))["spec"].get("suspend")


@pytest.mark.parametrize("fields", [{"delay_seconds": 2}, {"start_after": NOW + timedelta(seconds=1.5)}])
def test_a_start_time_is_stored_to_the_microsecond(fields: dict[str, Any]) -> None:
    manifest = schedule(service_with(), ALICE, **fields)
    wanted = fields.get("start_after") or NOW + timedelta(seconds=fields["delay_seconds"])
    assert start_after(manifest["metadata"]["annotations"]) == wanted  # not a moment earlier


def test_a_cycle_through_another_owners_job_is_not_followed() -> None:
    """Bob, knowing Alice's next request_id, makes his job depend on her job-to-be: her job
    does not learn of his (no INVALID_ARGUMENT naming it); it waits, and the loop fails it."""
    alices = request_job_id(JobDefaults().namespace, ALICE.identity, "r1")
    service = service_with(job("bobs", JobPhase.WAITING, owner=BOB.identity, depends_on=(alices,)))
    manifest = schedule(service, ALICE, request_id="r1", depends_on=("bobs",))
    assert manifest["metadata"]["name"] == alices and manifest["spec"]["suspend"] is True
    mine = service_with(job("mine", JobPhase.WAITING, owner=ALICE.identity, depends_on=(alices,)))
    with pytest.raises(InvalidArgument, match="dependency cycle"):
        schedule(mine, ALICE, request_id="r1", depends_on=("mine",))
