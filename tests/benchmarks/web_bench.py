"""Benchmark: the dashboard's server time per page on a big store.

The store of ``workflow_bench.py`` (500 contractors, 50,000 messages, 10,000 deliverables,
half of them reviewed), written through the real write path. Each page is requested through
the real Flask app (its guards included) with the access cookie; the time is the app's own
``Server-Timing`` figure, without the network. "cold" is the first request right after a
review was recorded through the dashboard (the queue's memo is patched by the review; the
other pages' memos are stale and are recomputed by the request, or by the background
warming that starts two seconds after the last write), "warm" the following requests once
that warming finished. Prints medians; exits 1 when a warm median is over the budget.

    python -m tests.benchmarks.web_bench [--data DIR] [--runs 5] [--budget 0.15]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.plugins import make_plugin_host
from agent.store import Store
from agent.web import WebContext, create_app
from agent.web.security import cookie_name, csrf_for, load_or_create_token
from tests.benchmarks.workflow_bench import OWNER, counts, fill


def _ms(response: Any) -> float:
    found = re.search(r"dur=([0-9.]+)", response.headers.get("Server-Timing", ""))
    assert found, response.headers
    return float(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, help="reuse (or build) the store here")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.15, help="seconds per page (warm)")
    args = parser.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="retainer-web-bench-")) / "data"
    marker = data.parent / ".filled"
    if not marker.exists():
        fill(data)
        marker.write_text("ok")
    print(f"store: {counts(data)}", file=sys.stderr)
    config = data.parent / "bench.toml"
    config.write_text(f'[agent]\ndata_dir = "{data}"\nowner_emails = ["{OWNER.address}"]\n')
    token = load_or_create_token(data)
    ctx = WebContext(config_path=config, data_dir=data, token=token,
                     host_factory=lambda: make_plugin_host(entrypoints=False), port=8765)
    app = create_app(ctx)
    access = app.extensions["retainer"][1]
    client = app.test_client()
    client.set_cookie(cookie_name(8765), token, domain="127.0.0.1")
    store = Store(data)
    queue = store.deliverables(unreviewed=True)
    contractor = store.contractors()[250]["id"]
    pages = [
        ("review queue", "/queue"), ("queue, page 40", "/queue?page=40"),
        ("queue, one contractor", f"/queue?contractor={contractor}"),
        ("queue, overdue", "/queue?overdue=1"),
        ("one deliverable", f"/queue/{queue[len(queue) // 2]['id']}"),
        ("preview (PNG)", f"/preview/{queue[0]['id']}.png"),
        ("roster", "/contractors"), ("roster, sorted", "/contractors?sort=spend&order=desc"),
        ("suggest", "/contractors?task=logo+design"),
        ("contractor", f"/contractors/{contractor}"),
        ("candidates", "/candidates"), ("report", "/report"),
        ("report chart", "/report/scatter.svg"), ("sources", "/sources"),
        ("templates", "/templates"),
    ]
    base = {"base_url": "http://127.0.0.1:8765"}
    rows = []
    failed = False
    for n, (label, path) in enumerate(pages):
        # a review through the dashboard: the store changed, so this request is cold
        target = queue[n]["id"]
        started = time.perf_counter()
        done = client.post(f"/queue/{target}/review", data={
            "action": "approve", "rating": "4", "csrf": csrf_for(token)}, **base)
        write_ms = (time.perf_counter() - started) * 1000
        assert done.status_code == 303, done.status_code
        cold = client.get(path, **base)
        assert cold.status_code == 200, (path, cold.status_code, cold.get_data(as_text=True)[:300])
        while access.warming:  # the background warming after the write: let it finish
            time.sleep(0.05)
        warm = []
        for _ in range(args.runs):
            response = client.get(path, **base)
            assert response.status_code == 200
            warm.append(_ms(response))
        med = statistics.median(warm)
        ok = med <= args.budget * 1000
        failed |= not ok
        rows.append((label, _ms(cold), med, write_ms, len(cold.data), "ok" if ok else "OVER"))
    print(f"\n{'page':<24}{'cold ms':>9}{'warm ms':>9}{'approve ms':>12}{'KB':>7}  "
          f"budget {args.budget * 1000:.0f} ms (warm median)")
    for label, cold_ms, med, write_ms, size, verdict in rows:
        print(f"{label:<24}{cold_ms:>9.1f}{med:>9.1f}{write_ms:>12.1f}{size / 1024:>7.0f}  {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
