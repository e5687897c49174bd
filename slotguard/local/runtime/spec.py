"""What the local runtime serves: one typed spec per function, validated before anything starts.

The same fields a Lambda function carries on AWS (handler, environment, timeout, memory, reserved
concurrency) plus the directory holding the code, so a registry written by the orchestration and a
deployed stack describe a function the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Lambda's own limits, so a spec that works here also deploys.
MAX_TIMEOUT_S = 900
MIN_MEMORY_MB = 128
MAX_MEMORY_MB = 10240

FunctionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class FunctionSpec(BaseModel):
    """One function: `handler` is `<package>.<module>.<attribute>` under `code_dir`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: FunctionName
    handler: str
    code_dir: Path
    environment: dict[str, str] = Field(default_factory=dict)
    timeout_s: Annotated[int, Field(ge=1, le=MAX_TIMEOUT_S)] = 3
    memory_mb: Annotated[int, Field(ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB)] = 128
    reserved_concurrency: Annotated[int, Field(ge=0)] | None = None
    # Started on first use rather than with the runtime: the storm's comparison variants of every
    # function exist, but only the ones a storm picks cost a process.
    lazy: bool = False

    @field_validator("handler")
    @classmethod
    def _handler_shape(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) < 3 or not all(part.isidentifier() for part in parts):
            raise ValueError(
                f"handler {value!r} must look like 'package.module.function' "
                "(the code is loaded as a package so its relative imports work)"
            )
        return value

    @field_validator("code_dir")
    @classmethod
    def _code_dir_absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def package(self) -> str:
        return self.handler.split(".", 1)[0]

    @property
    def module_path(self) -> str:
        """The handler's module inside the package, e.g. `api` for `functions.api.handler`."""
        return ".".join(self.handler.split(".")[1:-1])

    @property
    def attribute(self) -> str:
        return self.handler.rsplit(".", 1)[1]

    def check_code(self) -> None:
        """Fail early, naming the path to fix, when the package is not where the spec says."""
        init = self.code_dir / self.package / "__init__.py"
        if not init.is_file():
            raise FileNotFoundError(
                f"function {self.name!r}: {init} not found; set code_dir to the directory that "
                f"contains the {self.package!r} package"
            )


class RuntimeSettings(BaseModel):
    """How instances age: frozen after `freeze_after_s` idle, reaped after `reap_after_s` idle."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    region: str = "us-east-1"
    account_id: Annotated[str, Field(pattern=r"^\d{12}$")] = "000000000000"
    # Lambda freezes a sandbox as soon as the response is sent; a short grace keeps "idle" visible.
    freeze_after_s: Annotated[float, Field(ge=0)] = 1.0
    # Lambda reaps idle sandboxes after minutes; ten is a typical observed figure.
    reap_after_s: Annotated[float, Field(gt=0)] = 600.0
    log_dir: Path | None = None

    def function_arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"


class Registry(BaseModel):
    """A registry file: the runtime settings and the functions, as JSON."""

    model_config = ConfigDict(extra="forbid")

    settings: RuntimeSettings = Field(default_factory=RuntimeSettings)
    functions: list[FunctionSpec]

    @field_validator("functions")
    @classmethod
    def _unique_names(cls, value: list[FunctionSpec]) -> list[FunctionSpec]:
        names = [spec.name for spec in value]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"function names must be unique; repeated: {', '.join(duplicates)}")
        return value

    @classmethod
    def load(cls, path: Path) -> Registry:
        return cls.model_validate(json.loads(path.read_text()))
