"""The Kubernetes client's configuration (backends/kubernetes/_client.py) against the emulator:
credentials as kubectl accepts them."""

from __future__ import annotations

import asyncio
import json
import pathlib
from typing import Any

import pytest
from emulator import EmulatorThread

from jobscheduler.app import StartupError, build_backend
from jobscheduler.backends.kubernetes import KubeConfigError, choose_config, connect
from jobscheduler.backends.kubernetes._errors import Call
from jobscheduler.config import Settings

JOBS = "/apis/batch/v1/namespaces/default/jobs"


def kubeconfig_with_token_file(path: pathlib.Path, server: str, token_file: str) -> pathlib.Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"tokenFile": token_file}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester"}}],
        "current-context": "emulator",
    }
    path.write_text(json.dumps(config))
    return path


def authorizations(emulator: EmulatorThread) -> list[str]:
    return list(emulator.call(lambda e: [str(r.headers.get("Authorization", "")) for r in e._requests]))


def test_a_token_file_ending_with_a_newline_works(emulator: EmulatorThread, tmp_path: pathlib.Path) -> None:
    """kubectl strips it; the client's loader did not, and aiohttp refused the header (the server
    crashed with a traceback on its first request)."""
    token = tmp_path / "token"
    token.write_text("emulator-token\n")
    kubeconfig = kubeconfig_with_token_file(tmp_path / "kubeconfig", emulator.url, str(token))

    async def scenario() -> dict[str, Any]:
        api = await connect(choose_config(in_cluster=False, kubeconfig=str(kubeconfig)), request_timeout=5)
        try:
            return await api.request("GET", JOBS, Call("list", "jobs", "default"))
        finally:
            await api.close()

    emulator.trim_log()
    answer = asyncio.run(scenario())
    assert "items" in answer
    assert authorizations(emulator) == ["Bearer emulator-token"]


def test_a_refreshed_token_is_cleaned_too(emulator: EmulatorThread, tmp_path: pathlib.Path) -> None:
    """Credentials a refresh hook sets (the in-cluster token is re-read every minute) are
    cleaned before each request as well."""
    token = tmp_path / "token"
    token.write_text("first\n")
    kubeconfig = kubeconfig_with_token_file(tmp_path / "kubeconfig", emulator.url, str(token))

    async def scenario() -> None:
        api = await connect(choose_config(in_cluster=False, kubeconfig=str(kubeconfig)), request_timeout=5)
        try:
            await api.request("GET", JOBS, Call("list", "jobs", "default"))
            # As the in-cluster loader's hook does when the token file has been rotated:
            api.api_client.configuration.api_key["BearerToken"] = "bearer rotated\n"
            await api.request("GET", JOBS, Call("list", "jobs", "default"))
        finally:
            await api.close()

    emulator.trim_log()
    asyncio.run(scenario())
    assert authorizations(emulator) == ["Bearer first", "bearer rotated"]


@pytest.mark.parametrize("content", ["s3cr\nt3\n", "s3cr\x00t3"], ids=["inner-newline", "nul"])
def test_a_token_with_a_control_character_inside_is_a_startup_error(
    emulator: EmulatorThread, tmp_path: pathlib.Path, content: str
) -> None:
    token = tmp_path / "token"
    token.write_text(content)
    kubeconfig = kubeconfig_with_token_file(tmp_path / "kubeconfig", emulator.url, str(token))

    with pytest.raises(KubeConfigError, match="control character") as info:
        asyncio.run(connect(choose_config(in_cluster=False, kubeconfig=str(kubeconfig)), request_timeout=5))
    assert "s3cr" not in str(info.value)  # the credential is not shown
    assert str(kubeconfig) in str(info.value)

    settings = Settings(backend="kubernetes", in_cluster=False, kubeconfig=str(kubeconfig))
    with pytest.raises(StartupError, match="control character"):
        asyncio.run(build_backend(settings))
