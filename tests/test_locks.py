"""agent.locks: the store's and a source's lock exclude each other with the ``filelock``
package's FileLock (another Retainer, the daemon, a test), with another process, and with
another thread; the holding thread re-enters."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import filelock
import pytest

from agent.locks import FileLock, LockTimeout


def test_filelock_and_ours_exclude_each_other(tmp_path: Path) -> None:
    path = tmp_path / "store.lock"
    ours = FileLock(path, timeout=0)
    theirs = filelock.FileLock(str(path), timeout=0)
    with ours, pytest.raises(filelock.Timeout):
        theirs.acquire()
    with theirs:
        with pytest.raises(LockTimeout) as err:
            ours.acquire()
        assert str(path) in str(err.value)
    with ours, pytest.raises(filelock.Timeout):  # free again, then held again
        theirs.acquire()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert path.exists()  # the lock file stays, as filelock leaves it on POSIX


def test_another_process_waits_until_released(tmp_path: Path) -> None:
    path = tmp_path / "sync.lock"
    child = ("import sys, time\nfrom agent.locks import FileLock, LockTimeout\n"
             f"lock = FileLock({str(path)!r}, timeout=float(sys.argv[1]))\n"
             "try:\n    lock.acquire()\nexcept LockTimeout:\n    print('busy')\n"
             "else:\n    print('got it')\n")
    with FileLock(path):
        busy = subprocess.run([sys.executable, "-c", child, "0.2"], capture_output=True,
                              text=True, timeout=60, check=True)
        assert busy.stdout.strip() == "busy"
        later = subprocess.Popen([sys.executable, "-c", child, "30"], stdout=subprocess.PIPE,
                                 text=True)
        time.sleep(0.5)
        assert later.poll() is None  # still waiting
    out, _ = later.communicate(timeout=60)
    assert out.strip() == "got it"


def test_the_holder_reenters_and_another_thread_waits(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "store.lock", timeout=5)
    order: list[str] = []
    with lock:
        with lock:  # re-entered: still held after the inner release
            pass
        assert lock.is_locked

        def other() -> None:
            with lock:
                order.append("other")

        thread = threading.Thread(target=other)
        thread.start()
        time.sleep(0.3)
        order.append("holder")
    thread.join(timeout=10)
    assert order == ["holder", "other"]
    assert not lock.is_locked
    with pytest.raises(filelock.Timeout), lock:  # held by this thread: others time out
        filelock.FileLock(str(tmp_path / "store.lock"), timeout=0).acquire()


def test_a_timeout_leaves_nothing_held(tmp_path: Path) -> None:
    path = tmp_path / "store.lock"
    lock = FileLock(path, timeout=0.1)
    with filelock.FileLock(str(path)):
        started = time.monotonic()
        with pytest.raises(LockTimeout):
            lock.acquire()
        assert time.monotonic() - started >= 0.1
        assert not lock.is_locked
    with lock:  # usable once the other holder is gone
        assert lock.is_locked
    lock.release()  # one release too many changes nothing
    assert not lock.is_locked
