"""The broker's domain model: connect sessions, connections and token pairs.

Immutable dataclasses, no AWS: adapters build them, use cases pass them around, and the HTTP
edge turns them into JSON.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar, dataclass_transform

ACTIVE = "active"
NEEDS_REAUTHORIZATION = "needs_reauthorization"
# OAuth's error answers on the redirect (RFC 6749 4.1.2.1); anything else is reported generically.
REDIRECT_ERRORS = frozenset(
    {
        "access_denied",
        "invalid_request",
        "unauthorized_client",
        "unsupported_response_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
    }
)

# Letters, digits and . _ : - ; starts with a letter or digit; at most 128 characters.
CONNECTION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# Pairs are sealed locally (envelope encryption), so KMS sets no limit; this one keeps a parked
# pair within one SQS message (adapters.queue) and any pair far inside a DynamoDB item. Real
# tokens are 30 characters (django-oauth-toolkit) to a few KiB (JWTs).
MAX_TOKEN_LENGTH = 8192
# Printable ASCII without spaces (RFC 6749 appendix A), '"' and '\\' (Bearer tokens never have them).
TOKEN_RE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


_T = TypeVar("_T")


@dataclass_transform(frozen_default=True, eq_default=False, field_specifiers=(field,))
def immutable(cls: type[_T]) -> type[_T]:
    """A dataclass whose fields nobody assigns (mypy holds it frozen) and whose instances nobody
    compares or hashes: at run time it gets ``__init__`` and ``__repr__`` only. The generated
    ``__eq__``, ``__hash__``, ``__setattr__`` and ``__delattr__`` of a frozen dataclass cost every
    cold start their creation (docs/BENCHMARKS.md). Compared by value? ``@dataclass(frozen=True)``."""
    return dataclass(eq=False)(cls)


def new_generation() -> str:
    """A connection's generation: random, so that no two grants of one connection share one."""
    return uuid.uuid4().hex


# Whole matches: re.match(...$) would accept a trailing newline.
def is_connection_id(value: str) -> bool:
    return CONNECTION_ID_RE.fullmatch(value) is not None


def is_token(value: str) -> bool:
    return TOKEN_RE.fullmatch(value) is not None


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str

    def __repr__(self) -> str:
        return "TokenPair(<redacted>)"


@immutable
class ConnectSession:
    connection_id: str
    application: str
    client_id: str
    scopes: tuple[str, ...]
    redirect_uri: str
    return_url: str | None
    code_verifier: str | None
    expires_at: int
    # Who must sign in (checked by introspection before the grant is stored), and the
    # SHA-256 of the browser binder that GET /oauth/start set as a cookie (None: never started).
    expected_username: str | None = None
    binder_hash: str | None = None


@immutable
class Connection:
    connection_id: str
    application: str
    client_id: str
    status: str
    tokens: bytes
    version: int
    expires_at: int
    scope: str | None = None
    username: str | None = None
    created_at: int | None = None
    updated_at: int | None = None
    last_refresh_at: int | None = None
    refresh_count: int = 0
    consecutive_failures: int = 0
    next_attempt_at: int | None = None
    last_error: str | None = None
    reauthorization_reason: str | None = None
    lease_owner: str | None = None
    lease_until: int | None = None
    interrupted_lease_until: int | None = None
    source: str | None = None
    # The username the grant that this one replaced was introspected as (reconnects).
    previous_username: str | None = None
    # The name of the library the grant acts on (the user's active library), as Apicbase said.
    library: str | None = None
    # Which grant this is: a new one with every grant stored (connect, reconnect after a DELETE,
    # import), kept by the tombstone a DELETE leaves. Every late write names the generation it
    # belongs to, so nothing of an older grant writes into a newer one ("" before generations).
    generation: str = ""
    # The version whose access token Apicbase refused (401) right after it replaced a refused one,
    # and until when that token is not refreshed again for a 401 (``tokens.REFUSED_TOKEN_SECONDS``).
    refused_version: int | None = None
    refused_until: int | None = None

    def __repr__(self) -> str:
        return f"Connection(connection_id={self.connection_id!r}, status={self.status!r}, version={self.version})"


@immutable
class ConnectionSummary:
    connection_id: str
    status: str
    application: str | None
    scope: str | None
    username: str | None
    updated_at: int | None


@immutable
class StartedSession:
    """A connect session just stored: where to send the person, and until when it works.

    ``connect_url`` (the broker's GET /oauth/start with a one-time id) is the only URL for a
    person: it binds the flow to their browser, then redirects to ``authorize_url``. The
    authorize URL and the state stay inside the broker (and travel to Apicbase and back).
    """

    connection_id: str
    authorize_url: str
    state: str
    expires_at: int
    redirect_uri: str
    scopes: tuple[str, ...]
    connect_url: str
    expected_username: str | None = None

    def __repr__(self) -> str:
        return f"StartedSession(connection_id={self.connection_id!r}, expires_at={self.expires_at})"


@immutable
class AccessToken:
    connection_id: str
    access_token: str
    expires_at: int
    scope: str | None
    # Which pair of the connection it is (its generation and version), and whether Apicbase
    # refused it right after it replaced a refused token: then a 401 is passed on, not refreshed.
    generation: str = ""
    version: int = 0
    refused: bool = False

    def __repr__(self) -> str:
        return f"AccessToken(connection_id={self.connection_id!r}, expires_at={self.expires_at})"


@immutable
class Grant:
    """A pair Apicbase issued (a code exchanged, tokens imported, a parked pair), sealed, with
    what the connection records of it."""

    connection_id: str
    application: str
    client_id: str
    tokens: bytes = field(repr=False)
    expires_at: int
    scope: str | None
    username: str | None
    source: str
    generation: str = ""


@immutable
class Rescue:
    """A sealed pair that Apicbase issued but that could not be written to its connection.

    Applied, conditionally, before any later refresh of the connection.
    """

    connection_id: str
    kind: str  # "refresh" (applied over base_version) or "grant" (if nothing was written since parked_at)
    tokens: bytes
    base_version: int
    application: str
    client_id: str
    expires_at: int
    scope: str | None
    username: str | None
    source: str
    parked_at: int
    # The connection's generation it belongs to: a grant's own, a refresh's the one it refreshed.
    generation: str = ""

    def __repr__(self) -> str:
        return f"Rescue(connection_id={self.connection_id!r}, kind={self.kind!r}, base_version={self.base_version})"

    @classmethod
    def of_grant(cls, grant: Grant, *, parked_at: int) -> Rescue:
        """A grant's rescue: applied only if nothing was written to its connection since."""
        return cls(**_grant_fields(grant), kind="grant", base_version=0, parked_at=parked_at)

    @property
    def grant(self) -> Grant:
        """The pair and what its connection records of it, as the parked write would store them."""
        return Grant(**_grant_fields(self))


def _grant_fields(source: Grant | Rescue) -> dict[str, Any]:
    return {f.name: getattr(source, f.name) for f in fields(Grant)}


@immutable
class RefreshResult:
    outcome: str
    connection: Connection
    tokens: TokenPair | None = None  # the plaintext pair when this call stored it
