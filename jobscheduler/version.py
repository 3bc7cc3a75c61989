"""Version information: from the build (container build args), else from git, else the package."""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import platform
import subprocess
from dataclasses import dataclass

_SOURCE_ROOT = pathlib.Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: str
    git_commit: str
    build_date: str
    python_version: str

    def full(self) -> str:
        return (
            f"Version:        {self.version}\n"
            f"Git Commit:     {self.git_commit}\n"
            f"Build Date:     {self.build_date}\n"
            f"Python Version: {self.python_version}"
        )


def _git(*args: str) -> str | None:
    if not (_SOURCE_ROOT / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=_SOURCE_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _package_version() -> str:
    try:
        return importlib.metadata.version("jobscheduler")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def version_info() -> VersionInfo:
    """Build-time values (JOBSCHEDULER_VERSION, _GIT_COMMIT, _BUILD_DATE) win; a source checkout asks git."""
    version = os.environ.get("JOBSCHEDULER_VERSION") or ""
    if not version:
        tag = _git("describe", "--tags", "--dirty")  # e.g. v1.2.0-3-gabc1234-dirty; None without tags
        version = tag.removeprefix("v") if tag else _package_version()
    commit = os.environ.get("JOBSCHEDULER_GIT_COMMIT") or ""
    if not commit and (short := _git("rev-parse", "--short", "HEAD")):
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        commit = short + ("-dirty" if dirty else "")
    return VersionInfo(
        version=version,
        git_commit=commit or "unknown",
        build_date=os.environ.get("JOBSCHEDULER_BUILD_DATE") or "unknown",
        python_version=platform.python_version(),
    )
