"""jobscheduler.client's connection settings against real servers on 127.0.0.1 (local backend):
TLS, mTLS, bearer tokens (literal, and a file read again when it changes), bad settings."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import pytest
from conftest import ServiceThread, local_service
from test_tls import Pki

from jobscheduler.client import Client, JobPhase, NotFound, TimerJob, Unauthenticated, Unavailable
from jobscheduler.client._credentials import Token, is_loopback_target

#: Never runs: every job built from it is held an hour (SCHEDULED), so no process starts.
HELD = TimerJob(1, "t", "http://127.0.0.1:9/")


def target(svc: ServiceThread) -> str:
    return f"127.0.0.1:{svc.port}"


# --- TLS, mTLS, tokens --------------------------------------------------------------------------


def _secure_service(tmp_path: pathlib.Path, pki: Pki, **settings: Any) -> ServiceThread:
    return ServiceThread(
        backend="local",
        data_dir=str(tmp_path / "data"),
        tls_cert_file=str(pki.cert_file),
        tls_key_file=str(pki.key_file),
        **settings,
    )


def test_tls_and_mtls(tmp_path: pathlib.Path) -> None:
    pki = Pki(tmp_path / "pki", "client")
    cert, key = tmp_path / "client.pem", tmp_path / "client-key.pem"
    cert.write_bytes(pki.client_cert)
    key.write_bytes(pki.client_key)
    svc = _secure_service(tmp_path, pki, tls_client_ca_file=str(pki.ca_file))
    try:
        with Client(target(svc), ca_file=pki.ca_file, client_cert_file=cert, client_key_file=key) as client:
            assert client.schedule("m", HELD, delay_seconds=3600).phase is JobPhase.SCHEDULED
        # TLS without the client certificate, and plaintext, do not get through.
        for kwargs in ({"ca_file": pki.ca_file}, {"tls": False}):
            with Client(target(svc), retries=0, timeout=5, **kwargs) as client, pytest.raises(Unavailable):
                client.get("job-doesnotexi")
    finally:
        svc.stop()
    svc = _secure_service(tmp_path, pki)
    try:
        with Client(f"localhost:{svc.port}", ca_file=pki.ca_file) as client, pytest.raises(NotFound):
            client.get("job-doesnotexi")
    finally:
        svc.stop()


ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789"


def test_bearer_token_literal_and_file_read_again_when_it_changes(tmp_path: pathlib.Path) -> None:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text(f"{ALICE},alice\n{BOB},bob\n")
    svc = local_service(tmp_path / "data", auth_mode="token", auth_token_file=str(tokens))
    mine = tmp_path / "token"
    mine.write_text(ALICE + "\n")  # (a trailing newline, as files have)
    try:
        with Client(target(svc), token_file=mine) as client:
            assert client.schedule("t1", HELD, delay_seconds=3600).owner == "alice"
            replacement = tmp_path / "token.new"
            replacement.write_text(BOB)
            os.replace(replacement, mine)  # as the kubelet rotates a projected token
            assert client.schedule("t2", HELD, delay_seconds=3600).owner == "bob"
        with Client(target(svc), token=BOB) as client:
            assert [j.name for j in client.list()] == ["t2"]
        with Client(target(svc), token="wrong-token-0123456789") as client, pytest.raises(Unauthenticated):
            client.get("job-doesnotexi")
    finally:
        svc.stop()


def test_connection_settings_are_checked_up_front(tmp_path: pathlib.Path) -> None:
    assert is_loopback_target("127.0.0.1:1") and is_loopback_target("[::1]:1")
    assert is_loopback_target("localhost:1") and is_loopback_target("unix:/tmp/s")
    assert not is_loopback_target("jobs.example.com:443") and not is_loopback_target("10.0.0.1:1")
    with pytest.raises(ValueError, match="control characters"):
        Token("abc\x00def")
    with pytest.raises(ValueError, match="not both"):
        Token("a", tmp_path / "x")
    with pytest.raises(FileNotFoundError):
        Token(token_file=tmp_path / "missing")
    for bad in ("", "host:1\n", "x" * 2000):
        with pytest.raises(ValueError, match="not a gRPC target"):
            Client(bad)
    with pytest.raises(ValueError, match="go together"):
        Client("127.0.0.1:1", client_cert_file=tmp_path / "c.pem")
