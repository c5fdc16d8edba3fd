"""The maildir connector against real Maildirs on disk."""

from __future__ import annotations

import gzip
import json
import logging
import os
import time

import pytest

import plugins.maildir
import plugins.maildir.connector as mdc
from agent.errors import SourceError
from agent.plugins import make_plugin_host
from plugins.maildir.connector import discover_folders, message_key
from tests.plugins.maildir.util import connector, deliver, mail, make_maildir, sync


def test_plugin_registers_the_maildir_platform():
    host = make_plugin_host(entrypoints=False, extra=[plugins.maildir])
    platform = host.platform("maildir")
    assert platform.connector is mdc.MaildirConnector
    assert platform.settings is mdc.MaildirSettings
    assert platform.connector.reads_mail is True


def test_settings_expand_user_and_reject_unknown_keys(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert mdc.MaildirSettings(path="~/Mail").path == tmp_path / "Mail"
    with pytest.raises(ValueError, match="extra"):
        mdc.MaildirSettings(path="~/Mail", folder=["INBOX"])


@pytest.mark.parametrize(("name", "key"), [
    ("1767600000.M1P2.host", "1767600000.M1P2.host"),
    ("1767600000.M1P2.host:2,S", "1767600000.M1P2.host"),
    ("1767600000.M1P2.host:2,FRS", "1767600000.M1P2.host"),
    ("1767600000.123_4.host,U=57:2,S", "1767600000.123_4.host"),
    ("1767600000.123_4.host;2,S", "1767600000.123_4.host"),
    ("1767600000.123_4.host!2,", "1767600000.123_4.host"),
])
def test_message_key_drops_flags_and_mbsync_uid(name, key):
    assert message_key(name) == key


def test_initial_sync_reads_every_folder(tmp_path):
    root = make_maildir(tmp_path / "Mail")
    deliver(root, mail(1))
    deliver(root, mail(2), sub="cur", flags="S")
    deliver(root / ".Sent", mail(3, sender="owner@example.com"), sub="cur", flags="S")
    deliver(root / ".Clients.Acme", mail(4))
    deliver(root / "Archive" / "2025", mail(5))  # verbatim (mbsync SubFolders Verbatim)
    (root / ".notmuch").mkdir()  # not a maildir: ignored
    (root / "dovecot-uidlist").write_text("3 V1 N1\n")

    names = [f.name for f in discover_folders(root)]
    assert names == ["INBOX", "Archive/2025", "Clients.Acme", "Sent"]

    conn = connector(root, tmp_path)
    records, cursor = sync(conn, {})
    assert sorted(r.subject for r in records) == [f"Message {n}" for n in range(1, 6)]
    by_subject = {r.subject: r for r in records}
    assert by_subject["Message 3"].extra["folder"] == "Sent"
    assert by_subject["Message 2"].extra["flags"] == "S"
    assert by_subject["Message 5"].extra["folder"] == "Archive/2025"
    assert by_subject["Message 1"].sender.address == "maria@example.com"
    assert cursor["v"] == 1
    assert conn.stats.read == 5


def test_noop_sync_reads_no_file(tmp_path):
    root = make_maildir(tmp_path / "Mail")
    paths = [deliver(root, mail(n)) for n in range(10)]
    conn = connector(root, tmp_path)
    first, cursor = sync(conn, {})
    assert len(first) == 10
    # Rewrite every file already read: if the no-op sync opened any of them, a record
    # with the new Message-ID would come out.
    for path in paths:
        path.write_bytes(mail(99, msgid=f"<changed-{path.name}@example.com>"))
    pages = list(conn.fetch(cursor))
    assert pages == []
    assert conn.stats.read == 0
    assert conn.stats.listed == 10


def test_incremental_sync_after_new_delivery(tmp_path):
    root = make_maildir(tmp_path / "Mail")
    for n in range(3):
        deliver(root, mail(n))
    conn = connector(root, tmp_path)
    _, cursor = sync(conn, {})
    deliver(root, mail(10))
    deliver(root / ".Sent", mail(11, sender="owner@example.com"))
    records, cursor2 = sync(conn, cursor)
    assert sorted(r.subject for r in records) == ["Message 10", "Message 11"]
    assert conn.stats.read == 2
    assert sync(conn, cursor2)[0] == []


def test_move_from_new_to_cur_and_flag_changes_are_not_read_again(tmp_path):
    root = make_maildir(tmp_path / "Mail")
    delivered = [deliver(root, mail(n)) for n in range(4)]
    conn = connector(root, tmp_path)
    records, cursor = sync(conn, {})
    assert len(records) == 4
    # the mail client reads them: new/X -> cur/X:2,S, then flags change again
    for path in delivered:
        seen = root / "cur" / (path.name + ":2,S")
        path.rename(seen)
        seen.rename(root / "cur" / (path.name + ":2,FRS"))
    # mbsync adds ,U=<uid> once the server assigned one
    moved = root / "cur" / (delivered[0].name + ":2,FRS")
    moved.rename(root / "cur" / (delivered[0].name + ",U=7:2,FRS"))
    records, cursor = sync(conn, cursor)
    assert records == []
    assert conn.stats.read == 0
    deliver(root, mail(50))
    records, _ = sync(conn, cursor)
    assert [r.subject for r in records] == ["Message 50"]


def test_pages_carry_cursor_and_resume_after_a_crash(tmp_path):
    root = make_maildir(tmp_path / "Mail")
    for n in range(450):
        deliver(root, mail(n), name=f"1767600000.{n:05d}.host")
    conn = connector(root, tmp_path)
    pages = list(conn.fetch({}))
    assert [len(p.records) for p in pages] == [200, 200, 50]
    assert [p.progress for p in pages] == [(200, 450), (400, 450), (450, 450)]
    # the host stored page 1, committed its cursor, then died: resume from there
    records, cursor = sync(connector(root, tmp_path), dict(pages[0].cursor))
    assert len(records) == 250
    assert {r.subject for r in records} == {f"Message {n}" for n in range(200, 450)}
    assert sync(connector(root, tmp_path), cursor)[0] == []


def test_page_size_setting(tmp_path):
    root = make_maildir(tmp_path / "Mail")
    for n in range(7):
        deliver(root, mail(n))
    pages = list(connector(root, tmp_path, page_size=3).fetch({}))
    assert [len(p.records) for p in pages] == [3, 3, 1]


def test_folder_selection_and_exclude(tmp_path, caplog):
    root = make_maildir(tmp_path / "Mail")
    deliver(root, mail(1))
    deliver(root / ".Sent", mail(2))
    deliver(root / ".Trash", mail(3))
    only_sent, _ = sync(connector(root, tmp_path, folders=["Sent"]), {})
    assert [r.subject for r in only_sent] == ["Message 2"]
    no_trash, _ = sync(connector(root, tmp_path, exclude=["Trash"]), {})
    assert sorted(r.subject for r in no_trash) == ["Message 1", "Message 2"]
    with caplog.at_level(logging.WARNING):
        partly, _ = sync(connector(root, tmp_path, folders=["Sent", "Nope"]), {})
    assert [r.subject for r in partly] == ["Message 2"]
    assert "Nope not found" in caplog.text and "fix sources.settings.folders" in caplog.text
    with pytest.raises(SourceError, match="found: INBOX, Sent, Trash"):
        sync(connector(root, tmp_path, folders=["Nope"]), {})


def test_missing_or_empty_maildir_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match=r"does not exist; check sources\.settings\.path"):
        sync(connector(tmp_path / "absent", tmp_path), {})
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no Maildir folders"):
        sync(connector(tmp_path / "empty", tmp_path), {})


def test_snapshots_keep_the_cursor_small(tmp_path, monkeypatch):
    monkeypatch.setattr(mdc, "COMPACT_AT", 5)
    root = make_maildir(tmp_path / "Mail")
    for n in range(23):
        deliver(root, mail(n), name=f"1767600000.{n:05d}.host")
    conn = connector(root, tmp_path, page_size=4)
    pages = list(conn.fetch({}))
    cursors = [p.cursor for p in pages]
    assert all(sum(len(v) for v in c["added"].values()) < 8 for c in cursors)
    final = dict(cursors[-1])
    state = tmp_path / "state"
    # the snapshot a cursor names exists and holds the keys
    snap = state / f"seen-{final['snapshot']}.json.gz"
    data = json.loads(gzip.decompress(snap.read_bytes()))
    in_snapshot = set(data["folders"]["INBOX"])
    in_added = set(final["added"].get("INBOX", []))
    assert len(in_snapshot | in_added) == 23
    assert oct(snap.stat().st_mode & 0o777) == "0o600"
    # resuming from an early cursor (the host died after committing page 2) only reads
    # what that cursor had not seen
    records, _ = sync(connector(root, tmp_path, page_size=4), dict(cursors[1]))
    assert len(records) == 23 - 8
    # a no-op from the final cursor reads nothing and drops snapshots no cursor names
    assert list(conn.fetch(final)) == []
    assert conn.stats.read == 0
    assert [p.name for p in state.iterdir()] == [snap.name]


def test_a_lost_snapshot_means_reading_again_not_losing_mail(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(mdc, "COMPACT_AT", 3)
    root = make_maildir(tmp_path / "Mail")
    for n in range(6):
        deliver(root, mail(n))
    conn = connector(root, tmp_path)
    _, cursor = sync(conn, {})
    for snap in (tmp_path / "state").iterdir():
        snap.unlink()
    with caplog.at_level(logging.WARNING):
        records, _ = sync(conn, cursor)
    assert len(records) == 6
    assert "missing or damaged" in caplog.text


def test_cursor_from_another_version_rereads(tmp_path, caplog):
    root = make_maildir(tmp_path / "Mail")
    deliver(root, mail(1))
    with caplog.at_level(logging.WARNING):
        records, _ = sync(connector(root, tmp_path), {"v": 99, "whatever": 1})
    assert len(records) == 1
    assert "another version" in caplog.text


def test_file_mtime_is_the_date_when_the_header_has_none(tmp_path):
    root = make_maildir(tmp_path / "Mail")
    raw = b"From: maria@example.com\nSubject: undated\nMessage-ID: <u@x>\n\nhello\n"
    path = deliver(root, raw)
    os.utime(path, (1700000000, 1700000000))
    records, _ = sync(connector(root, tmp_path), {})
    assert records[0].sent_at.timestamp() == 1700000000


def test_huge_message_file_is_kept_by_header_only(tmp_path, caplog):
    """A 2 GB message file (sparse) is not read into memory: header kept, flagged."""
    root = make_maildir(tmp_path / "Mail")
    path = deliver(root, mail(1, subject="Final cut, 2 GB"))
    with path.open("r+b") as handle:
        handle.truncate(2 * 1024**3)
    with caplog.at_level(logging.WARNING):
        records, _ = sync(connector(root, tmp_path), {})
    (message,) = records
    assert message.subject == "Final cut, 2 GB"
    assert message.extra["too_large"] == 2 * 1024**3
    (placeholder,) = message.attachments
    assert placeholder.status == "too_large" and placeholder.data is None
    assert "over the" in caplog.text and "max_message_mb" in caplog.text


def test_unreadable_entry_is_logged_and_tried_again(tmp_path, caplog):
    root = make_maildir(tmp_path / "Mail")
    # a directory where a message file should be: opening it fails even for root
    blocker = root / "new" / "1767600000.M1P1.host"
    blocker.mkdir()
    conn = connector(root, tmp_path)
    with caplog.at_level(logging.WARNING):
        records, cursor = sync(conn, {})
    assert records == [] and "cannot read" in caplog.text
    assert "tried again next sync" in caplog.text
    blocker.rmdir()
    blocker.write_bytes(mail(1))
    records, _ = sync(conn, cursor)
    assert [r.subject for r in records] == ["Message 1"]


def test_stop_request_ends_with_a_committable_page(tmp_path):
    root = make_maildir(tmp_path / "Mail")
    for n in range(10):
        deliver(root, mail(n), name=f"1767600000.{n:05d}.host")
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 4

    conn = connector(root, tmp_path, context={"should_stop": stop})
    pages = list(conn.fetch({}))
    assert sum(len(p.records) for p in pages) == 4
    records, _ = sync(connector(root, tmp_path), dict(pages[-1].cursor))
    assert len(records) == 6


def test_noop_on_a_large_maildir_only_lists(tmp_path):
    """50,000 files: the no-op sync lists folders, opens nothing, and is fast."""
    root = make_maildir(tmp_path / "Mail")
    count = 50_000
    names = [f"17676{n:05d}.M{n}P1.host" for n in range(count)]
    for name in names:
        (root / "cur" / f"{name}:2,S").write_bytes(b"")
    # Fake an earlier complete sync without parsing 50k messages: the cursor's snapshot
    # lists every key (what compaction would have written).
    conn = connector(root, tmp_path)
    state = mdc.SeenState()
    for name in names:
        state.add("INBOX", name)
    conn.compact(state, {"INBOX": {n: f"cur/{n}:2,S" for n in names}})
    cursor = state.cursor()
    assert len(json.dumps(cursor)) < 200
    started = time.perf_counter()
    assert list(conn.fetch(cursor)) == []
    elapsed = time.perf_counter() - started
    assert conn.stats.read == 0 and conn.stats.listed == count
    assert elapsed < 5, f"no-op sync of {count} files took {elapsed:.1f}s"


def test_moving_to_another_folder_reads_it_once_under_the_same_id(tmp_path):
    root = make_maildir(tmp_path / "Mail")
    path = deliver(root, mail(1), sub="cur", flags="S")
    conn = connector(root, tmp_path)
    (first,), cursor = sync(conn, {})
    archive = make_maildir(root / ".Archive")
    path.rename(archive / "cur" / path.name)
    (moved,), cursor = sync(conn, cursor)
    # the store upserts by remote id, so this is the same message, now in Archive
    assert moved.remote_id == first.remote_id and moved.extra["folder"] == "Archive"
    assert sync(conn, cursor)[0] == []
