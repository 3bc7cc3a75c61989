"""The Kubernetes backend (official ``kubernetes`` client, asyncio flavour)."""

from jobscheduler.backends.kubernetes._client import (
    ConfigSource,
    KubeApi,
    KubeConfigError,
    choose_config,
    connect,
    in_cluster_available,
)
from jobscheduler.backends.kubernetes._leader import LeaseElector
from jobscheduler.backends.kubernetes._tokenreview import TokenReviewer
from jobscheduler.backends.kubernetes.backend import KubernetesBackend

__all__ = [
    "ConfigSource",
    "KubeApi",
    "KubeConfigError",
    "KubernetesBackend",
    "LeaseElector",
    "TokenReviewer",
    "choose_config",
    "connect",
    "in_cluster_available",
]
