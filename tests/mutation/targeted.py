"""Check named mutants against a chosen set of tests, fast: pytest and the code are
imported once, each mutant runs in a fork of that process.

    .venv/bin/python tests/mutation/targeted.py NAMES_FILE -- tests/test_secrets.py
    .venv/bin/python tests/mutation/targeted.py NAMES_FILE -- tests/test_sync.py -k killed

Needs the mutated copy a ``run.py`` (``mutmut run``) made in ``mutants/``. NAMES_FILE
holds one mutant name a line (``mutmut results`` prints them). Prints ``NAME: killed``
when the tests fail on that mutant and ``NAME: survived`` when they pass; the tests are
first run on the unchanged code (a control) and the script stops if they fail there.

A kill found this way is a kill: some test notices the change. A survivor here may still
be killed by a test outside the chosen set, so scores from this script are a lower
bound; ``mutmut run NAME`` (or ``run.py --rerun``) runs every test that reaches the
mutated function. Used for docs/mutation-testing.md where a full run did not fit the time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MUTANTS = Path(os.environ.get("MUTANTS_DIR", ROOT / "mutants"))


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        print(__doc__)
        return 2
    names = [n.strip() for n in Path(sys.argv[1]).read_text().splitlines() if n.strip()]
    os.chdir(MUTANTS)
    sys.path.insert(0, str(MUTANTS))
    import pytest

    import agent.sync  # imported once, before the forks

    if not str(Path(agent.sync.__file__).resolve()).startswith(str(MUTANTS.resolve())):
        print(f"agent is imported from {agent.sync.__file__}, not from {MUTANTS}")
        return 2
    os.nice(10)
    args = ["-x", "-q", "-p", "no:cacheprovider", *sys.argv[3:]]
    for name in ["", *names]:  # "": the control, no mutant
        pid = os.fork()
        if pid == 0:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.environ["MUTANT_UNDER_TEST"] = name
            os._exit(int(pytest.main(args)))
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if not name:
            if code != 0:
                print(f"the tests fail on the unchanged code (exit {code}); nothing checked")
                return 1
            continue
        verdict = {0: "survived", 1: "killed"}.get(code, f"error (exit {code})")
        print(f"{name}: {verdict}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
