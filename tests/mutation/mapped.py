"""targeted.py with mutmut's per-function test map: each mutant runs only those of the
chosen tests that reach its function, in a fork of one process that imported pytest,
the code and the test modules once.

    .venv/bin/python tests/mutation/mapped.py NAMES_FILE RESULTS_FILE -- tests/store
    ONE_STORE=1 PRIO=test_roster .venv/bin/python tests/mutation/mapped.py ... -- tests/store

Needs the mutated copy ``mutmut run`` made in ``mutants/`` (stop it once the mutants are
generated) and a copy of the current tests there (``cp -a tests mutants/``). First runs
the chosen tests once with mutmut's trampolines recording which test reaches which
function (the map is kept beside RESULTS_FILE, ``.map.json``: delete it after changing
the tests), then every mutant of NAMES_FILE against the tests that reach it, stopping at
the first failure. Appends ``NAME: killed|survived|timeout|no tests`` to RESULTS_FILE and
skips names already there, so a stopped run can be resumed.

``ONE_STORE=1`` runs a test parametrised over both stores (``[disk]``/``[memory]``) on the
memory store only: for code that does not depend on where the tables live (the roster,
the workflow), half the time. ``PRIO=a,b`` runs tests whose id contains one of the words
first (the module's own tests kill most mutants). As with targeted.py, a kill is a kill
and a survivor may be killed by a test outside the chosen set: scores are a lower bound.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MUTANTS = Path(os.environ.get("MUTANTS_DIR", ROOT / "mutants"))


def quiet() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[3] != "--":
        print(__doc__)
        return 2
    names = [n.strip() for n in Path(sys.argv[1]).read_text().splitlines() if n.strip()]
    out_path = Path(sys.argv[2]).resolve()
    test_args = sys.argv[4:]
    done = set()
    if out_path.exists():
        done = {line.partition(": ")[0] for line in out_path.read_text().splitlines()}
    os.chdir(MUTANTS)
    sys.path.insert(0, str(MUTANTS))
    import mutmut.mutation.trampoline as trampoline
    import pytest
    from mutmut.utils.format_utils import mangled_name_from_mutant_name

    import agent.sync  # imported once, before the forks

    if not str(Path(agent.sync.__file__).resolve()).startswith(str(MUTANTS.resolve())):
        print(f"agent is imported from {agent.sync.__file__}, not from {MUTANTS}")
        return 2
    os.nice(10)
    limit = int(os.environ.get("MUT_LIMIT", "90"))
    base = ["-q", "-p", "no:cacheprovider", "-p", "no:timeout"]  # our alarm, not its 300 s
    saved = os.dup(1), os.dup(2)
    quiet()
    pytest.main([*base, "--co", *test_args])  # import the test modules once, in the parent
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)

    map_file = out_path.with_suffix(".map.json")
    if not map_file.exists():
        pid = os.fork()
        if pid == 0:  # the control run, recording which test reaches which function
            quiet()
            hits: dict[str, set[str]] = defaultdict(set)
            current = {"id": ""}

            def record(name: str, caller: str | None = None) -> None:
                hits[name].add(current["id"])

            trampoline.record_trampoline_hit = record  # type: ignore[assignment]

            class Recorder:
                @pytest.hookimpl(tryfirst=True)
                def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> None:
                    current["id"] = item.nodeid

            os.environ["MUTANT_UNDER_TEST"] = "stats"
            code = pytest.main([*base, *test_args], plugins=[Recorder()])
            map_file.write_text(json.dumps({k: sorted(v) for k, v in hits.items()}))
            os._exit(int(code))
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            print("the tests fail on the unchanged code; nothing checked")
            map_file.unlink(missing_ok=True)
            return 1
    test_map: dict[str, list[str]] = json.loads(map_file.read_text())
    first_words = [w for w in os.environ.get("PRIO", "").split(",") if w]
    with out_path.open("a") as out:
        for name in names:
            if name in done:
                continue
            module, _, mutant = name.rpartition(".")
            tests = test_map.get(f"{module}.{mangled_name_from_mutant_name(mutant)}", [])
            if os.environ.get("ONE_STORE"):
                both = set(tests)
                tests = [t for t in tests
                         if not (t.endswith("[disk]") and t[:-6] + "[memory]" in both)]
            first = [t for t in tests if any(w in t for w in first_words)]
            tests = first + [t for t in tests if t not in first]
            if not tests:
                verdict = "no tests"
            else:
                pid = os.fork()
                if pid == 0:
                    quiet()
                    os.environ["MUTANT_UNDER_TEST"] = name
                    signal.alarm(limit)
                    os._exit(int(pytest.main([*base, "-x", *tests])))
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
                verdict = {0: "survived", 1: "killed", -signal.SIGALRM: "timeout"}.get(
                    code, f"error (exit {code})")
            out.write(f"{name}: {verdict}\n")
            out.flush()
            print(f"{name}: {verdict}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
