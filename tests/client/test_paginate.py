"""``BrokerClient(...).apicbase(id).paginate(path)``: every page through the broker's proxy, 429s
waited out within a bound, and ``from_env``; no network (responses answers the broker's API)."""

from __future__ import annotations

import pytest
import requests
import responses

from apicbase_broker import BrokerClient, ConfigurationError, RateLimited
from apicbase_broker.errors import retry_after
from tests.client.test_client import API, CREDENTIALS, PROXY

APICBASE = "https://api.apicbase.com/api/v2/products/"
LOCAL = "http://127.0.0.1:3000"
LOCAL_PROXY = f"{LOCAL}/connections/lib-42/apicbase/"


@pytest.fixture
def slept() -> list[float]:
    return []


@pytest.fixture
def client(slept) -> BrokerClient:
    return BrokerClient(API, credentials=CREDENTIALS, sleep=slept.append)


@pytest.fixture
def http():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def page(items: range, next_url: str | None) -> dict:
    return {"count": 5, "next": next_url, "previous": None, "results": [{"id": i} for i in items]}


def test_every_item_of_every_page_comes_through_the_proxy(client, http):
    # Given Apicbase's pages, whose next links name Apicbase itself
    http.get(f"{PROXY}api/v2/products/?page_size=2", json=page(range(2), f"{APICBASE}?page=2&page_size=2"))
    http.get(f"{PROXY}api/v2/products/?page=2&page_size=2", json=page(range(2, 4), f"{APICBASE}?page=3&page_size=2"))
    http.get(f"{PROXY}api/v2/products/?page=3&page_size=2", json=page(range(4, 5), None))
    # When the integrator pages through them
    items = list(client.apicbase("lib-42").paginate("api/v2/products/", params={"page_size": 2}))
    # Then every item came, each page from the broker's proxy, signed; Apicbase was never called directly
    assert [item["id"] for item in items] == [0, 1, 2, 3, 4]
    assert all(call.request.url.startswith(PROXY) for call in http.calls)
    assert all(call.request.headers["Authorization"].startswith("AWS4-HMAC-SHA256") for call in http.calls)


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.example.com/api/v2/products/?page=2",
        "http://api.apicbase.com/api/v2/products/?page=2",
        "https://api.apicbase.com/api/v2/suppliers/?page=2",
        "http://127.0.0.1:8000/api/v2/products/?page=2",
    ],
)
def test_a_next_link_off_apicbase_or_to_another_list_is_not_followed(client, http, next_url):
    # Given a first page whose next points elsewhere
    http.get(f"{PROXY}api/v2/products/", json=page(range(2), next_url))
    # When it is paged, Then the first page's items come, and then a ValueError, with nothing more sent
    pages = client.apicbase("lib-42").paginate("api/v2/products/")
    assert [next(pages)["id"], next(pages)["id"]] == [0, 1]
    with pytest.raises(ValueError, match="next"):
        next(pages)
    assert len(http.calls) == 1


def test_the_local_run_s_sandbox_links_go_through_its_proxy_without_credentials(http, slept):
    # Given the local run (no AWS credentials anywhere) and its sandbox's absolute next link
    sandbox = "http://127.0.0.1:8000/api/v2/products/"
    http.get(f"{LOCAL_PROXY}api/v2/products/", json=page(range(2), f"{sandbox}?page=2"))
    http.get(f"{LOCAL_PROXY}api/v2/products/?page=2", json=page(range(2, 3), None))
    # When it is paged
    items = list(BrokerClient.from_env(api_url=LOCAL).apicbase("lib-42").paginate("api/v2/products/"))
    # Then the second page came through the local proxy, unsigned
    assert len(items) == 3
    assert http.calls[1].request.url == f"{LOCAL_PROXY}api/v2/products/?page=2"
    assert "Authorization" not in http.calls[1].request.headers


@pytest.mark.parametrize(
    "throttled",
    [
        # the broker's own budget per Apicbase user
        {"json": {"error": {"code": "rate_limited", "message": "over budget"}}, "headers": {"Retry-After": "7"}},
        # Apicbase's limit, passed on by the proxy
        {"json": {"detail": "Request was throttled."}, "headers": {"Retry-After": "7"}},
    ],
    ids=["broker", "apicbase"],
)
def test_a_429_is_waited_out_as_its_retry_after_says(client, http, slept, throttled):
    # Given the second page is refused once with 429 and Retry-After: 7
    http.get(f"{PROXY}api/v2/products/", json=page(range(2), f"{APICBASE}?page=2"))
    http.get(f"{PROXY}api/v2/products/?page=2", status=429, **throttled)
    http.get(f"{PROXY}api/v2/products/?page=2", json=page(range(2, 3), None))
    # When it is paged, Then every item comes, after one wait of 7 s
    assert len(list(client.apicbase("lib-42").paginate("api/v2/products/"))) == 3
    assert slept == [7]


def test_the_waiting_is_bounded_then_a_typed_error_says_when_to_retry(client, http, slept):
    # Given Apicbase keeps answering 429 with Retry-After: 40
    http.get(f"{PROXY}api/v2/products/", status=429, json={"detail": "throttled"}, headers={"Retry-After": "40"})
    # When it is paged with at most 100 s of waiting
    with pytest.raises(RateLimited) as raised:
        list(client.apicbase("lib-42").paginate("api/v2/products/", max_wait=100))
    # Then it waited twice (80 s), and the error says how long to wait before the next try
    assert slept == [40, 40]
    assert (raised.value.status, raised.value.code, raised.value.retry_after) == (429, "rate_limited", 40)
    assert "80 s" in raised.value.message


def test_apicbase_s_other_errors_raise_http_errors(client, http):
    http.get(f"{PROXY}api/v2/suppliers/", status=403, json={"detail": "You do not have permission."})
    with pytest.raises(requests.HTTPError) as raised:
        list(client.apicbase("lib-42").paginate("api/v2/suppliers/"))
    assert raised.value.response.status_code == 403


def test_an_answer_that_is_not_a_page_is_refused(client, http):
    http.get(f"{PROXY}api/v2/accounts/user_info/", json={"username": "demo"})
    with pytest.raises(ValueError, match="no page of a list"):
        list(client.apicbase("lib-42").paginate("api/v2/accounts/user_info/"))


@pytest.mark.parametrize("value", ["²", "٣", "1.5", "-1", ""])
def test_retry_after_that_is_no_delta_seconds_nor_a_date_is_none(value):
    assert retry_after(value) is None


# --- from_env ----------------------------------------------------------------------------------
def test_from_env_reads_the_broker_s_url_from_one_variable(monkeypatch):
    monkeypatch.setenv("APICBASE_BROKER_API_URL", LOCAL)
    monkeypatch.delenv("APICBASE_BROKER_STACK", raising=False)
    assert BrokerClient.from_env().api_url == LOCAL


def test_from_env_prefers_what_the_caller_names(monkeypatch):
    monkeypatch.setenv("APICBASE_BROKER_API_URL", "http://127.0.0.1:3999")
    assert BrokerClient.from_env(api_url=LOCAL).api_url == LOCAL


def test_from_env_without_a_url_or_stack_says_which_variables_to_set(monkeypatch):
    monkeypatch.delenv("APICBASE_BROKER_API_URL", raising=False)
    monkeypatch.delenv("APICBASE_BROKER_STACK", raising=False)
    with pytest.raises(ConfigurationError, match="APICBASE_BROKER_API_URL") as raised:
        BrokerClient.from_env()
    assert raised.value.code == "no_api_url"
