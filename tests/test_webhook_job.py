"""The webhook job: the handler's validation and manifest, and the ``jobscheduler webhook``
program against an HTTP server on 127.0.0.1 (end to end: test_webhook_job_e2e.py)."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pod_security import check_object
from webhook_server import Server, serve

from jobscheduler.core.errors import InvalidArgument
from jobscheduler.core.manifests import RenderContext, validate_job_manifest
from jobscheduler.jobtypes.webhook import WebhookHandler, deadline_seconds
from jobscheduler.webhook import (
    EXIT_CANCELLED,
    EXIT_CONFIG_ERROR,
    EXIT_CONNECT_FAILED,
    EXIT_OK,
    EXIT_UNEXPECTED_STATUS,
    main,
)
from jobscheduler.webhook._config import resolve_config
from jobscheduler.webhook._request import EXCERPT_CHARS, READ_BYTES, excerpt

pytestmark = pytest.mark.timeout(60)
K8S_VERSION = "1.31.0"
IMAGE = "jobscheduler:test"
CTX = RenderContext(job_id="job-webhook001", name="hook", job_type="webhook")
SECRET = "s3cr3t-header-value"


def handler() -> WebhookHandler:
    return WebhookHandler(default_image=IMAGE)


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    [c] = manifest["spec"]["template"]["spec"]["containers"]
    return dict(c)


# --- the handler -----------------------------------------------------------------------------------


def test_defaults_and_rendered_job() -> None:
    h = handler()
    params = h.parse(
        {
            "url": "https://hooks.example.com/x?y=1",
            "headers": {"X-Team": "ops"},
            "headers_from_secrets": {"Authorization": {"name": "hook-creds", "key": "token"}},
            "body": '{"hello": "world"}',
        }
    )
    assert (params.method, params.timeout_seconds, params.max_attempts) == ("POST", 10, 3)
    assert (params.retry_backoff_seconds, params.expected_status) == (1, ())
    m = h.render(params, CTX)
    kubernetes_validate.validate(m, K8S_VERSION, strict=True)
    assert check_object(m) == []
    validate_job_manifest(m, trusted_images=h.default_images())
    c = container(m)
    assert c["image"] == IMAGE
    assert c["command"] == ["jobscheduler", "webhook"]
    env = {e["name"]: e for e in c["env"]}
    assert env["WEBHOOK_URL"]["value"] == "https://hooks.example.com/x?y=1"
    assert json.loads(env["WEBHOOK_HEADERS"]["value"]) == {"X-Team": "ops"}
    assert env["WEBHOOK_SECRET_HEADER_0_NAME"]["value"] == "Authorization"
    assert env["WEBHOOK_SECRET_HEADER_0"] == {
        "name": "WEBHOOK_SECRET_HEADER_0",
        "valueFrom": {"secretKeyRef": {"name": "hook-creds", "key": "token"}},
    }
    # 3 attempts of 10 s (+ 1 s margin each), backoffs 1 + 2 s, and the grace.
    assert deadline_seconds(params) == 36
    assert m["spec"]["activeDeadlineSeconds"] == 36 + CTX.defaults.deadline_grace_seconds
    assert m["spec"]["backoffLimit"] == 0
    [fail_job, _] = m["spec"]["podFailurePolicy"]["rules"]
    assert fail_job["onExitCodes"]["values"] == [EXIT_CONFIG_ERROR, EXIT_UNEXPECTED_STATUS]
    assert h.image_override(params) is None
    assert h.image_override(h.parse({"url": "http://a", "image": "ghcr.io/x/y:1"})) == (
        "webhook_job.image",
        "ghcr.io/x/y:1",
    )


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"url": ""}, "webhook_job.url"),
        ({"url": "ftp://example.com"}, "webhook_job.url"),
        ({"url": "http://exa mple.com"}, "webhook_job.url"),
        ({"url": "http://user:pw@example.com"}, "webhook_job.url"),
        ({"url": "http:///path"}, "webhook_job.url"),
        ({"url": "http://example.com/caf\u00e9"}, "webhook_job.url"),
        ({"headers": {"X-Name": "\u0416"}}, "webhook_job.headers[X-Name]"),
        ({"method": "TRACE"}, "webhook_job.method"),
        ({"headers": {"Host": "evil"}}, "webhook_job.headers[Host]"),
        ({"headers": {"transfer-encoding": "chunked"}}, "webhook_job.headers[transfer-encoding]"),
        ({"headers": {"X-A": "a\r\nX-B: b"}}, "webhook_job.headers[X-A]"),
        ({"headers": {"Bad Name": "x"}}, "webhook_job.headers[Bad Name]"),
        ({"headers": {f"X-{i}": "v" for i in range(33)}}, "webhook_job.headers"),
        (
            {"headers_from_secrets": {"X-K": {"name": "Not_A_Name", "key": "k"}}},
            "webhook_job.headers_from_secrets[X-K].name",
        ),
        (
            {"headers_from_secrets": {"X-K": {"name": "s", "key": "a/b"}}},
            "webhook_job.headers_from_secrets[X-K].key",
        ),
        (
            {"headers": {"x-k": "1"}, "headers_from_secrets": {"X-K": {"name": "s", "key": "k"}}},
            "webhook_job.headers_from_secrets[X-K]",
        ),
        ({"body": "x" * (64 * 1024 + 1)}, "webhook_job.body"),
        ({"body": "a\0b"}, "webhook_job.body"),
        ({"timeout_seconds": 301}, "webhook_job.timeout_seconds"),
        ({"timeout_seconds": -1}, "webhook_job.timeout_seconds"),
        ({"max_attempts": 11}, "webhook_job.max_attempts"),
        ({"retry_backoff_seconds": 61}, "webhook_job.retry_backoff_seconds"),
        ({"expected_status": [200, 600]}, "webhook_job.expected_status[1]"),
        ({"expected_status": list(range(200, 240))}, "webhook_job.expected_status"),
        ({"image": "Not An Image"}, "webhook_job.image"),
    ],
)
def test_bad_parameters_name_their_field(params: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        handler().parse({"url": "http://example.com", **params})
    assert path in [v.field for v in info.value.violations]


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.text(max_size=40),
    st.lists(st.integers(min_value=-1000, max_value=1000), max_size=5),
    st.dictionaries(
        st.text(max_size=12),
        st.text(max_size=20) | st.dictionaries(st.text(max_size=5), st.text(max_size=8)),
        max_size=4,
    ),
)
_FIELDS = ("url", "method", "headers", "headers_from_secrets", "body", "timeout_seconds", "expected_status")
_FIELDS += ("max_attempts", "retry_backoff_seconds", "image")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_FIELDS), _values))
def test_any_parameters_parse_and_render_or_are_refused_naming_the_field(params: dict[str, Any]) -> None:
    h = handler()
    try:
        parsed = h.parse({"url": "http://example.com", **params})
    except InvalidArgument as exc:
        assert exc.violations
        assert all(v.field.startswith("webhook_job.") for v in exc.violations)
        return
    m = h.render(parsed, CTX)
    validate_job_manifest(m, trusted_images=(IMAGE, parsed.image))
    # What the handler accepts, the program accepts (a secret header's value stands in as "v").
    env = {e["name"]: e.get("value", "v") for e in container(m)["env"]}
    config = resolve_config(env)
    assert (config.url, config.method, dict(config.headers)) == (parsed.url, parsed.method, parsed.headers)
    assert config.expected_status == frozenset(parsed.expected_status)


# --- the program against a local HTTP server ---------------------------------------------------------


@pytest.fixture
def server() -> Iterator[Server]:
    with serve() as srv:
        yield srv


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The program configures logging for its process; in this one, it is undone after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def run_program(capsys: pytest.CaptureFixture[str], **env: str) -> tuple[int, list[dict[str, Any]], str]:
    handlers = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]
    code = main([], environ={"WEBHOOK_RETRY_BACKOFF_SECONDS": "0.01", **env})
    # In this process too: the program's signal handlers went with its run.
    assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)] == handlers
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")], out


def test_success_sends_the_request_and_logs_a_redacted_excerpt(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    server.statuses = [201]
    server.body = f'{{"echo": "{SECRET}", "password": "hunter2", "ok": true}}'.encode() + b"x" * 4000
    code, lines, out = run_program(
        capsys,
        WEBHOOK_URL=server.url,
        WEBHOOK_METHOD="put",
        WEBHOOK_HEADERS='{"X-Team": "ops"}',
        WEBHOOK_BODY='{"n": 1}',
        WEBHOOK_SECRET_HEADER_0_NAME="X-Api-Key",
        WEBHOOK_SECRET_HEADER_0=SECRET,
    )
    assert code == EXIT_OK
    [(method, headers, body)] = server.requests
    assert (method, body) == ("PUT", b'{"n": 1}')
    assert (headers["X-Team"], headers["X-Api-Key"], headers["Content-Type"]) == (
        "ops",
        SECRET,
        "application/json",
    )
    done = next(line for line in lines if line["event"] == "webhook succeeded")
    assert done["http_status"] == 201
    assert done["body_excerpt"].startswith('{"echo": "[REDACTED]", "password": [REDACTED], "ok": true}')
    assert len(done["body_excerpt"]) <= 1024 + 3
    assert SECRET not in out and "hunter2" not in out
    assert lines[0]["secret_headers"] == ["X-Api-Key"]


def test_unexpected_status_is_retried_then_exits_3(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    server.statuses = [200]
    code, lines, _ = run_program(
        capsys, WEBHOOK_URL=server.url, WEBHOOK_EXPECTED_STATUS="202,204", WEBHOOK_MAX_ATTEMPTS="3"
    )
    assert code == EXIT_UNEXPECTED_STATUS
    assert len(server.requests) == 3
    assert [
        line["http_status"] for line in lines if line["event"] == "webhook answered with an unexpected status"
    ] == [200] * 3
    assert lines[-1]["event"] == "webhook failed: unexpected status"


def test_a_retry_that_gets_the_expected_status_succeeds(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    server.statuses = [503, 500, 200]
    code, _, _ = run_program(capsys, WEBHOOK_URL=server.url, WEBHOOK_MAX_ATTEMPTS="3")
    assert code == EXIT_OK
    assert len(server.requests) == 3


def test_an_answer_that_never_completes_is_given_up_after_the_timeout(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    server.drip = True  # a byte every 0.1 s: no socket operation ever times out
    started = time.monotonic()
    code, lines, _ = run_program(
        capsys, WEBHOOK_URL=server.url, WEBHOOK_TIMEOUT_SECONDS="1", WEBHOOK_MAX_ATTEMPTS="1"
    )
    assert code == EXIT_CONNECT_FAILED
    assert lines[-1]["error"] == "no complete answer within 1 s"
    assert time.monotonic() - started < 10


def test_connection_refused_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, lines, _ = run_program(capsys, WEBHOOK_URL=f"http://127.0.0.1:{port}/", WEBHOOK_MAX_ATTEMPTS="2")
    assert code == EXIT_CONNECT_FAILED
    assert lines[-1]["event"] == "webhook failed: could not connect"
    assert "Connection refused" in lines[-1]["error"]


def test_bad_configuration_exits_2_without_printing_a_secret(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, out = run_program(
        capsys,
        WEBHOOK_URL="ftp://example.com",
        WEBHOOK_SECRET_HEADER_0_NAME="X-Key",
        WEBHOOK_SECRET_HEADER_0="line\nbreak-" + SECRET,
    )
    assert code == EXIT_CONFIG_ERROR
    assert lines[-1]["variables"] == ["WEBHOOK_SECRET_HEADER_0", "WEBHOOK_URL"]
    assert SECRET not in out


def test_sigterm_stops_a_request_that_gets_no_answer(server: Server) -> None:
    server.answer.clear()
    env = {"WEBHOOK_URL": server.url, "WEBHOOK_TIMEOUT_SECONDS": "300", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobscheduler", "webhook"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.arrived.wait(15), "the request never arrived"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EXIT_CANCELLED
    assert json.loads(out.splitlines()[-1])["event"] == "webhook cancelled"


def test_a_secret_is_redacted_percent_encoded_and_json_escaped_too() -> None:
    secret = 'k/"y z'
    body = f'{{"a": "{json.dumps(secret)[1:-1]}", "u": "https://x/?k=k%2F%22y%20z"}}'.encode()
    assert excerpt(body, [secret]) == '{"a": "[REDACTED]", "u": "https://x/?k=[REDACTED]"}'


def test_the_excerpt_is_redacted_before_it_is_cut_and_in_linear_time() -> None:
    # A secret across the 1 KiB cut leaves no prefix of itself behind.
    cut = excerpt(b"x" * (EXCERPT_CHARS - 4) + SECRET.encode(), [SECRET])
    assert cut == "x" * (EXCERPT_CHARS - 4) + "[RED..."
    # A hostile body (one 16 KiB word) took 10 s with a backtracking pattern; now milliseconds.
    body = b"a" * (READ_BYTES - 20) + b' api_key="k-123"'
    started = time.monotonic()
    text = excerpt(body, [])
    assert time.monotonic() - started < 2
    assert "k-123" not in excerpt(body[-200:], [])
    assert len(text) == EXCERPT_CHARS + 3


def test_a_secret_cut_off_at_the_end_of_what_is_read_is_redacted_too() -> None:
    """Redaction ran on the first 16 KiB: a long secret echoed there, cut off at its end, matched
    none of its forms, and its start showed in the excerpt once earlier copies had shrunk."""
    from jobscheduler.webhook._request import READ_BYTES, excerpt

    secret = "tok_" + "Zq9" * 2000
    body = json.dumps({"echo": [secret, secret, secret]}).encode()
    assert len(body) > READ_BYTES
    out = excerpt(body[:READ_BYTES], [secret], cut=True)
    assert "tok_" not in out and "Zq9Zq9" not in out, out[:200]
