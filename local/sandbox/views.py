"""Views of the Apicbase sandbox: DOT's OAuth endpoints adapted to Apicbase, and test hooks."""

from __future__ import annotations

import threading
from collections import Counter
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
from oauth2_provider.views import AuthorizationView, IntrospectTokenView, TokenView
from oauth2_provider.views.mixins import OAuthLibMixin

STAT_NAMES = ("token_requests", "refresh_requests", "introspections")


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
    """DOT's token endpoint (client credentials in the body work as they are), counted."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        STATS.count("token_requests")
        if request.POST.get("grant_type") == "refresh_token":
            STATS.count("refresh_requests")
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
        STATS.count("introspections")
        if not self.authenticate_client(request):
            return JsonResponse({"error": "invalid_client"}, status=401)
        response: HttpResponse = IntrospectTokenView.get_token_response(request.POST.get("token"))
        return response


class UserInfoView(OAuthLibMixin, View):
    """A tiny protected resource, so consumers' examples have something to call."""

    http_method_names = ["get"]

    def get(self, request: HttpRequest) -> HttpResponse:
        valid, oauthlib_request = self.verify_request(request)
        if not valid:
            error = dict(getattr(oauthlib_request, "oauth2_error", None) or {"error": "invalid_token"})
            response = JsonResponse(error, status=401)
            response["WWW-Authenticate"] = f'Bearer error="{error["error"]}"'
            return response
        return JsonResponse(
            {
                "username": oauthlib_request.user.get_username(),
                "scope": oauthlib_request.access_token.scope,
            }
        )


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
@require_POST
def expire_access_tokens(request: HttpRequest) -> HttpResponse:
    """Make every access token expired, so the next use needs a refresh."""
    past = timezone.now() - timedelta(seconds=1)
    expired = get_access_token_model().objects.update(expires=past)
    return JsonResponse({"expired_access_tokens": expired})
