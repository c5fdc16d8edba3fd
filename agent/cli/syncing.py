"""`retainer sync` (once), `retainer run` (the daemon) and `retainer status`."""

from __future__ import annotations

import sys

import click

from agent.cli.app import App, setup_logging
from agent.cli.output import age, emit_json, progress_printer, table


@click.command()
@click.argument("sources", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_obj
def sync(app: App, sources: tuple[str, ...], as_json: bool) -> None:
    """Sync once: every enabled source, or the named ones. Exit 1 if any failed."""
    from agent.sync import SyncEngine

    config = app.config(only=set(sources) or None)
    for name in sources:
        config.source(name)
    store = app.store(config)
    engine = SyncEngine(config, app.host, store, progress=progress_printer())
    results = engine.sync_all(sources)
    if as_json:
        emit_json([r.as_dict() for r in results])
    else:
        for r in results:
            if r.ok:
                click.echo(f"{r.source}: {r.messages_new} new messages, "
                           f"{r.deliverables_new} new deliverables ({r.duration:.1f} s)", err=True)
            else:
                click.echo(f"{r.source}: FAILED: {r.error}", err=True)
    if any(not r.ok for r in results):
        sys.exit(1)


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
    config = app.config(validate=False)
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
    counts = store.counts()
    since = config.agent.review_since  # as the next sync applies it (SyncEngine.prepare)
    cutoff = since.isoformat() if since else ("" if since is False else store.first_sync_day())
    if cutoff is None and states:  # synced before the default existed: the next sync keeps it so
        cutoff = ""
    if as_json:
        emit_json({"sources": rows, "totals": counts, "review_since": cutoff or None})
        return
    table([(r["source"], r["platform"], age(r["last_success"]) if r["last_success"] else "never",
            r["next_run"] or "-", r["messages"], r["deliverables"],
            r["last_error"] or "; ".join(r["warnings"])) for r in rows],
          ["source", "platform", "synced", "next run", "messages", "deliverables", "last error"])
    click.echo(f"\n{counts['contractors']} contractors, {counts['candidates']} candidates, "
               f"{counts['deliverables']} deliverables")
    if cutoff:
        click.echo(f"first import: work received before {cutoff} was stored as handled")
    elif cutoff is None:
        click.echo("first import: work received before the day of the first sync will be "
                   "stored as handled (review_since)")

