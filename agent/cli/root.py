"""The ``retainer`` group: global options, every builtin command, the plugins' commands
(``register_commands``), and :func:`main`, the console-script entry point."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib import import_module
from pathlib import Path
from typing import NoReturn

import click

from agent.cli.app import App, RetainerGroup, setup_logging
from agent.errors import RetainerError

#: Every builtin command: name -> (module of agent.cli, attribute). A command's module is
#: imported when the command is used (or listed in the help), so `retainer status` does
#: not pay for the modules of the fifteen others.
BUILTINS: dict[str, tuple[str, str]] = {
    "init": ("configure", "init"), "config": ("configure", "config_group"),
    "sync": ("syncing", "sync"), "run": ("syncing", "run"), "status": ("syncing", "status"),
    "auth": ("auth", "auth"), "plugins": ("plugins", "plugins"),
    "messages": ("listings", "messages"), "deliverables": ("listings", "deliverables"),
    "contractors": ("contractors", "contractors"), "review": ("review", "review"),
    "instructions": ("instructions", "instructions"), "report": ("report", "report"),
    "notify": ("report", "notify"), "serve": ("serve", "serve"), "demo": ("demo", "demo"),
}


class RootGroup(RetainerGroup):
    """The ``retainer`` group: builtin commands are loaded on first use (see
    :data:`BUILTINS`); a name it does not know loads them all, so click's "did you
    mean" sees every command."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(BUILTINS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            if cmd_name in BUILTINS:
                self._load(cmd_name)
            else:
                self.load_builtins()
        return self.commands.get(cmd_name)

    def load_builtins(self) -> None:
        for name in BUILTINS:
            if name not in self.commands:
                self._load(name)

    def _load(self, name: str) -> None:
        module, attr = BUILTINS[name]
        command: click.Command = getattr(import_module(f"agent.cli.{module}"), attr)
        self.commands.setdefault(name, command)  # a plugin's command of that name stays


@click.group(cls=RootGroup)
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="Config file (default: $RETAINER_CONFIG or the user config folder).")
@click.option("--strict", is_flag=True, help="Let plugin errors raise (for plugin authors).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for everything).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.version_option(package_name="retainer")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, strict: bool, verbose: int,
        quiet: bool) -> None:
    """Keep your freelancers, their messages and their deliverables in one reviewed place."""
    from agent.config.file import default_config_path

    strict = strict or os.environ.get("RETAINER_STRICT") == "1"
    setup_logging(-1 if quiet else verbose)
    if ctx.obj is None:
        ctx.obj = App(config_path or default_config_path(), strict, -1 if quiet else verbose)
    else:  # main() built it early to register plugin commands
        ctx.obj.config_path = config_path or ctx.obj.config_path
        ctx.obj.strict = ctx.obj.strict or strict
        if ctx.obj._host is not None:
            ctx.obj._host.strict = ctx.obj.strict
        ctx.obj.verbose = -1 if quiet else verbose


def build_cli(app: App | None = None, *, command: str | None = None) -> click.Group:
    """The command group with the plugins' commands added (``register_commands``).

    When ``command`` names a builtin command, plugins are not loaded here: a listing
    command then starts without importing every plugin (they load later if needed).
    """
    if app is not None and (command is None or command not in BUILTINS):
        if isinstance(cli, RootGroup):
            cli.load_builtins()  # plugins see (and may replace) every builtin, as ever
        app.host.call_each("register_commands", cli=cli)
    return cli


def _command_name(args: Sequence[str]) -> str | None:
    """The subcommand in ``args`` (the first word that is not a global option)."""
    takes_value = {"--config"}
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in takes_value:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def _config_arg(args: Sequence[str]) -> Path | None:
    """The ``--config`` given before the subcommand, if any (then the default path, and
    platformdirs with it, is not looked up)."""
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            return Path(args[i + 1])
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1])
        if not arg.startswith("-"):
            break
    return None


#: Commands that read the store, print and exit: they run without the cyclic garbage
#: collector (see :func:`main`).
SHORT_LIVED = frozenset({"status", "review", "contractors", "deliverables", "messages",
                         "report"})


def main(argv: Sequence[str] | None = None) -> NoReturn:
    # Retainer loads no pydantic plugins; skipping their discovery saves start-up time.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "1")
    import gc

    args = list(sys.argv[1:] if argv is None else argv)
    command = _command_name(args)
    paused = command in SHORT_LIVED and gc.isenabled()
    if paused:
        # A listing parses read models and shards (tens of thousands of lists and dicts,
        # none in a cycle), prints and exits: the collector's passes over them are pure
        # cost (a tenth of `retainer report --json`); reference counting frees it all.
        gc.disable()
    try:
        _run(args, command)
    finally:
        if paused:
            gc.enable()


def _run(args: list[str], command: str | None) -> NoReturn:
    from agent.config.file import default_config_path

    strict = "--strict" in args or os.environ.get("RETAINER_STRICT") == "1"
    app = App(_config_arg(args) or default_config_path(), strict, 0)
    try:
        group = build_cli(app, command=command)
    except RetainerError as exc:
        click.echo(f"retainer: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    group.main(args=args, prog_name="retainer", obj=app)
    sys.exit(0)
