"""Write the benchmark client's Retainer config (run by retainer.sh's tool_setup).

    python make_config.py CLIENT_DIR

Reads the connection from the harness's environment (IMAP_HOST, IMAP_PORT, IMAP_TLS,
IMAP_CAFILE, IMAP_USER, BENCH_DIR) and seeds the roster with the contractors that
populate.py generates (seed 42 unless BENCH_SEED says otherwise), so their attachments
are downloaded and stored as deliverables, as they would be for a real user. The
password is read from the environment variable IMAP_PASS at sync time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path


def contractors(bench_dir: Path, seed: int) -> list[dict[str, str]]:
    spec = importlib.util.spec_from_file_location("bench_populate", bench_dir / "populate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [{"name": c["name"], "addr": c["addr"]} for c in module.make_contractors(seed)]


def main() -> None:
    client = Path(sys.argv[1]).resolve()
    env = os.environ
    bench_dir = Path(env.get("BENCH_DIR", "/work/shared/bench/imap"))
    tls = env.get("IMAP_TLS", "0") == "1"
    lines = [
        "[agent]",
        f"data_dir = {json.dumps(str(client / 'data'))}",
        'owner_emails = ["owner@studio.example"]',
        "review_since = false  # the benchmarks list a full review queue",
        "",
    ]
    for person in contractors(bench_dir, int(env.get("BENCH_SEED", "42"))):
        lines += ["[[contractors]]", f"name = {json.dumps(person['name'])}",
                  f"emails = [{json.dumps(person['addr'])}]", 'status = "core"', ""]
    lines += [
        "[[sources]]", 'name = "bench"', 'platform = "imap"', "[sources.settings]",
        f"host = {json.dumps(env.get('IMAP_HOST', '127.0.0.1'))}",
        f"port = {int(env.get('IMAP_PORT', '10143'))}",
        f"security = {json.dumps('tls' if tls else 'none')}",
        f"username = {json.dumps(env.get('IMAP_USER', 'owner'))}",
        'password = { env = "IMAP_PASS" }',
        'folders = ["INBOX"]',
    ]
    if tls:
        lines.append(f"ca_file = {json.dumps(env['IMAP_CAFILE'])}")
    client.mkdir(parents=True, exist_ok=True)
    (client / "retainer.toml").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
