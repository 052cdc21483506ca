"""The adapters a use case needs, built once per container from the settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

from .apicbase import ApicbaseClient
from .config import Settings
from .credentials import CredentialStore
from .crypto import TokenCipher
from .events import EventPublisher
from .queue import RefreshQueue
from .store import ConnectionStore

# Short timeouts: a Lambda behind API Gateway has 30 s in all. botocore's standard mode retries
# throttling and 5xx with backoff; our own backoff covers the writes that must land.
AWS_CONFIG = Config(
    connect_timeout=2,
    read_timeout=5,
    retries={"mode": "standard", "max_attempts": 3},
    user_agent_extra="apicbase-oauth-broker",
)


@dataclass
class Deps:
    settings: Settings
    store: ConnectionStore
    cipher: TokenCipher
    credentials: CredentialStore
    apicbase: ApicbaseClient
    events: EventPublisher
    queue: RefreshQueue | None = None
    now: Callable[[], float] = field(default=time.time)
    sleep: Callable[[float], None] = field(default=time.sleep)


def build(settings: Settings, *, session: Any = None, now: Callable[[], float] = time.time) -> Deps:
    session = session or boto3.session.Session()
    table = session.resource("dynamodb", config=AWS_CONFIG).Table(settings.table_name)
    queue = None
    if settings.refresh_queue_url:
        queue = RefreshQueue(session.client("sqs", config=AWS_CONFIG), settings.refresh_queue_url)
    return Deps(
        settings=settings,
        store=ConnectionStore(table, now=now),
        cipher=TokenCipher(session.client("kms", config=AWS_CONFIG), settings.token_key_id),
        credentials=CredentialStore(settings.client_secret_id, max_age=settings.secret_max_age_seconds),
        apicbase=ApicbaseClient(
            authorize_url=settings.authorize_url,
            token_url=settings.token_url,
            introspect_url=settings.introspect_url,
            now=now,
        ),
        events=EventPublisher(
            session.client("events", config=AWS_CONFIG),
            bus_name=settings.event_bus_name,
            source=settings.event_source,
        ),
        queue=queue,
        now=now,
    )
