"""Figure 2: warm callbacks through the real handler, each with a fresh state (a real connect
session in the table), against moto's server and a token endpoint that answers at once: wall
and CPU time, and every AWS and HTTP call, against the least the flow needs. Twice: sessions
as most integrators start them, and sessions that name the Apicbase user (expected_username)."""

from __future__ import annotations

from collections import Counter

from . import harness as h
from .harness import CallCounter, Stack, Warm
from .stub import USERNAME

# The least the flow can do: consume the state, exchange the code, ask whose token it is (the
# username, which the issue wants recorded), take the data key that seals the pair, write the
# connection.
MINIMUM = Counter(
    {
        ("dynamodb", "DeleteItem"): 1,
        ("http", "token"): 1,
        ("http", "introspect"): 1,
        ("kms", "GenerateDataKey"): 1,
        ("dynamodb", "UpdateItem"): 1,
    }
)
# Why the flow makes each call (UpdateItem: the first, then the second when there is one).
REASONS = {
    ("dynamodb", "DeleteItem"): "the one-time state taken, and the session read, in one conditional delete",
    ("kms", "GenerateDataKey"): "the data key that seals the pair, bound to the connection id, in hand "
    "before the code is presented",
    ("http", "token"): "the authorization code exchanged (it lives 60 seconds)",
    ("dynamodb", "UpdateItem"): "the sealed grant written, the only step between Apicbase's answer and "
    "durability; a second write adds what introspection (without expected_username) and user_info "
    "answered after the grant was stored, so that a slow answer cannot outlast the function while the "
    "fresh refresh token is only in memory",
    ("http", "introspect"): "who signed in: the username the proxy's per-user budget and the integrator "
    "need; with expected_username the same answer is the identity check, made before the grant is stored",
    ("http", "user_info"): "the active library's name, which the success page shows and the connection "
    "records (best effort, after the grant is stored)",
    ("events", "PutEvents"): "the Connection Created event for the integrator",
}


def run(stack: Stack, counter: CallCounter, count: int, expected_username: str | None = None) -> tuple[Warm, int]:
    """The callbacks, their calls per callback (HTTP ones included), and the new TCP connections
    to Apicbase in all of them (the three of the warm-up included)."""
    before = stack.stub.stats()
    warm = h.warm_invocations(
        stack, counter, "CallbackFunction", lambda: h.callback_event(stack, expected_username), count
    )
    after = stack.stub.stats()
    warm.calls[("http", "token")] = after["token_requests"] - before["token_requests"] - 3  # less the warm-up
    warm.calls[("http", "introspect")] = after["introspections"] - before["introspections"] - 3
    warm.calls[("http", "user_info")] = after["user_infos"] - before["user_infos"] - 3
    warm.calls = Counter({k: v / count for k, v in warm.calls.items()})
    return warm, after["connections_opened"] - before["connections_opened"] - 1  # less the stats call's own


def expecting_user(stack: Stack, counter: CallCounter, count: int) -> Warm:
    """The same with sessions that name the user who then signs in."""
    return run(stack, counter, count, expected_username=USERNAME)[0]
