"""`python -m slotguard.local.runtime REGISTRY.json --port N`: serve until interrupted.

The local target starts the runtime this way as a background process; once serving, it writes
its endpoint URL to `--ready-file` so the starter knows where (and that) it listens.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from slotguard.local.runtime.server import LocalRuntime
from slotguard.local.runtime.spec import Registry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m slotguard.local.runtime")
    parser.add_argument("registry", type=Path, help="JSON file: {settings, functions: [...]}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--ready-file", type=Path, help="written with the endpoint URL")
    args = parser.parse_args(argv)
    registry = Registry.load(args.registry)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runtime = LocalRuntime(registry.functions, registry.settings, host=args.host, port=args.port)
    runtime.start()
    try:
        if args.ready_file is not None:
            args.ready_file.write_text(runtime.endpoint_url + "\n")
        print(f"local Lambda runtime listening on {runtime.endpoint_url}", flush=True)
        stop.wait()
    finally:
        runtime.stop()


if __name__ == "__main__":
    main()
