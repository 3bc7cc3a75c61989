"""core.overlay, core.templates and core.rerun: the overlay rules (property tests), template
names, page tokens, validation and versioning (over the local backend's SQLite store)."""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import tempfile
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobscheduler.backends.local._templates import LocalTemplates
from jobscheduler.core.auth import Caller
from jobscheduler.core.errors import AlreadyExists, InvalidArgument, NotFound
from jobscheduler.core.index import JobIndex
from jobscheduler.core.manifests import JobDefaults
from jobscheduler.core.model import ScheduleRequest
from jobscheduler.core.service import JobService
from jobscheduler.core.templates import (
    MAX_TEMPLATE_NAME,
    decode_page_token,
    encode_page_token,
    template_name_problem,
)
from jobscheduler.jobtypes import builtin_registry

EMPTY = ScheduleRequest(name="", job_field=None, params={})
ALICE = Caller("alice")
BOB = Caller("bob")
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TIMER = {"duration_seconds": 5, "timer_name": "t", "control_plane_endpoint": "http://127.0.0.1:9"}

# --- names and page tokens --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "nightly-report", "a1", "x" * MAX_TEMPLATE_NAME, "a-b-c-9"])
def test_good_template_names(name: str) -> None:
    assert template_name_problem(name) is None


@pytest.mark.parametrize(
    "name", ["", "1abc", "-a", "a-", "Abc", "a_b", "a.b", "x" * (MAX_TEMPLATE_NAME + 1), "é", "a b", "a\n"]
)
def test_bad_template_names(name: str) -> None:
    assert template_name_problem(name) is not None


@given(st.text(max_size=60))
def test_template_names_are_exactly_the_pattern(name: str) -> None:
    import re

    ok = re.fullmatch(r"[a-z]([a-z0-9-]*[a-z0-9])?", name) is not None and len(name) <= MAX_TEMPLATE_NAME
    assert (template_name_problem(name) is None) == ok


@given(st.from_regex(r"[a-z]([a-z0-9-]{0,50}[a-z0-9])?", fullmatch=True))
def test_page_tokens_round_trip(name: str) -> None:
    assert decode_page_token(encode_page_token(name)) == name


@given(st.text(max_size=200))
def test_any_page_token_decodes_or_is_invalid_argument(token: str) -> None:
    try:
        name = decode_page_token(token)
    except InvalidArgument as exc:
        assert exc.violations[0].field == "page_token"
    else:
        assert name == "" or template_name_problem(name) is None


# --- templates over a real store ----------------------------------------------------------------------


class _NoBackend:
    """ScheduleJob's validation (prepare) uses no backend; nothing here creates jobs."""

    name = "none"


def _service(tmp_path: pathlib.Path, clock: list[datetime]) -> JobService:
    index = JobIndex()
    backend: Any = _NoBackend()
    return JobService(
        backend,
        builtin_registry(timer_image="timer:1"),
        JobDefaults(),
        index,
        clock=lambda: clock[0],
        templates=LocalTemplates(tmp_path / "t.db"),
    )


def timer(**fields: Any) -> ScheduleRequest:
    return ScheduleRequest(name=fields.pop("name", ""), job_field="timer_job", params=TIMER, **fields)


def test_template_versions_owners_and_errors(tmp_path: pathlib.Path) -> None:
    clock = [NOW]
    templates = _service(tmp_path, clock).templates
    assert templates is not None

    async def scenario() -> None:
        v1 = await templates.create("nightly", "the nightly run", timer(labels={"a": "1"}), ALICE)
        assert (v1.stored.version, v1.request.name, v1.stored.owner) == (1, "nightly", "alice")
        with pytest.raises(AlreadyExists):
            await templates.create("nightly", "", timer(), ALICE)
        # Bob has his own namespace of names: Alice's is invisible to him.
        with pytest.raises(NotFound):
            await templates.get("nightly", 0, BOB)
        await templates.create("nightly", "bob's", timer(name="bobs"), BOB)
        clock[0] = NOW + timedelta(minutes=1)
        v2 = await templates.update("nightly", None, timer(timeout_seconds=60), ALICE)
        assert (v2.stored.version, v2.stored.description, v2.request.timeout_seconds) == (
            2,
            "the nightly run",
            60,
        )
        assert (v2.stored.first_created_at, v2.stored.created_at) == (NOW, clock[0])
        v3 = await templates.update("nightly", "new words", None, ALICE)
        assert (v3.stored.version, v3.stored.request, v3.stored.description) == (
            3,
            v2.stored.request,
            "new words",
        )
        assert (await templates.get("nightly", 1, ALICE)).request == v1.request  # old versions stay
        assert (await templates.get("nightly", 0, ALICE)).stored.version == 3
        with pytest.raises(NotFound):
            await templates.get("nightly", 4, ALICE)
        listed, token = await templates.list(ALICE)
        assert ([t.stored.name for t in listed], token) == (["nightly"], "")
        assert await templates.delete("nightly", ALICE) == 3
        with pytest.raises(NotFound):
            await templates.delete("nightly", ALICE)
        assert (await templates.get("nightly", 0, BOB)).request.name == "bobs"

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("job", "field"),
    [
        (None, "job"),
        (EMPTY, "job"),
        (timer(request_id="r1"), "job.request_id"),
        (timer(delay_seconds=5), "job.delay_seconds"),
        (timer(start_after=NOW), "job.start_after"),
        (timer(depends_on=("job-aaaaaaaaaa",)), "job.depends_on"),
        (timer(template="other"), "job.template"),
        (timer(queue="nope"), "job.queue"),
        (timer(labels={"bad key!": "x"}), "job.labels[bad key!]"),
        (
            dataclasses.replace(timer(), params={**TIMER, "duration_seconds": 0}),
            "job.timer_job.duration_seconds",
        ),
    ],
)
def test_a_template_is_validated_as_a_whole_request(
    tmp_path: pathlib.Path, job: ScheduleRequest | None, field: str
) -> None:
    templates = _service(tmp_path, [NOW]).templates
    assert templates is not None
    with pytest.raises(InvalidArgument) as caught:
        asyncio.run(templates.create("t", "", job, ALICE))
    assert field in [v.field for v in caught.value.violations], caught.value.message


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda t: t.create("Bad", "", timer(), ALICE), "name"),
        (lambda t: t.create("ok", "x" * 1025, timer(), ALICE), "description"),
        (lambda t: t.create("ok", "\x00", timer(), ALICE), "description"),
        (lambda t: t.get("ok", -1, ALICE), "version"),
        (lambda t: t.list(ALICE, page_size=1001), "page_size"),
        (lambda t: t.list(ALICE, page_size=-1), "page_size"),
        (lambda t: t.list(ALICE, page_token="garbage"), "page_token"),
        (lambda t: t.list(ALICE, name_prefix="A%"), "name_prefix"),
    ],
)
def test_bad_fields_are_invalid_argument_naming_them(tmp_path: pathlib.Path, call: Any, field: str) -> None:
    templates = _service(tmp_path, [NOW]).templates
    with pytest.raises(InvalidArgument) as caught:
        asyncio.run(call(templates))
    assert [v.field for v in caught.value.violations] == [field]


def test_list_pages_through_the_latest_of_each_by_name(tmp_path: pathlib.Path) -> None:
    templates = _service(tmp_path, [NOW]).templates
    assert templates is not None
    names = [f"t{i:02d}" for i in range(7)]

    async def scenario() -> list[list[tuple[str, int]]]:
        for name in reversed(names):
            await templates.create(name, "", timer(), ALICE)
        await templates.update("t03", "v2", None, ALICE)
        await templates.create("other", "", timer(), ALICE)
        await templates.create("t99", "", timer(), BOB)
        pages, token = [], ""
        while True:
            page, token = await templates.list(ALICE, page_size=3, page_token=token, name_prefix="t")
            pages.append([(t.stored.name, t.stored.version) for t in page])
            if not token:
                return pages

    pages = asyncio.run(scenario())
    assert [n for page in pages for n, _ in page] == names
    assert [len(p) for p in pages] == [3, 3, 1]
    assert dict(n for page in pages for n in page)["t03"] == 2


def test_schedule_from_a_template_overlays_and_records_the_version(tmp_path: pathlib.Path) -> None:
    service = _service(tmp_path, [NOW])
    templates = service.templates
    assert templates is not None

    async def scenario() -> None:
        await templates.create("tpl", "", timer(labels={"a": "1"}, max_retries=2), ALICE)
        await templates.update("tpl", None, timer(labels={"a": "2"}), ALICE)
        over = ScheduleRequest(
            name="",
            job_field="timer_job",
            params={"duration_seconds": 7},
            labels={"b": "x"},
            template="tpl",
            template_version=1,
        )
        prepared = await service.prepare(over, ALICE)
        assert prepared.request.params == {**TIMER, "duration_seconds": 7}
        assert dict(prepared.request.labels) == {"a": "1", "b": "x"}
        assert (prepared.request.max_retries, prepared.request.name) == (2, "tpl")
        assert prepared.origin is not None
        assert (prepared.origin.template, prepared.origin.template_version) == ("tpl", 1)
        latest = await service.prepare(dataclasses.replace(over, template_version=0), ALICE)
        assert latest.origin is not None and latest.origin.template_version == 2
        assert dict(latest.request.labels) == {"a": "2", "b": "x"}
        manifest = latest.render("job-bbbbbbbbbb")
        assert manifest["metadata"]["labels"]["jobscheduler.io/template"] == "tpl"
        for request, field in [
            (dataclasses.replace(over, template="missing"), "template"),
            (dataclasses.replace(over, template="Bad!"), "template"),
            (dataclasses.replace(over, template_version=9), "template_version"),
            (dataclasses.replace(over, template_version=-1), "template_version"),
            (dataclasses.replace(over, template="", template_version=1), "template_version"),
        ]:
            with pytest.raises(InvalidArgument) as caught:
                await service.prepare(request, ALICE)
            assert [v.field for v in caught.value.violations] == [field]
        with pytest.raises(InvalidArgument):  # Bob has no template of that name
            await service.prepare(over, BOB)

    asyncio.run(scenario())


# --- versioning against a model ---------------------------------------------------------------------

_ops = st.lists(
    st.tuples(
        st.sampled_from(["create", "update", "describe", "delete"]),
        st.sampled_from([ALICE, BOB]),
        st.sampled_from(["a", "b"]),
        st.integers(1, 3),
    ),
    max_size=12,
)


@settings(max_examples=25, deadline=None)
@given(_ops)
def test_versions_follow_a_model(ops: list[tuple[str, Caller, str, int]]) -> None:
    """Any sequence of creates, updates and deletes: each version stays what it was stored as,
    numbers go 1, 2, ... per (owner, name), a delete removes them all, owners never meet."""
    with tempfile.TemporaryDirectory() as tmp:
        templates = _service(pathlib.Path(tmp), [NOW]).templates
        assert templates is not None
        model: dict[tuple[str, str], list[tuple[str, int]]] = {}  # (owner, name) -> [(description, timeout)]

        async def run() -> None:
            for op, caller, name, n in ops:
                key = (caller.identity, name)
                if op == "create":
                    if key in model:
                        with pytest.raises(AlreadyExists):
                            await templates.create(name, "c", timer(timeout_seconds=n), caller)
                    else:
                        await templates.create(name, "c", timer(timeout_seconds=n), caller)
                        model[key] = [("c", n)]
                elif op in ("update", "describe"):
                    job = timer(timeout_seconds=n) if op == "update" else None
                    description = None if op == "update" else f"d{n}"
                    if key not in model:
                        with pytest.raises(NotFound):
                            await templates.update(name, description, job, caller)
                        continue
                    got = await templates.update(name, description, job, caller)
                    last = model[key][-1]
                    model[key].append((description or last[0], n if job else last[1]))
                    assert got.stored.version == len(model[key])
                elif key in model:
                    assert await templates.delete(name, caller) == len(model.pop(key))
                else:
                    with pytest.raises(NotFound):
                        await templates.delete(name, caller)
            for owner in (ALICE, BOB):
                for name in ("a", "b"):
                    versions = model.get((owner.identity, name), [])
                    for number, (description, timeout) in enumerate(versions, 1):
                        got = await templates.get(name, number, owner)
                        assert (got.stored.description, got.request.timeout_seconds) == (description, timeout)
                    if versions:
                        assert (await templates.get(name, 0, owner)).stored.version == len(versions)
                listed, _ = await templates.list(owner)
                assert [t.stored.name for t in listed] == sorted(n for o, n in model if o == owner.identity)

        asyncio.run(run())
