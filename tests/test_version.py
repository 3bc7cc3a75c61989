"""One version everywhere (README "Versions and releases"): from git tags through setuptools-scm,
the same string in `jobscheduler version`, `version-full`, /metrics' build-info gauge and in a
wheel built outside git (from an sdist), which also keeps the commit."""

from __future__ import annotations

import http.client
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from collections.abc import Iterator
from importlib.metadata import version as installed_version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from jobscheduler import version as version_mod

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TAG = "v9.8.7"


def _env(**extra: str) -> dict[str, str]:
    """The environment without build-time overrides (JOBSCHEDULER_*, SETUPTOOLS_SCM_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBSCHEDULER_", "SETUPTOOLS_SCM_"))}
    return {**env, "GIT_OPTIONAL_LOCKS": "0", **extra}


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, (cmd, out.stdout, out.stderr)
    return out.stdout


def _cli(*args: str, pythonpath: Path | None = None, cwd: Path = ROOT) -> str:
    """`python -m jobscheduler ARGS`; with ``pythonpath``, the package found there (not the checkout)."""
    env = _env(**({"PYTHONPATH": str(pythonpath)} if pythonpath else {}))
    code = "import sys, jobscheduler.cli as c; print(c.__file__, file=sys.stderr); sys.exit(c.main(sys.argv[1:]))"  # noqa: E501
    out = subprocess.run(
        [PYTHON, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    if pythonpath is not None:
        assert out.stderr.startswith(str(pythonpath)), f"not the built package: {out.stderr}"
    return out.stdout


def _full(stdout: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in stdout.splitlines())}


def _scm_version(checkout: Path) -> str:
    return _run([PYTHON, "-m", "setuptools_scm"], checkout).strip().splitlines()[-1]


# --------------------------------------------------------------------------- the checkout


def test_version_commands_agree_with_setuptools_scm() -> None:
    """`version` == `version-full`'s Version == what the build computes (`python -m setuptools_scm`,
    also `task version:info`); the commit is HEAD's."""
    short = _cli("version").strip()
    full = _full(_cli("version-full"))
    assert full["Version"] == short
    assert short == _scm_version(ROOT)
    assert short != version_mod.UNKNOWN_VERSION and short != "0.1.0"
    head = _run(["git", "rev-parse", "HEAD"], ROOT).strip()
    commit = full["Git Commit"].removesuffix("-dirty")
    assert len(commit) >= 7 and head.startswith(commit), (full, head)


def test_declared_build_requirements_are_what_builds_here() -> None:
    """The tests build without isolation, with this venv's setuptools and setuptools-scm: they must
    satisfy [build-system] requires (setuptools >= 77 for `license = "MIT"`)."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    names = set()
    for spec in requires:
        req = Requirement(spec)
        names.add(req.name)
        assert req.specifier.contains(installed_version(req.name)), (spec, installed_version(req.name))
    assert {"setuptools", "setuptools-scm"} <= names
    assert Requirement(next(r for r in requires if r.startswith("setuptools>"))).specifier.contains("77")
    assert not Requirement(next(r for r in requires if r.startswith("setuptools>"))).specifier.contains("76")


# --------------------------------------------------------------------------- builds outside git


@pytest.fixture(scope="module")
def tagged_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of this repository's HEAD with the tag v9.8.7 on it (the tag exists only there)."""
    clone = tmp_path_factory.mktemp("clone") / "src"
    _run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(clone)], ROOT)
    _run(["git", "checkout", "-q", "HEAD"], clone)
    _run(["git", "-c", "tag.gpgSign=false", "tag", TAG], clone)
    return clone


def _build_wheel(source: Path, out: Path) -> Path:
    pip_wheel = [PYTHON, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    _run(
        [*pip_wheel, "-w", str(out), str(source)],
        out.parent,
        timeout=120,
    )
    (wheel,) = out.glob("jobscheduler-*.whl")
    return wheel


def _unpack(wheel: Path, to: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(to)
    return to


def test_wheel_from_an_sdist_outside_git_has_the_tags_version(tagged_clone: Path, tmp_path: Path) -> None:
    expected = _scm_version(tagged_clone)
    assert expected == TAG.removeprefix("v")
    sdist_dir = tmp_path / "sdist"
    code = "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))"
    name = _run([PYTHON, "-c", code, str(sdist_dir)], tagged_clone, timeout=120).strip().splitlines()[-1]
    assert name == f"jobscheduler-{expected}.tar.gz"
    outside = tmp_path / "outside"  # no .git here or above (tmp)
    with tarfile.open(sdist_dir / name) as tf:
        tf.extractall(outside, filter="data")
    source = outside / f"jobscheduler-{expected}"
    assert not (source / ".git").exists() and (source / "LICENSE").is_file()
    started = time.monotonic()
    wheel = _build_wheel(source, tmp_path / "wheel")
    assert wheel.name.startswith(f"jobscheduler-{expected}-"), wheel.name
    assert time.monotonic() - started < 60
    site = _unpack(wheel, tmp_path / "site")
    assert (site / f"jobscheduler-{expected}.dist-info" / "licenses" / "LICENSE").is_file()
    full = _full(_cli("version-full", pythonpath=site, cwd=tmp_path))
    assert full["Version"] == expected
    head = _run(["git", "rev-parse", "HEAD"], tagged_clone).strip()
    assert head.startswith(full["Git Commit"]) and len(full["Git Commit"]) >= 7, (full, head)  # via the sdist
    assert _cli("version", pythonpath=site, cwd=tmp_path).strip() == expected


def test_wheel_from_a_git_archive_has_the_tags_version(tagged_clone: Path, tmp_path: Path) -> None:
    """A source archive (`git archive`, as forges serve for a tag) has no .git: the version comes
    from .git_archival.txt, which git fills in (.gitattributes export-subst)."""
    git_archive = ["git", "archive", "--format=tar", "HEAD"]
    archive = subprocess.run(git_archive, cwd=tagged_clone, capture_output=True, check=True, timeout=60)
    source = tmp_path / "archive"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tf:
        tf.extractall(source, filter="data")
    assert "$Format" not in (source / ".git_archival.txt").read_text()
    wheel = _build_wheel(source, tmp_path / "wheel")
    assert wheel.name.startswith(f"jobscheduler-{TAG.removeprefix('v')}-"), wheel.name


def test_wheel_from_the_checkout_keeps_the_commit(tagged_clone: Path, tmp_path: Path) -> None:
    """`pip install .` of a tagged checkout: the version and the commit (not `unknown`) survive."""
    site = _unpack(_build_wheel(tagged_clone, tmp_path / "wheel"), tmp_path / "site")
    full = _full(_cli("version-full", pythonpath=site, cwd=tmp_path))
    head = _run(["git", "rev-parse", "HEAD"], tagged_clone).strip()
    assert full["Version"] == TAG.removeprefix("v")
    assert full["Git Commit"] != "unknown" and head.startswith(full["Git Commit"]), (full, head)
    assert _cli("version", pythonpath=site, cwd=tmp_path).strip() == full["Version"]
    # (issue 12: the .proto ships inside the package, for stubs in other languages)
    assert (site / "jobscheduler" / "proto" / "jobscheduler.proto").is_file()


# --------------------------------------------------------------------------- version.py's sources


@pytest.fixture
def no_checkout(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("JOBSCHEDULER_VERSION", "JOBSCHEDULER_GIT_COMMIT", "JOBSCHEDULER_BUILD_DATE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(version_mod, "_from_checkout", lambda: None)
    version_mod._built.cache_clear()
    yield
    version_mod._built.cache_clear()


def test_an_untagged_build_names_its_commit_in_the_version(
    no_checkout: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build without the commit in its version file (SETUPTOOLS_SCM_PRETEND_VERSION, as the
    image's wheel) of an untagged commit: the commit comes from the version's +g<hash>."""
    monkeypatch.setattr(version_mod, "_from_version_file", lambda: ("1.3.0.dev4+g0123abcd9", ""))
    info = version_mod.version_info()
    assert (info.version, info.git_commit) == ("1.3.0.dev4+g0123abcd9", "0123abcd9")


def test_without_any_source_the_version_is_unknown(
    no_checkout: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(version_mod, "_from_version_file", lambda: None)
    monkeypatch.setattr(version_mod, "_from_metadata", lambda: None)
    info = version_mod.version_info()
    assert (info.version, info.git_commit) == ("0+unknown", "unknown")
    assert version_mod.default_image() == "ghcr.io/jobscheduler/jobscheduler:0-unknown"


def test_build_environment_wins(no_checkout: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(version_mod, "_from_version_file", lambda: ("1.0.0", "aaaaaaaaa"))
    monkeypatch.setenv("JOBSCHEDULER_VERSION", "1.2.3")
    monkeypatch.setenv("JOBSCHEDULER_GIT_COMMIT", "abc1234")
    info = version_mod.version_info()
    assert (info.version, info.git_commit) == ("1.2.3", "abc1234")
    assert version_mod.default_image() == "ghcr.io/jobscheduler/jobscheduler:1.2.3"


@pytest.mark.parametrize(
    ("version", "tag"),
    [
        ("1.2.0", "1.2.0"),
        ("1.2.1.dev3+g1a2b3c4d5", "1.2.1.dev3-g1a2b3c4d5"),
        ("0.1.dev9+g1a2b3c4d5.d20260101", "0.1.dev9-g1a2b3c4d5.d20260101"),
        ("0+unknown", "0-unknown"),
    ],
)
def test_image_tag(version: str, tag: str) -> None:
    assert version_mod.image_tag(version) == tag
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag)


# --------------------------------------------------------------------------- /metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_metrics_build_info_has_the_version(tmp_path: Path) -> None:
    expected = _full(_cli("version-full"))
    grpc_port, health_port = _free_port(), _free_port()
    env = _env(
        BACKEND="local",
        DATA_DIR=str(tmp_path / "data"),
        IN_CLUSTER="false",
        GRPC_PORT=str(grpc_port),
        HEALTH_PORT=str(health_port),
        GRPC_HOST="127.0.0.1",
        HEALTH_HOST="127.0.0.1",
    )
    for name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "TIMER_IMAGE"):
        env.pop(name, None)
    jobscheduler = shutil.which("jobscheduler", path=str(Path(PYTHON).parent)) or "jobscheduler"
    proc = subprocess.Popen(
        [jobscheduler, "serve"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        body = ""
        deadline = time.monotonic() + 30
        while "jobscheduler_build_info{" not in body:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "no /metrics within 30 s"
            try:
                conn = http.client.HTTPConnection("127.0.0.1", health_port, timeout=5)
                conn.request("GET", "/metrics")
                body = conn.getresponse().read().decode()
                conn.close()
            except OSError:
                time.sleep(0.1)  # not listening yet
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    (line,) = [line for line in body.splitlines() if line.startswith("jobscheduler_build_info{")]
    assert f'version="{expected["Version"]}"' in line
    assert f'git_commit="{expected["Git Commit"]}"' in line
    assert line.endswith(" 1.0")
