"""Benchmark: the first sync of an Upwork sandbox with 1,000 rooms of 20 messages each.

Run: ``python tests/benchmarks/upwork_bench.py [--threads 1000 --messages 20 --rate 10]``

Prints the requests the connector made against the minimum the API's paging allows, and
the wall time against the time Upwork's 10 requests/second limit allows for that
minimum. Target: within 10% of both. The sandbox runs on the real clock, in this
process, with no added latency; the connector runs through its real HTTP client and
rate limiter (``rate_per_second`` = ``--rate``). Runs at 9.5 (the fastest rate whose
arrivals at the server, with a few ms of jitter, still never put 11 requests in one
second; at exactly 10 they sometimes do) and at the plugin's default 8, which is
expected at about 10/8 of the 10 req/s time.

The minimum, for reading every message plus each room's contract (milestones and
submissions included), with the API's page limits (100 rooms or stories a page, 10
contract ids a ``contractList`` call):

    1 (who am I) + ceil(rooms / 100) + sum over rooms of ceil(stories / 100) + ceil(contracts / 10)
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pydantic import SecretStr  # noqa: E402

from agent.connector import SourceContext  # noqa: E402
from agent.files import ensure_private_dir  # noqa: E402
from agent.models import Contract, Message  # noqa: E402
from plugins.upwork.connector import UpworkConnector  # noqa: E402
from plugins.upwork.sandbox import start_sandbox  # noqa: E402
from plugins.upwork.settings import UpworkSettings  # noqa: E402

UPWORK_LIMIT = 10.0


def minimum_requests(rooms: int, stories: list[int], contracts: int, page: int = 100) -> int:
    return 1 + math.ceil(rooms / page) + sum(max(1, math.ceil(s / page)) for s in stories) + math.ceil(
        contracts / 10
    )


def run(threads: int, messages: int, rate: float) -> dict[str, float]:
    with start_sandbox(seed=42, threads=threads, messages_per_thread=messages, offer_every=0,
                       attachment_every=0) as sandbox, tempfile.TemporaryDirectory() as tmp:
        state = ensure_private_dir(Path(tmp) / "state")
        sandbox.authorize_source(state)
        settings = UpworkSettings.model_validate(
            sandbox.settings(client_secret=SecretStr(sandbox.client_secret), rate_per_second=rate)
        )
        context = SourceContext(source="bench", platform="upwork", state_dir=state,
                                scratch_dir=ensure_private_dir(Path(tmp) / "scratch"),
                                log=logging.getLogger("bench"))
        connector = UpworkConnector(settings, context)
        got_messages = got_contracts = 0
        started = time.monotonic()
        for page in connector.fetch({}):
            got_messages += sum(isinstance(r, Message) for r in page.records)
            got_contracts += sum(isinstance(r, Contract) for r in page.records)
        wall = time.monotonic() - started
        connector.close()
        expected_messages = sandbox.story_count()
        assert got_messages == expected_messages, (got_messages, expected_messages)
        assert got_contracts == len(sandbox.contracts)
        minimum = minimum_requests(len(sandbox.rooms), [len(r.stories) for r in sandbox.rooms.values()],
                                   len(sandbox.contracts))
        made = connector.requests_made
        allowed = minimum / UPWORK_LIMIT
        return {"rate": rate, "messages": got_messages, "requests": made, "minimum": minimum,
                "wall": wall, "allowed": allowed, "max_in_1s": sandbox.max_in_window(1.0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--rate", type=float, action="append",
                        help="client rate(s) to run (default: 9.5, then the plugin default 8)")
    args = parser.parse_args()
    rates = args.rate or [9.5, 8.0]
    ok = True
    for rate in rates:
        r = run(args.threads, args.messages, rate)
        req_ratio = r["requests"] / r["minimum"]
        time_ratio = r["wall"] / r["allowed"]
        print(f"rate_per_second={rate:g}: {int(r['messages'])} messages from {args.threads} rooms")
        print(f"  requests: {int(r['requests'])} made / {int(r['minimum'])} minimum = {req_ratio:.3f}")
        print(f"  wall time: {r['wall']:.1f} s / {r['allowed']:.1f} s at 10 req/s = {time_ratio:.3f}")
        print(f"  most requests the sandbox saw in any 1 s: {int(r['max_in_1s'])}")
        if rate >= 9.5:
            ok = ok and req_ratio <= 1.10 and time_ratio <= 1.10
    print("target (within 10% of both, at rate 9.5 or more):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
