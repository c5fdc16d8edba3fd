"""Records of the owner's work in bounded shards (agent/store/records.py), on both stores:
saved by id into the shard holding them or the open one, read back in shard order,
and the stamps that tell a reader they changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.files import read_derived
from agent.store import Store, layout, records


def review(n: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"r{n:03d}", "deliverable_id": f"d{n}", "status": "approved",
            "reviewed_at": f"2026-03-{1 + n % 28:02d}T10:00:00Z", **extra}


def test_records_roll_into_shards_and_are_read_back_in_order(store: Store, monkeypatch):
    monkeypatch.setattr(layout, "DELIVERABLE_SHARD_DOCS", 3)
    with store.writing():
        records.save(store, "reviews", [review(n) for n in range(5)])
        records.save(store, "reviews", [review(n) for n in range(5, 7)])
    assert records.shard_names(store, "reviews") == ["s000001", "s000002", "s000003"]
    assert [r["id"] for r in records.read_all(store, "reviews")] == [
        f"r{n:03d}" for n in range(7)]
    with store.writing():  # a changed record is replaced where it is; the same one, kept
        records.save(store, "reviews", [review(1, status="changes_requested"), review(6)])
    found = records.read_all(store, "reviews")
    assert [r["id"] for r in found] == [f"r{n:03d}" for n in range(7)]
    assert found[1]["status"] == "changes_requested"
    assert records.read_all(store, "outbox") == []
    assert records.shard_names(store, "outbox") == []


def test_nothing_to_save_writes_nothing(tmp_path):
    store = Store(tmp_path / "data")
    with store.writing():
        records.save(store, "outbox", [])
    assert not (store.root / "outbox").exists()
    assert not (store.root / "index" / "outbox").exists()


def test_a_save_writes_only_the_shard_it_changes_and_its_summary(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "DELIVERABLE_SHARD_DOCS", 2)
    store = Store(tmp_path / "data")
    with store.writing():
        records.save(store, "notified", [{"id": f"e{n}", "at": f"2026-03-0{n + 1}"}
                                         for n in range(4)])
    root = store.root
    assert (root / "notified").stat().st_mode & 0o777 == 0o700
    assert (root / "index" / "notified").stat().st_mode & 0o777 == 0o700
    summary = root / "index" / "notified" / "s000001.json"
    assert orjson.loads(read_derived(summary) or b"")["last"] == "2026-03-02"
    before = {p.name: p.stat().st_ino for p in (root / "notified").iterdir()}  # replaced
    index_before = summary.stat().st_ino
    with store.writing():  # unchanged: no write at all, not even the summary
        records.save(store, "notified", [{"id": "e0", "at": "2026-03-01"}])
    assert summary.stat().st_ino == index_before
    with store.writing():
        records.save(store, "notified", [{"id": "e1", "at": "2026-03-09"}])
    after = {p.name: p.stat().st_ino for p in (root / "notified").iterdir()}
    assert [n for n in after if after[n] != before[n]] == ["s000001.json"]
    assert orjson.loads(read_derived(summary) or b"")["last"] == "2026-03-09"  # its summary too
    fresh = Store(tmp_path / "data")  # another process finds it where it is
    assert {d["id"]: d["at"] for d in records.read_all(fresh, "notified")}["e1"] == "2026-03-09"


def test_shards_are_listed_by_number_and_other_files_ignored(tmp_path: Path):
    store = Store(tmp_path / "data")
    folder = store.root / "outbox"
    folder.mkdir()
    for name, n in (("s1000000", 3), ("s999999", 2), ("s000002", 1)):
        (folder / f"{name}.json").write_bytes(orjson.dumps(
            {"outbox": {"1": {"id": f"o{n}", "sent_at": str(n)}}}))
    for other in ("s12.json", "notes.json", "s000009.json.tmp", "s000010.txt"):
        (folder / other).write_bytes(b"{}")
    assert records.shard_names(store, "outbox") == ["s000002", "s999999", "s1000000"]
    assert [d["id"] for d in records.read_all(store, "outbox")] == ["o1", "o2", "o3"]


def test_stamps_change_with_every_written_record(tmp_path):
    from agent.store.storage import file_stamp

    store = Store(tmp_path / "data")
    assert records.stamps(store, ["reviews", "outbox"]) == ()
    with store.writing():
        records.save(store, "reviews", [review(1)])
        records.save(store, "outbox", [{"id": "o1", "sent_at": "2026-03-01"}])
    first = records.stamps(store, ["reviews", "outbox"])
    assert first == (
        ("reviews/s000001", file_stamp(store.root / "reviews" / "s000001.json")),
        ("outbox/s000001", file_stamp(store.root / "outbox" / "s000001.json")))
    assert all(stamp is not None for _, stamp in first)
    with store.writing():
        records.save(store, "outbox", [{"id": "o1", "sent_at": "2026-03-02"}])
    second = records.stamps(store, ["reviews", "outbox"])
    assert second[0] == first[0] and second[1] != first[1]


@pytest.mark.parametrize("folder", sorted(records.RECORD_FOLDERS))
def test_every_record_folder_saves_and_reads(store: Store, folder: str):
    table, when = layout.TABLES[folder]
    with store.writing():
        records.save(store, folder, [{"id": "x1", when: "2026-03-01"}])
    assert records.read_all(store, folder) == [{"id": "x1", when: "2026-03-01"}]
    assert table
