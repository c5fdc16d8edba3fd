"""``python -m tests.servers.freelancer_sandbox``: the Freelancer.com sandbox in a process of
its own, for the kill tests (and by hand). It writes ``{"base_url", "token", "owner_id"}``
as one JSON line once it listens. The sandbox itself is :mod:`plugins.freelancer.sandbox`,
which ``retainer demo`` starts too; only this runner is the tests'.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from plugins.freelancer.sandbox import start_sandbox


def main(argv: list[str] | None = None,
         write: Callable[[str], Any] = sys.stdout.write) -> int:
    """Run a sandbox in the foreground until killed; write ``{"base_url", "token"}`` first."""
    parser = argparse.ArgumentParser(prog="python -m tests.servers.freelancer_sandbox")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--messages-per-thread", type=int, default=6)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--attachment-every", type=int, default=3)
    args = parser.parse_args(argv)
    sandbox = start_sandbox(seed=args.seed, threads=args.threads,
                            messages_per_thread=args.messages_per_thread,
                            latency=args.latency, attachment_every=args.attachment_every)
    write(json.dumps({"base_url": sandbox.base_url, "token": sandbox.token,
                      "owner_id": sandbox.owner_id}) + "\n")
    sys.stdout.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
