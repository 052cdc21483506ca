"""The one stand-in for Lambda's context object, shared by the local run, the tests and bench.

It has what Powertools reads, and a real ``get_remaining_time_in_millis`` counted from its
creation, so code that plans around the function's deadline sees one.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

# The emulated account and region of the local run (local.aws uses these too). This module imports
# nothing else of local/, so a benchmark child can use it without warming any import.
REGION = "us-east-1"
ACCOUNT = "123456789012"


@dataclass
class LambdaContext:
    function_name: str = "test-function"
    memory_limit_in_mb: int = 256
    timeout_seconds: int = 30
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.started + self.timeout_seconds - time.monotonic()) * 1000))
