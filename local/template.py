"""Reads template.yaml so that tests and the local run build exactly what CloudFormation builds.

CloudFormation's short tags (!Ref, !Sub, !GetAtt, ...) become their long forms; ``resolve``
turns them into values given the physical names of the resources.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections import ChainMap
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = ROOT / "template.yaml"
LAYER_PATH = ROOT / "layers" / "apicbase_oauth"
if str(LAYER_PATH) not in sys.path:
    sys.path.append(str(LAYER_PATH))  # the route table is the edge's: the local run serves it

from apicbase_oauth.edge.routes import ROUTES, Route  # noqa: E402


class _CfnLoader(yaml.SafeLoader):
    pass


def _construct(tag: str):  # type: ignore[no-untyped-def]
    name = tag if tag in ("Ref", "Condition") else f"Fn::{tag}"

    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if tag == "GetAtt":
                value = str(value).split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {name: value}

    return construct


for _tag in (
    *("Ref", "Condition", "Sub", "GetAtt", "If", "Not", "Equals"),
    *("FindInMap", "Join", "Select", "Split", "And", "Or"),
):
    _CfnLoader.add_constructor(f"!{_tag}", _construct(_tag))


def load(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_CfnLoader)  # noqa: S506 (SafeLoader subclass)


def resource(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return template["Resources"][logical_id]


def resources_of_type(template: dict[str, Any], type_name: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_name}


def parameter_defaults(template: dict[str, Any]) -> dict[str, str]:
    return {k: str(v.get("Default", "")) for k, v in template.get("Parameters", {}).items()}


def resolve(value: Any, refs: dict[str, str]) -> Any:
    """Resolve intrinsic functions given ``refs``: names for !Ref, ``Logical.Attr`` for !GetAtt."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref":
            return refs[arg]
        if key == "Fn::GetAtt":
            return refs[".".join(arg)]
        if key == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            # A ChainMap, not a copy: ``refs`` may compute a name it does not hold (tests/unit/iam.py).
            local = ChainMap({k: str(resolve(v, refs)) for k, v in variables.items()}, refs)
            return re.sub(r"\$\{([^}]+)\}", lambda m: str(local[m.group(1)]), text)
        if key == "Fn::Join":
            delimiter, parts = arg
            return str(delimiter).join(str(resolve(part, refs)) for part in resolve(parts, refs))
        if key == "Fn::If":
            condition, when_true, when_false = arg
            return resolve(when_true if refs.get(f"Condition:{condition}") == "true" else when_false, refs)
    if isinstance(value, dict):
        return {k: resolve(v, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, refs) for v in value]
    return value


def dynamodb_create_table_kwargs(template: dict[str, Any], logical_id: str, table_name: str) -> dict[str, Any]:
    """CreateTable arguments from the table's own properties, its stream included (SSE and PITR
    are the cloud's job)."""
    props = resource(template, logical_id)["Properties"]
    kwargs: dict[str, Any] = {
        "TableName": table_name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props["BillingMode"],
    }
    if props.get("GlobalSecondaryIndexes"):
        kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    if props.get("StreamSpecification"):
        kwargs["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
    return kwargs


def ttl_attribute(template: dict[str, Any], logical_id: str) -> str | None:
    spec = resource(template, logical_id)["Properties"].get("TimeToLiveSpecification") or {}
    return spec.get("AttributeName") if spec.get("Enabled") else None


@dataclass(frozen=True)
class Function:
    logical_id: str
    code_uri: str
    handler: str
    environment: dict[str, Any]
    events: dict[str, Any]
    properties: dict[str, Any]

    @property
    def module_path(self) -> Path:
        module, _ = self.handler.rsplit(".", 1)
        return ROOT / self.code_uri / (module.replace(".", "/") + ".py")

    @property
    def handler_name(self) -> str:
        return self.handler.rsplit(".", 1)[1]

    def import_module(self, module_name: str) -> ModuleType:
        """Import the handler's module as ``module_name``: every function's module is called
        ``app``, so each needs a name of its own. It runs with the process's environment."""
        spec = importlib.util.spec_from_file_location(module_name, self.module_path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        return module


def functions(template: dict[str, Any]) -> dict[str, Function]:
    global_env = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    result = {}
    for logical_id, res in resources_of_type(template, "AWS::Serverless::Function").items():
        props = res["Properties"]
        env = {**global_env, **props.get("Environment", {}).get("Variables", {})}
        result[logical_id] = Function(
            logical_id=logical_id,
            code_uri=props["CodeUri"],
            handler=props["Handler"],
            environment=env,
            events=props.get("Events", {}),
            properties=props,
        )
    return result


def policy_statements(function: Function) -> list[dict[str, Any]]:
    """The IAM statements of the function's inline policies (SAM ``Policies`` documents)."""
    statements: list[dict[str, Any]] = []
    for policy in function.properties.get("Policies", []):
        if isinstance(policy, dict) and "Statement" in policy:
            body = policy["Statement"]
            statements.extend(body if isinstance(body, list) else [body])
    return statements


def http_events(template: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """(method, path, function, authorizer) of every HttpApi event the template declares."""
    default_auth = (
        template.get("Resources", {}).get("HttpApi", {}).get("Properties", {}).get("Auth", {}).get("DefaultAuthorizer")
    ) or "NONE"
    events = set()
    for fn in functions(template).values():
        for event in fn.events.values():
            if event["Type"] != "HttpApi":
                continue
            props = event["Properties"]
            auth = props.get("Auth", {}).get("Authorizer", default_auth)
            events.add((props["Method"].upper(), props["Path"], fn.logical_id, auth))
    return events


def http_routes(template: dict[str, Any]) -> tuple[Route, ...]:
    """The edge's route table, which the template must declare exactly (ValueError if not)."""
    served = {(r.method, r.path, r.function, r.authorizer) for r in ROUTES}
    declared = http_events(template)
    if served != declared:
        raise ValueError(
            f"template.yaml's HttpApi events and the edge's route table differ: {sorted(served ^ declared)}"
        )
    return ROUTES
