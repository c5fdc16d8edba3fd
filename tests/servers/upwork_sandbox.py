"""``python -m tests.servers.upwork_sandbox``: the Upwork sandbox in a process of its own.

For the kill tests (a sync killed with SIGKILL while the sandbox lives on) and for trying
Retainer by hand against it. The sandbox itself is :mod:`plugins.upwork.sandbox`, which
``retainer demo`` starts too; only this runner is the tests'.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from plugins.upwork.sandbox import Sandbox


def main(argv: list[str] | None = None) -> int:
    """Run a sandbox in this process until SIGTERM/SIGINT (for kill tests and manual trials)."""
    parser = argparse.ArgumentParser(prog="python -m tests.servers.upwork_sandbox",
                                     description="Run the Upwork sandbox on 127.0.0.1.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=6)
    parser.add_argument("--messages", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--url-file", type=Path, help="write the base URL here once listening")
    parser.add_argument("--authorize", type=Path, metavar="STATE_DIR",
                        help="pre-issue tokens into this source state folder")
    args = parser.parse_args(argv)
    sandbox = Sandbox(seed=args.seed, threads=args.threads, messages_per_thread=args.messages,
                      latency=args.latency, port=args.port).start()
    if args.authorize:
        sandbox.authorize_source(args.authorize)
    if args.url_file:
        tmp = args.url_file.with_suffix(".tmp")
        tmp.write_text(sandbox.base_url)
        tmp.replace(args.url_file)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    sandbox.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
