"""Where a broker runs, for the commands that talk to its AWS resources (``doctor``,
``set-credentials``): a deployed stack, found through CloudFormation, or the local run
(``python -m local.run``), found through the state file it writes while it runs.

The state file names moto's endpoint, the outputs and the parameters; it holds no secret (the
local AWS credentials are moto's dummies), so nothing secret ever goes through argv or a file.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from apicbase_broker import BrokerClient, ConfigurationError
from apicbase_broker.client import aws_session
from apicbase_broker.signing import is_local

from .main import ENV_STACK

ENV_LOCAL_RUN = "APICBASE_BROKER_LOCAL_RUN"
# Where `make run` (python -m local.run) writes its state file, relative to the repository.
DEFAULT_LOCAL_STATE = Path(".local-data") / "local-run.json"
# moto accepts any credentials; these are nobody's, so a real key never reaches the local endpoint.
LOCAL_KEY = "local"
AWS_CONFIG = Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 3, "mode": "standard"})


@dataclass
class Target:
    """A broker's outputs, parameters and resources (logical id -> (type, physical id)), and the
    AWS session that reaches them."""

    description: str
    outputs: dict[str, str]
    parameters: dict[str, str]
    resources: dict[str, tuple[str, str]]
    session: Any
    status: str = ""
    selector: str = ""  # the options that name this broker again, for the hints
    endpoint_url: str | None = None  # moto's, for the local run
    local: dict[str, Any] = field(default_factory=dict)  # the local run's state file

    @property
    def is_local(self) -> bool:
        return self.endpoint_url is not None

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint_url, config=AWS_CONFIG)

    def of_type(self, resource_type: str) -> dict[str, str]:
        """Physical ids of the resources of one type, by logical id."""
        return {name: physical for name, (kind, physical) in self.resources.items() if kind == resource_type}

    def command(self, name: str) -> str:
        """The command line that runs ``name`` on this broker."""
        return f"apicbase-broker {name} {self.selector}".rstrip()

    def api(self) -> BrokerClient:
        if self.is_local:
            return BrokerClient(self.outputs["ApiUrl"])
        return BrokerClient(self.outputs["ApiUrl"], session=self.session, region=self.session.region_name)


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--local-run",
        nargs="?",
        const=str(DEFAULT_LOCAL_STATE),
        metavar="STATE_FILE",
        help=f"the local run (make run) instead of a stack; its state file (default: {DEFAULT_LOCAL_STATE}, "
        f"or {ENV_LOCAL_RUN})",
    )


def from_args(args: argparse.Namespace) -> Target:
    local = args.local_run or os.environ.get(ENV_LOCAL_RUN)
    if local:
        return from_local_run(Path(local))
    stack = args.stack_name or os.environ.get(ENV_STACK)
    if not stack:
        raise ConfigurationError(f"which broker? pass --stack-name (or set {ENV_STACK}), or --local-run for make run")
    return from_stack(stack, region=args.region, profile=args.profile)


def from_stack(stack_name: str, *, region: str | None = None, profile: str | None = None) -> Target:
    session = aws_session(region=region, profile=profile)
    if not session.region_name:
        raise ConfigurationError("no AWS region: pass --region or set AWS_REGION")
    cloudformation = session.client("cloudformation", config=AWS_CONFIG)
    try:
        (stack,) = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
        resources = {
            summary["LogicalResourceId"]: (summary["ResourceType"], summary.get("PhysicalResourceId", ""))
            for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack_name)
            for summary in page["StackResourceSummaries"]
            if summary.get("LogicalResourceId")
        }
    except (ClientError, BotoCoreError) as exc:
        raise ConfigurationError(f"cannot read stack {stack_name!r} in {session.region_name} ({exc})") from None
    return Target(
        description=f"stack {stack_name} ({session.region_name})",
        outputs={o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
        parameters={p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])},
        resources=resources,
        session=session,
        status=stack["StackStatus"],
        selector=f"--stack-name {stack_name} --region {session.region_name}",
    )


def from_local_run(path: Path) -> Target:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        endpoint, region = state["aws_endpoint_url"], state["region"]
        outputs, parameters = dict(state["outputs"]), dict(state["parameters"])
        resources = {name: (kind, physical) for name, (kind, physical) in state["resources"].items()}
    except FileNotFoundError:
        raise ConfigurationError(f"no local run: {path} does not exist (start one with make run)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"{path} is not a local run's state file ({type(exc).__name__})") from None
    # Only loopback: a state file must not send even moto's dummy credentials elsewhere.
    if not (is_local(endpoint) and is_local(outputs.get("ApiUrl", ""))):
        raise ConfigurationError(f"{path} names endpoints outside 127.0.0.1; refusing to use it")
    session = boto3.session.Session(aws_access_key_id=LOCAL_KEY, aws_secret_access_key=LOCAL_KEY, region_name=region)
    return Target(
        description=f"local run at {outputs['ApiUrl']} (pid {state.get('pid')})",
        outputs=outputs,
        parameters=parameters,
        resources=resources,
        session=session,
        status="RUNNING" if _alive(state.get("pid")) else "STOPPED",
        selector=f"--local-run {path}",
        endpoint_url=endpoint,
        local=state,
    )


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True
