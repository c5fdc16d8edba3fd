"""Deliverable files: content-addressed under ``files/``, written once, never half.

A file is written to ``tmp/``, fsynced and renamed to ``files/<sha256><.ext>``; the
folder itself is fsynced (:meth:`Blobs.sync`) before any document naming the file is
written, so a record never points at a file a crash could lose.

The files of one page are fsynced together: :meth:`Blobs.put` writes the temp file,
:meth:`Blobs.sync` fsyncs every temp file of the page at once (several threads, which
the filesystem's journal commits together instead of one commit per file), then renames
them and fsyncs the folder, all before the page's documents are written.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import NoSpace, StoreError
from agent.files import fsync_dir, fsync_path

if TYPE_CHECKING:
    from agent.models import Attachment


_SHA256 = re.compile(r"[0-9a-f]{64}")


def blob_suffix(filename: str) -> str:
    """The extension a kept file gets: a short alphanumeric one, else none."""
    suffix = Path(filename).suffix.lower()
    return suffix if len(suffix) <= 10 and suffix[1:].isalnum() else ""


class Blobs:
    """The ``files/`` folder of one data folder."""

    def __init__(self, data_dir: Path, files_dir: Path, tmp_dir: Path) -> None:
        self.data_dir = data_dir
        self.files_dir = files_dir
        self.tmp_dir = tmp_dir
        self.unsynced = False  # a file was renamed into files/ since the last sync()
        self._pending: dict[Path, tuple[Path, str]] = {}  # target -> (temp file, filename)
        self._spare: set[Path] = set()  # handed-over files not needed: removed with the page

    def put(self, att: Attachment, filename: str) -> tuple[str, str, int]:
        """Write (or find) the file for an attachment; return sha256, path and size."""
        if att.handover_sha256 and att.data is None:
            handed = self._handed_over(att)
            if handed is not None:
                return self._take_over(att, filename, handed)
        import hashlib  # here: opening the store (every read command) computes no digest

        digest = hashlib.sha256()
        if att.data is not None:
            digest.update(att.data)
            size = len(att.data)
        elif att.path is not None:
            size = 0
            with open(att.path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
                    size += len(chunk)
        else:
            raise StoreError(f"attachment {filename!r} is marked stored but has no data")
        sha = digest.hexdigest()
        target = self.files_dir / f"{sha}{blob_suffix(filename)}"
        if target not in self._pending and not target.exists():
            self._pending[target] = (self._write(att, filename, target.name), filename)
        return sha, str(target), size

    def _handed_over(self, att: Attachment) -> int | None:
        """The size of ``att``'s file when the store may take it over: a sha256 in hex
        and a regular file (not a link) in a scratch folder under ``tmp/``; None for
        anything else, which is copied like any other ``path``."""
        if att.path is None or not _SHA256.fullmatch(att.handover_sha256):
            return None
        path = Path(att.path)
        try:
            st = path.lstat()  # a link is not followed: it is copied, its target stays
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if os.path.realpath(path.parent.parent) != os.path.realpath(self.tmp_dir):
            return None
        return st.st_size

    def _take_over(self, att: Attachment, filename: str, size: int) -> tuple[str, str, int]:
        """A temp file the connector wrote (``handover_sha256``): moved in by :meth:`sync`,
        or, when the store holds (or is about to hold) the same bytes from another file,
        deleted with the page (not now: the page may hand the same file over again, a
        message twice or one file in two records)."""
        assert att.path is not None
        tmp = Path(att.path)
        sha = att.handover_sha256
        target = self.files_dir / f"{sha}{blob_suffix(filename)}"
        if target not in self._pending and not target.exists():
            self._pending[target] = (tmp, filename)
        else:  # if it is the file pending itself, sync() has moved it in by then
            self._spare.add(tmp)
        return sha, str(target), size

    def _write(self, att: Attachment, filename: str, name: str) -> Path:
        """The temp file with the attachment's bytes (not fsynced yet: :meth:`sync`),
        one per target name (the same bytes may come under two extensions)."""
        tmp = self.tmp_dir / f".tmp-{name}"
        try:
            if att.data is not None:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(att.data)
            else:
                assert att.path is not None
                import shutil

                shutil.copyfile(att.path, tmp)
                os.chmod(tmp, 0o600)
        except OSError as exc:  # disk full: a domain error, and no half file left
            tmp.unlink(missing_ok=True)
            raise self._failed(exc, filename) from None
        return tmp

    def _failed(self, exc: OSError, filename: str) -> StoreError:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return NoSpace(f"no space left in {self.data_dir} (writing {filename!r}); "
                           "free some disk space: the next sync goes on from the "
                           "last committed page")
        return StoreError(f"could not store {filename!r} in {self.files_dir}: "
                          f"{exc.strerror}; check that the folder can be written "
                          "(permissions, a read-only or failing disk), then sync again")

    def sync(self) -> None:
        """Make the files written since the last call durable: their bytes (fsynced
        together), their names, then the folder (one fsync)."""
        pending, self._pending = self._pending, {}
        spare, self._spare = self._spare, set()
        try:
            _fsync_all([tmp for tmp, _ in pending.values()])
            for target, (tmp, _) in pending.items():
                os.replace(tmp, target)
                self.unsynced = True
        except OSError as exc:  # disk full: a domain error, and no half file left
            for tmp, _ in pending.values():
                tmp.unlink(missing_ok=True)
            filename = next(iter(pending.values()))[1]  # nothing pending: nothing failed
            raise self._failed(exc, filename) from None
        finally:
            for tmp in spare:
                tmp.unlink(missing_ok=True)
        if self.unsynced:
            fsync_dir(self.files_dir)
            self.unsynced = False

    def discard(self) -> None:
        """Forget the files written since the last :meth:`sync` (a page that failed)."""
        pending, self._pending = self._pending, {}
        spare, self._spare = self._spare, set()
        for tmp in [*(tmp for tmp, _ in pending.values()), *spare]:
            tmp.unlink(missing_ok=True)


#: Threads that fsync the files of one page together.
FSYNC_THREADS = 8


def _fsync_all(paths: list[Path]) -> None:
    """fsync every file; several at a time, so the journal commits them together."""
    if len(paths) <= 1:
        for path in paths:
            fsync_path(path)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(FSYNC_THREADS, len(paths))) as pool:
        for future in [pool.submit(fsync_path, path) for path in paths]:
            future.result()  # the first error is raised, after every fsync has ended
