"""The DynamoDB store and the KMS cipher on moto: one-time states that DynamoDB's late TTL cannot
revive, connections with growing versions, and ciphertexts bound to their connection."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from apicbase_oauth import connect, tokens
from apicbase_oauth.adapters.connections import ConnectionRepository
from apicbase_oauth.adapters.dynamodb import connection_key, start_key, state_key
from apicbase_oauth.custody import with_backoff
from apicbase_oauth.errors import ConnectionNotFound, DependencyUnavailable, TokenUnreadable
from apicbase_oauth.model import ConnectSession, Grant, TokenPair
from tests.binding import start_id_of

STATE = "q" * 43
START = "s" * 43
AUTHORIZE_URL = f"https://app.apicbase.test/oauth/authorize/?state={STATE}"


def session(deps, *, ttl: int = 600) -> ConnectSession:
    return ConnectSession(
        connection_id="lib-1",
        application="default",
        client_id="client-default",
        scopes=("accounts", "library"),
        redirect_uri="https://broker.example.com/oauth/callback",
        return_url=None,
        code_verifier=None,
        expires_at=int(deps.now()) + ttl,
    )


def save(deps, connection_id: str, pair: TokenPair) -> Any:
    return deps.connections.save_grant(
        Grant(
            connection_id=connection_id,
            application="default",
            client_id="client-default",
            tokens=deps.cipher.encrypt(connection_id, pair),
            expires_at=int(deps.now()) + 3600,
            scope="accounts library",
            username="chef@example.com",
            source="callback",
        )
    )


def items(deps) -> list[dict[str, Any]]:
    return deps.connections.table.scan()["Items"]


# --- one-time states --------------------------------------------------------------------------
def test_a_state_is_consumed_once(deps) -> None:
    """Given a stored session, when its state is consumed twice, then only the first succeeds."""
    deps.sessions.put(STATE, session(deps), start_id=START, authorize_url=AUTHORIZE_URL)

    first = deps.sessions.consume(STATE)
    second = deps.sessions.consume(STATE)

    assert first is not None and first.connection_id == "lib-1"
    assert first.scopes == ("accounts", "library")
    assert second is None
    assert [item["pk"] for item in items(deps)] == [start_key(START)]


def test_an_expired_state_is_refused_while_its_item_still_exists(deps, clock) -> None:
    """Given a session past its expiry that DynamoDB's TTL has not deleted yet, when its state is
    consumed, then it is refused, because the expiry is part of the delete's condition."""
    deps.sessions.put(STATE, session(deps, ttl=600), start_id=START, authorize_url=AUTHORIZE_URL)
    clock.advance(600)

    assert deps.sessions.consume(STATE) is None
    assert state_key(STATE) in [item["pk"] for item in items(deps)]


def test_a_state_one_second_before_expiry_still_works(deps, clock) -> None:
    """Given a session one second from its expiry, when its state is consumed, then it works."""
    deps.sessions.put(STATE, session(deps, ttl=600), start_id=START, authorize_url=AUTHORIZE_URL)
    clock.advance(599)

    assert deps.sessions.consume(STATE) is not None


def test_a_session_item_never_holds_the_state(deps) -> None:
    """Given a connect session started through the use case, then its session item is keyed by
    the state's SHA-256 and holds no state; DynamoDB's TTL is set on it."""
    started = connect.start_connect_session(deps, "lib-1", redirect_uri=deps.settings.callback_url)

    [item] = [item for item in items(deps) if item["pk"].startswith("STATE#")]
    assert item["pk"] == "STATE#" + hashlib.sha256(started.state.encode()).hexdigest()
    assert started.state not in repr(item)
    assert int(item["ttl"]) > int(item["state_expires_at"])


def test_once_connect_url_is_opened_the_table_holds_no_state_and_no_binder(deps) -> None:
    """Given a session whose connect_url a browser opened, then the one-time start item (the
    only place the state was written, inside Apicbase's authorize URL) is gone, the session
    holds the binder's SHA-256 only, and the start id itself was never stored."""
    started = connect.start_connect_session(deps, "lib-1", redirect_uri=deps.settings.callback_url)
    start_id = start_id_of(started.connect_url)
    [start_item] = [item for item in items(deps) if item["pk"].startswith("START#")]

    sign_in = connect.begin_sign_in(deps, start_id=start_id)

    [item] = items(deps)
    assert start_item["pk"] == start_key(start_id) and start_id not in repr(start_item)
    assert int(start_item["ttl"]) > int(start_item["state_expires_at"])
    assert item["binder_hash"] == hashlib.sha256(sign_in.binder.encode()).hexdigest()
    assert started.state not in repr(item) and sign_in.binder not in repr(item)


# --- connections and their ciphertexts -------------------------------------------------------------
def test_the_stored_ciphertext_holds_no_token(deps) -> None:
    """Given a saved pair, then neither token appears in the stored item, and it decrypts back."""
    pair = TokenPair("access-plain-0001", "refresh-plain-0001")

    connection = save(deps, "lib-1", pair)

    [item] = items(deps)
    assert "access-plain-0001" not in repr(item) and "refresh-plain-0001" not in repr(item)
    assert deps.cipher.decrypt("lib-1", connection.tokens) == pair
    assert repr(pair) == "TokenPair(<redacted>)"
    assert "plain" not in repr(connection)


def test_a_ciphertext_copied_to_another_connection_does_not_decrypt(deps) -> None:
    """Given two connections, when A's ciphertext is written onto B's item (a table-level
    attacker), then B's tokens are unreadable rather than A's tokens served as B's."""
    save(deps, "lib-a", TokenPair("access-a", "refresh-a"))
    save(deps, "lib-b", TokenPair("access-b", "refresh-b"))
    stolen = deps.connections.get("lib-a").tokens
    deps.connections.table.update_item(
        Key={"pk": connection_key("lib-b")},
        UpdateExpression="SET tokens = :t",
        ExpressionAttributeValues={":t": stolen},
    )

    with pytest.raises(TokenUnreadable):
        deps.cipher.decrypt("lib-b", deps.connections.get("lib-b").tokens)
    with pytest.raises(TokenUnreadable) as raised:
        tokens.get_token(deps, "lib-b")
    assert "access-a" not in str(raised.value)


def test_a_tampered_ciphertext_is_unreadable(deps) -> None:
    """Given a ciphertext with one flipped byte, when it is decrypted, then TokenUnreadable."""
    ciphertext = bytearray(deps.cipher.encrypt("lib-1", TokenPair("access-1", "refresh-1")))
    ciphertext[-1] ^= 0xFF

    with pytest.raises(TokenUnreadable):
        deps.cipher.decrypt("lib-1", bytes(ciphertext))


def test_every_grant_write_increments_the_version(deps, clock) -> None:
    """Given a connection, when its grant is replaced, then the version grows by one, created_at
    stays and updated_at moves (a refresh holding the old version can no longer write)."""
    first = save(deps, "lib-1", TokenPair("access-1", "refresh-1"))
    clock.advance(60)

    second = save(deps, "lib-1", TokenPair("access-2", "refresh-2"))

    assert (first.version, second.version) == (1, 2)
    assert second.created_at == first.created_at
    assert second.updated_at == first.updated_at + 60
    assert deps.cipher.decrypt("lib-1", second.tokens).refresh_token == "refresh-2"


def test_a_deleted_connection_is_not_found(deps) -> None:
    """Given a deleted connection, then reading or deleting it again is ConnectionNotFound."""
    save(deps, "lib-1", TokenPair("access-1", "refresh-1"))

    deps.connections.forget("lib-1")

    with pytest.raises(ConnectionNotFound):
        deps.connections.get("lib-1")
    with pytest.raises(ConnectionNotFound):
        deps.connections.forget("lib-1")


# --- DynamoDB failures -----------------------------------------------------------------------------
def test_a_missing_table_is_a_dependency_failure_without_retry(aws, clock) -> None:
    """Given the table does not exist, then reads fail as DependencyUnavailable, not retryable."""
    store = ConnectionRepository(aws.session.resource("dynamodb").Table("no-such-table"), now=clock)

    with pytest.raises(DependencyUnavailable) as raised:
        store.get("lib-1")

    assert raised.value.retryable is False
    assert "ResourceNotFoundException" in raised.value.message


def test_a_write_that_must_land_is_retried_through_throttling() -> None:
    """Given two throttled attempts, when the write is retried with backoff, then the third
    lands and the waits grow."""
    attempts: list[int] = []
    waits: list[float] = []

    def write() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise DependencyUnavailable("DynamoDB failed (ThrottlingException)", retryable=True)
        return "stored"

    assert with_backoff(write, sleep=waits.append) == "stored"
    assert len(attempts) == 3
    assert 0 < waits[0] < waits[1]


def test_a_permanent_failure_is_not_retried() -> None:
    """Given a failure that retrying cannot fix (access denied), then it is raised at once."""
    attempts: list[int] = []

    def write() -> None:
        attempts.append(1)
        raise DependencyUnavailable("DynamoDB failed (AccessDeniedException)", retryable=False)

    with pytest.raises(DependencyUnavailable):
        with_backoff(write, sleep=lambda _: None)
    assert len(attempts) == 1
