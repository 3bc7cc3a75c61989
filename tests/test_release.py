"""A reproducible release (README "Versions and releases"): the LICENSE, hash-pinned lock files that
satisfy pyproject.toml and that the Containerfile installs with --require-hashes, an exact base
image, an SBOM made from the lock by cyclonedx-py, no `:latest` image anywhere, and `task
version:info` showing the version the program reports. Docker/podman are not needed: the
Containerfile is checked as text."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from jobscheduler.version import IMAGE_REPOSITORY, image_tag

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CONTAINERFILE = ROOT / "Containerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCKS = {
    "requirements.lock": ROOT / "requirements.lock",
    "requirements-build.lock": ROOT / "requirements-build.lock",
}
#: The image's interpreter: Linux, CPython 3.11.
IMAGE_ENV = {
    **default_environment(),
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "python_version": "3.11",
    "python_full_version": "3.11.14",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


def _lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{name: (version, hashes)} of a pip lock file (continuation lines joined, comments dropped);
    only requirements that apply to the image."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out: dict[str, tuple[str, list[str]]] = {}
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("-"), f"{path.name}: no options or editables: {line}"
        spec, *options = line.split(" --hash=")
        req = Requirement(spec.strip())
        pins = list(req.specifier)
        assert len(pins) == 1 and pins[0].operator == "==", f"{path.name}: not pinned: {spec}"
        hashes = [h.strip() for h in options]
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), spec
        assert req.url is None, spec
        if req.marker is None or req.marker.evaluate(IMAGE_ENV):
            out[canonicalize_name(req.name)] = (pins[0].version, hashes)
    return out


def _satisfied(requirements: list[str], lock: dict[str, tuple[str, list[str]]], where: str) -> None:
    for spec in requirements:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate(IMAGE_ENV):
            continue
        name = canonicalize_name(req.name)
        assert name in lock, f"{where}: {req.name} is not locked: run `task lock`"
        version = lock[name][0]
        assert req.specifier.contains(version, prereleases=True), (
            f"{where}: the lock has {req.name}=={version}, pyproject.toml wants {spec}: run `task lock`"
        )


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            out.append((instruction.upper(), " ".join(args.split())))
    return out


# --------------------------------------------------------------------------- license


def test_license_is_mit_and_declared() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the jobscheduler authors" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text
    assert PYPROJECT["project"]["license"] == "MIT"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    assert 'org.opencontainers.image.licenses="MIT"' in CONTAINERFILE.read_text()


# --------------------------------------------------------------------------- lock files


def test_runtime_lock_satisfies_pyproject() -> None:
    """Every dependency of pyproject.toml is pinned, with hashes, at a version it accepts."""
    lock = _lock(LOCKS["requirements.lock"])
    _satisfied(PYPROJECT["project"]["dependencies"], lock, "requirements.lock")
    dev = {
        canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"]["dev"]
    }
    runtime = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}
    assert not (dev - runtime) & set(lock), "development tools do not belong in the image"


def test_build_lock_satisfies_the_build_requirements() -> None:
    lock = _lock(LOCKS["requirements-build.lock"])
    _satisfied([*PYPROJECT["build-system"]["requires"], "cyclonedx-bom>=7"], lock, "requirements-build.lock")
    assert Requirement("setuptools>=77").specifier.contains(lock["setuptools"][0])  # license = "MIT"


def test_the_lock_checker_notices_a_missing_or_stale_pin() -> None:
    lock = {"grpcio": ("1.85.3", ["sha256:" + "0" * 64])}
    with pytest.raises(AssertionError, match="not locked"):
        _satisfied(["structlog>=24.1"], lock, "x")
    with pytest.raises(AssertionError, match=r"wants grpcio>=1\.86"):
        _satisfied(["grpcio>=1.86"], lock, "x")
    _satisfied(["grpcio>=1.85", "pywin32; sys_platform == 'win32'"], lock, "x")


def test_sbom_lists_exactly_the_locked_packages(tmp_path: Path) -> None:
    """What the Containerfile runs (cyclonedx-py requirements on requirements.lock) makes a valid
    CycloneDX SBOM with every locked package at its pinned version and hashes."""
    out = tmp_path / "sbom.cdx.json"
    env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}
    cyclonedx = [str(BIN / "cyclonedx-py"), "requirements", "--output-reproducible", "--of", "JSON"]
    subprocess.run(
        [*cyclonedx, "-o", str(out), str(LOCKS["requirements.lock"])],
        check=True,
        capture_output=True,
        timeout=60,
        env=env,
    )
    sbom = json.loads(out.read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    components = {canonicalize_name(c["name"]): c for c in sbom["components"]}
    everything = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", LOCKS["requirements.lock"].read_text(), re.M)
    assert {canonicalize_name(n): v for n, v in everything} == {
        n: c["version"] for n, c in components.items()
    }
    grpcio = components["grpcio"]
    locked = {h.removeprefix("sha256:") for h in _lock(LOCKS["requirements.lock"])["grpcio"][1]}
    hashes = {h["content"] for ref in grpcio["externalReferences"] for h in ref.get("hashes", ())}
    assert hashes == locked and grpcio["purl"] == f"pkg:pypi/grpcio@{grpcio['version']}"


# --------------------------------------------------------------------------- Containerfile


def test_containerfile_installs_only_locked_hashes() -> None:
    runs = [args for ins, args in _instructions() if ins == "RUN"]
    installs = [cmd.strip() for run in runs for cmd in run.split("&&") if re.search(r"\bpip install\b", cmd)]
    assert installs, "no pip install"
    for cmd in installs:
        locked = re.search(r"--require-hashes --no-deps -r (requirements(-build)?\.lock)$", cmd)
        wheel = re.search(r"--no-deps /wheels/\*\.whl$", cmd)
        assert locked or wheel, f"installs something not hash-pinned: {cmd}"
    copied = {args.split()[0] for ins, args in _instructions() if ins == "COPY" and "--from" not in args}
    assert set(LOCKS) <= copied
    # The wheel is built with the locked build tools, not an isolated (unpinned) environment.
    (build,) = [cmd for run in runs for cmd in run.split("&&") if re.search(r"\bpip wheel\b", cmd)]
    assert "--no-build-isolation" in build and "/opt/build/bin/python" in build
    assert 'SETUPTOOLS_SCM_PRETEND_VERSION_FOR_JOBSCHEDULER="${VERSION}"' in build
    assert any("pip check" in run for run in runs)
    assert any('test "$(/opt/venv/bin/jobscheduler version)" = "${VERSION}"' in run for run in runs)
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for name in (*LOCKS, "LICENSE*", "pyproject.toml", "jobscheduler"):
        assert f"!{name}" in ignored, f".dockerignore leaves {name} out of the build context"


def test_containerfile_base_image_is_exact_and_used_by_every_stage() -> None:
    args = [a for ins, a in _instructions() if ins == "ARG" and a.startswith("PYTHON_IMAGE=")]
    assert len(args) == 1
    image = args[0].removeprefix("PYTHON_IMAGE=")
    assert re.fullmatch(r"docker\.io/library/python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image)
    froms = [a for ins, a in _instructions() if ins == "FROM"]
    assert froms and all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms), froms


def test_containerfile_ships_the_sbom_of_the_lock() -> None:
    runs = " ".join(a for ins, a in _instructions() if ins == "RUN")
    assert re.search(
        r"cyclonedx-py requirements --output-reproducible --of JSON -o (\S+) requirements\.lock", runs
    )
    final = _instructions()[max(i for i, (ins, _) in enumerate(_instructions()) if ins == "FROM") :]
    assert ("COPY", "--from=builder /opt/sbom /opt/sbom") in final
    assert any(ins == "ARG" and a.startswith("SOURCE_DATE_EPOCH=") for ins, a in _instructions())


@pytest.mark.parametrize(
    "path",
    [CONTAINERFILE, ROOT / "Taskfile.yml", *sorted((ROOT / "k8s").rglob("*.yaml"))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_latest_image(path: Path) -> None:
    assert not re.search(r"[\w./-]+:latest\b", path.read_text()), f"{path}: a :latest image"


# --------------------------------------------------------------------------- task version:info


def test_task_version_info_shows_the_programs_version() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBSCHEDULER_", "SETUPTOOLS_SCM_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"

    def run(*cmd: str) -> str:
        return subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
        ).stdout

    info = run(str(BIN / "task"), "version:info")
    version = run(str(BIN / "jobscheduler"), "version").strip()
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in info.splitlines())}
    assert fields["Version"] == version
    assert fields["Image"] == f"{IMAGE_REPOSITORY}:{image_tag(version)}"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", CONTAINERFILE.read_text(), re.M)
    assert base and fields["Python version"].endswith(f"container base image: {base[1]}")
