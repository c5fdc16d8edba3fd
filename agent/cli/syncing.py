"""`retainer sync` (once), `retainer run` (the daemon) and `retainer status`."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agent.cli.app import App, setup_logging
from agent.cli.output import Col, emit_json, table
from agent.humanize import ago, until

if TYPE_CHECKING:
    from types import FrameType

    from agent.sync import SyncResult


@click.command()
@click.argument("sources", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_obj
def sync(app: App, sources: tuple[str, ...], as_json: bool) -> None:
    """Sync once: every enabled source, or the named ones. Exit 1 if any failed.

    The summary goes to stdout, errors to stderr; -v adds a line per stored page. Ctrl-C
    stops after the page being stored (twice: at once) and exits 130; every committed
    page is kept and the next sync goes on from there.
    """
    from agent.quicksync import quick_sync

    skipped = quick_sync(app.config_path, sources) if app._host is None else None
    if skipped is not None:  # nothing any source stands for changed: no plugin loaded
        if as_json:
            emit_json([r.as_dict() for r in skipped])
        else:
            for r in skipped:
                click.echo(f"{r.source}: {sync_line(r)}")
        return
    from agent.sync import SyncEngine

    app.load_plugins_for_sync(sources)
    quick_env = quick_environment(app, sources)  # before the config is validated
    config = app.config(only=set(sources) or None)
    for name in sources:
        config.source(name)
    if not config.sources:  # --json: still one document on stdout, the advice on stderr
        if as_json:
            emit_json([])
        click.echo(no_sources_hint(config.path), err=as_json)
        return
    store = app.store(config)
    watch = SyncWatch(verbose=app.verbose, quiet=as_json)
    engine = SyncEngine(config, app.host, store, should_stop=watch.stopping.is_set,
                        on_page=watch.page, quick_env=quick_env)
    with watch.ctrl_c():
        try:
            results = engine.sync_all(sources)
        except KeyboardInterrupt:  # the second Ctrl-C: the page being fetched is dropped
            watch.clear()
            click.echo(f"retainer: interrupted: {watch.kept()}", err=True)
            sys.exit(130)
    watch.clear()
    if as_json:
        emit_json([r.as_dict() for r in results])
    else:
        for r in results:
            click.echo(f"{r.source}: {sync_line(r)}")
        if not results and not watch.stopping.is_set():
            click.echo(f"No enabled sources in {config.path}: set `enabled = true` on one, or "
                       "name it (`retainer sync NAME` syncs a disabled source too).")
    if watch.stopping.is_set():
        click.echo(f"retainer: interrupted: {watch.kept()}", err=True)
        sys.exit(130)
    if any(not r.ok for r in results):
        sys.exit(1)


def quick_environment(app: App, sources: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per source, what its quick record will be valid for (agent.quicksync), read from
    the file before it is validated (so a later edit is never taken as seen)."""
    from agent.config.file import quick_config, read_toml
    from agent.errors import ConfigError
    from agent.quicksync import chosen_tables, environment

    try:
        data = read_toml(app.config_path)
        data_dir = quick_config(app.config_path).data_dir
    except ConfigError:
        return {}
    tables = chosen_tables(data, sources) or []
    if not tables:
        return {}
    store = app.store(quick_config(app.config_path))
    found: dict[str, dict[str, Any]] = {}
    for source in tables:
        env = environment(data, source, store, data_dir / "cache" / "plugins.json")
        if env is not None and isinstance(source.get("name"), str):
            found[source["name"]] = env
    return found


def sync_line(result: SyncResult) -> str:
    """One source's outcome: what it stored, or that it failed (the error is on stderr)."""
    stored = (f"{result.messages_new:,} new messages, {result.deliverables_new:,} new "
              f"deliverables")
    if result.ok and result.stopped:
        return f"stopped after {result.pages:,} page(s); {stored} kept ({result.duration:.1f} s)"
    if result.ok:
        return f"{stored} ({result.duration:.1f} s)"
    kept = f"; {stored} kept from {result.pages:,} page(s)" if result.pages else ""
    return f"failed ({result.error_kind or 'error'}){kept}"


def no_sources_hint(path: Path) -> str:
    return (f"No sources in {path}. Add one, e.g.:\n\n"
            '[[sources]]\nname = "inbox"\nplatform = "imap"     # or maildir, upwork, '
            'freelancer: `retainer plugins`\n[sources.settings]\nhost = "imap.example.com"\n'
            'username = "me@example.com"\npassword = { env = "RETAINER_IMAP_PASSWORD" }\n\n'
            "Every platform's settings: README.md (\"Platforms\") and "
            "configs/retainer.example.toml; then `retainer config check`.")


class SyncWatch:
    """What the command line shows while a sync runs: a line per page with -v, a progress
    bar on a terminal for a long sync, and on Ctrl-C what was kept."""

    def __init__(self, *, verbose: int, quiet: bool) -> None:
        self.verbose = verbose
        self.stopping = threading.Event()
        self.latest: dict[str, SyncResult] = {}
        self.started = time.monotonic()
        self.bar = (not quiet and verbose == 0 and sys.stderr.isatty()
                    and not os.environ.get("RETAINER_NO_PROGRESS"))
        self._drawn = False

    def page(self, result: SyncResult, progress: tuple[int, int] | None) -> None:
        if result.source not in self.latest:
            self.started = time.monotonic()
        self.latest[result.source] = result
        if self.verbose > 0:
            where = f" ({progress[0]:,}/{progress[1]:,})" if progress and progress[1] else ""
            click.echo(f"{result.source}: page {result.pages:,} stored{where}: "
                       f"{result.messages_new:,} new messages, {result.messages_updated:,} "
                       f"updated, {result.deliverables_new:,} new deliverables so far", err=True)
        elif self.bar and progress and progress[1] and time.monotonic() - self.started >= 1:
            self._draw(result.source, *progress)

    def _draw(self, source: str, done: int, total: int) -> None:
        import shutil  # here: `status` and a sync with nothing new draw no bar

        width = shutil.get_terminal_size((80, 24)).columns
        counts = f" {done:,}/{total:,} {100 * done / total:3.0f}%"
        label = source[:20]
        size = max(width - len(label) - len(counts) - 5, 10)
        filled = round(size * min(done / total, 1))
        sys.stderr.write(f"\r{label} [{'#' * filled}{'-' * (size - filled)}]{counts}")
        sys.stderr.flush()
        self._drawn = True

    def clear(self) -> None:
        if self._drawn:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._drawn = False

    def kept(self) -> str:
        pages = sum(r.pages for r in self.latest.values())
        new = sum(r.messages_new for r in self.latest.values())
        files = sum(r.deliverables_new for r in self.latest.values())
        return (f"kept {pages:,} committed page(s): {new:,} new messages and {files:,} new "
                "deliverables stored; the next `retainer sync` goes on from there")

    @contextmanager
    def ctrl_c(self) -> Iterator[None]:
        """While the sync runs: the first Ctrl-C stops after the page being stored, a
        second one at once; a log line wipes the progress bar first."""
        import signal  # here: `status` and a sync with nothing new catch no Ctrl-C

        def first(signum: int, frame: FrameType | None) -> None:
            self.stopping.set()
            self.clear()
            click.echo("retainer: stopping after the page being stored (Ctrl-C again to stop "
                       "at once)", err=True)
            signal.signal(signal.SIGINT, signal.default_int_handler)

        def wipe_bar(record: logging.LogRecord) -> bool:
            self.clear()  # a log line starts on a clean line, not after the bar
            return True

        handlers = logging.getLogger().handlers
        for handler in handlers:
            handler.addFilter(wipe_bar)
        try:
            if threading.current_thread() is not threading.main_thread():
                yield  # signals only reach the main thread (a test calling in from another)
                return
            previous = signal.signal(signal.SIGINT, first)
            try:
                yield
            finally:  # once stopping, a further Ctrl-C must not cut the account of what was kept
                signal.signal(signal.SIGINT,
                              signal.SIG_IGN if self.stopping.is_set() else previous)
        finally:
            for handler in handlers:
                handler.removeFilter(wipe_bar)


@click.command()
@click.pass_obj
def run(app: App) -> None:
    """Run the daemon: every source on its own schedule until SIGTERM/SIGINT."""
    from agent.scheduler import Daemon
    from agent.sync import SyncEngine

    setup_logging(app.verbose, daemon=True)
    config = app.config()
    store = app.store(config)
    daemon = Daemon(SyncEngine(config, app.host, store))
    daemon.install_signal_handlers()
    web = None
    if config.agent.web:  # [agent] web = "127.0.0.1:8765": the dashboard beside the daemon
        from agent.web import make_server, parse_address

        bind, port = parse_address(config.agent.web)
        web = make_server(config.path, config.data_dir, lambda: app.host, bind=bind,
                          port=port).start()
        click.echo(f"dashboard: {web.url.split('?')[0]} (access token in "
                   f"{config.data_dir / 'web' / 'token'}; `retainer serve` prints the full URL)",
                   err=True)
    try:
        daemon.run()
    finally:
        if web is not None:
            web.close()

@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def status(app: App, as_json: bool) -> None:
    """Per source: last success, last error, next run, counts."""
    config = app.plain_config()
    store = app.store(config)
    states = store.source_states()
    committed = store.source_counts()  # counted in the store, not kept beside it
    rows = []
    for source in config.sources:
        state = states.get(source.name, {})
        stored = committed.get(source.name, {})
        rows.append({
            "source": source.name, "platform": source.platform, "enabled": source.enabled,
            "every": str(source.every),
            "last_success": state.get("last_success"), "last_attempt": state.get("last_attempt"),
            "last_error": state.get("last_error"), "last_error_at": state.get("last_error_at"),
            "error_kind": state.get("error_kind"), "failures": state.get("failures", 0),
            "next_run": state.get("next_run"), "retry_at": state.get("retry_at"),
            "messages": stored.get("messages", 0), "deliverables": stored.get("deliverables", 0),
            "warnings": state.get("warnings") or [],
        })
    counts = store.counts(committed)
    since = config.agent.review_since  # as the next sync applies it (SyncEngine.prepare)
    cutoff = since.isoformat() if since else ("" if since is False else store.first_sync_day())
    if cutoff is None and states:  # synced before the default existed: the next sync keeps it so
        cutoff = ""
    if as_json:
        emit_json({"sources": rows, "totals": counts, "review_since": cutoff or None})
        return
    if not rows:
        click.echo(no_sources_hint(config.path))
        return
    table([(r["source"], r["platform"], ago(r["last_success"], none="never"),
            until(r["next_run"]) if r["enabled"] else "disabled", f"{r['messages']:,}",
            f"{r['deliverables']:,}", r["last_error"] or "; ".join(r["warnings"]))
           for r in rows],
          [Col("source", flex=True), Col("platform", drop=1), "synced", "next run",
           Col("messages", right=True), Col("deliverables", right=True),
           Col("last error", flex=True)])
    click.echo(f"\n{counts['contractors']} contractors, {counts['candidates']} candidates, "
               f"{counts['deliverables']} deliverables")
    if cutoff:
        click.echo(f"first import: work received before {cutoff} was stored as handled")
    elif cutoff is None:
        click.echo("first import: work received before the day of the first sync will be "
                   "stored as handled (review_since)")

