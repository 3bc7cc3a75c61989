"""TLS and mTLS for the gRPC port: credentials that follow certificate rotation, the peer's identity.

The certificate, key and client CA files are re-read when they change (checked at most once
per ``check_interval`` seconds, on new handshakes), so a Kubernetes Secret update or a
cert-manager renewal takes effect without a restart. A replacement that cannot be read or
whose key does not match its certificate is logged and ignored: the last good pair keeps
serving.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import ssl
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import grpc

from jobscheduler.core.files import ChangePoll
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.api.tls")

#: How often, at most, the files are stat-ed for changes.
CHECK_INTERVAL_SECONDS: Final = 1.0

_CERT_VAR: Final = "TLS_CERT_FILE"
_KEY_VAR: Final = "TLS_KEY_FILE"
_CA_VAR: Final = "TLS_CLIENT_CA_FILE"
_PEM_CERT: Final = re.compile(rb"-----BEGIN CERTIFICATE-----\s+(.+?)-----END CERTIFICATE-----", re.DOTALL)
_PEM_KEY: Final = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")

#: What a file's ``os.stat`` says (device, inode, size, mtime), or the error that stat raised.


class TLSConfigError(ValueError):
    """A TLS file is missing, unreadable or inconsistent; the message names the setting."""


class _Changing(TLSConfigError):
    """The files are being replaced right now: try again at the next check."""


@dataclass(frozen=True)
class _Material:
    cert: bytes
    key: bytes
    client_ca: bytes | None
    fingerprint: str

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(self.key, self.cert)], self.client_ca)


def _read(var: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TLSConfigError(f"{var}: cannot read {path}: {exc.strerror or exc}") from None


def _refuse_encrypted_key() -> NoReturn:
    raise TLSConfigError(f"{_KEY_VAR}: the private key is encrypted; gRPC needs an unencrypted key")


def _load(cert_file: str, key_file: str, client_ca_file: str) -> _Material:
    """Read and check the files; raises TLSConfigError naming the setting at fault."""
    cert = _read(_CERT_VAR, cert_file)
    key = _read(_KEY_VAR, key_file)
    client_ca = _read(_CA_VAR, client_ca_file) if client_ca_file else None
    first = _PEM_CERT.search(cert)
    if first is None:
        raise TLSConfigError(f"{_CERT_VAR}: {cert_file} holds no PEM certificate")
    if not _PEM_KEY.search(key):
        raise TLSConfigError(f"{_KEY_VAR}: {key_file} holds no PEM private key")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            cert_file, key_file, password=_refuse_encrypted_key
        )
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSConfigError(
                f"{_KEY_VAR}: the private key in {key_file} does not match the certificate in "
                f"{_CERT_VAR} ({cert_file})"
            ) from None
        raise TLSConfigError(
            f"{_CERT_VAR}/{_KEY_VAR}: cannot load {cert_file} and {key_file}: {exc}"
        ) from None
    except OSError as exc:  # replaced between our read and OpenSSL's
        raise TLSConfigError(f"{_CERT_VAR}/{_KEY_VAR}: cannot read the files: {exc}") from None
    if client_ca is not None:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=client_ca.decode("ascii"))
        except (ssl.SSLError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            raise TLSConfigError(
                f"{_CA_VAR}: {client_ca_file} holds no usable PEM CA certificate: {exc}"
            ) from None
    # OpenSSL read the files itself: make sure it checked what we are about to hand to gRPC.
    if _read(_CERT_VAR, cert_file) != cert or _read(_KEY_VAR, key_file) != key:
        raise _Changing(f"{_CERT_VAR}/{_KEY_VAR}: the files changed while they were read")
    try:
        der = ssl.PEM_cert_to_DER_cert(first.group(0).decode("ascii"))
        fingerprint = hashlib.sha256(der).hexdigest()
    except ValueError:
        fingerprint = "?"
    return _Material(cert, key, client_ca, fingerprint)


class _Reloader:
    """The certificate fetcher gRPC core calls (from its own threads) on each new handshake."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str, check_interval: float) -> None:
        self._files = (cert_file, key_file, client_ca_file)
        # Stat before reading: a change during the initial read is then seen at the next check.
        self._poll = ChangePoll([p for p in self._files if p], check_interval)
        self.current = _load(*self._files)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when the files changed and are good; None (keep serving) otherwise."""
        try:
            states = self._poll.changed()
            if states is None:
                return None
            try:
                material = _load(*self._files)
            except _Changing:
                return None  # not recorded as seen: read again at the next check
            except TLSConfigError as exc:
                self._poll.accept(states)  # logged once per bad state, not at every check
                log.error(
                    "TLS files changed but cannot be used; keeping the last good certificate",
                    error=str(exc),
                    fingerprint=self.current.fingerprint,
                )
                return None
            self._poll.accept(states)
            if material == self.current:
                return None
            self.current = material
            log.info(
                "TLS certificate reloaded",
                cert_file=self._files[0],
                fingerprint=material.fingerprint,
                mtls=material.client_ca is not None,
            )
            return material.configuration()
        except Exception as exc:  # never let a surprise break handshakes: keep the last good one
            log.error("TLS reload check failed; keeping the last good certificate", error=repr(exc))
            return None


def check_files(cert_file: str, key_file: str, client_ca_file: str) -> None:
    """Raises ``TLSConfigError`` (naming the setting) unless the files make a usable TLS
    configuration: readable PEM files, and a key that matches the certificate."""
    _require(cert_file, key_file)
    _load(cert_file, key_file, client_ca_file)


def _require(cert_file: str, key_file: str) -> None:
    if not cert_file:
        raise TLSConfigError(f"{_CERT_VAR}: not set")
    if not key_file:
        raise TLSConfigError(f"{_KEY_VAR}: required with {_CERT_VAR}")


def server_credentials(
    cert_file: str,
    key_file: str,
    client_ca_file: str,
    *,
    check_interval: float = CHECK_INTERVAL_SECONDS,
) -> grpc.ServerCredentials:
    """Credentials for ``add_secure_port``: TLS with this certificate and key, and mTLS (client
    certificates signed by ``client_ca_file`` required) when that is set. The files are
    re-read when they change. Use one credentials object per port: gRPC hands the initial
    configuration to the first port only.

    Raises ``TLSConfigError`` (a ``ValueError`` naming the setting) when a file is missing or
    unreadable, holds no PEM data, or the key does not match the certificate.
    """
    _require(cert_file, key_file)
    reloader = _Reloader(cert_file, key_file, client_ca_file, check_interval)
    log.info(
        "TLS certificate loaded",
        cert_file=cert_file,
        fingerprint=reloader.current.fingerprint,
        mtls=bool(client_ca_file),
    )
    return grpc.dynamic_ssl_server_credentials(
        reloader.current.configuration(),
        reloader,  # type: ignore[arg-type]  # gRPC accepts None ("unchanged"); the stubs say otherwise
        require_client_authentication=bool(client_ca_file),
    )


#: Where the identity is read from, in order: the first URI SAN (e.g. a SPIFFE id), the first
#: DNS SAN, the common name (deprecated for identity since RFC 6125), then any other SAN
#: (IP address, e-mail).
_IDENTITY_PROPERTIES: Final = ("peer_uri", "peer_dns", "x509_common_name", "x509_subject_alternative_name")


def peer_identity(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The verified client certificate's identity: its first URI subject alternative name,
    else its first DNS SAN; the common name only when it has neither (then any other SAN).
    None on plaintext, or over TLS without a client certificate.

    Client certificates are only requested when they are also required and verified
    (``server_credentials`` with a client CA), so a certificate seen here was verified.
    """
    auth = context.auth_context()
    if b"ssl" not in auth.get("transport_security_type", ()):
        return None
    for key in _IDENTITY_PROPERTIES:
        for value in auth.get(key, ()):
            if value:
                return value.decode("utf-8", "replace")
    return None


_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP address, possibly in brackets, or a name) is only reachable
    from this machine: 127.0.0.0/8, ::1 or localhost."""
    host = host.strip().strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def host_of(address: str) -> str:
    """The host part of a gRPC listen address ``host:port`` or ``[v6]:port``."""
    if address.startswith("["):
        return address[1 : address.find("]")] if "]" in address else address
    return address.rsplit(":", 1)[0] if ":" in address else address
