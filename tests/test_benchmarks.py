"""The benchmarks' own machinery, at a tiny size: a benchmark that rots or measures the
wrong thing fails here, not in the run that was meant to give its figures."""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmarks import store_scale_bench as bench


def stored_ids(data: Path) -> list[str]:
    ids = []
    for path in sorted((data / "store" / "messages").glob("s*.json")):
        ids += [doc["id"] for doc in json.loads(path.read_bytes())["messages"].values()]
    return ids


def test_lockstep_syncs_take_turns_and_each_stores_every_message(tmp_path):
    """Syncs of 400 messages beside one of 1,000, a page each in turns: the large store
    ends whole (every message once), every small store is a store of its own (a new
    process each, removed after), and the figures cover every page of both."""
    got = bench.lockstep(tmp_path, "month", 400, 1000, turn=1)
    large = stored_ids(tmp_path / "month-1000" / "data")
    assert len(large) == len(set(large)) == 1000
    assert not (tmp_path / "month-400-lockstep").exists()
    assert len(got["block_ratios"]) == 3  # 400, 400 and the last 200 of the large one
    assert all(r > 0 for r in got["block_ratios"])
    assert got["large_ms"] > 0 and got["small_ms"] > 0
    assert got["rss_mb"]["large"] > 0 and got["rss_mb"]["small"] > 0


def test_lockstep_turns_of_several_pages_store_the_same(tmp_path):
    got = bench.lockstep(tmp_path, "spread", 400, 600, turn=3)
    assert len(stored_ids(tmp_path / "spread-600" / "data")) == 600
    assert len(got["block_ratios"]) == 2
