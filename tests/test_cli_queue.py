"""The review queue's tables (`retainer review`, `retainer deliverables --unreviewed`) are
printed from a read model of short rows (agent.reviewqueue): they list exactly what the
JSON documents list, in the same order, and follow every review and roster change."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.workflow_mail import run, synced


def table_ids(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines() if line.startswith("d_")]


def data_dir(config: Path) -> Path:
    return config.parent / "data"


def test_the_review_table_lists_what_the_json_lists(tmp_path: Path) -> None:
    config = synced(tmp_path)
    docs = json.loads(run(config, "review", "--json").stdout)
    assert len(docs) >= 5
    out = run(config, "review").stdout
    assert table_ids(out) == [d["id"] for d in docs]
    late = sum(d["overdue"] for d in docs)
    assert late and f"\n{len(docs)} waiting, {late} overdue (older than 3 d)" in out
    assert out.count("OVERDUE") == late
    for doc in docs:
        line = next(x for x in out.splitlines() if x.startswith(doc["id"]))
        assert doc["contractor"] in line and doc["filename"] in line
    assert (data_dir(config) / "store" / "index" / "views" / "queue.json").exists()
    again = run(config, "review").stdout  # from the saved model: the same table
    assert again == out


def test_the_deliverables_queue_table_lists_what_the_json_lists(tmp_path: Path) -> None:
    config = synced(tmp_path)
    docs = json.loads(run(config, "deliverables", "--unreviewed", "--json").stdout)
    out = run(config, "deliverables", "--unreviewed").stdout
    assert table_ids(out) == [d["id"] for d in docs]
    assert out.count("unreviewed") == len(docs)
    limited = run(config, "deliverables", "--unreviewed", "--limit", "2").stdout
    assert table_ids(limited) == [d["id"] for d in docs[:2]]
    assert table_ids(run(config, "deliverables", "--unreviewed", "--limit", "0").stdout) == []


def test_the_queue_tables_follow_reviews_and_the_roster(tmp_path: Path) -> None:
    config = synced(tmp_path)
    run(config, "review")  # the model is saved
    docs = json.loads(run(config, "review", "--json").stdout)
    run(config, "review", "approve", docs[0]["id"], "--rating", "4")
    after = run(config, "review").stdout
    assert table_ids(after) == [d["id"] for d in docs[1:]]
    assert f"\n{len(docs) - 1} waiting" in after
    assert docs[0]["id"] not in run(config, "deliverables", "--unreviewed").stdout
    sam = [d["id"] for d in docs if d["contractor"] == "Sam Chen"]
    assert sam
    run(config, "contractors", "merge", "Maria Lopez", "Sam Chen")
    merged = run(config, "review").stdout
    for line in merged.splitlines():
        if line.split()[:1] and line.split()[0] in sam:
            assert "Maria Lopez" in line and "Sam Chen" not in line


def test_a_damaged_queue_model_is_rebuilt(tmp_path: Path) -> None:
    config = synced(tmp_path)
    out = run(config, "review").stdout
    model = data_dir(config) / "store" / "index" / "views" / "queue.json"
    model.write_bytes(b'{"format": 1, "version": "queue-rows-1", "inputs": [], "data": [')
    assert run(config, "review").stdout == out
    assert json.loads(model.read_bytes())["data"]


def test_a_queue_model_of_the_wrong_shape_is_not_trusted(tmp_path: Path) -> None:
    """Stamps and version match, the rows do not: built afresh, never a crash."""
    config = synced(tmp_path)
    out = run(config, "review").stdout
    model = data_dir(config) / "store" / "index" / "views" / "queue.json"
    saved = json.loads(model.read_bytes())
    saved["data"] = [row[:3] for row in saved["data"]]
    model.write_text(json.dumps(saved))
    assert run(config, "review").stdout == out
