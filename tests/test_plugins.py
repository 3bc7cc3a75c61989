"""Plugin job types: loading (entry points, at the importlib.metadata edge), refusals at start,
schema validation before the plugin's own checks, retries, ListJobTypes, the clients' types()
and ``jobscheduler types`` (the example weather plugin: test_weather_plugin.py)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from conftest import ServiceThread, local_service
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from jobscheduler import client
from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.api.server import Health
from jobscheduler.app import StartupError, assemble, build_backend, build_index
from jobscheduler.config import Settings
from jobscheduler.core.errors import InvalidArgument
from jobscheduler.jobtypes import PluginError, PluginHandler, builtin_registry, load_plugins

T = 30
GROUP = "jobscheduler.job_types"
TERMINAL = (pb.JOB_PHASE_SUCCEEDED, pb.JOB_PHASE_FAILED, pb.JOB_PHASE_CANCELLED)

ECHO = """
from jobscheduler.core.errors import InvalidArgument
from jobscheduler.core.manifests import job_manifest

class Echo:
    name = "echo"
    description = "Exits with params.code."
    version = "1.2.3"
    parameters_schema = {
        "type": "object",
        "properties": {
            "code": {"type": "integer", "minimum": 0, "maximum": 3},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}},
        },
        "required": ["code"],
        "additionalProperties": False,
    }
    parsed = []

    def parse(self, params):
        Echo.parsed.append(params)
        if params["code"] == 3:
            raise InvalidArgument.field("custom_job.params.code", "3 is unlucky")
        return params["code"]

    def render(self, code, ctx):
        command = ("python", "-I", "-c", f"raise SystemExit({code})")
        return job_manifest(ctx, image="example.com/echo:1", command=command, backoff_limit=0)

    def default_images(self):
        return ("example.com/echo:1",)

plugin = Echo()
clash = Echo()
clash.name = "timer"
not_a_plugin = object()
bad_schema = Echo()
bad_schema.parameters_schema = {"type": 5}
bad_name = Echo()
bad_name.name = "Not_A_Label"
not_json = Echo()
not_json.parameters_schema = {"type": "object", "default": {1, 2}}
"""


@pytest.fixture
def plugins(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Make ``importlib.metadata.entry_points(group=...)`` list the given ``name=module:attr``
    entry points (modules fake_echo and fake_broken written to ``tmp_path``)."""
    (tmp_path / "fake_echo.py").write_text(textwrap.dedent(ECHO))
    (tmp_path / "fake_broken.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    real = importlib.metadata.entry_points

    def use(*specs: str) -> None:
        eps = [importlib.metadata.EntryPoint(s.split("=")[0], s.split("=")[1], GROUP) for s in specs]

        def entry_points(**params: Any) -> Any:
            return eps if params.get("group") == GROUP else real(**params)

        monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)

    return use


def test_a_plugin_becomes_a_handler_of_custom_job(plugins: Callable[..., None]) -> None:
    plugins("echo=fake_echo:plugin")
    registry = builtin_registry(timer_image="img")
    [handler] = load_plugins(registry)
    assert (handler.job_type, handler.request_field, handler.package, handler.version) == (
        "echo",
        "custom_job",
        "fake_echo",
        "1.2.3",
    )
    assert registry.for_request_field("custom_job", {"type": "echo", "params": {}}) is handler
    assert handler.default_images() == ("example.com/echo:1",)


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["timer=fake_echo:clash"], "job type 'timer' clashes with a built-in type"),
        (["echo=fake_echo:plugin", "echo2=fake_echo:plugin"], "clashes with package fake_echo"),
        (["broken=fake_broken:plugin"], "cannot be loaded: RuntimeError: boom at import"),
        (["gone=fake_missing:plugin"], "cannot be loaded: ModuleNotFoundError"),
        (["odd=fake_echo:not_a_plugin"], "does not implement the plugin protocol"),
        (["schema=fake_echo:bad_schema"], "is not a valid JSON Schema"),
        (["name=fake_echo:bad_name"], "is not a valid job type name"),
        (["json=fake_echo:not_json"], "parameters_schema is not JSON data"),
    ],
)
def test_a_plugin_that_cannot_be_used_is_refused(
    plugins: Callable[..., None], specs: list[str], message: str
) -> None:
    plugins(*specs)
    with pytest.raises(PluginError, match=message):
        load_plugins(builtin_registry(timer_image="img"))


def test_the_service_refuses_to_start_on_a_clash(
    plugins: Callable[..., None], tmp_path: pathlib.Path
) -> None:
    plugins("timer=fake_echo:clash")

    async def start() -> None:
        settings = Settings(backend="local", data_dir=str(tmp_path / "data"))
        backend = await build_backend(settings)
        index = build_index(settings)
        await backend.start(index)
        try:
            await assemble(settings, backend, index, Health())
        finally:
            await backend.close()

    with pytest.raises(StartupError, match="clashes with a built-in type"):
        asyncio.run(start())


def test_serve_logs_each_plugin_and_exits_2_naming_a_broken_one(tmp_path: pathlib.Path) -> None:
    """Real installed distributions (dist-infos on PYTHONPATH), one whose entry point fails."""
    site = tmp_path / "site"
    info = site / "broken_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\nbroken = broken_plugin:plugin\n")
    (site / "broken_plugin.py").write_text("raise ImportError('no such thing')\n")
    # Loaded first (entry points in name order) and logged, before the broken one stops the start.
    good = site / "good_plugin-2.0.dist-info"
    good.mkdir()
    (good / "METADATA").write_text("Metadata-Version: 2.1\nName: good-plugin\nVersion: 2.0\n")
    (good / "entry_points.txt").write_text(f"[{GROUP}]\na_good = fake_echo:plugin\n")
    (site / "fake_echo.py").write_text(textwrap.dedent(ECHO).replace('version = "1.2.3"', ""))
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "BACKEND": "local",
        "DATA_DIR": str(tmp_path / "data"),
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": "0",
        "HEALTH_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "jobscheduler", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    out = done.stdout + done.stderr
    assert "job type plugin 'broken'" in out and "broken-plugin 0.1" in out
    assert "ImportError: no such thing" in out
    [loaded] = [json.loads(line) for line in done.stdout.splitlines() if "job type plugin loaded" in line]
    assert (loaded["job_type"], loaded["package"], loaded["version"]) == ("echo", "good-plugin", "2.0")


def refused(call: Callable[[], Any]) -> dict[str, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, (err.value.code(), err.value.details())
    status = rpc_status.from_call(err.value)  # type: ignore[arg-type]
    assert status is not None
    fields: dict[str, str] = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields.update({v.field: v.description for v in bad.field_violations})
    return fields


def custom(job_type: str, params: dict[str, Any], **extra: Any) -> pb.ScheduleJobRequest:
    request = pb.ScheduleJobRequest(name=f"{job_type}-job", custom_job=pb.CustomJob(type=job_type), **extra)
    request.custom_job.params.update(params)
    return request


def final(svc: ServiceThread, job_id: str) -> pb.Job:
    for event in svc.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=T):
        if event.job.phase in TERMINAL:
            return event.job
    raise AssertionError(f"{job_id}: no final phase")


@pytest.fixture
def echo_service(plugins: Callable[..., None], tmp_path: pathlib.Path) -> Iterator[ServiceThread]:
    plugins("echo=fake_echo:plugin")
    svc = local_service(tmp_path / "data")
    try:
        yield svc
    finally:
        svc.stop()


def test_a_plugin_type_is_listed_validated_run_and_retried(echo_service: ServiceThread) -> None:
    svc = echo_service
    import fake_echo  # type: ignore[import-not-found]  # written by the plugins fixture

    types = {t.name: t for t in svc.stub.ListJobTypes(pb.ListJobTypesRequest(), timeout=T).types}
    echo = types["echo"]
    assert (echo.request_field, echo.builtin, echo.package, echo.version) == (
        "custom_job",
        False,
        "fake_echo",
        "1.2.3",
    )
    assert echo.description == "Exits with params.code."
    assert json.loads(echo.parameters_schema)["required"] == ["code"]

    # The schema first, every violation under custom_job.params; the plugin is not asked.
    fake_echo.Echo.parsed.clear()
    assert refused(lambda: svc.stub.ScheduleJob(custom("echo", {}), timeout=T)) == {
        "custom_job.params.code": "is required"
    }
    bad = {"code": "0", "tags": ["ok", "too long"], "extra": 1}
    fields = refused(lambda: svc.stub.ScheduleJob(custom("echo", bad), timeout=T))
    assert set(fields) == {"custom_job.params.code", "custom_job.params.tags[1]", "custom_job.params"}
    assert "extra" in fields["custom_job.params"]
    assert fake_echo.Echo.parsed == []
    # Then the plugin's own checks.
    assert refused(lambda: svc.stub.ScheduleJob(custom("echo", {"code": 3}), timeout=T)) == {
        "custom_job.params.code": "3 is unlucky"
    }
    fields = refused(lambda: svc.stub.ScheduleJob(custom("nope", {"code": 0}), timeout=T))
    assert "echo" in fields["custom_job.type"]

    ok = svc.stub.ScheduleJob(custom("echo", {"code": 0}), timeout=T)
    assert ok.job.type == "echo"
    done = final(svc, ok.job_id)
    assert (done.phase, done.exit_code, done.type) == (pb.JOB_PHASE_SUCCEEDED, 0, "echo")

    # A retry is rendered again from the stored request: the plugin type is found by custom_job.type.
    request = custom("echo", {"code": 1}, max_retries=1, retry_backoff_seconds=1)
    failing = svc.stub.ScheduleJob(request, timeout=T)
    assert final(svc, failing.job_id).phase == pb.JOB_PHASE_FAILED
    events = svc.stub.WatchJobs(pb.WatchJobsRequest(filter=pb.JobFilter(type="echo")), timeout=T)
    for event in events:
        if event.job.retry_of == failing.job_id:
            assert (event.job.type, event.job.retry_number) == ("echo", 1)
            events.cancel()  # type: ignore[no-untyped-call]
            break


def test_the_clients_and_the_command_line_list_the_types(echo_service: ServiceThread) -> None:
    addr = f"127.0.0.1:{echo_service.port}"
    with client.Client(addr) as c:
        types = {t.name: t for t in c.types()}
    assert types["echo"] == client.JobTypeInfo(
        name="echo",
        request_field="custom_job",
        description="Exits with params.code.",
        builtin=False,
        package="fake_echo",
        version="1.2.3",
        parameters_schema=types["echo"].parameters_schema,
    )
    assert types["echo"].parameters_schema["required"] == ["code"]
    assert types["timer"].builtin and "duration_seconds" in types["timer"].parameters_schema["properties"]

    async def listed() -> list[str]:
        async with client.AsyncClient(addr) as c:
            return [t.name for t in await c.types()]

    assert asyncio.run(listed()) == list(types)

    env = {**os.environ, "JOBSCHEDULER_ADDR": addr, "NO_COLOR": "1"}

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "jobscheduler", "types", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=T,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    table = run().splitlines()
    assert table[0].split() == ["NAME", "SOURCE", "DESCRIPTION"]
    [echo_row] = [line for line in table if line.startswith("echo ")]
    assert "fake_echo 1.2.3" in echo_row and "Exits with params.code." in echo_row
    assert any(line.startswith("timer ") and " builtin " in line for line in table)
    assert "code,tags" in run("-o", "wide")
    data = json.loads(run("-o", "json"))
    [echo] = [t for t in data["types"] if t["name"] == "echo"]
    assert echo["parameters_schema"]["properties"]["code"]["maximum"] == 3
    assert run("-o", "name").split() == list(types)


def test_plugin_types_are_submitted_from_the_clients_and_the_command_line(
    echo_service: ServiceThread,
) -> None:
    addr = f"127.0.0.1:{echo_service.port}"
    with client.Client(addr) as c:
        job = c.schedule("echo-client", client.CustomJob("echo", {"code": 0, "tags": ["a"]}))
        assert job.type == "echo"
        assert c.wait(job.job_id, timeout=T).phase is client.JobPhase.SUCCEEDED
        with pytest.raises(client.InvalidArgument) as err:
            c.schedule("echo-client", client.CustomJob("echo", {"code": "0"}))
        assert [v.field for v in err.value.field_violations] == ["custom_job.params.code"]
        with pytest.raises(client.InvalidArgument) as err:  # not JSON data: refused before sending
            c.schedule("echo-client", client.CustomJob("echo", {"code": {1, 2}}))
        assert [v.field for v in err.value.field_violations] == ["custom_job.params"]

    env = {**os.environ, "JOBSCHEDULER_ADDR": addr, "NO_COLOR": "1"}

    def submit(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "jobscheduler", "submit", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=T)

    done = submit("echo", "--param", "code=0", "--param", 'tags=["x", "y"]', "--wait", "-o", "name")
    assert done.returncode == 0, done.stderr
    done = submit("echo", "--param", "code=1", "--wait")
    assert done.returncode == 1, done.stderr
    done = submit("echo", "--param", "code=zero")
    assert done.returncode == 4 and "custom_job.params.code: must be an integer" in done.stderr
    done = submit("echo", "--param", "code=0", "--param", "tags=[1, 2]")
    assert done.returncode == 4 and "custom_job.params.tags[0]" in done.stderr, done.stderr
    done = submit("nope")
    assert done.returncode == 4 and "known: " in done.stderr and "echo" in done.stderr, done.stderr


class Tags:
    name = "tags"
    description = "Unique tags."
    parameters_schema = {"type": "object", "properties": {"xs": {"type": "array", "uniqueItems": True}}}

    def parse(self, params: dict[str, Any]) -> dict[str, Any]:
        return params

    def render(self, params: Any, ctx: Any) -> dict[str, Any]:
        return {}


def test_unique_items_takes_linear_time() -> None:
    """jsonschema compares every pair of objects: 4,000 distinct ones (50 KB) took about 18 s."""
    handler = PluginHandler(Tags(), package="p", version="1")
    many = [{"a": i} for i in range(4000)]
    started = time.monotonic()
    assert handler.parse({"type": "tags", "params": {"xs": many}}) == {"xs": many}
    assert time.monotonic() - started < 3
    for repeated in ([*many, {"a": 5}], [1, True, 1], [{"a": [1, 2]}, {"a": [1, 2]}]):
        with pytest.raises(InvalidArgument) as err:
            handler.parse({"type": "tags", "params": {"xs": repeated}})
        assert [v.field for v in err.value.violations] == ["custom_job.params.xs"]
    assert handler.parse({"type": "tags", "params": {"xs": [1, True, "1", [1], {"1": 1}]}})


class Formats:
    name = "formats"
    description = "Formats whose full checks are costly."
    parameters_schema = {
        "type": "object",
        "properties": {
            "iri": {"type": "string", "format": "iri"},
            "re": {"type": "string", "format": "regex"},
        },
    }

    def parse(self, params: dict[str, Any]) -> dict[str, Any]:
        return params

    def render(self, params: Any, ctx: Any) -> dict[str, Any]:
        return {}


def test_costly_formats_are_not_checked_and_nothing_escapes_as_an_internal_error() -> None:
    """An `iri` check of a 60 KB string took 7-34 s; a `regex` check of nested parentheses raised
    RecursionError (INTERNAL). Only cheap formats are checked."""
    handler = PluginHandler(Formats(), package="p", version="1")
    started = time.monotonic()
    handler.parse({"type": "formats", "params": {"iri": "http://" + "a." * 30000}})
    handler.parse({"type": "formats", "params": {"re": "(" * 10000 + ")" * 10000}})
    assert time.monotonic() - started < 2


class RemoteRef(Tags):
    name = "remote"
    parameters_schema = {"type": "object", "properties": {"x": {"$ref": "https://example.com/s.json"}}}


def test_a_schema_that_refers_outside_itself_is_refused_at_load() -> None:
    with pytest.raises(PluginError) as err:
        PluginHandler(RemoteRef(), package="p", version="1")
    assert "https://example.com/s.json" in str(err.value)
