"""The files of one page are fsynced together (a big sync stores thousands), still each
before its rename, and every one before the documents that name them."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.errors import NoSpace
from agent.models import Attachment, Identity, Message
from agent.store import Store
from tests.support import fsspy

OWNER = frozenset({"email:owner@example.com"})
WHEN = datetime(2026, 3, 4, 9, 30, tzinfo=UTC)


def page(count: int) -> list[Message]:
    files = [(Attachment(f"f{n}.pdf", "application/pdf", data=b"%%PDF %d" % n),
              Attachment(f"again{n}.pdf", "application/pdf", data=b"%%PDF %d" % n),
              Attachment(f"same{n}.txt", "text/plain", data=b"%%PDF %d" % n))
             for n in range(count)]  # each file twice (stored once), and as .txt
    return [Message(f"<{n}@x>", WHEN, Identity("email", "maria@example.com"),
                    recipients=(Identity("email", "owner@example.com"),), subject=f"s{n}",
                    attachments=files[n]) for n in range(count)]


def store_at(path: Path) -> Store:
    store = Store(path)
    with store.writing():
        store.add_contractor("Maria", [Identity("email", "maria@example.com")])
    return store


def test_a_pages_files_are_fsynced_together_before_renames_and_documents(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = store_at(tmp_path / "data")
    spy = fsspy.install(monkeypatch)
    with store.writing():
        store.commit_page("inbox", "imap", page(12), owner_keys=OWNER)
    files = os.path.realpath(store.files_dir)
    renames = [i for i, c in enumerate(spy.calls) if c.kind == "replace"
               and os.path.dirname(c.dest) == files]
    assert len(renames) == 24  # a file sent twice is written once (per extension)
    blob_syncs = [i for i, c in enumerate(spy.calls) if c.kind == "fsync_file"
                  and os.path.dirname(c.path) == os.path.realpath(store.tmp_dir)]
    assert len(blob_syncs) == 24 and max(blob_syncs) < min(renames)  # all bytes, then names
    folder_sync = next(i for i, c in enumerate(spy.calls)
                       if c.kind == "fsync_dir" and c.path == files)
    first_document = min(i for i, c in enumerate(spy.calls) if c.kind == "replace"
                         and c.dest.startswith(os.path.realpath(store.root)))
    assert max(renames) < folder_sync < first_document
    for doc in store.deliverables():
        assert Path(doc["path"]).read_bytes().startswith(b"%PDF")
        assert Path(doc["path"]).suffix == Path(doc["filename"]).suffix
    assert os.listdir(store.tmp_dir) == []


def test_a_full_disk_while_staging_leaves_no_temp_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = store_at(tmp_path / "data")
    real_open, opened = os.open, []

    def open_fails_third(path: object, flags: int, *args: object) -> int:
        if str(path).startswith(str(store.tmp_dir)):
            opened.append(path)
            if len(opened) == 3:
                raise OSError(28, "No space left on device")
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", open_fails_third)
    with pytest.raises(NoSpace, match="free some disk space"), store.writing():
        store.commit_page("inbox", "imap", page(5), owner_keys=OWNER)
    monkeypatch.undo()
    assert os.listdir(store.tmp_dir) == [] and os.listdir(store.files_dir) == []
    assert store.deliverables() == [] and list(store.iter_messages()) == []
    with store.writing():  # the page comes again and is stored whole
        store.commit_page("inbox", "imap", page(5), owner_keys=OWNER)
    assert len(store.deliverables()) == 15 and len(os.listdir(store.files_dir)) == 10
