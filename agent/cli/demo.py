"""`retainer demo`: a self-contained try-out on bundled sample data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from agent.cli.app import App
from agent.cli.contractors import contractors_candidates, contractors_list
from agent.cli.listings import deliverables
from agent.cli.syncing import sync


def _toml_table(values: dict[str, Any]) -> str:
    """``key = value`` lines for a flat settings table (JSON literals are valid TOML here)."""
    lines = []
    for key, value in values.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
            lines.append(f"{key} = {{ {inner} }}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


_SANDBOX_ON = "enabled = true  # a sandbox that runs while `retainer demo` runs"
_SANDBOX_OFF = "enabled = false  # its sandbox stopped when `retainer demo` ended"


def _demo_sandboxes(stack: Any, app: App, config_path: Path) -> list[str]:
    """Start the marketplace sandboxes whose plugins are installed; add them as sources."""
    started: list[str] = []
    extra = ""
    if "upwork" in app.host.platforms:
        from plugins.upwork.sandbox import start_sandbox as start_upwork

        upwork = stack.enter_context(start_upwork(seed=7, threads=5, messages_per_thread=6))
        os.environ["RETAINER_DEMO_UPWORK_SECRET"] = upwork.client_secret
        settings = upwork.settings(client_secret={"env": "RETAINER_DEMO_UPWORK_SECRET"})
        extra += ('\n[[sources]]\nname = "demo-upwork"\nplatform = "upwork"\nevery = "15m"\n'
                  f"{_SANDBOX_ON}\n[sources.settings]\n" + _toml_table(settings))
        started.append("demo-upwork")
    if "freelancer" in app.host.platforms:
        from plugins.freelancer.sandbox import start_sandbox as start_freelancer

        freelancer = start_freelancer(seed=7, threads=5, messages_per_thread=6)
        stack.callback(freelancer.stop)
        os.environ["RETAINER_DEMO_FREELANCER_TOKEN"] = freelancer.token
        settings = {"token": {"env": "RETAINER_DEMO_FREELANCER_TOKEN"},
                    "base_url": freelancer.base_url}
        extra += ('\n[[sources]]\nname = "demo-freelancer"\nplatform = "freelancer"\n'
                  f'every = "15m"\n{_SANDBOX_ON}\n[sources.settings]\n' + _toml_table(settings))
        started.append("demo-freelancer")
    if extra:
        with config_path.open("a") as handle:
            handle.write("\n# Local marketplace sandboxes started by `retainer demo`; they are\n"
                         "# gone when the demo ends, so these sources only sync during it.\n")
            handle.write(extra)
    if "demo-upwork" in started:  # pre-issued tokens stand in for `retainer auth`
        store = app.store(app.config(validate=False))
        upwork.authorize_source(store.source_dir("demo-upwork"))
    return started


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

    Builds a sample mailbox (and, where their plugins are installed, local marketplace
    sandboxes) in a fresh folder, syncs it, and shows the review queue and the roster.
    """
    import tempfile
    from contextlib import ExitStack

    from agent.demo import build_demo

    app: App = ctx.obj
    folder = target or Path(tempfile.mkdtemp(prefix="retainer-demo-"))
    click.echo(f"Building the demo in {folder} ...")
    config_path = build_demo(folder)
    app.config_path = config_path
    with ExitStack() as stack:
        sandboxes = _demo_sandboxes(stack, app, config_path)
        if sandboxes:
            click.echo(f"Started local marketplace sandboxes: {', '.join(sandboxes)}")
        ctx.invoke(sync, sources=(), as_json=False)
    from agent.demo import seed_history

    seed_history(app.store(app.quick()))
    if sandboxes:  # the config stays usable: later syncs skip the stopped sandboxes
        config_path.write_text(config_path.read_text().replace(_SANDBOX_ON, _SANDBOX_OFF))
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
        click.echo(f"\nRetainer dashboard on the demo data: {server.url}\nCtrl-C stops it.")
        server.run()
