"""Admission queues: their configuration (``QUEUES``) and what each holds (QueueBook).

Kept from the index on every replica: ListQueues, the queue metrics and the admission loop's
running counts read it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from jobscheduler.core.index import JobIndex
from jobscheduler.core.model import (
    DEFAULT_QUEUE,
    JobEvent,
    JobEventType,
    JobPhase,
    JobRecord,
    Priority,
    QueueStatus,
)
from jobscheduler.core.naming import dns1123_label_problem

_RUNNING: Final = frozenset({JobPhase.PENDING, JobPhase.RUNNING})
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class QueueConfig:
    name: str
    #: Jobs of this queue that may run at once; 0: no limit.
    max_running: int = 0


class QueueConfigError(ValueError):
    pass


def parse_queues(raw: str) -> dict[str, QueueConfig]:
    """``QUEUES``: comma-separated ``name=max_running`` (0: no limit); ``default`` always exists."""
    queues = {DEFAULT_QUEUE: QueueConfig(DEFAULT_QUEUE)}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        name, sep, limit = item.partition("=")
        name = name.strip()
        if (problem := dns1123_label_problem(name)) is not None:
            raise QueueConfigError(f"queue name {name!r} {problem}")
        try:
            max_running = int(limit) if sep else 0
        except ValueError:
            raise QueueConfigError(f"queue {name!r}: max_running must be a number (got {limit!r})") from None
        if not 0 <= max_running <= 1_000_000:
            raise QueueConfigError(f"queue {name!r}: max_running must be between 0 (no limit) and 1000000")
        queues[name] = QueueConfig(name, max_running)
    return queues


def ready_at(record: JobRecord) -> datetime:
    """The FIFO position of a job within its priority: when it was submitted (or, when later,
    when its start time came)."""
    submitted = record.enqueued_at or record.created_at or _EPOCH
    if record.start_after is not None and record.start_after > submitted:
        return record.start_after
    return submitted


@dataclass(frozen=True, slots=True)
class _Entry:
    queue: str
    phase: JobPhase
    priority: Priority
    ready_at: datetime


class QueueBook:
    """What each queue holds, kept from the index on every replica (ListQueues, metrics and
    the admission loop's running counts). Tracks only unfinished jobs."""

    def __init__(self, index: JobIndex, queues: Mapping[str, QueueConfig]) -> None:
        self.queues = dict(queues)
        self._index = index
        self._entries: dict[str, _Entry] = {}
        self._running: dict[str, int] = {}
        self._listeners: list[Callable[[JobEvent], None]] = []
        index.add_listener(self._on_event)
        for record in index.records():
            self._track(record)

    def add_listener(self, listener: Callable[[JobEvent], None]) -> Callable[[], None]:
        """Called after the book has taken each index change in."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def running(self, queue: str) -> int:
        return self._running.get(queue, 0)

    def limit(self, queue: str) -> int:
        config = self.queues.get(queue)
        return config.max_running if config is not None else 0

    def _on_event(self, event: JobEvent) -> None:
        if event.type is JobEventType.DELETED:
            self._untrack(event.record.job_id)
        else:
            self._track(event.record)
        for listener in list(self._listeners):
            listener(event)

    def _track(self, record: JobRecord) -> None:
        self._untrack(record.job_id)
        if record.phase.is_terminal:
            return
        entry = _Entry(record.queue, record.phase, record.priority, ready_at(record))
        self._entries[record.job_id] = entry
        if entry.phase in _RUNNING:
            self._running[entry.queue] = self._running.get(entry.queue, 0) + 1

    def _untrack(self, job_id: str) -> None:
        old = self._entries.pop(job_id, None)
        if old is not None and old.phase in _RUNNING:
            self._running[old.queue] -= 1

    def status(self) -> list[QueueStatus]:
        """Every configured queue and every queue that holds jobs, by name."""
        names = set(self.queues) | {e.queue for e in self._entries.values()}
        queued: dict[str, dict[Priority, int]] = {name: {} for name in names}
        waiting = dict.fromkeys(names, 0)
        oldest: dict[str, datetime] = {}
        for entry in self._entries.values():
            if entry.phase is JobPhase.QUEUED:
                counts = queued[entry.queue]
                counts[entry.priority] = counts.get(entry.priority, 0) + 1
                if entry.queue not in oldest or entry.ready_at < oldest[entry.queue]:
                    oldest[entry.queue] = entry.ready_at
            elif entry.phase.is_waiting:
                waiting[entry.queue] += 1
        return [
            QueueStatus(
                name=name,
                max_running=self.limit(name),
                running=self.running(name),
                queued=dict(sorted(queued[name].items(), reverse=True)),
                waiting=waiting[name],
                oldest_queued_since=oldest.get(name),
            )
            for name in sorted(names)
        ]
