"""The background process that owns a running local stack.

`slotguard up` starts `python -m slotguard.local.supervisor --stack NAME` in a session of its own
and returns once the stack is ready. The supervisor starts every part (`LocalStack`), then keeps
two loops running: the exporter publishing the pooler's metrics to the local CloudWatch, and the
alarm evaluator sampling the stack every second, logging each state change and keeping a snapshot
of every alarm for `slotguard status`. SIGTERM (`slotguard down`) stops everything it started.

Readiness is a file: the stack record once the stack is up, or `supervisor.failed` with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from infra.alarm_rules import local_alarm_rules
from pgbouncer.exporter import Exporter, ExporterSettings
from slotguard.local.alarms import AlarmEvaluator
from slotguard.local.monitor import DatabaseObserver, StackSampler
from slotguard.local.runtime import RuntimeAdminClient
from slotguard.local.stack import LocalStack, StackPlan, admin_conninfos, master_conninfo
from slotguard.local.state import StackRecord, write_private

EXPORTER_INTERVAL_S = 5.0
ALARM_INTERVAL_S = 1.0

log = logging.getLogger("slotguard.supervisor")


def _say(message: str) -> None:
    log.info(message)


def run(plan: StackPlan) -> int:
    paths = plan.paths
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    paths.supervisor_pid.write_text(f"{os.getpid()}\n")
    stack = LocalStack(plan)
    try:
        record = stack.start(_say)
    except Exception as exc:
        log.error("start failed: %s", exc)
        write_private(paths.failure_file, f"{exc}\n\n{traceback.format_exc()}")
        with contextlib.suppress(Exception):
            stack.stop()
        paths.supervisor_pid.unlink(missing_ok=True)
        return 1
    threads = [
        threading.Thread(target=_export, args=(stack, record, stop), name="exporter", daemon=True),
        threading.Thread(target=_alarms, args=(plan, record, stop), name="alarms", daemon=True),
    ]
    for thread in threads:
        thread.start()
    paths.write_record(record)
    _say(f"stack {plan.stack} is up")
    while not stop.wait(1.0):
        for name, proc in (("runtime", stack.runtime_proc), ("aws", stack.aws_proc)):
            if proc is not None and proc.poll() is not None:
                log.error("%s exited with %s; stopping the stack", name, proc.returncode)
                stop.set()
    _say("stopping")
    for thread in threads:
        thread.join(timeout=5)
    paths.record_file.unlink(missing_ok=True)
    stack.stop()
    paths.supervisor_pid.unlink(missing_ok=True)
    _say("stopped")
    return 0


def _export(stack: LocalStack, record: StackRecord, stop: threading.Event) -> None:
    exporter = Exporter(
        ExporterSettings(
            admin_conninfos=tuple(admin_conninfos(record, stack.paths)),
            dimensions={"Stack": record.stack, "Service": "pgbouncer"},
            interval_s=EXPORTER_INTERVAL_S,
            database=record.database,
        ),
        stack.aws_client("cloudwatch"),
    )
    exporter.run(stop)


def _alarms(plan: StackPlan, record: StackRecord, stop: threading.Event) -> None:
    paths = plan.paths
    db = DatabaseObserver(master_conninfo(record))
    sampler = StackSampler(
        db, admin_conninfos(record, paths), RuntimeAdminClient(record.runtime_url, timeout_s=5)
    )
    evaluator = AlarmEvaluator(
        local_alarm_rules(plan.budget),
        sampler,
        evaluation_periods=plan.budget.alarms.evaluation_periods,
        log_file=paths.alarm_log,
    )
    while not stop.wait(ALARM_INTERVAL_S):
        try:
            for transition in evaluator.evaluate_once():
                log.warning(
                    "alarm %s: %s -> %s (%g vs %g) %s",
                    transition.key,
                    transition.old,
                    transition.new,
                    transition.value,
                    transition.threshold,
                    transition.description,
                )
        except Exception as exc:
            log.debug("alarm sample failed: %s", exc)
            continue
        snapshot = {
            "at": time.time(),
            "alarms": [
                {**asdict(state), "description": rule.description}
                for rule, state in ((r, evaluator.states[r.key]) for r in evaluator.rules)
            ],
        }
        tmp = paths.alarm_states.with_suffix(".tmp")
        tmp.write_text(json.dumps(snapshot, indent=1))
        tmp.replace(paths.alarm_states)
    db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slotguard.local.supervisor")
    parser.add_argument("--stack", required=True)
    parser.add_argument("--project-dir", type=Path)
    parser.add_argument("--state-dir", type=Path, help="the base holding <stack>/")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stdout,
    )
    logging.getLogger("pgbouncer.exporter").setLevel(logging.ERROR)
    plan = StackPlan.load(args.stack, args.project_dir, args.state_dir)
    return run(plan)


if __name__ == "__main__":
    sys.exit(main())
