"""Mutation testing of the modules that carry Retainer's safety promises, module by module.

    .venv/bin/python tests/mutation/run.py                      # every module in [tool.mutmut]
    .venv/bin/python tests/mutation/run.py agent/secrets.py     # one module
    .venv/bin/python tests/mutation/run.py --children 2 --keep  # reuse mutants/ from a last run
    .venv/bin/python tests/mutation/run.py --rerun agent/sync.py  # only what was not killed

mutmut (configured in pyproject.toml, [tool.mutmut]) copies the code to ``mutants/``,
records which of the selected tests reach each function, and runs, for each mutant, only
those tests. This script runs it under ``nice`` for one module at a time and prints the
mutation score per module and the mutants that survived. The tests' temporary files go
to a fresh folder on ``/dev/shm`` (a memory filesystem) where there is one, unless
``--disk``: the store's tests fsync every write, and on a disk that makes them about four
times slower. It is a documented check (docs/mutation-testing.md), not part of CI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DETECTED = {"killed", "timeout", "caught by type check", "segfault"}
MISSED = {"survived", "no tests", "suspicious"}

def configured_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return [str(m) for m in config["only_mutate"]]


def mutmut(*args: str, log: Path | None = None, tmp: Path | None = None
           ) -> subprocess.CompletedProcess[str]:
    command = ["nice", "-n", "19", str(ROOT / ".venv" / "bin" / "mutmut"), *args]
    env = None if tmp is None else dict(os.environ, TMPDIR=str(tmp))
    if log is None:
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False,
                              env=env)
    with log.open("w") as out:
        return subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
                              check=False, env=env)


def memory_tmp() -> Path | None:
    """A fresh folder on ``/dev/shm`` for the tests' temporary files; None without one."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        return None
    return Path(tempfile.mkdtemp(prefix="retainer-mutation-", dir=shm))


def prefix_of(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".") + "."


def statuses(prefix: str) -> dict[str, str]:
    done = mutmut("results", "--all", "true")
    found: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name.startswith(prefix):
            found[name] = status
    return found


def rerun_names(module: str) -> list[str]:
    """The mutants of ``module`` that a last run did not detect (or did not reach)."""
    return sorted(n for n, s in statuses(prefix_of(module)).items() if s not in DETECTED)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="paths like agent/files.py (default: all)")
    parser.add_argument("--children", type=int, default=1, help="parallel mutants (default 1)")
    parser.add_argument("--keep", action="store_true",
                        help="reuse mutants/ (and its test map) from the last run")
    parser.add_argument("--rerun", action="store_true",
                        help="run again only the mutants the last run did not detect (after "
                             "adding tests; implies --keep)")
    parser.add_argument("--disk", action="store_true",
                        help="keep the tests' temporary files in the usual temp folder "
                             "instead of /dev/shm")
    args = parser.parse_args()
    tmp = None if args.disk else memory_tmp()
    try:
        return run(args, tmp)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path | None) -> int:
    modules = args.modules or configured_modules()
    if not args.keep and not args.rerun:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    (ROOT / "mutants").mkdir(exist_ok=True)
    rows: list[tuple[str, int, int, float, Counter[str]]] = []
    for module in modules:
        prefix = prefix_of(module)
        log = ROOT / "mutants" / f"run-{prefix.rstrip('.')}.log"
        started = time.monotonic()
        names = rerun_names(module) if args.rerun else [prefix + "*"]
        if names:
            mutmut("run", "--max-children", str(args.children), *names, log=log, tmp=tmp)
        minutes = (time.monotonic() - started) / 60
        found = statuses(prefix)
        counts = Counter(found.values())
        detected = sum(counts[s] for s in DETECTED)
        judged = detected + sum(counts[s] for s in MISSED)
        rows.append((module, judged, detected, minutes, counts))
        survivors = sorted(n for n, s in found.items() if s in MISSED)
        score = 100 * detected / judged if judged else 0.0
        print(f"{module}: {detected}/{judged} detected, score {score:.1f}% "
              f"({minutes:.1f} min; log {log.relative_to(ROOT)})", flush=True)
        for name in survivors:
            print(f"    {found[name]:10} {name}", flush=True)
    print("\nmodule                         mutants  detected  score   minutes")
    for module, judged, detected, minutes, counts in rows:
        score = 100 * detected / judged if judged else 0.0
        other = {k: v for k, v in counts.items() if k not in DETECTED | MISSED}
        note = f"  (not judged: {dict(other)})" if other else ""
        print(f"{module:30} {judged:7} {detected:9} {score:5.1f}%  {minutes:6.1f}{note}")
    print("\n`.venv/bin/mutmut show NAME` shows a mutant's diff.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
