"""The owner's workflow commands: ``review``, ``instructions``, ``report`` and
``contractors suggest``. :func:`register` adds them to the ``retainer`` group."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from agent.cli import App, age, emit_json, human_size, table
from agent.errors import ConfigError, StoreError
from agent.store.core import iso

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([hdwmy])\s*$")
_UNITS = {"h": 1 / 24, "d": 1, "w": 7, "m": 30, "y": 365}


def parse_since(text: str) -> timedelta:
    from agent.errors import UsageError

    match = _SINCE.match(text.lower())
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"--since takes a period like 90d, 12w, 6m or 1y, not {text!r}")
    days = float(match.group(1)) * _UNITS[match.group(2)]
    if days > 100 * 365:
        raise UsageError(f"--since {text}: at most 100y; the report compares the period "
                         "with the one before it")
    return timedelta(days=days)


def _hours(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 48:
        return f"{value:.0f}h"
    days = value / 24
    return f"{days:.0f}d" if days == int(days) else f"{days:.1f}d"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _money(value: float | None, currency: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" + (f" {currency}" if currency and currency != "USD" else "")


# -- review ---------------------------------------------------------------------------------------


@click.group("review", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--all", "show_all", is_flag=True, help="Reviewed work too, not only the queue.")
@click.pass_context
def review(ctx: click.Context, as_json: bool, show_all: bool) -> None:
    """The review queue. Without a subcommand: list it, oldest first."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(review_list, as_json=as_json, show_all=show_all)


@review.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--all", "show_all", is_flag=True, help="Reviewed work too, not only the queue.")
@click.pass_obj
def review_list(app: App, as_json: bool, show_all: bool) -> None:
    """Deliverables waiting for review, oldest first; overdue ones are flagged."""
    from agent.review import queue

    config = app.quick()
    store = app.store(config)
    rows = queue(store, overdue_after=config.review_overdue, include_reviewed=show_all)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("Nothing to review.")
        return
    table([(r["id"], age(r["received_at"]) + (" OVERDUE" if r["overdue"] else ""),
            r["contractor"] or "?", r["task"],
            ("UNAVAILABLE " if r.get("status") == "unavailable" else "") + r["filename"]
            + (f" ({r['version_label']})" if r.get("version_label") else ""),
            human_size(r["size"]), r["review_status"]) for r in rows],
          ["id", "age", "contractor", "task", "file", "size", "review"])
    for r in rows:  # the platform would not hand these over: say why, in full
        if r.get("status") == "unavailable":
            click.echo(f"{r['id']}: {r['filename']} is unavailable: {r.get('note') or 'see the platform'}")
    late = sum(r["overdue"] for r in rows)
    limit = _hours(config.review_overdue.total_seconds() / 3600)
    click.echo(f"\n{len(rows)} waiting" + (f", {late} overdue (older than {limit})" if late else ""))


def _review_options(func: Any) -> Any:
    options = [
        click.option("--rating", type=click.IntRange(1, 5), help="1 (poor) to 5 (excellent)."),
        click.option("--feedback", default="", help="What you tell the contractor."),
        click.option("--cost", type=float, help="What this piece cost you (for the report)."),
        click.option("--hours", type=float, help="Hours billed (spend = rate x hours)."),
        click.option("--send", is_flag=True, help="Send the feedback to the contractor's thread."),
        click.option("--yes", is_flag=True, help="With --send: do not ask before sending."),
        click.option("--json", "as_json", is_flag=True, help="Print the deliverable as JSON."),
        click.argument("deliverable_id", required=False),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@review.command("approve")
@_review_options
@click.option("--all", "approve_all", is_flag=True,
              help="Approve every deliverable in the queue (with --before: received before it).")
@click.option("--before", type=click.DateTime(["%Y-%m-%d"]),
              help="With --all: only work received before this day (YYYY-MM-DD).")
@click.pass_obj
def review_approve(app: App, /, approve_all: bool, before: datetime | None,
                   **kwargs: Any) -> None:
    """Approve a deliverable, with a rating and feedback; or a backlog with --all."""
    if approve_all or before is not None:
        _approve_backlog(app, approve_all, before, **kwargs)
        return
    _record(app, "approved", **kwargs)


def _approve_backlog(app: App, approve_all: bool, before: datetime | None, *,
                     deliverable_id: str | None, rating: int | None, feedback: str,
                     cost: float | None, hours: float | None, send: bool, yes: bool,
                     as_json: bool) -> None:
    from agent.store import workflow as wf

    if not approve_all or deliverable_id or send:
        raise StoreError("use `review approve --all [--before YYYY-MM-DD]` without a "
                         "deliverable id or --send")
    config = app.config(validate=False)
    store = app.store(config)
    cutoff = before.date().isoformat() if before is not None else None
    with store.writing():
        waiting = [d for d in store.deliverables(unreviewed=True)
                   if cutoff is None or (d.get("received_at") or "")[:10] < cutoff]
        done = wf.record_reviews(store, [(d, {"status": "approved", "rating": rating,
                                              "feedback": feedback, "cost": cost,
                                              "hours": hours}) for d in waiting])
    if as_json:
        emit_json({"approved": [d["id"] for d in done]})
        return
    when = f" received before {cutoff}" if cutoff else ""
    click.echo(f"approved {len(done)} deliverable(s){when}")


@review.command("changes")
@_review_options
@click.pass_obj
def review_changes(app: App, /, **kwargs: Any) -> None:
    """Ask for changes to a deliverable (counts towards the revision rate)."""
    _record(app, "changes_requested", **kwargs)


def _record(app: App, status: str, *, deliverable_id: str | None, rating: int | None,
            feedback: str, cost: float | None, hours: float | None, send: bool, yes: bool,
            as_json: bool) -> None:
    from agent.review import feedback_text, outgoing_for, render_outgoing
    from agent.review import send as send_outgoing
    from agent.store import workflow as wf

    if not deliverable_id:
        raise StoreError("which deliverable? give its id (see `retainer review list`)")
    config = app.config(validate=send)
    store = app.store(config)
    current = store.deliverable(deliverable_id)
    prepared = None
    if send:
        text = feedback_text(current, status, rating, feedback)
        prepared = outgoing_for(store, current, text)
        if not as_json or not yes:
            click.echo(render_outgoing(*prepared), err=as_json)
        if not yes and not click.confirm("\nSend this?", default=False, err=as_json):
            raise StoreError("not sent and not recorded; run again without --send to only "
                             "record the review")
    sent_entry: dict[str, Any] | None = None
    if prepared is not None:  # send first: a failed send records nothing
        outgoing, source = prepared
        remote_id = send_outgoing(config, app.host, store, source, outgoing)
        sent_entry = {
            "kind": "feedback", "source": source, "to": outgoing.to.key,
            "subject": outgoing.subject, "text": outgoing.text,
            "in_reply_to": outgoing.in_reply_to, "references": list(outgoing.references),
            "remote_id": remote_id, "deliverable_id": current["id"],
            "contractor_id": current.get("contractor_id"),
        }
    sent = None
    with store.writing():
        doc = wf.record_review(store, current["id"], status, rating=rating, feedback=feedback,
                               cost=cost, hours=hours)
        if sent_entry is not None:
            sent = wf.record_sent(store, sent_entry, deliverable_id=current["id"])
            doc = store.deliverable(current["id"])
    if as_json:
        emit_json(dict(doc, sent=sent))
        return
    verdict = "approved" if status == "approved" else "changes requested"
    stars = f", {rating}/5" if rating else ""
    click.echo(f"{doc['id']} {doc['filename']}: {verdict}{stars}"
               + (f"; feedback sent to {sent['to']}" if sent else ""))


@review.command("open")
@click.argument("deliverable_id")
@click.pass_obj
def review_open(app: App, deliverable_id: str) -> None:
    """Open a deliverable's file with the system viewer."""
    from agent.review import open_file

    doc = app.store().deliverable(deliverable_id)
    if doc.get("url") and not doc.get("path"):
        click.launch(doc["url"])
        click.echo(doc["url"])
        return
    open_file(doc.get("path") or "")
    click.echo(doc["path"])


# -- contractors (roster with stats) and suggest -------------------------------------------------


def roster_table(rows: list[dict[str, Any]]) -> None:
    table([(r["id"], r["name"], r["status"], ", ".join(r["platforms"]),
            ", ".join(r.get("skills", [])), _money(r.get("rate")), age(r["first_contact"]),
            age(r["last_contact"]), r.get("deliverables", 0),
            "-" if r.get("average_rating") is None else f"{r['average_rating']:.1f}",
            _pct(r.get("revision_rate")), _hours(r.get("median_turnaround_hours")),
            _money(r.get("spend"), r.get("currency", "")) + ("*" if r.get("spend_estimated") else "")
            ) for r in rows],
          ["id", "name", "status", "platforms", "skills", "rate", "first", "last", "work",
           "rating", "revisions", "turnaround", "spend"])


@click.command("suggest")
@click.argument("task")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--limit", type=int, default=10, show_default=True)
@click.option("--include-retired", is_flag=True, help="Rank retired contractors too.")
@click.pass_obj
def contractors_suggest(app: App, task: str, as_json: bool, limit: int,
                        include_retired: bool) -> None:
    """Who on your team should do TASK? Ranked by skill, quality, reliability, recency."""
    from agent.stats import Facts, roster_rows
    from agent.suggest import rank

    store = app.store()
    facts = Facts.load(store)
    ranked = rank(task, roster_rows(store, facts), facts, include_retired=include_retired,
                  limit=limit)
    if as_json:
        emit_json({"task": task, "suggestions": ranked})
        return
    if not ranked:
        click.echo("Nobody on the roster yet: add contractors with `retainer contractors add`.")
        return
    table([(f"{r['score']:.2f}", r["name"], r["status"], ", ".join(r["skills"]),
            "-" if r["average_rating"] is None else f"{r['average_rating']:.1f}",
            _pct(r["revision_rate"]), _hours(r["median_turnaround_hours"]), r["deliverables"],
            _money(r["cost_per_deliverable"]), _money(r["rate"]), age(r["last_contact"]))
           for r in ranked],
          ["score", "name", "status", "skills", "rating", "revisions", "turnaround", "work",
           "cost/piece", "rate", "last"])
    if all(r["parts"]["skill"] == 0 for r in ranked):
        click.echo(f'\nNobody has done "{task}" yet; these are your best people overall.')


# -- instructions -------------------------------------------------------------------------------


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
            age(r["last_sent"]) if r["last_sent"] else "never") for r in rows],
          ["name", "version", "skill", "sent", "last sent"])


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


# -- report ---------------------------------------------------------------------------------------


@click.command("report")
@click.option("--since", "since", default="90d", show_default=True,
              help="The period: 30d, 12w, 6m, 1y. Trends compare with the period before.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--html", "html_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write a self-contained HTML report with charts to this file.")
@click.pass_obj
def report(app: App, since: str, as_json: bool, html_path: Path | None) -> None:
    """Per contractor and per kind of work: spend, deliverables, ratings, revisions,
    turnaround and your own review latency, against the previous period."""
    from agent.report import build, write_html

    period = parse_since(since)
    if html_path is not None and not html_path.parent.is_dir():
        from agent.errors import UsageError

        raise UsageError(f"--html {html_path}: there is no folder {html_path.parent}; "
                         "create it first or choose another path")
    doc = build(app.store(), since=period)
    if html_path is not None:
        write_html(doc, html_path)
    if as_json:
        emit_json(doc)
        return
    t = doc["totals"]
    click.echo(f"Delegation report {doc['since'][:10]} to {doc['until'][:10]}")
    click.echo(f"  {t['deliverables']} deliverables, spend {_money(t['spend'])}, average rating "
               f"{'-' if t['average_rating'] is None else t['average_rating']}, revisions "
               f"{_pct(t['revision_rate'])}, your review latency "
               f"{_hours(t['median_review_latency_hours'])}, {t['unreviewed']} waiting\n")
    active = [r for r in doc["contractors"] if r["deliverables"] or r.get("spend")]
    if active:
        _report_table(active, "name", "contractor")
        click.echo("")
        _report_table(doc["skills"], "skill", "skill")
    else:
        click.echo("No deliverables in this period.")
    if html_path is not None:
        click.echo(f"\nHTML report: {html_path}")


def _report_table(rows: list[dict[str, Any]], key: str, header: str) -> None:
    def trend(r: dict[str, Any]) -> str:
        value = (r.get("trend") or {}).get("deliverables")
        return "-" if value is None else f"{value:+.0f}"

    table([(r[key], r["deliverables"], _money(r.get("spend")),
            "-" if r["average_rating"] is None else f"{r['average_rating']:.1f}",
            _pct(r["revision_rate"]), _hours(r["median_turnaround_hours"]),
            _hours(r["median_review_latency_hours"]), trend(r)) for r in rows],
          [header, "work", "spend", "rating", "revisions", "turnaround", "review latency",
           "trend"])


@click.command("notify")
@click.option("--dry-run", is_flag=True, help="Show what is due without sending it.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def notify(app: App, dry_run: bool, as_json: bool) -> None:
    """Send due reminders through the configured [[notifiers]] once (the daemon does this
    every 15 minutes). Exit 1 if a notifier failed."""
    from agent.notify import run_notifiers

    config = app.config(validate=False)
    results = run_notifiers(config, app.host, app.store(config), dry_run=dry_run)
    if as_json:
        emit_json([r.as_dict() for r in results])
    else:
        if not results:
            click.echo("No [[notifiers]] in the config.")
        for r in results:
            what = f"FAILED: {r.error}" if r.error else (
                f"{'due' if dry_run else 'sent'}: {', '.join(r.sent)}" if r.sent else "nothing due")
            click.echo(f"{r.notifier}: {what}")
    if any(r.error for r in results):
        raise SystemExit(1)


# -- the dashboard --------------------------------------------------------------------------------


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
    click.echo(f"Retainer dashboard: {server.url}")
    click.echo("Open that URL (the token is kept in the data folder's web/token file); "
               "Ctrl-C stops the server.")
    server.run()


def register(cli: click.Group) -> None:
    """Add the workflow commands to ``cli`` (idempotent)."""
    from agent.cli import contractors

    cli.add_command(review)
    cli.add_command(instructions)
    cli.add_command(report)
    cli.add_command(notify)
    cli.add_command(serve)
    contractors.add_command(contractors_suggest)
