"""Faults, a matrix: each AWS attempt and each Apicbase request of a callback and of a refresh, in
turn, fails once (or for good), in every way it can, taking the time it takes on AWS (``faults``:
timeouts, unreachable endpoints, throttling with botocore's own retries and backoff, a function
killed when its Timeout runs out); then double faults on the write-then-park path, and faults on
every call of the recovery paths (a parked pair applied by the next refresh and by the worker, an
unknown outcome resolved by the witness). After each cell the stack recovers on its own (SQS
redelivers to the worker, the lease lapses, the scheduler sweeps, the next refresh runs), and the
invariants must hold.

The attempts are enumerated from a clean run, not written down by hand, so a new call in the code
is a new row of the matrix.

Custody (docs: SECURITY.md, threat 8): no cell loses a grant or a rotated refresh token, except
the two classes no design closes: the answer lost in transit (or unreadable), said at once as
``rotation_answer_lost``, and the process killed (a crash, not its Timeout) between Apicbase's
answer and the first durable write, said by the next refresh. No refresh token is ever presented
twice. The figures are asserted at the end of each matrix.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.hostile.conftest import FIGURES, seed_connection
from tests.hostile.faults import (
    ANSWER_LOST,
    APICBASE_SLOW,
    CONDITION_FAILED,
    LANDED,
    READ_TIMEOUT,
    THROTTLED,
    UNREACHABLE,
    UNREADABLE_2XX,
    Attempt,
    Fault,
    Run,
    after,
    single_faults,
)
from tests.hostile.rig import CID, Rig, build

SAVE = "UpdateItem CONN# save"
PARK = ("SendMessage", "PutItem RESCUE#")
# The two classes of loss no design closes.
LOST_IN_TRANSIT = "answer lost in transit or unreadable: said at once"
LOST_IN_TRANSIT_LATER = "answer lost in transit, the witness down: said by the next refresh"
DIED_WITH_PROCESS = "answer died with the process: said by the next refresh"
GRANT_LOST = "grant lost with its answer (in transit, or with the process)"
NAMED_CLASSES = (LOST_IN_TRANSIT, LOST_IN_TRANSIT_LATER, DIED_WITH_PROCESS, GRANT_LOST)


@pytest.fixture
def rig(handlers, apicbase, watch, monkeypatch, template) -> Rig:
    return build(handlers, apicbase, watch, monkeypatch, template)


def _lost_in_transit(run: Run) -> bool:
    """Apicbase carried the grant out and its answer never reached the broker in a usable form."""
    return run.fired_at("token", ANSWER_LOST, *UNREADABLE_2XX)


def _died_with_process(run: Run) -> bool:
    """A crash (not the function's Timeout) between Apicbase's answer and any durable write."""
    return run.killed == "fault" and run.killed_after_grant_before_landing


# --- refresh -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recovery:
    """What runs right after the faulty refresh, under faults of its own: the worker handling
    what is queued (``deliver``), or the next refresh once the lease lapsed (``refresh``)."""

    step: str
    faults: tuple[Fault, ...]

    def __str__(self) -> str:
        return f"then {self.step}: " + " + ".join(map(str, self.faults))


def refresh_cell(rig: Rig, faults: tuple[Fault, ...], recovery: Recovery | None = None) -> str:
    """Given a due connection, a refresh under ``faults`` (and its recovery under faults of its
    own), then the stack left to recover: what became of the rotated refresh token (a problem
    starts with "LOST" or "WRONG")."""
    rig.purge()
    seed_connection(rig.deps, rig.apicbase, CID, expires_in=3600)
    rig.cold()
    presented, reuses = rig.apicbase.refresh_requests, rig.apicbase.reuses
    response = rig.refresh(faults)
    run = rig.run
    problems = []
    if rig.apicbase.refresh_requests - presented > 1:
        problems.append("WRONG: presented twice")
    status = response["statusCode"]
    if status == 200 and not rig.stored_live():
        problems.append("WRONG: success answered but the stored token is dead")
    if status not in {200, 409, 502, 503}:
        problems.append(f"WRONG: answered {status}")
    outcome = problems[0] if problems else _settle_refresh(rig, run, response, recovery)
    if rig.apicbase.reuses != reuses:
        outcome = "LOST: a consumed refresh token was presented again"
    return outcome


def _settle_refresh(rig: Rig, run: Run, response: dict[str, Any], recovery: Recovery | None) -> str:
    parked = run.landed_any(*PARK) and not run.landed_any(SAVE)
    if response["statusCode"] == 409 and rig.reason() == "rotation_answer_lost":
        if not _lost_in_transit(run):
            return "WRONG: rotation_answer_lost where no answer died"
        return LOST_IN_TRANSIT
    if recovery is not None:
        rig.recovery_step(recovery)
    rig.recover()
    again = rig.refresh()
    if again["statusCode"] == 200 and rig.stored_live():
        return "parked, then applied" if parked else "intact"
    if rig.reason() in {"rotation_answer_lost", "rotation_outcome_unknown"}:
        if _died_with_process(run):
            return DIED_WITH_PROCESS
        if _lost_in_transit(run):
            return LOST_IN_TRANSIT_LATER
    ending = f"killed by its {run.killed}" if run.killed else f"answered {response['statusCode']}"
    return f"LOST: the rotated refresh token ({ending}; then {again['statusCode']}, {rig.reason()})"


# --- callback ------------------------------------------------------------------------------------
def callback_cell(rig: Rig, faults: tuple[Fault, ...]) -> str:
    """Given a callback with a good code and state, under ``faults``, then the stack left to
    recover: what became of the grant."""
    rig.purge()
    rig.cold()
    issued = len(rig.apicbase.issued_refresh_tokens)
    response = rig.connect(faults)
    run = rig.run
    status = response["statusCode"]
    if status not in {200, 400, 502, 503}:
        return f"WRONG: answered {status}"
    if status == 200 and not rig.stored_live():
        return "WRONG: success answered but nothing live stored"
    stored = rig.stored_live()
    rig.recover()
    if rig.stored_live():
        outcome = "stored" if stored else "parked, then applied"
    elif len(rig.apicbase.issued_refresh_tokens) > issued and (
        rig.apicbase.issued_refresh_tokens[-1] in rig.apicbase.live_refresh_tokens
    ):
        if not (_lost_in_transit(run) or _died_with_process(run)):
            ending = f"killed by its {run.killed}" if run.killed else f"answered {status}"
            return f"LOST: a grant was issued and not kept ({ending})"
        outcome = GRANT_LOST
    elif status in {502, 503} or (status == 400 and run.fired_at("DeleteItem STATE#", CONDITION_FAILED, LANDED)):
        outcome = "not issued"
    else:
        return f"WRONG: {status} with nothing issued"
    rig.purge()
    if rig.connect()["statusCode"] != 200:
        return "WRONG: cannot connect again"
    return outcome


# --- the matrices ----------------------------------------------------------------------------------
Cell = tuple[tuple[Fault, ...], Recovery | None]


def _matrix(rig: Rig, flow: str, cells: Iterable[Cell], cell: Any) -> dict[str, int]:
    outcomes: Counter[str] = Counter()
    problems: list[str] = []
    for faults, recovery in cells:
        outcome = cell(rig, faults, recovery) if recovery else cell(rig, faults)
        outcomes["LOST" if outcome.startswith(("LOST", "WRONG")) else outcome] += 1
        if outcome.startswith(("LOST", "WRONG")):
            named = " + ".join(map(str, faults)) + (f", {recovery}" if recovery else "")
            problems.append(f"{named}: {outcome}")
    FIGURES[f"faults: injected ({flow})"] += sum(outcomes.values())
    for name, count in outcomes.items():
        FIGURES[f"faults: {flow}: {name}"] += count
    print(f"{flow} fault matrix:", json.dumps(dict(outcomes), sort_keys=True))
    # The figures, asserted: nothing lost or wrong outside the two named classes.
    assert outcomes, f"{flow}: no cell"
    assert not problems, f"{len(problems)} of {sum(outcomes.values())} cells:\n" + "\n".join(problems[:40])
    assert rig.apicbase.reuses == 0
    return dict(outcomes)


def _trace(rig: Rig, action: Any, *faults: Fault) -> list[Attempt]:
    action(rig, faults)
    return list(rig.run.attempts)


def _clean_refresh(rig: Rig, faults: tuple[Fault, ...] = ()) -> None:
    rig.purge()
    seed_connection(rig.deps, rig.apicbase, CID, expires_in=3600)
    rig.cold()
    rig.refresh(faults)


def _clean_callback(rig: Rig, faults: tuple[Fault, ...] = ()) -> None:
    rig.purge()
    rig.cold()
    rig.connect(faults)


def test_callback_fault_matrix(rig):
    """Given a callback with a good code and state,
    when each AWS attempt and Apicbase request of it fails in turn, in each way, once or for good,
    taking its time, or the process is killed right after it,
    then the answer is honest, the grant is stored or parked (lost only with its answer), and
    connecting again always works."""
    trace = _trace(rig, _clean_callback)
    FIGURES["faults: callback attempts enumerated"] = len(trace)
    _matrix(rig, "callback", (((fault,), None) for fault in single_faults(trace)), callback_cell)


def test_refresh_fault_matrix(rig):
    """Given a connection due for a refresh,
    when each AWS attempt and Apicbase request of POST /connections/{id}/refresh fails in turn, in
    each way, once or for good, taking its time, or the process is killed right after it, or the
    lease lapses during it,
    then no refresh token is presented twice, and the rotated refresh token is stored, or parked
    and applied; only an answer that died is lost, and said."""
    trace = _trace(rig, _clean_refresh)
    FIGURES["faults: refresh attempts enumerated"] = len(trace)
    _matrix(rig, "refresh", (((fault,), None) for fault in single_faults(trace)), refresh_cell)


def _save_fails_for_good(trace: list[Attempt]) -> list[Fault]:
    save = next(a for a in trace if a.operation == SAVE)
    return [Fault.at(save, kind, sticky=True) for kind in (READ_TIMEOUT, UNREACHABLE, THROTTLED)]


def _parking(rig: Rig, clean: Any, first: Fault) -> list[Attempt]:
    """The attempts of a run whose write fails for good: it must reach both rescue places."""
    trace = _trace(rig, clean, first)
    reached = {a.operation for a in trace}
    assert set(PARK) <= reached, f"{first}: the park was not reached ({rig.run.killed and 'killed'}): {reached}"
    return trace


def test_write_then_park_double_fault_matrix(rig):
    """Given a refresh (and a callback) whose write of the new pair fails for good, in each way,
    when each later attempt (the park: the SQS copy, the rescue item) fails too, in each way,
    then the pair is still kept: one of the two places holds it and it is applied."""
    for flow, clean, cell in (("refresh", _clean_refresh, refresh_cell), ("callback", _clean_callback, callback_cell)):
        cells: list[Cell] = []
        for first in _save_fails_for_good(_trace(rig, clean)):
            parking = _parking(rig, clean, first)
            start = next(a.index for a in parking if a.operation == SAVE)
            cells.extend((pair, None) for pair in after(first, parking, start + 1))
        _matrix(rig, f"{flow}, write then park", cells, cell)


def test_recovery_fault_matrix(rig):
    """Given an answer lost in transit, a pair parked in both places, and a pair parked in the
    table alone,
    when each attempt of what recovers them fails in each way (the witness's introspection and
    the write that says the loss; the worker applying the SQS copy; the next refresh applying the
    table's rescue item, with a cold key cache),
    then the parked pair is still applied (or a loss said), and nothing is presented twice."""
    trace = _trace(rig, _clean_refresh)
    token = next(a for a in trace if a.operation == "token")
    lost = Fault.at(token, ANSWER_LOST)
    cells: list[Cell] = [(pair, None) for pair in after(lost, _trace(rig, _clean_refresh, lost), token.index + 1)]
    [first, *_] = _save_fails_for_good(trace)
    parking = _parking(rig, _clean_refresh, first)
    send = next(a for a in parking if a.operation == "SendMessage")
    table_only = (first, Fault.at(send, UNREACHABLE, sticky=True))
    for faults, step in (((first,), "deliver"), (table_only, "refresh")):
        _trace_of_step(rig, faults, step)  # the recovery's own attempts, enumerated
        for fault in single_faults(list(rig.run.attempts)):
            cells.append((faults, Recovery(step, (fault,))))
    _matrix(rig, "refresh, recovery", cells, refresh_cell)


def _trace_of_step(rig: Rig, faults: tuple[Fault, ...], step: str) -> None:
    _clean_refresh(rig, faults)
    rig.recovery_step(Recovery(step, ()))
    assert any(a.operation.startswith(("UpdateItem CONN#", "GetItem RESCUE#")) for a in rig.run.attempts), step


# --- the review's cases, by name -------------------------------------------------------------------
def _after_answer(service: str | None = None, *, writes: bool = False) -> Any:
    def matches(attempt: Attempt) -> bool:
        return (
            attempt.after_answer
            and attempt.service != "apicbase"
            and (service is None or attempt.service == service)
            and (not writes or attempt.dynamodb_write)
        )

    return matches


REVIEW_REFRESH = {
    "every DynamoDB write timing out (15 s a call)": Fault.rule(
        READ_TIMEOUT, "DynamoDB writes time out", _after_answer("dynamodb", writes=True)
    ),
    "DynamoDB unreachable (6 s a call)": Fault.rule(UNREACHABLE, "DynamoDB unreachable", _after_answer("dynamodb")),
    "only the connection's write timing out": Fault.rule(
        READ_TIMEOUT, "the CONN# write times out", lambda a: a.operation == SAVE
    ),
    "every DynamoDB write throttled": Fault.rule(
        THROTTLED, "DynamoDB writes throttled", _after_answer("dynamodb", writes=True)
    ),
}


@pytest.mark.parametrize("case", REVIEW_REFRESH, ids=list(REVIEW_REFRESH))
def test_a_refresh_keeps_or_parks_the_rotated_token_when_faults_take_their_time(rig, case):
    """Given a due connection, and DynamoDB failing after Apicbase answered as the review measured,
    when it is refreshed (botocore's retries, its backoff, the function's Timeout all on the clock),
    then the rotated refresh token is stored, or parked and applied once DynamoDB is back; never
    presented twice."""
    started = rig.clock()
    outcome = refresh_cell(rig, (REVIEW_REFRESH[case],))
    FIGURES[f"faults: review case, refresh, {case}: {outcome}"] += 1
    assert outcome in {"intact", "parked, then applied"}, f"{outcome} after {rig.clock() - started:.1f} s"


REVIEW_CALLBACK = {
    "the table and the key timing out twice a call": Fault.flaky(
        READ_TIMEOUT, "DynamoDB and KMS time out twice", 2, lambda a: a.service in {"dynamodb", "kms"}
    ),
    "every DynamoDB write throttled after the exchange": Fault.rule(
        THROTTLED, "DynamoDB writes throttled", _after_answer("dynamodb", writes=True)
    ),
}


@pytest.mark.parametrize("case", REVIEW_CALLBACK, ids=list(REVIEW_CALLBACK))
def test_a_callback_keeps_or_parks_the_grant_when_faults_take_their_time(rig, case):
    """Given a callback, and AWS failing as the review measured,
    when the code is exchanged (every retry and backoff on the clock, the callback's Timeout),
    then the grant is stored, or parked and applied."""
    outcome = callback_cell(rig, (REVIEW_CALLBACK[case],))
    FIGURES[f"faults: review case, callback, {case}: {outcome}"] += 1
    assert outcome in {"stored", "parked, then applied"}, outcome


def test_the_harness_charges_botocores_own_retries(rig):
    """Given DynamoDB timing out for good on the lease write, when a refresh runs, then botocore
    tried it as often as the client says, each attempt costing the read timeout: the harness is not
    a zero-cost fault."""
    trace = _trace(rig, _clean_refresh)
    lease = next(a for a in trace if a.operation.endswith("lease"))
    started = rig.clock()
    rig.refresh((Fault.at(lease, READ_TIMEOUT, sticky=True),))
    config = rig.deps.connections.table.meta.client.meta.config
    tries = [a for a in rig.run.attempts if a.operation == lease.operation]
    assert [a.try_number for a in tries] == list(range(1, config.retries["total_max_attempts"] + 1))
    assert rig.clock() - started >= config.read_timeout * len(tries)


def test_a_function_that_reaches_its_timeout_is_killed_there(rig):
    """Given a refresh whose Apicbase answer comes after the admin function's Timeout (the broker's
    own time check bypassed), when it runs, then it is killed at its deadline: 502, the clock at
    the deadline and not beyond."""
    rig.purge()
    seed_connection(rig.deps, rig.apicbase, CID, expires_in=3600)
    rig.deps.settings = dataclasses.replace(rig.deps.settings, lease_seconds=10_000)
    rig.deps.apicbase.refresh_read_timeout = 100.0
    rig.modules["admin"].DEPS.bind = lambda context: None  # plans on an unbounded deadline
    slow = Fault.rule(APICBASE_SLOW, "Apicbase answers after 99.5 s", lambda a: a.operation == "token")
    started = rig.clock()
    response = rig.refresh((slow,))
    assert (response["statusCode"], rig.run.killed) == (502, "deadline")
    assert rig.clock() - started == rig.timeouts["admin"]
