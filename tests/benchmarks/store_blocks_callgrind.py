"""Instructions per block of a full sync, under valgrind: what the store's work costs
at each size, without a shared box's noise.

Wall and CPU times on a shared box swing by a third from one process to the next;
instruction counts do not. This writes ``--size`` messages of one shape (the mailbox of
``store_scale_bench.py``: pages of 200 through :meth:`Store.commit_page`, the cursor
after each) in one process under callgrind, and has callgrind dump its counters after
the setup and after every ``--block`` messages, then prints the instructions per message
of each block. Equal counts from the first block to the last mean the store does the
same work per message at every size (callgrind does not see the kernel: the benchmark's
"of it sys" column does).

    python tests/benchmarks/store_blocks_callgrind.py [--size 30000] [--block 10000]
        [--shape month] [--total 200000]

``--total`` spaces the dates as a sync of that many would (the one-month shape packs
``total`` messages into March). About 60 times slower than a plain run: 10,000
messages take one to three minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def child(data: Path, shape: str, size: int, block: int, total: int) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import store_scale_bench as bench  # type: ignore[import-not-found]

    from agent.models import Identity
    from agent.store import Store

    def dump(tag: str) -> None:
        subprocess.run(["callgrind_control", "-d", tag, str(os.getpid())], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    store = Store(data)
    with store.writing():
        for c in range(bench.CONTRACTORS):
            store.add_contractor(f"Contractor {c:03d}", [Identity("email", f"c{c}@example.com")])
    owner = frozenset({f"email:{bench.OWNER}"})
    dump("setup")
    for first in range(0, size, bench.PAGE):
        page = list(bench.records(shape, first, min(bench.PAGE, size - first), total))
        with store.writing():
            store.commit_page("mail", "maildir", page, owner_keys=owner)
            store.update_source_state("mail", cursor=str(first + len(page)))
        if (first + len(page)) % block == 0:
            dump(f"block{(first + len(page)) // block}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=30_000)
    parser.add_argument("--block", type=int, default=10_000)
    parser.add_argument("--shape", default="month", choices=("month", "spread"))
    parser.add_argument("--total", type=int, default=200_000)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.shape, args.size, args.block, args.total)
        return 0
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    work = Path(tempfile.mkdtemp(prefix="retainer-blocks-"))
    try:
        out = work / "callgrind.out"
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p",
                        sys.executable, __file__, "--child", str(work / "data"),
                        "--size", str(args.size), "--block", str(args.block),
                        "--shape", args.shape, "--total", str(args.total)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        counts: dict[str, int] = {}
        for path in work.glob("callgrind.out.*"):
            text = path.read_text(errors="replace")
            trigger = re.search(r"^desc: Trigger: dump (\S+)", text, re.MULTILINE)
            totals = re.search(r"^totals: (\d+)", text, re.MULTILINE)
            if trigger and totals:
                counts[trigger.group(1)] = int(totals.group(1))
        blocks = sorted((k for k in counts if k.startswith("block")), key=lambda k: int(k[5:]))
        if not blocks:
            raise SystemExit("callgrind dumped no block (is callgrind_control installed?)")
        first = counts[blocks[0]]
        print(f"{args.shape}, {args.size} messages in blocks of {args.block} "
              f"(dates of a sync of {args.total}): instructions per message")
        for name in blocks:
            print(f"{name:>8} {counts[name] / args.block:>12,.0f} "
                  f"{counts[name] / first:>7.3f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
