"""`retainer demo`: a self-contained try-out on bundled sample data."""

from __future__ import annotations

from pathlib import Path

import click

from agent.cli.app import App
from agent.cli.contractors import contractors_candidates, contractors_list
from agent.cli.listings import deliverables
from agent.cli.syncing import sync


@click.command()
@click.option("--dir", "target", type=click.Path(path_type=Path), default=None,
              help="Where to build the demo (default: a new temporary folder).")
@click.option("--serve", "serve_web", is_flag=True,
              help="Then open the dashboard on the demo data (until Ctrl-C).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="With --serve: the port (default 8765, or any free one if it is taken).")
@click.pass_context
def demo(ctx: click.Context, target: Path | None, serve_web: bool, port: int | None) -> None:
    """A self-contained try-out on bundled sample data; no accounts needed.

    Every installed platform that offers a demo adds its part in a fresh folder (the
    maildir plugin a sample mailbox, the marketplace plugins local sandboxes); then it
    syncs them and shows the review queue and the roster.
    """
    import tempfile
    from contextlib import ExitStack

    from agent.demo import build_demo, finish_demo, seed_history

    app: App = ctx.obj
    folder = target or Path(tempfile.mkdtemp(prefix="retainer-demo-"))
    click.echo(f"Building the demo in {folder} ...")
    with ExitStack() as stack:  # the platforms' demo servers run until the sync is done
        built = build_demo(folder, list(app.host.platforms.values()), stack,
                           strict=app.host.strict)
        for platform, why in built.skipped.items():
            click.echo(f"retainer: the {platform} demo was skipped: {why}", err=True)
        app.config_path = built.config
        if built.live:
            click.echo(f"Started local marketplace sandboxes: {', '.join(built.live)}")
        ctx.invoke(sync, sources=(), as_json=False)
    config_path = built.config
    seed_history(app.store(app.quick()), built.kept)
    finish_demo(built)  # the config stays usable: later syncs skip the stopped sandboxes
    click.echo("\n== Review queue (oldest first) ==")
    ctx.invoke(deliverables, as_json=False, unreviewed=True, contractor=None)
    click.echo("\n== Roster ==")
    ctx.invoke(contractors_list, as_json=False)
    click.echo("\n== Candidates (wrote to you, not on the roster) ==")
    ctx.invoke(contractors_candidates, as_json=False)
    click.echo(f"\nTry: retainer --config {config_path} messages")
    if serve_web:
        from agent.web import demo_server

        server = demo_server(config_path, app.quick().data_dir, lambda: app.host, port)
        server.run(lambda: click.echo(
            f"\nRetainer dashboard on the demo data: {server.url}\nCtrl-C stops it."))
