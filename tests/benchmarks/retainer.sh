# Retainer adapter for the IMAP pull benchmark (/work/shared/bench/imap, see its README.md).
# Sourced by run.sh:
#   EXTRA_TOOLS_DIR=$PWD/tests/benchmarks TOOLS="mbsync imaplib retainer" \
#       /work/shared/bench/imap/run.sh 10000
# Retainer runs from its own venv ($RETAINER_BENCH_VENV, default
# /tmp/imapbench/retainer-venv), which tool_setup creates or refreshes (install_venv.sh),
# so the unprivileged client user can run it. The config seeds the benchmark's
# contractors, so their attachments are downloaded and stored as deliverables.
_retainer_dir() { cd "$(dirname "${BASH_SOURCE[0]}")" && pwd; }
_retainer_venv() { echo "${RETAINER_BENCH_VENV:-/tmp/imapbench/retainer-venv}"; }

tool_version() {
    "$(_retainer_dir)/install_venv.sh" >/dev/null 2>&1 || true
    echo "retainer $("$(_retainer_venv)/bin/python" -c 'import importlib.metadata as m; print(m.version("retainer"))' 2>/dev/null) on $("$(_retainer_venv)/bin/python" --version 2>&1)"
}

tool_setup() {
    "$(_retainer_dir)/install_venv.sh" || return 1
    "$(_retainer_venv)/bin/python" "$(_retainer_dir)/make_config.py" "$1"
}

tool_sync() {
    "$(_retainer_venv)/bin/retainer" -q --config "$1/retainer.toml" sync
}

tool_count() {
    [ -d "$1/data" ] || { echo 0; return; }
    "$(_retainer_venv)/bin/python" "$(_retainer_dir)/count_messages.py" "$1/data"
}
