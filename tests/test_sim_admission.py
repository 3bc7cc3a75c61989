"""The admission loop in a deterministic simulation (tests/sim/world.py): scripted regressions,
then Hypothesis driving random schedules (submissions, jobs ending, cancellations, time, write
answers and watch events in any order, failed writes, lost answers, leadership changes) while
checking the scheduling invariants after every step:

- never more than ``max_running`` admitted, unfinished jobs in a queue; no job admitted twice;
- no job admitted before its start time, nor before all its dependencies (its owner's own
  jobs) succeeded;
- once quiescent (every answer and event delivered, time passed), no held job that its queue's
  room, its start time and its dependencies allow, and no job with a failed, cancelled, missing
  or other owner's dependency still held.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sim.world import OUTCOMES, World

from jobscheduler.core.admission import DEPENDENCY_NOT_FOUND, ERROR_DELAY_SECONDS, RECHECK_DELAY_SECONDS
from jobscheduler.core.model import JobPhase, Priority

LIMITS = {"default": 0, "one": 1, "two": 2}


@pytest.fixture
def world() -> Iterator[World]:
    w = World(LIMITS)
    yield w
    w.close()


def admits(w: World) -> list[str]:
    return [c.job_id for c in w.backend.calls if c.kind == "admit" and not c.landed]


# --- scripted regressions ----------------------------------------------------------------------


def test_a_job_relabelled_queued_is_admitted_when_its_write_event_came_before_the_answer(
    world: World,
) -> None:
    running = world.submit(queue="one")
    world.resolve(world.pending("admit", running.job_id))
    later = world.submit(queue="one", delay=1)
    world.advance(1)  # its start time came: it is relabelled QUEUED (the queue is full)
    relabel = world.pending("hold", later.job_id)
    world.finish(running.job_id)
    world.deliver_all()  # room: the loop takes it off its heap, but its write is in flight
    world.resolve(relabel, event_first=True)  # the watch event comes first, the answer adds nothing
    assert admits(world) == [later.job_id]


def test_a_job_whose_dependency_ended_during_its_write_is_admitted(world: World) -> None:
    dep = world.submit()
    later = world.submit(delay=1, depends_on=(dep.job_id,))
    world.advance(1)  # its start time came: now it waits for its dependency
    hold = world.pending("hold", later.job_id)
    world.finish(dep.job_id)
    world.deliver_all()  # the dependency succeeded while the job's write was in flight
    world.resolve(hold, event_first=True)
    assert admits(world) == [later.job_id]


@pytest.mark.parametrize(
    ("outcome", "first"), [("conflict", RECHECK_DELAY_SECONDS), ("unavailable", ERROR_DELAY_SECONDS)]
)
def test_a_refused_admission_is_tried_again_after_a_growing_delay(
    world: World, outcome: str, first: float
) -> None:
    job = world.submit(queue="one")
    world.resolve(world.pending("admit", job.job_id), outcome)
    assert admits(world) == []  # not at once: no busy loop against the API server
    world.advance(first)
    assert admits(world) == [job.job_id]
    world.resolve(world.pending("admit", job.job_id), outcome)
    world.advance(first)
    assert admits(world) == []  # the delay doubles
    world.advance(first)
    world.resolve(world.pending("admit", job.job_id))
    assert world.backend.truth[job.job_id].admitted_at is not None


def test_an_admission_whose_answer_was_lost_keeps_its_slot_until_the_index_shows_it(world: World) -> None:
    first, second = world.submit(queue="one"), world.submit(queue="one")
    world.resolve(world.pending("admit", first.job_id), "lost")  # landed; the answer is a 503
    assert admits(world) == []  # its slot is kept, and it is not admitted again
    world.advance(60)  # the loop reads it back (admitted) until the watch shows it
    assert admits(world) == []
    world.deliver_all()
    world.finish(first.job_id)
    world.deliver_all()
    assert admits(world) == [second.job_id]
    assert world.backend.violations == []


def test_an_admission_that_did_not_land_frees_its_slot_once_read_back(world: World) -> None:
    first, second = world.submit(queue="one"), world.submit(queue="one")
    world.resolve(world.pending("admit", first.job_id), "conflict")  # tried again in a moment
    world.resolve(world.pending("admit", second.job_id), "unavailable")  # in doubt: keeps the slot
    world.advance(ERROR_DELAY_SECONDS)  # read back: still held, so the slot is free again
    assert admits(world) == [first.job_id]
    world.resolve(world.pending("admit", first.job_id))
    assert world.backend.violations == []


def test_a_new_leader_keeps_the_slots_of_admissions_its_index_does_not_show_yet(world: World) -> None:
    first = world.submit(queue="one")
    world.backend.land(world.pending("admit", first.job_id), "ok")  # its event and answer never come
    second = world.submit(queue="one", priority=Priority.CRITICAL)
    world.lose_leadership([])
    world.advance(60)
    assert admits(world) == []  # the list showed the first one admitted: the queue is full
    world.deliver_all()
    world.finish(first.job_id)
    world.deliver_all()
    assert admits(world) == [second.job_id]


def test_a_start_time_is_never_anticipated(world: World) -> None:
    job = world.submit(delay=1.5)
    world.advance(1.499999)
    assert admits(world) == []
    world.lose_leadership([])  # a new leader considers every held job at once
    assert admits(world) == []
    world.advance(0.000001)
    (call,) = world.backend.calls
    assert call.job_id == job.job_id and call.kind == "admit" and call.args["at"] >= job.start_after


def test_another_owners_succeeded_job_is_no_dependency(world: World) -> None:
    theirs = world.submit(owner="bob")
    world.finish(theirs.job_id)
    world.deliver_all()
    mine = world.submit(owner="alice", depends_on=(theirs.job_id,))
    assert mine.phase is JobPhase.WAITING  # not started at once
    world.quiesce()
    failed = world.backend.truth[mine.job_id]
    assert (failed.phase, failed.reason) == (JobPhase.FAILED, DEPENDENCY_NOT_FOUND)
    assert failed.message == f"dependency {theirs.job_id} does not exist"
    assert world.backend.admissions.get(mine.job_id) is None


# --- random schedules --------------------------------------------------------------------------

MAX_JOBS = 12


class AdmissionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World(LIMITS)

    @initialize(
        jobs=st.lists(
            st.tuples(
                st.sampled_from(["one", "one", "two", "default"]),
                st.sampled_from(list(Priority)),
                st.sampled_from([None, None, None, 0.5, 1.5]),
                st.sampled_from([False, False, True]),
            ),
            min_size=2,
            max_size=6,
        )
    )
    def some_jobs(self, jobs: list[tuple[str, Priority, float | None, bool]]) -> None:
        """A few jobs to begin with (the later rules add, end, cancel and reorder)."""
        for queue, priority, delay, depend in jobs:
            ids = sorted(self.world.backend.truth)
            depends_on = (ids[-1],) if depend and ids else ()
            self.world.submit(queue=queue, priority=priority, delay=delay, depends_on=depends_on)

    def _pick(self, items: list[str], i: int) -> str | None:
        return items[i % len(items)] if items else None

    @rule(
        owner=st.sampled_from(["alice", "bob"]),
        queue=st.sampled_from(["one", "one", "two", "default"]),
        priority=st.sampled_from(list(Priority)),
        delay=st.sampled_from([None, None, 0.5, 1.5, 3.0]),
        deps=st.lists(st.integers(0, 100), max_size=2),
        ghost=st.booleans(),
    )
    def submit(
        self, owner: str, queue: str, priority: Priority, delay: float | None, deps: list[int], ghost: bool
    ) -> None:
        if len(self.world.backend.truth) >= MAX_JOBS:
            return
        ids = sorted(self.world.backend.truth)
        depends_on = tuple(dict.fromkeys(ids[i % len(ids)] for i in deps)) if ids else ()
        if ghost and deps:
            depends_on += ("job-nowhere",)
        self.world.submit(owner=owner, queue=queue, priority=priority, delay=delay, depends_on=depends_on)

    @rule(i=st.integers(0, 100), how=st.sampled_from(["succeed", "succeed", "fail", "cancel"]))
    def end(self, i: int, how: str) -> None:
        """A job ends: an admitted one succeeds or fails, or any unfinished one is cancelled."""
        truth = self.world.backend.truth
        if how == "cancel":
            live = sorted(j for j, r in truth.items() if not r.phase.is_terminal)
            if (job_id := self._pick(live, i)) is not None:
                self.world.cancel(job_id)
            return
        admitted = sorted(
            j for j, r in truth.items() if r.admitted_at is not None and not r.phase.is_terminal
        )
        if (job_id := self._pick(admitted, i)) is not None:
            self.world.finish(job_id, succeed=how == "succeed")
            self.world.settle()

    @rule(seconds=st.sampled_from([0.05, 0.1, 0.2, 0.45, 1.0, 1.45, 3.0]))
    def advance(self, seconds: float) -> None:
        self.world.advance(seconds)

    @rule(i=st.integers(0, 100), every=st.sampled_from([False, False, False, True]))
    def deliver(self, i: int, every: bool) -> None:
        """The watch delivers one pending event (in any order: the backend keeps the newest
        version), or all of them."""
        events = self.world.backend.events
        if every:
            self.world.deliver_all()
        elif events:
            self.world.backend.deliver(i % len(events))
            self.world.settle()

    @rule(
        i=st.integers(0, 100),
        outcome=st.sampled_from([*OUTCOMES, "ok", "lost"]),  # the failures that matter most, more often
        when=st.sampled_from(["event first", "answer first", "answer first", "answer later"]),
    )
    def write(self, i: int, outcome: str, when: str) -> None:
        """The API server takes or refuses a pending write (or answers one it took earlier); its
        answer comes before or after its watch event, or later on."""
        calls = self.world.backend.calls
        if not calls:
            return
        call = calls[i % len(calls)]
        if call.landed:
            self.world.backend.answer(call)
            self.world.settle()
        elif when == "answer later":
            self.world.backend.land(call, outcome)
            self.world.settle()
        else:
            self.world.resolve(call, outcome, event_first=when == "event first")

    @rule(lands=st.lists(st.booleans(), max_size=4))
    def lose_leadership(self, lands: list[bool]) -> None:
        if self.world.leaders < 4:
            self.world.lose_leadership(lands)

    @invariant()
    def safe(self) -> None:
        assert self.world.backend.violations == []

    def teardown(self) -> None:
        try:
            self.world.quiesce()
            assert self.world.stuck() == []
            assert self.world.backend.violations == []
        finally:
            self.world.close()


AdmissionMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_admission_schedules = AdmissionMachine.TestCase
