"""Denial of service on the one public route: API Gateway throttles it and its function's
concurrency is capped, so a flood of forged callbacks cannot starve the admin API or the refresher
(each function has its own reserved concurrency), nor run up an unbounded bill."""

from local import template as tpl


def test_the_public_callback_is_throttled_and_its_concurrency_capped(template):
    """Given template.yaml, then the HTTP API has a default route throttle, and the callback's
    function reserves (and so caps) its concurrency apart from the other functions."""
    api = tpl.resource(template, "HttpApi")["Properties"]["DefaultRouteSettings"]
    functions = tpl.resources_of_type(template, "AWS::Serverless::Function")

    assert 0 < api["ThrottlingRateLimit"] <= api["ThrottlingBurstLimit"] <= 100
    assert 0 < functions["CallbackFunction"]["Properties"]["ReservedConcurrentExecutions"] <= 50
    assert all("ReservedConcurrentExecutions" in fn["Properties"] for fn in functions.values())
