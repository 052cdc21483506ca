"""Figure 2: warm callbacks through the real handler, each with a fresh state (a real connect
session in the table), against moto's server and a token endpoint that answers at once: wall
and CPU time, and every AWS and HTTP call, against the least the flow needs."""

from __future__ import annotations

from collections import Counter

from . import harness as h
from .harness import CallCounter, Stack, Warm

# The least the flow can do: consume the state, exchange the code, ask whose token it is (the
# username, which the issue wants recorded), encrypt the pair, write the connection.
MINIMUM = Counter(
    {
        ("dynamodb", "DeleteItem"): 1,
        ("http", "token"): 1,
        ("http", "introspect"): 1,
        ("kms", "Encrypt"): 1,
        ("dynamodb", "UpdateItem"): 1,
    }
)
# Calls beyond the minimum, and why the flow makes them.
EXTRA_REASONS = {
    ("dynamodb", "UpdateItem"): "the username is written after the grant is stored, so that a slow "
    "introspection cannot outlast the function while the fresh refresh token is only in memory",
    ("events", "PutEvents"): "the Connection Created event for the integrator",
}


def run(stack: Stack, counter: CallCounter, count: int) -> tuple[Warm, int]:
    """The callbacks, their calls per callback (HTTP ones included), and the new TCP connections
    to Apicbase in all of them (the three of the warm-up included)."""
    before = stack.stub.stats()
    warm = h.warm_invocations(stack, counter, "CallbackFunction", lambda: h.callback_event(stack), count)
    after = stack.stub.stats()
    warm.calls[("http", "token")] = after["token_requests"] - before["token_requests"] - 3  # less the warm-up
    warm.calls[("http", "introspect")] = after["introspections"] - before["introspections"] - 3
    warm.calls = Counter({k: v / count for k, v in warm.calls.items()})
    return warm, after["connections_opened"] - before["connections_opened"] - 1  # less the stats call's own
