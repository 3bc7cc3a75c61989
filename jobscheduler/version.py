"""Version information: one string for the package, the CLI, /metrics, the image and its tag.

The version comes from git tags through setuptools-scm (pyproject.toml ``[tool.setuptools_scm]``):
``1.2.0`` at the tag ``v1.2.0``, ``1.2.1.dev3+g1a2b3c4d5`` three commits later, with
``.d20260101`` added while tracked files have changes. Where it is read from, first found wins:

1. ``JOBSCHEDULER_VERSION`` / ``_GIT_COMMIT`` / ``_BUILD_DATE`` in the environment: the container
   image sets them from its build arguments, the same values its wheel was built with;
2. a git checkout of the source (this package next to ``pyproject.toml`` and ``.git``):
   ``python -m setuptools_scm`` there, the same computation as the build and ``task version:info``
   (a file written at install time would be stale after the next commit); the commit from git;
3. ``jobscheduler/_version.py``, which setuptools-scm writes into the package when it is built
   (a wheel, an sdist and a wheel built from it, an editable install): the version and the
   commit (none under SETUPTOOLS_SCM_PRETEND_VERSION: then an untagged version's ``+g<hash>``);
4. the installed distribution's metadata (the version only);
5. ``0+unknown``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import pathlib
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Final

_SOURCE_ROOT: Final = pathlib.Path(__file__).resolve().parent.parent
UNKNOWN_VERSION: Final = "0+unknown"
#: Where the project publishes its image; TIMER_IMAGE defaults to it at this build's tag.
IMAGE_REPOSITORY: Final = "ghcr.io/jobscheduler/jobscheduler"
_TAG_FORBIDDEN: Final = re.compile(r"[^A-Za-z0-9_.-]")
#: A local version segment that names a git commit: setuptools-scm's ``+g<hash>``.
_LOCAL_NODE: Final = re.compile(r"\+g([0-9a-f]{7,40})\b")


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


def image_tag(version: str) -> str:
    """The container image tag of ``version``: ``+`` (not allowed in a tag) becomes ``-``."""
    tag = _TAG_FORBIDDEN.sub("-", version).lstrip(".-")[:128]
    return tag or "unknown"


def default_image() -> str:
    """This build's own image: IMAGE_REPOSITORY at the tag of this version."""
    return f"{IMAGE_REPOSITORY}:{image_tag(version_info().version)}"


def _run(*cmd: str) -> str | None:
    try:
        out = subprocess.run(
            list(cmd),
            cwd=_SOURCE_ROOT,
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
            # Read-only queries must not take index.lock (others may be committing).
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[-1].strip() if lines else None


def _from_checkout() -> tuple[str, str] | None:
    """(version, commit) of a git checkout of the source, or None if this is none."""
    if not ((_SOURCE_ROOT / ".git").exists() and (_SOURCE_ROOT / "pyproject.toml").is_file()):
        return None
    version = _run(sys.executable, "-m", "setuptools_scm")
    if not version or " " in version:
        return None
    # As long as setuptools-scm's node (version file, +g<hash>): 9 hex digits.
    commit = (_run("git", "rev-parse", "--verify", "-q", "HEAD") or "")[:9]
    if commit and _run("git", "status", "--porcelain", "--untracked-files=no") is not None:
        commit += "-dirty"  # some tracked file differs from the commit
    return version, commit or "unknown"


def _from_version_file() -> tuple[str, str] | None:
    """(version, commit) from jobscheduler/_version.py, written by setuptools-scm at build time."""
    try:
        module = importlib.import_module("jobscheduler._version")
    except ImportError:
        return None
    version = getattr(module, "__version__", None)
    if not isinstance(version, str) or not version:
        return None
    commit = getattr(module, "__commit_id__", None)
    return version, commit.removeprefix("g") if isinstance(commit, str) and commit else ""


def _from_metadata() -> str | None:
    try:
        return importlib.metadata.version("jobscheduler") or None
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def _built() -> tuple[str, str]:
    """(version, commit) of the code that runs, from the first source that has one (module doc)."""
    found = _from_checkout() or _from_version_file()
    if found is None:
        version = _from_metadata() or UNKNOWN_VERSION
        found = (version, "")
    version, commit = found
    if not commit and (node := _LOCAL_NODE.search(version)):
        commit = node[1]  # an untagged build names its commit in the version
    return version, commit or "unknown"


def version_info() -> VersionInfo:
    """Build-time values in the environment win; else the checkout, the build's file, metadata."""
    built_version, built_commit = _built()
    return VersionInfo(
        version=os.environ.get("JOBSCHEDULER_VERSION") or built_version,
        git_commit=os.environ.get("JOBSCHEDULER_GIT_COMMIT") or built_commit,
        build_date=os.environ.get("JOBSCHEDULER_BUILD_DATE") or "unknown",
        python_version=platform.python_version(),
    )
