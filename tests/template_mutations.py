"""template.yaml with one statement of one function's policy removed, as text (the short tags
stay as written): what the template looked like before a permission was added, for the tests
that prove the local run refuses what that permission allows, and for scripts/iam-mutations."""

from __future__ import annotations

import re

from local import template as tpl


def without_statement(text: str, function: str, sid: str) -> str:
    """``text`` (a template) without the statement ``sid`` of ``function``'s Policies."""
    lines = text.splitlines(keepends=True)
    start = lines.index(f"  {function}:\n")
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"  \S", lines[i])), len(lines))
    sid_line = next(i for i in range(start, end) if lines[i].strip() == f"- Sid: {sid}")
    indent = len(lines[sid_line]) - len(lines[sid_line].lstrip())
    item = sid_line
    while lines[item - 1].strip().startswith("#") and len(lines[item - 1]) - len(lines[item - 1].lstrip()) == indent:
        item -= 1  # the statement's own comment goes with it
    stop = next(
        i
        for i in range(sid_line + 1, end)
        if lines[i].strip()
        and not lines[i].strip().startswith("#")
        and len(lines[i]) - len(lines[i].lstrip()) <= indent
    )
    while lines[stop - 1].strip().startswith("#"):
        stop -= 1  # the next statement's comment stays with it
    return "".join(lines[:item] + lines[stop:])


def sids(template: dict) -> list[tuple[str, str]]:
    """(function, Sid) of every statement of every function's policy."""
    return [
        (name, str(statement["Sid"]))
        for name, fn in tpl.functions(template).items()
        for statement in tpl.policy_statements(fn)
    ]
