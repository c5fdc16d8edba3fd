"""The :class:`Store`: normalized records, idempotent upserts, cursors after records.

The store is built in layers, one concern each:

- :mod:`~agent.store.folder` (:class:`StoreFolder`): the data folder's files and caches,
  the write lock, schema and sync state;
- :mod:`~agent.store.roster` (:class:`RosterStore`): contractors, identities, candidates;
- :mod:`~agent.store.reads` (:class:`StoreReads`): messages, threads, deliverables, counts;
- this module: the write path. A page of records is staged by
  :class:`~agent.store.pages.PageStaging` (roster rules, kept files, document shapes from
  :mod:`~agent.store.documents`), then written here, one write per shard touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from agent.store.documents import (
    DELIVERABLE_STATUSES,
    REVIEW_STATUSES,
    Doc,
    json_doc,
    merge_thread_entries,
    month_of,
    now_utc,
)
from agent.store.folder import LOCK_TIMEOUT, MONTHLY, MONTHLY_CACHE, StoreFolder
from agent.store.ids import message_id_for, short_hash, thread_id_for
from agent.store.layout import SCHEMA_VERSION
from agent.store.reads import StoreReads
from agent.store.roster import Roster, RosterStore
from agent.store.storage import batched_dir_sync, iso, json_safe
from agent.store.versions import Versions, version_label, work_stem

if TYPE_CHECKING:
    from agent.models import DeliverableRecord, MessageRecord, Record, ThreadRecord
    from agent.store.pages import CommitResult

__all__ = [
    "DELIVERABLE_STATUSES", "LOCK_TIMEOUT", "MONTHLY", "MONTHLY_CACHE", "REVIEW_STATUSES",
    "SCHEMA_VERSION", "CommitResult", "Roster", "RosterStore", "Store", "StoreFolder",
    "StoreReads", "Versions", "iso", "json_doc", "message_id_for", "now_utc", "short_hash",
    "thread_id_for", "version_label", "work_stem",
]


def __getattr__(name: str) -> Any:
    """``CommitResult`` is re-exported from :mod:`agent.store.pages` when first asked for:
    staging a page needs the record types, which a read command never imports."""
    if name == "CommitResult":
        from agent.store.pages import CommitResult

        return CommitResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _plain(docs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Typed records as the shard files take them (the same objects: JSON dicts)."""
    return cast("list[dict[str, Any]]", list(docs))


class Store(StoreReads):
    """Open a data folder. Reads need no lock; writes happen inside :meth:`writing`."""

    def commit_page(
        self,
        source: str,
        platform: str,
        records: Sequence[Record],
        *,
        owner_keys: frozenset[str] = frozenset(),
    ) -> CommitResult:
        """Store one page of records: blobs, then deliverables, messages and threads.

        Idempotent: storing the same records again changes nothing. The caller commits the
        cursor only after this returns.
        """
        with batched_dir_sync():
            return self._commit_page(source, platform, records, owner_keys)

    def _commit_page(self, source: str, platform: str, records: Sequence[Record],
                     owner_keys: frozenset[str]) -> CommitResult:
        from agent.store.pages import CommitResult, PageStaging

        page = PageStaging(self, source, platform, owner_keys)
        try:
            page.add_page(records)
        except BaseException:
            self.blobs.discard()  # files written for this page, not kept
            raise
        result = CommitResult()
        self.blobs.sync()  # blobs were written while staging: their names first, then documents
        if page.messages:
            self._upsert_messages(page.message_docs(), page.threads, result)
        if page.deliverables:
            result.deliverables = self._upsert_deliverables(_plain(page.deliverables))
            result.deliverables_new = len(result.deliverables)
        if page.contracts:
            self.contracts_shard.upsert_many("contracts", _plain(page.contracts))
        if page.contractors:
            self.roster_shard.upsert_many("contractors", _plain(list(page.contractors.values())))
        if page.identities:
            self.roster_shard.upsert_many("identities", _plain(list(page.identities.values())),
                                          "key")
        return result

    def _placed(self, folder: str, docs: Sequence[Doc]) -> dict[str, list[Doc]]:
        """Documents grouped by the shard each goes to: the one it is stored in, else the
        open shard (a new one once that is full)."""
        cat = self.catalog(folder)
        cat.will_write()
        seen = cat.where_many(doc["id"] for doc in docs)  # one pass per shard, not per doc
        out: dict[str, list[Doc]] = {}
        for doc in docs:
            name = seen.get(doc["id"]) or cat.place(doc)
            seen[doc["id"]] = name  # a page naming one new document twice: one shard
            out.setdefault(name, []).append(doc)
        return out

    def _upsert_messages(self, docs: list[MessageRecord],
                         threads: dict[str, dict[str, ThreadRecord]],
                         result: CommitResult) -> None:
        """Write a page's messages and their thread entries: one write per shard touched.

        Threads are kept per shard beside their messages: one entry per thread and shard
        it has messages in, merged when read (:meth:`threads`)."""
        cat = self.catalog("messages")
        for name, shard_docs in self._placed("messages", docs).items():
            shard = self.monthly_shard("messages", name)
            known = shard.key_map("messages")
            fresh = list({d["id"]: d for d in shard_docs if d["id"] not in known}.values())
            entries: dict[str, ThreadRecord] = {}  # this shard's part of each thread
            for msg in shard_docs:
                sent, tid = msg["sent_at"], msg["thread_id"]
                entry = entries.get(tid)
                if entry is None:  # every staged message's thread was staged with it
                    entry = entries[tid] = threads[month_of(sent)][tid].copy()
                    entry["first_at"] = entry["last_at"] = sent
                entry["first_at"] = min(entry["first_at"], sent)
                entry["last_at"] = max(entry["last_at"], sent)
            thread_docs: list[ThreadRecord] = []
            for thread in entries.values():
                current = shard.get("threads", thread["id"])
                if current is not None:
                    thread = merge_thread_entries(cast("ThreadRecord", current), thread)
                thread_docs.append(thread)
            (new, updated), _ = shard.upsert_tables([("messages", _plain(shard_docs), "id"),
                                                     ("threads", _plain(thread_docs), "id")])
            cat.written(name, shard, (doc["id"] for doc in shard_docs))
            result.messages_new += new
            result.messages_updated += updated
            result.messages.extend(_plain(fresh))

    def _upsert_deliverables(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        fresh: list[dict[str, Any]] = []
        cat = self.catalog("deliverables")
        versions = Versions(cat.chain, self.stored_deliverable)
        ordered = sorted(docs, key=lambda d: d.get("received_at") or "")
        for month, month_docs in self._placed("deliverables", ordered).items():
            shard = self.monthly_shard("deliverables", month)
            merged: list[dict[str, Any]] = []
            for doc in month_docs:
                current = shard.get("deliverables", doc["id"])
                if current is not None:
                    # re-fetched: keep everything the owner did (review, notes)
                    doc = {**doc, "review_status": current.get("review_status", "unreviewed"),
                           "review": current.get("review"),
                           **{k: v for k, v in current.items() if k not in doc}}
                elif all(d["id"] != doc["id"] for d in fresh):
                    doc = versions.link(doc)
                    fresh.append(doc)
                merged.append(doc)
            if shard.upsert_many("deliverables", merged) != (0, 0):
                cat.written(month, shard)
        return fresh

    def save_deliverables(self, docs: Sequence[Mapping[str, Any]]) -> None:
        """Write back deliverable documents changed by the owner's workflow (reviews)."""
        cat = self.catalog("deliverables")
        for name, shard_docs in self._placed("deliverables", [dict(d) for d in docs]).items():
            shard = self.monthly_shard("deliverables", name)
            if shard.upsert_many("deliverables", shard_docs) != (0, 0):
                cat.written(name, shard)

    def update_deliverable(self, deliverable_id: str, **changes: Any) -> DeliverableRecord:
        doc = dict(self.deliverable(deliverable_id), **json_safe(changes))
        self.save_deliverables([doc])
        return cast("DeliverableRecord", doc)
