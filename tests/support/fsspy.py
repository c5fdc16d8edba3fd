"""Watch and break the real filesystem calls a write makes (Linux ``/proc/self/fd``).

:class:`FsSpy` wraps ``os.fsync`` and ``os.replace`` (the calls that carry the
crash-safety promise) so a test can assert their order and arguments, and can make
one of them fail as a full disk (``ENOSPC``) or a failing disk (``EIO``) would. The calls still reach the real
filesystem; nothing of Retainer's own is replaced.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Call:
    kind: str  # "fsync_file", "fsync_dir", "replace" or "unlink"
    path: str  # the fsynced file or folder; for "replace" the source (temp) file
    dest: str = ""  # for "replace": the target
    content: bytes | None = None  # what the fsynced or renamed file held at that moment
    dest_before: bytes | None = None  # for "replace": what the target held before


@dataclass
class FsSpy:
    calls: list[Call] = field(default_factory=list)
    fail_fsync_at: int | None = None  # index among file fsyncs that raises ENOSPC (once)
    file_fsyncs: int = 0
    fail_errno: int = errno.ENOSPC  # what the failing fsync raises
    fail_times: int = 1  # how many file fsyncs in a row fail, from ``fail_fsync_at``

    def kinds(self) -> list[str]:
        return [c.kind for c in self.calls]

    def dir_fsyncs(self) -> list[str]:
        return [c.path for c in self.calls if c.kind == "fsync_dir"]


def _target(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def _read(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None


def install(monkeypatch: pytest.MonkeyPatch, *, unlinks: bool = False) -> FsSpy:
    """Spy on ``os.fsync`` and ``os.replace``; with ``unlinks``, on ``Path.unlink`` too
    (an ``"unlink"`` call: the removal's place in that order)."""
    spy = FsSpy()
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: Any) -> None:
        fd = fd if isinstance(fd, int) else fd.fileno()
        path = _target(fd)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            spy.calls.append(Call("fsync_dir", os.path.realpath(path)))
        else:
            index = spy.file_fsyncs
            spy.file_fsyncs += 1
            if spy.fail_fsync_at is not None and index == spy.fail_fsync_at:
                spy.fail_times -= 1
                spy.fail_fsync_at = index + 1 if spy.fail_times > 0 else None
                raise OSError(spy.fail_errno, os.strerror(spy.fail_errno))
            spy.calls.append(Call("fsync_file", os.path.realpath(path), content=_read(path)))
        real_fsync(fd)

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        spy.calls.append(Call("replace", os.path.realpath(src), os.path.realpath(dst),
                              content=_read(str(src)), dest_before=_read(str(dst))))
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    if unlinks:
        real_unlink = Path.unlink

        def unlink(target: Path, missing_ok: bool = False) -> None:
            spy.calls.append(Call("unlink", os.path.realpath(target)))
            real_unlink(target, missing_ok=missing_ok)

        monkeypatch.setattr(Path, "unlink", unlink)
    return spy


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def scandirs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The folders ``os.scandir`` lists from now on, in order (the calls go through)."""
    scans: list[str] = []
    real = os.scandir

    def scandir(path: Any) -> Any:
        scans.append(str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return scans
