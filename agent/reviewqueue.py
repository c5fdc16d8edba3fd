"""The review queue as the tables of `retainer review` and `retainer deliverables
--unreviewed` show it: one short row per deliverable waiting, kept as a read model
(``queue``, see :mod:`agent.store.readmodels`), so a listing of thousands of rows parses
a few hundred kilobytes instead of every waiting document in full.

The rows come from :meth:`Store.deliverables` (``unreviewed=True``: oldest first) and
the roster, and are rebuilt when any of the files they come from changed. ``--json``
output does not use them: it prints the documents themselves.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from agent.humanize import epoch
from agent.store import readmodels

if TYPE_CHECKING:
    from agent.store import Store

VERSION = "queue-rows-2"
INPUTS = ("deliverables", "roster", "workflow")


class QueueRow(NamedTuple):
    """What a table shows of one deliverable waiting for review."""

    id: str
    received_at: str | None
    contractor: str | None  # the contractor's name; None when unknown
    task: str
    filename: str
    size: int | None
    status: str
    flagged: bool
    note: str
    version_label: str
    review_status: str
    received_ts: float | None  # received_at in seconds since the epoch (humanize.epoch)


def _build(store: Store) -> list[list[Any]]:
    from agent.store.versions import version_label

    names = {c["id"]: c["name"] for c in store.contractors()}
    return [[d["id"], d.get("received_at"), names.get(d.get("contractor_id") or ""),
             d.get("title") or "", d.get("filename") or "", d.get("size"),
             d.get("status") or "", bool(d.get("flagged")), d.get("note") or "",
             version_label(d), d.get("review_status") or "", epoch(d.get("received_at"))]
            for d in store.deliverables(unreviewed=True)]


def queue_rows(store: Store) -> list[QueueRow]:
    """The review queue, oldest first, as table rows (from the read model when current;
    a model not shaped as written is not trusted: the rows are built afresh)."""
    rows = readmodels.view(store, "queue", VERSION, INPUTS, _build)
    width = len(QueueRow._fields)
    if not (isinstance(rows, list)
            and all(isinstance(row, list) and len(row) == width
                    and (row[-1] is None or type(row[-1]) in (int, float)) for row in rows)):
        rows = _build(store)
    return [QueueRow(*row) for row in rows]


def overdue(rows: list[QueueRow], overdue_after: timedelta, now: datetime
            ) -> list[bool]:
    """Whether each row has waited longer than ``overdue_after`` at ``now`` (as
    :func:`agent.review.queue` flags it)."""
    end = (now if now.tzinfo is not None else now.replace(tzinfo=UTC)).timestamp()
    limit_hours = overdue_after.total_seconds() / 3600
    return [row.review_status == "unreviewed" and row.received_ts is not None
            and end >= row.received_ts and (end - row.received_ts) / 3600 > limit_hours
            for row in rows]


readmodels.register("queue", VERSION, INPUTS, _build)
