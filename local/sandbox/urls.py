from django.conf import settings
from django.contrib.auth.views import LoginView
from django.urls import URLPattern, path

from local.sandbox import api, v2, views

# Apicbase's paths, trailing slashes included.
urlpatterns: list[URLPattern] = [
    path("", views.index),
    path("accounts/login/", LoginView.as_view(template_name="sandbox/login.html")),
    path("oauth/authorize/", views.ConsentView.as_view()),
    path("oauth/token/", views.CountingTokenView.as_view()),
    path("oauth/introspect/", views.IntrospectView.as_view()),
    path("oauth/revoke_token/", views.CountingRevokeView.as_view()),
    *v2.urlpatterns,
    *api.urlpatterns,
]

if settings.SANDBOX["test_hooks"]:
    urlpatterns += [
        path("sandbox/revoke/", views.revoke_demo_user_tokens),
        path("sandbox/stats/", views.stats),
        path("sandbox/expire-access-tokens/", views.expire_access_tokens),
        path("sandbox/switches/", views.switches),
    ]
