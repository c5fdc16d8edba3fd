"""What only the memory store does (agent/store/memory.py): its fingerprint and roster stamp
count the writes of each table, as a file's mtime would tell them on disk."""

from __future__ import annotations

from pathlib import Path

from agent.store.memory import MemoryStore
from tests.store.contract import MARIA, OWNER_KEYS, SAM, inbound


def writes(store: MemoryStore) -> dict[str, int]:
    entries = store.fingerprint()
    assert all(third == 0 for _, _, third in entries)
    assert [name for name, _, _ in entries] == sorted(name for name, _, _ in entries)
    return {name: count for name, count, _ in entries}


def test_a_fresh_memory_store_has_written_nothing(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "data")
    assert store.roster_stamp() == [0]
    store.contractors(), store.messages(), store.deliverables()  # reads open shards
    assert set(writes(store).values()) <= {0}


def test_each_table_write_counts_once_and_a_write_that_changes_nothing_not_at_all(
        tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "data")
    with store.writing():
        store.add_contractor("Maria Lopez", [MARIA])
    (start,) = store.roster_stamp() or [0]
    assert start > 0 and writes(store)["roster.json"] == start
    with store.writing():
        store.update_contractor("Maria Lopez", notes="fast")  # one document, one write
    assert store.roster_stamp() == [start + 1]
    with store.writing():
        store.update_contractor("Maria Lopez", notes="fast")  # the same: nothing written
    assert store.roster_stamp() == [start + 1]
    assert writes(store)["roster.json"] == start + 1


def test_the_fingerprint_names_every_table_written(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "data")
    with store.writing():
        store.add_contractor("Sam Chen", [SAM])
        store.commit_page("inbox", "imap", [inbound("a", 1)], owner_keys=OWNER_KEYS)
    counts = writes(store)
    assert counts["roster.json"] >= 1
    messages = [name for name in counts if name.startswith("messages/")]
    assert messages and all(counts[name] >= 1 for name in messages)
    before = store.fingerprint()
    with store.writing():  # the same page again: no table changes
        store.commit_page("inbox", "imap", [inbound("a", 1)], owner_keys=OWNER_KEYS)
    assert {n: c for n, c in writes(store).items() if c} == \
        {n: c for n, c, _ in before if c}


def test_the_memory_store_writes_no_store_file(tmp_path: Path) -> None:
    """Its tables and their summaries stay in memory: nothing is written under
    ``store/`` (only the empty folders every store makes)."""
    from tests.store.contract import one_reviewed_deliverable

    store = MemoryStore(tmp_path / "data")
    one_reviewed_deliverable(store)
    assert store.deliverables()[0]["review_status"] == "approved"
    assert [p for p in (tmp_path / "data" / "store").rglob("*") if not p.is_dir()] == []
