"""One data folder (agent/store/folder.py): private folders, the write lock, the schema,
what a killed run left behind, sync state and the first-import cut-off."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from filelock import FileLock

from agent.errors import StoreError, StoreLocked
from agent.store import Store
from agent.store import folder as store_folder
from agent.store.layout import SCHEMA_VERSION
from agent.store.memory import MemoryStore
from tests.store.contract import MARIA, OWNER_KEYS, inbound, png


def test_opening_makes_private_folders(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    for folder in ("store", "files", "tmp", "store/messages", "store/deliverables"):
        assert os.stat(tmp_path / "data" / folder).st_mode & 0o777 == 0o700, folder
    assert store.root == tmp_path / "data" / "store"


def test_reading_a_folder_without_a_store_says_to_sync(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as err:
        Store(tmp_path / "empty", create=False)
    assert str(err.value) == f"{tmp_path / 'empty'} holds no Retainer store yet; run `retainer sync`"
    assert not (tmp_path / "empty").exists()
    Store(tmp_path / "empty")
    Store(tmp_path / "empty", create=False)  # there is one now


def test_a_store_of_a_newer_retainer_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    with store.writing():
        pass
    assert store.meta.get("meta", "schema", key="name") == {"name": "schema",
                                                            "version": SCHEMA_VERSION}
    store.meta.upsert_many("meta", [{"name": "schema", "version": SCHEMA_VERSION + 1}], "name")
    again = Store(tmp_path / "data")
    with pytest.raises(StoreError) as err, again.writing():
        pass
    assert str(err.value) == (f"{tmp_path / 'data'} was written by a newer Retainer "
                              f"(schema {SCHEMA_VERSION + 1}); upgrade Retainer")
    with _released(again):  # the refusal let go of the write lock
        pass


class _released:
    """Take and drop the write lock from another handle: it must be free."""

    def __init__(self, store: Store) -> None:
        self.lock = FileLock(str(store.data_dir / "store.lock"), timeout=0)

    def __enter__(self) -> None:
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def test_an_older_schema_number_is_brought_up_to_date(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    store.meta.upsert_many("meta", [{"name": "schema", "version": SCHEMA_VERSION - 1}], "name")
    with Store(tmp_path / "data").writing():
        pass
    assert Store(tmp_path / "data").meta.get("meta", "schema", key="name") == \
        {"name": "schema", "version": SCHEMA_VERSION}


def test_a_busy_store_says_who_holds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    monkeypatch.setattr(store_folder, "LOCK_TIMEOUT", 0.2)
    store = Store(tmp_path / "data")
    with store.writing():
        pass
    other = FileLock(str(tmp_path / "data" / "store.lock"))
    with other, pytest.raises(StoreLocked) as err, store.writing():
        pass
    assert str(err.value) == (f"another Retainer process has been writing to {tmp_path / 'data'}"
                              " for 0 s; wait for it to finish, or stop it")
    with store.writing():  # free again
        pass
    assert os.stat(tmp_path / "data" / "store.lock").st_mode & 0o777 == 0o600


def test_what_a_killed_run_left_is_removed_once(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    store = Store(tmp_path / "data")
    root = store.root
    left = [root / ".tmp-roster.json", root / "messages" / ".tmp-s000001.json",
            root / "index" / ".tmp-x", root / "index" / "views" / ".tmp-v",
            root / "index" / "deliverables" / ".tmp-s000001.json",  # a summary's
            root / "reviews" / ".tmp-s000001.json", root / "index" / "reviews" / ".tmp-s",
            store.tmp_dir / ".tmp-abc.png", store.tmp_dir / "partial"]
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    kept = [root / "messages" / "notes.txt", store.tmp_dir / "source"]
    kept[0].write_bytes(b"mine")
    kept[1].mkdir()
    with caplog.at_level(logging.INFO, logger="retainer.store"), store.writing():
        pass
    assert [p for p in left if p.exists()] == []
    assert all(p.exists() for p in kept)
    assert f"removed {len(left)} temporary files left by an interrupted run" in caplog.messages
    caplog.clear()
    (store.tmp_dir / "later").write_bytes(b"a sync's download in progress")
    with caplog.at_level(logging.INFO, logger="retainer.store"), store.writing():
        pass
    assert (store.tmp_dir / "later").exists() and "removed" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="retainer.store"), \
            Store(tmp_path / "data").writing():
        pass  # the next process cleans up
    assert "removed 1 temporary files" in caplog.text and not (store.tmp_dir / "later").exists()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="retainer.store"), \
            Store(tmp_path / "data").writing():
        pass  # nothing left: nothing said
    assert "removed" not in caplog.text


def test_a_scratch_folder_starts_empty(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    scratch = store.scratch_dir("my/inbox")
    assert scratch.parent == store.tmp_dir and "/" not in scratch.name
    (scratch / "file").write_bytes(b"x")
    (scratch / "sub").mkdir()
    (scratch / "sub" / "deep").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"x")
    (scratch / "link").symlink_to(outside)
    assert store.scratch_dir("my/inbox") == scratch
    assert list(scratch.iterdir()) == []
    assert (outside / "keep").exists()  # a link is removed, not followed
    assert os.stat(scratch).st_mode & 0o777 == 0o700
    source = store.source_dir("my/inbox")
    assert source.parent == store.data_dir / "sources" and source.is_dir()


def test_sync_state_is_merged_and_json_safe(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    when = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    with store.writing():
        store.update_source_state("inbox", cursor={"uid": 1}, last_ok=when)
        store.update_source_state("inbox", cursor={"uid": 2})
        store.update_source_state("other", failures=1)
    assert Store(tmp_path / "data").source_state("inbox") == {
        "source": "inbox", "cursor": {"uid": 2}, "last_ok": "2026-03-02T09:00:00Z"}
    assert store.source_states() == {
        "inbox": {"source": "inbox", "cursor": {"uid": 2}, "last_ok": "2026-03-02T09:00:00Z"},
        "other": {"source": "other", "failures": 1}}


@pytest.mark.parametrize("factory", [Store, MemoryStore], ids=["disk", "memory"])
def test_the_first_sync_day_is_recorded_once(tmp_path: Path, factory: type[Store]) -> None:
    store = factory(tmp_path / "data")
    assert store.first_sync_day() is None and store.review_since() == ""
    with store.writing():
        assert store.record_first_sync_day("2026-03-02") == "2026-03-02"
        assert store.record_first_sync_day("2026-04-01") == "2026-03-02"
        store.set_review_since("2026-03-02")
        before = store.fingerprint()
        store.set_review_since("2026-03-02")  # unchanged: nothing written
        assert store.fingerprint() == before
        store.set_review_since("")
    assert (store.first_sync_day(), store.review_since()) == ("2026-03-02", "")
    synced_before = factory(tmp_path / "old")
    with synced_before.writing():
        synced_before.update_source_state("inbox", cursor={"uid": 3})
        assert synced_before.record_first_sync_day("2026-03-02") == ""
    assert synced_before.first_sync_day() == ""


def test_the_fingerprint_follows_the_data_files_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    with store.writing():
        store.add_contractor("Maria Lopez", [MARIA])
    with store.writing():
        store.commit_page("inbox", "imap", [inbound("a", 1, files=[png("a.png", b"a")])],
                          owner_keys=OWNER_KEYS)
    prints = store.fingerprint()
    names = sorted(Path(p).relative_to(store.root).as_posix() for p, _, _ in prints)
    assert "roster.json" in names and "meta.json" in names
    assert any(n.startswith("messages/s") and n.endswith(".json") for n in names)
    assert any(n.startswith("deliverables/s") for n in names)
    assert not any(n.startswith(("index/", "cache/", ".")) for n in names)
    assert list(prints) == sorted(prints)
    for path, mtime, size in prints:
        st = os.stat(path)
        assert (mtime, size) == (st.st_mtime_ns, st.st_size)
    (store.root / "cache").mkdir(exist_ok=True)
    (store.root / "cache" / "x.json").write_bytes(b"{}")
    (store.root / ".counts.json").write_bytes(b"{}")
    (store.root / "notes.txt").write_bytes(b"not data")
    assert store.fingerprint() == prints
    with store.writing():
        store.update_source_state("inbox", cursor={"uid": 9})
    assert store.fingerprint() != prints


def test_each_source_has_its_own_scratch_folder(tmp_path: Path) -> None:
    """Two sources sync at once (each under its own sync lock): starting one must not
    empty the other's downloads in progress."""
    store = Store(tmp_path / "data")
    inbox = store.scratch_dir("inbox")
    (inbox / "part-1").write_bytes(b"downloading")
    other = store.scratch_dir("upwork")
    assert other != inbox and other.parent == inbox.parent == store.tmp_dir
    assert (inbox / "part-1").read_bytes() == b"downloading"


def test_what_another_process_recorded_in_meta_is_read(tmp_path: Path) -> None:
    """A long-running process (the daemon) reads the cut-off days and sync state that
    another one (a `retainer` command) wrote after it opened the store."""
    reader = Store(tmp_path / "data")
    with reader.writing():
        pass
    assert (reader.review_since(), reader.first_sync_day()) == ("", None)
    with Store(tmp_path / "data").writing() as writer:
        writer.set_review_since("2026-03-01")
    assert reader.review_since() == "2026-03-01"
    with Store(tmp_path / "data").writing() as writer:
        writer.record_first_sync_day("2026-03-02")
    assert reader.first_sync_day() == "2026-03-02"
    with Store(tmp_path / "data").writing() as writer:
        writer.update_source_state("inbox", cursor={"uid": 4})
    assert reader.source_state("inbox") == {"source": "inbox", "cursor": {"uid": 4}}
    with Store(tmp_path / "data").writing() as writer:
        writer.set_review_since("2026-03-04")
    with reader.writing():  # checks the schema in the meta.json replaced since
        reader.set_review_since("2026-03-05")
    assert Store(tmp_path / "data").review_since() == "2026-03-05"


def test_opening_a_current_store_takes_no_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    """A read command opens the store while a sync holds the write lock: it must not
    wait for it (only an older layout is upgraded under the lock, once)."""
    monkeypatch.setattr(store_folder, "LOCK_TIMEOUT", 0.2)
    with Store(tmp_path / "data").writing():
        pass
    with FileLock(str(tmp_path / "data" / "store.lock")):  # a sync writing
        store = Store(tmp_path / "data", create=False)
        assert store.first_sync_day() is None and store.month_names() == []


def test_the_quick_check_record_is_replaced_atomically_without_fsync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record `retainer sync`'s quick check reads is derived and checks itself: it is
    replaced whole (never half-written) but not fsynced, which would cost every sync."""
    from tests.support import fsspy

    store = Store(tmp_path / "data")
    with store.writing():
        spy = fsspy.install(monkeypatch)
        store.save_quick_record("inbox", {"cursor": "abc"})
    path = str((tmp_path / "data" / "cache" / "quick-sync.json").resolve())
    assert [c.kind for c in spy.calls if path in (c.dest, c.path)] == ["replace"]
    assert not [c for c in spy.calls if c.kind.startswith("fsync")
                and c.path.startswith(str((tmp_path / "data" / "cache").resolve()))]
    assert store.quick_record("inbox") == {"cursor": "abc"}


def test_a_reader_sees_messages_another_process_stored_since(tmp_path: Path) -> None:
    """A long-running reader (the web app) that looked a message up once must find
    what a sync in another process stored afterwards: reads outside writing() check
    the catalog against the files."""
    with Store(tmp_path / "data").writing() as setup:
        setup.add_contractor("Maria Lopez", [MARIA])
    reader = Store(tmp_path / "data")
    assert reader.stored_message("nothing") is None  # the catalogs are loaded now
    with Store(tmp_path / "data").writing() as writer:
        writer.commit_page("inbox", "imap", [inbound("a", 1, files=[png("a.png", b"a")])],
                           owner_keys=OWNER_KEYS)
    [message] = Store(tmp_path / "data").messages()
    [work] = Store(tmp_path / "data").deliverables()
    assert reader.stored_message(message["id"]) == message
    assert reader.deliverable(work["id"])["id"] == work["id"]


def test_the_quick_check_record_survives_a_foreign_or_broken_file(tmp_path: Path) -> None:
    """quick_record() answers None for anything it did not write (another format, a
    broken or hand-edited file) and save_quick_record() starts such a file afresh; one
    source's record is kept when another's is saved or forgotten."""
    store = Store(tmp_path / "data")
    path = tmp_path / "data" / "cache" / "quick-sync.json"
    with pytest.raises(StoreError, match=r"^save_quick_record\(\) outside writing\(\)$"):
        store.save_quick_record("inbox", {"cursor": "abc"})
    assert not path.exists() and store.quick_record("inbox") is None
    path.parent.mkdir(parents=True)
    for content in (b"not json", b"[1, 2]", b'"text"',
                    b'{"format": 2, "sources": {"inbox": {"cursor": "old"}}}',
                    b'{"format": 1, "sources": {"inbox": "not a record"}}',
                    b'{"format": 1, "sources": null}', b'{"format": 1, "sources": "text"}',
                    b'{"format": 1, "sources": [1]}'):
        path.write_bytes(content)
        assert store.quick_record("inbox") is None, content
        with store.writing():
            store.save_quick_record("upwork", {"cursor": "u"})
        assert store.quick_record("upwork") == {"cursor": "u"}, content
        assert store.quick_record("inbox") is None, content  # not carried over
    with store.writing():
        store.save_quick_record("inbox", {"cursor": "i", "at": datetime(2026, 3, 2, tzinfo=UTC)})
        store.save_quick_record("upwork", {"cursor": "u2"})
    assert store.quick_record("inbox") == {"cursor": "i", "at": "2026-03-02T00:00:00Z"}
    assert store.quick_record("upwork") == {"cursor": "u2"}
    written = path.stat()
    with store.writing():
        store.save_quick_record("nobody", None)  # nothing to forget: the file is not written
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    with store.writing():
        store.save_quick_record("inbox", None)
    assert store.quick_record("inbox") is None and store.quick_record("upwork") == {"cursor": "u2"}
    assert json.loads(path.read_bytes()) == {"format": 1, "sources": {"upwork": {"cursor": "u2"}}}


def test_the_summaries_of_record_folders_live_under_index(tmp_path: Path) -> None:
    """The summaries of every shard folder, records too, are derived files under
    ``index/``: left out of the fingerprint, rebuilt when lost, cleaned up there."""
    from tests.store.contract import one_reviewed_deliverable

    store = Store(tmp_path / "data")
    one_reviewed_deliverable(store)
    assert sorted(p.name for p in store.root.iterdir()) == [
        "deliverables", "index", "messages", "meta.json", "reviews", "roster.json"]
    assert [p.name for p in (store.root / "reviews").iterdir()] == ["s000001.json"]
    assert "s000001.json" in [p.name for p in (store.root / "index" / "reviews").iterdir()]
    names = {Path(p).relative_to(store.root).parts[0] for p, _, _ in store.fingerprint()}
    assert names == {"deliverables", "messages", "meta.json", "reviews", "roster.json"}


def test_each_source_keeps_its_own_plugin_state(tmp_path: Path) -> None:
    """Two sources of one plugin keep their per-item state apart, under their own
    ``sources/<name>`` folder: one's commit never shows in, or overwrites, the other's."""
    store = Store(tmp_path / "data")
    with store.writing():
        store.plugin_state("inbox").commit({"a": 1})
        store.plugin_state("upwork").commit({"a": 2, "b": 3})
    reopened = Store(tmp_path / "data")
    assert reopened.plugin_state("inbox").state == {"a": 1}
    assert reopened.plugin_state("upwork").state == {"a": 2, "b": 3}
    assert reopened.plugin_state("inbox").path.parent == store.source_dir("inbox") == \
        tmp_path / "data" / "sources" / "inbox"
