"""An exclusive lock on a lock file: one writer of a store, one sync of a source, one
daemon of a data folder at once.

The lock is ``flock(LOCK_EX)`` on the lock file, as the ``filelock`` package's
``FileLock`` takes it on POSIX systems, so the two exclude each other (an older Retainer,
which took its locks through filelock, included). Retainer's locks are this module
rather than filelock because a command with nothing to write still takes a lock or two
(a no-op sync records its run) and importing ``filelock`` 4.x cost a fifth of that
command's start.

Reentrant in the thread that holds it; other threads wait, as for another process. A
forked child (the daemon's sync workers) starts with every lock free in its own eyes, as
with filelock: it never unlocks what its parent holds, and a lock a parent's thread held
at the fork cannot leave the child waiting for a thread it does not have.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Self

#: How often a waiting acquire tries again (filelock's default as well).
POLL = 0.05


class LockTimeout(TimeoutError):
    """The lock stayed held by another process (or thread) for the whole timeout."""

    def __init__(self, path: str) -> None:
        super().__init__(f"the lock {path} is held by another process")
        self.lock_file = path


class FileLock:
    """``flock`` on ``path`` (created with ``mode``); ``timeout``: seconds to wait, 0 to
    try once, a negative number to wait as long as it takes."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = -1,
                 mode: int = 0o600) -> None:
        self.lock_file = str(Path(path))
        self.timeout = timeout
        self.mode = mode
        self._fd: int | None = None
        self._depth = 0
        self._guard = threading.RLock()  # the holding thread re-enters; others wait
        _LOCKS.add(self)

    def _forked(self) -> None:
        """In a forked child: free. The descriptor is closed, not unlocked: the parent's
        lock stays the parent's (flock belongs to the open file, which both share)."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None
        self._depth = 0
        self._guard = threading.RLock()

    @property
    def is_locked(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float | None = None) -> Self:
        wait = self.timeout if timeout is None else timeout
        deadline = None if wait < 0 else time.monotonic() + wait
        if not self._guard.acquire(timeout=-1 if deadline is None else max(wait, 0)):
            raise LockTimeout(self.lock_file)
        try:
            if self._depth == 0:
                self._fd = self._take(deadline)
            self._depth += 1
        except BaseException:
            self._guard.release()
            raise
        return self

    def _take(self, deadline: float | None) -> int:
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0),
                     self.mode)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise LockTimeout(self.lock_file) from None
                    time.sleep(POLL if deadline is None
                               else max(min(POLL, deadline - time.monotonic()), 0))
        except BaseException:
            os.close(fd)
            raise

    def release(self) -> None:
        """Let go once; the file is unlocked when every acquire has been released."""
        if self._depth == 0:
            return
        self._depth -= 1
        try:
            if self._depth == 0 and self._fd is not None:
                fd, self._fd = self._fd, None
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    os.close(fd)
        finally:
            self._guard.release()

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()


_LOCKS: weakref.WeakSet[FileLock] = weakref.WeakSet()


def _after_fork() -> None:
    for lock in list(_LOCKS):
        lock._forked()


os.register_at_fork(after_in_child=_after_fork)
