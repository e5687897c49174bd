"""`slotguard up` knows a running stack's settings: what an edited stack file changed."""

from __future__ import annotations

from pathlib import Path

from infra.settings import load_stack
from slotguard.local.drift import changed_paths, settings_digest, settings_document
from slotguard.local.state import Ports, StackRecord

ROOT = Path(__file__).resolve().parent.parent


def test_the_digest_follows_every_resolved_setting_and_nothing_else() -> None:
    settings = load_stack("dev", ROOT)
    document = settings_document(settings)
    assert settings_digest(document) == settings_digest(settings_document(load_stack("dev", ROOT)))
    edited = settings.model_copy(
        update={"alarms": settings.alarms.model_copy(update={"warn_percent": 60})}
    )
    assert settings_digest(settings_document(edited)) != settings_digest(document)
    assert changed_paths(document, settings_document(edited)) == ["alarms.warn_percent"]


def test_added_and_removed_functions_are_named() -> None:
    old = {"functions": {"api": {"timeout_s": 15}}, "region": "eu-west-1"}
    new = {"functions": {"orders": {"timeout_s": 15}}, "region": "eu-west-1"}
    assert changed_paths(old, new) == ["functions.api", "functions.orders"]


def test_a_record_written_before_settings_were_kept_still_loads() -> None:
    record = StackRecord(
        stack="dev",
        region="eu-west-1",
        ports=Ports(postgres=1, pgbouncer=2, runtime=3, aws=4),
        runtime_url="http://127.0.0.1:3",
        aws_url="http://127.0.0.1:4",
        master_password="x",
        app_password="x",
        pgbouncer_admin_password="x",
        secret_arns={},
        functions=["api"],
        database="app",
        ca_file="/ca.pem",
        pgbouncer_processes=2,
        started_at=0.0,
    )
    assert (record.settings_hash, record.settings) == ("", {})
