"""`retainer serve`: the dashboard."""

from __future__ import annotations

import click

from agent.cli.app import App


@click.command("serve")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port to listen on (default 8765, or the port of [agent] web; 0: any free).")
@click.option("--host", "bind", default=None,
              help="Listen on this address instead of 127.0.0.1. Anyone who can reach it and "
                   "has the token can use the dashboard: only for a network you trust.")
@click.pass_obj
def serve(app: App, port: int | None, bind: str | None) -> None:
    """Serve the dashboard (review queue, roster, report) on 127.0.0.1 until Ctrl-C."""
    from agent.web import DEFAULT_PORT, LOOPBACK, make_server, web_address

    config = app.quick()
    configured = web_address(config.path)
    server = make_server(config.path, config.data_dir, lambda: app.host, bind=bind or LOOPBACK,
                         port=port if port is not None else
                         (configured[1] if configured else DEFAULT_PORT))
    if bind and bind not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: listening on {bind}: not only this computer can reach it", err=True)

    def ready() -> None:
        click.echo(f"Retainer dashboard: {server.url}")
        click.echo("Open that URL (the token is kept in the data folder's web/token file); "
                   "Ctrl-C stops the server.")

    server.run(ready)

