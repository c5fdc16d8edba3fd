"""The ``retainer`` command line. Listing commands take ``--json`` and then print one
JSON document on stdout and nothing else; logs and progress go to stderr."""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from agent.errors import ConfigError, RetainerError
from agent.humanize import age as age
from agent.humanize import human_size as human_size

if TYPE_CHECKING:
    from agent.config import Config
    from agent.configfile import QuickConfig
    from agent.plugins import PluginHost
    from agent.store import Store

log = logging.getLogger("retainer")


# -- plumbing ----------------------------------------------------------------------------


@dataclass
class App:
    """What every command gets through ``click.pass_obj``."""

    config_path: Path
    strict: bool
    verbose: int
    _host: PluginHost | None = None

    @property
    def host(self) -> PluginHost:
        if self._host is None:
            from agent.plugins import make_plugin_host

            self._host = make_plugin_host(strict=self.strict)
        return self._host

    def config(self, *, validate: bool = True, only: set[str] | None = None) -> Config:
        from agent.config import load_config

        return load_config(self.config_path, self.host if validate else None, only=only)

    def quick(self) -> QuickConfig:
        """The data folder and review settings, read without validating the whole file."""
        from agent.configfile import quick_config

        return quick_config(self.config_path)

    def store(self, config: Config | QuickConfig | None = None, *, create: bool = True) -> Store:
        from agent.store import Store

        config = config or self.quick()
        return Store(config.data_dir, create=create)


class RetainerGroup(click.Group):
    """Turns domain errors into one clear line on stderr and their exit code."""

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


def emit_json(document: Any) -> None:
    """Print one JSON document on stdout (orjson: the review queue at 50,000 messages
    would otherwise spend most of its time in the standard library's indenting encoder)."""
    import orjson

    try:
        data = orjson.dumps(document, default=str,
                            option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):  # e.g. text with lone surrogates
        data = json.dumps(document, indent=2, ensure_ascii=False, default=str).encode(
            "utf-8", "replace")
    click.echo(data.decode("utf-8"))


def emit_json_list(items: Iterable[Any]) -> None:
    """Print a JSON array item by item (one document on stdout, written as it is read)."""
    import orjson

    click.echo("[", nl=False)
    separator = "\n"
    for item in items:
        try:
            text = orjson.dumps(item, default=str, option=orjson.OPT_INDENT_2).decode()
        except (TypeError, orjson.JSONEncodeError):
            text = json.dumps(item, indent=2, ensure_ascii=False, default=str)
        click.echo(separator + text, nl=False)
        separator = ",\n"
    click.echo("\n]" if separator != "\n" else "]")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """Print aligned columns (cells are cut to 48 characters)."""
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= 48 else text[:47] + "…"


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


def setup_logging(verbose: int, *, daemon: bool = False) -> None:
    level = logging.DEBUG if verbose > 0 else logging.INFO if daemon else logging.WARNING
    if verbose < 0:
        level = logging.ERROR
    handler = logging.StreamHandler(sys.stderr)
    fmt = ("%(asctime)s %(levelname)s %(name)s: %(message)s" if daemon
           else "retainer: %(levelname)s: %(message)s")
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(ScrubSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def progress_printer() -> Callable[[str, int, int], None] | None:
    if not sys.stderr.isatty():
        return None

    def show(source: str, done: int, total: int) -> None:
        pct = 100 * done / total if total else 100.0
        sys.stderr.write(f"\r{source}: {done}/{total} ({pct:.0f}%)   ")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


# -- the group -----------------------------------------------------------------------------


@click.group(cls=RetainerGroup)
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
    from agent.configfile import default_config_path

    strict = strict or os.environ.get("RETAINER_STRICT") == "1"
    setup_logging(-1 if quiet else verbose)
    if ctx.obj is None:
        ctx.obj = App(config_path or default_config_path(), strict, verbose)
    else:  # main() built it early to register plugin commands
        ctx.obj.config_path = config_path or ctx.obj.config_path
        ctx.obj.strict = ctx.obj.strict or strict
        if ctx.obj._host is not None:
            ctx.obj._host.strict = ctx.obj.strict
        ctx.obj.verbose = verbose


# -- init and config -------------------------------------------------------------------------


@cli.command()
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
@click.pass_obj
def init(app: App, force: bool) -> None:
    """Write a commented starter config."""
    from agent.config import STARTER_CONFIG
    from agent.files import ensure_private_dir, write_private

    path = app.config_path
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; pass --config with a file name, e.g. "
                          f"{path / 'config.toml'}")
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; edit it, or pass --force to overwrite it")
    if not path.parent.exists():  # only what is missing is created (0700); an existing
        ensure_private_dir(path.parent)  # folder keeps its mode (it may be /tmp or ~)
    elif not path.parent.is_dir():
        raise ConfigError(f"{path.parent} is not a folder; pass --config with another path")
    try:
        write_private(path, STARTER_CONFIG.encode())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the config file: {exc.strerror}") from None
    click.echo(f"wrote {path}; edit it, then run `retainer config check`")


@cli.group("config")
def config_group() -> None:
    """Inspect the config file."""


@config_group.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def config_check(app: App, as_json: bool) -> None:
    """Validate the config and every source's settings (secrets redacted)."""
    try:
        config = app.config()
    except ConfigError as exc:
        if as_json:
            emit_json({"ok": False, "errors": str(exc).splitlines()})
        else:
            click.echo(str(exc), err=True)
        sys.exit(1)
    sources: list[dict[str, Any]] = []
    for source in config.sources:
        if source.name not in config.settings:
            sources.append({"name": source.name, "platform": source.platform,
                            "every": str(source.every), "enabled": False, "settings": {}})
            continue
        settings = config.settings[source.name]
        sources.append({
            "name": source.name, "platform": source.platform,
            "every": str(source.every), "enabled": source.enabled,
            "settings": json.loads(settings.model_dump_json()),
        })
    if as_json:
        emit_json({"ok": True, "path": str(config.path), "data_dir": str(config.data_dir),
                   "sources": sources})
        return
    click.echo(f"{config.path}: ok, {len(sources)} source(s), data in {config.data_dir}")
    for entry in sources:
        click.echo(f"  {entry['name']} ({entry['platform']}, every {entry['every']})")
        for key, value in entry["settings"].items():
            click.echo(f"    {key} = {json.dumps(value)}")


# -- syncing ---------------------------------------------------------------------------------


@cli.command()
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


@cli.command()
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


@cli.command("auth")
@click.argument("names", nargs=-1, required=True, metavar="SOURCE")
@click.option("--no-browser", is_flag=True, help="No browser here: use the device code where "
              "the provider has one (Microsoft), else print the address and take the pasted "
              "redirect.")
@click.option("--code", help="Finish a sign-in started with --print-url: the address the "
              "browser landed on (or the bare code).")
@click.option("--print-url", is_flag=True, help="Only print the sign-in address, then stop.")
@click.pass_obj
def auth(app: App, names: tuple[str, ...], no_browser: bool, code: str | None,
         print_url: bool) -> None:
    """Sign the source SOURCE in (OAuth 2.0) and save its tokens (0600) in the data folder."""
    from agent.oauth import sign_in

    if len(names) == 2:  # `retainer auth upwork SOURCE`, from before auth was host-owned
        platform_name, source = names
        click.echo(f"retainer: `retainer auth {platform_name} {source}` is deprecated; "
                   f"use `retainer auth {source}`", err=True)
    elif len(names) == 1:
        platform_name, source = "", names[0]
    else:
        raise click.UsageError("give one source: retainer auth SOURCE")
    config = app.config(only={source})
    source_config = config.source(source)
    if platform_name and source_config.platform != platform_name:
        raise ConfigError(f'source "{source}" is a {source_config.platform} source, not '
                          f"{platform_name}; run `retainer auth {source}`")
    platform = app.host.platforms.get(source_config.platform)
    settings = config.settings.get(source)
    client = (platform.signin(settings, source)
              if platform is not None and platform.signin is not None and settings is not None
              else None)
    if client is None:
        hint = (' (set auth = "oauth2" in its settings to sign in with Google or Microsoft)'
                if source_config.platform == "imap" else "")
        raise ConfigError(f'source "{source}" does not sign in with OAuth 2.0{hint}')
    state_dir = app.store(config).source_dir(source)
    result = sign_in(client, state_dir, say=click.echo, no_browser=no_browser, code=code,
                     print_url=print_url,
                     ask=lambda prompt: str(click.prompt(prompt)))
    if result is None:
        return
    who = f" as {result.who}" if result.who else ""
    click.echo(f"Signed in to {client.provider.label}{who}. Tokens saved in {result.path} "
               "(mode 0600).")
    click.echo(f"Next: retainer sync {source}")


@cli.command()
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


@cli.group(invoke_without_command=True)
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
          ["plugin", "version", "platforms", "hooks", "state"])


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


# -- listings --------------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--contractor", help="Only this contractor (id, name or address).")
@click.option("--source", help="Only this source.")
@click.option("--limit", type=click.IntRange(min=0), default=None,
              help="At most this many (newest first).")
@click.pass_obj
def messages(app: App, as_json: bool, contractor: str | None, source: str | None,
             limit: int | None) -> None:
    """Stored messages, newest first."""
    from itertools import islice

    store = app.store()
    found = store.iter_messages_newest_first(contractor=contractor, source=source)
    if as_json:  # streamed: 50,000 messages never sit in memory at once
        emit_json_list(islice(found, limit))
        return
    docs = list(islice(found, limit))
    names = {c["id"]: c["name"] for c in store.contractors()}
    table([(d["id"], d["sent_at"][:16].replace("T", " "), d["source"], d["direction"],
            names.get(d["contractor_id"] or "", d["sender"]["name"] or d["sender"]["address"]),
            d["subject"]) for d in docs],
          ["id", "sent", "source", "dir", "who", "subject"])


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--unreviewed", is_flag=True, help="Only the review queue.")
@click.option("--contractor", help="Only this contractor (id, name or address).")
@click.pass_obj
def deliverables(app: App, as_json: bool, unreviewed: bool, contractor: str | None) -> None:
    """Stored deliverables; with --unreviewed, the review queue (oldest first)."""
    store = app.store()
    docs = store.deliverables(unreviewed=unreviewed, contractor=contractor)
    if as_json:
        emit_json(docs)
        return
    names = {c["id"]: c["name"] for c in store.contractors()}
    table([(d["id"], age(d["received_at"]), names.get(d["contractor_id"] or "", "?"),
            d["filename"], human_size(d["size"]), d["review_status"],
            "FLAGGED: " + d["status"] if d.get("flagged") else d["status"]) for d in docs],
          ["id", "age", "contractor", "file", "size", "review", "status"])


# -- contractors -------------------------------------------------------------------------------


def contractor_rows(store: Store) -> list[dict[str, Any]]:
    """Every contractor with contact dates and metrics (see :mod:`agent.stats`), by name."""
    from agent.stats import roster_rows

    return roster_rows(store)


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def contractors(ctx: click.Context, as_json: bool) -> None:
    """The roster. Without a subcommand: list it."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(contractors_list, as_json=as_json)


@contractors.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def contractors_list(app: App, as_json: bool) -> None:
    """Every contractor: status, platforms, skills, rate, contact, work, quality, spend."""
    from agent.commands import roster_table

    store = app.store()
    rows = contractor_rows(store)
    if as_json:
        emit_json(rows)
        return
    roster_table(rows)


@contractors.command("candidates")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def contractors_candidates(app: App, as_json: bool) -> None:
    """People who wrote but are not on the roster (promote them with `contractors add`)."""
    docs = sorted(app.store().candidates(), key=lambda d: d.get("last_seen") or "", reverse=True)
    if as_json:
        emit_json(docs)
        return
    table([(d["key"], d.get("name", ""), age(d.get("last_seen"))) for d in docs],
          ["identity", "name", "last seen"])


@contractors.command("add")
@click.argument("who")
@click.option("--name", help="Display name (default: the name seen in their mail).")
@click.option("--email", "emails", multiple=True, help="Another address of theirs.")
@click.option("--skill", "skills", multiple=True, help="A skill (repeat for several).")
@click.option("--status", default="trial", show_default=True,
              type=click.Choice(["trial", "core", "bench", "retired"]))
@click.option("--rate", type=float, help="Hourly rate, for spend estimates.")
@click.option("--json", "as_json", is_flag=True, help="Print the contractor as JSON.")
@click.pass_obj
def contractors_add(app: App, who: str, name: str | None, emails: tuple[str, ...],
                    skills: tuple[str, ...], status: str, rate: float | None,
                    as_json: bool) -> None:
    """Add a contractor, or promote a candidate: WHO is an address, an identity
    (``upwork:~0123``) or, with --email, a name."""
    from agent.models import Identity

    store = app.store()
    with store.writing():
        roster = store.roster()
        idents: list[Identity] = []
        if "@" in who and ":" not in who:
            who = f"email:{who}"
        if ":" in who:
            platform, _, address = who.partition(":")
            seen = roster.identities.get(who.lower(), {})
            idents.append(Identity(platform, address, name=seen.get("name", "")))
            display = name or seen.get("name") or address
        else:
            display = name or who
        idents += [Identity("email", e) for e in emails]
        if not idents:
            raise ConfigError("give an address or identity, or a name with --email ADDRESS")
        doc = store.add_contractor(display, idents, status=status, skills=skills, rate=rate)
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"{doc['name']} ({doc['id']}) is on the roster as {doc['status']}")


@contractors.command("show")
@click.argument("who")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def contractors_show(app: App, who: str, as_json: bool) -> None:
    """One contractor: identities, recent messages and deliverables."""
    store = app.store()
    doc = store.find_contractor(who)
    row = next(r for r in contractor_rows(store) if r["id"] == doc["id"])
    msgs = store.messages(contractor=doc["id"])
    work = store.deliverables(contractor=doc["id"])
    if as_json:
        emit_json(dict(row, messages=len(msgs), deliverable_count=row.get("deliverables", 0),
                       deliverables=work, recent_messages=msgs[:20]))
        return
    from agent.commands import _hours, _money, _pct

    rating = row.get("average_rating")
    click.echo(f"{row['name']} ({row['id']}), {row['status']}")
    click.echo(f"  identities: {', '.join(row.get('identities', []))}")
    click.echo(f"  skills: {', '.join(row.get('skills', [])) or '-'}; "
               f"rate {_money(row.get('rate'), row.get('currency', ''))}")
    click.echo(f"  first contact {row['first_contact'] or '-'}, last {row['last_contact'] or '-'}")
    click.echo(f"  {len(msgs)} messages, {len(work)} deliverables, average rating "
               f"{'-' if rating is None else f'{rating:.1f}'}, revisions "
               f"{_pct(row.get('revision_rate'))}, median turnaround "
               f"{_hours(row.get('median_turnaround_hours'))}, spend "
               f"{_money(row.get('spend'), row.get('currency', ''))}"
               f"{' (estimated)' if row.get('spend_estimated') else ''}")
    for d in work[-10:]:
        click.echo(f"    {d['id']}  {d['filename']}  {d['review_status']}")


@contractors.command("status")
@click.argument("who")
@click.argument("new_status", type=click.Choice(["trial", "core", "bench", "retired"]))
@click.pass_obj
def contractors_status(app: App, who: str, new_status: str) -> None:
    """Change a contractor's status (trial, core, bench, retired)."""
    store = app.store()
    with store.writing():
        doc = store.update_contractor(store.find_contractor(who)["id"], status=new_status)
    click.echo(f"{doc['name']} is now {doc['status']}")


@contractors.command("demote")
@click.argument("who")
@click.pass_obj
def contractors_demote(app: App, who: str) -> None:
    """Take someone off the roster; their identities become candidates again."""
    store = app.store()
    with store.writing():
        doc = store.demote(who)
    click.echo(f"{doc['name']} is a candidate again")


@contractors.command("merge")
@click.argument("keep")
@click.argument("other")
@click.pass_obj
def contractors_merge(app: App, keep: str, other: str) -> None:
    """Merge OTHER into KEEP (one person on several platforms); history follows."""
    store = app.store()
    with store.writing():
        doc = store.merge_contractors(keep, other)
    click.echo(f"merged into {doc['name']} ({doc['id']}): {', '.join(doc['identities'])}")


# -- demo --------------------------------------------------------------------------------------


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


@cli.command()
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


# -- entry point -----------------------------------------------------------------------------


def build_cli(app: App | None = None, *, command: str | None = None) -> click.Group:
    """The command group with the plugins' commands added (``register_commands``).

    When ``command`` names a builtin command, plugins are not loaded here: a listing
    command then starts without importing every plugin (they load later if needed).
    """
    from agent.commands import register as _register_commands

    _register_commands(cli)
    if app is not None and (command is None or command not in cli.commands):
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


def main(argv: Sequence[str] | None = None) -> NoReturn:
    # Retainer loads no pydantic plugins; skipping their discovery saves start-up time.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "1")
    from agent.configfile import default_config_path

    args = list(sys.argv[1:] if argv is None else argv)
    strict = "--strict" in args or os.environ.get("RETAINER_STRICT") == "1"
    app = App(default_config_path(), strict, 0)
    try:
        group = build_cli(app, command=_command_name(args))
    except RetainerError as exc:
        click.echo(f"retainer: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    group.main(args=args, prog_name="retainer", obj=app)
    sys.exit(0)
