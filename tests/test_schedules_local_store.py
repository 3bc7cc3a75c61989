"""The local schedule store and the due-time loop against what they must survive: rows edited by
hand into values no request could store, many schedules (pages read by key, the event loop given
back), long and non-ASCII owner identities, deleting a damaged row."""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from test_schedules_local import ALICE, rig, spec

from jobscheduler.backends.local import _schedules
from jobscheduler.core.auth import ADMIN_ROLE, Caller
from jobscheduler.core.errors import FailedPrecondition, InvalidArgument, NotFound
from jobscheduler.core.schedules.model import ScheduleSpec

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize(
    ("column", "edit"),
    [
        ("spec", "json_set(spec, '$.starting_deadline_seconds', 'soon')"),
        ("spec", "json_set(spec, '$.starting_deadline_seconds', 1099511627776)"),
        ("spec", "json_set(spec, '$.successful_jobs_history_limit', -4)"),
        ("status", "json_set(status, '$.missed_runs', 1099511627776)"),
        ("status", "json_set(status, '$.handled_until', '2026-05-01T12:00:00')"),
        ("created_at", "'2026-05-01T12:00:00'"),
        ("status", "json_set(status, '$.last_missed_time', '0001-01-01T00:00:00+14:00')"),
    ],
)
async def test_a_row_edited_into_bad_values_is_left_out_and_stops_no_other_run(
    tmp_path: pathlib.Path, column: str, edit: str
) -> None:
    """Valid JSON, values no request could store: a deadline that is no number (the tick died at it
    with a TypeError, every schedule after it never fired) or overflows the API's int32 (Get and the
    owner's List were INTERNAL), a naive time (compared with the aware clock: TypeError)."""
    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    async with rig(tmp_path, t0) as r:
        await r.schedules.create(spec("bad", starting_deadline_seconds=600), ALICE)
        await r.schedules.create(spec("good"), ALICE)
        db = sqlite3.connect(tmp_path / "jobscheduler.db")
        with db:
            db.execute(f"UPDATE schedules SET {column} = {edit} WHERE name = 'bad'")
        db.close()
        assert [v.schedule.name for v in (await r.schedules.list(ALICE))[0]] == ["good"]
        with pytest.raises(FailedPrecondition, match="edited"):
            await r.schedules.get("bad", ALICE)
        await r.at(t0 + timedelta(minutes=1, seconds=1))
        assert len(r.made("good")) == 1 and not r.made("bad")


async def test_a_list_page_decodes_only_its_own_rows(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ListSchedules read and decoded every schedule of the owner for each page (~166 ms of event
    loop at 5,000); now the page's rows by key. Pages still cover each schedule once, by name."""
    async with rig(tmp_path, datetime(2026, 5, 1, 12, 0, tzinfo=UTC)) as r:
        names = sorted(f"s{i}" for i in range(40))
        for name in names:
            await r.schedules.create(spec(name, cron="@daily"), ALICE)
        await r.schedules.create(spec("s1", cron="@daily"), Caller("bob"))
        decoded: list[str] = []
        real = _schedules.spec_from_json

        def counting(raw: str) -> ScheduleSpec:
            decoded.append(raw)
            return real(raw)

        monkeypatch.setattr(_schedules, "spec_from_json", counting)
        page, token = await r.schedules.list(ALICE, page_size=5)
        assert [v.schedule.name for v in page] == names[:5] and token
        assert len(decoded) <= 6
        for prefix, size in (("", 7), ("s1", 3), ("s39", 1), ("x", 2)):
            seen, token = [], ""
            while True:
                page, token = await r.schedules.list(
                    ALICE, page_size=size, page_token=token, name_prefix=prefix
                )
                seen += [v.schedule.name for v in page]
                if not token:
                    break
            assert seen == [n for n in names if n.startswith(prefix)]
        everyone, _ = await r.schedules.list(Caller("root", frozenset({ADMIN_ROLE})), page_size=100)
        assert [(v.schedule.owner, v.schedule.name) for v in everyone] == [("alice", n) for n in names] + [
            ("bob", "s1")
        ]


async def test_a_tick_and_a_list_over_many_schedules_give_the_event_loop_back(tmp_path: pathlib.Path) -> None:
    """Reading, viewing and passing over 200 schedules (none due) is ~10-20 ms of work: it gives the
    loop back every 32 of them instead of holding it throughout (RPCs wait behind it)."""
    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    async with rig(tmp_path, t0) as r:
        for i in range(200):
            await r.schedules.create(spec(f"s{i:03}", cron="@daily"), ALICE)
        turns = 0
        stop = asyncio.Event()

        async def count_turns() -> None:
            nonlocal turns
            while not stop.is_set():
                turns += 1
                await asyncio.sleep(0)

        for work in (r.loop.tick, lambda: r.schedules.list(ALICE, page_size=200)):
            counter = asyncio.create_task(count_turns())
            await asyncio.sleep(0)
            turns = 0
            await work()
            stop.set()
            await counter
            stop.clear()
            assert turns >= 200 // 32, work


@pytest.mark.parametrize(
    "identity", ["system:serviceaccount:" + "n" * 63 + ":" + "s" * 253, "ユーザー" * 100]
)
async def test_a_caller_with_a_long_identity_pages_through_its_schedules(
    tmp_path: pathlib.Path, identity: str
) -> None:
    """The page token holds the last owner and name: for a ServiceAccount's identity (up to 339
    characters) or a non-ASCII one the service made tokens it then refused as too long."""
    async with rig(tmp_path, datetime(2026, 5, 1, 12, 0, tzinfo=UTC)) as r:
        caller = Caller(identity)
        names = [letter * 52 for letter in "abc"]  # the longest schedule names
        for name in names:
            await r.schedules.create(spec(name, cron="@daily"), caller)
        seen, token = [], ""
        while True:
            page, token = await r.schedules.list(caller, page_size=1, page_token=token)
            seen += [v.schedule.name for v in page]
            if not token:
                break
        assert seen == names


async def test_an_admin_lists_a_service_accounts_schedules_by_owner(tmp_path: pathlib.Path) -> None:
    """ListSchedules' owner was at most 256 characters: a ServiceAccount's identity (up to 339)
    could not be named, as it can in ListJobs' filter."""
    account = "system:serviceaccount:" + "n" * 63 + ":" + "s" * 253
    async with rig(tmp_path, datetime(2026, 5, 1, 12, 0, tzinfo=UTC)) as r:
        await r.schedules.create(spec("nightly", cron="@daily"), Caller(account))
        page, _ = await r.schedules.list(Caller("root", frozenset({ADMIN_ROLE})), owner=account)
        assert [(v.schedule.owner, v.schedule.name) for v in page] == [(account, "nightly")]
        with pytest.raises(InvalidArgument, match="owner"):
            await r.schedules.list(Caller("root", frozenset({ADMIN_ROLE})), owner="x" * 1025)


async def test_a_damaged_row_can_be_deleted(tmp_path: pathlib.Path) -> None:
    """DeleteSchedule read the row first: a damaged one could not be deleted (INTERNAL, then
    FAILED_PRECONDITION); now it is, and the answer names it."""
    async with rig(tmp_path, datetime(2026, 5, 1, 12, 0, tzinfo=UTC)) as r:
        await r.schedules.create(spec("bad"), ALICE)
        db = sqlite3.connect(tmp_path / "jobscheduler.db")
        with db:
            db.execute("UPDATE schedules SET spec = '{\"oops\": 1}' WHERE name = 'bad'")
        db.close()
        view, cancelled = await r.schedules.delete("bad", ALICE, cancel_jobs=True)
        assert (view.schedule.owner, view.schedule.name, cancelled) == ("alice", "bad", ())
        with pytest.raises(NotFound):
            await r.schedules.get("bad", ALICE)
