"""The world the Kubernetes schedule tests run in (tests/test_schedules_kubernetes.py): the emulator
with an injected clock, the service on the Kubernetes backend (queue ``batch`` allows 1 running job),
the CronJob controller's stand-in on the same clock, and the backend's CronJob store."""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from conftest import ServiceThread, kubernetes_service, write_kubeconfig
from emulator import EmulatorThread
from emulator_cronjobs import CronJobController
from job_status import ended_status

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.backends.kubernetes._cronjobs import CronJobStore
from jobscheduler.core.auth import ANONYMOUS
from jobscheduler.core.model import JobOrigin, ScheduleRequest
from jobscheduler.core.schedules.cronjob import cronjob_name
from jobscheduler.core.schedules.model import Schedule, ScheduleSpec

T = 10
NS = "default"
K8S_VERSION = "1.31.0"
CRONJOBS = f"/apis/batch/v1/namespaces/{NS}/cronjobs"
PLACEHOLDER = "job-placeholdr"
#: 01:57:30 in Berlin on the night clocks go forward (02:00 CET -> 03:00 CEST).
DST_NIGHT = datetime(2026, 3, 29, 0, 57, 30, tzinfo=UTC)
R = TypeVar("R")


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class World:
    emulator: EmulatorThread
    service: ServiceThread
    clock: Clock
    controller: CronJobController
    store: CronJobStore

    def run(self, coro: Coroutine[Any, Any, R]) -> R:
        """``coro`` on the service's event loop (where the store's API client lives)."""
        return asyncio.run_coroutine_threadsafe(coro, self.service._loop).result(T)

    def create(self, name: str = "nightly", *, queue: str = "", **spec: Any) -> Schedule:
        """A schedule made as the ScheduleService makes one: its job prepared and rendered under a
        placeholder id, then stored."""
        request = ScheduleRequest(
            name=f"{name}-job",
            job_field="timer_job",
            params={
                "duration_seconds": 600,
                "timer_name": "Nightly",
                "control_plane_endpoint": "http://control-plane.example:8080/report",
            },
            queue=queue,
        )
        fields: dict[str, Any] = {"name": name, "cron": "*/1 * * * *", "job": request, **spec}
        schedule = Schedule(
            spec=ScheduleSpec(**fields),
            owner=ANONYMOUS.identity,
            created_at=self.clock(),
            updated_at=self.clock(),
        )
        return self.run(self._create(schedule))

    async def _create(self, schedule: Schedule) -> Schedule:
        return await self.store.create(schedule, await self.template(schedule))

    async def template(self, schedule: Schedule) -> dict[str, Any]:
        prepared = await self.service.service.prepare(
            schedule.spec.job, ANONYMOUS, origin=JobOrigin(schedule=schedule.name)
        )
        return prepared.render(PLACEHOLDER, None)

    def update(self, schedule: Schedule, **spec: Any) -> Schedule:
        changed = replace(schedule, spec=replace(schedule.spec, **spec))

        async def update() -> Schedule:
            return await self.store.update(changed, await self.template(changed))

        return self.run(update())

    def tick(self, **delta: float) -> None:
        """Time passes, then the controller looks (as it does at each scheduled time)."""
        self.clock.advance(**delta)
        self.controller.sync()

    def jobs(self, schedule: str = "nightly") -> list[dict[str, Any]]:
        """The Jobs in the cluster of ``schedule``, oldest first."""
        jobs = [
            j
            for j in self.emulator.jobs()
            if (j["metadata"].get("labels") or {}).get("jobscheduler.io/schedule") == schedule
        ]
        return sorted(jobs, key=lambda j: j["metadata"]["name"])

    def get(self, job_id: str) -> pb.Job:
        job: pb.Job = self.service.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=T).job
        return job

    def listed(self, schedule: str = "nightly") -> list[str]:
        request = pb.ListJobsRequest(filter=pb.JobFilter(schedule=schedule))
        return sorted(j.job_id for j in self.service.stub.ListJobs(request, timeout=T).jobs)

    def finish(self, job_id: str, *, succeed: bool = True) -> None:
        self.emulator.patch_job(job_id, {"status": ended_status(succeed=succeed)})
        wait_until(lambda: self.get(job_id).phase in _ENDED, f"{job_id} ended")

    def make_pod(self, job_id: str) -> str:
        """The Job controller's pod for a Job: its template's labels plus the Job's name."""
        job = self.emulator.job(job_id)
        template = job["spec"]["template"]
        name = f"{job_id}-x7k2p"
        labels = {
            **template["metadata"]["labels"],
            "batch.kubernetes.io/job-name": job_id,
            "job-name": job_id,
        }
        meta = {"name": name, "namespace": NS, "labels": labels}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]}
        self.emulator.request("POST", f"/api/v1/namespaces/{NS}/pods", pod)
        return name

    def cronjob(self, schedule: Schedule) -> dict[str, Any]:
        name = cronjob_name(NS, schedule.owner, schedule.name)
        cronjob: dict[str, Any] = self.emulator.request("GET", f"{CRONJOBS}/{name}")
        return cronjob


_ENDED = (pb.JOB_PHASE_SUCCEEDED, pb.JOB_PHASE_FAILED, pb.JOB_PHASE_CANCELLED)


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def minutes(at: datetime) -> int:
    return int(at.timestamp()) // 60


def running_world(tmp_path: pathlib.Path) -> Iterator[World]:
    """The world, stopped afterwards."""
    emulator = EmulatorThread()
    clock = Clock(DST_NIGHT)
    emulator.call(lambda e: setattr(e, "clock", clock))
    service = kubernetes_service(write_kubeconfig(tmp_path / "kubeconfig", emulator.url), queues="batch=1")
    try:
        store = service.backend.schedules  # what the app wires the ScheduleService to
        assert isinstance(store, CronJobStore)
        yield World(emulator, service, clock, CronJobController(emulator, clock), store)
    finally:
        service.stop()
        emulator.stop()
