"""Schedules on the Kubernetes backend, end to end through the emulator: the CronJob store
(backends/kubernetes/_cronjobs.py) keeps each schedule as a CronJob, the stand-in for the CronJob
controller (emulator_cronjobs.py, on an injected clock) fires it, and the service admits and reports
the Jobs it makes like any other job, over gRPC (GetJobStatus, ListJobs filter.schedule, WatchJobs,
CancelJob). The world they run in: schedules_world.py."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import kubernetes_validate
import pytest
from emulator_cronjobs import SCHEDULED_ANNOTATION
from schedules_world import CRONJOBS, K8S_VERSION, NS, T, World, minutes, running_world, wait_until

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.core.auth import ANONYMOUS
from jobscheduler.core.errors import AlreadyExists, FailedPrecondition, NotFound
from jobscheduler.core.schedules.model import ConcurrencyPolicy


@pytest.fixture
def world(tmp_path: pathlib.Path) -> Iterator[World]:
    yield from running_world(tmp_path)


def test_every_minute_across_the_dst_change_each_run_an_admitted_job_naming_its_schedule(
    world: World,
) -> None:
    schedule = world.create(time_zone="Europe/Berlin")
    cronjob = world.cronjob(schedule)
    kubernetes_validate.validate(cronjob, K8S_VERSION, strict=True)
    assert cronjob["metadata"]["labels"]["jobscheduler.io/schedule"] == "nightly"
    assert cronjob["metadata"]["annotations"]["jobscheduler.io/owner"] == ANONYMOUS.identity
    # From where ListJobs stood: the jobs made later arrive, without racing the subscription.
    only = pb.JobFilter(schedule="nightly")
    since = world.service.stub.ListJobs(pb.ListJobsRequest(filter=only), timeout=T).resume_token
    watch = world.service.stub.WatchJobs(pb.WatchJobsRequest(filter=only, resume_token=since), timeout=6 * T)

    world.tick(seconds=20)  # 01:57:50: nothing due yet
    assert world.jobs() == []
    due = [datetime(2026, 3, 29, 0, m, tzinfo=UTC) for m in (58, 59)] + [
        datetime(2026, 3, 29, 1, m, tzinfo=UTC) for m in (0, 1)
    ]
    for at in due:  # 01:58 and 01:59 CET, then 03:00 and 03:01 CEST: one job a minute
        world.clock.now = at + timedelta(seconds=1)
        world.controller.sync()
    jobs = world.jobs()
    assert [j["metadata"]["name"] for j in jobs] == [
        f"{cronjob['metadata']['name']}-{minutes(at)}" for at in due
    ]
    assert [j["metadata"]["annotations"][SCHEDULED_ANNOTATION] for j in jobs] == [
        "2026-03-29T01:58:00+01:00",
        "2026-03-29T01:59:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:01:00+02:00",
    ]
    first = jobs[0]
    kubernetes_validate.validate(first, K8S_VERSION, strict=True)
    posted = world.emulator.call(
        lambda e: [r.data for r in e._requests if r.method.value == "POST" and r.url.path.endswith("/jobs")]
    )
    assert [p["spec"]["suspend"] for p in posted] == [
        True
    ] * 4  # created held: our admission loop starts them
    assert first["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    ids = [j["metadata"]["name"] for j in jobs]
    created: set[str] = set()
    for event in watch:  # bounded by the stream's deadline
        if event.type == pb.JOB_EVENT_TYPE_CREATED:
            assert event.job.schedule == "nightly"
            created.add(event.job.job_id)
        if created == set(ids):
            break
    watch.cancel()
    for job_id, at in zip(ids, due, strict=True):
        job = wait_until(
            lambda job_id=job_id: (j := world.get(job_id)).HasField("admitted_at") and j, "admitted"
        )
        assert (job.schedule, job.scheduled_at.ToDatetime(tzinfo=UTC)) == ("nightly", at)
        assert job.phase == pb.JOB_PHASE_PENDING and job.type == "timer"
    assert world.emulator.job(ids[0])["spec"].get("suspend") is False
    assert world.listed() == ids
    assert world.listed("other") == []
    status = world.cronjob(schedule)["status"]
    assert [a["name"] for a in status["active"]] == ids
    assert status["lastScheduleTime"] == "2026-03-29T01:01:00Z"
    assert world.run(world.store.get(ANONYMOUS.identity, "nightly")).status.last_schedule_time == due[-1]

    pod = world.make_pod(ids[0])  # found by the Job controller's label: the template has no job id
    wait_until(lambda: pod in world.get(ids[0]).pod_names, "the pod in the job's status")
    cancelled = world.service.stub.CancelJob(pb.CancelJobRequest(job_id=ids[0], reason="enough"), timeout=T)
    assert cancelled.job.phase == pb.JOB_PHASE_CANCELLED


def test_queues_and_max_running_apply_to_scheduled_jobs(world: World) -> None:
    world.create(queue="batch")  # batch=1
    world.tick(minutes=1)
    world.tick(minutes=1)
    first, second = (j["metadata"]["name"] for j in world.jobs())
    wait_until(lambda: world.get(first).HasField("admitted_at"), "the first admitted")
    queued = world.get(second)
    assert queued.phase == pb.JOB_PHASE_QUEUED
    # No enqueued-at annotation on a cron-made Job: it was submitted when the controller made it.
    assert queued.enqueued_at == queued.created_at and queued.HasField("enqueued_at")
    world.finish(first)
    wait_until(lambda: world.get(second).HasField("admitted_at"), "the second admitted once the first ended")


def test_forbid_skips_while_a_job_is_unfinished_even_one_still_queued(world: World) -> None:
    blocker = world.service.stub.ScheduleJob(
        pb.ScheduleJobRequest(
            name="blocker",
            queue="batch",
            timer_job=pb.TimerJob(
                duration_seconds=600,
                timer_name="b",
                control_plane_endpoint="http://control-plane.example:8080",
            ),
        ),
        timeout=T,
    ).job.job_id
    wait_until(lambda: world.get(blocker).HasField("admitted_at"), "the blocker admitted")
    world.create(queue="batch", concurrency_policy=ConcurrencyPolicy.FORBID)
    world.tick(minutes=1)
    (first,) = (j["metadata"]["name"] for j in world.jobs())
    wait_until(lambda: world.get(first).phase == pb.JOB_PHASE_QUEUED, "queued behind the blocker")
    world.tick(minutes=1)
    world.tick(minutes=1)
    assert [j["metadata"]["name"] for j in world.jobs()] == [first]  # suspended and unfinished: active
    assert [r for _, r, _ in world.controller.events].count("JobAlreadyActive") == 2
    world.finish(blocker)
    wait_until(lambda: world.get(first).HasField("admitted_at"), "the scheduled job admitted")
    world.finish(first)
    world.tick(minutes=1)
    assert len(world.jobs()) == 2  # the next run, once nothing of it is unfinished


def test_replace_deletes_the_unfinished_job_and_starts_the_new_one(world: World) -> None:
    world.create(concurrency_policy=ConcurrencyPolicy.REPLACE)
    world.tick(minutes=1)
    (first,) = (j["metadata"]["name"] for j in world.jobs())
    wait_until(lambda: world.get(first).HasField("admitted_at"), "admitted")
    pod = world.make_pod(first)
    world.tick(minutes=1)
    (second,) = (j["metadata"]["name"] for j in world.jobs())
    assert pod not in [
        p["metadata"]["name"] for p in world.emulator.request("GET", f"/api/v1/namespaces/{NS}/pods")["items"]
    ]
    assert second != first
    with pytest.raises(grpc.RpcError) as info:
        wait_until(lambda: world.get(first) and False, "gone", timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    wait_until(lambda: world.listed() == [second], "only the new job listed")


def test_missed_runs_make_at_most_one_catch_up_within_the_starting_deadline(world: World) -> None:
    world.create(starting_deadline_seconds=90)
    world.clock.advance(minutes=3, seconds=40)  # the controller was down for three runs
    world.controller.sync()
    (job,) = world.jobs()
    assert job["metadata"]["annotations"][SCHEDULED_ANNOTATION] == "2026-03-29T01:01:00+00:00"  # the last
    world.create("strict", starting_deadline_seconds=20)
    world.clock.advance(minutes=3, seconds=40)  # 01:04:50: the last due time is 50 s ago
    world.controller.sync()
    assert world.jobs("strict") == []  # too late: skipped


def test_more_than_100_missed_runs_warn_and_start_the_most_recent(world: World) -> None:
    world.create()
    world.clock.advance(minutes=102)
    world.controller.sync()
    assert len(world.jobs()) == 1
    assert [r for _, r, _ in world.controller.warnings] == ["TooManyMissedTimes"]


def test_suspend_stops_runs_and_resume_catches_up_once(world: World) -> None:
    schedule = world.create()
    world.tick(minutes=1)
    suspended = world.update(schedule, suspend=True)
    assert suspended.spec.suspend and suspended.status.last_schedule_time is not None  # status kept
    world.tick(minutes=1)
    world.tick(minutes=1)
    assert len(world.jobs()) == 1
    world.update(schedule, suspend=False)
    world.controller.sync()
    assert len(world.jobs()) == 2  # the most recent missed time only


def test_delete_keeps_the_jobs_and_stops_the_runs(world: World) -> None:
    world.create()
    world.tick(minutes=1)
    (job,) = world.jobs()
    job_id = job["metadata"]["name"]
    deleted = world.run(world.store.delete(ANONYMOUS.identity, "nightly"))
    assert deleted.name == "nightly"
    world.tick(minutes=1)
    world.tick(minutes=1)
    (kept,) = world.jobs()
    assert kept["metadata"]["name"] == job_id and not kept["metadata"].get("ownerReferences")
    with pytest.raises(NotFound):
        world.run(world.store.get(ANONYMOUS.identity, "nightly"))
    assert world.get(job_id).schedule == "nightly"  # still an ordinary job that names its schedule
    cancelled = world.service.stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=T).job
    assert cancelled.phase == pb.JOB_PHASE_CANCELLED


def test_history_limits_delete_the_oldest_finished_jobs(world: World) -> None:
    schedule = world.create(successful_jobs_history_limit=1, failed_jobs_history_limit=1)
    made = []
    for succeed in [True, True, False, False, True]:
        world.tick(minutes=1)
        made.append(world.jobs()[-1]["metadata"]["name"])
        world.finish(made[-1], succeed=succeed)
    world.controller.sync()
    world.controller.sync()  # the controller's next look: the last success's completion time
    names = [j["metadata"]["name"] for j in world.jobs()]
    assert names == [made[3], made[4]]  # the newest failure and the newest success
    status = world.cronjob(schedule)["status"]
    assert not status.get("active") and status["lastSuccessfulTime"]
    wait_until(lambda: world.listed() == names, "the deleted jobs gone from the index")


def test_store_crud_is_owner_scoped(world: World) -> None:
    schedule = world.create()
    with pytest.raises(AlreadyExists):
        world.create()
    assert world.run(world.store.get(ANONYMOUS.identity, "nightly")).spec == schedule.spec
    with pytest.raises(NotFound):
        world.run(world.store.get("someone-else", "nightly"))
    world.create("other")
    assert sorted(s.name for s in world.run(world.store.list())) == ["nightly", "other"]
    assert world.run(world.store.list("someone-else")) == []
    # The controller's status write comes between the read and the replace: read again, replace.
    world.emulator.inject(
        "PUT", r"/cronjobs/nightly-", 409, "the object has been modified", reason="Conflict", times=1
    )
    updated = world.update(schedule, cron="0 3 * * *", description="at three")
    assert [m for m, p in world.emulator.requests() if m == "PUT" and "/cronjobs/" in p] == ["PUT", "PUT"]
    assert (updated.spec.cron, updated.spec.description) == ("0 3 * * *", "at three")
    assert world.cronjob(schedule)["spec"]["schedule"] == "0 3 * * *"
    with pytest.raises(NotFound):
        world.run(world.store.delete("someone-else", "nightly"))


def test_the_schedule_rpcs_over_grpc_on_the_kubernetes_backend(world: World) -> None:
    stub = world.service.stub
    timer = pb.TimerJob(
        duration_seconds=60, timer_name="t", control_plane_endpoint="http://control-plane.example:80"
    )
    created = stub.CreateSchedule(
        pb.CreateScheduleRequest(
            name="grpc",
            cron="*/1 * * * *",
            time_zone="Europe/Berlin",
            job=pb.ScheduleJobRequest(name="from-grpc", timer_job=timer, queue="batch"),
            concurrency_policy=pb.CONCURRENCY_POLICY_FORBID,
            description="over gRPC",
        ),
        timeout=T,
    )
    assert created.HasField("next_run_time") and created.owner == ANONYMOUS.identity
    cronjobs = world.emulator.request("GET", CRONJOBS)["items"]
    (cronjob,) = [c for c in cronjobs if c["metadata"]["annotations"]["jobscheduler.io/schedule"] == "grpc"]
    kubernetes_validate.validate(cronjob, K8S_VERSION, strict=True)
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert cronjob["spec"]["jobTemplate"]["metadata"]["annotations"]["jobscheduler.io/queue"] == "batch"

    world.tick(minutes=1)
    (job,) = world.jobs("grpc")
    job_id = job["metadata"]["name"]
    wait_until(lambda: world.get(job_id).HasField("admitted_at"), "admitted")
    got = stub.GetSchedule(pb.GetScheduleRequest(name="grpc"), timeout=T)
    assert list(got.active_job_ids) == [job_id]
    assert got.last_schedule_time.ToDatetime(tzinfo=UTC) == datetime(2026, 3, 29, 0, 58, tzinfo=UTC)
    assert [s.name for s in stub.ListSchedules(pb.ListSchedulesRequest(), timeout=T).schedules] == ["grpc"]

    suspended = stub.UpdateSchedule(pb.UpdateScheduleRequest(name="grpc", suspend=True), timeout=T)
    assert suspended.suspend and not suspended.HasField("next_run_time")
    assert world.cronjob(world.run(world.store.get(ANONYMOUS.identity, "grpc")))["spec"]["suspend"] is True
    world.tick(minutes=1)
    assert len(world.jobs("grpc")) == 1

    triggered = stub.TriggerSchedule(pb.TriggerScheduleRequest(name="grpc"), timeout=T).job
    assert triggered.schedule == "grpc"
    assert sorted(world.listed("grpc")) == sorted([job_id, triggered.job_id])

    deleted = stub.DeleteSchedule(pb.DeleteScheduleRequest(name="grpc", cancel_jobs=True), timeout=T)
    assert set(deleted.cancelled_job_ids) == {job_id, triggered.job_id}
    assert world.emulator.request("GET", CRONJOBS)["items"] == []
    with pytest.raises(grpc.RpcError) as info:
        stub.GetSchedule(pb.GetScheduleRequest(name="grpc"), timeout=T)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


def test_a_cronjob_edited_into_no_schedule_is_a_failed_precondition_and_not_listed(world: World) -> None:
    schedule = world.create()
    world.create("other")
    name = world.cronjob(schedule)["metadata"]["name"]
    edit = {"spec": {"jobTemplate": {"metadata": {"annotations": {"jobscheduler.io/request": "{"}}}}}
    world.emulator.request("PATCH", f"{CRONJOBS}/{name}", edit, "application/merge-patch+json")
    with pytest.raises(FailedPrecondition, match="not a valid schedule"):
        world.run(world.store.get(ANONYMOUS.identity, "nightly"))
    assert [s.name for s in world.run(world.store.list())] == ["other"]


def test_logs_of_a_scheduled_job_whose_pod_the_informer_has_not_seen(world: World) -> None:
    world.create()
    world.tick(minutes=1)
    (job,) = world.jobs()
    job_id = job["metadata"]["name"]
    wait_until(lambda: world.get(job_id).HasField("admitted_at"), "admitted")
    # The pod informer neither lists nor watches from now on: GetJobLogs looks the pod up itself.
    world.emulator.inject("GET", r"/api/v1/namespaces/default/pods$", 503, query="watch=|limit=")
    world.emulator.end_watches("v1/pods")
    pod = world.make_pod(job_id)
    world.emulator.request(
        "PATCH",
        f"/api/v1/namespaces/{NS}/pods/{pod}/status",
        {
            "status": {
                "containerStatuses": [
                    {"name": "timer", "state": {"running": {"startedAt": "2026-03-29T00:58:05Z"}}}
                ]
            }
        },
        "application/merge-patch+json",
    )
    world.emulator.write_log(pod, "tick")
    assert pod not in world.get(job_id).pod_names
    lines = world.service.stub.GetJobLogs(pb.GetJobLogsRequest(job_id=job_id), timeout=T)
    assert [(line.line, line.pod_name) for line in lines] == [("tick", pod)]


def test_a_job_carrying_the_placeholder_id_is_invalid_argument_over_grpc(world: World) -> None:
    timer = pb.TimerJob(
        duration_seconds=60, timer_name="t", control_plane_endpoint="http://control-plane.example:80"
    )
    job = pb.ScheduleJobRequest(name="sneaky", timer_job=timer, labels={"team": "job-schedule-template"})
    with pytest.raises(grpc.RpcError) as info:
        world.service.stub.CreateSchedule(
            pb.CreateScheduleRequest(name="sneaky", cron="0 3 * * *", job=job), timeout=T
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "job-schedule-template" in info.value.details()  # type: ignore[attr-defined]
    assert world.emulator.request("GET", CRONJOBS)["items"] == []


def test_the_documented_example_of_a_controller_down_for_two_hours(world: World) -> None:
    """kubernetes.io/docs/concepts/workloads/controllers/cron-jobs, "CronJob limitations": every
    minute from 08:30, the controller down from 08:29 to 10:21. Without a starting deadline more
    than 100 runs were missed: a TooManyMissedTimes warning (the page says no Job; the v2
    controller still starts the most recent); with startingDeadlineSeconds 200 only the last 200
    seconds count, and the Job starts at 10:22."""
    world.clock.now = datetime(2026, 5, 4, 8, 29, tzinfo=UTC)
    world.create("unbounded")
    world.create("bounded", starting_deadline_seconds=200)
    world.clock.now = datetime(2026, 5, 4, 10, 22, tzinfo=UTC)
    world.controller.sync()
    (unbounded,) = world.jobs("unbounded")
    assert unbounded["metadata"]["annotations"][SCHEDULED_ANNOTATION] == "2026-05-04T10:22:00+00:00"
    assert [(n.split("-")[0], r) for n, r, _ in world.controller.warnings] == [
        ("unbounded", "TooManyMissedTimes")
    ]
    (job,) = world.jobs("bounded")
    assert job["metadata"]["annotations"][SCHEDULED_ANNOTATION] == "2026-05-04T10:22:00+00:00"
