"""``records_stored`` sees every committed record once, also after a crash.

Without help, a sync killed after a page's records were written but before the hook ran
loses those announcements for good: the page is fetched again, its records are already
stored, so nothing is new and nothing is announced. The engine therefore writes a small
journal into the source's state (``pending``) around each page:

1. before the page is committed: ``stage = "committing"`` with the ids of the page's
   messages and submissions that are not stored yet;
2. with the page's cursor: ``stage = "announcing"`` with the ids of what the commit
   added;
3. the next page's journal (or the end of the sync) replaces it.

The next sync of the source starts by announcing what a journal left behind lists and the
store holds. The one remaining window, a kill after the hook ran and before step 3, can
announce a page twice; a kill anywhere else announces it exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from agent.models import Message, Record, Submission
from agent.store.core import message_id_for, short_hash

if TYPE_CHECKING:
    from agent.store import Store
    from agent.store.core import CommitResult


def committing(store: Store, source: str, records: Sequence[Record]) -> dict[str, Any]:
    """The journal written before a page is committed: what it may add. Hold
    :meth:`Store.writing` (the store's catalogs are then current)."""
    messages: list[str] = []
    submissions: list[str] = []
    for record in records:
        if isinstance(record, Message):
            messages.append(message_id_for(source, record.remote_id))
        elif isinstance(record, Submission):
            submissions.append("d_" + short_hash(source, record.remote_id))
    stored = _stored(store, "messages", messages) | _stored(store, "deliverables", submissions)
    return {"stage": "committing", "messages": [i for i in messages if i not in stored],
            "submissions": [i for i in submissions if i not in stored]}


def _stored(store: Store, folder: str, ids: list[str]) -> set[str]:
    """Which of ``ids`` the store holds, each found in its shard: the shards' sorted ids
    intersected with the page's, one pass per shard (``Catalog.where_many``, as the
    page's commit places its documents), not every shard bisected for every id."""
    if not ids:
        return set()
    found = store.catalog(folder).where_many(ids)
    return {doc_id for doc_id, name in found.items()
            if store.read_shard(folder, name).get(folder, doc_id) is not None}


def announcing(committed: CommitResult) -> dict[str, Any]:
    """The journal written with the page's cursor: exactly what the commit added."""
    return {"stage": "announcing", "messages": [d["id"] for d in committed.messages],
            "deliverables": [d["id"] for d in committed.deliverables]}


def left_behind(store: Store, pending: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The stored messages and deliverables a journal from an interrupted sync names."""
    if not isinstance(pending, dict):
        return [], []
    messages = set(_strings(pending.get("messages")))
    deliverables = set(_strings(pending.get("deliverables")))
    submissions = set(_strings(pending.get("submissions")))
    found_messages = [dict(doc) for doc in store.iter_messages() if doc.get("id") in messages]
    found_deliverables: list[dict[str, Any]] = []
    for doc in store.iter_deliverables():
        if (doc.get("id") in deliverables or doc.get("id") in submissions
                or (pending.get("stage") == "committing" and doc.get("message_id") in messages)):
            found_deliverables.append(dict(doc))
    return found_messages, found_deliverables


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []
