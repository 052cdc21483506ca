"""Access tokens cached in the process, per connection, until shortly before they expire.

Standard library only, so that a consumer inside Lambda (the layer's helper) can share it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_MARGIN_SECONDS = 60.0


@dataclass(frozen=True)
class _Entry:
    access_token: str = field(repr=False)
    valid_until: float


class TokenCache:
    """Thread-safe. Validity is counted from receipt with ``expires_in`` on the local monotonic
    clock, so a skewed wall clock cannot keep an expired token. ``lock(id)`` serialises the
    fetches of one connection, so that threads that miss together ask the broker once."""

    def __init__(self, *, margin: float = DEFAULT_MARGIN_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.margin = margin
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, connection_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(connection_id, threading.Lock())

    def get(self, connection_id: str) -> str | None:
        """The cached token while it has more than ``margin`` seconds left, else None."""
        with self._guard:
            entry = self._entries.get(connection_id)
            if entry is None or self.clock() >= entry.valid_until:
                return None
            return entry.access_token

    def put(self, connection_id: str, access_token: str, expires_in: float) -> None:
        with self._guard:
            self._entries[connection_id] = _Entry(access_token, self.clock() + expires_in - self.margin)

    def forget(self, connection_id: str) -> None:
        with self._guard:
            self._entries.pop(connection_id, None)

    def __repr__(self) -> str:
        return f"TokenCache(connections={len(self._entries)}, margin={self.margin})"
