"""``BrokerClient``: the broker's API for integrators' services, signed with their AWS credentials."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound

from .errors import BrokerError, ConfigurationError, RateLimited, error_from, is_error_document, retry_after
from .signing import LOOPBACK_HOSTS, SIGNATURE_HEADERS, ExecuteApiAuth, is_local, region_from_url
from .tokens import DEFAULT_MARGIN_SECONDS, TokenCache

TIMEOUT_SECONDS = 35  # API Gateway gives the function 30 s; a little more so we see its answer
APICBASE_API_URL = "https://api.apicbase.com/"
# Where from_env finds the broker: its API URL (the stack's ApiUrl output), else its stack's name.
ENV_API_URL = "APICBASE_BROKER_API_URL"
ENV_STACK = "APICBASE_BROKER_STACK"
# paginate waits out 429s for at most this many seconds in all (Apicbase's limit is per minute).
MAX_WAIT_SECONDS = 120.0
WAIT_WITHOUT_RETRY_AFTER = 10.0


class BrokerClient:
    """The broker's API at ``api_url`` (the stack's ``ApiUrl`` output).

    Requests are signed with SigV4 (service execute-api) with the credentials of ``session``
    (default: boto3's usual chain); the caller needs ``execute-api:Invoke`` on the API. Plain
    ``http://127.0.0.1`` (the local run) is called unsigned; plain http elsewhere is refused.
    """

    def __init__(
        self,
        api_url: str,
        *,
        session: Any = None,
        region: str | None = None,
        credentials: Any = None,
        timeout: float = TIMEOUT_SECONDS,
        token_margin: float = DEFAULT_MARGIN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        apicbase_url: str = APICBASE_API_URL,
    ) -> None:
        parts = urlsplit(api_url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigurationError(f"the API URL {api_url!r} is not an http(s) URL")
        if parts.scheme == "http" and not is_local(api_url):
            raise ConfigurationError("plain http is only for the local run on 127.0.0.1; use the https API URL")
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self.sleep = sleep
        self.apicbase_url = apicbase_url.rstrip("/") + "/"
        self.local = is_local(api_url)
        if self.local:
            self.auth = ExecuteApiAuth(None, None)
        else:
            if credentials is None:
                session = session or aws_session(region=region)
                credentials = session.get_credentials()
            # The API's host names its region, which the signature must name whatever else is given.
            region = region_from_url(api_url) or region or getattr(session, "region_name", None)
            if credentials is None or not region:
                raise ConfigurationError("no AWS credentials or region to sign with; set AWS_PROFILE or AWS_REGION")
            self.auth = ExecuteApiAuth(credentials, region)
        self.tokens = TokenCache(margin=token_margin, clock=clock)
        self._http = requests.Session()
        self._http.auth = self.auth

    @classmethod
    def from_stack(
        cls,
        stack_name: str,
        *,
        session: Any = None,
        region: str | None = None,
        profile: str | None = None,
        **options: Any,
    ) -> BrokerClient:
        """The client of the deployed stack named ``stack_name`` (its ``ApiUrl`` output)."""
        session = session or aws_session(region=region, profile=profile)
        return cls(stack_outputs(session, stack_name)["ApiUrl"], session=session, region=region, **options)

    @classmethod
    def from_env(
        cls,
        *,
        api_url: str | None = None,
        stack_name: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        **options: Any,
    ) -> BrokerClient:
        """The broker at ``api_url``, else of the stack ``stack_name``, else at
        ``$APICBASE_BROKER_API_URL`` (``http://127.0.0.1:3000`` for the local run, which needs no
        AWS credentials), else of the stack ``$APICBASE_BROKER_STACK``."""
        if not stack_name:
            api_url = api_url or os.environ.get(ENV_API_URL, "").strip()
        stack_name = stack_name or os.environ.get(ENV_STACK, "").strip()
        if api_url and is_local(api_url):
            return cls(api_url, **options)
        if api_url:
            session = aws_session(region=region, profile=profile) if profile else None
            return cls(api_url, session=session, region=region, **options)
        if stack_name:
            return cls.from_stack(stack_name, region=region, profile=profile, **options)
        raise ConfigurationError(
            f"no broker API URL: set {ENV_API_URL} to the stack's ApiUrl output (http://127.0.0.1:3000 for the "
            f"local run), or {ENV_STACK} to the stack's name",
            code="no_api_url",
        )

    def __repr__(self) -> str:
        return f"BrokerClient({self.api_url!r})"

    # --- the admin API ---------------------------------------------------------------------------
    def request(self, method: str, path: str, *, query: dict[str, str] | None = None, body: Any = None) -> Any:
        """``path``'s JSON answer (None when empty); an error answer raises a ``BrokerError``."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json", **({"Content-Type": "application/json"} if data else {})}
        try:
            answer = self._http.request(
                method, self.api_url + path, params=query, data=data, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise BrokerError(0, "unreachable", f"cannot reach {self.api_url} ({type(exc).__name__})") from None
        document = _json(answer)
        if answer.status_code >= 400:
            raise error_from(answer.status_code, document, answer.headers)
        return document

    def connect(
        self,
        connection_id: str,
        *,
        scopes: list[str] | str | None = None,
        return_url: str | None = None,
        application: str | None = None,
        expected_username: str | None = None,
    ) -> dict[str, Any]:
        """A connect session: send the library's owner's browser to its ``connect_url`` (it works
        once, and binds the sign-in to that browser). With ``expected_username``, a sign-in as
        any other Apicbase user is refused and its grant revoked."""
        options = {
            "scopes": scopes,
            "return_url": return_url,
            "application": application,
            "expected_username": expected_username,
        }
        body = {"connection_id": connection_id, **{k: v for k, v in options.items() if v is not None}}
        return dict(self.request("POST", "/connect-sessions", body=body))

    def connection(self, connection_id: str) -> dict[str, Any]:
        """The connection's status, scope, expiry and user (never its tokens)."""
        return dict(self.request("GET", connection_path(connection_id)))

    # --- tokens ----------------------------------------------------------------------------------
    def token(self, connection_id: str, *, rejected: str | None = None) -> str:
        """A valid access token, cached in this process until ``token_margin`` s before it expires.

        ``rejected``: a token Apicbase just answered 401 to (the broker's scheduled refresh
        revokes the old access token). A newer one is returned: the broker refreshes first only
        if it still holds the rejected one (``POST /connections/{id}/token``), so however many
        callers report it Apicbase sees one refresh, and threads of this process that report it
        together ask once.
        """
        with self.tokens.lock(connection_id):
            cached = self.tokens.get(connection_id)
            if cached is not None and cached != rejected:
                return cached
            self.tokens.forget(connection_id)
            path = connection_path(connection_id, "/token")
            if rejected is None:
                view = self.request("GET", path)
            else:
                view = self.request("POST", path, body={"rejected_token": rejected})
            token = view.get("access_token") if isinstance(view, dict) else None
            expires_in = view.get("expires_in") if isinstance(view, dict) else None
            if not isinstance(token, str) or not isinstance(expires_in, int):
                # Nothing of the body in the message: it may hold a token.
                raise BrokerError(200, "malformed_response", "the token answer lacks access_token or expires_in")
            self.tokens.put(connection_id, token, expires_in)
            return token

    # --- Apicbase through the broker -------------------------------------------------------------
    def apicbase(self, connection_id: str) -> ApicbaseSession:
        """A ``requests.Session`` that calls Apicbase's API through the broker's proxy with the
        connection's token: ``apicbase("lib-42").get("api/v2/products/")``. No token reaches this
        process; the broker refreshes on a 401 and keeps to Apicbase's rate limit."""
        proxy_url = f"{self.api_url}{connection_path(connection_id, '/apicbase/')}"
        return ApicbaseSession(
            proxy_url,
            self.auth,
            apicbase_url=self.apicbase_url,
            timeout=self.timeout,
            local=self.local,
            sleep=self.sleep,
        )


class ApicbaseSession(requests.Session):
    """Relative paths and Apicbase API URLs (e.g. a page's ``next``) go to the broker's proxy,
    SigV4-signed; any other URL is refused, so the signature never leaves for another host. (The
    local run's Apicbase is its sandbox: there, plain http URLs on 127.0.0.1 count as Apicbase's.)
    An error the broker itself answers (``{"error": {"code", "message"}}``) raises a
    ``BrokerError``; Apicbase's own answers are returned as they are."""

    def __init__(
        self,
        proxy_url: str,
        auth: ExecuteApiAuth,
        *,
        apicbase_url: str,
        timeout: float,
        local: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self.proxy_url = proxy_url
        self.apicbase_url = apicbase_url
        self.default_timeout = timeout
        self.local = local
        self.sleep = sleep
        self.signer = auth
        self.auth = auth
        self.hooks["response"].append(_raise_broker_errors)

    def route(self, url: str) -> str:
        """The proxy URL for a path of Apicbase's API or an Apicbase URL."""
        routed = self.proxy_url + self.api_path(url)
        # HTTP clients resolve dot segments, which would leave the proxy for another route.
        if {".", ".."} & set(urlsplit(routed).path.split("/")):
            raise ValueError(f"{url!r} has dot segments; name the path of Apicbase's API itself")
        return routed

    def api_path(self, url: str) -> str:
        """``url`` as a path of Apicbase's API with its query (``api/v2/products/?page=2``);
        ValueError when it is on another host."""
        parts = urlsplit(url)
        if not parts.scheme and not parts.netloc:
            return url.lstrip("/")
        if url.startswith(self.proxy_url):
            return url[len(self.proxy_url) :]
        if url.startswith(self.apicbase_url):
            return url[len(self.apicbase_url) :]
        if self.local and parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
            return parts.path.lstrip("/") + (f"?{parts.query}" if parts.query else "")
        raise ValueError(f"{url!r} is not on {self.apicbase_url}: this session only calls Apicbase")

    def paginate(
        self, path: str, params: Mapping[str, Any] | None = None, *, max_wait: float = MAX_WAIT_SECONDS
    ) -> Iterator[Any]:
        """Every item of one of Apicbase's paginated lists (``results``), page after page: each
        page's ``next`` is asked for through the broker's proxy, and must be a page of the same
        list on Apicbase (else ValueError, before anything is sent). A 429 (the broker's budget or
        Apicbase's limit) is waited out as its Retry-After says, up to ``max_wait`` seconds in all,
        then raises ``RateLimited``. Apicbase's other errors raise ``requests.HTTPError``; the
        broker's, a ``BrokerError``."""
        listed = urlsplit(self.api_path(path)).path
        url: str | None = path
        query = params
        waited = 0.0
        while url is not None:
            response, waited = self._get_waiting(url, query, waited, max_wait)
            page = response.json()
            if not isinstance(page, dict) or not isinstance(page.get("results"), list):
                raise ValueError(f"{url!r} answered no page of a list (count, next, previous, results)")
            yield from page["results"]
            url, query = page.get("next"), None
            if url is not None and not self._lists(url, listed):
                raise ValueError(f"the next page {url!r} is not a page of {listed} on Apicbase; not followed")

    def _lists(self, url: str, listed: str) -> bool:
        """Whether ``url`` is a page of the list at path ``listed`` of Apicbase's API."""
        try:
            return urlsplit(self.api_path(url)).path == listed
        except ValueError:
            return False

    def _get_waiting(
        self, url: str, params: Mapping[str, Any] | None, waited: float, max_wait: float
    ) -> tuple[requests.Response, float]:
        """GET ``url``, waiting out 429s while the wait stays within ``max_wait`` (``waited`` so far)."""
        while True:
            try:
                response = self.get(url, params=params)
            except RateLimited as exc:  # the broker's budget, or API Gateway's throttle
                wait, why = exc.retry_after, exc.message
            else:
                if response.status_code != 429:
                    response.raise_for_status()
                    return response, waited
                wait, why = retry_after(response.headers.get("Retry-After")), "Apicbase's rate limit (429)"
            wait = WAIT_WITHOUT_RETRY_AFTER if wait is None else wait
            if waited + wait > max_wait:
                raise RateLimited(
                    429, "rate_limited", f"{why}: still limited after waiting {waited:g} s", retry_after=wait
                )
            self.sleep(wait)
            waited += wait

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.default_timeout)
        return super().request(method, self.route(url.decode() if isinstance(url, bytes) else url), *args, **kwargs)

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        # A redirect is signed again if it stays on Apicbase's API, else followed without credentials.
        for name in SIGNATURE_HEADERS:
            prepared_request.headers.pop(name, None)
        try:
            url = self.route(str(prepared_request.url))
        except ValueError:
            return
        prepared_request.prepare_url(url, None)
        self.signer(prepared_request)

    def __repr__(self) -> str:
        return f"ApicbaseSession({self.proxy_url!r})"


def connection_path(connection_id: str, suffix: str = "") -> str:
    return f"/connections/{quote(connection_id, safe='')}{suffix}"


def stack_outputs(session: Any, stack_name: str) -> dict[str, str]:
    """The deployed stack's outputs (CloudFormation DescribeStacks); it must be the broker's."""
    try:
        stacks = session.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    except (ClientError, BotoCoreError) as exc:
        raise ConfigurationError(f"cannot read stack {stack_name!r} ({exc})", code="stack_unreadable") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    if "ApiUrl" not in outputs:
        raise ConfigurationError(
            f"stack {stack_name!r} has no ApiUrl output; is it the broker's stack?", code="stack_unreadable"
        )
    return outputs


def aws_session(*, region: str | None = None, profile: str | None = None) -> Any:
    """A boto3 session; an unknown profile is a ConfigurationError."""
    import boto3  # noqa: PLC0415 (only here: a caller that passes credentials never imports it)

    try:
        return boto3.session.Session(profile_name=profile, region_name=region)
    except ProfileNotFound as exc:
        raise ConfigurationError(str(exc)) from None


def _json(answer: requests.Response) -> Any:
    if not answer.content:
        return None
    try:
        return answer.json()
    except ValueError:
        return None


def _raise_broker_errors(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
    if response.status_code >= 400 and "json" in response.headers.get("Content-Type", ""):
        document = _json(response)
        if is_error_document(document):
            raise error_from(response.status_code, document, response.headers)
    return response
