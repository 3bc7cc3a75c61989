"""The job-type registry (one way to be a type: built-in or plugin handlers, a shared request
field dispatched by its key), custom_job's Struct as plain data, and ListJobTypes."""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

import grpc
import jsonschema
import pytest
from conftest import ServiceThread, local_service
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct
from hypothesis import given, settings
from hypothesis import strategies as st

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.api import convert
from jobscheduler.api.schemas import message_schema
from jobscheduler.core.errors import InvalidArgument
from jobscheduler.core.manifests import RenderContext
from jobscheduler.core.registry import HandlerRegistry, JobHandler
from jobscheduler.jobtypes import builtin_registry

T = 10


class Fake(JobHandler[Mapping[str, Any]]):
    def __init__(self, job_type: str, request_field: str, dispatch_key: str | None = None) -> None:
        self.job_type, self.request_field, self.dispatch_key = job_type, request_field, dispatch_key

    def parse(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        return params

    def render(self, params: Mapping[str, Any], ctx: RenderContext) -> dict[str, Any]:
        return {}


def test_a_shared_request_field_picks_its_handler_by_the_dispatch_key() -> None:
    registry = builtin_registry(timer_image="img")
    weather = registry.register(Fake("weather", "custom_job", "type"))
    tide = registry.register(Fake("tide", "custom_job", "type"))
    assert registry.for_request_field("custom_job", {"type": "weather"}) is weather
    assert registry.for_request_field("custom_job", {"type": "tide", "params": {}}) is tide
    assert registry.for_request_field("timer_job", {}).job_type == "timer"
    assert registry.for_type("tide") is tide
    assert {"timer", "weather", "tide"} <= {h.job_type for h in registry}
    for params in ({"type": "nope"}, {"type": ""}, {}, {"type": ["weather"]}, None):
        with pytest.raises(InvalidArgument) as err:
            registry.for_request_field("custom_job", params)
        [violation] = err.value.violations
        assert violation.field == "custom_job.type"
        assert "known: tide, weather" in violation.description


def test_registering_refuses_a_taken_name_or_field() -> None:
    registry = HandlerRegistry()
    registry.register(Fake("weather", "custom_job", "type"))
    with pytest.raises(ValueError, match="registered already"):
        registry.register(Fake("weather", "custom_job", "type"))
    with pytest.raises(ValueError, match="shared"):
        registry.register(Fake("own", "custom_job"))
    with pytest.raises(ValueError, match="picks its type by 'type'"):
        registry.register(Fake("other", "custom_job", "kind"))
    registry.register(Fake("timer", "timer_job"))
    with pytest.raises(ValueError, match="registered already"):
        registry.register(Fake("timer2", "timer_job"))


def test_without_plugin_types_custom_job_names_its_type() -> None:
    registry = builtin_registry(timer_image="img")
    with pytest.raises(InvalidArgument) as err:
        registry.for_request_field("custom_job", {"type": "weather"})
    assert err.value.violations[0].field == "job"  # not a shared field (yet)
    registry.share("custom_job", "type")
    with pytest.raises(InvalidArgument) as err:
        registry.for_request_field("custom_job", {"type": "weather"})
    [violation] = err.value.violations
    assert violation.field == "custom_job.type"
    assert "no plugin job types are installed" in violation.description
    with pytest.raises(ValueError, match="picks its type by 'type'"):
        registry.share("custom_job", "kind")
    with pytest.raises(ValueError, match="registered already"):
        registry.share("timer_job", "type")


def custom(params: Any) -> pb.ScheduleJobRequest:
    request = pb.ScheduleJobRequest(name="n", custom_job=pb.CustomJob(type="weather"))
    request.custom_job.params.update(params)
    return request


def test_custom_job_params_become_plain_json_data() -> None:
    data = {"city": "Oslo", "n": 3, "x": 1.5, "ok": True, "none": None, "deep": {"l": [1, "a", {}]}}
    decoded = convert.schedule_request(custom(data))
    assert decoded.job_field == "custom_job"
    assert decoded.params == {"type": "weather", "params": data}
    assert isinstance(decoded.params["params"]["n"], int)
    unset = convert.schedule_request(pb.ScheduleJobRequest(name="n", custom_job=pb.CustomJob(type="t")))
    assert unset.params == {"type": "t", "params": None}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_a_hostile_struct_is_refused_before_it_is_converted() -> None:
    assert convert.schedule_request(custom(nested(convert.MAX_STRUCT_DEPTH))).params["params"]
    cases = [
        custom(nested(convert.MAX_STRUCT_DEPTH + 1)),
        custom({"big": "x" * (convert.MAX_STRUCT_BYTES + 1)}),
        custom({"nan": math.nan}),
        custom({"inf": [math.inf]}),
    ]
    deep_list = pb.ScheduleJobRequest(name="n", custom_job=pb.CustomJob(type="t"))
    value = deep_list.custom_job.params.fields["l"]
    for _ in range(40):  # ListValues within ListValues count as well
        value = value.list_value.values.add()
    cases.append(deep_list)
    empty_value = pb.ScheduleJobRequest(name="n", custom_job=pb.CustomJob(type="t"))
    empty_value.custom_job.params.fields["v"].Clear()  # present, no kind set
    cases.append(empty_value)
    for request in cases:
        with pytest.raises(InvalidArgument) as err:
            convert.schedule_request(request)
        assert [v.field for v in err.value.violations] == ["custom_job.params"], request


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=30,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_any_struct_is_plain_data_equal_to_its_json_or_invalid_argument(data: dict[str, Any]) -> None:
    struct = Struct()
    struct.update(data)
    request = pb.ScheduleJobRequest(name="n", custom_job=pb.CustomJob(type="t", params=struct))
    try:
        params = convert.schedule_request(request).params["params"]
    except InvalidArgument as exc:
        assert [v.field for v in exc.violations] == ["custom_job.params"]
        return
    assert params == json_format.MessageToDict(struct)
    json.dumps(params, allow_nan=False)


def test_a_built_in_type_schema_comes_from_its_request_message() -> None:
    schema = message_schema(pb.TimerJob.DESCRIPTOR)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = {"duration_seconds": 5, "timer_name": "t", "control_plane_endpoint": "http://x/", "env": {"A": ""}}
    assert list(validator.iter_errors(good)) == []
    assert list(validator.iter_errors({"duration_seconds": "5"}))
    assert list(validator.iter_errors({"unknown": 1}))


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceThread]:
    service = local_service(tmp_path_factory.mktemp("types") / "data")
    try:
        yield service
    finally:
        service.stop()


def test_list_job_types_describes_every_registered_type(svc: ServiceThread) -> None:
    types = {t.name: t for t in svc.stub.ListJobTypes(pb.ListJobTypesRequest(), timeout=T).types}
    assert set(types) == {h.job_type for h in svc.service.registry}
    timer = types["timer"]
    assert (timer.request_field, timer.builtin, timer.package, timer.version) == ("timer_job", True, "", "")
    assert "duration_seconds" in timer.description
    schema = json.loads(timer.parameters_schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert {"duration_seconds", "timer_name", "control_plane_endpoint"} <= set(schema["properties"])
    for t in types.values():
        assert t.description, t.name
        jsonschema.Draft202012Validator.check_schema(json.loads(t.parameters_schema))
        assert t.builtin == (not t.package)


def test_list_job_types_is_seen_through_reflection(svc: ServiceThread, tmp_path: pathlib.Path) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(svc.channel)
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="jobscheduler.JobScheduler")
    [answer] = list(stub.ServerReflectionInfo(iter([request]), timeout=T))
    assert answer.WhichOneof("message_response") == "file_descriptor_response"
    assert any(b"ListJobTypes" in raw for raw in answer.file_descriptor_response.file_descriptor_proto)


def test_a_custom_job_of_no_installed_type_is_invalid_argument_naming_the_type(svc: ServiceThread) -> None:
    request = custom({"city": "x"})
    request.custom_job.type = "no-such-type"
    with pytest.raises(grpc.RpcError) as err:
        svc.stub.ScheduleJob(request, timeout=T)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "custom_job.type: unknown type 'no-such-type' (known: " in (err.value.details() or "")
