"""Kept files (``files/``): written to ``tmp/``, fsynced, renamed, the folder fsynced, all
before any document names them; a failure leaves no half file and nothing pending.

The real filesystem calls are watched (tests/support/fsspy.py), not replaced.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from agent.errors import NoSpace, StoreError
from agent.models import Attachment
from agent.store import Store
from agent.store import blobs as blobs_module
from agent.store.blobs import Blobs
from tests.store.contract import MARIA, OWNER_KEYS, inbound, png
from tests.support import fsspy


def _blobs(tmp_path: Path) -> Blobs:
    for sub in ("files", "tmp"):
        (tmp_path / sub).mkdir()
    return Blobs(tmp_path, tmp_path / "files", tmp_path / "tmp")


def test_files_are_durable_before_any_document_names_them(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    store = Store(tmp_path / "data")
    with store.writing():
        store.add_contractor("Maria Lopez", [MARIA])
    spy = fsspy.install(monkeypatch)
    with store.writing():
        store.commit_page("inbox", "imap", [inbound("a", 1, files=[
            png("a.png", b"first"), png("b.png", b"second", "2"), png("c.png", b"first", "3")])],
            owner_keys=OWNER_KEYS)
    files = os.path.realpath(store.files_dir)
    scratch = os.path.realpath(store.tmp_dir)
    root = os.path.realpath(store.root)
    calls = spy.calls
    blob_renames = [i for i, c in enumerate(calls)
                    if c.kind == "replace" and os.path.dirname(c.dest) == files]
    assert len(blob_renames) == 2  # the same bytes twice: one file
    assert sorted(calls[i].content or b"" for i in blob_renames) == [b"first", b"second"]
    folder_sync = next(i for i, c in enumerate(calls) if c.kind == "fsync_dir" and c.path == files)
    first_document = next(i for i, c in enumerate(calls)
                          if c.kind == "replace" and c.dest.startswith(root))
    for i in blob_renames:
        rename = calls[i]
        assert os.path.dirname(rename.path) == scratch
        assert os.path.basename(rename.path) == ".tmp-" + os.path.basename(rename.dest)
        synced = next(j for j, c in enumerate(calls)
                      if c.kind == "fsync_file" and c.path == rename.path)
        assert calls[synced].content == rename.content  # the bytes, fsynced before the rename
        assert synced < i < folder_sync
    assert folder_sync < first_document
    assert [c.path for c in calls if c.kind == "fsync_dir"].count(files) == 1
    assert list(store.tmp_dir.iterdir()) == []
    for doc in store.deliverables():
        path = Path(doc["path"] or "")
        assert path.parent == store.files_dir and path.read_bytes() in (b"first", b"second")


@pytest.mark.parametrize("count", [1, 3])
def test_a_failed_fsync_leaves_no_file_and_nothing_pending(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           count: int) -> None:
    blobs = _blobs(tmp_path)
    spy = fsspy.install(monkeypatch)
    spy.fail_fsync_at = count - 1  # the last file's fsync: a full disk
    for n in range(count):
        blobs.put(Attachment(f"f{n}.png", data=b"x%d" % n), f"f{n}.png")
    assert len(list((tmp_path / "tmp").iterdir())) == count
    with pytest.raises(NoSpace) as err:
        blobs.sync()
    assert str(err.value) == (f"no space left in {tmp_path} (writing 'f0.png'); free some "
                              "disk space: the next sync goes on from the last committed page")
    assert list((tmp_path / "tmp").iterdir()) == list((tmp_path / "files").iterdir()) == []
    assert [c for c in spy.calls if c.kind == "replace"] == []
    assert not blobs.unsynced
    spy.calls.clear()
    blobs.sync()  # nothing is left pending from the failed page
    assert spy.calls == []
    _, path, size = blobs.put(Attachment("f0.png", data=b"x0"), "f0.png")
    blobs.sync()  # the same file, written again once there is space
    assert Path(path).read_bytes() == b"x0" and size == 2


def test_several_files_are_all_fsynced_then_renamed(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    blobs = _blobs(tmp_path)
    source = tmp_path / "download.bin"
    source.write_bytes(b"from a file")
    spy = fsspy.install(monkeypatch)
    puts = [blobs.put(Attachment(f"f{n}.png", data=b"x%d" % n), f"f{n}.png") for n in range(10)]
    puts.append(blobs.put(Attachment("d.bin", path=source), "d.bin"))
    blobs.sync()
    kinds = spy.kinds()
    assert kinds == ["fsync_file"] * 11 + ["replace"] * 11 + ["fsync_dir"]
    assert {c.path for c in spy.calls if c.kind == "fsync_file"} == \
        {c.path for c in spy.calls if c.kind == "replace"}
    for _, path, _ in puts:
        assert os.stat(path).st_mode & 0o777 == 0o600
    assert Path(puts[-1][1]).read_bytes() == b"from a file" and puts[-1][2] == 11
    spy.calls.clear()
    blobs.sync()  # nothing new: not even the folder is fsynced again
    assert spy.calls == []


def test_discarded_files_are_removed(tmp_path: Path) -> None:
    blobs = _blobs(tmp_path)
    _, path, _ = blobs.put(Attachment("a.png", data=b"a"), "a.png")
    blobs.discard()
    blobs.sync()
    assert list((tmp_path / "tmp").iterdir()) == [] and not Path(path).exists()


def test_a_failed_rename_says_what_to_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    blobs = _blobs(tmp_path)

    def failing(src: object, dst: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    blobs.put(Attachment("a.png", data=b"a"), "a.png")
    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(StoreError) as err:
        blobs.sync()
    assert not isinstance(err.value, NoSpace)
    assert str(err.value) == (f"could not store 'a.png' in {tmp_path / 'files'}: "
                              "Read-only file system; check that the folder can be written "
                              "(permissions, a read-only or failing disk), then sync again")


@pytest.mark.parametrize("created", [True, False], ids=["half written", "not created"])
def test_a_full_disk_while_writing_the_temp_file(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                created: bool) -> None:
    """The temp file cannot be written (or not even created: no inode left): no half
    file, and the error says what to do."""
    blobs = _blobs(tmp_path)
    real_open = os.open

    def full(path: str | Path, flags: int, mode: int = 0o777) -> int:
        if not created and Path(path).name.startswith(".tmp-"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fd = real_open(path, flags, mode)
        if Path(path).name.startswith(".tmp-"):
            os.write(fd, b"half")
            os.close(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return fd

    monkeypatch.setattr(os, "open", full)
    with pytest.raises(NoSpace, match=f"no space left in {tmp_path} \\(writing 'a.png'\\)"):
        blobs.put(Attachment("a.png", data=b"a"), "a.png")
    assert list((tmp_path / "tmp").iterdir()) == list((tmp_path / "files").iterdir()) == []
    monkeypatch.undo()
    blobs.sync()
    assert list((tmp_path / "files").iterdir()) == []


def test_a_file_already_kept_is_not_written_again(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Files are written once: the same bytes in a later page (or twice in one) find the
    file by its name and write nothing."""
    blobs = _blobs(tmp_path)
    first = blobs.put(Attachment("a.png", data=b"same"), "a.png")
    assert blobs.put(Attachment("copy.png", data=b"same"), "copy.png") == first
    assert len(list((tmp_path / "tmp").iterdir())) == 1
    blobs.sync()
    spy = fsspy.install(monkeypatch)
    before = os.stat(first[1])
    assert blobs.put(Attachment("again.png", data=b"same"), "again.png") == first
    blobs.sync()
    assert spy.calls == [] and list((tmp_path / "tmp").iterdir()) == []
    assert os.stat(first[1]).st_ino == before.st_ino


def test_a_rename_failing_after_others_succeeded(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The second file's rename fails (a full disk): the error is the store's, every temp
    file is gone, and the file already renamed is whole (its bytes were fsynced)."""
    blobs = _blobs(tmp_path)
    real_replace = os.replace
    done: list[str] = []

    def replace(src: str | Path, dst: str | Path) -> None:
        if done:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(src, dst)
        done.append(str(dst))

    first = blobs.put(Attachment("a.png", data=b"a"), "a.png")
    blobs.put(Attachment("b.png", data=b"b"), "b.png")
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(NoSpace, match=r"writing 'a\.png'"):
        blobs.sync()
    assert list((tmp_path / "tmp").iterdir()) == []
    assert done == [first[1]] and Path(first[1]).read_bytes() == b"a"


def test_a_full_disk_during_a_page_names_the_data_folder(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    store = Store(tmp_path / "data")
    with store.writing():
        store.add_contractor("Maria Lopez", [MARIA])
    spy = fsspy.install(monkeypatch)
    spy.fail_fsync_at = 0  # the first fsync of the page: its file's bytes
    with pytest.raises(NoSpace) as err, store.writing():
        store.commit_page("inbox", "imap", [inbound("a", 1, files=[png("a.png", b"a")])],
                          owner_keys=OWNER_KEYS)
    assert str(err.value).startswith(f"no space left in {tmp_path / 'data'} (writing 'a.png')")
    assert store.messages() == [] and list(store.files_dir.iterdir()) == []


def test_a_file_given_by_path_is_kept_whole_with_its_size_and_digest(tmp_path: Path) -> None:
    """A connector may hand a large attachment over as a file on disk (``path``) rather
    than as bytes: it is read in pieces, and the digest and size recorded are those of
    the whole file, not of its last piece."""
    import hashlib

    blobs = _blobs(tmp_path)
    data = os.urandom(1 << 20) * 2 + b"tail"  # more than two pieces of 1 MiB
    source = tmp_path / "report.pdf"
    source.write_bytes(data)
    sha, path, size = blobs.put(Attachment("report.pdf", path=source), "report.pdf")
    assert (sha, size) == (hashlib.sha256(data).hexdigest(), len(data))
    blobs.sync()
    assert Path(path).read_bytes() == data
    assert Path(path).name == f"{sha}.pdf"
    assert source.read_bytes() == data  # copied: the connector's file is left as it was


def test_an_attachment_marked_stored_without_bytes_or_file_names_it(tmp_path: Path) -> None:
    """A plugin bug (an attachment marked stored with neither bytes nor a file) is
    refused with the file's name, so the plugin's author can find it."""
    blobs = _blobs(tmp_path)
    with pytest.raises(StoreError, match=r"'scan\.pdf' is marked stored but has no data"):
        blobs.put(Attachment("scan.pdf"), "scan.pdf")
    assert not list((tmp_path / "tmp").iterdir())


def _handed(tmp_path: Path, name: str, data: bytes, filename: str = "work.pdf") -> Attachment:
    """A file a connector handed over: its bytes in a scratch folder under ``tmp/``."""
    import hashlib

    scratch = tmp_path / "tmp" / "inbox"
    scratch.mkdir(exist_ok=True)
    (scratch / name).write_bytes(data)
    return Attachment(filename, path=scratch / name,
                      handover_sha256=hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize("kept", [False, True], ids=["new bytes", "bytes kept already"])
def test_a_file_handed_over_twice_in_a_page_is_kept_once(tmp_path: Path, kept: bool) -> None:
    """A page may bring the same handed-over file twice (a message twice, or one file in
    two records): it is moved in once, and the page does not fail for want of it."""
    blobs = _blobs(tmp_path)
    data = b"work" * 100
    if kept:
        blobs.put(Attachment("work.pdf", data=data), "work.pdf")
        blobs.sync()
    att = _handed(tmp_path, "read-1", data)
    first = blobs.put(att, "work.pdf")
    assert blobs.put(att, "work.pdf") == first
    other = _handed(tmp_path, "read-2", data)  # the same bytes read again: not needed
    assert blobs.put(other, "work.pdf") == first
    blobs.sync()
    assert [p.name for p in (tmp_path / "files").iterdir()] == [Path(first[1]).name]
    assert Path(first[1]).read_bytes() == data and first[2] == len(data)
    assert list((tmp_path / "tmp" / "inbox").iterdir()) == []


def test_a_page_with_a_handed_over_message_twice_is_stored(tmp_path: Path) -> None:
    """The same message twice in a page, its file handed over by the mail reader: the
    page is stored, with the file once (it failed at every sync before: the source was
    stuck)."""
    store = Store(tmp_path / "data")
    with store.writing():
        store.add_contractor("Maria Lopez", [MARIA])
    data = b"work" * 100
    att = _handed(store.data_dir, "read-1", data)
    scratch = store.tmp_dir / "inbox"
    message = inbound("a", 1, files=[att])
    with store.writing():
        store.commit_page("inbox", "imap", [message, message], owner_keys=OWNER_KEYS)
    [doc] = store.deliverables()
    assert Path(doc["path"] or "").read_bytes() == data
    assert [p.name for p in store.files_dir.iterdir()] == [f"{att.handover_sha256}.pdf"]
    assert list(scratch.iterdir()) == []


def test_discard_removes_the_handed_over_files_of_the_page(tmp_path: Path) -> None:
    blobs = _blobs(tmp_path)
    data = b"work" * 100
    att = _handed(tmp_path, "read-1", data)
    blobs.put(att, "work.pdf")
    blobs.put(att, "work.pdf")  # the same file again
    blobs.put(_handed(tmp_path, "read-2", data), "work.pdf")  # the same bytes: not needed
    blobs.discard()
    blobs.sync()
    assert list((tmp_path / "tmp" / "inbox").iterdir()) == []
    assert list((tmp_path / "files").iterdir()) == []


def test_a_large_file_given_by_path_is_read_in_pieces(tmp_path: Path) -> None:
    """A connector gives a large download as a file so that it is never held in memory
    whole: the store reads it in pieces to compute its digest."""
    import tracemalloc

    blobs = _blobs(tmp_path)
    source = tmp_path / "video.mp4"
    with source.open("wb") as handle:
        for _ in range(32):
            handle.write(os.urandom(1 << 20))
    tracemalloc.start()
    try:
        _, _, size = blobs.put(Attachment("video.mp4", path=source), "video.mp4")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert size == 32 << 20
    assert peak < 8 << 20  # a few pieces of 1 MiB at most, not the 32 MiB file
    blobs.discard()


@pytest.mark.parametrize(("count", "threads"), [(1, 0), (2, 2), (20, blobs_module.FSYNC_THREADS)])
def test_the_files_of_a_page_are_fsynced_together(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  count: int, threads: int) -> None:
    """The fsyncs of a page's files run at the same time, in up to eight threads, so the
    filesystem's journal commits them together; a single file is fsynced where the page
    is written, no thread started for it."""
    import threading

    blobs = _blobs(tmp_path)
    for n in range(count):
        blobs.put(Attachment(f"f{n}.png", data=b"x%d" % n), f"f{n}.png")
    real_fsync = os.fsync
    together = threading.Barrier(max(threads, 1), timeout=10)
    seen: list[int] = []
    lock = threading.Lock()

    def fsync(fd: int) -> None:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            with lock:
                seen.append(threading.get_ident())
                first = len(seen) <= threads
            if first:
                together.wait()  # the first ones wait for each other: all at once
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    blobs.sync()
    assert len(seen) == count
    if threads:
        assert len(set(seen)) == threads and threading.get_ident() not in seen
    else:
        assert seen == [threading.get_ident()]
    assert len(list((tmp_path / "files").iterdir())) == count
