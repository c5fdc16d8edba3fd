"""The store's crash and disk-full promises, checked on the real filesystem.

A write is temp file -> fsync -> rename -> folder fsync; a page's records are committed
before its cursor; a write that fails (disk full) leaves memory and disk agreeing on the
previous state, and the next sync stores what was missing, nothing twice.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.errors import StoreError
from agent.models import Attachment, Identity, Message
from agent.store import Store
from agent.store.storage import (
    AtomicStorage,
    Shard,
    batched_dir_sync,
    file_stamp,
    iso,
    json_safe,
    shape_problem,
)
from tests.support import fsspy

OWNER = frozenset({"email:owner@example.com"})
WHEN = datetime(2026, 3, 4, 9, 30, tzinfo=UTC)


def msg(remote_id: str, day: int = 4, sender: str = "maria@example.com") -> Message:
    return Message(remote_id=remote_id, sent_at=WHEN.replace(day=day),
                   sender=Identity("email", sender, name="Maria"),
                   recipients=(Identity("email", "owner@example.com"),),
                   subject=f"logo {remote_id}", thread_remote_id="<t@x>",
                   attachments=(Attachment(f"{remote_id.strip('<>@x')}.png",
                                           data=f"png {remote_id}".encode(), remote_id="1"),))


PAGE_1 = [msg("<a@x>"), msg("<b@x>", day=5)]
PAGE_2 = [msg("<c@x>", day=6), msg("<d@x>", day=7), msg("<e@x>", sender="new@x.example")]


def commit_with_cursor(store: Store, records, cursor) -> None:
    """What the sync engine does for one page: records, then the cursor, under the lock."""
    with store.writing():
        store.commit_page("inbox", "imap", records, owner_keys=OWNER)
        store.update_source_state("inbox", cursor=cursor)


def snapshot(store: Store) -> dict:
    return {
        "messages": sorted(store.messages(), key=lambda d: d["id"]),
        "deliverables": sorted(store.deliverables(), key=lambda d: d["id"]),
        "threads": store.threads(),
        "candidates": store.candidates(),
        "contractors": store.contractors(),
        "state": store.source_state("inbox"),
    }


def fresh_store(tmp_path: Path, with_roster: bool = True) -> Store:
    store = Store(tmp_path / "data")
    if with_roster:
        with store.writing():
            store.add_contractor("Maria Lopez", [Identity("email", "maria@example.com")])
    return store


def test_page_writes_are_atomic_and_folders_synced_once(tmp_path, monkeypatch):
    store = fresh_store(tmp_path)
    spy = fsspy.install(monkeypatch)
    with store.writing():
        store.commit_page("inbox", "imap", PAGE_1, owner_keys=OWNER)
    index = os.path.realpath(store.root / "index")
    # the index under store/index/ is derived data, rebuilt from the shards, written
    # without fsync on purpose (agent/store/layout.py); every other file is durable
    renames = [c for c in spy.calls if c.kind == "replace" and not c.dest.startswith(index)]
    assert renames, "a page writes its shards"
    synced_files = {c.path for c in spy.calls if c.kind == "fsync_file"}
    root, scratch = os.path.realpath(store.root), os.path.realpath(store.tmp_dir)
    for rename in renames:
        if rename.dest.startswith(root):  # a shard: its temp file sits in its own folder
            assert os.path.dirname(rename.path) == os.path.dirname(rename.dest)
        else:  # a file from a deliverable: written in the data folder's tmp/ (same filesystem)
            assert os.path.dirname(rename.path) == scratch
        assert os.path.basename(rename.path).startswith(".tmp-")
        assert rename.path in synced_files  # data fsynced before the rename
    # each touched folder is fsynced after its last rename, once per page (batched)
    dir_syncs = spy.dir_fsyncs()
    assert len(dir_syncs) == len(set(dir_syncs))
    for folder in {os.path.dirname(r.dest) for r in renames}:
        assert folder in dir_syncs
        last_rename = max(i for i, c in enumerate(spy.calls)
                          if c.kind == "replace" and os.path.dirname(c.dest) == folder)
        assert spy.calls.index(next(c for c in spy.calls
                                    if c.kind == "fsync_dir" and c.path == folder)) > last_rename


def test_batched_dir_sync_defers_and_nests(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    spy = fsspy.install(monkeypatch)
    with batched_dir_sync():
        AtomicStorage(a / "1.json").write({"t": {}})
        AtomicStorage(a / "2.json").write({"t": {}})
        with batched_dir_sync():
            AtomicStorage(b / "1.json").write({"t": {}})
        assert spy.dir_fsyncs() == []  # the inner block leaves the folders to the outer one
        assert spy.kinds().count("fsync_file") == 3
    assert sorted(spy.dir_fsyncs()) == sorted([os.path.realpath(a), os.path.realpath(b)])
    spy.calls.clear()
    AtomicStorage(a / "3.json").write({"t": {}})  # outside a block: at once
    assert spy.kinds() == ["fsync_file", "replace", "fsync_dir"]


def test_batched_dir_sync_still_syncs_after_an_error(tmp_path, monkeypatch):
    spy = fsspy.install(monkeypatch)
    with pytest.raises(RuntimeError), batched_dir_sync():
        AtomicStorage(tmp_path / "1.json").write({"t": {}})
        raise RuntimeError("connector bug")
    assert spy.dir_fsyncs() == [os.path.realpath(tmp_path)]


def test_disk_full_at_any_write_of_a_page_loses_nothing(tmp_path, monkeypatch):
    """Fail each file write of the second page in turn, as a full disk would."""
    probe = fresh_store(tmp_path / "probe")
    commit_with_cursor(probe, PAGE_1, {"n": 1})
    spy = fsspy.install(monkeypatch)
    commit_with_cursor(probe, PAGE_2, {"n": 2})
    writes = spy.file_fsyncs
    monkeypatch.undo()
    assert writes >= 4  # blobs, messages, deliverables, threads, roster, cursor
    expected = snapshot(probe)

    for at in range(writes):
        store = fresh_store(tmp_path / f"run{at}")
        commit_with_cursor(store, PAGE_1, {"n": 1})
        spy = fsspy.install(monkeypatch)
        spy.fail_fsync_at = at
        with pytest.raises(StoreError, match="free some disk space"):
            commit_with_cursor(store, PAGE_2, {"n": 2})
        monkeypatch.undo()
        assert store.source_state("inbox")["cursor"] == {"n": 1}, at  # not moved
        on_disk = Store(store.data_dir)
        assert snapshot(store) == snapshot(on_disk), at  # memory is what the disk holds
        for doc in store.deliverables():
            assert Path(doc["path"]).is_file(), at  # no record points at a missing file
        leftovers = [*store.root.rglob(".tmp-*"), *store.tmp_dir.rglob("*")]
        assert leftovers == [], at  # no half-written file left behind
        commit_with_cursor(store, PAGE_2, {"n": 2})  # the page is fetched again
        again = snapshot(store)
        for part in ("messages", "deliverables", "threads", "candidates"):
            assert strip_times(again[part]) == strip_times(expected[part]), (at, part)
        assert again["state"]["cursor"] == {"n": 2}
        assert snapshot(Store(store.data_dir)) == again


def strip_times(docs: list[dict]) -> list[dict]:
    volatile = {"path", "created_at", "stored_at", "first_seen_at", "updated_at",
                "status_changed_at", "fetched_at"}
    return [{k: v for k, v in d.items() if k not in volatile} for d in docs]


def test_failed_write_reloads_the_previous_state(tmp_path, monkeypatch):
    path = tmp_path / "s.json"
    storage = AtomicStorage(path)
    storage.write({"t": {"1": {"v": 1}}})
    data = storage.read()
    assert data is not None
    data["t"]["2"] = {"v": 2}  # TinyDB changes the dict it read, then writes it
    spy = fsspy.install(monkeypatch)
    spy.fail_fsync_at = 0
    with pytest.raises(StoreError) as err:
        storage.write(data)
    assert str(err.value) == (f"no space left in {tmp_path} (writing s.json); free some "
                              "disk space: the next sync goes on from the last committed page")
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert storage.read() == {"t": {"1": {"v": 1}}} == json.loads(path.read_bytes())
    # in a data folder the message names the data folder, whatever the file's depth
    shard = tmp_path / "data" / "store" / "messages" / "s000001.json"
    shard.parent.mkdir(parents=True)
    spy.fail_fsync_at = spy.file_fsyncs
    with pytest.raises(StoreError) as err:
        AtomicStorage(shard).write({"t": {}})
    assert str(err.value).startswith(f"no space left in {tmp_path / 'data'} (writing s000001")


def test_shard_after_failed_upsert_matches_disk(tmp_path, monkeypatch):
    shard = Shard(tmp_path / "s.json")
    shard.upsert_many("t", [{"id": "a", "v": 1}])
    spy = fsspy.install(monkeypatch)
    spy.fail_fsync_at = 0
    with pytest.raises(StoreError):
        shard.upsert_many("t", [{"id": "b", "v": 1}, {"id": "a", "v": 2}])
    monkeypatch.undo()
    assert shard.docs("t") == [{"id": "a", "v": 1}] == Shard(tmp_path / "s.json").docs("t")
    assert shard.get("t", "b") is None
    assert shard.upsert_many("t", [{"id": "b", "v": 1}, {"id": "a", "v": 2}]) == (1, 1)
    assert sorted(d["id"] for d in Shard(tmp_path / "s.json").docs("t")) == ["a", "b"]


def test_storage_read_states(tmp_path):
    path = tmp_path / "s.json"
    assert AtomicStorage(path).read() is None and file_stamp(path) is None
    path.write_bytes(b"")
    with pytest.raises(StoreError) as err:
        AtomicStorage(path).read()
    assert str(err.value) == (f"{path} is empty; it was not written by Retainer. "
                              "Move it aside and run `retainer sync` to fetch again.")
    path.write_bytes(b'{"t": ')
    with pytest.raises(StoreError) as err:
        AtomicStorage(path).read()
    text = str(err.value)
    assert text.startswith(f"{path} is not valid JSON (") and err.value.__cause__ is None
    assert text.endswith("); Retainer never leaves files half-written, so something else "
                         "changed it. Move it aside (mv it to a .corrupt name) and run "
                         "`retainer sync` to fetch again.")
    assert path.read_bytes() == b'{"t": '  # refused, not replaced
    path.write_bytes(b'{"t": {"1": {"id": "x"}}}')
    storage = AtomicStorage(path)
    assert storage.read() == {"t": {"1": {"id": "x"}}}
    st = os.stat(path)
    assert storage.stamp == file_stamp(path) == (st.st_ino, st.st_mtime_ns, st.st_size)
    storage.close()
    assert storage.data is None


def test_reads_come_from_memory_until_the_file_is_replaced(tmp_path):
    path = tmp_path / "s.json"
    mine, other = Shard(path), Shard(path)
    mine.upsert_many("t", [{"id": "a", "v": 1}])
    storage = mine.storage
    mine.upsert_many("t", [{"id": "a", "v": 1, "w": 0}])
    mine.upsert_many("t", [{"id": "a", "v": 1}])
    assert mine.storage is storage  # its own writes are not parsed again from the file
    # right after its own write, same size, same inode, same mtime: nothing a reader can
    # tell from the stamp, so the writer keeps what it wrote
    stat_before = os.stat(path)
    path.write_bytes(path.read_bytes().replace(b'"v":1', b'"v":7'))
    os.utime(path, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns))
    assert mine.get("t", "a") == {"id": "a", "v": 1}  # served from memory
    assert other.get("t", "a") == {"id": "a", "v": 7}  # a fresh reader reads the file
    other.upsert_many("t", [{"id": "b", "v": 2}])  # another process replaces the file
    assert mine.get("t", "b") == {"id": "b", "v": 2}  # so this one reloads
    assert [d["id"] for d in mine.docs("t")] == ["a", "b"]
    mine.drop_cache()
    assert mine.get("t", "a") == {"id": "a", "v": 7}


def test_upsert_many_counts_merges_duplicates_and_skips_unchanged(tmp_path, monkeypatch):
    path = tmp_path / "s.json"
    shard = Shard(path)
    page = [{"id": "a", "v": 1, "x": 1}, {"id": "b", "v": 1}, {"id": "a", "v": 2}]
    assert shard.upsert_many("t", page) == (2, 0)  # a page with a duplicate id
    assert Shard(path).key_map("t") == {"a": 1, "b": 2}  # by "id", read from the file
    assert shard.docs("t") == [{"id": "a", "v": 2, "x": 1}, {"id": "b", "v": 1}]
    assert shard.key_map("t") == {"a": 1, "b": 2}
    table = Shard(path).table("t")
    assert table.name == "t" and len(table) == 2
    spy = fsspy.install(monkeypatch)
    assert shard.upsert_many("t", [{"id": "b", "v": 1}]) == (0, 0)
    assert spy.calls == []  # unchanged documents cost no write
    assert shard.upsert_many("t", [{"id": "b", "v": 3}, {"id": "c", "v": 1}]) == (1, 1)
    assert spy.kinds() == ["fsync_file", "replace", "fsync_dir"]  # one write for both
    fresh = Shard(path)
    assert fresh.get("t", "b") == {"id": "b", "v": 3} and fresh.get("t", "c") == {"id": "c", "v": 1}
    assert fresh.key_map("t") == {"a": 1, "b": 2, "c": 3}
    by_name = Shard(tmp_path / "n.json")
    assert by_name.upsert_many("m", [{"name": "x", "v": 1}, {"name": "y"}], key="name") == (2, 0)
    assert by_name.get("m", "x", key="name") == {"name": "x", "v": 1}


def test_remove_forgets_ids(tmp_path):
    path = tmp_path / "s.json"
    shard = Shard(path)
    shard.upsert_many("t", [{"id": "a"}, {"id": "b"}, {"id": "c"}])
    shard.remove("t", ["a", "zzz", "c"])
    assert shard.get("t", "a") is None and shard.get("t", "c") is None
    assert [d["id"] for d in Shard(path).docs("t")] == ["b"]
    assert shard.upsert_many("t", [{"id": "a"}]) == (1, 0)  # a removed id can come back
    shard.remove("t", ["nothing"])
    assert sorted(d["id"] for d in Shard(path).docs("t")) == ["a", "b"]
    assert shard.storage.path == path
    Shard(path).remove("t", ["b"])  # a fresh reader, no cached keys
    assert [d["id"] for d in Shard(path).docs("t")] == ["a"]
    named = Shard(tmp_path / "n.json")
    named.upsert_many("m", [{"name": "x"}, {"name": "y"}], key="name")
    Shard(tmp_path / "n.json").remove("m", ["x"], key="name")
    assert Shard(tmp_path / "n.json").docs("m") == [{"name": "y"}]


def test_lone_surrogates_and_odd_types_are_stored_as_valid_json(tmp_path):
    path = tmp_path / "s.json"
    shard = Shard(path)
    broken = "caf\udce9 ok"  # an undecodable byte from a mail, as surrogateescape leaves it
    assert shard.upsert_many("t", [{"id": "a", "text": broken}]) == (1, 0)
    raw = path.read_bytes()
    raw.decode("utf-8")  # strict: valid UTF-8
    stored = json.loads(raw)["t"]["1"]["text"]
    assert stored.startswith("caf\ufffd") and stored.endswith("\ufffd ok")
    assert not any("\ud800" <= ch <= "\udfff" for ch in stored)
    assert Shard(path).get("t", "a") == {"id": "a", "text": stored}


def test_iso_is_utc_whatever_the_local_zone(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert iso(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"  # naive = UTC
        assert iso(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_json_safe_and_iso():
    naive = datetime(2026, 1, 2, 3, 4, 5)
    plus_two = datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert iso(None) is None
    assert iso(naive) == "2026-01-02T03:04:05Z"  # naive is taken as UTC
    assert iso(plus_two) == "2026-01-02T03:04:05Z"
    value = {1: (naive, Path("/x"), None, True, 2, 2.5, ["a\udcff"]), "k": {"n": plus_two}}
    assert json_safe(value) == {
        "1": ["2026-01-02T03:04:05Z", "/x", None, True, 2, 2.5, ["a\ufffd\ufffd\ufffd"]],
        "k": {"n": "2026-01-02T03:04:05Z"},
    }
    assert json_safe("plain") == "plain" and json_safe(False) is False


def test_upsert_tables_writes_several_tables_at_once(tmp_path, monkeypatch):
    path = tmp_path / "s.json"
    shard = Shard(path)
    first = shard.upsert_tables([
        ("a", [{"id": "1", "v": 1, "x": 1}, {"id": "2"}, {"id": "1", "v": 2}], "id"),
        ("b", [{"name": "n", "v": 1}], "name"),
    ])
    assert first == [(2, 0), (1, 0)]
    fresh = Shard(path)
    assert fresh.docs("a") == [{"id": "1", "v": 2, "x": 1}, {"id": "2"}]
    assert fresh.key_map("b", "name") == {"n": 1} and fresh.key_map("a") == {"1": 1, "2": 2}
    spy = fsspy.install(monkeypatch)
    assert shard.upsert_tables([("a", [{"id": "2"}], "id"), ("b", [], "name")]) == [(0, 0), (0, 0)]
    assert spy.calls == []  # nothing changed: no write
    again = shard.upsert_tables([("a", [{"id": "2", "v": 9}, {"id": "3"}], "id"),
                                 ("b", [{"name": "m"}], "name")])
    assert again == [(1, 1), (1, 0)]
    assert spy.kinds() == ["fsync_file", "replace", "fsync_dir"]  # one write for both tables
    fresh = Shard(path)
    assert fresh.get("a", "2") == {"id": "2", "v": 9} and fresh.get("a", "3") == {"id": "3"}
    assert fresh.get("b", "m", key="name") == {"name": "m"}
    assert shard.get("a", "3") == {"id": "3"} and shard.key_map("b", "name") == {"n": 1, "m": 2}
    assert fresh.key_map("a") == {"1": 1, "2": 2, "3": 3}
    # a fresh reader (no cached keys) matches by each table's own key
    reader = Shard(path)
    assert reader.upsert_tables([("b", [{"name": "n", "v": 2}], "name"),
                                 ("a", [{"id": "3", "v": 1}], "id")]) == [(0, 1), (0, 1)]
    assert Shard(path).docs("b") == [{"name": "n", "v": 2}, {"name": "m"}]


@pytest.mark.parametrize(("data", "problem"), [
    (None, "the file holds null, not an object of tables"),
    ([], "the file holds a list, not an object of tables"),
    ("x", "the file holds text, not an object of tables"),
    (True, "the file holds true/false, not an object of tables"),
    (5, "the file holds a number, not an object of tables"),
    (2.5, "the file holds a number, not an object of tables"),
    ({}, "the file holds an empty object; Retainer never writes one"),
    ({"t": []}, 'table "t" is a list, not an object'),
    ({"t": None}, 'table "t" is null, not an object'),
    ({"t": {"1": {"id": "a"}, "x" * 50: {}}}, f'table "t" has a document numbered {"x" * 40!r}'),
    ({"t": {"1": "doc"}}, 'document 1 of table "t" is text'),
    ({"t": {"1": {}, "2": {"id": 3}}}, ""),  # a table of its own: any key
    ({"sources": {"1": {"source": "a"}, "2": {"source": 7}}},
     'document 2 of table "sources" has no text "source"'),
    ({"messages": {"3": {"subject": "no id"}}}, 'document 3 of table "messages" has no text "id"'),
    ({"meta": {"1": {"name": "schema"}}, "t": {}}, ""),  # an empty table is fine
])
def test_shape_problem_names_what_is_wrong(data, problem):
    assert shape_problem(data) == problem


def test_a_file_of_the_wrong_shape_is_refused_with_the_problem(tmp_path):
    path = tmp_path / "roster.json"
    path.write_text('{"contractors": {"1": {"name": "no id"}}}')
    with pytest.raises(StoreError) as err:
        Shard(path).docs("contractors")
    assert str(err.value) == (
        f"{path} is valid JSON but not a Retainer store file (document 1 of table "
        '"contractors" has no text "id"); something else changed it. Move it aside (mv it '
        "to a .corrupt name) and run `retainer sync` to fetch again; nothing was read or "
        "written.")


def test_a_write_that_fails_for_another_reason_does_not_blame_the_disk_space(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    path = blocker / "s.json"
    storage = AtomicStorage(path)
    with pytest.raises(StoreError) as err:
        storage.write({"t": {}})
    assert str(err.value) == (
        f"could not write {path}: Not a directory; check that its folder can be written "
        "(permissions, a read-only or failing disk), then sync again")
    assert storage.data is None  # nothing kept in memory as if written


def test_a_file_that_cannot_be_stored_for_another_reason_says_so(tmp_path):
    from agent.store.blobs import Blobs

    (tmp_path / "tmp").mkdir()
    files = tmp_path / "files"
    files.write_text("a file where the files folder should be")
    blobs = Blobs(tmp_path, files, tmp_path / "tmp")
    with pytest.raises(StoreError) as err:  # put() writes the temp file, sync() names it
        blobs.put(Attachment("a.pdf", data=b"%PDF"), "a.pdf")
        blobs.sync()
    assert str(err.value) == (
        f"could not store 'a.pdf' in {files}: Not a directory; check that the folder can be "
        "written (permissions, a read-only or failing disk), then sync again")
    assert list((tmp_path / "tmp").iterdir()) == []  # no half file left
