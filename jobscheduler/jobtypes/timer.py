"""The timer job: waits ``duration_seconds``, then reports to ``control_plane_endpoint``.

Its container runs ``jobscheduler timer`` (see :mod:`jobscheduler.timer`)
from TIMER_IMAGE, which defaults to this project's own image.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from jobscheduler.core.errors import FieldViolation, InvalidArgument, brief
from jobscheduler.core.manifests import RenderContext, job_manifest
from jobscheduler.core.naming import (
    image_reference_problem,
)
from jobscheduler.core.registry import JobHandler
from jobscheduler.core.urls import url_problem
from jobscheduler.core.validation import env_violations
from jobscheduler.timer import EXIT_CONFIG_ERROR

MAX_DURATION_SECONDS: Final = 86400
MAX_TIMER_NAME_LENGTH: Final = 253
LOG_LEVELS: Final = ("trace", "debug", "info", "warn", "error")
#: Environment variables the handler sets itself; the request's env may not override them.
RESERVED_ENV: Final = frozenset(
    {"TIMER_NAME", "DURATION_SECONDS", "CONTROL_PLANE_ENDPOINT", "LOG_LEVEL", "JOB_ID"}
)
COMMAND: Final = ("jobscheduler", "timer")


@dataclass(frozen=True, slots=True)
class TimerParams:
    duration_seconds: int
    timer_name: str
    control_plane_endpoint: str
    image: str = ""
    log_level: str = "info"
    env: Mapping[str, str] = field(default_factory=dict)


class TimerHandler(JobHandler[TimerParams]):
    job_type = "timer"
    request_field = "timer_job"
    description = "Waits duration_seconds, then reports its completion to control_plane_endpoint."

    def __init__(self, default_image: str) -> None:
        self.default_image = default_image

    def default_images(self) -> tuple[str, ...]:
        return (self.default_image,)

    def image_override(self, params: TimerParams) -> tuple[str, str] | None:
        if params.image and params.image != self.default_image:
            return (f"{self.request_field}.image", params.image)
        return None

    def parse(self, params: Mapping[str, Any]) -> TimerParams:
        f = self.request_field
        violations: list[FieldViolation] = []

        def bad(name: str, description: str) -> None:
            violations.append(FieldViolation(f"{f}.{name}", description))

        duration = params.get("duration_seconds", 0)
        if not isinstance(duration, int) or isinstance(duration, bool):
            bad("duration_seconds", "must be an integer")
            duration = 0
        elif duration <= 0:
            bad("duration_seconds", f"must be positive (got {duration})")
        elif duration > MAX_DURATION_SECONDS:
            bad("duration_seconds", f"must be at most {MAX_DURATION_SECONDS} (24 hours; got {duration})")

        timer_name = str(params.get("timer_name", ""))
        if not timer_name.strip():
            bad("timer_name", "must not be empty")
        elif len(timer_name) > MAX_TIMER_NAME_LENGTH:
            bad("timer_name", f"must be at most {MAX_TIMER_NAME_LENGTH} characters")
        elif any(not ch.isprintable() for ch in timer_name):
            bad("timer_name", "must not contain control characters")

        endpoint = str(params.get("control_plane_endpoint", ""))
        if (problem := _endpoint_problem(endpoint)) is not None:
            bad("control_plane_endpoint", problem)

        image = str(params.get("image", ""))
        if image and (problem := image_reference_problem(image)) is not None:
            bad("image", problem)

        log_level = str(params.get("log_level", "") or "info")
        if log_level.lower() not in LOG_LEVELS:
            bad("log_level", f"must be one of {', '.join(LOG_LEVELS)} (got {brief(log_level)})")
        log_level = log_level.lower()

        env = params.get("env") or {}
        if not isinstance(env, Mapping):
            bad("env", "must be a map of names to values")
            env = {}
        violations.extend(
            env_violations(
                f"{f}.env",
                {str(k): str(v) for k, v in env.items()},
                RESERVED_ENV,
                "is set by the timer job itself and cannot be overridden",
            )
        )

        if violations:
            raise InvalidArgument(violations)
        return TimerParams(
            duration_seconds=duration,
            timer_name=timer_name,
            control_plane_endpoint=endpoint,
            image=image,
            log_level=log_level,
            env={str(k): str(v) for k, v in env.items()},
        )

    def render(self, params: TimerParams, ctx: RenderContext) -> dict[str, Any]:
        env = {
            "TIMER_NAME": params.timer_name,
            "DURATION_SECONDS": str(params.duration_seconds),
            "CONTROL_PLANE_ENDPOINT": params.control_plane_endpoint,
            "LOG_LEVEL": params.log_level,
            "JOB_ID": ctx.job_id,
            **params.env,
        }
        return job_manifest(
            ctx,
            image=params.image or self.default_image,
            command=COMMAND,
            env=env,
            active_deadline_seconds=params.duration_seconds + ctx.defaults.deadline_grace_seconds,
            # A configuration error will not go away on retry; an undeliverable report might.
            permanent_exit_codes=(EXIT_CONFIG_ERROR,),
        )


def _endpoint_problem(endpoint: str) -> str | None:
    return url_problem(endpoint)
