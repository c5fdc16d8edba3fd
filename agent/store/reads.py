"""What the store holds, read: messages, threads, deliverables, contracts and counts.

Readers need no lock. Listings read the shard summaries (layout.py) to pick the shards
worth opening, and hold one shard in memory at a time where they can.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

from agent.errors import StoreError
from agent.store.folder import MONTHLY
from agent.store.roster import RosterStore

if TYPE_CHECKING:  # typed records: hints only, the read path does not import agent.models
    from agent.models import (
        ContractRecord,
        DeliverableRecord,
        MessageRecord,
        ThreadActivity,
        ThreadRecord,
    )


class StoreReads(RosterStore):
    """The read side of :class:`~agent.store.Store` (no lock needed)."""

    def stored_deliverable(self, deliverable_id: str) -> DeliverableRecord | None:
        """The stored document of one deliverable, by exact id (no contractor resolution)."""
        name = self._fresh("deliverables").where(deliverable_id)
        if name is None:
            return None
        doc = self.read_shard("deliverables", name).get("deliverables", deliverable_id)
        return cast("DeliverableRecord | None", doc)

    def stored_message(self, message_id: str) -> MessageRecord | None:
        """The stored document of one message, by exact id (do not mutate)."""
        name = self._fresh("messages").where(message_id)
        if name is None:
            return None
        return cast("MessageRecord | None",
                    self.read_shard("messages", name).get("messages", message_id))

    def stored_messages(self, message_ids: Iterable[str]) -> dict[str, MessageRecord]:
        """The stored documents of those of ``message_ids`` the store holds, by id (do not
        mutate): a page's worth at once, each shard's ids intersected with the page's
        (``Catalog.where_many``), not every shard searched for every id."""
        found = self._fresh("messages").where_many(message_ids)
        out: dict[str, MessageRecord] = {}
        for message_id, name in found.items():
            doc = self.read_shard("messages", name).get("messages", message_id)
            if doc is not None:
                out[message_id] = cast("MessageRecord", doc)
        return out

    def message(self, message_id: str) -> MessageRecord | None:
        """One message by id, as stored (a copy), or None."""
        doc = self.stored_message(message_id)
        return cast("MessageRecord", dict(doc)) if doc is not None else None

    def thread_messages(self, thread_id: str) -> list[MessageRecord]:
        """The messages of one thread, oldest first (copies, as stored)."""
        out: list[MessageRecord] = []
        for name in self.thread_shards(thread_id):
            out.extend(cast("MessageRecord", dict(d))
                       for d in self.read_shard("messages", name).docs("messages")
                       if d.get("thread_id") == thread_id)
        out.sort(key=lambda d: d.get("sent_at") or "")
        return out

    def thread_activity(self) -> dict[str, ThreadActivity]:
        """Per thread: the owner's message times (sorted), the last message's direction,
        id and time, and the counterpart's identity (see :mod:`agent.store.activity`)."""
        from agent.store.activity import thread_activity

        return thread_activity(self)

    def iter_deliverables(self, shards: Iterable[str] | None = None
                          ) -> Iterator[DeliverableRecord]:
        """Every stored deliverable document as stored (of ``shards``), newest shard first."""
        names = self.shard_names("deliverables") if shards is None else list(shards)
        for name in reversed(names):
            docs = self.read_shard("deliverables", name).docs("deliverables")
            yield from cast("list[DeliverableRecord]", docs)

    def iter_messages(self) -> Iterator[MessageRecord]:
        """Every stored message, newest shard first, with its contractor resolved."""
        roster = self.roster()
        for month in reversed(self.month_names()):
            for doc in self.read_shard("messages", month).docs("messages"):
                yield cast("MessageRecord",
                           dict(doc, contractor_id=roster.contractor_of(doc.get("identity"))))

    def messages(self, *, contractor: str | None = None, source: str | None = None
                 ) -> list[MessageRecord]:
        return list(self.iter_messages_newest_first(contractor=contractor, source=source))

    def iter_messages_newest_first(self, *, contractor: str | None = None,
                                   source: str | None = None) -> Iterator[MessageRecord]:
        """Messages newest first, one month in memory at a time (for big listings).

        An unknown ``contractor`` raises at once, before anything is yielded.
        """
        cid = self.find_contractor(contractor)["id"] if contractor else None
        return self._newest_first(cid, source)

    def newest_messages(self, limit: int, *, contractor: str | None = None
                        ) -> list[MessageRecord] | None:
        """The first ``limit`` of :meth:`iter_messages_newest_first` (everybody's, or one
        contractor's), from the read model of the newest messages
        (:mod:`agent.store.recent`) instead of the shards; None when that model cannot
        tell (a ``limit`` above what it keeps): then iterate.

        An unknown ``contractor`` raises, as :meth:`iter_messages_newest_first` does.
        """
        from agent.store import recent

        roster = self.roster()
        cid = self.find_contractor(contractor)["id"] if contractor else None
        groups = [recent.ALL] if cid is None else sorted(roster.identities_of(cid))
        docs = recent.newest(self, groups, limit)
        if docs is None:
            return None
        out = []
        for doc in docs:
            resolved = roster.contractor_of(doc.get("identity"))
            if cid is None or resolved == cid:
                out.append(cast("MessageRecord", dict(doc, contractor_id=resolved)))
        return out

    def _newest_first(self, cid: str | None, source: str | None) -> Iterator[MessageRecord]:
        """Shards are read in order of their newest message; what is buffered is only the
        messages of shards whose time ranges overlap."""
        roster = self.roster()
        cat = self.catalog("messages")
        names = cat.names()
        keys = roster.identities_of(cid) if cid is not None else set()
        wanted = [n for n in names
                  if (source is None or source in cat.shards[n]["sources"])
                  and (cid is None or not keys.isdisjoint(cat.shards[n]["identities"]))]
        wanted.sort(key=lambda n: cat.shards[n]["last"], reverse=True)

        def sent(doc: MessageRecord) -> str:
            return doc["sent_at"]

        buffer: list[MessageRecord] = []
        for pos, name in enumerate(wanted):
            for doc in self.read_shard("messages", name).docs("messages"):
                if source is not None and doc["source"] != source:
                    continue
                resolved = roster.contractor_of(doc.get("identity"))
                if cid is None or resolved == cid:
                    buffer.append(cast("MessageRecord", dict(doc, contractor_id=resolved)))
            buffer.sort(key=sent, reverse=True)
            following = cat.shards[wanted[pos + 1]]["last"] if pos + 1 < len(wanted) else None
            cut = len(buffer)
            if following is not None:  # later shards may still hold messages this new
                cut = next((i for i, d in enumerate(buffer) if d["sent_at"] <= following),
                           len(buffer))
            yield from buffer[:cut]
            del buffer[:cut]

    def deliverables(self, *, unreviewed: bool = False, contractor: str | None = None
                     ) -> list[DeliverableRecord]:
        roster = self.roster()
        cid = self.find_contractor(contractor)["id"] if contractor else None
        cat = self.catalog("deliverables")
        keys = roster.identities_of(cid) if cid is not None else set()
        shards = [n for n in cat.names()
                  if (not unreviewed or cat.shards[n]["unreviewed"])
                  and (cid is None or cid in cat.shards[n]["contractors"]
                       or not keys.isdisjoint(cat.shards[n]["identities"]))]
        out: list[DeliverableRecord] = []
        # the review queue is read from each shard's queue side (its unreviewed documents,
        # written with the shard: layout.Catalog.queue), not from the shards themselves
        docs: Iterable[Any] = ((doc for name in reversed(shards) for doc in cat.queue(name))
                               if unreviewed else self.iter_deliverables(shards))
        for doc in docs:
            if unreviewed and doc.get("review_status") != "unreviewed":
                continue
            resolved = roster.contractor_of(doc.get("identity")) or doc.get("contractor_id")
            if cid is not None and resolved != cid:
                continue
            out.append(cast("DeliverableRecord", dict(doc, contractor_id=resolved)))
        out.sort(key=lambda d: d.get("received_at") or "")
        return out

    def deliverable(self, ref: str) -> DeliverableRecord:
        found = [i for i in self._fresh("deliverables").ids()
                 if i == ref or i.startswith(ref) or i[2:].startswith(ref)]
        doc = self.stored_deliverable(found[0]) if len(set(found)) == 1 else None
        if doc is None:
            what = "no deliverable" if not found else "several deliverables"
            raise StoreError(f'{what} match "{ref}"; see `retainer deliverables`')
        return doc

    def contracts(self) -> list[ContractRecord]:
        return cast("list[ContractRecord]", self.contracts_shard.docs("contracts"))

    def threads(self, source: str | None = None) -> list[ThreadRecord]:
        """Threads (of one source), their per-shard entries merged, most recent first."""
        merged: dict[str, ThreadRecord] = {}
        cat = self.catalog("messages")
        for month in cat.names():
            for doc in cat.threads(month).values():
                if source is not None and doc["source"] != source:
                    continue
                seen = merged.get(doc["id"])
                if seen is None:
                    merged[doc["id"]] = cast("ThreadRecord", dict(doc))
                else:
                    seen["first_at"] = min(seen["first_at"], doc["first_at"])
                    seen["last_at"] = max(seen["last_at"], doc["last_at"])
                    seen["identity"] = seen.get("identity") or doc.get("identity")
        return sorted(merged.values(), key=lambda d: d["last_at"], reverse=True)

    def source_counts(self) -> dict[str, dict[str, int]]:
        """Messages and deliverables per source, counted in what is committed."""
        from agent.store.counts import committed_counts

        return committed_counts(self)

    def stored_counts(self) -> dict[str, int]:
        """How many messages and deliverables the shards hold, from their summaries
        (no shard is opened)."""
        out = {}
        for folder in MONTHLY:
            cat = self.catalog(folder)
            out[folder] = sum(cat.shards[name]["count"] for name in cat.names())
        return out

    def thread_shards(self, thread_id: str) -> list[str]:
        """The message shards holding messages of one thread, oldest first."""
        cat = self.catalog("messages")
        return [n for n in cat.names() if thread_id in cat.threads(n)]

    def counts(self, committed: dict[str, dict[str, int]] | None = None) -> dict[str, int]:
        """Totals; ``committed``: :meth:`source_counts`, when the caller has it already."""
        per_source = (self.source_counts() if committed is None else committed).values()
        return {
            "messages": sum(c["messages"] for c in per_source),
            "deliverables": sum(c["deliverables"] for c in per_source),
            "contractors": len(self.contractors()),
            "candidates": len(self.candidates()),
        }

    def backfill_locators(self, source: str) -> list[dict[str, Any]]:
        """The ``extra`` of this source's messages from identities waiting for a backfill
        whose files were recorded but not downloaded (oldest first), each with
        ``"stored"``: the message's remote id, thread, subject and recipients as stored
        (what a marketplace connector needs to read that one message again)."""
        keys = set(self.source_state(source).get("backfill") or [])
        if not keys:
            return []
        found: list[tuple[str, dict[str, Any]]] = []
        for doc in self.iter_messages():
            if doc.get("source") != source or doc.get("identity") not in keys:
                continue
            if any(a.get("status") == "not_downloaded" and not a.get("inline")
                   for a in doc.get("attachments") or ()):
                stored = {k: doc.get(k) for k in ("remote_id", "thread_remote_id", "subject",
                                                  "recipients")}
                found.append((doc.get("sent_at") or "", {**(doc.get("extra") or {}),
                                                         "stored": stored}))
        return [extra for _, extra in sorted(found, key=lambda item: item[0])]
