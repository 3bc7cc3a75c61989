"""The health-check job: probes a list of targets (HTTP, TCP, gRPC health) and reports each
one's result to ``control_plane_endpoint``; fails with a distinct exit code when one is unhealthy.

Its container runs ``jobscheduler healthcheck`` (see :mod:`jobscheduler.healthcheck`) from the
timer's image (TIMER_IMAGE), the targets as JSON in ``HEALTHCHECK_TARGETS``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from jobscheduler.core.errors import FieldViolation, InvalidArgument
from jobscheduler.core.manifests import RenderContext, job_manifest
from jobscheduler.core.naming import image_reference_problem
from jobscheduler.core.registry import JobHandler
from jobscheduler.core.urls import MAX_HOST_LENGTH, MAX_URL_LENGTH, url_problem
from jobscheduler.healthcheck import EXIT_CONFIG_ERROR, EXIT_UNHEALTHY
from jobscheduler.healthcheck._config import TARGETS_ENV
from jobscheduler.healthcheck._targets import (
    MAX_EXPECTED_STATUSES,
    MAX_NAME_LENGTH,
    MAX_RETRIES,
    MAX_SERVICE_LENGTH,
    MAX_TARGETS,
    MAX_TIMEOUT_SECONDS,
    Target,
    parse_targets,
    worst_case_seconds,
)

COMMAND: Final = ("jobscheduler", "healthcheck")

_URL: Final = {"type": "string", "maxLength": MAX_URL_LENGTH, "pattern": "^https?://"}
_COUNT: Final = {"type": "integer", "minimum": 0}
#: The parameters as ListJobTypes describes them (the handler's checks go further).
PARAMETERS_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["targets", "control_plane_endpoint"],
    "properties": {
        "targets": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_TARGETS,
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH},
                    "http": {
                        "type": "object",
                        "properties": {
                            "url": _URL,
                            "expected_status": {
                                "type": "array",
                                "maxItems": MAX_EXPECTED_STATUSES,
                                "items": {"type": "integer", "minimum": 100, "maximum": 599},
                            },
                        },
                    },
                    "tcp": {
                        "type": "object",
                        "properties": {
                            "host": {"type": "string", "maxLength": MAX_HOST_LENGTH},
                            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        },
                    },
                    "grpc": {
                        "type": "object",
                        "properties": {
                            "target": {"type": "string", "description": "host:port"},
                            "service": {"type": "string", "maxLength": MAX_SERVICE_LENGTH},
                            "tls": {"type": "boolean"},
                        },
                    },
                    "timeout_seconds": {**_COUNT, "maximum": MAX_TIMEOUT_SECONDS, "description": "0: 5"},
                    "retries": {**_COUNT, "maximum": MAX_RETRIES, "description": "0: 2"},
                },
                "oneOf": [{"required": [kind]} for kind in ("http", "tcp", "grpc")],
            },
        },
        "control_plane_endpoint": _URL,
        "image": {"type": "string", "maxLength": 512},
    },
}


@dataclass(frozen=True, slots=True)
class HealthCheckParams:
    targets: tuple[Target, ...]
    control_plane_endpoint: str
    image: str = ""


class HealthCheckHandler(JobHandler[HealthCheckParams]):
    job_type = "healthcheck"
    request_field = "healthcheck_job"
    description = (
        "Probes targets (HTTP status, TCP connect, gRPC health), each with a timeout and retries,"
        " and reports each one's result to control_plane_endpoint; fails when one is unhealthy."
    )

    def __init__(self, default_image: str) -> None:
        self.default_image = default_image

    def default_images(self) -> tuple[str, ...]:
        return (self.default_image,)

    def image_override(self, params: HealthCheckParams) -> tuple[str, str] | None:
        if params.image and params.image != self.default_image:
            return (f"{self.request_field}.image", params.image)
        return None

    def parameters_schema(self) -> dict[str, Any]:
        return PARAMETERS_SCHEMA

    def parse(self, params: Mapping[str, Any]) -> HealthCheckParams:
        f = self.request_field
        targets, problems = parse_targets(params.get("targets"), f"{f}.targets")
        violations = [FieldViolation(path, what) for path, what in problems]

        endpoint = params.get("control_plane_endpoint")
        if not isinstance(endpoint, str):
            violations.append(FieldViolation(f"{f}.control_plane_endpoint", "must be a string"))
            endpoint = ""
        elif (problem := url_problem(endpoint)) is not None:
            violations.append(FieldViolation(f"{f}.control_plane_endpoint", problem))

        image = params.get("image") or ""
        if not isinstance(image, str):
            violations.append(FieldViolation(f"{f}.image", "must be a string"))
            image = ""
        elif image and (problem := image_reference_problem(image)) is not None:
            violations.append(FieldViolation(f"{f}.image", problem))

        if violations:
            raise InvalidArgument(violations)
        return HealthCheckParams(targets=targets, control_plane_endpoint=endpoint, image=image)

    def render(self, params: HealthCheckParams, ctx: RenderContext) -> dict[str, Any]:
        env = {
            TARGETS_ENV: json.dumps([t.plain() for t in params.targets], separators=(",", ":")),
            "CONTROL_PLANE_ENDPOINT": params.control_plane_endpoint,
            "JOB_ID": ctx.job_id,
            "JOB_NAME": ctx.name,
        }
        probing = math.ceil(sum(worst_case_seconds(t) for t in params.targets))
        return job_manifest(
            ctx,
            image=params.image or self.default_image,
            command=COMMAND,
            env=env,
            active_deadline_seconds=probing + ctx.defaults.deadline_grace_seconds,
            # Neither a configuration error nor an unhealthy target goes away on retry (the probes
            # retried already); an undeliverable report might.
            permanent_exit_codes=(EXIT_CONFIG_ERROR, EXIT_UNHEALTHY),
        )
