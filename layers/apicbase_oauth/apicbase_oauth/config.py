"""Settings, read once per container from the environment the template sets, and validated."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import ConfigurationError
from .model import immutable

# Apicbase's scopes, from its documentation.
APICBASE_SCOPES = frozenset({"accounts", "library", "inventory", "procurement", "sales", "media"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

# A lease must outlive any function that can hold it (the longest Timeout in template.yaml is
# 120 s), so that two refreshers can never present the same refresh token at once.
LEASE_SECONDS = 180
# Apicbase's API, where the proxy route forwards.
APICBASE_API_URL = "https://api.apicbase.com/"
BRAND_NAME_MAX_LENGTH = 60


@dataclass(frozen=True)  # compared by value
class Brand:
    """What the callback's pages say of the integrator: their product's name ("Connect <name> to
    Apicbase"), where people get help on an error page, and the way back to their application
    when a connect session names no return_url. Set by the operator, never by a request."""

    name: str | None = None
    support_url: str | None = None
    return_url: str | None = None


@immutable
class Tunable:
    """A whole-number setting: its environment variable, default and range, and the template
    parameter that sets it (if any: a test holds template.yaml's Default and range to these)."""

    variable: str
    default: int
    low: int
    high: int
    parameter: str | None = None


# Every tunable, in one place (the margins are ``freshness``'s: when a token is refreshed).
TUNABLES: dict[str, Tunable] = {
    # How long a connect session (its one-time state) stays usable.
    "state_ttl_seconds": Tunable("STATE_TTL_SECONDS", 600, 60, 3600, "StateTtlSeconds"),
    # On demand (GET token, the proxy): refresh when the token expires within this margin.
    "demand_margin_seconds": Tunable("TOKEN_LEEWAY_SECONDS", 300, 0, 86400, "TokenLeewaySeconds"),
    # Scheduled (the scheduler and the worker): refresh when the token expires within this margin.
    "schedule_margin_hours": Tunable("REFRESH_WINDOW_HOURS", 48, 1, 160, "RefreshWindowHours"),
    "failure_warning_threshold": Tunable("FAILURE_WARNING_THRESHOLD", 5, 1, 1000, "FailureWarningThreshold"),
    "secret_max_age_seconds": Tunable("SECRET_MAX_AGE_SECONDS", 300, 0, 86400),
    # Apicbase allows 100 requests per minute per user: the proxy's budget.
    "api_budget_per_minute": Tunable("APICBASE_RATE_LIMIT_PER_MINUTE", 100, 1, 100000, "ApicbaseRateLimitPerMinute"),
    # Generous: after a read timeout the refresh token may be rotated already (then the old access
    # token tells). The deadline of every refresh plans on it (refresh.time_needed).
    "refresh_read_timeout_seconds": Tunable("APICBASE_REFRESH_READ_TIMEOUT", 25, 1, 40, "ApicbaseRefreshReadTimeout"),
}


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


@immutable
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
    demand_margin_seconds: int
    failure_warning_threshold: int
    event_bus_name: str
    event_source: str
    schedule_margin_seconds: int
    refresh_queue_url: str | None
    secret_max_age_seconds: int
    lease_seconds: int = LEASE_SECONDS
    api_url: str = APICBASE_API_URL
    api_budget_per_minute: int = TUNABLES["api_budget_per_minute"].default
    refresh_read_timeout_seconds: int = TUNABLES["refresh_read_timeout_seconds"].default
    brand: Brand = Brand()
    # The events function's dead-letter queue: batches of stream records it gave up on.
    events_dead_letter_queue_url: str | None = None

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

        def integer(key: str) -> int:
            tunable = TUNABLES[key]
            name, default = tunable.variable, tunable.default
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                problems.append(f"{name} must be a whole number, not {raw[:20]!r}")
                return default
            if not tunable.low <= value <= tunable.high:
                problems.append(f"{name} must be between {tunable.low} and {tunable.high}")
            return value

        scopes: tuple[str, ...] = ("accounts", "library")
        try:
            scopes = parse_scopes(env.get("DEFAULT_SCOPES", "accounts library"))
        except ValueError as exc:
            problems.append(f"DEFAULT_SCOPES: {exc}")
        pkce = env.get("PKCE_ENABLED", "false").strip().lower()
        if pkce not in {"true", "false"}:
            problems.append("PKCE_ENABLED must be true or false")
        brand_name = env.get("BRAND_NAME", "").strip()
        if len(brand_name) > BRAND_NAME_MAX_LENGTH or not brand_name.isprintable():
            problems.append(f"BRAND_NAME must be printable text of at most {BRAND_NAME_MAX_LENGTH} characters")

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
            state_ttl_seconds=integer("state_ttl_seconds"),
            demand_margin_seconds=integer("demand_margin_seconds"),
            failure_warning_threshold=integer("failure_warning_threshold"),
            event_bus_name=env.get("EVENT_BUS_NAME", "default").strip() or "default",
            event_source=env.get("EVENT_SOURCE", "apicbase-oauth-broker").strip() or "apicbase-oauth-broker",
            schedule_margin_seconds=integer("schedule_margin_hours") * 3600,
            refresh_queue_url=env.get("REFRESH_QUEUE_URL", "").strip() or None,
            secret_max_age_seconds=integer("secret_max_age_seconds"),
            api_url=url("APICBASE_API_URL", optional=True) or APICBASE_API_URL,
            api_budget_per_minute=integer("api_budget_per_minute"),
            refresh_read_timeout_seconds=integer("refresh_read_timeout_seconds"),
            brand=Brand(
                name=brand_name or None,
                support_url=url("SUPPORT_URL", optional=True) or None,
                return_url=url("DEFAULT_RETURN_URL", optional=True) or None,
            ),
            events_dead_letter_queue_url=env.get("EVENTS_DEAD_LETTER_QUEUE_URL", "").strip() or None,
        )
        if problems:
            raise ConfigurationError("invalid configuration: " + "; ".join(problems))
        return settings
