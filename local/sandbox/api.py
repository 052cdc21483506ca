"""The sandbox's protected API, under ``/api/v1/``: resources that answer only to a live access token,
as Apicbase's API does (401 with WWW-Authenticate otherwise, never DOT's bare 403). The broker's
proxy route forwards here in the local run (APICBASE_API_URL defaults to the sandbox).

- ``me/``: the token's user and scope.
- ``echo/<anything>``: any method; what arrived (method, path, query, content type, body, header
  names), so tests can see what the proxy forwards and what it keeps back.
- ``bytes/<n>/``: n bytes of application/octet-stream (binary and oversized answers).
- ``throttled/``: Apicbase's 429 with a Retry-After.
- ``expire-this-token/`` (POST, with --test-hooks only): the access token it was called with
  stops working before its time (as when a refresh elsewhere deleted it); it can still be
  refreshed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, path, re_path
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider.views.mixins import OAuthLibMixin

MAX_BYTES = 20_000_000
THROTTLED_RETRY_AFTER = "7"


@method_decorator(csrf_exempt, name="dispatch")
class ProtectedView(OAuthLibMixin, View):
    """Calls ``answer`` when the request's bearer token is live, else answers 401."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        valid, oauth = self.verify_request(request)
        if not valid:
            error = dict(getattr(oauth, "oauth2_error", None) or {"error": "invalid_token"})
            response = JsonResponse({"detail": "Authentication credentials were not provided or are invalid."})
            response.status_code = 401
            response["WWW-Authenticate"] = f'Bearer error="{error.get("error", "invalid_token")}"'
            return response
        return self.answer(request, oauth, **kwargs)

    def answer(self, request: HttpRequest, oauth: Any, **kwargs: Any) -> HttpResponse:
        raise NotImplementedError


class Me(ProtectedView):
    def answer(self, request: HttpRequest, oauth: Any, **kwargs: Any) -> HttpResponse:
        return JsonResponse({"username": oauth.user.get_username(), "scope": oauth.access_token.scope})


class Echo(ProtectedView):
    def answer(self, request: HttpRequest, oauth: Any, **kwargs: Any) -> HttpResponse:
        return JsonResponse(
            {
                "username": oauth.user.get_username(),
                "method": request.method,
                "path": request.path,
                "query": request.META.get("QUERY_STRING", ""),
                "content_type": request.META.get("CONTENT_TYPE", ""),
                "body": request.body.decode("utf-8", errors="replace"),
                "headers": sorted(name.lower() for name in request.headers),
            }
        )


class Bytes(ProtectedView):
    def answer(self, request: HttpRequest, oauth: Any, **kwargs: Any) -> HttpResponse:
        size = min(int(kwargs["n"]), MAX_BYTES)
        body = bytes(range(256)) * (size // 256) + bytes(size % 256)
        return HttpResponse(body, content_type="application/octet-stream")


class Throttled(ProtectedView):
    def answer(self, request: HttpRequest, oauth: Any, **kwargs: Any) -> HttpResponse:
        response = JsonResponse({"detail": "Request was throttled."}, status=429)
        response["Retry-After"] = THROTTLED_RETRY_AFTER
        return response


class ExpireThisToken(ProtectedView):
    def answer(self, request: HttpRequest, oauth: Any, **kwargs: Any) -> HttpResponse:
        if request.method != "POST":
            return JsonResponse({"detail": "POST only"}, status=405)
        oauth.access_token.expires = timezone.now() - timedelta(seconds=1)
        oauth.access_token.save(update_fields=["expires"])
        return JsonResponse({"expired": True})


urlpatterns: list[URLPattern] = [
    path("api/v1/me/", Me.as_view()),
    path("api/v1/bytes/<int:n>/", Bytes.as_view()),
    path("api/v1/throttled/", Throttled.as_view()),
    re_path(r"^api/v1/echo/.*$", Echo.as_view()),
]
if settings.SANDBOX["test_hooks"]:
    urlpatterns.append(path("api/v1/expire-this-token/", ExpireThisToken.as_view()))
