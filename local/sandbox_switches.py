"""The sandbox's switches: Apicbase on its bad days, on request. No Django here, so the local
run can read and validate them before the sandbox process starts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

# The environment variable of each switch (the flag is its name with dashes).
ENVIRONMENT = {
    "reuse_protection": "SANDBOX_REUSE_PROTECTION",
    "grace_period": "SANDBOX_GRACE_PERIOD",
    "token_delay": "SANDBOX_TOKEN_DELAY",
    "odd_2xx": "SANDBOX_ODD_2XX",
    "rate_limit": "SANDBOX_RATE_LIMIT",
}
HELP = {
    "reuse_protection": "django-oauth-toolkit's REFRESH_TOKEN_REUSE_PROTECTION: presenting a revoked "
    "refresh token revokes its whole token family",
    "grace_period": "seconds a rotated refresh token is still honoured (REFRESH_TOKEN_GRACE_PERIOD_SECONDS)",
    "token_delay": "seconds the token endpoint waits before answering a grant it has already carried out "
    "(rotation included), so that a client's read timeout loses the answer",
    "odd_2xx": "token answers without expires_in",
    "rate_limit": "requests per minute per user (token endpoint and revocation: per client), "
    "then 429 with Retry-After; 0 is no limit",
}
# Switches a running sandbox can change (test hooks); the others are Django settings.
LIVE = ("token_delay", "odd_2xx", "rate_limit")
LIMITS = {"grace_period": (0, 86400), "token_delay": (0, 600), "rate_limit": (0, 100000)}
TRUE = ("1", "true", "yes", "on")
FALSE = ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class Switches:
    reuse_protection: bool = False
    grace_period: int = 0
    token_delay: float = 0.0
    odd_2xx: bool = False
    rate_limit: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Switches:
        """The switches the environment sets; ValueError names a bad one."""
        env = os.environ if env is None else env
        given = {name: env[variable] for name, variable in ENVIRONMENT.items() if variable in env}
        return cls().changed(given, lambda name: ENVIRONMENT[name])

    def changed(self, values: Mapping[str, Any], label: Any = lambda name: name) -> Switches:
        """A copy with ``values`` (text, numbers or booleans) parsed and checked."""
        types = {f.name: f.type for f in fields(self)}
        parsed: dict[str, Any] = {}
        for name, raw in values.items():
            if name not in types:
                raise ValueError(f"{label(name)} is not a switch")
            parsed[name] = _parse(types[name], raw, label(name), LIMITS.get(name))
        return replace(self, **parsed)

    def arguments(self) -> list[str]:
        """The command-line flags that set these switches on ``python -m local.sandbox``."""
        args: list[str] = []
        for name, value in asdict(self).items():
            flag = "--" + name.replace("_", "-")
            if value is True:
                args.append(flag)
            elif value and value is not False:
                args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
        return args


def _parse(kind: str, raw: Any, label: str, limits: tuple[int, int] | None) -> Any:
    text = str(raw).strip().lower()
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if text in TRUE or text in FALSE:
            return text in TRUE
        raise ValueError(f"{label} must be 1 or 0, not {text[:20]!r}")
    number = float if kind == "float" else int
    try:
        value = number(text or 0)
    except ValueError:
        raise ValueError(f"{label} must be a number, not {text[:20]!r}") from None
    low, high = limits or (0, 0)
    if not low <= value <= high:
        raise ValueError(f"{label} must be between {low} and {high}")
    return value
