"""SQLite state of the local backend: jobs and their attempts, durable across restarts."""

from __future__ import annotations

import contextlib
import errno
import json
import pathlib
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jobscheduler.core.errors import Unavailable
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.backends.local")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id        TEXT PRIMARY KEY,
    namespace     TEXT NOT NULL,
    manifest      TEXT NOT NULL,
    phase         TEXT NOT NULL,       -- PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED
    reason        TEXT NOT NULL DEFAULT '',
    message       TEXT NOT NULL DEFAULT '',
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT,
    cancelled_at  TEXT,
    cancel_reason TEXT NOT NULL DEFAULT '',
    seq           INTEGER NOT NULL     -- FIFO order of admission
);
CREATE TABLE IF NOT EXISTS attempts (
    job_id      TEXT NOT NULL REFERENCES jobs(job_id),
    number      INTEGER NOT NULL,
    pid         INTEGER,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    exit_code   INTEGER,
    reason      TEXT NOT NULL DEFAULT '',
    log_path    TEXT NOT NULL,
    ignored     INTEGER NOT NULL DEFAULT 0,  -- a failure podFailurePolicy ignored (not counted)
    PRIMARY KEY (job_id, number)
);
CREATE TABLE IF NOT EXISTS probe (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL                  -- the last write the readiness check tried (see Store.probe)
);
"""
#: Columns added after the first release: (table, column, definition) for databases created before.
_ADDED_COLUMNS = (
    ("attempts", "ignored", "INTEGER NOT NULL DEFAULT 0"),
    # The attempt's process group and its leader's start time: how recovery recognises leftovers.
    ("attempts", "pgid", "INTEGER"),
    ("attempts", "process_start", "TEXT"),
    # Indexed jobs: the completion index the attempt ran (JOB_COMPLETION_INDEX).
    ("attempts", "completion_index", "INTEGER"),
)


def now() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    number: int
    pid: int | None
    started_at: datetime
    finished_at: datetime | None
    exit_code: int | None
    reason: str
    log_path: str
    #: A failure that podFailurePolicy's Ignore rule kept from counting (as Kubernetes' status.failed).
    ignored: bool = False
    #: The attempt's process group (its leader's pid); None in rows from before it was recorded.
    pgid: int | None = None
    #: The leader's start time (see _supervisor.process_start); None where it cannot be read.
    process_start: str | None = None
    #: Indexed jobs: the attempt's completion index; None otherwise.
    completion_index: int | None = None


@dataclass(frozen=True, slots=True)
class JobRow:
    job_id: str
    namespace: str
    manifest: Mapping[str, Any]
    phase: str
    reason: str
    message: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancelled_at: datetime | None
    cancel_reason: str
    attempts: tuple[AttemptRow, ...]


def _out_of_space(exc: BaseException) -> bool:
    """SQLite's SQLITE_FULL ("database or disk is full") or the OS's ENOSPC."""
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


class Store:
    """One SQLite file; every write commits at once (the service may die at any point).

    A write that fails for want of space raises ``Unavailable`` (retryable) and sets ``problem``
    until a write succeeds again."""

    def __init__(self, path: pathlib.Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        #: Why writes fail right now (the disk is full), or None.
        self.problem: str | None = None
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        for table, column, definition in _ADDED_COLUMNS:
            existing = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in existing:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.OperationalError, OSError) as exc:
            if not _out_of_space(exc):
                raise
            if self.problem is None:
                log.error("the local state cannot be written", path=str(self.path), error=str(exc))
            self.problem = f"{self.path} cannot be written: {exc}"
            raise Unavailable(
                f"the local state cannot be written ({exc}); free space in {self.path.parent} and retry"
            ) from exc
        if self.problem is not None:
            log.info("the local state can be written again", path=str(self.path))
            self.problem = None

    def probe(self) -> None:
        """A small write: ``Unavailable`` while writes fail for want of space; clears ``problem`` if not."""
        with self._writing():
            self._db.execute("INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (_ts(now()),))

    def insert_job(
        self,
        job_id: str,
        namespace: str,
        manifest: Mapping[str, Any],
        created_at: datetime,
        *,
        phase: str = "PENDING",
        message: str = "",
    ) -> bool:
        """False if the id is taken."""
        with self._writing():
            try:
                self._db.execute(
                    "INSERT INTO jobs (job_id, namespace, manifest, phase, message, created_at, seq)"
                    " VALUES (?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs))",
                    (job_id, namespace, json.dumps(manifest), phase, message, _ts(created_at)),
                )
            except sqlite3.IntegrityError:
                return False
        return True

    def update_job(self, job_id: str, **fields: Any) -> None:
        columns = ", ".join(f"{k} = ?" for k in fields)
        values = [_ts(v) if isinstance(v, datetime) else v for v in fields.values()]
        with self._writing():
            self._db.execute(f"UPDATE jobs SET {columns} WHERE job_id = ?", (*values, job_id))

    def start_attempt(
        self,
        job_id: str,
        number: int,
        pid: int,
        started_at: datetime,
        log_path: str,
        *,
        pgid: int | None = None,
        process_start: str | None = None,
        completion_index: int | None = None,
    ) -> None:
        with self._writing():
            self._db.execute(
                "INSERT INTO attempts"
                " (job_id, number, pid, started_at, log_path, pgid, process_start, completion_index)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, number, pid, _ts(started_at), log_path, pgid, process_start, completion_index),
            )

    def finish_attempt(
        self,
        job_id: str,
        number: int,
        finished_at: datetime,
        exit_code: int | None,
        reason: str,
        *,
        ignored: bool = False,
    ) -> None:
        with self._writing():
            self._db.execute(
                "UPDATE attempts SET finished_at = ?, exit_code = ?, reason = ?, ignored = ?"
                " WHERE job_id = ? AND number = ?",
                (_ts(finished_at), exit_code, reason, int(ignored), job_id, number),
            )

    def delete_job(self, job_id: str) -> None:
        """The job's row and its attempts' rows, in one transaction."""
        with self._writing(), self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM attempts WHERE job_id = ?", (job_id,))
            self._db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))

    def get(self, job_id: str) -> JobRow | None:
        row = self._db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return self._row(row) if row is not None else None

    def all(self) -> list[JobRow]:
        return [self._row(r) for r in self._db.execute("SELECT * FROM jobs ORDER BY seq")]

    def _row(self, r: sqlite3.Row) -> JobRow:
        attempts = tuple(
            AttemptRow(
                number=a["number"],
                pid=a["pid"],
                started_at=_dt(a["started_at"]) or now(),
                finished_at=_dt(a["finished_at"]),
                exit_code=a["exit_code"],
                reason=a["reason"],
                log_path=a["log_path"],
                ignored=bool(a["ignored"]),
                pgid=a["pgid"],
                process_start=a["process_start"],
                completion_index=a["completion_index"],
            )
            for a in self._db.execute(
                "SELECT * FROM attempts WHERE job_id = ? ORDER BY number", (r["job_id"],)
            ).fetchall()
        )
        return JobRow(
            job_id=r["job_id"],
            namespace=r["namespace"],
            manifest=json.loads(r["manifest"]),
            phase=r["phase"],
            reason=r["reason"],
            message=r["message"],
            created_at=_dt(r["created_at"]) or now(),
            started_at=_dt(r["started_at"]),
            finished_at=_dt(r["finished_at"]),
            cancelled_at=_dt(r["cancelled_at"]),
            cancel_reason=r["cancel_reason"],
            attempts=attempts,
        )
