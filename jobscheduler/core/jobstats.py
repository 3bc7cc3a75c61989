"""Job observations for metrics, counted once per job: what the index's changes say about how
jobs end, how long they ran, how long they waited in their queue, and which were retries.

Every replica's index follows the same jobs, and every process start (or relist) first
loads them all; a counter fed from every replica, or from loads, would count a job many
times. So the observer counts only

- on the replica that leads (``leading``: the admission Lease holder; the local backend and
  a deployment without leader election always lead), and
- changes it sees happen: a record that was not final before and is final now (finished), a
  record that was not admitted before and is now (queue wait), a retry that appears after
  the index was loaded (retries). A (re)start's load, whose records have no "before", is
  never counted.

A job is therefore counted at most once: replicas never lead at the same time (the old
holder stops leading at its renew deadline, before the Lease can expire), and a job is final
only once. What finishes while no replica leads (a failover, at most LEASE_DURATION) or while
the leader restarts is not counted. Label values are bounded (``label``): a record's strings
come from the cluster.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

from jobscheduler.core.model import JobEvent, JobEventType, JobRecord

_LABEL: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def label(value: str) -> str:
    """``value`` as a metric label: a short plain name as is, ``""`` as ``""``, anything else
    (long, odd characters) as ``other`` (so a stray annotation cannot add series without end)."""
    if not value or _LABEL.fullmatch(value):
        return value
    return "other"


def bounded(record: JobRecord) -> JobRecord:
    """``record`` with its type, queue and reason made label-safe."""
    return replace(record, type=label(record.type), queue=label(record.queue), reason=label(record.reason))


@dataclass(slots=True)
class JobObserver:
    """An index listener (``JobIndex.add_listener(observer)``) that reports job transitions.

    ``on_finished(record, run_seconds)``: the job reached its final phase; ``run_seconds`` is
    ``finished_at - started_at`` (None if it never started). ``on_admitted(record, seconds)``:
    a held job was admitted after ``admitted_at - enqueued_at``. ``on_retry(record)``: a retry
    (``retry_number > 0``) was created. ``ready()``: whether the index has loaded (events
    before that are the load's); ``leading()``: whether this replica counts (see the module)."""

    leading: Callable[[], bool]
    ready: Callable[[], bool]
    on_finished: Callable[[JobRecord, float | None], None]
    on_admitted: Callable[[JobRecord, float], None]
    on_retry: Callable[[JobRecord], None]

    def __call__(self, event: JobEvent) -> None:
        if event.type is JobEventType.DELETED or not self.ready() or not self.leading():
            return
        record, previous = event.record, event.previous
        if previous is None:
            if record.retry_number > 0:
                self.on_retry(bounded(record))
            return
        if record.phase.is_terminal and not previous.phase.is_terminal:
            self.on_finished(bounded(record), seconds(record.started_at, record.finished_at))
        if previous.admitted_at is None and record.admitted_at is not None:
            wait = seconds(record.enqueued_at, record.admitted_at)
            if wait is not None:
                self.on_admitted(bounded(record), wait)


def seconds(start: datetime | None, end: datetime | None) -> float | None:
    """``end - start`` in seconds (0 if negative: clocks differ), None without both or when
    they cannot be compared (one naive, one aware): an index listener must not raise."""
    if start is None or end is None:
        return None
    try:
        return max(0.0, (end - start).total_seconds())
    except (TypeError, OverflowError):
        return None
