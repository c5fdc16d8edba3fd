"""`retainer messages` and `retainer deliverables`: what the store holds."""

from __future__ import annotations

import click

from agent.cli.app import App
from agent.cli.output import age, emit_json, emit_json_list, human_size, table


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


@click.command()
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


