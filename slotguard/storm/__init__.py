"""The storm engine: burst a function with concurrent invocations and report what it met."""

from slotguard.storm.classify import Cause, Outcome, classify_error
from slotguard.storm.client import lambda_client
from slotguard.storm.engine import Wiring, invoke_once, run_burst, run_storm
from slotguard.storm.results import InvocationRecord, Limits, StormReport, WiringResult
from slotguard.storm.sampler import DbSample, Sampler, TimedSample

__all__ = [
    "Cause",
    "DbSample",
    "InvocationRecord",
    "Limits",
    "Outcome",
    "Sampler",
    "StormReport",
    "TimedSample",
    "Wiring",
    "WiringResult",
    "classify_error",
    "invoke_once",
    "lambda_client",
    "run_burst",
    "run_storm",
]
