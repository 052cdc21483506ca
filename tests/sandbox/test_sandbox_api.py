"""The sandbox's slice of Apicbase's v2 API: pages, filters, scopes and the per-user rate limit,
driven over HTTP on a real ``python -m local.sandbox``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.sandbox.test_sandbox import TIMEOUT, RunningSandbox, exchange, new_code, start_sandbox, stats

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    running = start_sandbox(tmp_path_factory.mktemp("sandbox-api"), "--test-hooks")
    yield running
    running.stop()


def token(sandbox: RunningSandbox, scope: str = "accounts library") -> str:
    response = exchange(sandbox.url, new_code(sandbox.url, scope=scope))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.fixture(scope="module")
def library_token(sandbox: RunningSandbox) -> str:
    return token(sandbox)


def get(sandbox: RunningSandbox, path: str, access_token: str, **params: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {access_token}"}
    return requests.get(f"{sandbox.url}/api/v2/{path}", params=params, headers=headers, timeout=TIMEOUT)


def page_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def test_products_come_ten_to_a_page_with_absolute_links_on_the_sandbox_host(sandbox, library_token):
    # When the first page of products is asked for without a page size
    answer = get(sandbox, "products/", library_token)
    # Then 10 of the 450 come back, with an absolute next link on the host that was asked
    body = answer.json()
    assert answer.status_code == 200
    assert (body["count"], len(body["results"]), body["previous"]) == (450, 10, None)
    assert body["next"] == f"{sandbox.url}/api/v2/products/?page=2"
    assert set(body["results"][0]) == {"id", "name", "category", "base_unit", "modified_date"}


def test_page_size_is_clamped_at_200_and_the_last_page_has_no_next(sandbox, library_token):
    # When pages of 1000 are asked for, following next to the end
    bodies = [get(sandbox, "products/", library_token, page_size=1000).json()]
    while bodies[-1]["next"]:
        bodies.append(requests.get(bodies[-1]["next"], headers=bearer(library_token), timeout=TIMEOUT).json())
    # Then pages hold 200, 200 and 50, every product once, and previous links lead back
    assert [len(b["results"]) for b in bodies] == [200, 200, 50]
    assert len({item["id"] for b in bodies for item in b["results"]}) == 450
    assert page_of(bodies[1]["next"]) == {"page": "3", "page_size": "1000"}
    assert page_of(bodies[2]["previous"]) == {"page": "2", "page_size": "1000"}
    assert page_of(bodies[1]["previous"]) == {"page_size": "1000"}


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


@pytest.mark.parametrize("page", ["0", "-1", "x", "46"])
def test_a_page_that_does_not_exist_is_a_404(sandbox, library_token, page):
    answer = get(sandbox, "products/", library_token, page=page)
    assert (answer.status_code, answer.json()) == (404, {"detail": "Invalid page."})


def test_modified_date_gt_keeps_what_changed_since(sandbox, library_token):
    # Given the modification date of the 441st product (they change four hours apart)
    everything = get(sandbox, "products/", library_token, page_size=200, page=3).json()["results"]
    since = everything[-10]["modified_date"]
    # When the products modified after it are asked for
    answer = get(sandbox, "products/", library_token, modified_date__gt=since)
    # Then the nine after it come back
    assert answer.json()["count"] == 9
    assert all(item["modified_date"] > since for item in answer.json()["results"])


def test_a_bad_modified_date_is_a_400_that_names_the_filter(sandbox, library_token):
    answer = get(sandbox, "products/", library_token, modified_date__gt="yesterday")
    assert (answer.status_code, list(answer.json())) == (400, ["modified_date__gt"])


def test_recipes_are_another_paginated_resource(sandbox, library_token):
    body = get(sandbox, "products/recipes/", library_token, page_size=50).json()
    assert (body["count"], len(body["results"])) == (60, 50)


def test_a_token_without_the_resource_s_scope_gets_403(sandbox, library_token):
    # When a token of accounts and library asks for suppliers (procurement)
    answer = get(sandbox, "suppliers/", library_token)
    # Then 403, and the rate-limit headers all the same
    assert answer.status_code == 403
    assert "procurement" in answer.json()["detail"]
    assert "X-RateLimit-Remaining" in answer.headers


def test_a_dead_token_gets_401_with_www_authenticate(sandbox):
    answer = get(sandbox, "products/", "not-a-token")
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer ")


def test_every_answer_carries_the_user_s_rate_limit_and_the_101st_request_in_a_minute_is_429(sandbox):
    # Given a user who has made no request yet this minute (a fresh sandbox user's minute is shared
    # by every token of demo, so the count starts from what the other tests spent)
    access_token = token(sandbox)
    first = get(sandbox, "accounts/user_info/", access_token)
    remaining = int(first.headers["X-RateLimit-Remaining"])
    assert (first.headers["X-RateLimit-Limit"], 0 < int(first.headers["X-RateLimit-Reset"]) <= 60) == ("100", True)
    before = stats(sandbox.url)
    # When the user spends what is left, and once more
    answers = [get(sandbox, "products/", access_token, page_size=1) for _ in range(remaining + 1)]
    # Then every answer counts down, and the last is a 429 with Retry-After within the minute
    assert [int(a.headers["X-RateLimit-Remaining"]) for a in answers[:-1]] == list(range(remaining - 1, -1, -1))
    assert answers[-1].status_code == 429
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
    after = stats(sandbox.url)
    assert (after["api_requests"] - before["api_requests"], after["throttled"] - before["throttled"]) == (remaining, 1)
