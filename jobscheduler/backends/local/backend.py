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
import contextlib
import json
import os
import pathlib
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, BinaryIO, Final

from jobscheduler.backends.local._store import JobRow, Store, now
from jobscheduler.core.errors import (
    AlreadyExists,
    BackendError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from jobscheduler.core.index import JobIndex
from jobscheduler.core.manifests import (
    ADMISSION_ANNOTATION,
    ADMISSION_STATES_BY_PHASE,
    ADMITTED_AT_ANNOTATION,
    FAILED_AT_ANNOTATION,
    FAILURE_MESSAGE_ANNOTATION,
    FAILURE_REASON_ANNOTATION,
    JOB_NAME_ANNOTATION,
    JOB_TYPE_ANNOTATION,
    format_precise_time,
    held_message,
    held_phase,
    record_fields,
)
from jobscheduler.core.model import JobCondition, JobPhase, JobRecord, LogLine
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.backends.local")

#: Host variables a local job inherits (a pod inherits none; these make the same commands run here).
_INHERITED_ENV: Final = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "TZ", "SYSTEMROOT")
_LAST_LINE_CHARS: Final = 300
_FOLLOW_POLL_SECONDS: Final = 0.2
#: Set in every local job's environment: how a restarted service recognises its leftover processes.
MARKER_ENV: Final = "JOBSCHEDULER_JOB_ID"
#: The TTL sweeper sleeps until the next expiry, but at most this long: the event loop's clock
#: stands still while a laptop is suspended, the wall clock the expiries are in does not.
_SWEEP_MAX_SLEEP_SECONDS: Final = 60.0
_TERMINAL: Final = frozenset({JobPhase.SUCCEEDED.value, JobPhase.FAILED.value, JobPhase.CANCELLED.value})


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
    ) -> None:
        self.data_dir = data_dir
        self.namespace = namespace
        self.max_parallel = max_parallel
        self.kill_grace_seconds = kill_grace_seconds
        self.backoff_seconds = backoff_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self._clock = clock
        self._store = Store(data_dir / "jobscheduler.db")
        self._queue: collections.deque[str] = collections.deque()
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._cancel: dict[str, asyncio.Event] = {}
        self._closing = False
        self._index: JobIndex | None = None
        #: Finished jobs with ttlSecondsAfterFinished: when each is to be deleted.
        self._expiry: dict[str, datetime] = {}
        self._sweep_wakeup = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, data_dir: pathlib.Path, namespace: str, **options: Any) -> LocalBackend:
        """Open the store and settle what a previous run left behind (see ``start``)."""
        backend = cls(data_dir, namespace, **options)
        backend._recover()
        return backend

    # --- the port -------------------------------------------------------------------------

    async def start(self, index: JobIndex) -> None:
        """Delete the finished jobs whose TTL ran out while the service was down, load every other
        job into the index (it is synced at once), resume the queue and start the TTL sweeper."""
        for row in self._store.all():
            self._track_expiry(row)
        self._sweep()  # before the index exists: these jobs are never reported
        self._index = index
        index.replace_all(self._record(row) for row in self._store.all())
        index.mark_synced()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())
        self._dispatch()

    async def create(self, manifest: Mapping[str, Any]) -> JobRecord:
        job_id = str(manifest["metadata"]["name"])
        _warn_about_pod_failure_policy(job_id, manifest)
        if not self._store.insert_job(job_id, self.namespace, manifest, self._clock()):
            raise AlreadyExists(f"job {job_id!r} already exists")
        if (manifest.get("spec") or {}).get("suspend"):
            # Held, as the Job controller leaves a suspended Job: it runs once admitted.
            annotations = (manifest.get("metadata") or {}).get("annotations") or {}
            phase = held_phase(annotations) or JobPhase.SCHEDULED
            self._update(job_id, phase=phase.value, message=held_message(phase, record_fields(annotations)))
            return self._record(self._get_row(job_id))
        return self._enqueue(job_id)

    async def admit(self, job_id: str, *, at: datetime) -> JobRecord:
        self._annotate_held(job_id, {ADMITTED_AT_ANNOTATION: format_precise_time(at)})
        self._update(job_id, phase=JobPhase.PENDING.value)
        return self._enqueue(job_id)

    async def hold(self, job_id: str, phase: JobPhase) -> JobRecord:
        annotations = self._annotate_held(job_id, {ADMISSION_ANNOTATION: ADMISSION_STATES_BY_PHASE[phase]})
        self._update(job_id, phase=phase.value, message=held_message(phase, record_fields(annotations)))
        return self._record(self._get_row(job_id))

    async def fail(self, job_id: str, *, reason: str, message: str, at: datetime) -> JobRecord:
        self._annotate_held(
            job_id,
            {
                FAILURE_REASON_ANNOTATION: reason,
                FAILURE_MESSAGE_ANNOTATION: message,
                FAILED_AT_ANNOTATION: format_precise_time(at),
            },
        )
        self._finish(job_id, JobPhase.FAILED, reason, message)
        return self._record(self._get_row(job_id))

    def _annotate_held(self, job_id: str, annotations: Mapping[str, str]) -> dict[str, Any]:
        """Merge ``annotations`` into a held job's stored manifest (as a patch of the Job would);
        the result. FailedPrecondition if the job is no longer held."""
        row = self._get_row(job_id)
        if not JobPhase(row.phase).is_waiting:
            raise FailedPrecondition(f"job {job_id} is no longer held ({row.phase})")
        manifest = dict(row.manifest)
        meta = dict(manifest.get("metadata") or {})
        merged = {**(meta.get("annotations") or {}), **annotations}
        manifest["metadata"] = {**meta, "annotations": merged}
        self._store.update_job(job_id, manifest=json.dumps(manifest))
        return merged

    def _enqueue(self, job_id: str) -> JobRecord:
        self._queue.append(job_id)
        running = len(self._runners)
        if running >= self.max_parallel:
            self._update(
                job_id, message=f"waiting for a free slot ({running} of {self.max_parallel} running)"
            )
        else:
            self._update(job_id, message="Job created; starting its process")
        self._dispatch()
        return self._record(self._get_row(job_id))

    async def get(self, job_id: str) -> JobRecord:
        return self._record(self._get_row(job_id))

    async def manifest(self, job_id: str) -> dict[str, Any]:
        return dict(self._get_row(job_id).manifest)

    async def list(self) -> list[JobRecord]:
        return [self._record(row) for row in self._store.all()]

    async def cancel(self, job_id: str, *, reason: str, at: datetime) -> JobRecord:
        row = self._get_row(job_id)
        self._update(
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
        return self._record(self._get_row(job_id))

    async def ping(self) -> None:
        try:
            self._store.all()[:0]
        except Exception as exc:  # sqlite3 errors and a closed store alike
            raise BackendError(f"local state at {self.data_dir} is unusable: {exc}") from exc

    async def close(self) -> None:
        """Stop running jobs (their process groups); they are reported ServiceRestarted after a restart."""
        self._closing = True
        self._queue.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        runners = list(self._runners.values())
        for task in runners:
            task.cancel()
        if runners:
            await asyncio.gather(*runners, return_exceptions=True)
        self._store.close()

    # --- running --------------------------------------------------------------------------

    def _update(self, job_id: str, **fields: Any) -> None:
        """Write to the store, then publish the new record (the store is the truth, the index a view)."""
        self._store.update_job(job_id, **fields)
        self._publish(job_id)
        if "finished_at" in fields and (row := self._store.get(job_id)) is not None:
            self._track_expiry(row)

    def _publish(self, job_id: str) -> None:
        if self._index is not None and (row := self._store.get(job_id)) is not None:
            self._index.apply(self._record(row))

    def _get_row(self, job_id: str) -> JobRow:
        row = self._store.get(job_id)
        if row is None:
            raise NotFound(f"job {job_id!r} not found in namespace {self.namespace!r}")
        return row

    def _dispatch(self) -> None:
        while self._queue and len(self._runners) < self.max_parallel and not self._closing:
            job_id = self._queue.popleft()
            self._cancel[job_id] = asyncio.Event()
            self._runners[job_id] = asyncio.get_running_loop().create_task(self._run(job_id))

    async def _run(self, job_id: str) -> None:
        try:
            await self._run_attempts(job_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an OS failure: the job fails, the service goes on
            log.exception("local job failed to run", job_id=job_id)
            self._finish(job_id, JobPhase.FAILED, "StartError", f"could not run the job: {exc}")
        finally:
            self._runners.pop(job_id, None)
            self._cancel.pop(job_id, None)
            if job_id in self._expiry:
                self._sweep_wakeup.set()  # the sweeper skipped it while its processes were exiting
            if not self._closing:
                self._dispatch()

    async def _run_attempts(self, job_id: str) -> None:
        row = self._get_row(job_id)
        if row.phase != JobPhase.PENDING.value:
            return  # cancelled while queued
        spec = row.manifest.get("spec") or {}
        pod = (spec.get("template") or {}).get("spec") or {}
        container = (pod.get("containers") or [{}])[0]
        argv = [*container.get("command", []), *container.get("args", [])]
        if not argv:
            self._finish(job_id, JobPhase.FAILED, "StartError", "the container has no command to run locally")
            return
        if argv[0] == "jobscheduler":  # our own image's entry point: the same program, this interpreter
            argv = [sys.executable, "-m", "jobscheduler", *argv[1:]]
        workdir = self.data_dir / "jobs" / job_id
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
        env.update(
            {"HOME": str(workdir), "TMPDIR": str(workdir / "tmp"), "HOSTNAME": job_id, MARKER_ENV: job_id}
        )
        env.update({e["name"]: str(e.get("value", "")) for e in container.get("env", []) if "name" in e})
        backoff_limit = int(spec.get("backoffLimit", 6))
        deadline = spec.get("activeDeadlineSeconds")
        loop = asyncio.get_running_loop()
        deadline_at = loop.time() + float(deadline) if deadline else None
        started = self._clock()
        self._update(job_id, phase=JobPhase.RUNNING.value, started_at=started, message="process running")
        log.info(
            "local job started",
            job_id=job_id,
            argv=argv,
            image=container.get("image"),
            note="image not pulled: the local backend runs the container's command on this machine",
        )
        cancel = self._cancel[job_id]
        failed = 0
        number = 0
        while True:
            number += 1
            log_path = workdir / f"attempt-{number}.log"
            with _open_log(log_path) as log_file:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=workdir,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,  # its own process group: cancel kills all of it
                )
            self._store.start_attempt(job_id, number, proc.pid, self._clock(), str(log_path))
            self._update(job_id, message=f"attempt {number} running (pid {proc.pid})")
            try:
                outcome = await self._wait(proc, cancel, deadline_at)
            finally:
                if proc.returncode is None:  # the service is stopping: no process outlives it
                    await self._kill_group(proc, grace=min(self.kill_grace_seconds, 2.0))
            code = proc.returncode
            reason = {"cancelled": "Cancelled", "deadline": "DeadlineExceeded"}.get(outcome, "")
            rule = None
            if outcome == "exited" and code is not None and code != 0:
                rule = _match_pod_failure_policy(spec, str(container.get("name", "")), code)
            self._store.finish_attempt(
                job_id,
                number,
                self._clock(),
                code,
                reason or ("" if code == 0 else "Error"),
                ignored=rule is not None and rule.action == "Ignore",
            )
            last = _last_line(log_path)
            if outcome == "cancelled":
                self._update(job_id, message=f"Job cancelled: {self._get_row(job_id).cancel_reason}")
                return
            if outcome == "deadline":
                self._finish(
                    job_id,
                    JobPhase.FAILED,
                    "DeadlineExceeded",
                    f"Job was active longer than specified deadline ({deadline}s); attempt {number} killed",
                )
                return
            if code == 0:
                self._finish(
                    job_id, JobPhase.SUCCEEDED, "Completed", f"Job completed after {number} attempt(s)"
                )
                return
            detail = f"attempt {number} exited with code {code}" + (f": {last}" if last else "")
            if rule is not None and rule.action == "FailJob":  # the Job controller's condition message
                self._finish(
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
                self._finish(
                    job_id,
                    JobPhase.FAILED,
                    "BackoffLimitExceeded",
                    f"Job has reached the specified backoff limit ({backoff_limit}); {detail}",
                )
                return
            delay = min(self.backoff_seconds * 2 ** max(failed - 1, 0), self.backoff_max_seconds)
            self._update(job_id, message=f"{detail}; retrying in {delay:g}s")
            timeout = delay if deadline_at is None else max(0.0, min(delay, deadline_at - loop.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cancel.wait(), timeout)
            if cancel.is_set():
                return
            if deadline_at is not None and loop.time() >= deadline_at:
                self._finish(
                    job_id,
                    JobPhase.FAILED,
                    "DeadlineExceeded",
                    f"Job was active longer than specified deadline ({deadline}s); {detail}",
                )
                return

    async def _wait(
        self, proc: asyncio.subprocess.Process, cancel: asyncio.Event, deadline_at: float | None
    ) -> str:
        """ "exited", "cancelled" or "deadline"; in the latter two the process group is killed."""
        waiter = asyncio.ensure_future(proc.wait())
        canceller = asyncio.ensure_future(cancel.wait())
        try:
            timeout = (
                None if deadline_at is None else max(0.0, deadline_at - asyncio.get_running_loop().time())
            )
            done, _ = await asyncio.wait(
                {waiter, canceller}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            canceller.cancel()
        if waiter in done:
            _kill_stragglers(proc.pid)
            return "exited"
        waiter.cancel()
        await self._kill_group(proc, grace=self.kill_grace_seconds)
        return "cancelled" if cancel.is_set() else "deadline"

    async def _kill_group(self, proc: asyncio.subprocess.Process, *, grace: float) -> None:
        """SIGTERM to the process group, SIGKILL to whatever is left after ``grace`` seconds."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), grace)
        _kill_stragglers(proc.pid)
        await proc.wait()

    def _finish(self, job_id: str, phase: JobPhase, reason: str, message: str) -> None:
        row = self._store.get(job_id)
        if row is None or row.phase == JobPhase.CANCELLED.value:
            return
        self._update(job_id, phase=phase.value, reason=reason, message=message, finished_at=self._clock())
        log.info("local job finished", job_id=job_id, phase=phase.value, reason=reason)

    # --- ttlSecondsAfterFinished --------------------------------------------------------------

    def _track_expiry(self, row: JobRow) -> None:
        """Note when a finished job with ``ttlSecondsAfterFinished`` is due (from its stored finish time)."""
        ttl = _ttl_seconds(row.manifest)
        if ttl is None or row.phase not in _TERMINAL or row.finished_at is None:
            return
        self._expiry[row.job_id] = row.finished_at + timedelta(seconds=ttl)
        self._sweep_wakeup.set()

    def _sweep(self) -> datetime | None:
        """Delete every job that is due; the time the next one is due, if any.

        A job whose processes are still exiting (cancelled during its kill grace) waits for them:
        its runner wakes the sweeper when it ends (as Kubernetes sets the Failed condition, which
        starts the TTL, only once the pods have terminated).
        """
        current = self._clock()
        upcoming: datetime | None = None
        for job_id, due in sorted(self._expiry.items(), key=lambda item: item[1]):
            if job_id in self._runners:
                continue
            if due > current:
                upcoming = due if upcoming is None else min(upcoming, due)
                continue
            del self._expiry[job_id]
            try:
                self._delete(job_id)
            except Exception:  # e.g. the store failed: keep sweeping; the next start tries again
                log.exception("could not delete an expired job", job_id=job_id)
        return upcoming

    async def _sweep_forever(self) -> None:
        """The TTL-after-finished controller: wake at the next expiry (or when a job finishes)."""
        while True:
            self._sweep_wakeup.clear()
            upcoming = self._sweep()
            timeout = None
            if upcoming is not None:
                timeout = min(max(0.0, (upcoming - self._clock()).total_seconds()), _SWEEP_MAX_SLEEP_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sweep_wakeup.wait(), timeout)

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
            ttl_seconds_after_finished=_ttl_seconds(row.manifest),
        )

    def _recover(self) -> None:
        """Settle what a previous run left: kill its leftover processes (also of jobs cancelled during
        their kill grace), fail the jobs that were running, and queue the ones still waiting."""
        for row in self._store.all():
            for attempt in (a for a in row.attempts if a.finished_at is None):
                if attempt.pid is not None and _belongs_to(attempt.pid, row.job_id):
                    _kill_stragglers(attempt.pid)
                reason = "Cancelled" if row.phase == JobPhase.CANCELLED.value else "ServiceRestarted"
                self._store.finish_attempt(row.job_id, attempt.number, self._clock(), None, reason)
            if row.phase == JobPhase.RUNNING.value:
                self._store.update_job(
                    row.job_id,
                    phase=JobPhase.FAILED.value,
                    reason="ServiceRestarted",
                    message="the service stopped while the job was running; it was not resumed",
                    finished_at=self._clock(),
                )
                log.warning("job marked failed after restart", job_id=row.job_id, reason="ServiceRestarted")
            elif row.phase == JobPhase.PENDING.value:
                self._queue.append(row.job_id)

    # --- records --------------------------------------------------------------------------

    def _record(self, row: JobRow) -> JobRecord:
        meta = row.manifest.get("metadata") or {}
        spec = row.manifest.get("spec") or {}
        annotations = meta.get("annotations") or {}
        phase = JobPhase(row.phase)
        failed = sum(
            1 for a in row.attempts if a.finished_at is not None and a.exit_code != 0 and not a.ignored
        )
        succeeded = sum(1 for a in row.attempts if a.exit_code == 0)
        active = sum(1 for a in row.attempts if a.finished_at is None)
        finished = [a for a in row.attempts if a.finished_at is not None]
        last = finished[-1] if finished else None
        conditions: tuple[JobCondition, ...] = ()
        if phase is JobPhase.SUCCEEDED:
            conditions = (JobCondition("Complete", "True", row.reason, row.message, row.finished_at),)
        elif phase in (JobPhase.FAILED, JobPhase.CANCELLED):
            conditions = (JobCondition("Failed", "True", row.reason, row.message, row.finished_at),)
        return JobRecord(
            job_id=row.job_id,
            name=str(annotations.get(JOB_NAME_ANNOTATION, "")),
            type=str(annotations.get(JOB_TYPE_ANNOTATION, "")),
            namespace=row.namespace,
            phase=phase,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            message=row.message,
            reason=row.reason,
            labels=dict(meta.get("labels") or {}),
            conditions=conditions,
            active=active,
            succeeded=succeeded,
            failed=failed,
            backoff_limit=int(spec.get("backoffLimit", 6)),
            pod_names=tuple(f"{row.job_id}-{a.number}" for a in row.attempts),
            termination_reason=last.reason if last is not None else "",
            exit_code=last.exit_code if last is not None else None,
            **record_fields(annotations),
        )

    async def logs(
        self, record: JobRecord, *, follow: bool, tail_lines: int, attempt: int
    ) -> AsyncIterator[LogLine]:
        row = self._get_row(record.job_id)
        if not row.attempts:
            raise FailedPrecondition(f"job {record.job_id} has not started a process yet ({row.message})")
        if attempt > len(row.attempts):
            raise InvalidArgument.field("attempt", f"job {record.job_id} has {len(row.attempts)} attempt(s)")
        chosen = row.attempts[attempt - 1] if attempt else row.attempts[-1]
        pod_name = f"{record.job_id}-{chosen.number}"
        path = pathlib.Path(chosen.log_path)
        lines, offset = _read_lines(path, 0)
        if tail_lines:
            lines = lines[-tail_lines:]
        for line in lines:
            yield LogLine(line, chosen.number, pod_name)
        while follow:
            current = self._store.get(record.job_id)
            running = current is not None and any(
                a.number == chosen.number and a.finished_at is None for a in current.attempts
            )
            lines, offset = _read_lines(path, offset)
            for line in lines:
                yield LogLine(line, chosen.number, pod_name)
            if not running:
                return
            await asyncio.sleep(_FOLLOW_POLL_SECONDS)


def _ttl_seconds(manifest: Mapping[str, Any]) -> int | None:
    """``spec.ttlSecondsAfterFinished``: None (keep forever) when absent or not a count of seconds."""
    value = (manifest.get("spec") or {}).get("ttlSecondsAfterFinished")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


@dataclass(frozen=True, slots=True)
class _RuleMatch:
    index: int
    #: FailJob, Ignore or Count.
    action: str
    #: As a container runtime reports it.
    exit_code: int


def _match_pod_failure_policy(
    spec: Mapping[str, Any], container_name: str, returncode: int
) -> _RuleMatch | None:
    """The first ``podFailurePolicy`` rule matching a failed attempt; None if no rule does.

    As the Job controller: rules in order; ``onExitCodes`` matches a non-zero exit code of the named
    container (any container without ``containerName``) with ``In``/``NotIn``; a matching rule
    whose action this backend does not know (``FailIndex`` needs an indexed Job) is passed over;
    ``onPodConditions`` rules (e.g. DisruptionTarget) never match: a local process has no pod conditions.
    A process killed by signal N has exit code 128 + N, as a container's.
    """
    exit_code = returncode if returncode >= 0 else 128 - returncode
    policy = spec.get("podFailurePolicy") or {}
    for index, rule in enumerate(policy.get("rules") or []):
        requirement = rule.get("onExitCodes")
        if not isinstance(requirement, Mapping) or exit_code == 0:
            continue
        name = requirement.get("containerName")
        if name is not None and name != container_name:
            continue
        values = requirement.get("values") or []
        operator = requirement.get("operator")
        if not (
            (operator == "In" and exit_code in values) or (operator == "NotIn" and exit_code not in values)
        ):
            continue
        action = rule.get("action")
        if action in ("FailJob", "Ignore", "Count"):
            return _RuleMatch(index, str(action), exit_code)
    return None


def _warn_about_pod_failure_policy(job_id: str, manifest: Mapping[str, Any]) -> None:
    """Log the ``onExitCodes`` rules that name no container of the Job: they can never match (and the
    Kubernetes API server would reject the Job)."""
    spec = manifest.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    names = {c.get("name") for c in pod.get("containers") or []}
    for index, rule in enumerate((spec.get("podFailurePolicy") or {}).get("rules") or []):
        name = (rule.get("onExitCodes") or {}).get("containerName")
        if name is not None and name not in names:
            log.warning(
                "podFailurePolicy rule names no container of the job; it never matches",
                job_id=job_id,
                rule=index,
                container_name=name,
                containers=sorted(str(n) for n in names),
            )


def _read_lines(path: pathlib.Path, offset: int) -> tuple[list[str], int]:
    """Complete lines from ``offset`` on, and the offset after the last complete line."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    text = data[:end].decode("utf-8", "replace")
    return text.splitlines(), offset + end


def _open_log(path: pathlib.Path) -> BinaryIO:
    """The attempt's log file, the child's stdout and stderr (a local file: opening it never blocks long)."""
    return open(path, "wb")


def _kill_stragglers(pgid: int) -> None:
    """SIGKILL what is left of a process group (children can outlive their leader)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _belongs_to(pid: int, job_id: str) -> bool:
    """Whether ``pid`` is still one of this job's processes (pids get reused)."""
    try:
        environ = pathlib.Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{MARKER_ENV}={job_id}".encode() in environ.split(b"\0")


def _last_line(path: pathlib.Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:_LAST_LINE_CHARS] if lines else ""
