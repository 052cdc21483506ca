"""The four functions of the stack on one moto, every AWS client and Apicbase session under the
fault injector (``faults``), each invocation with its Timeout from template.yaml on the test clock:
what the fault matrix and the custody races drive."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from local.lambda_context import LambdaContext

from apicbase_oauth.config import LEASE_SECONDS
from apicbase_oauth.edge import pages
from apicbase_oauth.model import ACTIVE
from tests.binding import open_in_browser
from tests.conftest import load_event
from tests.hostile.conftest import http_event, stored_pair
from tests.hostile.faults import Fault, Injector, LambdaClock, ProcessKilled, Run
from tests.unit.refresh_support import drain

CID = "lib-fault"
FUNCTIONS = {
    "callback": "CallbackFunction",
    "admin": "ConnectionsFunction",
    "worker": "RefreshWorkerFunction",
    "scheduler": "RefreshSchedulerFunction",
}


def build(handlers: Any, apicbase: Any, watch: Any, monkeypatch: Any, template: dict[str, Any]) -> Rig:
    injector = Injector(handlers.clock, handlers.aws.session.client("dynamodb"))
    injector.install(monkeypatch)  # before any client is built
    modules = {name: handlers.module(logical_id) for name, logical_id in FUNCTIONS.items()}
    for module in modules.values():
        injector.attach_apicbase(module.DEPS.apicbase.session)
    timeout = template["Globals"]["Function"]["Timeout"]
    timeouts = {
        name: int(template["Resources"][logical_id]["Properties"].get("Timeout", timeout))
        for name, logical_id in FUNCTIONS.items()
    }
    sqs = handlers.aws.session.client("sqs")
    return Rig(handlers, apicbase, watch, modules, timeouts, injector, sqs)


def _body(response: dict[str, Any]) -> Any:
    return json.loads(response["body"]) if response.get("body") else None


@dataclass
class Rig:
    handlers: Any
    apicbase: Any
    watch: Any
    modules: dict[str, Any]
    timeouts: dict[str, int]
    injector: Injector
    sqs: Any

    @property
    def clock(self) -> LambdaClock:
        return self.handlers.clock

    @property
    def deps(self) -> Any:
        return self.modules["admin"].DEPS

    @property
    def run(self) -> Run:
        return self.injector.run_

    # --- the functions, as Lambda runs them -----------------------------------------------------
    def cold(self) -> None:
        """Every function in a fresh container: no data keys, no secret cached."""
        for module in self.modules.values():
            module.DEPS.cipher._keys.clear()
            module.DEPS.credentials._cached = None

    def elsewhere(self, name: str) -> str:
        """Another container of the same function (a race runs there, not in the busy one)."""
        other = f"{name} (another container)"
        if other not in self.modules:
            self.modules[other] = self.handlers.module(FUNCTIONS[name])
            self.timeouts[other] = self.timeouts[name]
        return other

    def invoke(self, name: str, event: dict[str, Any], faults: Iterable[Fault] = ()) -> Any:
        """One invocation with its Timeout on the test clock; a function that dies (a crash, or its
        Timeout) answers what API Gateway answers then (502), or fails its whole batch."""
        module = self.modules[name]
        context = LambdaContext(FUNCTIONS[name.split(maxsplit=1)[0]], 512, self.timeouts[name], clock=self.clock)
        self.clock.deadline = self.clock() + self.timeouts[name]
        try:
            return self.injector.run(tuple(faults), lambda: module.lambda_handler(event, context))
        except ProcessKilled:
            module.DEPS.cipher._keys.clear()  # the next invocation is a new container
            return {"statusCode": 502, "headers": {}, "body": '{"message": "Internal Server Error"}'}
        finally:
            self.clock.deadline = None

    def connect(self, faults: Iterable[Fault] = ()) -> dict[str, Any]:
        """A browser coming back from Apicbase with a good code and state."""
        state, binder = open_in_browser(self.modules["callback"].DEPS, CID)
        self.cold()  # the callback reads the secret itself
        query = [("code", self.apicbase.issue_code()), ("state", state)]
        event = http_event("GET", "/oauth/callback", query=query, cookies=[f"{pages.BINDER_COOKIE}={binder}"])
        event["rawQueryString"] = urlencode(query)
        response = self.invoke("callback", event, faults)
        self.watch.see(response["body"])
        return response

    def admin(self, method: str, path: str, body: Any = None, *, container: str = "admin") -> dict[str, Any]:
        event = http_event(method, f"/connections/{CID}{path}", body=None if body is None else json.dumps(body))
        response: dict[str, Any] = self.invoke(container, event)
        if not path.endswith("/token"):  # the one answer that exists to carry a token
            self.watch.see(response["body"])
        return response

    def proxy(self, path: str) -> dict[str, Any]:
        """``GET /connections/{id}/apicbase/{path}`` (the proxy route, as API Gateway sends it)."""
        event = load_event("admin_proxy_apicbase.json")
        event["rawPath"] = event["requestContext"]["http"]["path"] = f"/connections/{CID}/apicbase/{path}"
        response: dict[str, Any] = self.invoke("admin", event)
        return response

    def delete(self, *, container: str = "admin") -> Any:
        return _body(self.admin("DELETE", "", container=container))

    def refresh(self, faults: Iterable[Fault] = ()) -> dict[str, Any]:
        response = self.invoke("admin", http_event("POST", f"/connections/{CID}/refresh"), faults)
        self.watch.see(response["body"])
        return response

    def deliver(self, faults: Iterable[Fault] = (), rounds: int = 3) -> None:
        """Lambda's SQS event source: the queue's messages to the worker, failed ones again."""
        url = self.deps.settings.refresh_queue_url
        record = load_event("sqs_refresh_batch.json")["Records"][0]
        for _ in range(rounds):
            messages = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return
            records = [
                {**copy.deepcopy(record), "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"]}
                | {"body": m["Body"]}
                for m in messages
            ]
            answer = self.invoke("worker", {"Records": records}, faults)
            # A worker that died fails its whole batch.
            died = "statusCode" in answer
            failed = None if died else {f["itemIdentifier"] for f in answer.get("batchItemFailures", [])}
            for message in messages:
                if failed is not None and message["MessageId"] not in failed:
                    self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                else:  # back on the queue at once (the visibility timeout, shortened)
                    self.sqs.change_message_visibility(
                        QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                    )

    def recovery_step(self, recovery: Any) -> None:
        if recovery.step == "deliver":
            self.deliver(recovery.faults, rounds=1)
        else:
            self.clock.advance(LEASE_SECONDS + 1)
            self.refresh(recovery.faults)

    def recover(self) -> None:
        """What the stack does on its own: SQS redelivers, the lease lapses, the scheduler sweeps."""
        self.deliver()
        self.clock.advance(LEASE_SECONDS + 1)
        self.invoke("scheduler", load_event("scheduled_tick.json"))
        self.deliver()

    def purge(self) -> None:
        table = self.deps.connections.table
        table.delete_item(Key={"pk": f"CONN#{CID}"})
        table.delete_item(Key={"pk": f"RESCUE#{CID}"})
        for _ in drain(self.sqs, self.deps.settings.refresh_queue_url):
            pass  # PurgeQueue works once a minute

    # --- what became of the tokens ----------------------------------------------------------------
    def stored(self) -> Any:
        try:
            return self.deps.connections.get(CID)
        except Exception:
            return None

    def stored_live(self) -> bool:
        connection = self.stored()
        return (
            connection is not None
            and connection.status == ACTIVE
            and stored_pair(self.deps, CID).refresh_token in self.apicbase.live_refresh_tokens
        )

    def reason(self) -> str | None:
        connection = self.stored()
        return connection.reauthorization_reason if connection else None
