"""The pooler container's entrypoint: render, start PgBouncer, drain on SIGTERM, export metrics.

1. Raise the soft file-descriptor limit to the hard one (the task definition's `nofile` ulimit),
   then check the configuration against it.
2. Render one `pgbouncer.ini` per process and the auth file (mode 0600, SCRAM verifiers only)
   from the environment (`pgbouncer.environment`), and write the injected TLS certificate and key.
3. Start the processes (`so_reuseport` when more than one) and wait until each listens.
4. Publish CloudWatch metrics from the admin console every interval, in a thread.
5. On SIGTERM (ECS stopping the task) send SIGINT to every process: PgBouncer's safe shutdown,
   which stops accepting clients and waits for running transactions to release their server
   connections (SIGTERM itself means "wait for every client to leave" from 1.23 and "immediate"
   before, neither of which fits a task that has `stopTimeout` seconds to go). Past
   `PGBOUNCER_DRAIN_TIMEOUT_S` the processes are stopped immediately.

A process that dies on its own stops the others and the container exits non-zero, so ECS replaces
the task rather than leaving it half-serving.
"""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from pgbouncer import environment, scram
from pgbouncer.config import PgBouncerConfigError, RenderedConfig, parse_version, render
from pgbouncer.exporter import Exporter, ExporterSettings, parse_dimensions

log = logging.getLogger("pgbouncer.entrypoint")

STARTUP_TIMEOUT_S = 20.0
POLL_S = 0.1


def raise_nofile() -> int:
    """Raise the soft nofile limit to the hard limit; return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return hard if soft == resource.RLIM_INFINITY else soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def find_binary(env: dict[str, str]) -> str:
    for candidate in (
        env.get("PGBOUNCER_BINARY"),
        shutil.which("pgbouncer"),
        "/usr/sbin/pgbouncer",
    ):
        if candidate and Path(candidate).exists():
            return candidate
    raise PgBouncerConfigError("pgbouncer executable not found (set PGBOUNCER_BINARY)")


def binary_version(binary: str) -> tuple[int, int]:
    out = subprocess.run([binary, "--version"], check=True, capture_output=True, text=True)
    return parse_version(out.stdout.splitlines()[0])


def write_files(cfg: environment.TaskConfig, rendered: RenderedConfig) -> list[Path]:
    """Write every file PgBouncer reads; secrets are created 0600 before a byte is written."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    cfg.run_dir.chmod(0o700)
    written: list[Path] = []

    def put(path: Path, text: str, mode: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        path.chmod(mode)
        written.append(path)

    for index, text in enumerate(rendered.ini):
        socket_dir = Path(cfg.settings.paths[index].unix_socket_dir)
        socket_dir.mkdir(parents=True, exist_ok=True)
        written.append(socket_dir)
        put(cfg.run_dir / f"pgbouncer-{index + 1}.ini", text, 0o600)
    put(Path(cfg.settings.auth_file), rendered.auth_file, 0o600)
    if cfg.settings.hba_file:
        put(Path(cfg.settings.hba_file), rendered.hba, 0o600)
    assert cfg.settings.client_tls is not None
    put(Path(cfg.settings.client_tls.cert_file), cfg.client_cert_pem.strip() + "\n", 0o644)
    put(Path(cfg.settings.client_tls.key_file), cfg.client_key_pem.strip() + "\n", 0o600)
    if cfg.run_as is not None:
        entry = pwd.getpwnam(cfg.run_as)
        for path in [cfg.run_dir, *written]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
    return written


class Supervisor:
    """Runs the PgBouncer processes and turns container signals into PgBouncer's shutdowns."""

    def __init__(self, binary: str, cfg: environment.TaskConfig) -> None:
        self.binary = binary
        self.cfg = cfg
        self.procs: list[subprocess.Popen[bytes]] = []
        self.draining = threading.Event()
        self._drain_deadline = 0.0

    def command(self, index: int) -> list[str]:
        ini = str(self.cfg.run_dir / f"pgbouncer-{index + 1}.ini")
        if os.geteuid() == 0:
            if self.cfg.run_as is None:
                raise PgBouncerConfigError(
                    "running as root: set PGBOUNCER_RUN_AS to the account PgBouncer runs as "
                    "(PgBouncer refuses to run as root)"
                )
            return [self.binary, "-u", self.cfg.run_as, ini]
        return [self.binary, ini]

    def start(self) -> None:
        for index in range(self.cfg.settings.processes):
            self.procs.append(subprocess.Popen(self.command(index), stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        port = self.cfg.settings.listen_port
        for index, proc in enumerate(self.procs):
            socket = Path(self.cfg.settings.paths[index].unix_socket_dir) / f".s.PGSQL.{port}"
            while not socket.exists():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"pgbouncer process {index + 1} exited with {proc.returncode}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer process {index + 1} did not listen in time")
                time.sleep(POLL_S)
        log.info(
            "pgbouncer listening on %s:%s with %d process(es)",
            self.cfg.settings.listen_addr,
            port,
            len(self.procs),
        )

    def _send(self, sig: signal.Signals) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(sig)

    def request_drain(self, signum: int, _frame: FrameType | None = None) -> None:
        if self.draining.is_set():
            return
        log.info(
            "signal %s: safe shutdown (SIGINT) of %d process(es), at most %.0f s",
            signal.Signals(signum).name,
            len(self.procs),
            self.cfg.drain_timeout_s,
        )
        self._drain_deadline = time.monotonic() + self.cfg.drain_timeout_s
        self.draining.set()
        self._send(signal.SIGINT)

    def stop_now(self) -> None:
        # SIGTERM is immediate up to 1.22; from 1.23 the second SIGTERM is.
        self._send(signal.SIGTERM)
        time.sleep(0.2)
        self._send(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while any(p.poll() is None for p in self.procs) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        self._send(signal.SIGKILL)
        for proc in self.procs:
            proc.wait()

    def wait(self) -> int:
        """Block until the processes are gone; 0 after a clean drain, 1 otherwise."""
        while True:
            codes = [p.poll() for p in self.procs]
            if self.draining.is_set():
                if all(c is not None for c in codes):
                    clean = all(c == 0 for c in codes)
                    log.info("pgbouncer stopped (exit codes %s)", codes)
                    return 0 if clean else 1
                if time.monotonic() > self._drain_deadline:
                    log.warning("drain timeout passed: stopping pgbouncer immediately")
                    self.stop_now()
                    return 1
            elif any(c is not None for c in codes):
                log.error("a pgbouncer process exited on its own (exit codes %s)", codes)
                self.draining.set()
                self.stop_now()
                return 1
            time.sleep(POLL_S)


def start_exporter(cfg: environment.TaskConfig, stop: threading.Event) -> threading.Thread | None:
    """Publish metrics in a thread; a failure to set it up is logged, never stops the pooler."""
    if not cfg.metrics_enabled:
        return None
    import boto3  # noqa: PLC0415 - only when metrics are on

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    try:
        cloudwatch = boto3.client("cloudwatch", region_name=region)
    except Exception:
        log.exception("metrics are off: no CloudWatch client (set AWS_REGION)")
        return None
    exporter = Exporter(
        ExporterSettings(
            admin_conninfos=tuple(cfg.admin_conninfo(i) for i in range(cfg.settings.processes)),
            namespace=cfg.metrics_namespace,
            dimensions=parse_dimensions(cfg.metrics_dimensions),
            interval_s=cfg.metrics_interval_s,
            database=cfg.settings.database.client_name,
            certificate_file=cfg.settings.client_tls.cert_file
            if cfg.settings.client_tls is not None
            else None,
        ),
        cloudwatch,
    )
    thread = threading.Thread(target=exporter.run, args=(stop,), name="exporter", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgbouncer.entrypoint", description=__doc__)
    parser.add_argument("--render-only", action="store_true", help="print process 1's ini and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    env = dict(os.environ)
    try:
        fd_limit = raise_nofile()
        binary = find_binary(env)
        cfg = environment.read(env, version=binary_version(binary), fd_limit=fd_limit)
        rendered = render(
            cfg.settings,
            {**cfg.verifiers, environment.STATS_USER: scram.make_verifier(cfg.stats_password)},
        )
    except PgBouncerConfigError as exc:
        log.error("configuration refused: %s", exc)
        return 2
    if args.render_only:
        sys.stdout.write(rendered.ini[0])
        return 0
    write_files(cfg, rendered)
    supervisor = Supervisor(binary, cfg)
    signal.signal(signal.SIGTERM, supervisor.request_drain)
    signal.signal(signal.SIGINT, supervisor.request_drain)
    stop = threading.Event()
    try:
        supervisor.start()
    except (RuntimeError, PgBouncerConfigError) as exc:
        log.error("%s", exc)
        supervisor.draining.set()
        supervisor.stop_now()
        return 1
    exporter = None
    try:
        exporter = start_exporter(cfg, stop)
        return supervisor.wait()
    finally:
        stop.set()
        if any(p.poll() is None for p in supervisor.procs):
            supervisor.stop_now()
        if exporter is not None:
            exporter.join(timeout=5)


if __name__ == "__main__":
    sys.exit(main())
