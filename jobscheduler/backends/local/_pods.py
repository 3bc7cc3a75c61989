"""Jobs of several pods on the local backend: ``parallelism`` processes at once until
``completions`` succeeded; Indexed jobs give each its ``JOB_COMPLETION_INDEX`` and may retry per
index (``backoffLimitPerIndex``, ``FailIndex`` rules), as the Job controller does."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import pathlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from jobscheduler.backends.local._policy import match_pod_failure_policy
from jobscheduler.backends.local._records import FAIL_INDEX_REASON
from jobscheduler.backends.local._store import Store
from jobscheduler.backends.local._supervisor import Child, Launch, Supervisor, last_line, process_start
from jobscheduler.core.model import JobPhase, format_indexes

#: More completions than this in a manifest are read as this many (handlers allow far fewer).
MAX_COMPLETIONS: Final = 10_000
INDEX_ENV: Final = "JOB_COMPLETION_INDEX"


class Runner(Protocol):
    """What of the Controller the pods need (see _controller.Controller)."""

    @property
    def store(self) -> Store: ...
    @property
    def supervisor(self) -> Supervisor: ...
    @property
    def clock(self) -> Callable[[], datetime]: ...
    @property
    def backoff_seconds(self) -> float: ...
    @property
    def backoff_max_seconds(self) -> float: ...
    @property
    def jobs(self) -> Any: ...

    async def durably(self, job_id: str, what: str, write: Callable[[], None]) -> None: ...

    async def finish(self, job_id: str, phase: JobPhase, reason: str, message: str) -> None: ...


@dataclass(frozen=True, slots=True)
class PodPlan:
    parallelism: int
    completions: int
    indexed: bool
    #: backoffLimitPerIndex (None: not per index).
    per_index: int | None
    #: backoffLimit (None: unbounded, as with backoffLimitPerIndex and no backoffLimit).
    backoff_limit: int | None


def pod_plan(spec: Mapping[str, Any]) -> PodPlan | None:
    """How many pods the Job runs, or None for the one-pod Job (the controller's plain path)."""

    def number(key: str) -> int | None:
        value = spec.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    parallelism = max(1, min(number("parallelism") or 1, MAX_COMPLETIONS))
    completions = max(1, min(number("completions") or 1, MAX_COMPLETIONS))
    indexed = spec.get("completionMode") == "Indexed"
    if parallelism == 1 and completions == 1 and not indexed:
        return None
    per_index = number("backoffLimitPerIndex") if indexed else None
    limit = number("backoffLimit")
    if limit is None and per_index is None:
        limit = 6  # the API's default
    return PodPlan(parallelism, completions, indexed, per_index, limit)


@dataclass(slots=True)
class _Pod:
    number: int
    index: int | None
    proc: Child
    log_path: pathlib.Path


@dataclass(slots=True)
class _State:
    plan: PodPlan
    todo: list[int]
    succeeded: set[int] = dataclasses.field(default_factory=set)
    failed_indexes: set[int] = dataclasses.field(default_factory=set)
    failures_by_index: dict[int, int] = dataclasses.field(default_factory=dict)
    done: int = 0
    failed: int = 0
    #: (reason, message) once the job has failed as a whole; the running pods are then stopped.
    verdict: tuple[str, str] | None = None

    def more_work(self, running: int) -> bool:
        if self.verdict is not None:
            return False
        if self.plan.indexed:
            return bool(self.todo)
        return self.done + running < self.plan.completions


async def run_pods(
    ctl: Runner,
    job_id: str,
    namespace: str,
    spec: Mapping[str, Any],
    container: Mapping[str, Any],
    launch: Launch,
    plan: PodPlan,
    cancel: asyncio.Event,
    deadline_at: float | None,
) -> None:
    """Run the job's pods to the job's end (or its cancellation), then record how it ended."""
    loop = asyncio.get_running_loop()
    state = _State(plan, list(range(plan.completions)) if plan.indexed else [])
    running: dict[asyncio.Future[str], _Pod] = {}
    number = 0
    not_before = 0.0
    deadline = spec.get("activeDeadlineSeconds")
    try:
        while True:
            while (
                len(running) < plan.parallelism
                and state.more_work(len(running))
                and loop.time() >= not_before
            ):
                if cancel.is_set():
                    break
                number += 1
                index = state.todo.pop(0) if plan.indexed else None
                pod = await _start(ctl, job_id, launch, number, index)
                running[asyncio.ensure_future(ctl.supervisor.wait(pod.proc, cancel, deadline_at))] = pod
            if not running and (cancel.is_set() or not state.more_work(0)):
                break
            if not running and deadline_at is not None and loop.time() >= deadline_at:
                state.verdict = (
                    "DeadlineExceeded",
                    f"Job was active longer than specified deadline ({deadline}s)",
                )
                break
            wake: set[asyncio.Future[Any]] = {*running, asyncio.ensure_future(cancel.wait())}
            timeouts = [not_before - loop.time()] if state.more_work(len(running)) else []
            if not running and deadline_at is not None:
                timeouts.append(deadline_at - loop.time())
            timeout = max(0.0, min(timeouts)) if timeouts else None
            try:
                done, _ = await asyncio.wait(wake, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for future in wake - set(running):
                    future.cancel()
            for future in [f for f in done if f in running]:
                pod = running.pop(future)
                delay = await _ended(ctl, job_id, namespace, spec, container, state, pod, future.result())
                if delay is not None:
                    backoff = min(
                        ctl.backoff_seconds * 2 ** max(state.failed - 1, 0), ctl.backoff_max_seconds
                    )
                    not_before = loop.time() + backoff
            if state.verdict is not None and running:
                await asyncio.gather(*(_stop(ctl, pod) for pod in running.values()))
    finally:
        for future, pod in running.items():  # the service is stopping: no process outlives it
            future.cancel()
            if pod.proc.returncode is None:
                await ctl.supervisor.kill_group(pod.proc, grace=min(ctl.supervisor.kill_grace_seconds, 2.0))
    if cancel.is_set() and state.verdict is None:
        ctl.jobs.note(job_id, f"Job cancelled: {ctl.jobs.get_row(job_id).cancel_reason}")
        return
    if state.verdict is not None:
        await ctl.finish(job_id, JobPhase.FAILED, *state.verdict)
    elif state.failed_indexes:
        failed = format_indexes(state.failed_indexes)
        await ctl.finish(job_id, JobPhase.FAILED, "FailedIndexes", f"Job has failed indexes: {failed}")
    else:
        await ctl.finish(
            job_id,
            JobPhase.SUCCEEDED,
            "Completed",
            f"Job completed: {plan.completions} completion(s) after {number} attempt(s)",
        )


async def _start(ctl: Runner, job_id: str, launch: Launch, number: int, index: int | None) -> _Pod:
    env = dict(launch.env)
    if index is not None:
        env[INDEX_ENV] = str(index)
    log_path = launch.workdir / f"attempt-{number}.log"
    proc = await ctl.supervisor.spawn(dataclasses.replace(launch, env=env), log_path)
    attempt = functools.partial(
        ctl.store.start_attempt,
        job_id,
        number,
        proc.pid,
        ctl.clock(),
        str(log_path),
        pgid=proc.pid,
        process_start=process_start(proc.pid),
        completion_index=index,
    )
    await ctl.durably(job_id, "start attempt", attempt)
    at = "" if index is None else f", index {index}"
    ctl.jobs.note(job_id, f"attempt {number} running (pid {proc.pid}{at})")
    return _Pod(number, index, proc, log_path)


async def _stop(ctl: Runner, pod: _Pod) -> None:
    with contextlib.suppress(ProcessLookupError):
        await ctl.supervisor.kill_group(pod.proc, grace=ctl.supervisor.kill_grace_seconds)


async def _ended(
    ctl: Runner,
    job_id: str,
    namespace: str,
    spec: Mapping[str, Any],
    container: Mapping[str, Any],
    state: _State,
    pod: _Pod,
    outcome: str,
) -> float | None:
    """Record an ended pod and what it means for the job; a delay before the next pod starts when
    it failed and is to be retried (None otherwise)."""
    code = pod.proc.returncode
    if code is not None and code < 0:
        code = 128 - code  # killed by signal N: 128 + N, as a container runtime reports it
    name = str(container.get("name", ""))
    stopped = state.verdict is not None
    rule = None
    if outcome == "exited" and code is not None and code != 0 and not stopped:
        rule = match_pod_failure_policy(spec, name, code)
    reason = {"cancelled": "Cancelled", "deadline": "DeadlineExceeded"}.get(outcome, "")
    if not reason:
        reason = "Terminated" if stopped else "" if code == 0 else "Error"
    if rule is not None and rule.action == "FailIndex":
        reason = FAIL_INDEX_REASON
    ended = functools.partial(
        ctl.store.finish_attempt,
        job_id,
        pod.number,
        ctl.clock(),
        code,
        reason,
        ignored=rule is not None and rule.action == "Ignore",
    )
    await ctl.durably(job_id, "finish attempt", ended)
    if outcome == "cancelled" or stopped:
        return None
    if outcome == "deadline":
        deadline = spec.get("activeDeadlineSeconds")
        state.verdict = ("DeadlineExceeded", f"Job was active longer than specified deadline ({deadline}s)")
        return None
    if code == 0:
        if pod.index is not None:
            state.succeeded.add(pod.index)
        else:
            state.done += 1
        return None
    last = last_line(pod.log_path)
    at = "" if pod.index is None else f" (index {pod.index})"
    detail = f"attempt {pod.number}{at} exited with code {code}" + (f": {last}" if last else "")
    if rule is not None and rule.action == "FailJob":
        state.verdict = (
            "PodFailurePolicy",
            f"Container {name} for pod {namespace}/{job_id}-{pod.number} failed with exit code"
            f" {rule.exit_code} matching FailJob rule at index {rule.index}",
        )
        return None
    if rule is not None and rule.action == "FailIndex" and pod.index is not None:
        state.failed_indexes.add(pod.index)
        ctl.jobs.note(job_id, f"{detail}; index {pod.index} failed (FailIndex rule at index {rule.index})")
        return None
    counted = rule is None or rule.action != "Ignore"
    if counted:
        state.failed += 1
    plan = state.plan
    if counted and plan.per_index is not None and pod.index is not None:
        failures = state.failures_by_index[pod.index] = state.failures_by_index.get(pod.index, 0) + 1
        if failures > plan.per_index:
            state.failed_indexes.add(pod.index)
            ctl.jobs.note(
                job_id, f"{detail}; index {pod.index} failed (backoff limit per index {plan.per_index})"
            )
            return None
    if plan.backoff_limit is not None and state.failed > plan.backoff_limit:
        state.verdict = (
            "BackoffLimitExceeded",
            f"Job has reached the specified backoff limit ({plan.backoff_limit}); {detail}",
        )
        return None
    if pod.index is not None:
        state.todo.append(pod.index)
        state.todo.sort()
    ctl.jobs.note(job_id, f"{detail}; retrying")
    return 0.0
