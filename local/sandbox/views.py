"""Views of the Apicbase sandbox: DOT's OAuth endpoints adapted to Apicbase, and test hooks."""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model
from oauth2_provider.views import AuthorizationView, IntrospectTokenView, RevokeTokenView, TokenView
from oauth2_provider.views.mixins import OAuthLibMixin

from local.sandbox_switches import LIVE, Switches

STAT_NAMES = (
    "token_requests",
    "refresh_requests",
    "introspections",
    "revocations",
    # Refresh grants that presented a refresh token some earlier grant had presented already.
    "reused_refresh_tokens",
    # Requests answered 429 (not counted above).
    "throttled",
    # Requests to the v2 API with a live token, not refused by the rate limit.
    "api_requests",
)
RATE_WINDOW_SECONDS = 60


class _Stats:
    """Request counters since the process started, for tests that check who called what."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {name: self._counts[name] for name in STAT_NAMES}


STATS = _Stats()


class _Switches:
    """The switches a running sandbox can change through its test hook."""

    def __init__(self, switches: Switches) -> None:
        self._lock = threading.Lock()
        self.current = switches

    def change(self, values: dict[str, Any]) -> Switches:
        unknown = set(values) - set(LIVE)
        if unknown:
            raise ValueError(f"not switchable while running: {', '.join(sorted(unknown))}")
        with self._lock:
            self.current = self.current.changed(values)
            return self.current


SWITCHES = _Switches(settings.SANDBOX["switches"])


@dataclass(frozen=True)
class Window:
    """A user's minute after one request: what the rate-limit headers say."""

    limit: int
    remaining: int
    reset: int  # seconds until the oldest request counted leaves the minute
    retry_after: int | None  # set when the request was refused


class _RateLimit:
    """A sliding minute per key; a request refused with 429 does not count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, deque[float]] = {}

    def take(self, key: str, limit: int) -> Window:
        """Count the request unless ``limit`` (0: none) is reached; the window either way."""
        now = time.monotonic()
        with self._lock:
            seen = self._seen.setdefault(key, deque())
            while seen and seen[0] <= now - RATE_WINDOW_SECONDS:
                seen.popleft()
            refused = bool(limit) and len(seen) >= limit
            if not refused:
                seen.append(now)
            reset = max(1, math.ceil(seen[0] + RATE_WINDOW_SECONDS - now)) if seen else 0
            return Window(limit, max(0, limit - len(seen)), reset, reset if refused else None)

    def reset(self) -> None:
        with self._lock:
            self._seen.clear()


RATE_LIMIT = _RateLimit()


def _throttled(key: str) -> HttpResponse | None:
    """Apicbase's answer once a user made too many requests this minute (Django REST framework's)."""
    window = RATE_LIMIT.take(key, SWITCHES.current.rate_limit)
    if window.retry_after is None:
        return None
    return too_many_requests(window.retry_after)


def too_many_requests(wait: int) -> HttpResponse:
    STATS.count("throttled")
    response = JsonResponse({"detail": f"Request was throttled. Expected available in {wait} seconds."}, status=429)
    response["Retry-After"] = str(wait)
    return response


def _client_key(request: HttpRequest) -> str:
    return "client:" + request.POST.get("client_id", "")


def _user_key(token: str | None, request: HttpRequest) -> str:
    """The token owner's key, or the client's when the token is unknown."""
    checksum = hashlib.sha256((token or "").encode()).hexdigest()
    found = get_access_token_model().objects.filter(token_checksum=checksum).select_related("user").first()
    return f"user:{found.user.get_username()}" if found and found.user else _client_key(request)


class _Presented:
    """Fingerprints of every refresh token presented, to count the ones presented again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[str] = set()

    def again(self, token: str) -> bool:
        fingerprint = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            seen = fingerprint in self._seen
            self._seen.add(fingerprint)
            return seen


PRESENTED = _Presented()


def index(request: HttpRequest) -> HttpResponse:
    return render(request, "sandbox/index.html", {"scopes": settings.OAUTH2_PROVIDER["SCOPES"]})


class ConsentView(AuthorizationView):
    """DOT's authorize view with the sandbox's consent page."""

    template_name = "sandbox/authorize.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context: dict[str, Any] = super().get_context_data(**kwargs)
        # DOT hands names and descriptions as two lists; the template wants pairs.
        context["scope_items"] = list(
            zip(context.get("scopes", []), context.get("scopes_descriptions", []), strict=False)
        )
        return context


class CountingTokenView(TokenView):
    """DOT's token endpoint (client credentials in the body work as they are), counted,
    rate-limited per client, and with the delay and odd answers the switches ask for."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        throttled = _throttled(_client_key(request))
        if throttled is not None:
            return throttled
        STATS.count("token_requests")
        if request.POST.get("grant_type") == "refresh_token":
            STATS.count("refresh_requests")
            if PRESENTED.again(request.POST.get("refresh_token", "")):
                STATS.count("reused_refresh_tokens")
        response: HttpResponse = super().post(request, *args, **kwargs)
        if response.status_code != 200:
            return response
        current = SWITCHES.current
        if current.odd_2xx:
            body = json.loads(response.content)
            body.pop("expires_in", None)
            response.content = json.dumps(body).encode()
        # The grant is carried out and committed by now: a client that stops waiting loses it.
        time.sleep(current.token_delay)
        return response


class CountingRevokeView(RevokeTokenView):
    """DOT's RFC 7009 revocation endpoint, counted and rate-limited per client."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        throttled = _throttled(_client_key(request))
        if throttled is not None:
            return throttled
        STATS.count("revocations")
        response: HttpResponse = super().post(request, *args, **kwargs)
        return response


@method_decorator(csrf_exempt, name="dispatch")
class IntrospectView(OAuthLibMixin, View):
    """Introspection the Apicbase way: the client authenticates with its own credentials.

    DOT's IntrospectTokenView answers a bare 403 when the client fails to authenticate and
    also accepts GET and bearer tokens with an ``introspection`` scope; Apicbase takes a POST
    with ``client_id`` and ``client_secret`` and answers 401 ``invalid_client``.
    """

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        throttled = _throttled(_user_key(request.POST.get("token"), request))
        if throttled is not None:
            return throttled
        STATS.count("introspections")
        if not self.authenticate_client(request):
            return JsonResponse({"error": "invalid_client"}, status=401)
        response: HttpResponse = IntrospectTokenView.get_token_response(request.POST.get("token"))
        return response


# Test hooks: routed only with --test-hooks (see urls.py).


@csrf_exempt
@require_POST
def revoke_demo_user_tokens(request: HttpRequest) -> HttpResponse:
    """Revoke everything the demo user granted, as when access is withdrawn in Apicbase."""
    user = get_user_model().objects.get(username=settings.SANDBOX["username"])
    access_tokens = get_access_token_model().objects.filter(user=user)
    revoked_access = access_tokens.count()
    refresh_tokens = list(get_refresh_token_model().objects.filter(user=user, revoked__isnull=True))
    for refresh_token in refresh_tokens:
        refresh_token.revoke()
    access_tokens.delete()
    get_grant_model().objects.filter(user=user).delete()
    return JsonResponse({"revoked_refresh_tokens": len(refresh_tokens), "revoked_access_tokens": revoked_access})


@require_GET
def stats(request: HttpRequest) -> HttpResponse:
    return JsonResponse(STATS.snapshot())


@csrf_exempt
def switches(request: HttpRequest) -> HttpResponse:
    """GET: the switches now; POST a JSON object to change the live ones (a new rate limit starts
    a new minute)."""
    if request.method == "POST":
        try:
            values = json.loads(request.body or b"{}")
            if not isinstance(values, dict):
                raise ValueError("send a JSON object of switches")
            changed = SWITCHES.change(values)
        except ValueError as error:
            return JsonResponse({"error": str(error)}, status=400)
        if "rate_limit" in values:
            RATE_LIMIT.reset()
        return JsonResponse(asdict(changed))
    return JsonResponse(asdict(SWITCHES.current))


@csrf_exempt
@require_POST
def expire_access_tokens(request: HttpRequest) -> HttpResponse:
    """Make every access token expired, so the next use needs a refresh."""
    past = timezone.now() - timedelta(seconds=1)
    expired = get_access_token_model().objects.update(expires=past)
    return JsonResponse({"expired_access_tokens": expired})
