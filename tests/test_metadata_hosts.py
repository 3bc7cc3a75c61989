"""No job type sends requests to cloud instance metadata (link-local addresses, metadata host
names): a job's requests come from the cluster or the service's machine, not from the caller."""

from __future__ import annotations

from typing import Any

import pytest

from jobscheduler.core.errors import InvalidArgument
from jobscheduler.jobtypes import builtin_registry

REGISTRY = builtin_registry(timer_image="ghcr.io/jobscheduler/jobscheduler:1")
SINK = "http://127.0.0.1:50053"
BAD_HOSTS = [
    "169.254.169.254",
    "[fe80::1]",
    "metadata.google.internal",
    "[::ffff:169.254.169.254]",
    # What the C resolver also reads as 169.254.169.254 (hex, octal, a single number).
    "0xa9fea9fe",
    "0xa9.0xfe.0xa9.0xfe",
    "0251.0376.0251.0376",
    "2852039166",
]


def cases(host: str) -> list[tuple[str, dict[str, Any], str]]:
    url = f"http://{host}/latest/meta-data/"
    return [
        (
            "timer_job",
            {"duration_seconds": 1, "timer_name": "t", "control_plane_endpoint": url},
            "timer_job.control_plane_endpoint",
        ),
        ("webhook_job", {"url": url}, "webhook_job.url"),
        (
            "healthcheck_job",
            {"targets": [{"name": "a", "http": {"url": url}}], "control_plane_endpoint": SINK},
            "healthcheck_job.targets[0]",
        ),
        (
            "healthcheck_job",
            {
                "targets": [{"name": "a", "tcp": {"host": host.strip("[]"), "port": 80}}],
                "control_plane_endpoint": SINK,
            },
            "healthcheck_job.targets[0]",
        ),
    ]


@pytest.mark.parametrize("host", BAD_HOSTS)
def test_metadata_hosts_are_refused_by_every_type_that_sends_requests(host: str) -> None:
    for field, params, path in cases(host):
        with pytest.raises(InvalidArgument) as info:
            REGISTRY.for_request_field(field, params).parse(params)
        fields = [v.field for v in info.value.violations]
        assert any(f.startswith(path) for f in fields), (field, fields)


def test_loopback_and_ordinary_hosts_stay_allowed() -> None:
    for host in ["127.0.0.1", "example.com", "10.0.0.7"]:
        for field, params, _ in cases(host):
            REGISTRY.for_request_field(field, params).parse(params)


def test_the_example_plugin_uses_the_same_rules() -> None:
    """The weather plugin (the README's template for plugins) fetched any URL, metadata too."""
    from weather_plugin import plugin

    from jobscheduler.jobtypes import PluginHandler

    handler = PluginHandler(plugin, package="jobscheduler-weather-plugin", version="0.1.0")
    for host in BAD_HOSTS:
        params = {"city": "x", "url": f"http://{host}/latest/", "control_plane_endpoint": SINK}
        with pytest.raises(InvalidArgument) as info:
            handler.parse({"type": "weather", "params": params})
        assert [v.field for v in info.value.violations] == ["custom_job.params.url"], host
