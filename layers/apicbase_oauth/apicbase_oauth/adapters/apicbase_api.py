"""Adapter for Apicbase's API (its data, not OAuth): one request with a bearer token, for the proxy.

Redirects are not followed (the token must not follow them; the caller gets the 3xx), the answer
is read up to a size that fits a Lambda response, and every failure becomes one of ``errors``.
Nothing here logs a token, a URL's query or a body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field

import requests
from requests.adapters import HTTPAdapter

from ..errors import ApicbaseTimeout, ApicbaseUnavailable, ResponseTooLarge
from ..model import immutable

CONNECT_TIMEOUT_SECONDS = 3.0
# API Gateway gives the whole integration 30 s: the answer must be in before that.
READ_TIMEOUT_SECONDS = 20.0
CHUNK_BYTES = 64 * 1024
USER_AGENT = "apicbase-oauth-broker"


@immutable
class ApiResponse:
    status: int
    headers: Mapping[str, str]  # case-insensitive (requests' own)
    body: bytes = field(repr=False)


class ApicbaseApi:
    def __init__(self, *, max_body_bytes: int, session: requests.Session | None = None) -> None:
        self.max_body_bytes = max_body_bytes
        self.session = session or requests.Session()
        # No proxies or .netrc from the environment: a netrc entry would replace the bearer token.
        self.session.trust_env = False
        self.session.mount("https://", HTTPAdapter(pool_maxsize=4))
        self.session.mount("http://", HTTPAdapter(pool_maxsize=4))

    def send(self, method: str, url: str, *, token: str, headers: Mapping[str, str], body: bytes) -> ApiResponse:
        sent = {
            **headers,
            "Authorization": f"Bearer {token}",
            "User-Agent": USER_AGENT,
            "Accept-Encoding": "gzip, deflate",
        }
        try:
            with self.session.request(
                method,
                url,
                headers=sent,
                data=body or None,
                timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS),
                allow_redirects=False,
                stream=True,
            ) as answer:
                chunks, size = [], 0
                for chunk in answer.iter_content(CHUNK_BYTES):
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise ResponseTooLarge(
                            f"Apicbase's answer is larger than {self.max_body_bytes // 1_000_000} MB, more than a "
                            "Lambda response holds; ask for smaller pages"
                        )
                    chunks.append(chunk)
                return ApiResponse(answer.status_code, answer.headers, b"".join(chunks))
        except requests.ConnectTimeout:
            raise ApicbaseUnavailable("Apicbase's API could not be reached", request_sent=False) from None
        except requests.Timeout:
            raise ApicbaseTimeout(
                f"Apicbase's API did not answer within {READ_TIMEOUT_SECONDS:g} s; "
                "the request may have been carried out"
            ) from None
        except requests.ConnectionError:
            raise ApicbaseUnavailable("Apicbase's API could not be reached", request_sent=False) from None
        except requests.RequestException as exc:
            raise ApicbaseUnavailable(f"Apicbase's API failed ({type(exc).__name__})", request_sent=True) from None
