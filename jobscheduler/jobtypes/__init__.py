"""Job types. Each module defines one handler; ``builtin_registry`` registers the built-in ones,
``load_plugins`` adds those of installed plugin packages (entry point group
``jobscheduler.job_types``, see :mod:`jobscheduler.jobtypes.custom`)."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterable
from typing import Any

from jobscheduler.core.registry import HandlerRegistry
from jobscheduler.jobtypes.container import ContainerHandler
from jobscheduler.jobtypes.custom import ENTRY_POINT_GROUP, JobTypePlugin, PluginError, PluginHandler
from jobscheduler.jobtypes.healthcheck import HealthCheckHandler
from jobscheduler.jobtypes.timer import TimerHandler, TimerParams
from jobscheduler.jobtypes.webhook import WebhookHandler
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.jobtypes")

__all__ = [
    "ENTRY_POINT_GROUP",
    "JobTypePlugin",
    "PluginError",
    "PluginHandler",
    "TimerHandler",
    "TimerParams",
    "builtin_registry",
    "load_plugins",
]


def builtin_registry(
    *, timer_image: str, max_cpu_limit: str = "4", max_memory_limit: str = "8Gi"
) -> HandlerRegistry:
    """A fresh registry holding every built-in job type (``max_*``: MAX_CPU_LIMIT, MAX_MEMORY_LIMIT)."""
    registry = HandlerRegistry()
    registry.register(TimerHandler(default_image=timer_image))
    registry.register(HealthCheckHandler(default_image=timer_image))
    registry.register(ContainerHandler(max_cpu_limit=max_cpu_limit, max_memory_limit=max_memory_limit))
    registry.register(WebhookHandler(default_image=timer_image))
    return registry


def load_plugins(
    registry: HandlerRegistry,
    entry_points: Callable[..., Iterable[importlib.metadata.EntryPoint]] | None = None,
) -> list[PluginHandler]:
    """Load every entry point in ``jobscheduler.job_types`` into ``registry`` (in name order,
    each logged: ``job type plugin loaded`` with its name, package and version);
    PluginError when one cannot be imported, is no plugin, or its type's name is taken (by a
    built-in type or another plugin)."""
    loaded: list[PluginHandler] = []
    registry.share(PluginHandler.request_field, "type")
    found = (entry_points or importlib.metadata.entry_points)(group=ENTRY_POINT_GROUP)
    for ep in sorted(found, key=lambda e: (e.name, e.value)):
        dist = getattr(ep, "dist", None)
        package = dist.name if dist is not None else ep.value.split(":")[0].split(".")[0]
        version = dist.version if dist is not None else ""
        where = f"job type plugin {ep.name!r} ({ep.value}, package {package} {version})".replace(" )", ")")
        try:
            obj: Any = ep.load()
            if isinstance(obj, type):
                obj = obj()
        except Exception as exc:  # any failure of a plugin's code is a startup error
            raise PluginError(f"{where} cannot be loaded: {type(exc).__name__}: {exc}") from None
        try:
            handler = PluginHandler(obj, package=package, version=version)
        except PluginError as exc:
            raise PluginError(f"{where}: {exc}") from None
        taken = registry.for_type(handler.job_type)
        if taken is not None:
            owner = "a built-in type" if taken.builtin else f"package {taken.package} {taken.version}"
            raise PluginError(f"{where}: job type {handler.job_type!r} clashes with {owner}")
        registry.register(handler)
        loaded.append(handler)
        log.info(
            "job type plugin loaded",
            job_type=handler.job_type,
            package=handler.package,
            version=handler.version,
        )
    return loaded
