"""A worker process: all instances of one function, with that function's environment.

Why a process per function rather than all functions in the runtime's process: `os.environ` is
per process, and two functions built from the same code with different variables (the storm's
`pooled` and `direct` wirings of one handler) must each see their own `DB_HOST`. The worker is
started with exactly the function's environment (as Lambda's sandbox is), so `os.environ`,
`os.getenv` and even C libraries that read the environment see the function's values, and the
instances inside share it as the instances of one Lambda function share identical environments.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any, TextIO

from slotguard.local.runtime.instances import InstancePool
from slotguard.local.runtime.isolation import isolate_known_libraries
from slotguard.local.runtime.logs import Capture, RoutedStream
from slotguard.local.runtime.protocol import (
    FREEZE,
    INVOKE,
    READY,
    RESULT,
    SHUTDOWN,
    STATS,
    FreezeRequest,
    Invocation,
    Outcome,
)
from slotguard.local.runtime.spec import FunctionSpec, RuntimeSettings


def serve(conn: Connection) -> None:
    """Receive the spec, then invocations, until the runtime hangs up or says stop."""
    spec_json, settings_json = conn.recv()
    spec = FunctionSpec.model_validate_json(spec_json)
    settings = RuntimeSettings.model_validate_json(settings_json)
    capture = Capture()
    stdout: TextIO = sys.stdout
    stderr: TextIO = sys.stderr
    sys.stdout = RoutedStream(stdout, capture)
    sys.stderr = RoutedStream(stderr, capture)
    # Instances are threads here, not processes: library state kept per process must be per
    # thread, or concurrent invocations read each other's requests.
    isolate_known_libraries()
    pool = InstancePool(spec, settings, capture)
    send_lock = threading.Lock()

    def send(message: tuple[str, int, Any]) -> None:
        with send_lock:
            conn.send(message)

    send((READY, 0, os.getpid()))
    while True:
        try:
            kind, number, body = conn.recv()
        except (EOFError, OSError):
            break  # the runtime is gone: so are its functions
        if kind == INVOKE:
            assert isinstance(body, Invocation)
            pool.invoke(body, _replier(send, number))
        elif kind == FREEZE:
            assert isinstance(body, FreezeRequest)
            request = body
            threading.Thread(
                target=lambda n=number, r=request: send(
                    (RESULT, n, pool.freeze(r.count, r.payload, fresh=r.fresh))
                ),
                daemon=True,
            ).start()
        elif kind == STATS:
            stats = pool.stats()
            stats.worker_pid = os.getpid()
            send((RESULT, number, stats))
        elif kind == SHUTDOWN:
            break
    pool.close()
    sys.stdout.flush()
    sys.stderr.flush()


def _replier(send: Any, number: int) -> Any:
    def reply(outcome: Outcome) -> None:
        send((RESULT, number, outcome))

    return reply


def main() -> None:
    fd = int(sys.argv[1])
    conn = Connection(fd)
    try:
        serve(conn)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    # Handlers still running (a timed-out one, say) must not keep the process alive.
    os._exit(0)


if __name__ == "__main__":
    main()
