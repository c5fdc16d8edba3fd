"""The daemon: every source on its own schedule, each sync in its own process.

Built on a :class:`schedule.Scheduler` instance whose jobs only *start* syncs, so the
loop never waits for a source. Each sync runs in a forked worker process with a hard
wall-clock deadline (the connector's declared :attr:`~agent.connector.Connector.deadline`):
past it the worker is asked to stop (SIGTERM: finish the page) and, if it does not, is
killed (SIGKILL). What it committed stays: pages are committed atomically and the store's
locks are released by the kernel with the process. A failing source backs off
exponentially (and honours a server's Retry-After), persisted in the store so a restart
does not hammer a server that asked us to wait.

Why processes and not threads: a thread cannot be stopped from outside. A connector
blocked in a read that never times out (a server trickling one byte every two seconds),
a plugin stuck in a C call or a retry loop would keep its thread, its sockets and its
memory for good; a process can always be ended, and the kernel cleans up after it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

import schedule

from agent.config import SourceConfig
from agent.errors import RetainerError, StoreLocked
from agent.locks import FileLock, LockTimeout
from agent.store.core import iso
from agent.sync import SyncEngine, SyncResult

log = logging.getLogger("retainer.daemon")

JITTER = 0.1
MAX_BACKOFF = timedelta(hours=6)
#: After SIGTERM, how long a worker may take to finish its page before SIGKILL.
STOP_GRACE = 6.0
#: How long a worker past its deadline may take to stop before SIGKILL.
DEADLINE_GRACE = 5.0
TICK = 0.2


def backoff_for(every: timedelta, failures: int, retry_after: float | None) -> timedelta:
    """How long a source waits after ``failures`` consecutive failures."""
    wait: timedelta = min(every * (2 ** max(failures - 1, 0)), max(MAX_BACKOFF, every))
    if retry_after:
        wait = max(wait, timedelta(seconds=retry_after))
    return wait


@dataclass
class Worker:
    """One running sync: its process, the pipe its result comes back on, its clock."""

    source: SourceConfig
    process: multiprocessing.process.BaseProcess
    conn: Connection
    started: float
    deadline: float
    result: dict[str, Any] | None = None
    terminated_at: float | None = None
    killed: bool = False
    overdue: bool = False


def _worker_main(engine: SyncEngine, source: SourceConfig, conn: Connection) -> None:
    """The body of a worker process: one sync, its result sent back to the daemon."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    engine.should_stop = stop.is_set
    from agent.store import Store

    store = Store(engine.store.data_dir)  # file locks must not be shared across a fork
    store._cleaned = True  # the daemon cleaned up before starting any worker
    engine.store = store
    try:
        result = engine.sync_source(source)
        conn.send(dict(result.as_dict(), retry_after=result.retry_after, stopped=result.stopped))
    finally:
        conn.close()


class Daemon:
    """Schedules :meth:`SyncEngine.sync_source` for every enabled source."""

    def __init__(self, engine: SyncEngine, *, clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self.stop_event = threading.Event()
        self.scheduler = schedule.Scheduler()
        self.clock = clock or (lambda: datetime.now(UTC))
        engine.should_stop = self.stop_event.is_set
        self.runs: dict[str, int] = {}
        self.workers: dict[str, Worker] = {}
        self.deadline_grace = DEADLINE_GRACE
        self._mp = multiprocessing.get_context("fork")

    def stop(self, *_: Any) -> None:
        if not self.stop_event.is_set():
            log.info("stopping: running syncs finish their page")
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
            from agent.reminders import run_notifiers

            run_notifiers(self.engine.config, self.engine.host, self.engine.store,
                          now=self.clock())
        except Exception:
            log.exception("the reminder run failed unexpectedly")

    def deadline_for(self, source: SourceConfig) -> float:
        """The source's hard deadline in seconds: its connector's declared ``deadline``."""
        from agent.connector import Connector

        try:
            connector = self.engine.host.platform(source.platform).connector
            deadline = float(connector.deadline)
        except (RetainerError, AttributeError, TypeError, ValueError):
            deadline = Connector.deadline
        return deadline if deadline > 0 else Connector.deadline

    def run_job(self, source: SourceConfig) -> None:
        """Start one scheduled sync in a worker. Never raises: that would stop the loop."""
        try:
            if self.stop_event.is_set():
                return
            if source.name in self.workers:
                log.debug("%s: the previous sync is still running; skipping this turn",
                          source.name)
                return
            state = self.engine.store.source_state(source.name)
            retry_at = state.get("retry_at")
            if retry_at and iso(self.clock()) < retry_at:
                log.debug("%s: backing off until %s", source.name, retry_at)
                return
            planned = [j.next_run for j in self.scheduler.get_jobs(source.name) if j.next_run]
            self._start(source)
            if planned:  # schedule moves next_run on only after this job returns
                late = (datetime.now() - planned[0]).total_seconds()
                log.debug("%s: sync started %.3f s after its planned time", source.name, late)
        except Exception:
            log.exception("%s: the scheduled sync failed unexpectedly", source.name)

    def _start(self, source: SourceConfig) -> None:
        receive, send = self._mp.Pipe(duplex=False)
        process = self._mp.Process(target=_worker_main, args=(self.engine, source, send),
                                   name=f"retainer-sync-{source.name}", daemon=True)
        process.start()
        send.close()
        self.workers[source.name] = Worker(source, process, receive, time.monotonic(),
                                           self.deadline_for(source))
        log.debug("%s: sync started (pid %s)", source.name, process.pid)

    def reap(self) -> None:
        """Collect finished workers; stop the ones past their deadline."""
        now = time.monotonic()
        for name, worker in list(self.workers.items()):
            if worker.result is None:
                with contextlib.suppress(EOFError, OSError):
                    if worker.conn.poll():
                        worker.result = worker.conn.recv()
            if worker.process.is_alive():
                if worker.terminated_at is None and now - worker.started > worker.deadline:
                    worker.overdue = True
                    log.error("%s: the sync passed its deadline of %.0f s; stopping it",
                              name, worker.deadline)
                    self._terminate(worker, now)
                elif (worker.terminated_at is not None and not worker.killed
                      and now - worker.terminated_at > self.deadline_grace):
                    self._kill(worker)
                continue
            worker.process.join(0)
            worker.conn.close()
            del self.workers[name]
            self._finished(worker)

    def _terminate(self, worker: Worker, now: float) -> None:
        worker.terminated_at = now
        with contextlib.suppress(OSError):
            worker.process.terminate()

    def _kill(self, worker: Worker) -> None:
        worker.killed = True
        with contextlib.suppress(OSError):
            worker.process.kill()

    def _finished(self, worker: Worker) -> None:
        source = worker.source
        self.runs[source.name] = self.runs.get(source.name, 0) + 1
        try:
            if worker.result is not None and not worker.overdue:
                data = worker.result
                result = SyncResult(source=source.name, platform=source.platform,
                                    ok=bool(data.get("ok")), error=str(data.get("error") or ""),
                                    error_kind=str(data.get("error_kind") or ""),
                                    retry_after=data.get("retry_after"),
                                    stopped=bool(data.get("stopped")))
            elif self.stop_event.is_set() and not worker.overdue:
                log.info("%s: stopped with the daemon; what it committed is kept", source.name)
                return
            else:
                result = self._record_lost(worker)
            self._after(source, result)
        except Exception:
            log.exception("%s: recording the sync result failed unexpectedly", source.name)

    def _record_lost(self, worker: Worker) -> SyncResult:
        """A worker that ended without a result (past its deadline, or it crashed)."""
        source = worker.source
        if worker.overdue:
            error = (f"the sync did not finish within its deadline of {worker.deadline:.0f} s "
                     "and was stopped; what it committed is kept, and the next sync goes on "
                     "from there (a server that answers too slowly?)")
        else:
            error = (f"the sync process ended unexpectedly (exit code {worker.process.exitcode});"
                     " what it committed is kept. Run `retainer -v sync "
                     f"{source.name}` to see why")
        result = SyncResult(source=source.name, platform=source.platform, ok=False,
                            error=error, error_kind="transient",
                            duration=time.monotonic() - worker.started)
        log.error("%s: %s", source.name, error)
        now = iso(self.clock())
        with self.engine.store.writing():
            state = self.engine.store.source_state(source.name)
            self.engine.store.update_source_state(
                source.name, last_attempt=now, last_error=error, last_error_at=now,
                error_kind="transient", failures=int(state.get("failures", 0)) + 1,
                last_duration=round(result.duration, 3), platform=source.platform)
        self.engine.host.call_each("source_synced", result=result)
        return result

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

    def join_workers(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the running syncs to end, collecting them."""
        until = time.monotonic() + timeout
        while self.workers and time.monotonic() < until:
            self.reap()
            time.sleep(0.05)

    def shutdown_workers(self) -> None:
        """Ask every worker to finish its page; kill those still running after
        :data:`STOP_GRACE` seconds, so the daemon always exits within 10 s."""
        if not self.workers:
            return
        now = time.monotonic()
        for worker in self.workers.values():
            if worker.terminated_at is None:
                self._terminate(worker, now)
        self.join_workers(STOP_GRACE)
        for worker in list(self.workers.values()):
            log.warning("%s: the sync did not stop in %.0f s; killing it (what it committed "
                        "is kept)", worker.source.name, STOP_GRACE)
            self._kill(worker)
            worker.process.join(1.0)
        self.reap()

    def run(self, *, once_first: bool = True) -> None:
        """Run until stopped. Holds ``daemon.lock`` so only one daemon runs per data folder."""
        lock = FileLock(self.engine.store.data_dir / "daemon.lock", timeout=0, mode=0o600)
        try:
            lock.acquire()
        except LockTimeout:
            raise StoreLocked(
                f"a Retainer daemon is already running on {self.engine.store.data_dir}; "
                "stop it first (systemctl --user stop retainer) or use another data_dir"
            ) from None
        try:
            with self.engine.store.writing():
                pass  # remove what a killed run left, before any worker starts writing
            self.engine.prepare()
            self.schedule_sources()
            self.schedule_notifiers()
            if not self.scheduler.jobs:
                log.warning("no enabled sources in %s; nothing to do", self.engine.config.path)
            log.info("daemon started with %d sources (pid %d)", len(self.scheduler.jobs),
                     os.getpid())
            if once_first:
                for job in list(self.scheduler.jobs):
                    if self.stop_event.is_set():
                        break
                    job.run()  # type: ignore[no-untyped-call]  # also schedules the next run
                    self.stop_event.wait(random.uniform(0, 0.2))
            while not self.stop_event.is_set():
                self.scheduler.run_pending()
                self.reap()
                idle = self.scheduler.idle_seconds
                self.stop_event.wait(TICK if idle is None else min(max(idle, 0.05), TICK))
            self.shutdown_workers()
            log.info("daemon stopped")
        finally:
            lock.release()
