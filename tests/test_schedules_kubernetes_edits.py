"""Schedules on the Kubernetes backend against CronJobs anyone in the namespace could edit: one
edited into no schedule can still be deleted, a copy under another name is not listed, a stored
request edited into parameters its job type cannot hold still lists (and does not run). The
world they run in: schedules_world.py."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from schedules_world import CRONJOBS, T, World, running_world

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.core.auth import ANONYMOUS


@pytest.fixture
def world(tmp_path: pathlib.Path) -> Iterator[World]:
    yield from running_world(tmp_path)


def test_a_cronjob_edited_into_no_schedule_can_be_deleted(world: World) -> None:
    """DeleteSchedule deleted it and then answered FAILED_PRECONDITION (it read the schedule back
    after the delete); now it answers with what it can (name, owner) and the CronJob is gone."""
    schedule = world.create()
    name = world.cronjob(schedule)["metadata"]["name"]
    edit = {"spec": {"jobTemplate": {"metadata": {"annotations": {"jobscheduler.io/request": "{"}}}}}
    world.emulator.request("PATCH", f"{CRONJOBS}/{name}", edit, "application/merge-patch+json")
    stub = world.service.stub
    deleted = stub.DeleteSchedule(pb.DeleteScheduleRequest(name="nightly", cancel_jobs=True), timeout=T)
    assert (deleted.schedule.name, deleted.schedule.owner) == ("nightly", ANONYMOUS.identity)
    assert world.emulator.request("GET", CRONJOBS)["items"] == []


def test_a_copy_of_a_cronjob_under_another_name_is_not_listed(world: World) -> None:
    """Anyone in the namespace may copy a schedule's CronJob under another name (and name another
    schedule in it): it was listed as the owner's, though get, update and delete never reach it."""
    schedule = world.create()
    copy = json.loads(json.dumps(world.cronjob(schedule)))
    copy["metadata"] = {
        "name": "copied",
        "labels": copy["metadata"]["labels"],
        "annotations": {**copy["metadata"]["annotations"], "jobscheduler.io/schedule": "planted"},
    }
    copy.pop("status", None)
    world.emulator.request("POST", CRONJOBS, copy)
    assert [s.name for s in world.run(world.store.list())] == ["nightly"]
    assert [s.name for s in world.run(world.store.list(ANONYMOUS.identity))] == ["nightly"]


@pytest.mark.parametrize(
    "request_edit",
    [
        {"job_field": "timer_job", "params": {"duration_seconds": "soon"}},
        {"job_field": "timer_job", "params": {"duration_seconds": 2**40}},
        {"job_field": "labels", "params": {}},
        {"job_field": "no_such_job", "params": {}},
    ],
)
def test_a_cronjob_whose_stored_request_was_edited_still_lists(
    world: World, request_edit: dict[str, Any]
) -> None:
    """A request annotation edited into parameters the job type's message cannot hold, or a job
    type that is none, made GetSchedule and the owner's whole ListSchedules INTERNAL; now the
    schedule shows (without those parameters) and a run of it is refused as not valid."""
    schedule = world.create()
    world.create("other")
    cronjob = world.cronjob(schedule)
    stored = json.loads(cronjob["spec"]["jobTemplate"]["metadata"]["annotations"]["jobscheduler.io/request"])
    edited = json.dumps({**stored, **request_edit})
    edit = {"spec": {"jobTemplate": {"metadata": {"annotations": {"jobscheduler.io/request": edited}}}}}
    world.emulator.request(
        "PATCH", f"{CRONJOBS}/{cronjob['metadata']['name']}", edit, "application/merge-patch+json"
    )
    stub = world.service.stub
    listed = stub.ListSchedules(pb.ListSchedulesRequest(), timeout=T).schedules
    assert sorted(s.name for s in listed) == ["nightly", "other"]
    got = stub.GetSchedule(pb.GetScheduleRequest(name="nightly"), timeout=T)
    assert not got.job.timer_job.duration_seconds
    with pytest.raises(grpc.RpcError) as info:
        stub.TriggerSchedule(pb.TriggerScheduleRequest(name="nightly"), timeout=T)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
