"""Who is calling: credentials in, a :class:`Caller` (identity and roles) out.

The gRPC adapter extracts :class:`Credentials` from a call; an :class:`Authenticator`
turns them into a :class:`Caller` or raises :class:`Unauthenticated`. Tokens are
never logged and never kept in the clear longer than one call: what is cached is
their SHA-256 digest.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Protocol

from jobscheduler.core.errors import Unauthenticated
from jobscheduler.core.files import ChangePoll

#: The role that sees and manages every job, whoever owns it.
ADMIN_ROLE: Final = "admin"
#: How often a token file is checked for changes (seconds).
TOKEN_FILE_CHECK_INTERVAL: Final = 1.0


@dataclass(frozen=True, slots=True)
class Caller:
    identity: str
    roles: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles


#: AUTH_MODE=none: one caller who may do everything (the server then listens on loopback only).
ANONYMOUS: Final = Caller("anonymous", frozenset({ADMIN_ROLE}))


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a call presents: a bearer token and/or a verified client certificate identity."""

    bearer_token: str | None = None
    peer_identity: str | None = None

    def __repr__(self) -> str:  # never print the token
        token = "<redacted>" if self.bearer_token else None
        return f"Credentials(bearer_token={token}, peer_identity={self.peer_identity!r})"


class Authenticator(Protocol):
    #: The AUTH_MODE it implements, for logs.
    mode: str

    async def authenticate(self, credentials: Credentials) -> Caller: ...

    async def close(self) -> None:
        """Release what it holds (connections); called once at shutdown."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def roles_for(names: Iterable[str], admins: frozenset[str]) -> frozenset[str]:
    """The admin role when any of ``names`` (an identity and its groups) is listed in AUTH_ADMINS."""
    return frozenset({ADMIN_ROLE}) if admins.intersection(names) else frozenset()


def parse_admins(value: str) -> frozenset[str]:
    return frozenset(item.strip() for item in value.split(",") if item.strip())


class AllowAll:
    """AUTH_MODE=none."""

    mode = "none"

    async def close(self) -> None:
        return None

    async def authenticate(self, credentials: Credentials) -> Caller:
        return ANONYMOUS


class ClientCertificates:
    """AUTH_MODE=mtls: the verified client certificate's identity is the caller."""

    mode = "mtls"

    def __init__(self, admins: frozenset[str] = frozenset()) -> None:
        self._admins = admins

    async def close(self) -> None:
        return None

    async def authenticate(self, credentials: Credentials) -> Caller:
        if not credentials.peer_identity:
            raise Unauthenticated("a client certificate signed by TLS_CLIENT_CA_FILE is required")
        identity = credentials.peer_identity
        return Caller(identity, roles_for([identity], self._admins))


class TokenFileError(ValueError):
    """The token file cannot be read or parsed; the message names the line."""


def parse_token_file(text: str) -> dict[str, Caller]:
    """``token,identity[,"role1,role2"]`` per line (like kube-apiserver's --token-auth-file).

    ``#`` starts a comment line; a token written as ``sha256:<hex>`` is stored hashed.
    Returns token digest -> caller.
    """
    out: dict[str, Caller] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise TokenFileError(f'line {number}: expected token,identity[,"role,..."]')
        token, identity = row[0].strip(), row[1].strip()
        roles = frozenset(r.strip() for r in (row[2] if len(row) > 2 else "").split(",") if r.strip())
        if token.startswith("sha256:"):
            digest = token.removeprefix("sha256:").lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise TokenFileError(f"line {number}: sha256: must be followed by 64 hex digits")
        else:
            digest = token_digest(token)
        if digest in out:
            raise TokenFileError(f"line {number}: the same token appears twice")
        out[digest] = Caller(identity, roles)
    return out


class TokenFile:
    """AUTH_MODE=token: bearer tokens listed in AUTH_TOKEN_FILE, re-read when the file changes.

    A replacement that cannot be parsed is reported through ``on_reload_error`` and the
    previous tokens stay in force.
    """

    mode = "token"

    def __init__(
        self,
        path: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_reload: Callable[[int], None] = lambda count: None,
        on_reload_error: Callable[[str], None] = lambda message: None,
    ) -> None:
        self._path = path
        self._on_reload = on_reload
        self._on_reload_error = on_reload_error
        # Stat before reading: a change during the first read is then seen at the next check.
        self._poll = ChangePoll([path], TOKEN_FILE_CHECK_INTERVAL, clock=clock)
        self._tokens = self._read()  # raises TokenFileError at startup

    def _read(self) -> dict[str, Caller]:
        try:
            with open(self._path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenFileError(f"cannot read {self._path}: {exc}") from None
        return parse_token_file(text)

    @property
    def count(self) -> int:
        return len(self._tokens)

    def _maybe_reload(self) -> None:
        states = self._poll.changed()
        if states is None:
            return
        try:
            tokens = self._read()
        except TokenFileError as exc:
            self._on_reload_error(str(exc))  # not accepted: tried again at the next check
            return
        self._poll.accept(states)
        self._tokens = tokens
        self._on_reload(len(tokens))

    async def close(self) -> None:
        return None

    async def authenticate(self, credentials: Credentials) -> Caller:
        if not credentials.bearer_token:
            raise Unauthenticated("missing credentials: send the metadata 'authorization: Bearer <token>'")
        self._maybe_reload()
        # Looked up by digest: timing can tell nothing about the tokens themselves.
        caller = self._tokens.get(token_digest(credentials.bearer_token))
        if caller is None:
            raise Unauthenticated("invalid token")
        return caller
