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
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from agent.humanize import epoch, human_size
from agent.store import readmodels

if TYPE_CHECKING:
    from agent.store import Store

VERSION = "queue-rows-3"
INPUTS = ("deliverables", "roster", "workflow")


class QueueRow(NamedTuple):
    """What a table shows of one deliverable waiting for review."""

    id: str
    received_at: str | None
    contractor: str | None  # the contractor's name; None when unknown
    task: str
    filename: str
    size: str  # as the tables print it (humanize.human_size)
    status: str
    flagged: bool
    note: str
    version_label: str
    review_status: str
    received_ts: float | None  # received_at in seconds since the epoch (humanize.epoch)


def _build(store: Store) -> list[list[Any]]:
    """The rows of :meth:`Store.deliverables` ``(unreviewed=True)``: each deliverable
    shard's rows kept with the shard's stamp (``queue-rows.parts.json``, see
    :func:`readmodels.shard_parts`), so a rebuild reads only the shards written since; the
    contractor's name is looked up here, through the roster as it is now."""
    roster = store.roster()
    names = {c["id"]: c["name"] for c in store.contractors()}
    rows: list[list[Any]] = []
    for part in reversed(readmodels.shard_parts(store, "queue-rows", PARTS_VERSION,
                                                "deliverables", _part, _part_ok)):
        for identity, contractor_id, *row in part:  # as Store.deliverables: newest first
            resolved = roster.contractor_of(identity) or contractor_id
            row[2] = names.get(resolved or "")
            rows.append(row)
    rows.sort(key=lambda row: row[1] or "")  # then by receipt, stable
    return rows


PARTS_VERSION = f"{VERSION}/parts-1"


def _part(docs: list[Any]) -> list[list[Any]]:
    """One deliverable shard's waiting documents as rows, each after its identity and
    stored contractor (the name is filled in when the rows are merged)."""
    from agent.store.versions import version_label

    return [[d.get("identity"), d.get("contractor_id"),
             d["id"], d.get("received_at"), None, d.get("title") or "", d.get("filename") or "",
             human_size(d.get("size")), d.get("status") or "", bool(d.get("flagged")),
             d.get("note") or "", version_label(d), d.get("review_status") or "",
             epoch(d.get("received_at"))]
            for d in docs if d.get("review_status") == "unreviewed"]


def _part_ok(part: Any) -> bool:
    return (isinstance(part, list) and set(map(type, part)) <= {list}
            and set(map(len, part)) <= {len(QueueRow._fields) + 2})


class QueueColumns(NamedTuple):
    """The queue column by column (what a table prints), same order as the rows."""

    id: list[str]
    received_at: list[str | None]
    contractor: list[str | None]
    task: list[str]
    filename: list[str]
    size: list[str]
    status: list[str]
    flagged: list[bool]
    note: list[str]
    version_label: list[str]
    review_status: list[str]
    received_ts: list[float | None]


def _stored_rows(store: Store) -> list[list[Any]]:
    """The model's rows (lists in :class:`QueueRow` order), or built afresh when the
    model is not shaped as written (checked with set operations, not row by row)."""
    rows = readmodels.view(store, "queue", VERSION, INPUTS, _build)
    if not (isinstance(rows, list) and set(map(type, rows)) <= {list}
            and set(map(len, rows)) <= {len(QueueRow._fields)}
            and set(map(type, (row[-1] for row in rows))) <= {int, float, type(None)}):
        rows = _build(store)
    return cast("list[list[Any]]", rows)


def queue_rows(store: Store) -> list[QueueRow]:
    """The review queue, oldest first, as table rows (from the read model when current;
    a model not shaped as written is not trusted: the rows are built afresh)."""
    return [QueueRow(*row) for row in _stored_rows(store)]


def queue_columns(store: Store, limit: int | None = None) -> QueueColumns:
    """:func:`queue_rows` (the first ``limit``) column by column: a table of thousands
    of rows is built a column at a time, with no object per row."""
    rows = _stored_rows(store)[:limit]
    if not rows:
        return QueueColumns(*([] for _ in QueueColumns._fields))
    return QueueColumns(*map(list, zip(*rows, strict=True)))


def overdue(rows: list[QueueRow], overdue_after: timedelta, now: datetime
            ) -> list[bool]:
    """Whether each row has waited longer than ``overdue_after`` at ``now`` (as
    :func:`agent.review.queue` flags it)."""
    return overdue_flags([row.review_status for row in rows], [row.received_ts for row in rows],
                         overdue_after, now)


def overdue_flags(review_status: list[str], received_ts: list[float | None],
                  overdue_after: timedelta, now: datetime) -> list[bool]:
    """:func:`overdue` of the queue's columns."""
    end = (now if now.tzinfo is not None else now.replace(tzinfo=UTC)).timestamp()
    limit_hours = overdue_after.total_seconds() / 3600
    return [status == "unreviewed" and ts is not None and end >= ts
            and (end - ts) / 3600 > limit_hours
            for status, ts in zip(review_status, received_ts, strict=True)]


readmodels.register("queue", VERSION, INPUTS, _build)
