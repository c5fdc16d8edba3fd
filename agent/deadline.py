"""A watchdog for total deadlines on blocking network operations.

A socket timeout bounds each *read*, not an operation: a server that sends one byte
every two seconds never trips a 60 s timeout and can hold a command for hours. Wrap each
operation in :meth:`Watchdog.guard`; if it is still running when its deadline passes,
the watchdog calls ``on_expire`` from its own thread (typically: shut the socket down,
which wakes the blocked read with an error) and :attr:`Watchdog.fired` tells the
operation's error handler why it failed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Watchdog:
    """One background thread, started on first use, for one connection's operations."""

    def __init__(self, name: str = "watchdog", *, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.name = name
        self.fired = False
        self._clock = clock
        self._cond = threading.Condition()
        self._due: float | None = None
        self._action: Callable[[], None] | None = None
        self._depth = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    @contextmanager
    def guard(self, seconds: float, on_expire: Callable[[], None]) -> Iterator[None]:
        """Run the block under a deadline of ``seconds``; nested guards share the outer one."""
        with self._cond:
            self._depth += 1
            if self._depth == 1:
                self.fired = False
                self._due = self._clock() + seconds
                self._action = on_expire
                if self._thread is None:
                    self._closed = False
                    self._thread = threading.Thread(target=self._loop, name=self.name,
                                                    daemon=True)
                    self._thread.start()
                self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if self._depth == 0:
                    self._due = None
                    self._action = None
                    self._cond.notify()

    def close(self) -> None:
        """Stop the thread (a later :meth:`guard` starts a new one)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if self._due is None:
                        self._cond.wait()
                        continue
                    left = self._due - self._clock()
                    if left > 0:
                        self._cond.wait(left)
                        continue
                    break
                if self._closed:
                    return
                action, self._action, self._due = self._action, None, None
                self.fired = True
            if action is not None:
                try:
                    action()
                except Exception:  # the operation fails on its own; nothing to add
                    pass
