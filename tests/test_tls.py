"""TLS and mTLS on the gRPC port: real channels on 127.0.0.1, certificates from trustme."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import trustme
from conftest import ROOT, ServeProcess, ServiceThread
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from structlog.testing import capture_logs

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler._generated import jobscheduler_pb2_grpc as pb_grpc
from jobscheduler.api.tls import TLSConfigError, is_loopback, peer_identity, server_credentials

TIMEOUT = 5
#: Longer than the certificate files' stat interval (1 s).
AFTER_CHECK_INTERVAL = 1.3
UNKNOWN_JOB = pb.GetJobStatusRequest(job_id="job-doesnotexi")
#: Settings that would change how `serve` runs if inherited from the environment.
_SECURITY_VARS = (
    "TLS_CERT_FILE",
    "TLS_KEY_FILE",
    "TLS_CLIENT_CA_FILE",
    "ALLOW_INSECURE",
    "AUTH_MODE",
    "AUTH_TOKEN_FILE",
    "GRPC_HOST",
    "HEALTH_HOST",
    "KUBECONFIG",
)
#: A fresh connection per channel: no subchannel (and so no TLS session) shared between channels.
_OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


class Pki:
    """A CA and files for a server certificate (127.0.0.1, localhost) and a client certificate."""

    def __init__(self, directory: pathlib.Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name=f"jobscheduler test CA {name}")
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        client = self.ca.issue_cert("alice.example", common_name="alice")
        self.ca_file = directory / "ca.pem"
        self.cert_file = directory / "server.pem"
        self.key_file = directory / "server-key.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        server.private_key_pem.write_to_path(str(self.key_file))
        self.cert_file.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
        self.ca_pem = self.ca.cert_pem.bytes()
        self.client_cert = b"".join(blob.bytes() for blob in client.cert_chain_pems)
        self.client_key = client.private_key_pem.bytes()

    def client_credentials(self, *, with_client_cert: bool = False) -> grpc.ChannelCredentials:
        if with_client_cert:
            return grpc.ssl_channel_credentials(self.ca_pem, self.client_key, self.client_cert)
        return grpc.ssl_channel_credentials(self.ca_pem)


def secure_channel(port: int, credentials: grpc.ChannelCredentials) -> grpc.Channel:
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=_OWN_CONNECTION)


def get_status_code(channel: grpc.Channel) -> grpc.StatusCode:
    """The code GetJobStatus of an unknown job ends with: NOT_FOUND when the call got through."""
    with channel, pytest.raises(grpc.RpcError) as err:
        pb_grpc.JobSchedulerStub(channel).GetJobStatus(UNKNOWN_JOB, timeout=TIMEOUT)
    code: grpc.StatusCode = err.value.code()
    return code


def answers(port: int, credentials: grpc.ChannelCredentials) -> bool:
    code = get_status_code(secure_channel(port, credentials))
    assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE), code
    return code is grpc.StatusCode.NOT_FOUND


def replace(path: pathlib.Path, content: bytes) -> None:
    """Write a new file and rename it over ``path`` (as a Secret volume update swaps files)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(content)
    os.replace(tmp, path)


@pytest.fixture
def pki(tmp_path: pathlib.Path) -> Pki:
    return Pki(tmp_path / "pki-a", "A")


@pytest.fixture
def tls_service(tmp_path: pathlib.Path, pki: Pki) -> Iterator[ServiceThread]:
    svc = ServiceThread(
        backend="local",
        data_dir=str(tmp_path / "data"),
        tls_cert_file=str(pki.cert_file),
        tls_key_file=str(pki.key_file),
    )
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def mtls_service(tmp_path: pathlib.Path, pki: Pki) -> Iterator[ServiceThread]:
    svc = ServiceThread(
        backend="local",
        data_dir=str(tmp_path / "data"),
        tls_cert_file=str(pki.cert_file),
        tls_key_file=str(pki.key_file),
        tls_client_ca_file=str(pki.ca_file),
    )
    try:
        yield svc
    finally:
        svc.stop()


# --- TLS ----------------------------------------------------------------------------------------


def test_tls_client_trusting_the_ca_gets_answers(tls_service: ServiceThread, pki: Pki) -> None:
    assert get_status_code(secure_channel(tls_service.port, pki.client_credentials())) is (
        grpc.StatusCode.NOT_FOUND
    )
    with secure_channel(tls_service.port, pki.client_credentials()) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_tls_refuses_plaintext_clients(tls_service: ServiceThread) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{tls_service.port}", options=_OWN_CONNECTION)
    assert get_status_code(channel) is grpc.StatusCode.UNAVAILABLE


def test_tls_client_not_trusting_the_ca_fails(tls_service: ServiceThread, tmp_path: pathlib.Path) -> None:
    other = Pki(tmp_path / "other", "other")
    assert not answers(tls_service.port, other.client_credentials())
    assert not answers(tls_service.port, grpc.ssl_channel_credentials())  # the system's roots


# --- mTLS ---------------------------------------------------------------------------------------


def test_mtls_without_a_client_certificate_fails(mtls_service: ServiceThread, pki: Pki) -> None:
    assert not answers(mtls_service.port, pki.client_credentials())


def test_mtls_with_a_client_certificate_signed_by_the_ca_works(mtls_service: ServiceThread, pki: Pki) -> None:
    assert answers(mtls_service.port, pki.client_credentials(with_client_cert=True))


def test_mtls_client_certificate_from_another_ca_fails(
    mtls_service: ServiceThread, pki: Pki, tmp_path: pathlib.Path
) -> None:
    other = Pki(tmp_path / "other", "other")
    foreign = grpc.ssl_channel_credentials(pki.ca_pem, other.client_key, other.client_cert)
    assert not answers(mtls_service.port, foreign)


async def _identity_over(
    credentials: grpc.ServerCredentials | None, channel_credentials: grpc.ChannelCredentials | None
) -> Any:
    """Start a grpc.aio server whose one method returns ``peer_identity(context)``; call it once."""

    async def who(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return json.dumps(peer_identity(context)).encode()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Identity", {"Who": grpc.unary_unary_rpc_method_handler(who)}
            ),
        )
    )
    address = "127.0.0.1:0"
    port = (
        server.add_insecure_port(address)
        if credentials is None
        else server.add_secure_port(address, credentials)
    )
    await server.start()
    try:
        target = f"127.0.0.1:{port}"
        channel = (
            grpc.aio.insecure_channel(target)
            if channel_credentials is None
            else grpc.aio.secure_channel(target, channel_credentials, options=_OWN_CONNECTION)
        )
        async with channel:
            reply: bytes = await channel.unary_unary("/test.Identity/Who")(b"", timeout=TIMEOUT)
        return json.loads(reply)
    finally:
        await server.stop(0)


def _client_with(ca: trustme.CA, common_name: str | None, *sans: x509.GeneralName) -> grpc.ChannelCredentials:
    """Channel credentials with a client certificate signed by ``ca`` naming exactly these
    (trustme cannot issue URI subject alternative names)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca._certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    cert = builder.sign(ca._private_key, hashes.SHA256())
    return grpc.ssl_channel_credentials(
        ca.cert_pem.bytes(),
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        cert.public_bytes(serialization.Encoding.PEM),
    )


def _identity_of(pki: Pki, client: grpc.ChannelCredentials) -> Any:
    mtls = server_credentials(str(pki.cert_file), str(pki.key_file), str(pki.ca_file))
    return asyncio.run(_identity_over(mtls, client))


def test_peer_identity_prefers_the_subject_alternative_name_to_the_common_name(pki: Pki) -> None:
    # trustme's client certificate: CN=alice, DNS SAN alice.example.
    assert _identity_of(pki, pki.client_credentials(with_client_cert=True)) == "alice.example"


def test_peer_identity_prefers_a_uri_san_then_a_dns_san(pki: Pki) -> None:
    uri = x509.UniformResourceIdentifier("spiffe://cluster.local/ns/team-a/sa/builder")
    dns = x509.DNSName("builder.team-a.example")
    # The URI wins wherever it is listed, and over the common name.
    assert _identity_of(pki, _client_with(pki.ca, "cn-builder", dns, uri)) == (
        "spiffe://cluster.local/ns/team-a/sa/builder"
    )
    assert _identity_of(pki, _client_with(pki.ca, "cn-builder", dns)) == "builder.team-a.example"


def test_peer_identity_is_the_common_name_only_without_uri_or_dns_san(pki: Pki) -> None:
    assert _identity_of(pki, _client_with(pki.ca, "cn-only")) == "cn-only"
    ip = x509.IPAddress(ipaddress.ip_address("10.1.2.3"))
    assert _identity_of(pki, _client_with(pki.ca, "cn-and-ip", ip)) == "cn-and-ip"
    assert _identity_of(pki, _client_with(pki.ca, None, ip)) == "10.1.2.3"


def test_peer_identity_falls_back_to_the_first_subject_alternative_name(pki: Pki) -> None:
    leaf = pki.ca.issue_cert("bob.example", "bob2.example")  # no common name
    assert "CN=" not in leaf.cert_chain_pems[0].bytes().decode()
    client = grpc.ssl_channel_credentials(
        pki.ca_pem, leaf.private_key_pem.bytes(), b"".join(b.bytes() for b in leaf.cert_chain_pems)
    )
    assert _identity_of(pki, client) == "bob.example"


def test_peer_identity_is_none_without_a_client_certificate(pki: Pki) -> None:
    def tls() -> grpc.ServerCredentials:  # credentials are for one port each
        return server_credentials(str(pki.cert_file), str(pki.key_file), "")

    # A client offering a certificate to a TLS-only server: it is not requested, so not seen.
    assert asyncio.run(_identity_over(tls(), pki.client_credentials(with_client_cert=True))) is None
    assert asyncio.run(_identity_over(tls(), pki.client_credentials())) is None
    assert asyncio.run(_identity_over(None, None)) is None


# --- rotation -----------------------------------------------------------------------------------


def test_rotation_serves_the_new_certificate_without_restart(
    tls_service: ServiceThread, pki: Pki, tmp_path: pathlib.Path
) -> None:
    port = tls_service.port
    b = Pki(tmp_path / "pki-b", "B")
    assert answers(port, pki.client_credentials())
    assert not answers(port, b.client_credentials())

    replace(pki.key_file, b.key_file.read_bytes())
    replace(pki.cert_file, b.cert_file.read_bytes())
    time.sleep(AFTER_CHECK_INTERVAL)

    assert answers(port, b.client_credentials())
    assert not answers(port, pki.client_credentials())


def test_rotation_keeps_the_last_good_certificate_when_the_new_files_are_bad(
    tls_service: ServiceThread, pki: Pki, tmp_path: pathlib.Path
) -> None:
    port = tls_service.port
    b = Pki(tmp_path / "pki-b", "B")
    good_cert = pki.cert_file.read_bytes()
    with capture_logs() as logs:
        answers(port, pki.client_credentials())  # a handshake: the fetcher's clock starts now
        # Garbage certificate.
        replace(pki.cert_file, b"this is not a certificate\n")
        time.sleep(AFTER_CHECK_INTERVAL)
        assert answers(port, pki.client_credentials())
        # A certificate with somebody else's key.
        replace(pki.cert_file, good_cert)
        replace(pki.key_file, b.key_file.read_bytes())
        time.sleep(AFTER_CHECK_INTERVAL)
        assert answers(port, pki.client_credentials())
        # The files disappear.
        pki.key_file.unlink()
        time.sleep(AFTER_CHECK_INTERVAL)
        assert answers(port, pki.client_credentials())
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert any("TLS_CERT_FILE" in e["error"] and "no PEM certificate" in e["error"] for e in errors), logs
    assert any("does not match" in e["error"] for e in errors), logs
    assert any("TLS_KEY_FILE: cannot read" in e["error"] for e in errors), logs
    assert not any(entry["event"] == "TLS certificate reloaded" for entry in logs), logs

    # Good files again (here: the B pair): picked up, as any later change would be.
    replace(pki.key_file, b.key_file.read_bytes())
    replace(pki.cert_file, b.cert_file.read_bytes())
    time.sleep(AFTER_CHECK_INTERVAL)
    assert answers(port, b.client_credentials())


def test_rotation_follows_a_kubernetes_secret_symlink_swap(pki: Pki, tmp_path: pathlib.Path) -> None:
    """A Secret volume: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>/; updates swap ..data."""
    volume = tmp_path / "secret"
    volume.mkdir()
    b = Pki(tmp_path / "pki-b", "B")

    def version(name: str, source: Pki) -> None:
        (volume / name).mkdir()
        (volume / name / "tls.crt").write_bytes(source.cert_file.read_bytes())
        (volume / name / "tls.key").write_bytes(source.key_file.read_bytes())
        link = volume / "..data_tmp"
        link.symlink_to(name)
        os.replace(link, volume / "..data")

    version("..v1", pki)
    (volume / "tls.crt").symlink_to("..data/tls.crt")
    (volume / "tls.key").symlink_to("..data/tls.key")
    svc = ServiceThread(
        backend="local",
        data_dir=str(tmp_path / "data"),
        tls_cert_file=str(volume / "tls.crt"),
        tls_key_file=str(volume / "tls.key"),
    )
    try:
        assert answers(svc.port, pki.client_credentials())
        version("..v2", b)
        time.sleep(AFTER_CHECK_INTERVAL)
        assert answers(svc.port, b.client_credentials())
        assert not answers(svc.port, pki.client_credentials())
    finally:
        svc.stop()


# --- startup checks -----------------------------------------------------------------------------


def test_server_credentials_name_the_setting_at_fault(pki: Pki, tmp_path: pathlib.Path) -> None:
    other = Pki(tmp_path / "other", "other")
    cert, key, ca = str(pki.cert_file), str(pki.key_file), str(pki.ca_file)
    cases = {
        "TLS_CERT_FILE: cannot read": (str(tmp_path / "missing.pem"), key, ""),
        "TLS_KEY_FILE: cannot read": (cert, str(tmp_path / "missing.pem"), ""),
        "TLS_CLIENT_CA_FILE: cannot read": (cert, key, str(tmp_path / "missing.pem")),
        "TLS_CERT_FILE: ": (key, key, ""),
        "TLS_KEY_FILE: ": (cert, cert, ""),
        "does not match": (cert, str(other.key_file), ""),
        "TLS_CLIENT_CA_FILE: ": (cert, key, key),
    }
    for expected, (c, k, a) in cases.items():
        with pytest.raises(TLSConfigError, match=expected):
            server_credentials(c, k, a)
    assert isinstance(TLSConfigError("x"), ValueError)
    server_credentials(cert, key, ca)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def _serve_env(tmp_path: pathlib.Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SECURITY_VARS}
    return {
        **env,
        "BACKEND": "local",
        "DATA_DIR": str(tmp_path / "data"),
        "GRPC_PORT": "0",
        "HEALTH_PORT": "0",
        "HEALTH_HOST": "127.0.0.1",
        "READINESS_INTERVAL_SECONDS": "0.5",
        **extra,
    }


def _serve_fails(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobscheduler", "serve"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("settings", "variable"),
    [
        ({"TLS_CERT_FILE": "{cert}"}, "TLS_KEY_FILE"),
        ({"TLS_KEY_FILE": "{key}"}, "TLS_CERT_FILE"),
        ({"TLS_CLIENT_CA_FILE": "{ca}"}, "TLS_CERT_FILE"),
        ({"TLS_CERT_FILE": "{missing}", "TLS_KEY_FILE": "{key}"}, "TLS_CERT_FILE"),
        ({"TLS_CERT_FILE": "{cert}", "TLS_KEY_FILE": "{missing}"}, "TLS_KEY_FILE"),
        ({"TLS_CERT_FILE": "{cert}", "TLS_KEY_FILE": "{other_key}"}, "TLS_KEY_FILE"),
        ({"GRPC_HOST": "0.0.0.0"}, "GRPC_HOST"),
    ],
)
def test_serve_exits_2_naming_the_variable(
    tmp_path: pathlib.Path, pki: Pki, settings: dict[str, str], variable: str
) -> None:
    other = Pki(tmp_path / "other", "other")
    paths = {
        "cert": str(pki.cert_file),
        "key": str(pki.key_file),
        "ca": str(pki.ca_file),
        "missing": str(tmp_path / "missing.pem"),
        "other_key": str(other.key_file),
    }
    env = _serve_env(tmp_path, **{k: v.format(**paths) for k, v in settings.items()})
    env.setdefault("GRPC_HOST", "127.0.0.1")
    result = _serve_fails(env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert variable in result.stderr, result.stderr
    assert '"serving"' not in result.stdout


def test_plaintext_on_all_interfaces_message(tmp_path: pathlib.Path) -> None:
    result = _serve_fails(_serve_env(tmp_path, GRPC_HOST="0.0.0.0"))
    assert result.returncode == 2
    assert (
        "plaintext gRPC on a non-loopback address needs TLS_CERT_FILE/TLS_KEY_FILE or ALLOW_INSECURE=true"
        in result.stderr
    ), result.stderr


def _served(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ServeProcess:
    for var in _SECURITY_VARS:  # ServeProcess starts from os.environ
        monkeypatch.delenv(var, raising=False)
    return ServeProcess(env)


def test_serve_with_tls_logs_it_and_answers_tls_clients(
    tmp_path: pathlib.Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _serve_env(
        tmp_path,
        GRPC_HOST="127.0.0.1",
        TLS_CERT_FILE=str(pki.cert_file),
        TLS_KEY_FILE=str(pki.key_file),
        TLS_CLIENT_CA_FILE=str(pki.ca_file),
    )
    served = _served(env, monkeypatch)
    try:
        serving = next(line for line in served.lines if line.get("event") == "serving")
        assert serving["plaintext"] is False
        assert serving["mtls"] is True
        assert answers(served.grpc_port, pki.client_credentials(with_client_cert=True))
        assert not answers(served.grpc_port, pki.client_credentials())
        channel = grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}", options=_OWN_CONNECTION)
        assert get_status_code(channel) is grpc.StatusCode.UNAVAILABLE
    finally:
        assert served.stop() == 0
    assert not any(line.get("level") == "warning" and "plaintext" in line["event"] for line in served.lines)


def test_serve_plaintext_on_loopback_warns(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = _served(_serve_env(tmp_path, GRPC_HOST="127.0.0.1"), monkeypatch)
    try:
        serving = next(line for line in served.lines if line.get("event") == "serving")
        assert serving["plaintext"] is True
        assert serving["mtls"] is False
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            warnings = [line for line in served.lines if line.get("level") == "warning"]
            if any("plaintext" in line["event"] for line in warnings):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"no plaintext warning in {served.lines}")
        assert len([w for w in warnings if "plaintext" in w["event"]]) == 1
    finally:
        assert served.stop() == 0
