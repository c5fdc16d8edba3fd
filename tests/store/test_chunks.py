"""Chunked caches of per-shard entries (agent/store/chunks.py), over real files: what a
chunk holds when read back, which chunks a save writes or removes, and that it is
derived data (no fsync, a read-only or damaged folder only makes the next read slower)."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from agent.files import TMP_PREFIX
from agent.store.chunks import ChunkedCache, chunk_name
from tests.support import fsspy


def test_a_shards_entry_goes_to_the_chunk_of_its_number():
    assert [chunk_name(s, 3) for s in ("s000001", "s000002", "s000003", "s000007")] == [
        "c00000", "c00000", "c00001", "c00002"]
    assert chunk_name("s1234567", 1000, prefix="t") == "t01234"
    assert chunk_name("2024-05", 3) == "c00000"  # not a shard name: number 0


def write(folder: Path, name: str, doc: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_bytes(orjson.dumps(doc))


@pytest.mark.parametrize(("stored", "found"), [
    ({"version": 4, "entries": {"s000001": [1, 2]}}, {"s000001": [1, 2]}),
    ({"version": 3, "entries": {"s000001": [1, 2]}}, {}),  # another version
    ({"version": 4, "entries": [1, 2]}, {}),
    ({"version": 4}, {}),
    ([4, {"s000001": 1}], {}),
    (None, {}),  # no file
    ("damaged", {}),
])
def test_a_chunk_is_read_as_stored_or_empty(tmp_path, stored, found):
    folder = tmp_path / "cache"
    if stored == "damaged":
        folder.mkdir()
        (folder / "c00000.json").write_bytes(b'{"version": 4, "entr')
    elif stored is not None:
        write(folder, "c00000", stored)
    cache = ChunkedCache(folder, 4)
    assert (cache.folder, cache.version) == (folder, 4)
    assert cache.chunk("c00000") == found
    write(folder, "c00000", {"version": 4, "entries": {"other": 1}})
    assert cache.chunk("c00000") == found  # read once per process; the caller checks stamps


def test_a_memory_cache_reads_and_writes_nothing(tmp_path, monkeypatch):
    cache = ChunkedCache(None, 1)
    spy = fsspy.install(monkeypatch)
    cache.save({"c00000": {"s000001": 1}}, {"c00000"})
    assert cache.chunk("c00000") == {} and spy.calls == []
    assert list(tmp_path.iterdir()) == []


def stamps(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_a_save_writes_the_chunks_that_changed_and_removes_the_ones_not_named(
        tmp_path, monkeypatch):
    folder = tmp_path / "cache" / "threads"
    write(folder, "c00000", {"version": 2, "entries": {"s000001": "a", "s000002": "b"}})
    write(folder, "c00001", {"version": 2, "entries": {"s000003": "c"}})
    write(folder, "c00002", {"version": 2, "entries": {"s000005": "e"}})
    (folder / f"{TMP_PREFIX}left").write_bytes(b"half a chunk")  # a killed write's temp
    (folder / "notes.txt").write_bytes(b"not a chunk")
    cache = ChunkedCache(folder, 2)
    assert cache.chunk("c00002") == {"s000005": "e"}  # read before it is removed
    before = stamps(folder)
    spy = fsspy.install(monkeypatch)
    cache.save({"c00000": {"s000001": "a", "s000002": "changed"},  # same shards: kept
                "c00001": {"s000003": "c", "s000004": "d"},  # a new shard: written
                "c00003": {"s000007": "g"}},  # a new chunk: written
               set())
    after = stamps(folder)
    assert sorted(after) == ["c00000.json", "c00001.json", "c00003.json", "notes.txt"]
    assert after["c00000.json"] == before["c00000.json"]
    assert after["c00001.json"] != before["c00001.json"]
    assert orjson.loads((folder / "c00001.json").read_bytes()) == {
        "version": 2, "entries": {"s000003": "c", "s000004": "d"}}
    assert orjson.loads((folder / "c00003.json").read_bytes()) == {
        "version": 2, "entries": {"s000007": "g"}}
    assert all((folder / n).stat().st_mode & 0o777 == 0o600 for n in ("c00001.json",
                                                                      "c00003.json"))
    assert [c.kind for c in spy.calls] == ["replace", "replace"]  # derived: no fsync
    # what it wrote and removed is what it answers from now on, without reading again
    for name in ("c00001", "c00003"):
        (folder / f"{name}.json").unlink()
    assert cache.chunk("c00001") == {"s000003": "c", "s000004": "d"}
    assert cache.chunk("c00003") == {"s000007": "g"}
    assert cache.chunk("c00002") == {}
    # named as rebuilt: written even with the same shards
    cache.save({"c00000": {"s000001": "a", "s000002": "changed"}}, {"c00000"})
    assert orjson.loads((folder / "c00000.json").read_bytes())["entries"]["s000002"] == "changed"
    assert sorted(stamps(folder)) == ["c00000.json", "notes.txt"]


def test_nothing_changed_writes_nothing(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    write(folder, "c00000", {"version": 1, "entries": {"s000001": 1}})
    (folder / f"{TMP_PREFIX}left").write_bytes(b"x")
    cache = ChunkedCache(folder, 1)
    spy = fsspy.install(monkeypatch)
    cache.save({"c00000": {"s000001": 1}}, set())
    assert spy.calls == [] and (folder / f"{TMP_PREFIX}left").exists()


def test_a_save_makes_its_private_folder(tmp_path):
    folder = tmp_path / "cache" / "counts"
    cache = ChunkedCache(folder, 1)
    cache.save({"c00000": {"s000001": 1}}, set())
    assert folder.stat().st_mode & 0o777 == 0o700
    assert orjson.loads((folder / "c00000.json").read_bytes()) == {
        "version": 1, "entries": {"s000001": 1}}


def test_a_failing_disk_only_costs_the_next_read(tmp_path, monkeypatch):
    """A write that fails (here the rename, as on a full or read-only disk) is not an
    error: the chunk is not kept, in memory either, and is rebuilt next time."""
    folder = tmp_path / "cache"
    write(folder, "c00000", {"version": 1, "entries": {"s000001": 1}})
    cache = ChunkedCache(folder, 1)

    def refuse(src: object, dst: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(os, "replace", refuse)
    cache.save({"c00000": {"s000001": 1, "s000002": 2}}, set())
    assert cache.chunk("c00000") == {"s000001": 1}
