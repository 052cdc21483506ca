"""The local run enforces each function's role from the template (local/iam.py): what AWS would
refuse fails here too, inside the function, and the product's own error handling answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from local import template as tpl

from tests.e2e.localrun import LocalRun
from tests.template_mutations import without_statement

pytestmark = pytest.mark.e2e


def test_the_proxy_works_with_every_role_enforced(local_run: LocalRun) -> None:
    # Given the local run, whose banner says what it enforces
    assert "refused so far: 0" in local_run.log()
    # When a connected library calls Apicbase's API through the broker (a budget write, a KMS
    # data key opened, the connection read)
    local_run.connect("e2e-iam-proxy")
    answer = local_run.api("GET", "/connections/e2e-iam-proxy/apicbase/api/v1/me/")
    # Then the sandbox answered, and no call was refused
    assert answer.status_code == 200, answer.text
    assert local_run.refusals() == []


@pytest.fixture
def run_without_the_budget_permission(tmp_path: Path) -> Iterator[LocalRun]:
    """A local run of the template as it was before the admin API's role could spend the
    proxy's budget (its SpendApicbaseBudget statement removed)."""
    template = tmp_path / "template.yaml"
    template.write_text(without_statement(tpl.TEMPLATE_PATH.read_text(), "ConnectionsFunction", "SpendApicbaseBudget"))
    run = LocalRun(tmp_path / "local-run.log", expects_refusals=True, TEMPLATE_FILE=str(template))
    try:
        run.wait_ready()
        yield run
    finally:
        run.stop()


def test_without_the_budget_permission_the_proxy_answers_503_and_the_refusal_is_logged(
    run_without_the_budget_permission: LocalRun,
) -> None:
    run = run_without_the_budget_permission
    # Given a library connected (every call of connect is allowed)
    run.connect("e2e-iam-denied")
    assert run.refusals() == []
    # When it is called through the proxy
    answer = run.api("GET", "/connections/e2e-iam-denied/apicbase/api/v1/me/")
    # Then DynamoDB refused the budget's write as AWS would, and the broker said so as it does
    # for any failing dependency: 503, the one refused call logged with its function and key
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "dependency_unavailable"
    (refused,) = run.refusals()
    assert "ConnectionsFunction: dynamodb:UpdateItem on arn:aws:dynamodb:" in refused
    assert '"dynamodb:LeadingKeys": ["BUDGET#' in refused
    assert refused.endswith("[refused in this run: 1]")
