"""Denial of service on the one public route: API Gateway throttles it, and the operator can cap its
function's concurrency (CallbackReservedConcurrency, opt-in so that a new account can deploy) so that
a flood of forged callbacks cannot starve the admin API or the refresher, nor run up an unbounded bill."""

from local import template as tpl


def test_the_public_callback_is_throttled_and_its_concurrency_capped(template):
    """Given template.yaml, then the HTTP API has a default route throttle, and every function can
    reserve (and so cap) its concurrency apart from the others, from a parameter."""
    api = tpl.resource(template, "HttpApi")["Properties"]["DefaultRouteSettings"]
    functions = tpl.resources_of_type(template, "AWS::Serverless::Function")

    assert 0 < api["ThrottlingRateLimit"] <= api["ThrottlingBurstLimit"] <= 100
    reservation = functions["CallbackFunction"]["Properties"]["ReservedConcurrentExecutions"]
    assert reservation["Fn::If"][1] == {"Ref": "CallbackReservedConcurrency"}
    assert all("ReservedConcurrentExecutions" in fn["Properties"] for fn in functions.values())
