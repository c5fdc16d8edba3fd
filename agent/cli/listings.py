"""`retainer messages` and `retainer deliverables`: what the store holds."""

from __future__ import annotations

import time

import click

from agent.cli.app import App
from agent.cli.output import (
    Col,
    emit_json,
    emit_json_bytes,
    emit_json_list,
    json_bytes,
    table,
    table_columns,
)
from agent.humanize import ago, ago_seconds, human_size


@click.command()
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
    # the newest few: from the read model of the newest messages, when it can tell
    docs = (store.newest_messages(limit, contractor=contractor)
            if limit is not None and source is None else None)
    if docs is None:
        found = store.iter_messages_newest_first(contractor=contractor, source=source)
        if as_json:  # streamed: 50,000 messages never sit in memory at once
            emit_json_list(islice(found, limit))
            return
        docs = list(islice(found, limit))
    elif as_json:
        emit_json_list(docs)
        return
    names = {c["id"]: c["name"] for c in store.contractors()}
    table([(d["id"], ago(d["sent_at"]), d["source"], d["direction"],
            names.get(d["contractor_id"] or "", d["sender"]["name"] or d["sender"]["address"]),
            d["subject"]) for d in docs],
          ["id", "sent", Col("source", flex=3, drop=2), Col("dir", drop=1),
           Col("who", flex=2), Col("subject", flex=1)])


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--unreviewed", is_flag=True, help="Only the review queue.")
@click.option("--contractor", help="Only this contractor (id, name or address).")
@click.option("--limit", type=click.IntRange(min=0), default=None,
              help="At most this many (the first ones listed: with --unreviewed, the oldest).")
@click.pass_obj
def deliverables(app: App, as_json: bool, unreviewed: bool, contractor: str | None,
                 limit: int | None = None) -> None:
    """Stored deliverables; with --unreviewed, the review queue (oldest first)."""
    store = app.store()
    if unreviewed and not contractor and not as_json:  # the queue's read model: short rows
        from agent.reviewqueue import queue_columns

        q = queue_columns(store, limit)  # built column by column: no object per row
        now = time.time()
        table_columns([q.id, [ago_seconds(None if ts is None else now - ts) for ts in q.received_ts],
                       ["?" if name is None else name for name in q.contractor], q.filename,
                       q.size, q.review_status,
                       ["FLAGGED: " + status if flag else status
                        for status, flag in zip(q.status, q.flagged, strict=True)]],
                      DELIVERABLE_COLUMNS)
        return
    if unreviewed and not contractor:  # --json: the queue's documents, kept as printed
        from agent.reviewqueue import queue_json

        emit_json_bytes(queue_json(store, json_bytes, limit))
        return
    docs = store.deliverables(unreviewed=unreviewed, contractor=contractor)
    if limit is not None:
        docs = docs[:limit]
    if as_json:
        emit_json(docs)
        return
    names = {c["id"]: c["name"] for c in store.contractors()}
    table([(d["id"], ago(d["received_at"]), names.get(d["contractor_id"] or "", "?"),
            d["filename"], human_size(d["size"]), d["review_status"],
            "FLAGGED: " + d["status"] if d.get("flagged") else d["status"]) for d in docs],
          DELIVERABLE_COLUMNS)


DELIVERABLE_COLUMNS: list[str | Col] = [
    "id", "received", Col("contractor", flex=2), Col("file", flex=1),
    Col("size", right=True, drop=2), "review", Col("status", flex=True, drop=1)]


