#!/usr/bin/env bash
# Install Retainer into a venv the unprivileged benchmark client can run:
#   install_venv.sh [VENV] [PROJECT]
# VENV defaults to $RETAINER_BENCH_VENV or /tmp/imapbench/retainer-venv, PROJECT to
# $RETAINER_PROJECT or this checkout. Idempotent: dependencies are installed once; the
# project itself is reinstalled only when its files changed (a hash of agent/ plugins/
# pyproject.toml is kept in the venv).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${1:-${RETAINER_BENCH_VENV:-/tmp/imapbench/retainer-venv}}"
PROJECT="${2:-${RETAINER_PROJECT:-$(cd "$HERE/../.." && pwd)}}"
PY="${RETAINER_BENCH_PYTHON:-/usr/bin/python3}"

stamp="$(cd "$PROJECT" && find agent plugins pyproject.toml -type f \( -name '*.py' -o -name '*.toml' -o -name '*.typed' \) -print0 \
         | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
if [ -x "$VENV/bin/retainer" ] && [ "$(cat "$VENV/.retainer-stamp" 2>/dev/null)" = "$stamp" ]; then
    exit 0
fi
mkdir -p "$(dirname "$VENV")"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
if [ ! -f "$VENV/.deps-done" ]; then
    "$VENV/bin/pip" install -q --disable-pip-version-check "$PROJECT"
    touch "$VENV/.deps-done"
else
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$PROJECT"
fi
echo "$stamp" > "$VENV/.retainer-stamp"
chmod -R a+rX "$VENV"
