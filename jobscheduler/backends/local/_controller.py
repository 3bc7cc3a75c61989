"""The Job controller's part of the local backend: a job's attempts, the backoff between them,
``backoffLimit``, ``podFailurePolicy`` (its ``onExitCodes`` rules) and ``activeDeadlineSeconds``;
Jobs of several pods (parallelism, completions, Indexed) run through :mod:`._pods`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from jobscheduler.backends.local._pods import pod_plan, run_pods
from jobscheduler.backends.local._policy import match_pod_failure_policy
from jobscheduler.backends.local._store import JobRow, Store
from jobscheduler.backends.local._supervisor import (
    Refusal,
    Supervisor,
    last_line,
    prepare,
    process_start,
)
from jobscheduler.core.errors import Unavailable
from jobscheduler.core.model import JobPhase
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.backends.local")


class Jobs(Protocol):
    """The backend's writes of a job's state (store first, then the index sees it)."""

    def get_row(self, job_id: str) -> JobRow: ...

    def update(self, job_id: str, **fields: Any) -> None: ...

    def note(self, job_id: str, message: str) -> None: ...

    def finish(
        self, job_id: str, phase: JobPhase, reason: str, message: str, *, at: datetime | None = None
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Controller:
    """Runs one job to its end: attempts until one succeeds, the limits are hit or it is cancelled."""

    data_dir: pathlib.Path
    store: Store
    jobs: Jobs
    supervisor: Supervisor
    clock: Callable[[], datetime]
    backoff_seconds: float
    backoff_max_seconds: float
    #: A write that failed for want of space is retried after 0.1 s, doubling up to this.
    write_retry_max_seconds: float = 5.0
    #: Where secretKeyRef env is read from (None: data_dir/secrets).
    secrets_dir: pathlib.Path | None = None

    async def durably(self, job_id: str, what: str, write: Callable[[], None]) -> None:
        """``write`` once it succeeds: a transition is never dropped because the disk is full
        (``Unavailable``); it is retried with a growing delay until space returns."""
        delay = 0.1
        while True:
            try:
                write()
                return
            except Unavailable as exc:
                log.warning(
                    "write failed; retrying", job_id=job_id, write=what, error=exc.message, retry_in=delay
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.write_retry_max_seconds)

    async def finish(self, job_id: str, phase: JobPhase, reason: str, message: str) -> None:
        """The job's final transition (at the time it happened, however long the write takes)."""
        at = self.clock()
        await self.durably(job_id, "finish", lambda: self.jobs.finish(job_id, phase, reason, message, at=at))

    async def run(self, job_id: str, cancel: asyncio.Event) -> None:
        jobs = self.jobs
        row = jobs.get_row(job_id)
        if row.phase != JobPhase.PENDING.value:
            return  # cancelled while queued
        spec = row.manifest.get("spec") or {}
        pod = (spec.get("template") or {}).get("spec") or {}
        container = (pod.get("containers") or [{}])[0]
        launch = prepare(
            self.data_dir, job_id, container, secrets_dir=self.secrets_dir, namespace=row.namespace
        )
        if isinstance(launch, Refusal):
            await self.finish(job_id, JobPhase.FAILED, launch.reason, launch.message)
            return
        backoff_limit = int(spec.get("backoffLimit", 6))
        deadline = spec.get("activeDeadlineSeconds")
        loop = asyncio.get_running_loop()
        deadline_at = loop.time() + float(deadline) if deadline else None
        started = self.clock()
        await self.durably(
            job_id,
            "start",
            lambda: jobs.update(
                job_id, phase=JobPhase.RUNNING.value, started_at=started, message="process running"
            ),
        )
        log.info(
            "local job started",
            job_id=job_id,
            argv=list(launch.argv),
            image=container.get("image"),
            note="image not pulled: the local backend runs the container's command on this machine",
        )
        plan = pod_plan(spec)
        if plan is not None:
            await run_pods(self, job_id, row.namespace, spec, container, launch, plan, cancel, deadline_at)
            return
        failed = 0
        number = 0
        while True:
            number += 1
            log_path = launch.workdir / f"attempt-{number}.log"
            proc = await self.supervisor.spawn(launch, log_path)
            attempt = functools.partial(
                self.store.start_attempt,
                job_id,
                number,
                proc.pid,
                self.clock(),
                str(log_path),
                pgid=proc.pid,  # the leader of a new session: its pid is the group's id
                process_start=process_start(proc.pid),
            )
            await self.durably(job_id, "start attempt", attempt)
            jobs.note(job_id, f"attempt {number} running (pid {proc.pid})")
            try:
                outcome = await self.supervisor.wait(proc, cancel, deadline_at)
            finally:
                if proc.returncode is None:  # the service is stopping: no process outlives it
                    await self.supervisor.kill_group(proc, grace=min(self.supervisor.kill_grace_seconds, 2.0))
            code = proc.returncode
            reason = {"cancelled": "Cancelled", "deadline": "DeadlineExceeded"}.get(outcome, "")
            rule = None
            if outcome == "exited" and code is not None and code != 0:
                rule = match_pod_failure_policy(spec, str(container.get("name", "")), code)
            ended = functools.partial(
                self.store.finish_attempt,
                job_id,
                number,
                self.clock(),
                code,
                reason or ("" if code == 0 else "Error"),
                ignored=rule is not None and rule.action == "Ignore",
            )
            await self.durably(job_id, "finish attempt", ended)
            last = last_line(log_path)
            if outcome == "cancelled":
                jobs.note(job_id, f"Job cancelled: {jobs.get_row(job_id).cancel_reason}")
                return
            if outcome == "deadline":
                await self.finish(
                    job_id,
                    JobPhase.FAILED,
                    "DeadlineExceeded",
                    f"Job was active longer than specified deadline ({deadline}s); attempt {number} killed",
                )
                return
            if code == 0:
                await self.finish(
                    job_id, JobPhase.SUCCEEDED, "Completed", f"Job completed after {number} attempt(s)"
                )
                return
            detail = f"attempt {number} exited with code {code}" + (f": {last}" if last else "")
            if rule is not None and rule.action == "FailJob":  # the Job controller's condition message
                await self.finish(
                    job_id,
                    JobPhase.FAILED,
                    "PodFailurePolicy",
                    f"Container {container.get('name', '')} for pod {row.namespace}/{job_id}-{number} failed"
                    f" with exit code {rule.exit_code} matching FailJob rule at index {rule.index}",
                )
                return
            if rule is not None and rule.action == "Ignore":
                detail += f" (not counted: podFailurePolicy rule at index {rule.index} ignores it)"
            else:
                failed += 1
            if failed > backoff_limit:
                await self.finish(
                    job_id,
                    JobPhase.FAILED,
                    "BackoffLimitExceeded",
                    f"Job has reached the specified backoff limit ({backoff_limit}); {detail}",
                )
                return
            delay = min(self.backoff_seconds * 2 ** max(failed - 1, 0), self.backoff_max_seconds)
            jobs.note(job_id, f"{detail}; retrying in {delay:g}s")
            timeout = delay if deadline_at is None else max(0.0, min(delay, deadline_at - loop.time()))
            with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can swallow a cancel
                async with asyncio.timeout(timeout):
                    await cancel.wait()
            if cancel.is_set():
                return
            if deadline_at is not None and loop.time() >= deadline_at:
                await self.finish(
                    job_id,
                    JobPhase.FAILED,
                    "DeadlineExceeded",
                    f"Job was active longer than specified deadline ({deadline}s); {detail}",
                )
                return
