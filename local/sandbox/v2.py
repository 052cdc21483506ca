"""A slice of Apicbase's v2 API (developers.apicbase.com), behind the sandbox's Bearer check.

- ``accounts/user_info/``: the token's user, scope and active library (the broker's callback page
  names the library).
- ``products/`` (450 seeded), ``products/recipes/`` (scope ``library``) and ``suppliers/`` (scope
  ``procurement``): lists paginated as Django REST framework's PageNumberPagination does: ``page``,
  ``page_size`` (10 by default, at most 200: larger asks get 200), ``count``/``next``/``previous``/
  ``results`` with absolute links on the host the request named; ``modified_date__gt`` (ISO 8601)
  keeps what changed since, as Apicbase asks integrators to poll.
- 401 for a token that is not live (not counted: no user); for a live one, 100 requests per user and
  minute (the ``rate_limit`` switch sets another limit), 429 with Retry-After beyond, and the
  rate-limit headers on every answer; 403 when the token lacks the resource's scope.

The records are made up, the same on every start: nothing here is stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, path
from django.views import View
from oauth2_provider.views.mixins import OAuthLibMixin

from local.sandbox.views import RATE_LIMIT, STATS, SWITCHES, too_many_requests

API_RATE_LIMIT = 100  # Apicbase's: requests per user and minute, reads and writes
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 200
PRODUCT_COUNT = 450
SEEDED_FROM = datetime(2024, 1, 1, tzinfo=UTC)
_IDS = uuid.UUID("6f1c0a52-3c1e-4c1b-9d2e-5a0b7d1e2f30")  # namespace of the made-up ids

Record = dict[str, Any]


def _made_up(kind: str, count: int, hours_apart: int, fields: Callable[[int], Record]) -> list[Record]:
    """``count`` records of ``kind``, modified ``hours_apart`` apart, oldest first."""
    return [
        {
            "id": str(uuid.uuid5(_IDS, f"{kind}-{i}")),
            **fields(i),
            "modified_date": _iso(SEEDED_FROM + timedelta(hours=hours_apart * i)),
        }
        for i in range(count)
    ]


_ITEMS = ("tomato", "onion", "butter", "flour", "salmon", "chicken thigh", "basil", "olive oil", "rice", "lemon")
_KINDS = ("fresh", "organic", "frozen", "dried", "local")
_CATEGORIES = ("vegetables", "dairy", "bakery", "fish", "meat", "herbs", "oils", "dry goods", "fruit", "spices")
_UNITS = ("kg", "l", "piece")


@cache
def products() -> list[Record]:
    return _made_up(
        "product",
        PRODUCT_COUNT,
        4,
        lambda i: {
            "name": f"{_KINDS[i // 10 % 5].capitalize()} {_ITEMS[i % 10]} #{i + 1}",
            "category": _CATEGORIES[i % 10],
            "base_unit": _UNITS[i % 3],
        },
    )


@cache
def recipes() -> list[Record]:
    return _made_up("recipe", 60, 30, lambda i: {"name": f"Dish of the day #{i + 1}", "portions": 2 + i % 6})


@cache
def suppliers() -> list[Record]:
    return _made_up("supplier", 25, 72, lambda i: {"name": f"Supplier {i + 1}", "country": ("BE", "NL", "FR")[i % 3]})


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class ApiView(OAuthLibMixin, View):
    """GET only; the Bearer check, the user's rate limit and the scope, then ``answer``."""

    http_method_names = ["get"]
    scope: str | None = None

    def get(self, request: HttpRequest) -> HttpResponse:
        valid, oauth = self.verify_request(request)
        if not valid:
            error = dict(getattr(oauth, "oauth2_error", None) or {"error": "invalid_token"})
            response = JsonResponse({**error, "detail": "Invalid or expired access token."}, status=401)
            response["WWW-Authenticate"] = f'Bearer error="{error.get("error", "invalid_token")}"'
            return response
        window = RATE_LIMIT.take(f"user:{oauth.user.get_username()}", SWITCHES.current.rate_limit or API_RATE_LIMIT)
        if window.retry_after is not None:
            response = too_many_requests(window.retry_after)
        else:
            STATS.count("api_requests")
            if self.scope and not oauth.access_token.allow_scopes([self.scope]):
                detail = f"You do not have permission to perform this action (scope {self.scope} is needed)."
                response = JsonResponse({"detail": detail}, status=403)
            else:
                response = self.answer(request, oauth)
        response["X-RateLimit-Limit"] = str(window.limit)
        response["X-RateLimit-Remaining"] = str(window.remaining)
        response["X-RateLimit-Reset"] = str(window.reset)
        return response

    def answer(self, request: HttpRequest, oauth: Any) -> HttpResponse:
        raise NotImplementedError


class UserInfo(ApiView):
    def answer(self, request: HttpRequest, oauth: Any) -> HttpResponse:
        username = oauth.user.get_username()
        library = {"id": str(uuid.uuid5(_IDS, f"library-{username}")), "name": f"{username.capitalize()}'s kitchen"}
        return JsonResponse({"username": username, "scope": oauth.access_token.scope, "active_library": library})


class ListView(ApiView):
    """A list as Apicbase pages it (Django REST framework's PageNumberPagination)."""

    records: Callable[[], Sequence[Record]]

    def answer(self, request: HttpRequest, oauth: Any) -> HttpResponse:
        items: Sequence[Record] = self.records()
        since = request.GET.get("modified_date__gt")
        if since is not None:
            moment = _moment(since)
            if moment is None:
                return JsonResponse({"modified_date__gt": ["Enter a valid date/time."]}, status=400)
            items = [item for item in items if datetime.fromisoformat(item["modified_date"]) > moment]
        size = _page_size(request.GET.get("page_size"))
        pages = max(1, -(-len(items) // size))
        raw_page = request.GET.get("page", "1")
        page = pages if raw_page == "last" else _positive(raw_page)
        if page is None or page > pages:
            return JsonResponse({"detail": "Invalid page."}, status=404)
        url = request.build_absolute_uri()
        return JsonResponse(
            {
                "count": len(items),
                "next": _with_page(url, page + 1) if page < pages else None,
                "previous": (_with_page(url, page - 1) if page > 2 else _with_page(url, None)) if page > 1 else None,
                "results": list(items[(page - 1) * size : page * size]),
            }
        )


def _positive(raw: str) -> int | None:
    return int(raw) if raw.isascii() and raw.isdigit() and int(raw) > 0 else None


def _page_size(raw: str | None) -> int:
    """DRF's: a positive integer, at most MAX_PAGE_SIZE; anything else is the default."""
    size = _positive(raw or "")
    return DEFAULT_PAGE_SIZE if size is None else min(size, MAX_PAGE_SIZE)


def _moment(raw: str) -> datetime | None:
    """An ISO 8601 date or date-time (UTC when it names no zone), or None."""
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        try:
            moment = datetime.combine(date.fromisoformat(raw), datetime.min.time())
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _with_page(url: str, page: int | None) -> str:
    """``url`` with its ``page`` set (or removed for the first page), the query sorted as DRF does."""
    scheme, netloc, path_, query, fragment = urlsplit(url)
    params = parse_qs(query, keep_blank_values=True)
    params.pop("page", None)
    if page is not None:
        params["page"] = [str(page)]
    return urlunsplit((scheme, netloc, path_, urlencode(sorted(params.items()), doseq=True), fragment))


class Products(ListView):
    scope = "library"
    records = staticmethod(products)


class Recipes(ListView):
    scope = "library"
    records = staticmethod(recipes)


class Suppliers(ListView):
    scope = "procurement"
    records = staticmethod(suppliers)


urlpatterns: list[URLPattern] = [
    path("api/v2/accounts/user_info/", UserInfo.as_view()),
    path("api/v2/products/", Products.as_view()),
    path("api/v2/products/recipes/", Recipes.as_view()),
    path("api/v2/suppliers/", Suppliers.as_view()),
]
