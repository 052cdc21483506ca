"""Settings, read once per container from the environment the template sets, and validated."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import ConfigurationError

# Apicbase's scopes, from its documentation.
APICBASE_SCOPES = frozenset({"accounts", "library", "inventory", "procurement", "sales", "media"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

# A lease must outlive any function that can hold it (the longest Timeout in template.yaml is
# 120 s), so that two refreshers can never present the same refresh token at once.
LEASE_SECONDS = 180
# Apicbase's API and its rate limit (100 requests per minute per user), for the proxy route.
APICBASE_API_URL = "https://api.apicbase.com/"
APICBASE_RATE_LIMIT_PER_MINUTE = 100


def is_allowed_url(url: str) -> bool:
    """https anywhere; plain http only on loopback (the local run). Whole: urlsplit drops tabs
    and line breaks and keeps other whitespace and control characters, so a URL with any is refused."""
    if any(c.isspace() or not c.isprintable() for c in url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if not parts.hostname or parts.username or parts.password:
        return False
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS


def parse_scopes(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Split, deduplicate (keeping order) and check scopes against Apicbase's list."""
    items = value.split() if isinstance(value, str) else list(value)
    unknown = [s for s in items if s not in APICBASE_SCOPES]
    if unknown:
        raise ValueError(
            f"unknown scope(s) {', '.join(sorted(set(map(str, unknown))))[:200]}; "
            f"Apicbase knows {' '.join(sorted(APICBASE_SCOPES))}"
        )
    if not items:
        raise ValueError("at least one scope is required")
    return tuple(dict.fromkeys(items))


@dataclass(frozen=True)
class Settings:
    table_name: str
    token_key_id: str
    client_secret_id: str
    authorize_url: str
    token_url: str
    introspect_url: str
    revoke_url: str | None
    default_scopes: tuple[str, ...]
    callback_url: str | None
    pkce_enabled: bool
    state_ttl_seconds: int
    token_leeway_seconds: int
    failure_warning_threshold: int
    event_bus_name: str
    event_source: str
    refresh_window_seconds: int
    refresh_queue_url: str | None
    secret_max_age_seconds: int
    lease_seconds: int = LEASE_SECONDS
    api_url: str = APICBASE_API_URL
    api_budget_per_minute: int = APICBASE_RATE_LIMIT_PER_MINUTE
    # Generous: after a read timeout the refresh token may be rotated already (then the old access
    # token tells). The deadline of every refresh plans on it (custody.time_needed).
    refresh_read_timeout_seconds: int = 25

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        problems: list[str] = []

        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                problems.append(f"{name} is not set")
            return value

        def url(name: str, *, optional: bool = False) -> str:
            value = env.get(name, "").strip() if optional else required(name)
            if value and not is_allowed_url(value):
                problems.append(f"{name} must be an https URL (http only on 127.0.0.1)")
            return value

        def integer(name: str, default: int, low: int, high: int) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                problems.append(f"{name} must be a whole number, not {raw[:20]!r}")
                return default
            if not low <= value <= high:
                problems.append(f"{name} must be between {low} and {high}")
            return value

        scopes: tuple[str, ...] = ("accounts", "library")
        try:
            scopes = parse_scopes(env.get("DEFAULT_SCOPES", "accounts library"))
        except ValueError as exc:
            problems.append(f"DEFAULT_SCOPES: {exc}")
        pkce = env.get("PKCE_ENABLED", "false").strip().lower()
        if pkce not in {"true", "false"}:
            problems.append("PKCE_ENABLED must be true or false")

        settings = cls(
            table_name=required("TABLE_NAME"),
            token_key_id=required("TOKEN_KEY_ID"),
            client_secret_id=required("CLIENT_SECRET_ID"),
            authorize_url=url("APICBASE_AUTHORIZE_URL"),
            token_url=url("APICBASE_TOKEN_URL"),
            introspect_url=url("APICBASE_INTROSPECT_URL"),
            revoke_url=url("APICBASE_REVOKE_URL", optional=True) or None,
            default_scopes=scopes,
            callback_url=url("CALLBACK_URL", optional=True) or None,
            pkce_enabled=pkce == "true",
            state_ttl_seconds=integer("STATE_TTL_SECONDS", 600, 60, 3600),
            token_leeway_seconds=integer("TOKEN_LEEWAY_SECONDS", 300, 0, 86400),
            failure_warning_threshold=integer("FAILURE_WARNING_THRESHOLD", 5, 1, 1000),
            event_bus_name=env.get("EVENT_BUS_NAME", "default").strip() or "default",
            event_source=env.get("EVENT_SOURCE", "apicbase-oauth-broker").strip() or "apicbase-oauth-broker",
            refresh_window_seconds=integer("REFRESH_WINDOW_HOURS", 48, 1, 160) * 3600,
            refresh_queue_url=env.get("REFRESH_QUEUE_URL", "").strip() or None,
            secret_max_age_seconds=integer("SECRET_MAX_AGE_SECONDS", 300, 0, 86400),
            api_url=url("APICBASE_API_URL", optional=True) or APICBASE_API_URL,
            api_budget_per_minute=integer("APICBASE_RATE_LIMIT_PER_MINUTE", APICBASE_RATE_LIMIT_PER_MINUTE, 1, 100000),
            refresh_read_timeout_seconds=integer("APICBASE_REFRESH_READ_TIMEOUT", 25, 1, 40),
        )
        if problems:
            raise ConfigurationError("invalid configuration: " + "; ".join(problems))
        return settings
