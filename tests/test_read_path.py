"""Read commands start light: a fresh `retainer status` (`review`, `contractors`,
`deliverables --unreviewed`, `report --json`) imports no pydantic, no plugin machinery, no
file lock and no record types, and parses no shard whose read model is current.

Each command runs in a fresh interpreter (this test process has imported everything);
its speed is measured in tests/benchmarks/startup_bench.py, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.workflow_mail import synced

#: Modules a read command must leave unimported (each costs a fresh process time).
HEAVY = ("pydantic", "pluggy", "filelock", "agent.plugins", "agent.config.models", "agent.connector",
         "agent.models", "agent.store.pages", "importlib.metadata", "statistics", "rich")

READS = [["status"], ["status", "--json"], ["review"], ["review", "--json"], ["contractors"],
         ["contractors", "--json"], ["deliverables", "--unreviewed"], ["report", "--json"]]

_PROBE = """
import json, sys
sys.argv = ["retainer", *{argv!r}]
import agent.store.storage as storage
parsed = []
read = storage.AtomicStorage.read
def spy(self):
    if self.data is None:
        parsed.append(self.path.parent.name + "/" + self.path.name)
    return read(self)
storage.AtomicStorage.read = spy
from agent.cli.root import main
try:
    main()
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
print("\\n@@" + json.dumps({{"code": code, "heavy": sorted(m for m in {heavy!r} if m in sys.modules),
                           "parsed": parsed}}))
"""


def probe(argv: list[str]) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run([sys.executable, "-c", _PROBE.format(argv=argv, heavy=HEAVY)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.rsplit("\n@@", 1)[1])
    assert result["code"] in (0, None), done.stderr
    return result


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synced(tmp_path_factory.mktemp("read-path"))


@pytest.mark.parametrize("argv", READS, ids=" ".join)
def test_a_read_command_imports_nothing_heavy(config: Path, argv: list[str]) -> None:
    probe(["--config", str(config), *argv])  # the first run may (re)build read models
    result = probe(["--config", str(config), *argv])
    assert result["heavy"] == []


@pytest.mark.parametrize("argv", [["contractors"], ["report", "--json"], ["review"]],
                         ids=" ".join)
def test_current_read_models_spare_the_shards(config: Path, argv: list[str]) -> None:
    probe(["--config", str(config), *argv])
    parsed = probe(["--config", str(config), *argv])["parsed"]
    assert isinstance(parsed, list)
    assert not [p for p in parsed if p.startswith(("messages/", "deliverables/"))], parsed


_TABLE = """
from agent.cli.output import table
rows = [(f"d_{{n:04d}}", f"Contractor {{n % 7}}", n * 10) for n in range({count})]
table(rows, ["id", "contractor", "size"])
"""


@pytest.mark.parametrize("count", [5, 400])
def test_long_tables_on_a_terminal_skip_rich(count: int) -> None:
    """rich costs 0.2-0.3 ms a row: a short table is drawn by it, a long one printed as
    plain rows under a bold header; both show every row, aligned, within the width."""
    import re

    from tests.test_cli import run_on_terminal

    code, terminal, err = run_on_terminal([sys.executable, "-c", _TABLE.format(count=count)],
                                          stream="stdout", env={"COLUMNS": "60"})
    assert code == 0, err
    assert "\x1b[1m" in terminal  # the header is bold either way
    plain = re.sub(r"\x1b\[[0-9;]*m", "", terminal).replace("\r\n", "\n")
    lines = [line for line in plain.splitlines() if line.strip()]
    assert lines[0].split() == ["ID", "CONTRACTOR", "SIZE"]
    assert len(lines) == count + 1 and max(len(line) for line in lines) <= 60
    assert lines[-1].split() == [f"d_{count - 1:04d}", "Contractor", str((count - 1) % 7),
                                 str((count - 1) * 10)]
    styled_rows = len(re.findall(r"\x1b\[", terminal))
    assert (styled_rows > 2) == (count <= 100)  # rich styles cells; the plain path only the header
