"""Fault drills: real faults injected into a running local stack during a write storm.

`run_drill(handle, SCENARIOS[name])` runs one; see docs/drills.md.
"""

from slotguard.drills.faults import StackHandle
from slotguard.drills.report import DrillResult, drill_table, write_json
from slotguard.drills.runner import DrillError, Scenario, run_drill
from slotguard.drills.scenarios import SCENARIOS

__all__ = [
    "SCENARIOS",
    "DrillError",
    "DrillResult",
    "Scenario",
    "StackHandle",
    "drill_table",
    "run_drill",
    "write_json",
]
