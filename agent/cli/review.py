"""`retainer review`: the review queue; approve, ask for changes, open a file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from agent.cli.app import App
from agent.cli.output import Col, emit_json, table, table_columns
from agent.errors import StoreError
from agent.humanize import ago, ago_seconds, hours, human_size

if TYPE_CHECKING:
    from agent.store import Store


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
    config = app.quick()
    store = app.store(config)
    if not as_json and not show_all:  # the table: short rows from the queue's read model
        _queue_table(store, config.review_overdue)
        return
    from agent.review import queue

    rows = queue(store, overdue_after=config.review_overdue, include_reviewed=show_all)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("Nothing to review.")
        return
    columns: list[str | Col] = ["id", "received", Col("contractor", flex=2),
                                Col("task", flex=3, drop=1), Col("file", flex=1),
                                Col("size", right=True, drop=2)]
    table([(r["id"], ago(r["received_at"]) + (" OVERDUE" if r["overdue"] else ""),
            r["contractor"] or "?", r["task"],
            ("UNAVAILABLE " if r.get("status") == "unavailable" else "") + r["filename"]
            + (f" ({r['version_label']})" if r.get("version_label") else ""),
            human_size(r["size"]), *([r["review_status"]] if show_all else []))
           for r in rows],
          columns + (["review"] if show_all else []))
    for r in rows:  # the platform would not hand these over: say why, in full
        if r.get("status") == "unavailable":
            click.echo(f"{r['id']}: {r['filename']} is unavailable: {r.get('note') or 'see the platform'}")
    late = sum(r["overdue"] for r in rows)
    limit = hours(config.review_overdue.total_seconds() / 3600)
    click.echo(f"\n{len(rows)} waiting" + (f", {late} overdue (older than {limit})" if late else ""))


def _queue_table(store: Store, overdue_after: timedelta) -> None:
    """The queue as :func:`review_list` prints it, from :func:`agent.reviewqueue.queue_rows`
    (the same rows, flags and totals as from :func:`agent.review.queue`), built column by
    column."""
    from agent.reviewqueue import overdue_flags, queue_columns

    q = queue_columns(store)
    if not q.id:
        click.echo("Nothing to review.")
        return
    now = datetime.now(UTC)
    late = overdue_flags(q.review_status, q.received_ts, overdue_after, now)
    stamp = now.timestamp()
    received = [ago_seconds(None if ts is None else stamp - ts) + (" OVERDUE" if flag else "")
                for ts, flag in zip(q.received_ts, late, strict=True)]
    files = [("UNAVAILABLE " if status == "unavailable" else "") + name
             + (f" ({label})" if label else "")
             for status, name, label in zip(q.status, q.filename, q.version_label, strict=True)]
    table_columns([q.id, received, [name or "?" for name in q.contractor], q.task, files,
                   q.size],
                  ["id", "received", Col("contractor", flex=2), Col("task", flex=3, drop=1),
                   Col("file", flex=1), Col("size", right=True, drop=2)])
    for rid, status, name, note in zip(q.id, q.status, q.filename, q.note, strict=True):
        if status == "unavailable":  # the platform would not hand these over: say why, in full
            click.echo(f"{rid}: {name} is unavailable: {note or 'see the platform'}")
    count = sum(late)
    limit = hours(overdue_after.total_seconds() / 3600)
    click.echo(f"\n{len(q.id)} waiting" + (f", {count} overdue (older than {limit})"
                                           if count else ""))


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


