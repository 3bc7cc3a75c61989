"""The local backend: jobs as local processes, state in SQLite (for machines with no cluster)."""

from jobscheduler.backends.local.backend import LocalBackend

__all__ = ["LocalBackend"]
