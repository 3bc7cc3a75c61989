"""The composition root's own error."""


class StartupError(Exception):
    """The service cannot start with this configuration (exit code 2)."""
