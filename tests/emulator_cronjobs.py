"""A stand-in for kube-controller-manager's CronJob controller (and, for CronJobs' Jobs, its garbage
collector), driving the emulator over HTTP as the real ones drive the API server, on an injected
clock: a test advances the clock and calls :meth:`CronJobController.sync`; nothing waits for a minute.

It follows the documented rules (kubernetes.io/docs/concepts/workloads/controllers/cron-jobs) and
the controller's code (pkg/controller/cronjob: syncCronJob, mostRecentScheduleTime,
getJobFromTemplate2, cleanupFinishedJobs):

- the schedule is evaluated in ``spec.timeZone`` (unset: the controller manager's zone, UTC here);
  the macros (@hourly, ...) are the standard ones;
- the Jobs of a CronJob are those whose controller ownerReference is its uid; a finished one
  (a Complete or Failed condition) leaves ``status.active``; a succeeded one not in the list sets
  ``status.lastSuccessfulTime`` (its completionTime) when later than the one recorded; a Job in
  the list that no longer exists leaves it;
- history limits: beyond ``successfulJobsHistoryLimit``/``failedJobsHistoryLimit`` the oldest
  finished Jobs (by startTime, unstarted last, then name) are deleted (Background: their pods,
  found by the Job controller's ``batch.kubernetes.io/job-name`` label, go too);
- ``suspend``: nothing is started;
- only the most recent unmet time since ``lastScheduleTime`` (else the creationTimestamp) is
  started, the earliest considered being ``now - startingDeadlineSeconds`` when that is later; a
  time later than its deadline is not started (``MissSchedule`` warning); with more than 100
  missed times a ``TooManyMissedTimes`` warning, and the most recent is still started (as the
  v2 controller's nextScheduleTime does; the concept page still says none is started);
- a time already made (an active Job of its name, or ``lastScheduleTime``) is not made again;
- ``Forbid`` while ``status.active`` is not empty (a suspended, unfinished Job counts):
  ``JobAlreadyActive``, nothing started; ``Replace``: each active Job is deleted (Background) first;
- the Job: named ``<cronjob>-<scheduled time in minutes since the epoch>``, the jobTemplate's labels,
  annotations (plus ``batch.kubernetes.io/cronjob-scheduled-timestamp``, RFC 3339 in the CronJob's
  zone) and spec, an ownerReference to the CronJob (controller: true); AlreadyExists: made by
  another sync, nothing more; then ``status.active`` gains it and ``lastScheduleTime`` is the time.

The garbage collector: the Jobs of a deleted CronJob are deleted (Background, the default), or
keep running without their ownerReference (``propagationPolicy=Orphan``). The Job controller is
the test's (``EmulatorThread.patch_job``).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from cronsim import CronSim
from emulator import EmulatorThread

from jobscheduler.core.schedules.cron import MACROS  # the standard ones, as robfig/cron has them

SCHEDULED_ANNOTATION: Final = "batch.kubernetes.io/cronjob-scheduled-timestamp"
TOO_MANY_MISSED: Final = 100
_MERGE: Final = "application/merge-patch+json"


def parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value).astimezone(UTC) if isinstance(value, str) and value else None


def k8s_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def times(cron: str, zone: str, after: datetime) -> Iterator[datetime]:
    """The schedule's times strictly after ``after``, in UTC (robfig/cron's Next, repeated)."""
    tz = ZoneInfo(zone or "UTC")
    start = after.astimezone(tz).replace(second=0, microsecond=0)
    for t in CronSim(MACROS.get(cron.strip(), cron), start):
        if t.astimezone(UTC) > after:
            yield t.astimezone(UTC)


def finished(job: dict[str, Any]) -> str:
    """ "Complete", "Failed" or "" (IsJobFinished / getFinishedStatus)."""
    for c in (job.get("status") or {}).get("conditions") or ():
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return str(c["type"])
    return ""


@dataclass
class CronJobController:
    emulator: EmulatorThread
    clock: Callable[[], datetime]
    namespace: str = "default"
    #: (cronjob name, reason, message) of every Warning event it would record
    warnings: list[tuple[str, str, str]] = field(default_factory=list)
    #: (cronjob name, reason, message) of its Normal events
    events: list[tuple[str, str, str]] = field(default_factory=list)
    _collected: int = 0

    @property
    def _cronjobs(self) -> str:
        return f"/apis/batch/v1/namespaces/{self.namespace}/cronjobs"

    @property
    def _jobs(self) -> str:
        return f"/apis/batch/v1/namespaces/{self.namespace}/jobs"

    def sync(self) -> None:
        """One pass of the garbage collector, then of the controller over every CronJob, at ``clock()``."""
        self.collect_garbage()
        for cronjob in self.emulator.request("GET", self._cronjobs)["items"]:
            self.sync_one(cronjob)

    # --- the garbage collector -------------------------------------------------------------------

    def collect_garbage(self) -> None:
        deletions = self.emulator.call(lambda e: list(e.deletions))
        for resource, owner, policy in deletions[self._collected :]:
            uid = (owner.get("metadata") or {}).get("uid")
            for job in self.emulator.request("GET", self._jobs)["items"]:
                refs = (job.get("metadata") or {}).get("ownerReferences") or []
                if not any(r.get("uid") == uid for r in refs):
                    continue
                name = job["metadata"]["name"]
                if policy == "Orphan":
                    kept = [r for r in refs if r.get("uid") != uid]
                    self.emulator.patch_job(name, {"metadata": {"ownerReferences": kept or None}})
                else:
                    self._delete_job(name)
            del resource
        self._collected = len(deletions)

    def _delete_job(self, name: str) -> bool:
        """Delete a Job with Background propagation: then the garbage collector deletes its pods."""
        query = urllib.parse.urlencode({"propagationPolicy": "Background"})
        code, _ = self.emulator.answer("DELETE", f"{self._jobs}/{name}?{query}")
        pods = f"/api/v1/namespaces/{self.namespace}/pods"
        selector = urllib.parse.urlencode({"labelSelector": f"batch.kubernetes.io/job-name={name}"})
        for pod in self.emulator.request("GET", f"{pods}?{selector}")["items"]:
            self.emulator.answer("DELETE", f"{pods}/{pod['metadata']['name']}")
        return code in (200, 202, 404)

    # --- the controller --------------------------------------------------------------------------

    def sync_one(self, cronjob: dict[str, Any]) -> None:
        now = self.clock()
        meta, spec = cronjob["metadata"], cronjob["spec"]
        name, uid = meta["name"], meta["uid"]
        status = dict(cronjob.get("status") or {})
        active: list[dict[str, Any]] = list(status.get("active") or [])
        before = (list(active), status.get("lastScheduleTime"), status.get("lastSuccessfulTime"))
        jobs = [
            j
            for j in self.emulator.request("GET", self._jobs)["items"]
            if any(
                r.get("controller") and r.get("uid") == uid
                for r in j["metadata"].get("ownerReferences") or ()
            )
        ]
        for job in jobs:
            in_active = any(ref.get("uid") == job["metadata"]["uid"] for ref in active)
            if in_active and finished(job):
                active = [ref for ref in active if ref.get("uid") != job["metadata"]["uid"]]
                self.events.append((name, "SawCompletedJob", job["metadata"]["name"]))
            elif finished(job) == "Complete":
                done = (job.get("status") or {}).get("completionTime")
                last = parse_time(status.get("lastSuccessfulTime"))
                if done and (last is None or parse_time(done) > last):  # type: ignore[operator]
                    status["lastSuccessfulTime"] = done
        names = {j["metadata"]["uid"] for j in jobs}
        active = [ref for ref in active if ref.get("uid") in names]
        if meta.get("deletionTimestamp"):
            return
        self._cleanup(spec, jobs, active)
        if not spec.get("suspend"):
            active = self._run(cronjob, now, status, active)
        status["active"] = active or None
        if (list(active), status.get("lastScheduleTime"), status.get("lastSuccessfulTime")) != before:
            self.emulator.request("PATCH", f"{self._cronjobs}/{name}", {"status": status}, _MERGE)

    def _cleanup(
        self, spec: dict[str, Any], jobs: list[dict[str, Any]], active: list[dict[str, Any]]
    ) -> None:
        for kind, limit_key in (
            ("Complete", "successfulJobsHistoryLimit"),
            ("Failed", "failedJobsHistoryLimit"),
        ):
            limit = spec.get(limit_key)
            if limit is None:
                continue
            done = [j for j in jobs if finished(j) == kind]

            def started(j: dict[str, Any]) -> tuple[bool, datetime, str]:
                at = parse_time((j.get("status") or {}).get("startTime"))
                return (at is None, at or datetime.min.replace(tzinfo=UTC), j["metadata"]["name"])

            for job in sorted(done, key=started)[: max(0, len(done) - int(limit))]:
                if self._delete_job(job["metadata"]["name"]):
                    active[:] = [r for r in active if r.get("uid") != job["metadata"]["uid"]]

    def _run(
        self, cronjob: dict[str, Any], now: datetime, status: dict[str, Any], active: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        meta, spec = cronjob["metadata"], cronjob["spec"]
        name = meta["name"]
        scheduled = self._next_schedule_time(cronjob, now, status)
        if scheduled is None:
            return active
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None and scheduled + timedelta(seconds=int(deadline)) < now:
            self.warnings.append((name, "MissSchedule", f"Missed scheduled time to start a job: {scheduled}"))
            return active
        job_name = f"{name}-{int(scheduled.timestamp()) // 60}"
        if (
            any(r.get("name") == job_name for r in active)
            or parse_time(status.get("lastScheduleTime")) == scheduled
        ):
            return active
        policy = spec.get("concurrencyPolicy") or "Allow"
        if policy == "Forbid" and active:
            self.events.append(
                (
                    name,
                    "JobAlreadyActive",
                    "Not starting job because prior execution is running and concurrency policy is Forbid",
                )
            )
            return active
        if policy == "Replace":
            for ref in list(active):
                if not self._delete_job(ref["name"]):
                    return active
                active.remove(ref)
        template = spec["jobTemplate"]
        tmeta = template.get("metadata") or {}
        zone = ZoneInfo(spec.get("timeZone") or "UTC")
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": job_name,
                "namespace": self.namespace,
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": {
                    **(tmeta.get("annotations") or {}),
                    SCHEDULED_ANNOTATION: scheduled.astimezone(zone).isoformat(),
                },
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "CronJob",
                        "name": name,
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template["spec"],
        }
        code, created = self.emulator.answer("POST", self._jobs, job)
        if code == 409:
            return active  # made by another sync, which recorded it
        assert code == 201, (code, created)
        ref = {
            "kind": "Job",
            "namespace": self.namespace,
            "name": job_name,
            "uid": created["metadata"]["uid"],
            "apiVersion": "batch/v1",
            "resourceVersion": created["metadata"]["resourceVersion"],
        }
        status["lastScheduleTime"] = k8s_time(scheduled)
        return [*active, ref]

    def _next_schedule_time(
        self, cronjob: dict[str, Any], now: datetime, status: dict[str, Any]
    ) -> datetime | None:
        """mostRecentScheduleTime (with the starting deadline) and nextScheduleTime."""
        spec = cronjob["spec"]
        earliest = parse_time(status.get("lastScheduleTime")) or parse_time(
            cronjob["metadata"]["creationTimestamp"]
        )
        assert earliest is not None
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None:
            earliest = max(earliest, now - timedelta(seconds=int(deadline)))
        most_recent = None
        missed = 0
        for t in times(spec["schedule"], spec.get("timeZone") or "", earliest):
            if t > now:
                break
            most_recent = t
            missed += 1
        if missed > TOO_MANY_MISSED:
            # The controller (v2, cronjob/utils.go nextScheduleTime) warns and still starts the
            # most recent time; the docs' older wording says it starts none.
            self.warnings.append(
                (
                    cronjob["metadata"]["name"],
                    "TooManyMissedTimes",
                    "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check"
                    " clock skew",
                )
            )
        return most_recent
