"""The dashboard's view of the store, kept current file by file.

Every derived view (the queue, the roster's figures, the report, a contractor's timeline)
is built from *parts*, each stamped with the store file it was read from: one part per
shard of deliverables or messages (the store's catalog holds each shard's (inode, mtime,
size) stamp), and one each for the roster, the workflow file (reviews), the instruction
templates and the contracts. At the start of every request :meth:`ReadModel.refresh`
compares the stamps (when nothing changed: two small generation files and four stats)
and re-reads only the files that changed: after a sync, the shards its page wrote; after
a review, one deliverable shard and the workflow file. Every shard is bounded in size by
the store (see :mod:`agent.store.layout`), so what one write costs the next page is
bounded too, however big the store grows.

The views are then rebuilt in memory from the parts, and the costly results are reused
whenever every input they were computed from is the same object, or equal, as before: a
queue row per deliverable, a deliverable's kind of work and turnaround, and each
contractor's share of the figures (:class:`Slice`: their work, reviews and contracts, their
all-time metrics, their metrics per period), so a review recomputes one contractor's
figures, not 500. Nothing is served from a file older than the last look: a write by the
dashboard, the CLI or the daemon is seen by the very next request. Only what depends on
the clock as well (the report's period, `suggest`'s recency) is reused for up to a
minute while nothing is written. There is no background recomputation to wait for.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from agent.store import Store, records
from agent.store.activity import messages_activity
from agent.store.storage import file_stamp, iso

if TYPE_CHECKING:
    from agent.models import ThreadActivity
    from agent.stats import Facts, ReviewEvent, Work
    from agent.store.core import Roster

#: A deliverable's first review: when (as stored) and the hours from the delivery to it,
#: sorted by time: what :func:`agent.stats.review_marks` lists as ``first_reviews``.
FirstReview = tuple[str, "float | None"]

log = logging.getLogger("retainer.web")

#: "workflow.json" stands for the review and outbox shards (agent.store.records)
FILES = ("roster.json", "workflow.json", "instructions.json", "contracts.json")
SHARDED = {"workflow.json": ("reviews", "outbox"), "instructions.json": ("instructions",)}
TIMELINE_FIELDS = ("id", "sent_at", "direction", "subject", "source")
#: how long a figure that depends on the clock (ages, "the last 90 days") is reused
CLOCK_TTL = 60.0


@dataclass
class MessagePart:
    """What the dashboard keeps of one message shard."""

    timeline: dict[str, list[dict[str, Any]]]  # identity -> its messages (timeline fields)
    activity: dict[str, ThreadActivity]  # thread id -> owner's message times, last message
    sources: dict[str, int]  # source -> messages


@dataclass
class DeliverablePart:
    """One deliverable shard: its documents as stored, and with contractors resolved."""

    raw: list[dict[str, Any]]
    docs: list[dict[str, Any]] = field(default_factory=list)


def _merge_threads(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    merged = {**entries[0], "out": list(entries[0]["out"])}
    for t in entries[1:]:
        merged["out"].extend(t["out"])
        if t["last_at"] >= merged["last_at"]:
            merged.update(last_at=t["last_at"], last_dir=t["last_dir"], last_id=t["last_id"])
        merged["identity"] = merged["identity"] or t["identity"]
    merged["out"].sort()
    return merged


class ReadModel:
    """Derived views of one store, refreshed part by part (see the module docstring).

    Not thread-safe: the dashboard calls it under its request lock."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.gen: dict[str, int] = dict.fromkeys(
            ("roster", "links", "names", "deliverables", "messages", "workflow",
             "instructions", "contracts"), 0)
        self._files: dict[str, Any] = {}
        self._dparts: dict[str, tuple[Any, DeliverablePart]] = {}
        self._mparts: dict[str, tuple[Any, MessagePart]] = {}
        self._thread_shards: dict[str, set[str]] = {}
        self.activity: dict[str, dict[str, Any]] = {}
        self.roster: Roster | None = None
        self.contractors: list[dict[str, Any]] = []
        self.links: dict[str, str] = {}  # identity key -> contractor id (merges followed)
        self.names: dict[str, str] = {}  # contractor id -> name
        self._memo: dict[str, tuple[Any, Any]] = {}
        self._rows: dict[str, dict[str, Any]] = {}  # queue rows by deliverable id
        self._rows_names = -1
        self._dirty_rows: set[str] = set()
        self._doc_map: dict[str, dict[str, Any]] = {}
        self._derived: dict[str, tuple[Any, Any, int, Any, Any]] = {}
        self._slices: dict[str, Slice] = {}
        self._slices_gens: dict[str, int] = {}
        self._firsts: dict[str, tuple[str, Any, FirstReview]] = {}
        self._firsts_list: list[FirstReview] = []
        self._firsts_keys: list[str] = []
        self._review_ids: dict[int, tuple[list[Any], set[str]]] = {}
        self._last_inserted: tuple[list[Any], list[Any], list[Any] | None] | None = None
        self._firsts_from: list[Any] | None = None  # the reviews the two above were made of
        self._event_dids: set[str] = set()  # deliverables any review names
        self._events: dict[str, list[Any]] = {}  # review events by contractor
        self._events_from: list[Any] | None = None
        self._regroup_events = False
        # indexes of the resolved deliverables, kept current shard by shard
        self._by_cid: dict[str, dict[str, dict[str, Any]]] = {}
        self._doc_cid: dict[str, str] = {}
        self._by_thread: dict[str, set[str]] = {}
        self._replaced_by: dict[str, dict[str, dict[str, Any]]] = {}
        # what changed since the facts (documents, threads) and slices (contractors) were built
        self._dirty_docs: set[str] = set()
        self._dirty_threads: set[str] = set()
        self._dirty_cids: set[str] = set()
        self._facts_instr = -1
        self._skills: dict[str, Any] = {}
        self._last_derived: dict[str, Any] | None = None
        self.stats = {"shards_read": 0}

    # -- parts ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read what changed on disk since the last look (cheap when nothing did)."""
        for name in FILES:
            stamp: Any = file_stamp(self.store.root / name)
            if name in SHARDED:  # the records in bounded shards (agent.store.records)
                stamp = (stamp, records.stamps(self.store, SHARDED[name]))
            if name not in self._files or self._files[name] != stamp:
                self._files[name] = stamp
                part = name.removesuffix(".json")
                self.gen["roster" if part == "roster" else part] += 1
                if part == "roster":
                    self._load_roster()
        self._refresh_deliverables()
        self._refresh_messages()

    def _load_roster(self) -> None:
        roster = self.store.roster()
        links = {key: cid for key in roster.identities
                 if (cid := roster.contractor_of(key)) is not None}
        if links != self.links or self.roster is None:
            self.gen["links"] += 1
        contractors: list[Any] = [d for d in roster.contractors.values()
                                  if not d.get("merged_into")]
        names = {c["id"]: c["name"] for c in contractors}
        if names != self.names:
            self.gen["names"] += 1
        self.roster, self.links, self.names, self.contractors = roster, links, names, contractors

    def _stamps(self, folder: str) -> dict[str, Any]:
        cat = self.store.catalog(folder)
        return {name: cat.shards[name].get("stamp") for name in cat.names()}

    def _refresh_deliverables(self) -> None:
        stamps = self._stamps("deliverables")
        changed = False
        for name in set(self._dparts) - set(stamps):
            self._docs_changed(self._dparts.pop(name)[1].docs, [])
            changed = True
        links_gen = self.gen["links"]
        for name, stamp in stamps.items():
            have = self._dparts.get(name)
            if have is not None and have[0] == (stamp, links_gen):
                continue
            if have is None or have[0][0] != stamp:
                part = DeliverablePart(
                    list(self.store.read_shard("deliverables", name).docs("deliverables")))
                self.stats["shards_read"] += 1
            else:
                part = DeliverablePart(have[1].raw)
            # a document that did not change keeps its object: what was derived from it
            # (queue rows, figures) is found again by identity
            same = ({d["id"]: (d, r) for d, r in zip(have[1].raw, have[1].docs, strict=True)}
                    if have is not None and have[0][1] == links_gen else {})
            for d in part.raw:
                old = same.get(d["id"])
                if old is not None and old[0] == d:
                    part.docs.append(old[1])
                else:
                    part.docs.append(dict(d, contractor_id=self.links.get(d.get("identity") or "")
                                          or d.get("contractor_id")))
            self._docs_changed(have[1].docs if have is not None else [], part.docs)
            self._dparts[name] = ((stamp, links_gen), part)
            changed = True
        if changed:
            self.gen["deliverables"] += 1

    def _docs_changed(self, before: list[dict[str, Any]], after: list[dict[str, Any]]) -> None:
        """Keep the indexes by contractor, thread and replaced work current, and note what
        changed (for :meth:`_facts` and :meth:`_slices_now`)."""
        now = {d["id"]: d for d in after}
        for d in before:
            if now.get(d["id"]) is not d:
                self._unindex(d)
        was = {d["id"]: d for d in before}
        for d in after:
            old = was.get(d["id"])
            if old is not d:
                self._index(d)
                if old is not None and old.get("contractor_id") != d.get("contractor_id"):
                    self._regroup_events = True  # its reviews move to another contractor

    def _index(self, d: dict[str, Any]) -> None:
        did, cid = d["id"], d.get("contractor_id") or ""
        self._by_cid.setdefault(cid, {})[did] = d
        self._doc_cid[did] = cid
        self._doc_map[did] = d
        self._dirty_rows.add(did)
        self._by_thread.setdefault(d.get("thread_id") or "", set()).add(did)
        if d.get("replaces"):
            self._replaced_by.setdefault(d["replaces"], {})[did] = d
        self._dirty_docs.add(did)
        self._dirty_cids.add(cid)
        self._dirty_cids.add(self._cid_of(d.get("replaces")))

    def _unindex(self, d: dict[str, Any]) -> None:
        did, cid = d["id"], d.get("contractor_id") or ""
        if self._doc_map.get(did) is d:  # (not when the id was indexed again meanwhile)
            self._doc_map.pop(did)
            self._doc_cid.pop(did, None)
            self._by_thread.get(d.get("thread_id") or "", set()).discard(did)
        if self._by_cid.get(cid, {}).get(did) is d:
            del self._by_cid[cid][did]
        self._dirty_rows.add(did)
        if d.get("replaces") and self._replaced_by.get(d["replaces"], {}).get(did) is d:
            del self._replaced_by[d["replaces"]][did]
        self._dirty_docs.add(did)
        self._dirty_cids.add(cid)
        self._dirty_cids.add(self._cid_of(d.get("replaces")))

    def _cid_of(self, did: str | None) -> str:
        """The contractor of a deliverable by id (as last indexed), ``""`` if none."""
        return self._doc_cid.get(did or "", "")

    def _refresh_messages(self) -> None:
        stamps = self._stamps("messages")
        touched: set[str] = set()
        changed = False
        for name in set(self._mparts) - set(stamps):
            touched.update(self._mparts.pop(name)[1].activity)
            changed = True
        for name, stamp in stamps.items():
            have = self._mparts.get(name)
            if have is not None and have[0] == stamp:
                continue
            if have is not None:
                touched.update(have[1].activity)
                for tid in have[1].activity:
                    self._thread_shards.get(tid, set()).discard(name)
            docs = self.store.read_shard("messages", name).docs("messages")
            self.stats["shards_read"] += 1
            timeline: dict[str, list[dict[str, Any]]] = {}
            sources: dict[str, int] = {}
            for doc in docs:
                key = doc.get("identity")
                if key:
                    timeline.setdefault(key, []).append({k: doc.get(k) for k in TIMELINE_FIELDS})
                source = str(doc.get("source") or "")
                sources[source] = sources.get(source, 0) + 1
            part = MessagePart(timeline, messages_activity(docs), sources)
            for tid in part.activity:
                self._thread_shards.setdefault(tid, set()).add(name)
            touched.update(part.activity)
            self._mparts[name] = (stamp, part)
            changed = True
        self._dirty_threads |= touched
        for tid in touched:  # only the threads the changed shards hold are merged again
            shards = sorted(self._thread_shards.get(tid) or ())
            entries = [self._mparts[s][1].activity[tid] for s in shards
                       if s in self._mparts and tid in self._mparts[s][1].activity]
            if entries:
                self.activity[tid] = _merge_threads(entries)
            else:
                self.activity.pop(tid, None)
                self._thread_shards.pop(tid, None)
        if changed:
            self.gen["messages"] += 1

    # -- memos ------------------------------------------------------------------------------

    def memo(self, key: str, depends: tuple[str, ...], compute: Callable[[], Any], *,
             clock: bool = False) -> Any:
        """``compute()`` once per state of the parts it ``depends`` on (and, with ``clock``,
        at most :data:`CLOCK_TTL` seconds old)."""
        stamp: Any = tuple(self.gen[d] for d in depends)
        hit = self._memo.get(key)
        now = time.monotonic()
        if hit is not None and hit[0][0] == stamp and (not clock or now - hit[0][1] < CLOCK_TTL):
            return hit[1]
        value = compute()
        self._memo[key] = ((stamp, now), value)
        if len(self._memo) > 200:  # suggestions per task, reports per period: keep it small
            for old in list(self._memo)[:50]:
                self._memo.pop(old, None)
        return value

    # -- deliverables -------------------------------------------------------------------------

    def deliverable_map(self) -> dict[str, dict[str, Any]]:
        """Every deliverable by id (kept current shard by shard; do not mutate)."""
        return self._doc_map

    def deliverables_of(self, cid: str) -> list[dict[str, Any]]:
        return sorted(self._by_cid.get(cid, {}).values(),
                      key=lambda d: d.get("received_at") or "")

    def queue(self, row_of: Callable[[dict[str, Any], dict[str, str]], dict[str, Any]]
              ) -> dict[str, dict[str, Any]]:
        """The unreviewed deliverables as queue rows, oldest first, by id. ``row_of(doc,
        names)`` makes one row; only the rows of documents that changed are made again
        (all of them when a contractor's name changed)."""
        def build() -> dict[str, dict[str, Any]]:
            if self._rows_names != self.gen["names"]:
                self._rows_names = self.gen["names"]
                self._rows = {d["id"]: row_of(d, self.names) for d in self._doc_map.values()
                              if d.get("review_status") == "unreviewed"}
            else:
                for did in self._dirty_rows:
                    doc = self._doc_map.get(did)
                    if doc is not None and doc.get("review_status") == "unreviewed":
                        self._rows[did] = row_of(doc, self.names)
                    else:
                        self._rows.pop(did, None)
            self._dirty_rows.clear()
            ordered = sorted(self._rows.values(), key=lambda r: r.get("received_at") or "")
            return {r["id"]: r for r in ordered}

        return self.memo("queue", ("deliverables", "names"), build)  # type: ignore[no-any-return]

    # -- messages -----------------------------------------------------------------------------

    def identities_of(self, cid: str) -> list[str]:
        return [key for key, owner in self.links.items() if owner == cid]

    def messages_of(self, cid: str, limit: int = 200) -> tuple[list[dict[str, Any]], int]:
        """A contractor's newest messages (timeline fields) and how many there are."""
        keys = self.identities_of(cid)
        found: list[dict[str, Any]] = []
        for _, part in self._mparts.values():
            for key in keys:
                found.extend(part.timeline.get(key, ()))
        found.sort(key=lambda d: d.get("sent_at") or "", reverse=True)
        return [dict(d, contractor_id=cid) for d in found[:limit]], len(found)

    def counts(self) -> dict[str, int]:
        """What ``Store.counts`` says, from the parts."""
        messages = sum(n for _, part in self._mparts.values() for n in part.sources.values())
        return {"messages": messages,
                "deliverables": sum(len(part.raw) for _, part in self._dparts.values()),
                "contractors": len(self.contractors),
                "candidates": len(self.store.candidates())}

    # -- workflow -----------------------------------------------------------------------------

    def reviews(self) -> list[dict[str, Any]]:
        from agent.store import workflow as wf

        return self.memo("reviews", ("workflow",),  # type: ignore[no-any-return]
                         lambda: wf.review_events(self.store))

    def reviews_of(self, cid: str) -> list[dict[str, Any]]:
        def build() -> dict[str, list[dict[str, Any]]]:
            out: dict[str, list[dict[str, Any]]] = {}
            for r in self.reviews():
                out.setdefault(r.get("contractor_id") or "", []).append(r)
            return out

        return list(self.memo("reviews_by_contractor", ("workflow",), build).get(cid, []))

    def instructions(self) -> list[dict[str, Any]]:
        from agent.store import workflow as wf

        return self.memo("instructions", ("instructions",),  # type: ignore[no-any-return]
                         lambda: wf.sent_instructions(self.store))

    def templates(self) -> list[dict[str, Any]]:
        from agent.store import workflow as wf

        return self.memo("templates", ("instructions",),  # type: ignore[no-any-return]
                         lambda: wf.templates(self.store))

    # -- the figures ----------------------------------------------------------------------------

    FACTS = ("deliverables", "roster", "workflow", "instructions", "contracts", "messages")

    def facts(self) -> Facts:
        """:class:`agent.stats.Facts` from the parts, each deliverable's kind of work and
        turnaround reused when its document, its contractor's skills, the instructions and
        its thread's activity are the ones it was computed from."""
        return self.memo("facts", self.FACTS, self._facts)  # type: ignore[no-any-return]

    def _facts(self) -> Facts:
        from agent.stats import Facts

        assert self.roster is not None
        docs: list[Any] = list(self._doc_map.values())  # (in no order)
        facts = Facts(roster=self.roster, contractors=cast(Any, self.contractors),
                      deliverables=docs, reviews=cast(Any, self.reviews()),
                      instructions=self.instructions(),
                      contracts=self.memo("contracts", ("contracts",), self.store.contracts),
                      activity=cast(Any, self.activity))
        by_id = {c["id"]: c for c in facts.contractors}
        skills = {cid: c.get("skills") for cid, c in by_id.items()}
        previous = self._last_derived
        if previous is None or self._facts_instr != self.gen["instructions"]:
            redo = set(self.deliverable_map())  # everything
            derived: dict[str, Any] = {}
        else:  # what the documents, threads and skills that changed touch
            redo = set(self._dirty_docs)
            for tid in self._dirty_threads:
                redo |= self._by_thread.get(tid, set())
            for cid in set(skills) | set(self._skills):
                if skills.get(cid) != self._skills.get(cid):
                    redo |= set(self._by_cid.get(cid, {}))
            derived = dict(previous)
        dmap = self.deliverable_map()
        facts._derived = derived
        for did in redo:
            old = derived.pop(did, None)
            d = dmap.get(did)
            contractor = by_id.get(d.get("contractor_id") or "") if d is not None else None
            if d is None or contractor is None:
                continue
            if facts.derived(cast(Any, d), contractor) != old:
                self._dirty_cids.add(d.get("contractor_id") or "")
        facts._cache["first_reviews"] = self._first_reviews(facts)
        self._dirty_docs.clear()
        self._dirty_threads.clear()
        self._last_derived = derived
        self._facts_instr = self.gen["instructions"]
        self._skills = skills
        return facts

    def _first_reviews(self, facts: Facts) -> list[FirstReview]:
        """The first reviews for :func:`agent.stats.review_marks`: when the reviews only gained some since the
        last look and no delivery they count changed, only the new ones are placed; else
        all are gone through again (each entry reused while its review and delivery time
        are the same)."""
        from agent.stats import hours_between

        dmap = self._doc_map
        fresh = self._inserted(self._firsts_from, facts.reviews)
        firsts = self._firsts
        if fresh is not None and all(  # no delivery it counts changed, none came or went
                (did not in firsts or (did in dmap and dmap[did].get("received_at")
                                       == firsts[did][1]))
                and (did in firsts or did not in self._event_dids or did not in dmap)
                for did in self._dirty_docs):
            out, keys = self._firsts_list, self._firsts_keys
            for event in fresh:
                did = event["deliverable_id"]
                d = dmap.get(did)
                stamp = event.get("reviewed_at") or ""
                self._event_dids.add(did)
                if did in firsts:
                    if stamp < firsts[did][0]:  # an earlier review came in: start again
                        return self._all_first_reviews(facts)
                    continue
                if d is None:
                    continue
                entry = (stamp, hours_between(d.get("received_at"), stamp))
                firsts[did] = (stamp, d.get("received_at"), entry)
                at = bisect_right(keys, stamp)  # (a later review of equal time goes after)
                out.insert(at, entry)
                keys.insert(at, stamp)
            self._firsts_from = facts.reviews
            return list(out)
        return self._all_first_reviews(facts)

    def _all_first_reviews(self, facts: Facts) -> list[FirstReview]:
        from agent.stats import hours_between

        dmap = self._doc_map
        out: list[FirstReview] = []
        kept: dict[str, tuple[str, Any, FirstReview]] = {}
        self._event_dids = {e["deliverable_id"] for e in facts.reviews}
        for event in facts.reviews:
            did = event["deliverable_id"]
            d = dmap.get(did)
            if did in kept or d is None:
                continue
            stamp = event.get("reviewed_at") or ""
            received = d.get("received_at")
            have = self._firsts.get(did)
            if have is not None and have[0] == stamp and have[1] == received:
                entry = have[2]
            else:
                entry = (stamp, hours_between(received, stamp))
            kept[did] = (stamp, received, entry)
            out.append(entry)
        out.sort(key=lambda e: e[0])  # (stable: as the store lists them, nothing moves)
        self._firsts = kept
        self._firsts_list = out
        self._firsts_keys = [e[0] for e in out]
        self._firsts_from = facts.reviews
        return list(out)

    def _inserted(self, before: list[Any] | None, after: list[Any]) -> list[Any] | None:
        """The reviews in ``after`` that ``before`` did not have, when ``after`` is
        ``before`` with some added (each review is recorded once and never changed), in
        the order of ``after``; else None (then everything is looked at again)."""
        if before is None or len(after) < len(before):
            return None
        last = self._last_inserted
        if last is not None and last[0] is before and last[1] is after:
            return last[2]  # (the first reviews and the contractors' shares ask the same)
        found = self._find_inserted(before, after)
        self._last_inserted = (before, after, found)
        return found

    def _find_inserted(self, before: list[Any], after: list[Any]) -> list[Any] | None:
        if after[:len(before)] == before:  # (the usual case: reviews made now come last)
            return after[len(before):]
        ids = self._review_ids.get(id(before))
        if ids is None or ids[0] is not before:
            ids = (before, {e["id"] for e in before})
            self._review_ids = {id(before): ids}
        known = ids[1]
        fresh = [e for e in after if e["id"] not in known]
        if len(fresh) != len(after) - len(before) or \
                [e for e in after if e["id"] in known] != before:
            return None
        return fresh

    # -- per contractor ---------------------------------------------------------------------

    def slices(self) -> dict[str, Slice]:
        """Every contractor's share of the facts, and its figures; a contractor's share is
        computed again only when something it is made of changed."""
        return self.memo("slices", self.FACTS, self._slices_now)  # type: ignore[no-any-return]

    def _slices_now(self) -> dict[str, Slice]:
        from agent.stats import Facts, compute, words

        facts = self.facts()
        dirty = self._dirty_cids
        self._dirty_cids = set()
        gens = {k: self.gen[k] for k in ("workflow", "links", "contracts", "roster")}
        seen = self._slices_gens
        new_events = (not self._slices or self._regroup_events
                      or any(gens[k] != seen.get(k) for k in ("workflow", "links")))
        new_contracts = not self._slices or any(gens[k] != seen.get(k)
                                                for k in ("contracts", "links"))
        new_roster = gens["roster"] != seen.get("roster")
        self._slices_gens = gens
        events: dict[str, list[Any]] = {}
        tail = (self._inserted(self._events_from, facts.reviews)
                if new_events and gens["links"] == seen.get("links")
                and not self._regroup_events else None)
        self._regroup_events = False
        if tail is not None:  # reviews recorded since: only their contractors change
            events = dict(self._events)
            for e in tail:
                cid = self._doc_cid.get(e["deliverable_id"], "")
                mine = list(events.get(cid, []))
                at = bisect_right([x.get("reviewed_at") or "" for x in mine],
                                  e.get("reviewed_at") or "")
                mine.insert(at, e)  # in the store's order: by time, a later one after
                events[cid] = mine
                dirty.add(cid)
        elif new_events:  # a review event belongs to its deliverable's contractor
            for e in facts.reviews:
                events.setdefault(self._doc_cid.get(e["deliverable_id"], ""), []).append(e)
        if new_events:
            self._events, self._events_from = events, facts.reviews
        contracts: dict[str, list[Any]] = {}
        if new_contracts:
            for k in facts.contracts:
                contracts.setdefault(facts.roster.contractor_of(k.get("identity")) or "",
                                     []).append(k)
        out: dict[str, Slice] = {}
        for c in facts.contractors:
            cid = c["id"]
            old = self._slices.get(cid)
            evs = events.get(cid, []) if new_events or old is None else old.events
            ks = contracts.get(cid, []) if new_contracts or old is None else old.contracts
            if (old is not None and cid not in dirty and (not new_roster or old.contractor == c)
                    and (not new_events or tail is not None or old.events == evs)
                    and (not new_contracts or old.contracts == ks)):
                out[cid] = old
                continue
            own = list(self._by_cid.get(cid, {}).values())
            extra = [r for d in own for r in self._replaced_by.get(d["id"], {}).values()
                     if r.get("contractor_id") != cid]  # a new version by someone else
            ds = sorted(own + extra, key=lambda d: d.get("received_at") or "")
            sub = Facts(roster=facts.roster, contractors=[c], deliverables=cast(Any, ds),
                        reviews=cast(Any, evs),
                        instructions=facts.by_contractor_instr.get(cid, []),
                        contracts=cast(Any, ks),
                        activity=facts.activity)
            sub._derived = {d["id"]: facts._derived[d["id"]] for d in own
                            if d["id"] in facts._derived}
            history: set[str] = set()
            for d in own:
                history |= words(f"{d.get('title', '')} {d.get('filename', '')}")
            out[cid] = Slice(cast(Any, c), ds, evs, ks, sub, compute(sub)[cid], history)
        self._slices = out
        return out

    def roster_rows(self) -> list[dict[str, Any]]:
        from agent.stats import roster_rows

        def build() -> list[dict[str, Any]]:
            metrics = {cid: s.metrics for cid, s in self.slices().items()}
            return roster_rows(self.store, self.facts(), metrics)

        return self.memo("roster_rows", self.FACTS, build)  # type: ignore[no-any-return]

    def roster_row(self, cid: str) -> dict[str, Any] | None:
        index = self.memo("roster_index", self.FACTS,
                          lambda: {r["id"]: r for r in self.roster_rows()})
        row: dict[str, Any] | None = index.get(cid)
        return row

    def suggest(self, task: str) -> list[dict[str, Any]]:
        from agent.suggest import rank

        history = {cid: s.history for cid, s in self.slices().items()}
        return self.memo(f"suggest:{task.lower()}", self.FACTS,  # type: ignore[no-any-return]
                         lambda: rank(task, self.roster_rows(), self.facts(), history=history),
                         clock=True)

    def report(self, period: timedelta) -> dict[str, Any]:
        """``agent.report.build`` for the last ``period``: each contractor's figures for a
        period computed again only when their share or what of it falls in the period
        changed; the figures per skill from the work in the period only."""
        from agent.report import build

        def compute_report() -> dict[str, Any]:
            now = datetime.now(UTC)
            return build(self.store, since=period, now=now, facts=self.facts(),
                         metrics=lambda a, b, by_skill: self._period(now, a, b, by_skill))

        return self.memo(f"report:{period.total_seconds()}",  # type: ignore[no-any-return]
                         self.FACTS, compute_report, clock=True)

    def _period(self, now: datetime, since: datetime, until: datetime, by_skill: bool
                ) -> dict[str, dict[str, Any]]:
        from agent.stats import Facts, compute

        lo, hi = iso(since) or "", iso(until) or "\uffff"
        slices = self.slices()
        if by_skill:
            works: list[Work] = []
            events: list[ReviewEvent] = []
            for s in slices.values():
                (wa, wb), (ea, eb) = s.within(lo, hi)
                works.extend(s.works[wa:wb])
                events.extend(s.events_by_time[ea:eb])
            works.sort(key=lambda x: x.received)
            facts = self.facts()
            view = Facts(roster=facts.roster, contractors=facts.contractors, deliverables=[],
                         reviews=[], instructions=[], contracts=[], activity={})
            view._cache["work"] = (works, events)
            return compute(view, since=since, until=until, by_skill=True)
        which = (round((since - now).total_seconds()), round((until - now).total_seconds()))
        out = {}
        for cid, s in slices.items():
            member = (s.within(lo, hi), tuple(
                i for i, k in enumerate(s.contracts) if (k.get("started_at") or "") < hi
                and (k.get("ended_at") is None or k["ended_at"] >= lo)))
            have = s.periods.get(which)
            if have is None or have[0] != member:
                s.periods[which] = (member, compute(s.sub, since=since, until=until)[cid])
            out[cid] = s.periods[which][1]
        return out


@dataclass
class Slice:
    """One contractor's share of the facts (what :func:`agent.stats.compute` reads for
    them), their all-time figures, the words of their work, and figures per period."""

    contractor: dict[str, Any]
    docs: list[dict[str, Any]]
    events: list[dict[str, Any]]
    contracts: list[dict[str, Any]]
    sub: Facts
    metrics: dict[str, Any]
    history: set[str]
    periods: dict[tuple[int, int], tuple[Any, dict[str, Any]]] = field(default_factory=dict)
    works: list[Work] = field(default_factory=list)  # by time received
    events_by_time: list[ReviewEvent] = field(default_factory=list)  # by time reviewed
    _work_keys: list[str] = field(default_factory=list)
    _event_keys: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from agent.stats import _work

        works, events = _work(self.sub)
        self.works = sorted(works, key=lambda w: w.received)
        self.events_by_time = sorted(events, key=lambda e: e.reviewed)
        self._work_keys = [w.received for w in self.works]
        self._event_keys = [e.reviewed for e in self.events_by_time]

    def within(self, lo: str, hi: str) -> tuple[tuple[int, int], tuple[int, int]]:
        """The ranges of :attr:`works` and :attr:`events_by_time` in ``[lo, hi)``."""
        wk, ek = self._work_keys, self._event_keys
        return ((bisect_left(wk, lo), bisect_left(wk, hi)),
                (bisect_left(ek, lo), bisect_left(ek, hi)))


def _settle() -> None:
    """Take what the read model holds out of the cyclic garbage collector's sight.

    The parts are long-lived and acyclic (freed by reference counting when replaced); with
    a whole store in memory, each full collection would walk them all, a pause of several
    hundred milliseconds at a random request. Young garbage is collected first, so only
    live objects are frozen."""
    gc.collect(1)
    gc.freeze()


class StoreAccess:
    """One :class:`Store` and its :class:`ReadModel` per dashboard, used by one request at
    a time under ``lock`` (the store's caches are not thread-safe)."""

    def __init__(self, data_dir: Path, lock: threading.RLock) -> None:
        self.data_dir = data_dir
        self.lock = lock
        self._store: Store | None = None
        self._model: ReadModel | None = None
        self._warming: threading.Thread | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.data_dir)
        return self._store

    def model(self) -> ReadModel:
        """The read model, refreshed against the files (call it once per request, under
        the lock; the pages then read it as it is)."""
        with self.lock:
            if self._model is None:
                self._model = ReadModel(self.store)
            read = self._model.stats["shards_read"]
            self._model.refresh()
            if self._model.stats["shards_read"] != read:
                _settle()
            return self._model

    @contextmanager
    def writing(self) -> Iterator[Store]:
        """The store's write lock (the same file lock as the CLI's and the daemon's)."""
        with self.lock, self.store.writing() as store:
            yield store

    def warm(self, views: Callable[[ReadModel], None]) -> None:
        """Read the whole store once in the background, so the first pages are ready when
        the owner opens them (a request meanwhile waits for the lock, then finds it done)."""
        def run() -> None:
            try:
                with self.lock:
                    views(self.model())
                    _settle()
            except Exception:  # warming is an optimization: never let it break anything
                log.debug("reading the store ahead failed", exc_info=True)

        self._warming = threading.Thread(target=run, name="retainer-web-warm", daemon=True)
        self._warming.start()

    @property
    def warming(self) -> bool:
        return self._warming is not None and self._warming.is_alive()
