"""jobscheduler.client's schedules, templates and rerun.

- conversions: a JobRequest survives the trip through its ScheduleJobRequest (hypothesis), a
  Schedule and a JobTemplate read back every field, bad values are InvalidArgument naming the field
  before anything is sent;
- the wire: every new method of Client and AsyncClient against a recording gRPC server on 127.0.0.1
  (what is sent, what comes back, which calls are retried after UNAVAILABLE);
- end to end against the real service (local backend): templates, schedules, trigger, rerun.
"""

from __future__ import annotations

import asyncio
import datetime
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ServiceThread, kubernetes_service, local_service, write_kubeconfig
from emulator import EmulatorThread
from hypothesis import given, settings
from hypothesis import strategies as st
from schedule_recorder import NOW, TIMER, RecordingServer, recording_server, skip_unless_served

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.client import (
    AlreadyExists,
    AsyncClient,
    BuiltinJob,
    Client,
    ConcurrencyPolicy,
    CustomJob,
    InvalidArgument,
    JobRequest,
    NotFound,
    Priority,
    Schedule,
    TimerJob,
    Unavailable,
)
from jobscheduler.client import _calls as calls
from jobscheduler.client._requests import job_request, request_message

pytestmark = pytest.mark.timeout(60)


# --- conversions ----------------------------------------------------------------------------------

_names = st.text(st.sampled_from("abcxyz-0"), max_size=8)
_specs = st.one_of(
    st.none(),
    st.builds(
        TimerJob,
        st.integers(0, 86400),
        _names,
        _names,
        image=_names,
        env=st.dictionaries(_names.filter(bool), _names, max_size=3),
    ),
    st.builds(CustomJob, _names.filter(bool), st.dictionaries(_names, _names | st.booleans(), max_size=3)),
    st.builds(BuiltinJob, st.just("container"), st.just({"image": "busybox", "command": ["true"]})),
)
_requests = st.builds(
    JobRequest,
    name=_names,
    job=_specs,
    labels=st.dictionaries(_names.filter(bool), _names, max_size=3),
    priority=st.none() | st.sampled_from([p for p in Priority if p is not Priority.UNSPECIFIED]),
    queue=_names,
    max_retries=st.integers(0, 10),
    timeout_seconds=st.integers(0, 10**6),
    ttl_seconds_after_finished=st.none() | st.integers(0, 10**6),
    template=_names,
    template_version=st.integers(0, 100),
    start_after=st.none() | st.just(NOW),
    depends_on=st.lists(_names, max_size=3).map(tuple),
)


@settings(max_examples=100, deadline=None)
@given(_requests)
def test_a_job_request_survives_its_message(request: JobRequest) -> None:
    message = request_message(request)
    assert job_request(message) == request
    # and the bytes: what the server stores and hands back reads the same
    assert job_request(pb.ScheduleJobRequest.FromString(message.SerializeToString())) == request


def test_unset_fields_are_not_sent_so_the_template_or_original_keeps_them() -> None:
    message = request_message(JobRequest(queue="batch"))
    assert message.WhichOneof("job") is None
    assert not message.HasField("ttl_seconds_after_finished") and not message.HasField("start_after")
    assert message == pb.ScheduleJobRequest(queue="batch")
    assert JobRequest().job_type == "" and JobRequest(job=TIMER).job_type == "timer"
    assert JobRequest(job=CustomJob("weather")).job_type == "weather"


def test_a_schedule_and_a_template_read_back_every_field() -> None:
    stamp = pb.Schedule().created_at.__class__()
    stamp.FromDatetime(NOW)
    message = pb.Schedule(
        name="nightly",
        cron="0 3 * * *",
        time_zone="Europe/Berlin",
        job=request_message(JobRequest(name="n", job=TIMER)),
        concurrency_policy=pb.CONCURRENCY_POLICY_FORBID,
        starting_deadline_seconds=0,
        suspend=True,
        failed_jobs_history_limit=2,
        description="d",
        owner="alice",
        created_at=stamp,
        next_run_time=stamp,
        active_job_ids=["job-a"],
        missed_runs=3,
        skipped_runs=1,
        template_version=4,
    )
    s = calls.schedule_of(message)
    assert s.concurrency_policy is ConcurrencyPolicy.FORBID
    assert s.starting_deadline_seconds == 0  # set to 0 is not unset
    assert s.successful_jobs_history_limit is None and s.failed_jobs_history_limit == 2
    assert s.job == JobRequest(name="n", job=TIMER)
    assert (s.created_at, s.next_run_time, s.updated_at) == (NOW, NOW, None)
    assert (s.active_job_ids, s.missed_runs, s.skipped_runs, s.template_version) == (("job-a",), 3, 1, 4)
    data = s.to_dict()
    assert data["concurrency_policy"] == "FORBID" and data["next_run_time"] == "2026-11-27T17:00:00Z"
    assert data["job"]["job"]["timer_name"] == "nightly"

    t = calls.template_of(
        pb.JobTemplate(name="t", description="d", job=message.job, version=2, created_at=stamp)
    )
    assert (t.name, t.version, t.job.job_type, t.created_at, t.first_created_at) == (
        "t",
        2,
        "timer",
        NOW,
        None,
    )


def test_bad_values_are_invalid_argument_naming_the_field_before_sending() -> None:
    cases: list[tuple[Any, str]] = [
        (
            lambda: calls.create_schedule("s", "* * * * *", JobRequest(), concurrency_policy="sometimes"),
            "concurrency_policy",
        ),
        (lambda: calls.create_schedule("s", "* * * * *", JobRequest(priority="urgent")), "priority"),
        (lambda: calls.update_schedule("s", suspend="yes"), "suspend"),  # type: ignore[typeddict-item]
        (lambda: request_message(JobRequest(job=BuiltinJob("container", {"nope": 1}))), "container_job"),
        (lambda: request_message(JobRequest(job=BuiltinJob("timer", {}))), "job"),
        (lambda: request_message(JobRequest(start_after=datetime.datetime(2026, 1, 1))), "start_after"),
        (
            lambda: calls.rerun("job-x", JobRequest(job=CustomJob("w", {"x": object()})), request_id="r"),
            "custom_job.params",
        ),
    ]
    for build, field in cases:
        with pytest.raises(InvalidArgument) as caught:
            build()
        assert [v.field for v in caught.value.field_violations] == [field]
    # the choices are listed once each (the enum has aliases without its prefix)
    with pytest.raises(InvalidArgument, match=r"one of ALLOW, FORBID, REPLACE\)"):
        calls.policy_value("never")


def test_update_sends_only_the_changes_and_none_removes_the_deadline() -> None:
    call = calls.update_schedule("s", starting_deadline_seconds=None, suspend=False, cron="@daily")
    assert call.request == pb.UpdateScheduleRequest(
        name="s", cron="@daily", suspend=False, clear_starting_deadline=True
    )
    assert call.request.HasField("suspend") and not call.request.HasField("time_zone")
    # None on create: simply unset (there is nothing to remove yet)
    created = calls.create_schedule("s", "@daily", JobRequest(), starting_deadline_seconds=None)  # type: ignore[typeddict-item]
    assert not created.request.HasField("starting_deadline_seconds")
    call = calls.update_schedule("s", concurrency_policy=ConcurrencyPolicy.REPLACE, job=JobRequest(queue="q"))
    assert call.request.concurrency_policy == pb.CONCURRENCY_POLICY_REPLACE
    assert call.request.job == pb.ScheduleJobRequest(queue="q")


# --- the wire: a recording server -----------------------------------------------------------------


@pytest.fixture
def recording() -> Iterator[RecordingServer]:
    with recording_server() as server:
        yield server


def test_every_schedule_method_sends_its_request_and_reads_the_answer(recording: RecordingServer) -> None:
    rec = recording.recorder
    job = JobRequest(name="n", job=TIMER, queue="batch", priority="high")
    with Client(recording.addr) as c:
        made = c.create_schedule(
            "nightly",
            "0 3 * * *",
            job,
            time_zone="Europe/Berlin",
            concurrency_policy="forbid",
            starting_deadline_seconds=300,
            suspend=True,
            description="d",
        )
        assert isinstance(made, Schedule) and made.job == JobRequest(
            name="n", job=TIMER, queue="batch", priority=Priority.HIGH
        )
        assert made.concurrency_policy is ConcurrencyPolicy.FORBID and made.next_run_time == NOW
        [sent] = rec.sent("CreateSchedule")
        assert (sent.time_zone, sent.starting_deadline_seconds, sent.suspend, sent.description) == (
            "Europe/Berlin",
            300,
            True,
            "d",
        )
        assert sent.job.priority == pb.JOB_PRIORITY_HIGH and sent.job.timer_job.timer_name == "nightly"

        assert c.get_schedule("nightly").cron == "@hourly"
        assert [s.name for s in c.list_schedules(name_prefix="n", page_size=2)] == [f"n{i}" for i in range(6)]
        assert [r.page_token for r in rec.sent("ListSchedules")] == ["", "1", "2"]
        assert {r.page_size for r in rec.sent("ListSchedules")} == {2}
        assert c.update_schedule("nightly", suspend=True).suspend is True
        deleted = c.delete_schedule("nightly", cancel_jobs=True)
        assert deleted.schedule.name == "nightly" and deleted.cancelled_job_ids == ("job-a",)
        triggered = c.trigger_schedule("nightly")
        assert (triggered.job_id, triggered.schedule, triggered.scheduled_at) == ("job-trig", "nightly", NOW)

        with pytest.raises(NotFound):
            c.get_schedule("missing")
        with pytest.raises(AlreadyExists):
            c.create_schedule("taken", "@daily", job)


def test_every_template_method_and_rerun_and_schedule_from_a_template(recording: RecordingServer) -> None:
    rec = recording.recorder
    with Client(recording.addr) as c:
        t = c.create_template("nightly", JobRequest(job=TIMER, queue="batch"), description="the nightly run")
        assert (t.name, t.version, t.job.queue, t.owner) == ("nightly", 1, "batch", "alice")
        assert rec.sent("CreateJobTemplate")[0].description == "the nightly run"
        assert c.get_template("nightly", version=3).version == 3
        assert rec.sent("GetJobTemplate")[0].version == 3
        assert [x.name for x in c.list_templates(name_prefix="a")] == ["a"]
        assert c.update_template("nightly", description="").version == 2
        [update] = rec.sent("UpdateJobTemplate")
        assert update.HasField("description") and not update.HasField("job")
        assert c.delete_template("nightly") == 3

        job = c.schedule("", template="nightly", template_version=2, queue="fast")
        assert (job.template, job.template_version) == ("nightly", 2)
        [sent] = rec.sent("ScheduleJob")
        assert (sent.template, sent.template_version, sent.queue) == ("nightly", 2, "fast")
        assert sent.WhichOneof("job") is None and sent.request_id  # a request id, as always

        rerun = c.rerun("job-old", JobRequest(labels={"try": "2"}))
        assert (rerun.job_id, rerun.rerun_of) == ("job-rerun", "job-old")
        [sent_rerun] = rec.sent("RerunJob")
        assert sent_rerun.overrides == pb.ScheduleJobRequest(labels={"try": "2"})
        assert sent_rerun.request_id.startswith("py-")

        listed = list(c.list(schedule="nightly", rerun_of="job-old", template="t"))
        assert listed[0].schedule == "nightly"
        f = rec.sent("ListJobs")[0].filter
        assert (f.schedule, f.rerun_of, f.template) == ("nightly", "job-old", "t")


def test_only_the_calls_that_are_safe_to_repeat_are_retried(recording: RecordingServer) -> None:
    rec = recording.recorder
    rec.fail_first = True
    with Client(recording.addr, retries=2) as c:
        c.get_schedule("s")
        c.update_schedule("s", suspend=True)
        c.rerun("job-old", request_id="same")
        for call in (
            lambda: c.create_schedule("s", "@daily", JobRequest(job=TIMER)),
            lambda: c.trigger_schedule("s"),
            lambda: c.update_template("t", JobRequest(job=TIMER)),
            lambda: c.delete_schedule("s"),
        ):
            with pytest.raises(Unavailable):
                call()
    counts = {rpc: len(rec.sent(rpc)) for rpc in {name for name, _ in rec.calls}}
    assert counts == {
        "GetSchedule": 2,
        "UpdateSchedule": 2,
        "RerunJob": 2,
        "CreateSchedule": 1,
        "TriggerSchedule": 1,
        "UpdateJobTemplate": 1,
        "DeleteSchedule": 1,
    }
    assert {r.request_id for r in rec.sent("RerunJob")} == {"same"}  # the retry repeats the key


def test_the_async_client_has_the_same_methods(recording: RecordingServer) -> None:
    rec = recording.recorder

    async def main() -> None:
        async with AsyncClient(recording.addr) as c:
            made = await c.create_schedule(
                "nightly", "@daily", JobRequest(job=TIMER), concurrency_policy=ConcurrencyPolicy.REPLACE
            )
            assert made.concurrency_policy is ConcurrencyPolicy.REPLACE
            assert (await c.get_schedule("x")).name == "x"
            assert len([s async for s in c.list_schedules(page_size=2)]) == 6
            assert (await c.update_schedule("x", starting_deadline_seconds=None)).name == "x"
            assert (await c.delete_schedule("x")).cancelled_job_ids == ()
            assert (await c.trigger_schedule("x")).schedule == "x"
            assert (await c.create_template("t", JobRequest(job=TIMER))).version == 1
            assert (await c.get_template("t")).version == 7
            assert [t.name async for t in c.list_templates()] == ["a"]
            assert (await c.update_template("t", JobRequest(queue="q"))).version == 2
            assert await c.delete_template("t") == 3
            assert (await c.rerun("job-old")).rerun_of == "job-old"
            assert (await c.schedule("n", template="t")).template == "t"

    asyncio.run(main())
    assert rec.sent("UpdateSchedule")[0].clear_starting_deadline
    assert not rec.sent("RerunJob")[0].HasField("overrides")


# --- end to end: the service (local backend) ------------------------------------------------------


@pytest.fixture(scope="module", params=["local", "kubernetes"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceThread]:
    """The service on either backend (Kubernetes: the API emulator; the client does not care)."""
    tmp = tmp_path_factory.mktemp(f"client-schedules-{request.param}")
    if request.param == "local":
        svc = local_service(tmp / "data")
        try:
            yield svc
        finally:
            svc.stop()
        return
    emulator = EmulatorThread()
    try:
        svc = kubernetes_service(write_kubeconfig(tmp / "kubeconfig", emulator.url))
        try:
            yield svc
        finally:
            svc.stop()
    finally:
        emulator.stop()


def test_templates_versions_and_a_job_from_a_template(service: ServiceThread, tmp_path: pathlib.Path) -> None:
    with Client(f"127.0.0.1:{service.port}") as c:
        skip_unless_served("templates", lambda: c.get_template("probe"))
        held = JobRequest(job=TIMER, delay_seconds=0, labels={"team": "a"})
        v1 = c.create_template("e2e-tpl", held, description="first")
        assert (v1.version, v1.description, v1.job.job_type) == (1, "first", "timer")
        v2 = c.update_template("e2e-tpl", description="second")
        assert v2.version == 2 and c.get_template("e2e-tpl", version=1).description == "first"
        assert "e2e-tpl" in [t.name for t in c.list_templates(name_prefix="e2e-")]
        job = c.schedule("from-tpl", template="e2e-tpl", start_after=NOW + datetime.timedelta(days=1))
        assert (job.template, job.template_version, job.labels.get("team")) == ("e2e-tpl", 2, "a")
        assert [j.job_id for j in c.list(template="e2e-tpl")] == [job.job_id]
        c.cancel(job.job_id)
        assert c.delete_template("e2e-tpl") == 2
        with pytest.raises(NotFound):
            c.get_template("e2e-tpl")


def test_schedules_trigger_and_rerun(service: ServiceThread) -> None:
    with Client(f"127.0.0.1:{service.port}") as c:
        skip_unless_served("schedules", lambda: c.get_schedule("probe"))
        job = JobRequest(name="e2e", job=TimerJob(3600, "e2e", "http://127.0.0.1:9/"))
        made = c.create_schedule("e2e-sched", "0 3 * * *", job, time_zone="Europe/Berlin", suspend=True)
        assert made.suspend and made.next_run_time is None and made.time_zone == "Europe/Berlin"
        resumed = c.update_schedule("e2e-sched", suspend=False, concurrency_policy="forbid")
        assert resumed.next_run_time is not None and resumed.concurrency_policy is ConcurrencyPolicy.FORBID
        assert "e2e-sched" in [s.name for s in c.list_schedules()]
        run = c.trigger_schedule("e2e-sched")
        assert run.schedule == "e2e-sched"
        assert [j.job_id for j in c.list(schedule="e2e-sched")] == [run.job_id]
        cancelled = c.cancel(run.job_id)
        skip_unless_served("rerun", lambda: c.rerun("job-none"))
        again = c.rerun(cancelled.job_id, JobRequest(labels={"again": "yes"}))
        assert again.rerun_of == run.job_id and again.labels.get("again") == "yes"
        assert [j.job_id for j in c.list(rerun_of=run.job_id)] == [again.job_id]
        c.cancel(again.job_id)
        gone = c.delete_schedule("e2e-sched", cancel_jobs=True)
        assert gone.schedule.name == "e2e-sched"
        with pytest.raises(NotFound):
            c.get_schedule("e2e-sched")
