"""Human tables by default, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Result:
    data: Any  # what --json prints
    text: str  # what a person reads
    exit_code: int = 0  # a command that checks (doctor) fails without an API error


def emit(result: Result, *, as_json: bool) -> None:
    print(json.dumps(result.data, indent=2) if as_json else result.text)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = [[c.upper() for c in columns], *cells]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def fields(view: dict[str, Any]) -> str:
    """One ``key  value`` line per field; nested objects as ``parent.key``."""
    flat: list[tuple[str, str]] = []

    def walk(value: dict[str, Any], at: str) -> None:
        for key, item in value.items():
            if isinstance(item, dict):
                walk(item, f"{at}{key}.")
            else:
                flat.append((f"{at}{key}", _cell(item)))

    walk(view, "")
    width = max((len(k) for k, _ in flat), default=0)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in flat)
