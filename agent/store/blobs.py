"""Deliverable files: content-addressed under ``files/``, written once, never half.

A file is written to ``tmp/``, fsynced and renamed to ``files/<sha256><.ext>``; the
folder itself is fsynced (:meth:`Blobs.sync`) before any document naming the file is
written, so a record never points at a file a crash could lose.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path

from agent.errors import NoSpace, StoreError
from agent.files import fsync_dir
from agent.models import Attachment


def blob_suffix(filename: str) -> str:
    """The extension a kept file gets: a short alphanumeric one, else none."""
    suffix = Path(filename).suffix.lower()
    return suffix if 1 < len(suffix) <= 10 and suffix[1:].isalnum() else ""


class Blobs:
    """The ``files/`` folder of one data folder."""

    def __init__(self, data_dir: Path, files_dir: Path, tmp_dir: Path) -> None:
        self.data_dir = data_dir
        self.files_dir = files_dir
        self.tmp_dir = tmp_dir
        self.unsynced = False  # a file was renamed into files/ since the last sync()

    def put(self, att: Attachment, filename: str) -> tuple[str, str, int]:
        """Write (or find) the file for an attachment; return sha256, path and size."""
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
        if not target.exists():
            self._write(att, filename, sha, target)
            self.unsynced = True
        return sha, str(target), size

    def _write(self, att: Attachment, filename: str, sha: str, target: Path) -> None:
        tmp = self.tmp_dir / f".tmp-{sha}"
        try:
            if att.data is not None:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(att.data)
                    handle.flush()
                    os.fsync(handle.fileno())
            else:
                assert att.path is not None
                shutil.copyfile(att.path, tmp)
                os.chmod(tmp, 0o600)
                fd2 = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd2)
                finally:
                    os.close(fd2)
            os.replace(tmp, target)
        except OSError as exc:  # disk full: a domain error, and no half file left
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(f"no space left in {self.data_dir} (writing {filename!r}); "
                              "free some disk space: the next sync goes on from the "
                              "last committed page") from None
            raise StoreError(f"could not store {filename!r} in {self.files_dir}: "
                             f"{exc.strerror}; free some disk space and sync again") from None

    def sync(self) -> None:
        """Make the names of files written since the last call durable (one fsync)."""
        if self.unsynced:
            fsync_dir(self.files_dir)
            self.unsynced = False
