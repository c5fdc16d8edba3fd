"""`retainer plugins`: what is installed; `retainer plugins new`: a plugin project."""

from __future__ import annotations

from pathlib import Path

import click

from agent.cli.app import App
from agent.cli.output import Col, emit_json, table


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """Installed plugins, their platforms and hooks."""
    if ctx.invoked_subcommand is not None:
        return
    app: App = ctx.obj
    infos = app.host.infos_sorted()
    if as_json:
        emit_json([i.as_dict() for i in infos])
        return
    table([(i.name, i.version, ", ".join(i.platforms), ", ".join(i.hooks) or "-",
            f"FAILED: {i.error}" if i.error else f"WARNING: {i.warning}" if i.warning else "ok")
           for i in infos],
          [Col("plugin", flex=True), Col("version", drop=2), Col("platforms", flex=True),
           Col("hooks", flex=True, drop=1), Col("state", flex=True)])


@plugins.command("new")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="Where to write the project (default: ./retainer-NAME).")
def plugins_new(name: str, directory: Path | None) -> None:
    """Write a complete plugin project for platform NAME, tests included."""
    from agent.scaffold import write_project

    target = write_project(name, directory)
    click.echo(f"Wrote a plugin project to {target}. Next:\n"
               f"  cd {target}\n  pip install -e '.[test]'\n  pytest\n  retainer plugins")


