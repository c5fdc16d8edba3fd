"""Mutation testing of the modules that carry Retainer's safety promises, module by module.

    .venv/bin/python tests/mutation/run.py                      # every module in [tool.mutmut]
    .venv/bin/python tests/mutation/run.py agent/secrets.py     # one module
    .venv/bin/python tests/mutation/run.py --children 2 --keep  # reuse mutants/ from a last run
    .venv/bin/python tests/mutation/run.py --rerun agent/sync.py  # only what was not killed
    .venv/bin/python tests/mutation/run.py --ci                 # the CI subset (tests/run.sh)

mutmut (configured in pyproject.toml, [tool.mutmut]) copies the code to ``mutants/``,
records which of the selected tests reach each function, and runs, for each mutant, only
those tests. This script runs it under ``nice`` for one module at a time and prints the
mutation score per module and the mutants that survived. It is a documented check
(docs/mutation-testing.md): a full run takes tens of minutes. ``--ci`` runs a subset (the
functions that carry the crash-safety and secret promises) and fails on any surviving
mutant not listed, with the reason it is equivalent, in ``tests/mutation/equivalent.txt``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DETECTED = {"killed", "timeout", "caught by type check", "segfault"}
MISSED = {"survived", "no tests", "suspicious"}
EQUIVALENT = Path(__file__).with_name("equivalent.txt")
# The CI subset: the functions behind "a crash leaves the old file or the new one", "records
# before the cursor" and "secrets never leave": (module, mutant name pattern).
CI_SUBSET = [
    ("agent/files.py", "agent.files.x_write_private*"),
    ("agent/files.py", "agent.files.x_fsync_dir*"),
    ("agent/files.py", "agent.files.x_remove_orphan_temps*"),
    ("agent/store/storage.py", "agent.store.storage.xǁAtomicStorageǁ*"),
    ("agent/store/storage.py", "agent.store.storage.x_batched_dir_sync*"),
    ("agent/store/pluginstate.py", "agent.store.pluginstate.xǁPluginStateǁcommit*"),
    ("agent/sync.py", "agent.sync.xǁSyncEngineǁ_run*"),
    ("agent/sync.py", "agent.sync.x_redact*"),
    ("agent/sync.py", "agent.sync.x_secret_values*"),
    ("agent/secrets.py", "agent.secrets.x_resolve_secret*"),
    ("agent/secrets.py", "agent.secrets.x_scrub*"),
]


def configured_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return [str(m) for m in config["only_mutate"]]


def mutmut(*args: str, log: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = ["nice", "-n", "10", str(ROOT / ".venv" / "bin" / "mutmut"), *args]
    if log is None:
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    with log.open("w") as out:
        return subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
                              check=False)


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


def equivalent() -> set[str]:
    """Mutant names judged equivalent or harmless (one per line; ``#`` starts the reason)."""
    names = (line.partition("#")[0].strip() for line in EQUIVALENT.read_text().splitlines())
    return {name for name in names if name}


def ci() -> int:
    """Run the CI subset; fail on a surviving mutant that is not listed as equivalent."""
    shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    (ROOT / "mutants").mkdir()
    started = time.monotonic()
    log = ROOT / "mutants" / "run-ci.log"
    done = mutmut("run", "--max-children", "2", *(pattern for _, pattern in CI_SUBSET), log=log)
    found: dict[str, str] = {}
    for _module, pattern in CI_SUBSET:
        prefix = pattern.rstrip("*")
        found.update(statuses(prefix))
    counts = Counter(found.values())
    detected = sum(counts[s] for s in DETECTED)
    judged = detected + sum(counts[s] for s in MISSED)
    known = equivalent()
    new = sorted(n for n, s in found.items() if s in MISSED and n not in known)
    print(f"mutation (CI subset): {detected}/{judged} detected, "
          f"{judged - detected - len(new)} listed as equivalent, {len(new)} new survivors "
          f"({(time.monotonic() - started) / 60:.1f} min; log {log.relative_to(ROOT)})")
    if done.returncode != 0 or not judged:
        print(f"mutmut failed (exit {done.returncode}); see {log.relative_to(ROOT)}")
        return 1
    for name in new:
        print(f"    {found[name]:10} {name}")
    if new:
        print("A change to the code that no test notices. Add a test that fails on it "
              "(`.venv/bin/mutmut show NAME` shows the change), or, if it cannot change "
              "behaviour, list it in tests/mutation/equivalent.txt with the reason "
              "(docs/mutation-testing.md).")
        return 1
    return 0


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
    parser.add_argument("--ci", action="store_true",
                        help="the CI subset; exit 1 on a survivor not in equivalent.txt")
    args = parser.parse_args()
    if args.ci:
        return ci()
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
            mutmut("run", "--max-children", str(args.children), *names, log=log)
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
