"""The daemon: every source on its own schedule until SIGTERM or SIGINT.

Built on a :class:`schedule.Scheduler` instance. Each job catches everything, so one
failing source can neither kill the loop nor starve the others; a failing source backs
off exponentially (and honours a server's Retry-After), persisted in the store so a
restart does not hammer a server that asked us to wait.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import schedule
from filelock import FileLock, Timeout

from agent.config import SourceConfig
from agent.errors import StoreLocked
from agent.store.core import iso
from agent.sync import SyncEngine, SyncResult

log = logging.getLogger("retainer.daemon")

JITTER = 0.1
MAX_BACKOFF = timedelta(hours=6)


def backoff_for(every: timedelta, failures: int, retry_after: float | None) -> timedelta:
    """How long a source waits after ``failures`` consecutive failures."""
    wait: timedelta = min(every * (2 ** max(failures - 1, 0)), max(MAX_BACKOFF, every))
    if retry_after:
        wait = max(wait, timedelta(seconds=retry_after))
    return wait


class Daemon:
    """Schedules :meth:`SyncEngine.sync_source` for every enabled source."""

    def __init__(self, engine: SyncEngine, *, clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self.stop_event = threading.Event()
        self.scheduler = schedule.Scheduler()
        self.clock = clock or (lambda: datetime.now(UTC))
        engine.should_stop = self.stop_event.is_set
        self.runs: dict[str, int] = {}

    def stop(self, *_: Any) -> None:
        if not self.stop_event.is_set():
            log.info("stopping: finishing the current page")
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def schedule_sources(self) -> None:
        for source in self.engine.config.sources:
            if not source.enabled:
                continue
            seconds = max(1, int(source.every.total_seconds()))
            low = max(1, int(seconds * (1 - JITTER)))
            high = max(low, int(seconds * (1 + JITTER)))
            job = self.scheduler.every(low)
            job = job.to(high) if high > low else job
            job.seconds.do(self.run_job, source).tag(source.name)

    NOTIFY_EVERY = 15 * 60  # seconds between reminder checks

    def schedule_notifiers(self) -> None:
        """Check reminders (overdue reviews, waiting contractors, the periodic report)
        every 15 minutes when the config has ``[[notifiers]]``."""
        if self.engine.config.notifiers:
            self.scheduler.every(self.NOTIFY_EVERY).seconds.do(self.notify_job).tag("notifiers")

    def notify_job(self) -> None:
        """One reminder run. Never raises: a failing notifier never stops a sync."""
        try:
            from agent.notify import run_notifiers

            run_notifiers(self.engine.config, self.engine.host, self.engine.store,
                          now=self.clock())
        except Exception:
            log.exception("the reminder run failed unexpectedly")

    def run_job(self, source: SourceConfig) -> None:
        """One scheduled sync. Never raises: an exception here would stop the loop."""
        try:
            state = self.engine.store.source_state(source.name)
            retry_at = state.get("retry_at")
            now = self.clock()
            if retry_at and iso(now) < retry_at:
                log.debug("%s: backing off until %s", source.name, retry_at)
                return
            result = self.engine.sync_source(source)
            self.runs[source.name] = self.runs.get(source.name, 0) + 1
            self._after(source, result)
        except Exception:
            log.exception("%s: the scheduled sync failed unexpectedly", source.name)

    def _after(self, source: SourceConfig, result: SyncResult) -> None:
        state = self.engine.store.source_state(source.name)
        changes: dict[str, Any] = {"retry_at": None}
        if not result.ok:
            wait = backoff_for(source.every, int(state.get("failures", 1)), result.retry_after)
            changes["retry_at"] = iso(self.clock() + wait)
            log.warning("%s: next attempt in %s", source.name, wait)
        runs = [j.next_run for j in self.scheduler.get_jobs(source.name) if j.next_run]
        if runs:
            changes["next_run"] = iso(runs[0].astimezone(UTC))
        with self.engine.store.writing():
            self.engine.store.update_source_state(source.name, **changes)

    def run(self, *, once_first: bool = True) -> None:
        """Run until stopped. Holds ``daemon.lock`` so only one daemon runs per data folder."""
        lock = FileLock(str(self.engine.store.data_dir / "daemon.lock"), timeout=0, mode=0o600)
        try:
            lock.acquire()
        except Timeout:
            raise StoreLocked(
                f"a Retainer daemon is already running on {self.engine.store.data_dir}; "
                "stop it first (systemctl --user stop retainer) or use another data_dir"
            ) from None
        try:
            self.engine.prepare()
            self.schedule_sources()
            self.schedule_notifiers()
            if not self.scheduler.jobs:
                log.warning("no enabled sources in %s; nothing to do", self.engine.config.path)
            log.info("daemon started with %d sources", len(self.scheduler.jobs))
            if once_first:
                for job in list(self.scheduler.jobs):
                    if self.stop_event.is_set():
                        break
                    job.run()  # type: ignore[no-untyped-call]  # also schedules the next run
                    self.stop_event.wait(random.uniform(0, 0.2))
            while not self.stop_event.is_set():
                self.scheduler.run_pending()
                idle = self.scheduler.idle_seconds
                self.stop_event.wait(1.0 if idle is None else min(max(idle, 0.05), 1.0))
            log.info("daemon stopped")
        finally:
            lock.release()
