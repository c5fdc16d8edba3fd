"""Benchmark: read commands and a no-op sync as fresh processes (issue 12 item 6, issue 14).

Every command a user types starts a new Python process, so what counts is the wall time
of ``python -m agent ...`` from fork to exit: interpreter start, imports, config, store,
output. This script times, as fresh processes, with medians over ``--runs`` rounds (the
commands interleaved, so a burst of load on a shared box hits all of them alike):

- ``status``, ``review``, ``contractors``, ``deliverables --unreviewed``, ``report --json``;
- ``sync`` of a Maildir source with nothing new (the no-op sync a cron job runs);
- ``python -c pass``: the bare interpreter start, the floor under every figure.

The store (``--data``) is built once when missing: by default the store of
``workflow_bench.py`` (500 contractors, 50,000 messages, 10,000 deliverables, half of them
reviewed), or with ``--messages N`` the ``spread`` shape of ``store_scale_bench.py``
(200 contractors, about 2,500 messages a month). Bytecode is compiled before timing (an
installed Retainer has it; an editable checkout writes it on first run).

    python tests/benchmarks/startup_bench.py [--data DIR] [--runs 7] [--budget 0.15]
    python tests/benchmarks/startup_bench.py --data /tmp/s200k/data --messages 200000
    python tests/benchmarks/startup_bench.py --data D --baseline ../main --baseline-data D2 \
        --instructions

Prints one table (median and best wall time, median CPU time, peak RSS) and exits 1 when
a median wall time is over the budget. Also prints the first run after a write (a review
recorded, so every read model is stale) as ``cold``: the price of rebuilding them.
``--baseline`` times another checkout in the same rounds (``--baseline-data``: its own copy
of the store); ``--instructions`` adds each command's instruction count under valgrind
(deterministic, where a shared box's wall times are not).
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OWNER = "owner@example.com"
COMMANDS = [
    ("status", ["status"]),
    ("review", ["review"]),
    ("contractors", ["contractors"]),
    ("deliverables --unreviewed", ["deliverables", "--unreviewed"]),
    ("report --json", ["report", "--json"]),
    ("sync (nothing new)", ["sync"]),
]


def build_store(data: Path, messages: int | None) -> None:
    sys.path.insert(0, str(ROOT))
    started = time.perf_counter()
    if messages is None:
        from tests.benchmarks.workflow_bench import fill

        fill(data)
    else:
        from tests.benchmarks.store_scale_bench import child_fill

        child_fill(data, "spread", messages)
        add_reviews(data)
    print(f"built {data} in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def add_reviews(data: Path) -> None:
    """Half of the deliverables reviewed, as workflow_bench does (the same write path)."""
    from datetime import datetime, timedelta

    from agent.store import Store
    from agent.store import workflow as wf

    store = Store(data)
    with store.writing():
        items = []
        for n, doc in enumerate(store.deliverables()):
            if n % 2:
                continue
            received = datetime.fromisoformat(doc["received_at"].replace("Z", "+00:00"))
            items.append((doc, {"status": "approved" if n % 6 else "changes_requested",
                                "rating": 1 + n % 5, "cost": float(20 + n % 80),
                                "when": received + timedelta(hours=2 + n % 90)}))
        wf.record_reviews(store, items)


def write_config(data: Path) -> Path:
    maildir = data.parent / "maildir"  # an empty Maildir: the sync finds nothing new
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    config = data.parent / "startup.toml"
    config.write_text(f'[agent]\ndata_dir = "{data}"\nowner_emails = ["{OWNER}"]\n\n'
                      f'[[sources]]\nname = "inbox"\nplatform = "maildir"\n'
                      f'[sources.settings]\npath = "{maildir}"\n')
    return config


def environment(project: Path) -> dict[str, str]:
    """The children's environment: ``project``'s code first on the path (they run from a
    neutral folder, so the current directory does not decide which checkout runs)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "RETAINER_CONFIG", "PYTHONPATH", "COLUMNS")}
    env["PYTHONPATH"] = str(project)
    return env


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of one fresh process; its output is discarded."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            cwd=tempfile.gettempdir())
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {err}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="reuse (or build) the store here")
    parser.add_argument("--messages", type=int, help="build the spread shape of this size")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--budget", type=float, default=0.15)
    parser.add_argument("--no-cold", action="store_true", help="skip the first-run-after-a-write row")
    parser.add_argument("--baseline", type=Path,
                        help="another checkout (e.g. the main branch) timed in the same rounds")
    parser.add_argument("--instructions", action="store_true",
                        help="also count each command's instructions once under valgrind's "
                             "callgrind (the same on a busy box as on a quiet one)")
    parser.add_argument("--baseline-data", type=Path,
                        help="a copy of the store for --baseline (read models and quick-sync "
                             "records of two versions would replace each other's in one store)")
    args = parser.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="retainer-startup-")) / "data"
    if not (data / "store" / "meta.json").exists():
        # in a child: a child's peak RSS counts the memory of the process it was forked
        # from, so a store built in this process would inflate every RSS figure below
        import multiprocessing

        child = multiprocessing.get_context("spawn").Process(
            target=build_store, args=(data, args.messages))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"building the store in {data} failed")
    config = write_config(data)
    env = environment(ROOT)
    trees = [("", env, config)]
    if args.baseline is not None:
        trees.append((" [baseline]", environment(args.baseline.resolve()),
                      write_config(args.baseline_data) if args.baseline_data else config))
    for tree in {ROOT, *([args.baseline] if args.baseline else [])}:
        compileall.compile_dir(str(Path(tree) / "agent"), quiet=1)
        compileall.compile_dir(str(Path(tree) / "plugins"), quiet=1)
    python = sys.executable
    base = [python, "-m", "agent", "--config", str(config)]
    for _, tree_env, tree_config in trees:  # warm-up: bytecode, page cache, read models
        for _, argv in COMMANDS:
            timed([python, "-m", "agent", "--config", str(tree_config), *argv], tree_env)
    floor: list[tuple[float, float, float]] = []
    results: dict[str, list[tuple[float, float, float]]] = {
        label + tag: [] for label, _ in COMMANDS for tag, _, _ in trees}
    for _ in range(args.runs):
        floor.append(timed([python, "-c", "pass"], env))
        for label, argv in COMMANDS:
            for tag, tree_env, tree_config in trees:
                results[label + tag].append(
                    timed([python, "-m", "agent", "--config", str(tree_config), *argv],
                          tree_env))
    cold: dict[str, float] = {}
    if not args.no_cold:
        for label, argv in COMMANDS[:5]:
            touch_review(python, env, config)
            cold[label] = timed([*base, *argv], env)[0]
    counted: dict[str, float] = {}
    if args.instructions:
        counted["python -c pass (floor)"] = instructions([python, "-c", "pass"], env)
        for label, argv in COMMANDS:
            for tag, tree_env, tree_config in trees:
                counted[label + tag] = instructions(
                    [python, "-m", "agent", "--config", str(tree_config), *argv], tree_env)
    print(f"\nstore: {data}  ({args.runs} runs each, fresh processes, wall medians)")
    print(f"{'command':<28}{'median s':>10}{'best s':>9}{'CPU s':>8}{'RSS MB':>8}{'cold s':>8}"
          + (f"{'instr. M':>10}" if counted else "") + f"  budget {args.budget} s")
    rows = [("python -c pass (floor)", floor), *list(results.items())]
    failed = False
    for label, runs in rows:
        wall = statistics.median(r[0] for r in runs)
        verdict = ""
        if label in results and not label.endswith("[baseline]"):
            verdict = "ok" if wall <= args.budget else "OVER"
            failed |= wall > args.budget
        cold_s = f"{cold[label]:>8.3f}" if label in cold else f"{'':>8}"
        count = f"{counted[label]:>10.0f}" if label in counted else ""
        print(f"{label:<28}{wall:>10.3f}{min(r[0] for r in runs):>9.3f}"
              f"{statistics.median(r[1] for r in runs):>8.3f}"
              f"{max(r[2] for r in runs):>8.0f}{cold_s}{count}  {verdict}")
    return 1 if failed else 0


def instructions(argv: list[str], env: dict[str, str]) -> float:
    """Millions of instructions one run of ``argv`` executes in user space (callgrind):
    what the wall time follows on a quiet machine, counted alike on a busy one."""
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                           *argv], capture_output=True, text=True, env=env,
                          cwd=tempfile.gettempdir(), check=True)
    for line in done.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1]) / 1e6
    raise SystemExit(f"no instruction count from valgrind: {done.stderr[-500:]}")


def touch_review(python: str, env: dict[str, str], config: Path) -> None:
    """Record one review through the command line (a write: read models go stale)."""
    out = subprocess.run([python, "-m", "agent", "--config", str(config), "deliverables",
                          "--unreviewed", "--json"], capture_output=True, env=env, check=True)
    import json

    queue = json.loads(out.stdout)
    if not queue:
        return
    subprocess.run([python, "-m", "agent", "--config", str(config), "review", "approve",
                    queue[0]["id"], "--rating", "4"], capture_output=True, env=env, check=True)


if __name__ == "__main__":
    sys.exit(main())
