"""What every command shares: the :class:`App` handed to it through ``click.pass_obj``,
the group class that turns errors into one line on stderr, and logging set-up."""

from __future__ import annotations

import errno
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agent.errors import RetainerError

if TYPE_CHECKING:
    from agent.config import Config
    from agent.config.file import PlainConfig, QuickConfig
    from agent.plugins import PluginHost
    from agent.store import Store

log = logging.getLogger("retainer.cli")


class App:
    """What every command gets through ``click.pass_obj``. (A plain class: a dataclass
    costs every command's start more than it saves.)"""

    def __init__(self, config_path: Path, strict: bool, verbose: int,
                 _host: PluginHost | None = None) -> None:
        self.config_path = config_path
        self.strict = strict
        self.verbose = verbose
        self._host = _host

    def __repr__(self) -> str:
        return (f"App(config_path={self.config_path!r}, strict={self.strict!r}, "
                f"verbose={self.verbose!r})")

    @property
    def host(self) -> PluginHost:
        if self._host is None:
            from agent.plugins import make_plugin_host

            self._host = make_plugin_host(strict=self.strict)
        return self._host

    def load_plugins_for_sync(self, names: tuple[str, ...]) -> None:
        """Before ``retainer sync``: a host with only the plugins the synced sources need
        (their platforms, the sync's hooks, the plugins the config names), when the
        config file plainly says which (else every plugin loads, as for any command)."""
        if self._host is not None:
            return
        from agent.config.file import sync_needs
        from agent.plugins import RENAMED, Needs, make_plugin_host

        found = sync_needs(self.config_path, names)
        if found is None:
            return
        data_dir, platforms, named, notifiers = found
        named = {RENAMED.get(name, name) for name in named}
        hooks = {"source_synced"} | ({"register_notifiers"} if notifiers else set())
        self._host = make_plugin_host(
            strict=self.strict, manifest=data_dir / "cache" / "plugins.json",
            needs=Needs(frozenset(platforms), frozenset(hooks), frozenset(named)))

    def config(self, *, validate: bool = True, only: set[str] | None = None) -> Config:
        from agent.config import load_config

        return load_config(self.config_path, self.host if validate else None, only=only)

    def plain_config(self) -> Config | PlainConfig:
        """The whole config for a read-only command: read without pydantic when the file
        is plainly valid, else loaded as :meth:`config` (``validate=False``) loads it."""
        from agent.config.file import plain_config

        return plain_config(self.config_path) or self.config(validate=False)

    def quick(self) -> QuickConfig:
        """The data folder and review settings, read without validating the whole file."""
        from agent.config.file import quick_config

        return quick_config(self.config_path)

    def store(self, config: Config | QuickConfig | PlainConfig | None = None, *,
              create: bool = True) -> Store:
        from agent.store import Store

        config = config or self.quick()
        return Store(config.data_dir, create=create)


class RetainerGroup(click.Group):
    """Turns domain errors into one clear line on stderr and their exit code; with no
    arguments at all, prints its help on stdout and exits 0."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing:
            click.echo(ctx.get_help(), color=ctx.color)
            ctx.exit(0)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RetainerError as exc:
            from agent.secrets import scrub

            if getattr(ctx.obj, "strict", False):  # --strict: the plugin author's traceback
                import traceback

                click.echo(scrub(traceback.format_exc()).rstrip(), err=True)
            click.echo(f"retainer: error: {scrub(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception:
            if getattr(ctx.obj, "strict", False):
                raise  # --strict: plugin authors see the traceback
            self._one_line(ctx)

    def _one_line(self, ctx: click.Context) -> None:
        """Report the exception being handled in one line (and exit); no traceback."""
        try:
            raise
        except BrokenPipeError:  # `retainer review | head`: the reader has all it wanted
            import os

            try:  # no second error when Python flushes stdout at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            ctx.exit(141)  # as a shell reports a command ended by SIGPIPE
        except OSError as exc:  # the disk, the data folder: say which and what to do
            from agent.secrets import scrub

            log.debug("traceback", exc_info=True)
            where = f" ({exc.filename})" if exc.filename else ""
            hint = ("no space left; free some disk space and try again"
                    if exc.errno == errno.ENOSPC else exc.strerror or type(exc).__name__)
            click.echo(f"retainer: error: {scrub(hint)}{scrub(where)}", err=True)
            ctx.exit(1)
        except Exception as exc:  # a bug: one line, the traceback only with -v
            from agent.secrets import scrub

            log.debug("traceback", exc_info=True)
            click.echo(f"retainer: error: unexpected {type(exc).__name__}: {scrub(str(exc))}"
                       " (a bug in Retainer or a plugin; run with -v for the traceback and "
                       "report it)", err=True)
            ctx.exit(70)

class ScrubSecrets(logging.Filter):
    """Last line of defence: no resolved secret reaches the log, whatever a plugin logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        from agent.secrets import known_secrets, scrub

        if known_secrets():
            record.msg = scrub(record.getMessage())
            record.args = None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


class _Plain(logging.Formatter):
    """``retainer: warning: ...``: the same shape as the command line's own errors."""

    def format(self, record: logging.LogRecord) -> str:
        return f"retainer: {record.levelname.lower()}: {super().format(record)}"


def setup_logging(verbose: int, *, daemon: bool = False) -> None:
    """``-q``: errors only; default: warnings (the daemon: info); ``-v``: info, with the
    sync's per-page lines and tracebacks; ``-vv``: everything, protocol lines included."""
    if verbose < 0:
        level = logging.ERROR
    elif verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1 or daemon:
        level = logging.INFO
    else:
        level = logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    if daemon:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(_Plain("%(message)s"))
    handler.addFilter(ScrubSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in TRACEBACKS:  # -v shows the tracebacks that error messages point to
        logging.getLogger(name).setLevel(logging.DEBUG if verbose >= 1 else logging.NOTSET)


#: Loggers whose debug records are tracebacks ("run with -v for the traceback").
TRACEBACKS = ("retainer.cli", "retainer.sync")
