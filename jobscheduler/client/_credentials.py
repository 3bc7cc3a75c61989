"""How the client connects: plaintext, TLS or mTLS channel credentials, and the bearer token
(a literal, or a file read again whenever it changes: a projected ServiceAccount token)."""

from __future__ import annotations

import ipaddress
import os
import pathlib
import threading
from typing import Any

import grpc

StrPath = str | os.PathLike[str]

#: Channel options of every client channel: keepalive pings find a connection that died silently
#: (a NAT or proxy that forgot it) during a long watch; the server allows one per 5 minutes by
#: default without calls, and these are only sent while a call is open.
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
)


def _host(target: str) -> str:
    """The host part of a gRPC target (``host:port``, ``[v6]:port``, ``dns:///host:port``)."""
    rest = target
    if rest.startswith("dns:"):
        rest = rest[4:].lstrip("/")
        if "/" in rest:  # dns://authority/host:port
            rest = rest.split("/", 1)[1]
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    return rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest


def is_loopback_target(target: str) -> bool:
    """Unix sockets, localhost and loopback addresses: plaintext is the default only for those."""
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    host = _host(target)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(path: StrPath | None) -> bytes | None:
    return None if path is None else pathlib.Path(path).read_bytes()


def channel_credentials(
    target: str,
    *,
    tls: bool | None,
    ca_file: StrPath | None,
    client_cert_file: StrPath | None,
    client_key_file: StrPath | None,
) -> grpc.ChannelCredentials | None:
    """TLS credentials, or None for a plaintext channel.

    ``tls=None`` picks TLS whenever a certificate file is given or the target is not loopback.
    """
    if not target or len(target) > 1024 or not target.isprintable():
        raise ValueError(f"not a gRPC target: {target[:64]!r} (host:port, unix:/path, dns:///host:port)")
    if (client_cert_file is None) != (client_key_file is None):
        raise ValueError("client_cert_file and client_key_file go together (mTLS)")
    wants_tls = ca_file is not None or client_cert_file is not None
    if tls is None:
        tls = wants_tls or not is_loopback_target(target)
    if not tls:
        if wants_tls:
            raise ValueError("tls=False does not go with ca_file or a client certificate")
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file),
        private_key=_read(client_key_file),
        certificate_chain=_read(client_cert_file),
    )


class Token:
    """The bearer token sent as ``authorization: Bearer <token>`` on every call.

    From a file, the token is read again when the file's identity, size or modification time
    changes (a kubelet rotates a projected token by swapping a symlink), checked on every call.
    """

    def __init__(self, token: str | None = None, token_file: StrPath | None = None) -> None:
        if token is not None and token_file is not None:
            raise ValueError("give token or token_file, not both")
        self._file = None if token_file is None else pathlib.Path(token_file)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._metadata: tuple[tuple[str, str], ...] = ()
        if token is not None:
            self._metadata = self._header(token, "token")
        elif self._file is not None:
            self.metadata()  # a missing or unreadable file fails now, not on the first call

    @staticmethod
    def _header(token: str, source: str) -> tuple[tuple[str, str], ...]:
        token = token.strip()
        if not token or any(ord(c) < 0x21 or ord(c) == 0x7F for c in token):
            raise ValueError(f"the bearer token from {source} is empty or has spaces or control characters")
        return (("authorization", f"Bearer {token}"),)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata: the current token (re-read if its file changed), or nothing."""
        if self._file is None:
            return self._metadata
        st = self._file.stat()
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._metadata = self._header(self._file.read_text(), str(self._file))
                    self._stamp = stamp
        return self._metadata
