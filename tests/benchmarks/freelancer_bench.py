"""Benchmark: the first sync of a Freelancer.com account with 1,000 threads of 20 messages.

    python tests/benchmarks/freelancer_bench.py [--threads 1000] [--messages 20] [--rate 10]

Starts the sandbox (:mod:`plugins.freelancer.sandbox`), then runs one sync through the
real sync engine and store, with the plugin at its default settings (100 items a page,
10 requests a second). It prints the requests made against the least the API's paging
allows, and the wall time against the time that many requests take at the rate limit.
Target: both within 10 %; the exit status is 1 when either is missed.

The least the paging allows, with ``limit`` at most 100:

* 1 ``users/0.1/self/`` (who owns the token);
* projects ``ceil(P / 100)`` (the listing has ``total_count``);
* bids ``floor(B / 100) + 1`` and milestones ``floor(M / 100) + 1`` (no count: the
  last page must come back short);
* threads ``ceil(T / 100)`` (``count=true``);
* messages ``ceil(N / 100)`` (``unfiltered_count``), had one request been allowed to
  name every thread;
* for each thread where a contractor sent files, one ``threads/{id}/attachments/``
  listing (the messages do not carry sizes or download addresses), and one download
  per file.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import plugins.freelancer  # noqa: E402
from agent.config import load_config  # noqa: E402
from agent.plugins import make_plugin_host  # noqa: E402
from agent.store import Store  # noqa: E402
from agent.sync import SyncEngine  # noqa: E402
from plugins.freelancer.sandbox import Sandbox, start_sandbox  # noqa: E402

LIMIT = 100


def minimum_requests(sandbox: Sandbox) -> dict[str, int]:
    hired = {b["bidder_id"] for b in sandbox.bids.values() if b["award_status"] == "awarded"}
    files = [f for f in sandbox.files.values()
             if sandbox.messages[f.message_id]["from_user"] in hired]
    return {
        "self": 1,
        "projects": math.ceil(len(sandbox.projects) / LIMIT),
        "bids": len(sandbox.bids) // LIMIT + 1,
        "milestones": len(sandbox.milestones) // LIMIT + 1,
        "threads": math.ceil(len(sandbox.threads) / LIMIT),
        "messages": math.ceil(len(sandbox.messages) / LIMIT),
        "attachment listings": len({f.thread_id for f in files}),
        "downloads": len(files),
    }


def classify(path: str) -> str:
    if path.endswith("/attachments/"):
        return "attachment listings"
    for name in ("self", "projects", "bids", "milestones", "threads"):
        if path.endswith(f"/{name}/"):
            return name
    if path.endswith("/messages/0.1/messages/"):
        return "messages"
    return "downloads"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    print(f"seeding the sandbox: {args.threads} threads x {args.messages} messages ...")
    seeded = time.monotonic()
    sandbox = start_sandbox(seed=args.seed, threads=args.threads,
                            messages_per_thread=args.messages, attachment_every=10)
    print(f"  seeded in {time.monotonic() - seeded:.1f} s: {len(sandbox.messages)} messages, "
          f"{len(sandbox.files)} files, {len(sandbox.projects)} projects, "
          f"{len(sandbox.bids)} bids, {len(sandbox.milestones)} milestones")
    try:
        with tempfile.TemporaryDirectory(prefix="freelancer-bench-") as tmp:
            config_path = Path(tmp) / "config.toml"
            config_path.write_text(f"""
[agent]
data_dir = "{tmp}/data"
owner_emails = ["owner@bench.example"]
[[sources]]
name = "freelancer"
platform = "freelancer"
[sources.settings]
token = {{ env = "RETAINER_BENCH_FREELANCER_TOKEN" }}
base_url = "{sandbox.base_url}"
rate_per_second = {args.rate}
""")
            os.environ["RETAINER_BENCH_FREELANCER_TOKEN"] = sandbox.token
            host = make_plugin_host(entrypoints=False, extra=[plugins.freelancer])
            config = load_config(config_path, host)
            store = Store(config.data_dir)
            engine = SyncEngine(config, host, store)
            started = time.monotonic()
            (result,) = engine.sync_all(["freelancer"])
            wall = time.monotonic() - started
            stored = sum(1 for _ in store.iter_messages())
    finally:
        sandbox.stop()

    if not result.ok:
        print(f"the sync failed: {result.error}")
        return 1
    made: dict[str, int] = {}
    for request in sandbox.requests:
        kind = classify(request.path)
        made[kind] = made.get(kind, 0) + 1
    least = minimum_requests(sandbox)
    total_made, total_least = sum(made.values()), sum(least.values())
    allowed = total_least / args.rate
    print(f"stored {stored} of {len(sandbox.messages)} messages, "
          f"{result.deliverables_new} deliverables, {result.pages} pages")
    print(f"{'requests':<22}{'made':>8}{'minimum':>10}")
    for kind in least:
        print(f"  {kind:<20}{made.get(kind, 0):>8}{least[kind]:>10}")
    request_ratio = total_made / total_least
    time_ratio = wall / allowed
    print(f"  {'total':<20}{total_made:>8}{total_least:>10}   ({request_ratio:.3f}x)")
    print(f"wall time {wall:.1f} s; {total_least} requests at {args.rate:g}/s take "
          f"{allowed:.1f} s   ({time_ratio:.3f}x)")
    ok = stored == len(sandbox.messages) and request_ratio <= 1.10 and time_ratio <= 1.10
    print("target (both within 10 %):", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
