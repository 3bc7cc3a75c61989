"""The example plugin (examples/weather-plugin, installed by scripts/test) end to end: listed,
run to SUCCEEDED on the local backend against a reading and a report sink on 127.0.0.1, bad
params INVALID_ARGUMENT naming the field, a valid restricted Job on Kubernetes, fuzzed."""

from __future__ import annotations

import importlib.metadata
import json
import pathlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import kubernetes_validate
import pytest
from conftest import ServiceThread, local_service
from emulator import EmulatorThread
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from job_status import ended_status
from pod_security import check_object
from test_plugins import GROUP, T, custom, final, refused

from jobscheduler._generated import jobscheduler_pb2 as pb

#: Fuzzed jobs that are accepted wait (SCHEDULED) until cancelled: none runs.
FAR = Timestamp(seconds=int(time.time()) + 300 * 86400)


WEATHER = {"city": "Oslo", "url": "http://127.0.0.1:9/r", "control_plane_endpoint": "http://127.0.0.1:9/s"}


def weather_installed() -> None:
    eps = [ep for ep in importlib.metadata.entry_points(group=GROUP) if ep.name == "weather"]
    assert eps, "install the example plugin: .venv/bin/python -m pip install -e examples/weather-plugin"


class _Weather(BaseHTTPRequestHandler):
    reports: list[dict[str, Any]]
    reported: threading.Event

    def do_GET(self) -> None:
        body = json.dumps({"temperature_c": 21.5, "conditions": "sunny"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        type(self).reports.append(json.loads(self.rfile.read(length)))
        type(self).reported.set()
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def weather_server() -> Iterator[tuple[str, type[_Weather]]]:
    handler = type("Weather", (_Weather,), {"reports": [], "reported": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_the_example_weather_plugin_end_to_end(
    tmp_path: pathlib.Path, weather_server: tuple[str, type[_Weather]]
) -> None:
    weather_installed()
    base, sink = weather_server
    svc = local_service(tmp_path / "data")
    try:
        types = {t.name: t for t in svc.stub.ListJobTypes(pb.ListJobTypesRequest(), timeout=T).types}
        weather = types["weather"]
        assert (weather.builtin, weather.package, weather.version, weather.request_field) == (
            False,
            "jobscheduler-weather-plugin",
            "0.1.0",
            "custom_job",
        )
        assert "city" in json.loads(weather.parameters_schema)["properties"]

        params = {"city": "Oslo", "url": f"{base}/reading", "control_plane_endpoint": f"{base}/report"}
        fields = refused(lambda: svc.stub.ScheduleJob(custom("weather", {**params, "city": ""}), timeout=T))
        assert list(fields) == ["custom_job.params.city"]
        fields = refused(
            lambda: svc.stub.ScheduleJob(custom("weather", {**params, "url": "http://:1/"}), timeout=T)
        )
        assert list(fields) == ["custom_job.params.url"]
        fields = refused(
            lambda: svc.stub.ScheduleJob(custom("weather", {**params, "url": "http://a/\x00"}), timeout=T)
        )
        assert list(fields) == ["custom_job.params.url"]

        job = svc.stub.ScheduleJob(custom("weather", params), timeout=T)
        done = final(svc, job.job_id)
        assert (done.phase, done.exit_code, done.type) == (pb.JOB_PHASE_SUCCEEDED, 0, "weather"), done
        assert sink.reported.is_set()
        [report] = sink.reports
        assert report["job_id"] == job.job_id and report["city"] == "Oslo"
        assert report["reading"] == {"temperature_c": 21.5, "conditions": "sunny"}
    finally:
        svc.stop()


def test_the_weather_job_on_kubernetes_is_a_valid_restricted_job(
    emulator: EmulatorThread, service: ServiceThread
) -> None:
    weather_installed()
    resp = service.stub.ScheduleJob(custom("weather", WEATHER), timeout=T)
    assert resp.job.type == "weather"
    manifest = emulator.job(resp.job_id)
    assert manifest["metadata"]["labels"]["jobscheduler.io/job-type"] == "weather"
    kubernetes_validate.validate(manifest, "1.31.0", strict=True)
    assert check_object(manifest) == []
    [container] = manifest["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-I", "-m", "weather_plugin.run"]
    assert {e["name"]: e.get("value") for e in container["env"]}["WEATHER_CITY"] == "Oslo"
    emulator.patch_job(resp.job_id, {"status": ended_status(succeed=True)})
    assert final(service, resp.job_id).phase == pb.JOB_PHASE_SUCCEEDED


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
    max_leaves=12,
)
weather_changes = st.fixed_dictionaries(
    {},
    optional={
        "city": st.text(max_size=20) | json_values,
        "url": st.sampled_from(["http://127.0.0.1:9/r", "ftp://x", "http://:0/", "http://[::1"])
        | json_values,
        "control_plane_endpoint": st.just("http://127.0.0.1:9/s") | json_values,
        "timeout_seconds": st.integers(-5, 100) | json_values,
        "extra": json_values,
    },
)


#: Valid parameters with some changed (often still valid), or only the changes.
weather_params = st.builds(
    lambda base, changes: {**base, **changes}, st.sampled_from([WEATHER, {}]), weather_changes
)


@pytest.fixture(scope="module")
def weather_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceThread]:
    weather_installed()
    svc = local_service(tmp_path_factory.mktemp("weather") / "data")
    try:
        yield svc
    finally:
        svc.stop()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=weather_params, job_type=st.sampled_from(["weather", "weather", "nope", ""]))
def test_any_custom_job_is_ok_or_invalid_argument(
    weather_service: ServiceThread, params: dict[str, Any], job_type: str
) -> None:
    request = pb.ScheduleJobRequest(name="fuzz", custom_job=pb.CustomJob(type=job_type), start_after=FAR)
    request.custom_job.params.update(params)
    try:
        resp = weather_service.stub.ScheduleJob(request, timeout=T)
    except grpc.RpcError as exc:
        assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
        return
    assert resp.job.type == "weather"
    weather_service.stub.CancelJob(pb.CancelJobRequest(job_id=resp.job_id), timeout=T)
