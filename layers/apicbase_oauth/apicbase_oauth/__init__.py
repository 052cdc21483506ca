"""The Apicbase OAuth Broker's shared package.

``get_access_token`` is imported lazily, so that importing ``apicbase_oauth.errors`` (or any
other module) does not pull in the use cases or create AWS clients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .consumer import get_access_token

__all__ = ["get_access_token"]


def __getattr__(name: str) -> Any:
    if name == "get_access_token":
        from .consumer import get_access_token  # noqa: PLC0415 (lazy on purpose)

        return get_access_token
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
