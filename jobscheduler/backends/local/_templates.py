"""Job templates of the local backend: a table of their versions in the backend's SQLite file."""

from __future__ import annotations

import pathlib
import sqlite3

from jobscheduler.core.errors import FailedPrecondition, Unavailable
from jobscheduler.core.manifests import parse_time
from jobscheduler.core.templates import StoredTemplate, description_problem
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.backends.local")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS job_templates (
    owner            TEXT NOT NULL,
    name             TEXT NOT NULL,
    version          INTEGER NOT NULL,
    description      TEXT NOT NULL,
    request          TEXT NOT NULL,     -- core.requests.stored_request's JSON
    created_at       TEXT NOT NULL,
    first_created_at TEXT NOT NULL,
    PRIMARY KEY (owner, name, version)
);
"""
_COLUMNS = "owner, name, version, description, request, created_at, first_created_at"


#: The highest version number (the API's int32).
_MAX_VERSION = 2**31 - 1


def _template(row: sqlite3.Row) -> StoredTemplate:
    """The row's version; FailedPrecondition if it holds what no request could have stored (a row
    edited by hand: a version past int32, a time without an offset, a description with control
    characters), as a version whose request cannot be read is."""
    version, created, first = (
        row["version"],
        parse_time(row["created_at"]),
        parse_time(row["first_created_at"]),
    )
    description = row["description"]
    if (
        not isinstance(version, int)
        or not 1 <= version <= _MAX_VERSION
        or created is None
        or first is None
        or not isinstance(description, str)
        or description_problem(description) is not None
    ):
        raise FailedPrecondition(
            f"stored job template {row['name']!r} version {version} is not valid (edited?)"
        )
    return StoredTemplate(
        owner=row["owner"],
        name=row["name"],
        version=version,
        description=description,
        request=row["request"],
        created_at=created,
        first_created_at=first,
    )


class LocalTemplates:
    """core.templates.TemplateStore over its own connection to the backend's database (WAL:
    it reads and writes alongside the job store's)."""

    def __init__(self, path: pathlib.Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
        self._db.row_factory = sqlite3.Row
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _query(self, sql: str, args: tuple[object, ...]) -> list[sqlite3.Row]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:  # locked for too long, disk full, ...
            raise Unavailable(f"the local job templates cannot be used right now: {exc}") from exc

    async def get(self, owner: str, name: str, version: int) -> StoredTemplate | None:
        if version:
            rows = self._query(
                f"SELECT {_COLUMNS} FROM job_templates WHERE owner = ? AND name = ? AND version = ?",
                (owner, name, version),
            )
        else:
            rows = self._query(
                f"SELECT {_COLUMNS} FROM job_templates WHERE owner = ? AND name = ?"
                " ORDER BY version DESC LIMIT 1",
                (owner, name),
            )
        return _template(rows[0]) if rows else None

    async def add(self, template: StoredTemplate) -> bool:
        try:
            self._query(
                f"INSERT INTO job_templates ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    template.owner,
                    template.name,
                    template.version,
                    template.description,
                    template.request,
                    template.created_at.isoformat(),
                    template.first_created_at.isoformat(),
                ),
            )
        except sqlite3.IntegrityError:
            return False
        return True

    async def latest(self, owner: str, *, prefix: str, after: str, limit: int) -> list[StoredTemplate]:
        # (prefix is [a-z0-9-]: no LIKE wildcards; substr compares it exactly.)
        rows = self._query(
            f"SELECT {_COLUMNS} FROM job_templates t WHERE owner = ? AND name > ?"
            " AND substr(name, 1, ?) = ?"
            " AND version = (SELECT MAX(version) FROM job_templates"
            " WHERE owner = t.owner AND name = t.name)"
            " ORDER BY name LIMIT ?",
            (owner, after, len(prefix), prefix, limit),
        )
        templates = []
        for row in rows:
            try:
                templates.append(_template(row))
            except FailedPrecondition as exc:  # one damaged row must not hide (or stop) the others
                log.error("stored job template unreadable", template=row["name"], error=exc.message)
        return templates

    async def delete(self, owner: str, name: str) -> int:
        try:
            cursor = self._db.execute("DELETE FROM job_templates WHERE owner = ? AND name = ?", (owner, name))
        except sqlite3.OperationalError as exc:
            raise Unavailable(f"the local job templates cannot be used right now: {exc}") from exc
        return cursor.rowcount
