"""agent.locks: the store's and a source's lock exclude each other with the ``filelock``
package's FileLock (another Retainer, the daemon, a test), with another process, and with
another thread; the holding thread re-enters."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
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


def _in_child(check: Callable[[], int]) -> int:
    """Run ``check`` in a forked child; its exit status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child)
        code = 99
        try:
            code = check()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_forked_child_neither_frees_nor_waits_on_its_parents_lock(tmp_path: Path) -> None:
    """The daemon forks its sync workers: a lock held at the fork (by the forking thread or
    another one) is the parent's; the child sees it free, finds the file taken, and leaving
    does not let go of the parent's lock."""
    path = tmp_path / "store.lock"
    lock = FileLock(path, timeout=0)

    def child() -> int:
        if lock.is_locked:
            return 1
        try:
            lock.acquire()
        except LockTimeout:
            return 0  # taken by the parent, and no wait on a thread the child lacks
        return 2

    with lock:
        assert _in_child(child) == 0
        with pytest.raises(filelock.Timeout):  # still the parent's
            filelock.FileLock(str(path), timeout=0).acquire()
    held = threading.Event()
    done = threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            done.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        assert _in_child(child) == 0
    finally:
        done.set()
        thread.join(10)
    assert _in_child(lambda: 0 if lock.acquire() and lock.is_locked else 3) == 0  # free now


def test_a_lock_file_planted_as_a_link_is_not_followed(tmp_path: Path) -> None:
    """The data folder's lock files are opened without following a symbolic link: a link
    planted where the lock file goes neither creates nor locks the file it points at."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "store.lock").symlink_to(elsewhere / "victim")
    lock = FileLock(tmp_path / "store.lock", timeout=0)
    with pytest.raises(OSError):
        lock.acquire()
    assert not (elsewhere / "victim").exists()
    assert not lock.is_locked


def test_another_thread_gives_up_after_the_timeout_and_names_the_lock(tmp_path: Path) -> None:
    """One store object shared by threads (the web UI's): a thread that cannot get the lock
    within its timeout gets LockTimeout naming the lock file, instead of waiting on."""
    path = tmp_path / "store.lock"
    lock = FileLock(path, timeout=0.3)
    outcome: list[object] = []

    def waiter() -> None:
        started = time.monotonic()
        try:
            lock.acquire()
        except LockTimeout as exc:
            outcome.append((time.monotonic() - started, str(exc)))
        else:
            outcome.append("got it")
            lock.release()

    with lock:
        thread = threading.Thread(target=waiter)
        thread.start()
        thread.join(timeout=20)
        assert not thread.is_alive()
    assert len(outcome) == 1 and outcome[0] != "got it"
    waited, message = outcome[0]  # type: ignore[misc]
    assert waited >= 0.3
    assert str(path) in message


def test_a_lock_without_a_timeout_waits_as_long_as_it_takes(tmp_path: Path) -> None:
    """The default (``timeout=-1``, as filelock's): held by another open file, then by
    another thread, for longer than a second, the lock is waited for, not given up."""
    path = tmp_path / "store.lock"
    lock = FileLock(path)
    for take in (filelock.FileLock(str(path)), lock):
        held = threading.Event()

        def holder(take: filelock.FileLock | FileLock = take, held: threading.Event = held) -> None:
            with take:
                held.set()
                time.sleep(1.2)

        thread = threading.Thread(target=holder)
        thread.start()
        assert held.wait(10)
        started = time.monotonic()
        with lock:
            assert time.monotonic() - started >= 1.0
        thread.join(10)


def test_a_crashed_holder_frees_the_lock_though_its_forked_child_lives_on(tmp_path: Path) -> None:
    """The daemon holds ``daemon.lock`` and forks its sync workers: killed (``kill -9``),
    its lock is free at once for the next daemon, even while a worker it forked still
    runs (the child closed its copy of the descriptor at the fork)."""
    import signal

    path = tmp_path / "daemon.lock"
    read, write = os.pipe()
    holder = os.fork()
    if holder == 0:  # pragma: no cover  (the holder, then its child)
        try:
            lock = FileLock(path, timeout=0)
            lock.acquire()
            worker = os.fork()
            if worker == 0:
                time.sleep(60)
                os._exit(0)
            os.write(write, f"{worker}\n".encode())
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        worker = int(pipe.readline())
    try:
        with pytest.raises(filelock.Timeout):  # held
            filelock.FileLock(str(path), timeout=0).acquire()
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)
        os.kill(worker, 0)  # the worker still runs
        with filelock.FileLock(str(path), timeout=0):  # and the lock is free
            pass
    finally:
        os.kill(worker, signal.SIGKILL)
