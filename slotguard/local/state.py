"""Where a local stack keeps its state: one directory per stack, its ports, secrets and pid files.

Ports are chosen once and saved, so a stack comes back on the same ports after `down` and `up`
(clients and a psql session keep working). The record the supervisor writes once the stack is up
holds passwords, so it is written 0600 like the RDS-managed secret it stands in for.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from slotguard.local.ports import free_port

KIT_ROOT = Path(__file__).resolve().parents[2]
STATE_DIR_ENV = "SLOTGUARD_STATE_DIR"
# Every process of a stack carries this variable (the runtime's workers are children of the
# runtime, which carries it), so `down` can find anything left over by reading /proc.
STACK_MARKER_ENV = "SLOTGUARD_STACK_ROOT"


class Ports(BaseModel):
    """The loopback ports of one stack, chosen once."""

    model_config = ConfigDict(frozen=True)

    postgres: int
    pgbouncer: int
    runtime: int
    aws: int
    # The local Aurora reader (a streaming replica); None for stacks without a read pool and in
    # state files written before the local target ran one.
    reader: int | None = None


class StackRecord(BaseModel):
    """What `up` left running: endpoints, secrets and the passwords the tool needs to observe."""

    model_config = ConfigDict(frozen=True)

    stack: str
    region: str
    ports: Ports
    runtime_url: str
    aws_url: str
    master_password: str
    app_password: str
    pgbouncer_admin_password: str
    secret_arns: dict[str, str]
    functions: list[str]
    database: str
    ca_file: str
    pgbouncer_processes: int
    started_at: float
    # The resolved settings the stack was started with and their hash (empty in records written
    # before they were kept): `up` compares them with the stack file's current settings.
    settings_hash: str = ""
    settings: dict[str, Any] = Field(default_factory=dict)


class StackPaths:
    """The files of one stack under its state directory."""

    def __init__(self, stack: str, base: Path | None = None) -> None:
        if not stack.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"stack name {stack!r} must be letters, digits, '-' or '_'")
        self.stack = stack
        self.root = (base or default_base()) / stack

    @property
    def postgres(self) -> Path:
        return self.root / "postgres"

    @property
    def pgbouncer(self) -> Path:
        return self.root / "pgbouncer"

    @property
    def reader(self) -> Path:
        return self.root / "reader"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def ports_file(self) -> Path:
        return self.root / "ports.json"

    @property
    def record_file(self) -> Path:
        return self.root / "stack.json"

    @property
    def supervisor_pid(self) -> Path:
        return self.root / "supervisor.pid"

    @property
    def supervisor_log(self) -> Path:
        return self.logs / "supervisor.log"

    @property
    def failure_file(self) -> Path:
        return self.root / "supervisor.failed"

    @property
    def registry_file(self) -> Path:
        return self.root / "registry.json"

    @property
    def alarm_log(self) -> Path:
        return self.logs / "alarms.jsonl"

    @property
    def alarm_states(self) -> Path:
        return self.root / "alarms.json"

    def pid_file(self, name: str) -> Path:
        return self.root / f"{name}.pid"

    def prepare(self) -> None:
        """Create the directories (root 0755: is 0755 the server account must reach it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self.logs.mkdir(exist_ok=True)

    def ports(self) -> Ports:
        """The saved ports, choosing and saving free ones the first time."""
        if self.ports_file.exists():
            return Ports.model_validate_json(self.ports_file.read_text())
        chosen: set[int] = set()
        while len(chosen) < 4:
            chosen.add(free_port())
        postgres, pgbouncer, runtime, aws = sorted(chosen)
        ports = Ports(postgres=postgres, pgbouncer=pgbouncer, runtime=runtime, aws=aws)
        self.ports_file.write_text(ports.model_dump_json(indent=2) + "\n")
        return ports

    def with_reader_port(self) -> Ports:
        """The saved ports with a reader port, choosing and saving a free one the first time."""
        ports = self.ports()
        if ports.reader is not None:
            return ports
        taken = {ports.postgres, ports.pgbouncer, ports.runtime, ports.aws}
        reader = free_port()
        while reader in taken:
            reader = free_port()
        ports = ports.model_copy(update={"reader": reader})
        self.ports_file.write_text(ports.model_dump_json(indent=2) + "\n")
        return ports

    def write_record(self, record: StackRecord) -> None:
        write_private(self.record_file, record.model_dump_json(indent=2) + "\n")

    def record(self) -> StackRecord | None:
        if not self.record_file.exists():
            return None
        return StackRecord.model_validate_json(self.record_file.read_text())


def default_base() -> Path:
    """`$SLOTGUARD_STATE_DIR`, else `.state/` in the kit's root."""
    configured = os.environ.get(STATE_DIR_ENV)
    return Path(configured).expanduser().resolve() if configured else KIT_ROOT / ".state"


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (created 0600 before any byte lands), atomically.

    Other processes poll these files (`up` waits for the supervisor's stack record): written in
    place, a reader between the truncation and the write would see an empty file. The text goes
    to a temporary file in the same directory, which then replaces the old one in one rename.
    """
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    temporary = Path(name)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def alive(pid: int) -> bool:
    """True when `pid` runs and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state != "Z"


def marked_processes(root: Path) -> list[int]:
    """Pids of live processes whose environment carries this stack's marker."""
    needle = f"{STACK_MARKER_ENV}={root}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def load_json(path: Path) -> object:
    return json.loads(path.read_text())
