"""The small HTML pages the public callback answers with, in the integrator's name (``Brand``).

Texts are fixed, by error code; what varies comes from the operator's settings (the brand) or
from Apicbase (the user and the library), never from the request, and every value is escaped.
"""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode, urlsplit, urlunsplit

from ..config import Brand
from ..model import REDIRECT_ERRORS

NO_BRAND = Brand()
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
}

_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f5f6f8; color: #1d2330; margin: 0; }}
main {{ max-width: 34rem; margin: 12vh auto; background: #fff; border-radius: 12px; padding: 2rem 2.25rem;
       box-shadow: 0 2px 12px rgba(0,0,0,.08); }}
h1 {{ font-size: 1.4rem; margin-top: 0; color: {colour}; }}
p {{ line-height: 1.5; }}
.hint {{ color: #4a5568; }}
code {{ background: #eef0f4; padding: .1rem .3rem; border-radius: 4px; }}
.brand {{ color: #4a5568; font-size: .9rem; margin: 0 0 .75rem; }}
</style>
</head>
<body>
<main>
<p class="brand">{heading}</p>
<h1>{title}</h1>
<p>{message}</p>
{hint}{links}
</main>
</body>
</html>
"""

# What a person reads for each error code: fixed texts, never an exception's message, which
# could carry an ARN, a host name or worse. (title, message, hint)
_FAILED = "Connection not completed"
_TEXTS = {
    "invalid_state": (
        _FAILED,
        "This sign-in link is not valid, has expired or was already used.",
        "Go back to the application you were connecting and start again; sign-in links work once.",
    ),
    "browser_mismatch": (
        _FAILED,
        "This sign-in was started in another browser, so nothing was connected.",
        "Start connecting again from your application, in the browser you sign in to Apicbase with.",
    ),
    "identity_mismatch": (
        _FAILED,
        "You signed in to Apicbase as a different user than expected, so nothing was connected, "
        "and the broker asked Apicbase to revoke the access it had just granted.",
        "Start connecting again and sign in to Apicbase as the user your application asked for.",
    ),
    "identity_unverified": (
        _FAILED,
        "Apicbase could not confirm who signed in, so nothing was connected.",
        "Wait a minute, then start connecting again from your application.",
    ),
    "access_denied": (
        _FAILED,
        "Access was not granted, so nothing was connected.",
        "If that was a mistake, start connecting again and choose Authorize.",
    ),
    "invalid_grant": (
        _FAILED,
        "The authorization code has expired (codes live 60 seconds) or was already used.",
        "Start connecting again and finish the Apicbase sign-in within a minute.",
    ),
    "invalid_code": (
        _FAILED,
        "Apicbase sent no usable authorization code.",
        "Start connecting again from your application.",
    ),
    "apicbase_unavailable": (
        _FAILED,
        "Apicbase did not answer in time.",
        "Apicbase is not answering right now. Wait a minute, then start connecting again.",
    ),
    "rate_limited": (
        _FAILED,
        "Apicbase asked the broker to slow down.",
        "Wait a minute, then start connecting again.",
    ),
    "dependency_unavailable": (
        "Something went wrong",
        "The connection could not be stored.",
        "The broker is having trouble storing the connection. Try again in a minute.",
    ),
    "invalid_client": (
        "Something went wrong",
        "Apicbase rejected the broker's client credentials.",
        "Tell the broker's operator.",
    ),
    "credentials_not_configured": (
        "Something went wrong",
        "The broker's Apicbase client credentials are not set.",
        "Tell the broker's operator.",
    ),
}
_REDIRECT_ERROR = (
    _FAILED,
    "Apicbase did not authorize the request ({code}).",
    "Start connecting again from your application.",
)
_CLIENT_ERROR = (_FAILED, "The connection could not be completed ({code}).", "Start connecting again.")
_SERVER_ERROR = (
    "Something went wrong",
    "The connection could not be completed ({code}).",
    "The broker is not working correctly. Try again in a minute; if it keeps happening, tell the broker's operator.",
)


# The browser binder (RFC 9700 4.7.1). __Host-: Secure, Path=/, no Domain, so only this host sets
# and reads it; SameSite=Lax still sends it on Apicbase's top-level redirect back. One cookie per
# sign-in, named with its session's tag, so that several connect links opened in one browser each
# complete; the name without a tag is still read (cookies set before tags).
BINDER_COOKIE = "__Host-apicbase-connect"
_COOKIE_ATTRIBUTES = "Secure; HttpOnly; SameSite=Lax; Path=/"


def binder_cookie_name(tag: str) -> str:
    return f"{BINDER_COOKIE}-{tag}" if tag else BINDER_COOKIE


def binder_cookie(binder: str, max_age: int, tag: str = "") -> str:
    return f"{binder_cookie_name(tag)}={binder}; {_COOKIE_ATTRIBUTES}; Max-Age={max_age}"


def clear_binder_cookie(tag: str = "") -> str:
    return f"{binder_cookie_name(tag)}=; {_COOKIE_ATTRIBUTES}; Max-Age=0"


def render(
    status: int,
    title: str,
    message: str,
    hint: str | None = None,
    *,
    brand: Brand = NO_BRAND,
    way_back: str | None = None,
) -> tuple[int, dict[str, str], str]:
    """A page under "Connect <brand> to Apicbase": an error page links to the brand's support, and
    every page leads back to ``way_back`` (the session's return_url) or the brand's default."""
    colour = "#1f7a4d" if status < 400 else "#b42318"
    hint_html = f'<p class="hint">{escape(hint)}</p>' if hint else ""
    links = []
    if status >= 400 and brand.support_url:
        links.append(_link(brand.support_url, f"Get help from {brand.name}" if brand.name else "Get help"))
    back = way_back or brand.return_url
    if back:
        links.append(_link(back, f"Back to {brand.name}" if brand.name else "Back to the application"))
    body = _TEMPLATE.format(
        heading=escape(f"Connect {brand.name} to Apicbase" if brand.name else "Connect to Apicbase"),
        title=escape(title),
        message=escape(message),
        hint=hint_html,
        links="".join(links),
        colour=colour,
    )
    return status, {"Content-Type": "text/html; charset=utf-8", **SECURITY_HEADERS}, body


def _link(url: str, text: str) -> str:
    # The URLs are the operator's or the integrator's, checked as https (or loopback http) URLs.
    return f'\n<p><a href="{escape(url)}" rel="noopener noreferrer">{escape(text)}</a></p>'


def with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def redirect(url: str) -> tuple[int, dict[str, str], str]:
    return 302, {"Location": url, **SECURITY_HEADERS}, ""


def connected(
    connection_id: str,
    *,
    username: str | None,
    library: str | None,
    return_url: str | None,
    brand: Brand = NO_BRAND,
) -> tuple[int, dict[str, str], str]:
    """The integrator's return_url takes over; else a page that names the Apicbase user and
    library (as Apicbase told them), not the connection id, which is the integrator's own."""
    if return_url:
        return redirect(with_query(return_url, {"connection_id": connection_id, "status": "connected"}))
    library_name = f" {library}" if library else ""
    who = f", signed in as {username}" if username else ""
    return render(
        200,
        "Apicbase connected",
        f"Your Apicbase library{library_name} is connected{who}.",
        "You can close this window.",
        brand=brand,
    )


def failure(
    code: str,
    status: int,
    *,
    return_url: str | None = None,
    connection_id: str | None = None,
    brand: Brand = NO_BRAND,
) -> tuple[int, dict[str, str], str]:
    """The page for an error ``code``; a 4xx after the session was known hands over to its return_url."""
    if return_url and connection_id and status < 500:
        return redirect(with_query(return_url, {"connection_id": connection_id, "error": code}))
    if code in _TEXTS:
        title, message, hint = _TEXTS[code]
    elif code in REDIRECT_ERRORS or code == "authorization_failed":
        title, message, hint = _REDIRECT_ERROR
    else:
        title, message, hint = _CLIENT_ERROR if status < 500 else _SERVER_ERROR
    # Codes are ours or from a fixed set (never request data), and render() escapes anyway.
    return render(status, title, message.format(code=code), hint, brand=brand, way_back=return_url)


def unexpected(brand: Brand = NO_BRAND) -> tuple[int, dict[str, str], str]:
    return render(
        500,
        "Something went wrong",
        "The connection could not be completed because of an unexpected error.",
        "Try again in a minute. If it keeps happening, tell the broker's operator.",
        brand=brand,
    )


def not_found(brand: Brand = NO_BRAND) -> tuple[int, dict[str, str], str]:
    return render(404, "Not found", "There is nothing here.", "Start connecting from your application.", brand=brand)
