"""Counts come from what is committed, and ``records_stored`` sees every committed record
exactly once, when a sync is killed (SIGKILL) at any write of a page's records."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import textwrap

from agent.store import Store
from tests.test_cli import run
from tests.test_sync import make_config

CHILD = """
import os, signal, sys
sys.path.insert(0, {cwd!r})
from pathlib import Path
import tests.support.feed as feed
from agent import hookimpl
from agent.config import load_config
from agent.plugins import make_plugin_host
from agent.store import Store
from agent.sync import SyncEngine

kill_at, log = int(sys.argv[1]), sys.argv[2]
seen = 0

def audit(event, args):
    global seen
    if event == "os.rename" and kill_at and "/store/" in str(args[1]) \\
            and not str(args[1]).endswith("meta.json"):
        seen += 1
        if seen == kill_at:  # just before this shard file replaces the old one
            os.kill(os.getpid(), signal.SIGKILL)

class Recorder:
    @hookimpl
    def records_stored(self, batch):
        with open(log, "a") as handle:
            for doc in batch.messages:
                handle.write("m " + doc["id"] + "\\n")
            for doc in batch.deliverables:
                handle.write("d " + doc["id"] + "\\n")

host = make_plugin_host(entrypoints=False, extra=[feed, Recorder()])
config = load_config(Path({config!r}), host)
sys.addaudithook(audit)
SyncEngine(config, host, Store(config.data_dir)).sync_all(["feed"])
"""


def test_killed_at_every_shard_write_announces_each_record_once(tmp_path):
    killed_somewhere = 0
    for kill_at in range(1, 40):
        case = tmp_path / f"k{kill_at}"
        case.mkdir()
        config = make_config(case)
        log = case / "announced.log"
        script = textwrap.dedent(CHILD.format(cwd=os.getcwd(), config=str(config)))
        first = subprocess.run([sys.executable, "-c", script, str(kill_at), str(log)],
                               capture_output=True, text=True, timeout=60)
        if first.returncode == 0:  # fewer shard writes than kill_at: every point was tried
            break
        assert first.returncode == -9, first.stderr
        killed_somewhere += 1
        again = subprocess.run([sys.executable, "-c", script, "0", str(log)],
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr
        store = Store(case / "data")
        messages = {d["id"] for d in store.messages() if d["source"] == "feed"}
        deliverables = {d["id"] for d in store.deliverables() if d["source"] == "feed"}
        lines = log.read_text().split("\n") if log.exists() else []
        announced = collections.Counter(line for line in lines if line)
        assert len(messages) == 7 and len(deliverables) == 7
        assert announced == collections.Counter(
            [f"m {i}" for i in messages] + [f"d {i}" for i in deliverables]), kill_at
        status = json.loads(run(config, "status", "--json").stdout)
        row = next(r for r in status["sources"] if r["source"] == "feed")
        assert (row["messages"], row["deliverables"]) == (7, 7), kill_at
    assert killed_somewhere >= 5  # the sync writes shards at least that often
