"""Built-in job types. Each module defines one handler; ``builtin_registry`` registers them all."""

from __future__ import annotations

from jobscheduler.core.registry import HandlerRegistry
from jobscheduler.jobtypes.healthcheck import HealthCheckHandler
from jobscheduler.jobtypes.timer import TimerHandler, TimerParams

__all__ = ["TimerHandler", "TimerParams", "builtin_registry"]


def builtin_registry(*, timer_image: str) -> HandlerRegistry:
    """A fresh registry holding every built-in job type."""
    registry = HandlerRegistry()
    registry.register(TimerHandler(default_image=timer_image))
    registry.register(HealthCheckHandler(default_image=timer_image))
    return registry
