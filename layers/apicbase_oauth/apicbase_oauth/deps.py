"""The adapters a use case needs, built once per container from the settings."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from .adapters.apicbase import ApicbaseClient
from .adapters.connections import ConnectionRepository
from .adapters.credentials import CredentialStore
from .adapters.crypto import TokenCipher
from .adapters.events import EventPublisher
from .adapters.sessions import SessionStore
from .config import Settings

if TYPE_CHECKING:  # only the scheduler has a queue, only the events function the stream: others never import them
    from .adapters.queue import RefreshQueue
    from .adapters.stream import FailedBatches, StreamReader

# Short timeouts: a Lambda behind API Gateway has 30 s in all. botocore's standard mode retries
# throttling, 5xx and timeouts with backoff (three attempts in all: botocore's ``max_attempts``
# would count retries, four attempts).
AWS_CONFIG = Config(
    connect_timeout=2,
    read_timeout=5,
    retries={"mode": "standard", "total_max_attempts": 3},
    user_agent_extra="apicbase-oauth-broker",
)
# The writes that must land once Apicbase has answered (the pair, its rescue item, its SQS copy):
# one short attempt each, retried by custody under the function's deadline, so that each attempt
# costs a known time and the time kept for them (custody.reserve_seconds) follows from this.
MUST_LAND_CONFIG = Config(
    connect_timeout=1,
    read_timeout=2,
    retries={"mode": "standard", "total_max_attempts": 1},
    user_agent_extra="apicbase-oauth-broker",
)

# boto3 sessions are not thread-safe: clients are built one at a time.
_BUILD_LOCK = threading.Lock()


class LazyClient:
    """A boto3 client (or Table) built on first use. Building one costs 10-150 ms of CPU
    (service models, endpoint rules); a function pays only for the clients it calls (the
    scheduler never calls KMS or EventBridge), and importing a handler stays cheap."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._target: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._target is None:
            with _BUILD_LOCK:
                if self._target is None:
                    self._target = self._build()
        return getattr(self._target, name)


# Mutable on purpose (handlers bind the deadline, tests swap the clock); nothing compares two.
@dataclass(eq=False)
class Deps:
    settings: Settings
    sessions: SessionStore
    connections: ConnectionRepository
    cipher: TokenCipher
    credentials: CredentialStore
    apicbase: ApicbaseClient
    events: EventPublisher
    queue: RefreshQueue | None = None
    # The connections table's stream and the dead letters of its event source (the events function).
    stream: StreamReader | None = None
    failed_batches: FailedBatches | None = None
    now: Callable[[], float] = field(default=time.time)
    sleep: Callable[[float], None] = field(default=time.sleep)
    # Seconds left in the current invocation (``bind``); unbounded outside Lambda.
    time_left: Callable[[], float] = field(default=lambda: math.inf)

    def bind(self, context: Any) -> None:
        """Plan this invocation around its Lambda deadline (handlers call it first)."""
        self.time_left = lambda: context.get_remaining_time_in_millis() / 1000


def build(settings: Settings, *, session: Any = None, now: Callable[[], float] = time.time) -> Deps:
    session = session or boto3.session.Session()

    def client(name: str, config: Config = AWS_CONFIG) -> LazyClient:
        return LazyClient(lambda: session.client(name, config=config))

    def table(config: Config = AWS_CONFIG) -> LazyClient:
        return LazyClient(lambda: session.resource("dynamodb", config=config).Table(settings.table_name))

    sqs = client("sqs")
    queue = None
    if settings.refresh_queue_url:
        from .adapters.queue import RefreshQueue  # noqa: PLC0415 (see the imports)

        queue = RefreshQueue(sqs, settings.refresh_queue_url, must_land=client("sqs", MUST_LAND_CONFIG))
    failed_batches = stream = None
    if settings.events_dead_letter_queue_url:
        from .adapters.stream import FailedBatches, StreamReader  # noqa: PLC0415 (see the imports)

        failed_batches = FailedBatches(sqs, settings.events_dead_letter_queue_url)
        stream = StreamReader(client("dynamodbstreams"))
    connections = table()
    return Deps(
        settings=settings,
        sessions=SessionStore(connections, now=now),
        connections=ConnectionRepository(connections, now=now, must_land=table(MUST_LAND_CONFIG)),
        cipher=TokenCipher(client("kms"), settings.token_key_id),
        credentials=CredentialStore(
            client("secretsmanager"), settings.client_secret_id, max_age=settings.secret_max_age_seconds
        ),
        apicbase=ApicbaseClient(
            authorize_url=settings.authorize_url,
            token_url=settings.token_url,
            introspect_url=settings.introspect_url,
            revoke_url=settings.revoke_url,
            api_url=settings.api_url,
            refresh_read_timeout=settings.refresh_read_timeout_seconds,
            now=now,
        ),
        events=EventPublisher(
            client("events"),
            bus_name=settings.event_bus_name,
            source=settings.event_source,
        ),
        queue=queue,
        stream=stream,
        failed_batches=failed_batches,
        now=now,
    )
