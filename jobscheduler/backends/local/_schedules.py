"""The local backend's schedules: one SQLite table next to the jobs (its own connection to the
same database file, WAL mode); fired by core's ScheduleLoop (``fires_itself = False``).

Calls are short single-row statements run inline, as the job store's are."""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from jobscheduler.core.errors import AlreadyExists, BackendError, FailedPrecondition, NotFound
from jobscheduler.core.schedules.codec import (
    aware_time,
    spec_from_json,
    spec_to_json,
    status_from_json,
    status_to_json,
)
from jobscheduler.core.schedules.model import Schedule, unreadable
from jobscheduler.core.schedules.pages import YIELD_EVERY
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.backends.local")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    owner      TEXT NOT NULL,
    name       TEXT NOT NULL,
    spec       TEXT NOT NULL,   -- core.schedules.codec
    status     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (owner, name)
);
"""


def _row(row: sqlite3.Row) -> Schedule:
    """The row's schedule; BackendError if it is not one this store wrote (edited by hand)."""
    try:
        created_at, updated_at = aware_time(row["created_at"]), aware_time(row["updated_at"])
    except (ValueError, TypeError) as exc:
        raise BackendError(f"a stored schedule's times cannot be read: {exc}") from None
    return Schedule(
        spec=spec_from_json(row["spec"]),
        owner=str(row["owner"]),
        created_at=created_at,
        updated_at=updated_at,
        status=status_from_json(row["status"]),
    )


class LocalScheduleStore:
    """ScheduleStore in SQLite; the job template is not kept (the loop renders each run anew)."""

    fires_itself = False

    def __init__(self, path: pathlib.Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    async def create(self, schedule: Schedule, job_template: Mapping[str, Any]) -> Schedule:
        try:
            self._db.execute(
                "INSERT INTO schedules (owner, name, spec, status, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    schedule.owner,
                    schedule.name,
                    spec_to_json(schedule.spec),
                    status_to_json(schedule.status),
                    schedule.created_at.isoformat(),
                    schedule.updated_at.isoformat(),
                ),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"schedule {schedule.name!r} already exists") from None
        return schedule

    async def get(self, owner: str, name: str) -> Schedule:
        row = self._db.execute(
            "SELECT * FROM schedules WHERE owner = ? AND name = ?", (owner, name)
        ).fetchone()
        if row is None:
            raise NotFound(f"schedule {name!r} not found")
        try:
            return _row(row)
        except BackendError as exc:  # as an edited CronJob on Kubernetes: not the caller's fault
            raise FailedPrecondition(
                f"stored schedule {name!r} is not valid (edited?): {exc.message}"
            ) from None

    async def list(
        self,
        owner: str | None = None,
        *,
        after: tuple[str, str] | None = None,
        prefix: str = "",
        limit: int = 0,
    ) -> list[Schedule]:
        """By (owner, name), read by key: only the page's rows (and any damaged ones among them)
        are decoded, not every schedule (~33 us each)."""
        where, params = ["substr(name, 1, ?) = ?"], [len(prefix), prefix]
        if owner is not None:
            where.append("owner = ?")
            params.append(owner)
        if after is not None:
            where.append("(owner, name) > (?, ?)")
            params.extend(after)
        cursor = self._db.execute(
            f"SELECT * FROM schedules WHERE {' AND '.join(where)} ORDER BY owner, name",
            params,
        )
        schedules: list[Schedule] = []
        for count, row in enumerate(cursor, start=1):
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # ~33 us a row: the due-time loop reads them all
            try:
                schedules.append(_row(row))
            except BackendError as exc:  # one damaged row must not hide (or stop) the others
                log.error(
                    "stored schedule unreadable", owner=row["owner"], schedule=row["name"], error=exc.message
                )
                continue
            if len(schedules) == limit:
                break
        cursor.close()
        return schedules

    async def update(self, schedule: Schedule, job_template: Mapping[str, Any]) -> Schedule:
        cursor = self._db.execute(
            "UPDATE schedules SET spec = ?, status = ?, updated_at = ? WHERE owner = ? AND name = ?",
            (
                spec_to_json(schedule.spec),
                status_to_json(schedule.status),
                schedule.updated_at.isoformat(),
                schedule.owner,
                schedule.name,
            ),
        )
        if cursor.rowcount == 0:
            raise NotFound(f"schedule {schedule.name!r} not found")
        return schedule

    async def delete(self, owner: str, name: str) -> Schedule:
        try:
            schedule = await self.get(owner, name)
        except FailedPrecondition:  # a damaged row: deleting it is the way out
            schedule = unreadable(owner, name, datetime.fromtimestamp(0, UTC))
        self._db.execute("DELETE FROM schedules WHERE owner = ? AND name = ?", (owner, name))
        return schedule
