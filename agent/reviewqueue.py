"""The review queue as the tables of `retainer review` and `retainer deliverables
--unreviewed` show it: one short row per deliverable waiting, kept as a read model
(``queue``, see :mod:`agent.store.readmodels`), so a listing of thousands of rows parses
a few hundred kilobytes instead of every waiting document in full.

The rows come from :meth:`Store.deliverables` (``unreviewed=True``: oldest first) and
the roster, and are rebuilt when any of the files they come from changed. ``--json``
output prints the documents themselves, kept written as it prints them
(:func:`queue_json`), checked against the same files.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import orjson

from agent.humanize import epoch, human_size
from agent.store import readmodels

if TYPE_CHECKING:
    from agent.store import Store

log = logging.getLogger("retainer.store")

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


# -- the queue as `deliverables --unreviewed --json` prints it ---------------------------------

JSON_VERSION = "queue-json-1"
JSON_FILE = "queue-json.bin"
JSON_FORMAT = 1
ITEM_END = b"\n  },\n  {"  # between two documents of an indented list (nested ones: deeper)


def queue_json(store: Store, dumps: Callable[[Any], bytes], limit: int | None = None
               ) -> bytes | memoryview:
    """The review queue's documents (oldest first; the first ``limit``) as ``dumps``
    writes them, kept in ``index/views/queue-json.bin`` so a listing of thousands of
    documents copies bytes instead of parsing and writing every document again.

    The file is one header line (the stamps of :data:`INPUTS` it was made from, its
    version, the body's length and CRC-32) and the body, ``dumps`` of the whole queue.
    It is used only while every stamp matches and the body has the length and checksum
    the header says; else (stale, torn, damaged, another version) the body is made again
    from the store and saved for the next reader, unless a writer changed the store
    meanwhile. ``dumps`` must write a list of objects indented by two spaces (``limit``
    cuts the body after a document's closing brace); change :data:`JSON_VERSION` when
    its output changes. The saved body is returned mapped from the file, not copied
    (5 MB at 5,000 deliverables: a copy costs a fresh process more than the checksum).
    """
    if limit == 0:
        return dumps([])
    body: bytes | memoryview | None = _saved_json(store)
    if body is None:
        stamps = readmodels.input_stamps(store.root, INPUTS) if store.on_disk else []
        made = body = dumps(store.deliverables(unreviewed=True))
        if store.on_disk and stamps == readmodels.input_stamps(store.root, INPUTS):
            _save_json(store, stamps, made)
    return body if limit is None else _first(bytes(body), limit)


def _first(body: bytes, limit: int) -> bytes:
    """The body cut after its ``limit``-th document (all of it when it holds fewer)."""
    end = -1
    for _ in range(limit):
        end = body.find(ITEM_END, end + 1)
        if end < 0:
            return body
    return body[:end + len(b"\n  }")] + b"\n]"


def _saved_json(store: Store) -> memoryview | None:
    """The saved body, mapped from its file, when the header vouches for it."""
    import mmap

    if not store.on_disk:
        return None
    try:
        with open(readmodels.views_dir(store) / JSON_FILE, "rb") as handle:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # missing, unreadable, empty
        return None
    newline = mapped.find(b"\n")
    try:
        header = orjson.loads(mapped[:newline]) if newline >= 0 else None
    except orjson.JSONDecodeError:
        return None
    body = memoryview(mapped)[newline + 1:]
    if (not isinstance(header, dict) or header.get("format") != JSON_FORMAT
            or header.get("version") != JSON_VERSION or header.get("length") != len(body)
            or header.get("inputs") != readmodels.input_stamps(store.root, INPUTS)
            or header.get("crc32") != zlib.crc32(body)):
        return None
    return body


def _save_json(store: Store, stamps: list[list[Any]], body: bytes) -> None:
    from agent.files import ensure_private_dir, write_private

    header = orjson.dumps({"format": JSON_FORMAT, "version": JSON_VERSION, "inputs": stamps,
                           "length": len(body), "crc32": zlib.crc32(body)})
    try:  # derived data: no fsync; a lost or stale file is made again from the store
        folder = ensure_private_dir(readmodels.views_dir(store))
        write_private(folder / JSON_FILE, header + b"\n" + body, sync=False, sync_dir=False)
    except OSError as exc:
        log.debug("read model %s not saved: %s", JSON_FILE, exc)  # read-only folder


readmodels.register("queue", VERSION, INPUTS, _build)
