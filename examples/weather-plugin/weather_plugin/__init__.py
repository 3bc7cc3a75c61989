"""The weather plugin job type: ``custom_job { type: "weather", params: {...} }``.

The service loads :data:`plugin` through the entry point in group ``jobscheduler.job_types``
(pyproject.toml), validates ``params`` against :attr:`WeatherPlugin.parameters_schema`, then
calls ``parse`` (the checks a schema cannot express) and ``render`` (the batch/v1 Job).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from jobscheduler.core.errors import FieldViolation, InvalidArgument
from jobscheduler.core.manifests import RenderContext, job_manifest
from jobscheduler.core.urls import url_problem

FIELD: Final = "custom_job.params"
#: The image that has this package installed (the service's environment variable at start).
DEFAULT_IMAGE: Final = "ghcr.io/example/jobscheduler-weather-plugin:0.1.0"
#: The runner's exit code for a configuration error (not retried).
EXIT_CONFIG_ERROR: Final = 2
_URL: Final = {"type": "string", "minLength": 1, "maxLength": 2048, "pattern": "^https?://[^\\s]+$"}


@dataclass(frozen=True, slots=True)
class WeatherParams:
    city: str
    url: str
    control_plane_endpoint: str
    timeout_seconds: int = 10


class WeatherPlugin:
    name = "weather"
    description = (
        "Fetches a weather reading for a city from url (HTTP GET, once) and reports it to "
        "control_plane_endpoint (HTTP POST, JSON)."
    )
    parameters_schema: Mapping[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 1, "maxLength": 100, "description": "Whose weather"},
            "url": {**_URL, "description": "Where the reading is fetched (GET)"},
            "control_plane_endpoint": {**_URL, "description": "Where the reading is reported (POST)"},
            "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": 60, "default": 10},
        },
        "required": ["city", "url", "control_plane_endpoint"],
        "additionalProperties": False,
    }

    def __init__(self, image: str | None = None) -> None:
        self.image = image or os.environ.get("WEATHER_PLUGIN_IMAGE") or DEFAULT_IMAGE

    def default_images(self) -> tuple[str, ...]:
        return (self.image,)

    def parse(self, params: dict[str, Any]) -> WeatherParams:
        """What the schema cannot say: the URLs name a host, the city is printable."""
        violations = [
            FieldViolation(f"{FIELD}.{name}", problem)
            for name in ("url", "control_plane_endpoint")
            if (problem := _url_problem(params[name])) is not None
        ]
        if not params["city"].isprintable():
            violations.append(FieldViolation(f"{FIELD}.city", "must not contain control characters"))
        if violations:
            raise InvalidArgument(violations)
        return WeatherParams(
            city=params["city"],
            url=params["url"],
            control_plane_endpoint=params["control_plane_endpoint"],
            timeout_seconds=int(params.get("timeout_seconds", 10)),
        )

    def render(self, params: WeatherParams, ctx: RenderContext) -> dict[str, Any]:
        return job_manifest(
            ctx,
            image=self.image,
            command=("python", "-I", "-m", "weather_plugin.run"),
            env={
                "WEATHER_CITY": params.city,
                "WEATHER_URL": params.url,
                "CONTROL_PLANE_ENDPOINT": params.control_plane_endpoint,
                "WEATHER_TIMEOUT_SECONDS": str(params.timeout_seconds),
                "JOB_ID": ctx.job_id,
            },
            # Fetch and report, each with its timeout and a few retries.
            active_deadline_seconds=6 * params.timeout_seconds + 30,
            permanent_exit_codes=(EXIT_CONFIG_ERROR,),
        )


def _url_problem(url: str) -> str | None:
    """The service's own rules for URLs a job is given (no metadata hosts, no credentials, ...)."""
    return url_problem(url)


plugin = WeatherPlugin()
