"""What a job's dependencies allow: one owner-checked verdict, used when a job is submitted
(``waiting_phase``) and by the admission loop.

A dependency is another job of the same owner. Another owner's job is treated exactly like a
job that does not exist (MISSING), for admins too: job ids are predictable from an owner and a
``request_id``, so accepting them would let one owner's jobs start on (and learn about)
another owner's.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from jobscheduler.core.index import JobIndex
from jobscheduler.core.model import JobPhase, JobRecord
from jobscheduler.core.retries import retry_due, retry_job_id

#: Longer than any retry chain (MAX_RETRIES): how far a dependency's retries are followed.
_MAX_CHAIN: Final = 64


class DependencyState(enum.Enum):
    OK = "ok"  # succeeded (itself or one of its retries)
    WAITING = "waiting"  # not finished yet, or failed with a retry still to come
    FAILED = "failed"  # failed for good or cancelled: the dependent job fails
    MISSING = "missing"  # not in the index, or not the owner's: ask the backend before failing


@dataclass(frozen=True, slots=True)
class Dependency:
    state: DependencyState
    #: Why (FAILED, MISSING), for the dependent job's failure message.
    detail: str = ""
    #: Job ids whose changes may change the state (the dependency and its retries).
    watched: tuple[str, ...] = ()


def visible(record: JobRecord | None, owner: str) -> bool:
    """Whether ``record`` may be a dependency of ``owner``'s jobs."""
    return record is not None and record.owner == owner


def not_found(dep: str) -> str:
    return f"dependency {dep} does not exist"


def dependency_state(index: JobIndex, dep: str, owner: str) -> Dependency:
    """The state of ``owner``'s dependency ``dep``, following its retries: a failed job whose
    retry is still to come is WAITING, and its retry decides."""
    current = index.get(dep)
    if current is None or not visible(current, owner):
        return Dependency(DependencyState.MISSING, not_found(dep), (dep,))
    watched = [dep]
    for _ in range(_MAX_CHAIN):
        if current.phase is JobPhase.SUCCEEDED:
            return Dependency(DependencyState.OK, watched=tuple(watched))
        if current.phase is JobPhase.CANCELLED:
            why = f"dependency {dep} was cancelled ({current.job_id})"
            return Dependency(DependencyState.FAILED, why, tuple(watched))
        if current.phase is not JobPhase.FAILED:
            break
        if retry_due(current) is None:
            why = f"{current.reason}: {current.message}" if current.reason else current.message
            detail = f"dependency {dep} failed ({current.job_id}: {why})"
            return Dependency(DependencyState.FAILED, detail, tuple(watched))
        following = retry_job_id(current.retry_of or current.job_id, current.retry_number + 1)
        watched.append(following)
        retry = index.get(following)
        if retry is None or not visible(retry, owner):
            break  # its retry is yet to be created
        current = retry
    return Dependency(DependencyState.WAITING, watched=tuple(watched))


def waiting_phase(
    index: JobIndex, depends_on: Iterable[str], start_after: datetime | None, now: datetime, owner: str
) -> JobPhase | None:
    """The phase ``owner``'s new job is created in (SCHEDULED, WAITING), or None if only its
    queue matters. It starts at once only if every dependency is ``owner``'s and has succeeded."""
    if start_after is not None and start_after > now:
        return JobPhase.SCHEDULED
    for dep in depends_on:
        if dependency_state(index, dep, owner).state is not DependencyState.OK:
            return JobPhase.WAITING
    return None
