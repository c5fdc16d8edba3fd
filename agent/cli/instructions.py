"""`retainer instructions`: versioned instruction templates, filled and sent."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from agent.cli.app import App
from agent.cli.output import Col, emit_json, table
from agent.errors import ConfigError, StoreError
from agent.humanize import ago


@click.group("instructions", invoke_without_command=True)
@click.pass_context
def instructions(ctx: click.Context) -> None:
    """Versioned instruction templates (Markdown with {{placeholders}})."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(instructions_list, as_json=False)


def _read_text(text: str | None, file: Path | None, initial: str) -> str:
    if file is not None:
        return file.read_text(encoding="utf-8")
    if text is not None:
        return text
    edited = click.edit(initial, extension=".md")
    if edited is None:
        raise StoreError("nothing saved (the editor was closed without saving)")
    return edited


@instructions.command("add")
@click.argument("name")
@click.option("--text", help="The template text (default: open $EDITOR).")
@click.option("--file", "file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Read the template from a Markdown file.")
@click.option("--skill", help="The kind of work it is for (used by the report).")
@click.option("--subject", help="Subject line when sent (default: the task).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def instructions_add(app: App, name: str, text: str | None, file: Path | None,
                     skill: str | None, subject: str | None, as_json: bool) -> None:
    """Add a template."""
    from agent.instructions import STARTER
    from agent.store import workflow as wf

    store = app.store()
    if any(t["name"] == name.strip().lower() for t in wf.templates(store)):
        raise StoreError(f'a template "{name}" exists; use `retainer instructions edit {name}`')
    body = _read_text(text, file, STARTER)
    with store.writing():
        doc = wf.save_template(store, name, body, skill=skill, subject=subject)
    _show_saved(doc, as_json)


@instructions.command("edit")
@click.argument("name")
@click.option("--text", help="The new text (default: open $EDITOR on the latest version).")
@click.option("--file", "file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--skill", help="The kind of work it is for.")
@click.option("--subject", help="Subject line when sent.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def instructions_edit(app: App, name: str, text: str | None, file: Path | None,
                      skill: str | None, subject: str | None, as_json: bool) -> None:
    """Save a new version of a template (old versions are kept)."""
    from agent.store import workflow as wf

    store = app.store()
    current = wf.template(store, name)
    body = _read_text(text, file, current["versions"][-1]["text"])
    with store.writing():
        doc = wf.save_template(store, name, body, skill=skill, subject=subject)
    _show_saved(doc, as_json)


def _show_saved(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"{doc['name']}: version {doc['versions'][-1]['version']} saved")


@instructions.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def instructions_list(app: App, as_json: bool) -> None:
    """Every template with its latest version and how often it was sent."""
    from agent.store import workflow as wf

    store = app.store()
    sent = wf.sent_instructions(store)
    rows = []
    for doc in wf.templates(store):
        mine = [s for s in sent if s["template"] == doc["name"]]
        rows.append({"name": doc["name"], "version": doc["versions"][-1]["version"],
                     "skill": doc.get("skill"), "updated_at": doc["updated_at"],
                     "sent": len(mine), "last_sent": mine[-1]["sent_at"] if mine else None})
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("No templates yet: `retainer instructions add NAME`.")
        return
    table([(r["name"], f"v{r['version']}", r["skill"] or "-", r["sent"],
            ago(r["last_sent"], none="never")) for r in rows],
          [Col("name", flex=True), "version", Col("skill", flex=True), Col("sent", right=True),
           "last sent"])


@instructions.command("show")
@click.argument("name")
@click.option("--version", "version", type=int, help="An older version (default: the latest).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def instructions_show(app: App, name: str, version: int | None, as_json: bool) -> None:
    """Print a template, and where it was sent."""
    from agent.store import workflow as wf

    store = app.store()
    doc = wf.template(store, name)
    versions = {v["version"]: v for v in doc["versions"]}
    chosen = versions.get(version or doc["versions"][-1]["version"])
    if chosen is None:
        raise StoreError(f"{doc['name']} has versions 1 to {len(versions)}")
    sent = [s for s in wf.sent_instructions(store) if s["template"] == doc["name"]]
    if as_json:
        emit_json(dict(doc, shown=chosen, sent=sent))
        return
    click.echo(f"# {doc['name']} v{chosen['version']} ({chosen['created_at'][:10]})"
               + (f", skill {doc['skill']}" if doc.get("skill") else ""))
    click.echo(chosen["text"].rstrip())
    if sent:
        click.echo(f"\nSent {len(sent)} times; last to {sent[-1]['contractor_name']} "
                   f"on {sent[-1]['sent_at'][:10]}")


@instructions.command("send")
@click.argument("name")
@click.option("--to", "to", required=True, help="The contractor (id, name or address).")
@click.option("--task", default="", help="What this task is called (fills {{task}}).")
@click.option("--set", "sets", multiple=True, help="Fill a placeholder: --set deadline=Friday.")
@click.option("--record-only", is_flag=True,
              help="Do not send; only record that you sent it yourself (for turnaround).")
@click.option("--sent-at", "sent_at", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M",
                                                           "%Y-%m-%dT%H:%M:%S"]),
              help="With --record-only: when you sent it (UTC; default: now).")
@click.option("--yes", is_flag=True, help="Do not ask before sending.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def instructions_send(app: App, name: str, to: str, task: str, sets: tuple[str, ...],
                      record_only: bool, sent_at: datetime | None, yes: bool,
                      as_json: bool) -> None:
    """Fill a template for a contractor and send it through their platform."""
    from agent.instructions import fill, outgoing, parse_sets, route_for, values_for
    from agent.review import render_outgoing
    from agent.review import send as send_outgoing
    from agent.store import workflow as wf
    from agent.store.core import iso

    config = app.config(validate=not record_only)
    store = app.store(config)
    doc = wf.template(store, name)
    contractor = store.find_contractor(to)
    version = doc["versions"][-1]
    task = task or doc["name"]
    values = values_for(contractor, task, parse_sets(sets))
    text = fill(version["text"], values)
    subject = fill(doc["subject"], values) if doc.get("subject") else task
    entry: dict[str, Any] = {
        "template": doc["name"], "version": version["version"], "skill": doc.get("skill"),
        "contractor_id": contractor["id"], "contractor_name": contractor["name"], "task": task,
        "subject": subject, "text": text, "sent": not record_only,
    }
    if sent_at is not None:
        if not record_only:
            raise ConfigError("--sent-at goes with --record-only (a message sent now is sent now)")
        entry["sent_at"] = iso(sent_at.replace(tzinfo=UTC))
    if not record_only:
        source, ident, thread = route_for(contractor, store.messages(contractor=contractor["id"]))
        message = outgoing(ident, subject, text, thread)
        if not as_json or not yes:
            click.echo(render_outgoing(message, source), err=as_json)
        if not yes and not click.confirm("\nSend this?", default=False, err=as_json):
            raise StoreError("not sent")
        entry.update(source=source, to=ident.key,
                     remote_id=send_outgoing(config, app.host, store, source, message))
    with store.writing():
        saved = wf.record_instruction(store, entry)
    if as_json:
        emit_json(saved)
    else:
        how = "recorded" if record_only else "sent"
        click.echo(f"{doc['name']} v{version['version']} {how} to {contractor['name']} "
                   f"({saved['id']})")


