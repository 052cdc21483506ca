"""The one route table: which function serves each HttpApi route, and by which handler.

The handlers (``functions/*/app.py``) bind their functions by it, the local run serves it, and
the tests check it against template.yaml's HttpApi events and docs/openapi.yaml.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

CALLBACK, CONNECTIONS = "CallbackFunction", "ConnectionsFunction"


@dataclass(frozen=True)
class Route:
    method: str  # upper case; ANY for every method
    path: str  # as in the template: /connections/{connection_id}, a greedy {proxy+}
    function: str  # the template's logical id
    authorizer: str  # AWS_IAM or NONE
    handler: str  # the function in functions/<name>/app.py that serves it

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def resolver_rule(self) -> str:
        """The path as Powertools' resolver spells it: /connections/<connection_id>."""
        return re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", r"<\1>", self.path)

    def pattern(self) -> re.Pattern[str]:
        # {name} is one segment; a greedy {name+} (API Gateway's proxy) is the rest of the path.
        regex = re.sub(r"\\\{([A-Za-z_][A-Za-z0-9_]*)\\\+\\\}", r"(?P<\1>.+)", re.escape(self.path))
        regex = re.sub(r"\\\{([A-Za-z_][A-Za-z0-9_]*)\\\}", r"(?P<\1>[^/]+)", regex)
        return re.compile(f"^{regex}$")


# The table: method, path, the template's function, its authorizer, the handler. One route a line.
_TABLE = """
GET     /oauth/callback                                   CallbackFunction     NONE     callback
GET     /oauth/start                                      CallbackFunction     NONE     start
POST    /connect-sessions                                 ConnectionsFunction  AWS_IAM  create_connect_session
GET     /connections                                      ConnectionsFunction  AWS_IAM  list_connections
GET     /connections/{connection_id}                      ConnectionsFunction  AWS_IAM  describe_connection
DELETE  /connections/{connection_id}                      ConnectionsFunction  AWS_IAM  delete_connection
GET     /connections/{connection_id}/token                ConnectionsFunction  AWS_IAM  get_token
POST    /connections/{connection_id}/token                ConnectionsFunction  AWS_IAM  replace_rejected_token
POST    /connections/{connection_id}/refresh              ConnectionsFunction  AWS_IAM  refresh
POST    /connections/{connection_id}/authorization-code   ConnectionsFunction  AWS_IAM  exchange_code
PUT     /connections/{connection_id}/tokens               ConnectionsFunction  AWS_IAM  import_tokens
ANY     /connections/{connection_id}/apicbase/{proxy+}    ConnectionsFunction  AWS_IAM  proxy_apicbase
"""
ROUTES: tuple[Route, ...] = tuple(Route(*line.split()) for line in _TABLE.strip().splitlines())

Handler = Callable[..., Any]


def served_by(function: str) -> tuple[Route, ...]:
    return tuple(route for route in ROUTES if route.function == function)


def bind(function: str, handlers: Mapping[str, Handler]) -> dict[Route, Handler]:
    """Each of ``function``'s routes with its handler; a handler missing, or one no route names,
    fails the import (a cold start), never a request."""
    routes = served_by(function)
    named = {route.handler for route in routes}
    if named != set(handlers):
        raise LookupError(f"{function}: the route table names {sorted(named)}, the module has {sorted(handlers)}")
    return {route: handlers[route.handler] for route in routes}
