"""The local backend: runs the rendered Job's container command as local processes.

For a machine with no cluster (``jobscheduler serve`` on a laptop). It runs
exactly what the handler rendered — the container's command, args and env —
in a working directory of its own, without pulling the image. It honours
``activeDeadlineSeconds`` (kill, FAILED/DeadlineExceeded), ``backoffLimit``
(re-run failed attempts with a growing delay), ``podFailurePolicy`` (its
``onExitCodes`` rules, as the Job controller evaluates them), cancellation
(SIGTERM to the process group, SIGKILL after a grace period) and
``ttlSecondsAfterFinished`` (a finished job is deleted, as by the
TTL-after-finished controller). At most ``max_parallel`` jobs run at once;
the rest wait in FIFO order. State lives in SQLite, so a restart keeps
history; jobs that were running when the service died are FAILED with reason
ServiceRestarted.
"""

from __future__ import annotations

import asyncio
import collections
import json
import pathlib
import shutil
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import Any

from jobscheduler import tracing
from jobscheduler.backends.local._controller import Controller
from jobscheduler.backends.local._lock import DataDirLock
from jobscheduler.backends.local._logs import attempt_logs
from jobscheduler.backends.local._policy import warn_about_pod_failure_policy
from jobscheduler.backends.local._records import job_record
from jobscheduler.backends.local._recovery import recover
from jobscheduler.backends.local._schedules import LocalScheduleStore
from jobscheduler.backends.local._store import JobRow, Store, now
from jobscheduler.backends.local._supervisor import Supervisor, runs_callers_command
from jobscheduler.backends.local._templates import LocalTemplates
from jobscheduler.backends.local._ttl import TtlSweeper, ttl_seconds
from jobscheduler.core.annotations import held_message, held_phase, record_fields
from jobscheduler.core.errors import (
    AlreadyExists,
    BackendError,
    FailedPrecondition,
    JobSchedulerError,
    NotFound,
    Unavailable,
)
from jobscheduler.core.index import JobIndex
from jobscheduler.core.manifests import (
    ADMISSION_ANNOTATION,
    ADMISSION_STATES_BY_PHASE,
    ADMITTED_AT_ANNOTATION,
    FAILED_AT_ANNOTATION,
    FAILURE_MESSAGE_ANNOTATION,
    FAILURE_REASON_ANNOTATION,
    format_precise_time,
)
from jobscheduler.core.model import JobPhase, JobRecord, LogLine
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.backends.local")


class LocalBackend:
    name = "local"

    def __init__(
        self,
        data_dir: pathlib.Path,
        namespace: str,
        *,
        max_parallel: int = 4,
        kill_grace_seconds: float = 10.0,
        backoff_seconds: float = 1.0,
        backoff_max_seconds: float = 60.0,
        clock: Callable[[], datetime] = now,
        write_retry_max_seconds: float = 5.0,
        secrets_dir: pathlib.Path | None = None,
        allow_commands: bool = True,
    ) -> None:
        self.data_dir = data_dir
        #: Whether container jobs (the caller's command) may run here (LOCAL_ALLOW_COMMANDS).
        self.allow_commands = allow_commands
        self.namespace = namespace
        self.max_parallel = max_parallel
        self.kill_grace_seconds = kill_grace_seconds
        self.backoff_seconds = backoff_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self._clock = clock
        #: Taken first: a second service on this DATA_DIR stops here, before recovery touches anything.
        self._lock = DataDirLock(data_dir)
        self._lock.acquire()
        try:
            self._store = Store(data_dir / "jobscheduler.db")
            self.schedules = LocalScheduleStore(data_dir / "jobscheduler.db")  # core.schedules' ScheduleStore
            self.templates = LocalTemplates(data_dir / "jobscheduler.db")  # core.templates' TemplateStore
        except BaseException:
            self._lock.release()
            raise
        self._queue: collections.deque[str] = collections.deque()
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._cancel: dict[str, asyncio.Event] = {}
        self._closing = False
        self._index: JobIndex | None = None
        self._supervisor = Supervisor(kill_grace_seconds=kill_grace_seconds)
        self._controller = Controller(
            data_dir=data_dir,
            store=self._store,
            jobs=self,
            supervisor=self._supervisor,
            clock=clock,
            backoff_seconds=backoff_seconds,
            backoff_max_seconds=backoff_max_seconds,
            write_retry_max_seconds=write_retry_max_seconds,
            secrets_dir=secrets_dir,
        )
        #: Finished jobs with ttlSecondsAfterFinished: when each is to be deleted.
        self._ttl = TtlSweeper(clock=clock, delete=self._delete, busy=lambda job_id: job_id in self._runners)

    @classmethod
    async def open(cls, data_dir: pathlib.Path, namespace: str, **options: Any) -> LocalBackend:
        """Open the store and settle what a previous run left behind (see ``start``)."""
        backend = cls(data_dir, namespace, **options)
        try:
            backend._queue.extend(recover(backend._store, backend._clock))
        except BaseException:
            backend._store.close()
            backend._lock.release()
            raise
        return backend

    # --- the port -------------------------------------------------------------------------

    async def start(self, index: JobIndex) -> None:
        """Delete the finished jobs whose TTL ran out while the service was down, load every other
        job into the index (it is synced at once), resume the queue and start the TTL sweeper."""
        for row in self._store.all():
            self._ttl.track(row)
        self._ttl.sweep()  # before the index exists: these jobs are never reported
        self._index = index
        index.replace_all(job_record(row) for row in self._store.all())
        index.mark_synced()
        self._ttl.start()
        self._dispatch()

    async def create(self, manifest: Mapping[str, Any]) -> JobRecord:
        job_id = str(manifest["metadata"]["name"])
        if not self.allow_commands and runs_callers_command(manifest):
            raise FailedPrecondition(
                "container jobs are off on the local backend: it would run the caller's command as a"
                " process of the service's own user, on this machine (LOCAL_ALLOW_COMMANDS, off by"
                " default unless AUTH_MODE=none); use the Kubernetes backend, or set"
                " LOCAL_ALLOW_COMMANDS=true if every caller may run commands here"
            )
        warn_about_pod_failure_policy(job_id, manifest)
        held = bool((manifest.get("spec") or {}).get("suspend"))
        if held:
            # Held, as the Job controller leaves a suspended Job: it runs once admitted.
            annotations = (manifest.get("metadata") or {}).get("annotations") or {}
            phase = held_phase(annotations) or JobPhase.SCHEDULED
            message = held_message(phase, record_fields(annotations))
        else:
            phase, message = JobPhase.PENDING, self._slot_message()
        # One write: a job is stored whole or not at all (Unavailable when the disk is full).
        if not self._store.insert_job(
            job_id, self.namespace, manifest, self._clock(), phase=phase.value, message=message
        ):
            raise AlreadyExists(f"job {job_id!r} already exists")
        self._publish(job_id)
        if not held:
            self._enqueue(job_id)
        return job_record(self.get_row(job_id))

    @tracing.traced_write("admission admit")
    async def admit(self, job_id: str, *, at: datetime) -> JobRecord:
        manifest, _ = self._annotate_held(job_id, {ADMITTED_AT_ANNOTATION: format_precise_time(at)})
        self.update(job_id, manifest=manifest, phase=JobPhase.PENDING.value, message=self._slot_message())
        self._enqueue(job_id)
        return job_record(self.get_row(job_id))

    @tracing.traced_write("admission hold")
    async def hold(self, job_id: str, phase: JobPhase) -> JobRecord:
        manifest, annotations = self._annotate_held(
            job_id, {ADMISSION_ANNOTATION: ADMISSION_STATES_BY_PHASE[phase]}
        )
        message = held_message(phase, record_fields(annotations))
        self.update(job_id, manifest=manifest, phase=phase.value, message=message)
        return job_record(self.get_row(job_id))

    @tracing.traced_write("admission fail")
    async def fail(self, job_id: str, *, reason: str, message: str, at: datetime) -> JobRecord:
        manifest, _ = self._annotate_held(
            job_id,
            {
                FAILURE_REASON_ANNOTATION: reason,
                FAILURE_MESSAGE_ANNOTATION: message,
                FAILED_AT_ANNOTATION: format_precise_time(at),
            },
        )
        self.finish(job_id, JobPhase.FAILED, reason, message, manifest=manifest)
        return job_record(self.get_row(job_id))

    def _annotate_held(self, job_id: str, annotations: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
        """A held job's stored manifest with ``annotations`` merged in (as a patch of the Job would),
        to be written with the change it goes with, and the merged annotations. FailedPrecondition
        if the job is no longer held."""
        row = self.get_row(job_id)
        if not JobPhase(row.phase).is_waiting:
            raise FailedPrecondition(f"job {job_id} is no longer held ({row.phase})")
        manifest = dict(row.manifest)
        meta = dict(manifest.get("metadata") or {})
        merged = {**(meta.get("annotations") or {}), **annotations}
        manifest["metadata"] = {**meta, "annotations": merged}
        tracing.link_job_trace(merged)
        return json.dumps(manifest), merged

    def _slot_message(self) -> str:
        running = len(self._runners)
        if running >= self.max_parallel:
            return f"waiting for a free slot ({running} of {self.max_parallel} running)"
        return "Job created; starting its process"

    def _enqueue(self, job_id: str) -> None:
        self._queue.append(job_id)
        self._dispatch()

    async def get(self, job_id: str) -> JobRecord:
        return job_record(self.get_row(job_id))

    async def manifest(self, job_id: str) -> dict[str, Any]:
        return dict(self.get_row(job_id).manifest)

    async def list(self) -> list[JobRecord]:
        return [job_record(row) for row in self._store.all()]

    async def cancel(self, job_id: str, *, reason: str, at: datetime) -> JobRecord:
        row = self.get_row(job_id)
        self.update(
            job_id,
            phase=JobPhase.CANCELLED.value,
            reason="Cancelled",
            message=f"Job cancelled: {reason}",
            cancelled_at=at,
            cancel_reason=reason,
            finished_at=at,
        )
        if row.phase == JobPhase.PENDING.value and job_id in self._queue:
            self._queue.remove(job_id)
        event = self._cancel.get(job_id)
        if event is not None:
            event.set()
        return job_record(self.get_row(job_id))

    @property
    def problem(self) -> str | None:
        """Why the local state cannot be written right now (the disk is full), or None."""
        return self._store.problem

    async def ping(self) -> None:
        """Unavailable while the state cannot be written (tried again with a small write each time)."""
        try:
            self._store.all()[:0]
            if self._store.problem is not None:
                self._store.probe()
        except JobSchedulerError:
            raise
        except Exception as exc:  # sqlite3 errors and a closed store alike
            raise BackendError(f"local state at {self.data_dir} is unusable: {exc}") from exc

    async def close(self) -> None:
        """Stop running jobs (their process groups); they are reported ServiceRestarted after a restart."""
        self._closing = True
        self._queue.clear()
        await self._ttl.stop()
        runners = list(self._runners.values())
        for task in runners:
            task.cancel()
        if runners:
            await asyncio.gather(*runners, return_exceptions=True)
        await self._supervisor.close()  # (a start under way when its runner was cancelled)
        self._store.close()
        self.schedules.close()
        self.templates.close()
        self._lock.release()

    # --- the state of jobs (the controller's Jobs) ------------------------------------------

    def update(self, job_id: str, **fields: Any) -> None:
        """Write to the store, then publish the new record (the store is the truth, the index a view)."""
        self._store.update_job(job_id, **fields)
        self._publish(job_id)
        if "finished_at" in fields and (row := self._store.get(job_id)) is not None:
            self._ttl.track(row)

    def _publish(self, job_id: str) -> None:
        if self._index is not None and (row := self._store.get(job_id)) is not None:
            self._index.apply(job_record(row))

    def get_row(self, job_id: str) -> JobRow:
        row = self._store.get(job_id)
        if row is None:
            raise NotFound(f"job {job_id!r} not found in namespace {self.namespace!r}")
        return row

    def note(self, job_id: str, message: str) -> None:
        """Update the job's message if the state can be written; a message is not worth waiting for."""
        try:
            self.update(job_id, message=message)
        except Unavailable as exc:
            log.warning("job message not stored", job_id=job_id, message=message, error=exc.message)

    def finish(
        self,
        job_id: str,
        phase: JobPhase,
        reason: str,
        message: str,
        *,
        at: datetime | None = None,
        **fields: Any,
    ) -> None:
        row = self._store.get(job_id)
        if row is None or row.phase == JobPhase.CANCELLED.value:
            return
        finished_at = at if at is not None else self._clock()
        self.update(
            job_id, phase=phase.value, reason=reason, message=message, finished_at=finished_at, **fields
        )
        log.info("local job finished", job_id=job_id, phase=phase.value, reason=reason)

    # --- running --------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while self._queue and len(self._runners) < self.max_parallel and not self._closing:
            job_id = self._queue.popleft()
            self._cancel[job_id] = asyncio.Event()
            self._runners[job_id] = asyncio.get_running_loop().create_task(self._run(job_id))

    async def _run(self, job_id: str) -> None:
        try:
            await self._controller.run(job_id, self._cancel[job_id])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an OS failure: the job fails, the service goes on
            log.exception("local job failed to run", job_id=job_id)
            await self._controller.finish(
                job_id, JobPhase.FAILED, "StartError", f"could not run the job: {exc}"
            )
        finally:
            self._runners.pop(job_id, None)
            self._cancel.pop(job_id, None)
            if job_id in self._ttl:
                self._ttl.wake()  # the sweeper skipped it while its processes were exiting
            if not self._closing:
                self._dispatch()

    def _delete(self, job_id: str) -> None:
        """Remove the job's attempt logs, working directory and rows; the index sees a deletion."""
        row = self._store.get(job_id)
        if row is None:
            return
        for attempt in row.attempts:
            try:
                pathlib.Path(attempt.log_path).unlink(missing_ok=True)
            except OSError as exc:
                log.warning(
                    "could not remove an attempt log", job_id=job_id, path=attempt.log_path, error=str(exc)
                )
        jobs_dir = self.data_dir / "jobs"
        workdir = jobs_dir / job_id
        if workdir.resolve().parent == jobs_dir.resolve():  # never outside DATA_DIR/jobs/
            shutil.rmtree(workdir, ignore_errors=True)
            if workdir.exists():
                log.warning("could not remove all of the job's directory", job_id=job_id, path=str(workdir))
        self._store.delete_job(job_id)
        if self._index is not None:
            self._index.remove(job_id)
        log.info(
            "finished job deleted",
            job_id=job_id,
            phase=row.phase,
            finished_at=row.finished_at.isoformat() if row.finished_at else None,
            ttl_seconds_after_finished=ttl_seconds(row.manifest),
        )

    # --- logs -----------------------------------------------------------------------------

    async def logs(
        self, record: JobRecord, *, follow: bool, tail_lines: int, attempt: int
    ) -> AsyncIterator[LogLine]:
        row = self.get_row(record.job_id)
        async for line in attempt_logs(self._store, row, follow, tail_lines, attempt):
            yield line
