"""The Pulumi program: settings -> budget -> artifacts -> resources -> outputs.

A bad setting or a budget that does not add up raises here, and Pulumi stops the preview with
that error's message (the setting's path and the arithmetic).
"""

from __future__ import annotations

import pulumi

from infra.budget import compute_budget
from infra.database_existing import verify_max_connections
from infra.deployed import boto3_pending
from infra.handlers import check_handlers
from infra.program import (
    Artifacts,
    build_stack,
    export,
    image_source,
    packaged_code,
    verify_image_platform,
)
from infra.settings import settings_from_pulumi_config

# Both sources: the engine's environment and what the program set itself, so unknown keys are
# found whichever way the configuration arrived.
config = {**pulumi.runtime.config.get_config_env(), **pulumi.runtime.config.CONFIG.get()}
settings = settings_from_pulumi_config(config, stack=pulumi.get_stack())
budget = compute_budget(settings)
check_handlers(settings)  # a handler typo stops the preview, not the first invocation
# The pooler image is an artifact, not a setting of the stack: its own config namespace.
image = pulumi.Config("pgbouncer")
pooler_image = image_source(
    settings,
    image=image.get("image"),
    public_route=image.get_bool("publicRegistryRoute") or False,
)
if settings.pooler.kind == "pgbouncer":
    verify_image_platform(pooler_image)
if settings.database.kind == "existing":
    # The live max_connections of the team's database against the budget (RDS API look-up).
    verify_max_connections(settings, budget)
artifacts = Artifacts(code=packaged_code, image=pooler_image)
export(build_stack(settings, budget, artifacts, read_pending=boto3_pending(settings.region)))
