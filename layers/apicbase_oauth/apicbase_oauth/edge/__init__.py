"""The HTTP edge: API Gateway events in, answers out. Flows below it see typed values only.

- ``routes``: the one route table (method, path, function, handler) that the handlers, the
  local run and the tests serve and check against template.yaml.
- ``gateway``: reading a payload 2.0 (or the flood rule's 1.0) event: route key, query, cookies,
  path ids, the callback's own origin.
- ``checks``: every value from outside checked whole (ids, codes, states, scopes, URLs, tokens).
- ``answers``: error statuses and the admin API's JSON views.
- ``pages``: the public callback's HTML pages and its binder cookie.
- ``forwarding``: the proxy route's request (path checks, headers, body) and its Lambda answer.

Nothing is imported here: the callback's cold start loads only the modules it uses.
"""
