"""A Lambda-compatible runtime for the local target (Invoke HTTP API, one module copy per instance).

`LocalRuntime(specs, settings).start()` serves `POST /2015-03-31/functions/{name}/invocations`
so `boto3.client("lambda", endpoint_url=runtime.endpoint_url)` invokes local functions.
"""

from slotguard.local.runtime.client import RuntimeAdminClient, RuntimeAdminError
from slotguard.local.runtime.protocol import FreezeOutcome, FunctionStats
from slotguard.local.runtime.server import FunctionNotFoundError, LocalRuntime
from slotguard.local.runtime.spec import FunctionSpec, Registry, RuntimeSettings

__all__ = [
    "FreezeOutcome",
    "FunctionNotFoundError",
    "FunctionSpec",
    "FunctionStats",
    "LocalRuntime",
    "Registry",
    "RuntimeAdminClient",
    "RuntimeAdminError",
    "RuntimeSettings",
]
