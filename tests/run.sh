#!/usr/bin/env bash
# Install everything the tests need, then run lint, types and the whole test suite.
# This is the README's test command; .ci/run calls it. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: a real Dovecot for the IMAP tests, Chromium for the HTML report test.
APT_PACKAGES="dovecot-core dovecot-imapd openssl chromium python3-venv"
missing=""
for pkg in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
    # the packaged services are not used: the tests start private, loopback-only instances
    $SUDO service dovecot stop >/dev/null 2>&1 || true
fi

# Python: a project virtualenv with the test extras.
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test,keyring]'

.venv/bin/ruff check agent plugins tests
.venv/bin/mypy
RETAINER_NO_SKIPS=1 .venv/bin/pytest "$@"
# Upwork: the plugin's GraphQL operations and trimmed schema against the live schema,
# when the research copy is next to the repository (it is data, never part of it).
if [ -f ../shared/research/upwork-schema/upwork.graphql ]; then
    .venv/bin/python tests/conformance/upwork_schema.py ../shared/research/upwork-schema/upwork.graphql
fi

# Real-world mail conformance (issue 8): every file of the shared mail corpus through IMAP
# and Maildir; fails on any defect. Runs when ../shared sits beside the clone (as in CI).
if [ -d ../shared/corpus/mail ]; then
    .venv/bin/python tests/conformance/realmail.py ../shared/corpus/mail
fi
