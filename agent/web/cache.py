"""The dashboard's view of the store: one :class:`Store` for the requests, and derived
results (the queue, the roster's figures, the report) memoized until the store changes.

A memo is stamped with the *fingerprint* of the store: the size and mtime of every file
under ``store/``, taken before the result is computed, so any write (by the dashboard, the
CLI or the daemon) makes it stale. Writes made by the dashboard itself patch the memos they
can (a review takes the item out of the queue) and re-stamp them, since under the store's
write lock nothing else changed; the rest are recomputed in a background thread with its
own :class:`Store` once the owner pauses, so the next page is usually warm.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.store import Store

log = logging.getLogger("retainer.web")

Stamp = tuple[tuple[str, int, int], ...]


class StoreAccess:
    """One :class:`Store` per dashboard, used by one request at a time under ``lock`` (the
    store's caches are not thread-safe), and the memos."""

    def __init__(self, data_dir: Path, lock: threading.RLock) -> None:
        self.data_dir = data_dir
        self.lock = lock
        self._store: Store | None = None
        self._memo: dict[str, tuple[Stamp, Any]] = {}
        self._key_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._patched: set[str] = set()
        self._warmer: Callable[[Store], None] | None = None
        self._warm_store: Store | None = None
        self._warm_lock = threading.Lock()
        self._warm_again = threading.Event()
        self._last_write = 0.0
        self.quiet = 2.0  # seconds without a dashboard write before warming starts

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.data_dir)
        return self._store

    def fingerprint(self) -> Stamp:
        """Every file under ``store/`` with its mtime and size: any write changes it."""
        return self.store.fingerprint()

    def _key_lock(self, key: str) -> threading.Lock:
        with self._locks_lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def memo(self, key: str, compute: Callable[[], Any], stamp: Stamp | None = None) -> Any:
        """``compute()`` once per state of the store; one computation per key at a time (a
        request waits for the warming thread rather than doing the same work twice)."""
        with self._key_lock(key):
            now = stamp if stamp is not None else self.fingerprint()
            hit = self._memo.get(key)
            if hit is not None and hit[0] == now:
                return hit[1]
            value = compute()
            self._memo[key] = (now, value)
            return value

    def peek(self, key: str, stamp: Stamp) -> Any:
        """The memo of ``key`` if it is current for ``stamp``, else None."""
        hit = self._memo.get(key)
        return hit[1] if hit is not None and hit[0] == stamp else None

    def entries(self, stamp: Stamp) -> list[tuple[str, Any]]:
        """Every memo that is current for ``stamp``, as ``(key, value)``."""
        return [(key, value) for key, (at, value) in list(self._memo.items()) if at == stamp]

    def patched(self, key: str) -> None:
        """Inside :meth:`writing`: the memo of ``key`` (every key starting with it, when it
        ends in ``:``) was updated for the write itself, or does not depend on it."""
        self._patched.add(key)

    @contextmanager
    def writing(self) -> Iterator[Store]:
        """The store's write lock (the same file lock as the CLI's and the daemon's). Memos
        patched inside stay current; the others are dropped and warmed again."""
        with self.lock, self.store.writing() as store:
            before = self.fingerprint()
            self._patched = set()
            try:
                yield store
            finally:
                after = self.fingerprint()
                prefixes = tuple(k for k in self._patched if k.endswith(":"))
                for key, (stamp, value) in list(self._memo.items()):
                    kept = key in self._patched or (prefixes and key.startswith(prefixes))
                    if stamp == before and kept:
                        self._memo[key] = (after, value)
                    elif stamp != after:
                        self._memo.pop(key, None)
                self._patched = set()
                self._last_write = time.monotonic()
        self.warm()

    # -- warming in the background ------------------------------------------------------

    def set_warmer(self, warmer: Callable[[Store], None]) -> None:
        self._warmer = warmer

    def warm(self) -> None:
        """Recompute the usual memos in a background thread (at most one runs; a request
        for warming while one runs makes it go round once more)."""
        if self._warmer is None:
            return
        self._warm_again.set()
        if not self._warm_lock.acquire(blocking=False):
            return
        threading.Thread(target=self._warm_loop, name="retainer-web-warm", daemon=True).start()

    @property
    def warming(self) -> bool:
        return self._warm_lock.locked()

    def _warm_loop(self) -> None:
        try:
            while self._warm_again.is_set():
                # not while the owner works through the queue: the queue's own memo is
                # patched by each review, the heavy pages can wait for a pause
                while (wait := self._last_write + self.quiet - time.monotonic()) > 0:
                    time.sleep(wait)
                self._warm_again.clear()
                if self._warm_store is None:
                    self._warm_store = Store(self.data_dir)
                try:
                    assert self._warmer is not None
                    self._warmer(self._warm_store)
                except Exception:  # warming is an optimization: never let it break anything
                    log.debug("warming the dashboard's memos failed", exc_info=True)
        finally:
            self._warm_lock.release()
