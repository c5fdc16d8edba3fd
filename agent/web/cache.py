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

The views are then rebuilt in memory from the parts, and the costly per-deliverable
results (a queue row, a deliverable's kind of work and turnaround) are reused whenever
every input they were computed from is the same object, or equal, as before. Nothing is
served from a file older than the last look: a write by the dashboard, the CLI or the
daemon is seen by the very next request. There is no background recomputation to wait
for, and no patching of results by hand after the dashboard's own writes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.store import Store
from agent.store.storage import file_stamp

if TYPE_CHECKING:
    from agent.stats import Facts
    from agent.store.core import Roster

log = logging.getLogger("retainer.web")

FILES = ("roster.json", "workflow.json", "instructions.json", "contracts.json")
TIMELINE_FIELDS = ("id", "sent_at", "direction", "subject", "source")
#: how long a figure that depends on the clock (ages, "the last 90 days") is reused
CLOCK_TTL = 60.0


@dataclass
class MessagePart:
    """What the dashboard keeps of one message shard."""

    timeline: dict[str, list[dict[str, Any]]]  # identity -> its messages (timeline fields)
    activity: dict[str, dict[str, Any]]  # thread id -> owner's message times, last message
    sources: dict[str, int]  # source -> messages


@dataclass
class DeliverablePart:
    """One deliverable shard: its documents as stored, and with contractors resolved."""

    raw: list[dict[str, Any]]
    docs: list[dict[str, Any]] = field(default_factory=list)


def _thread_summary(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per thread of one shard: the owner's message times and the last message (as
    :func:`agent.store.workflow.thread_activity` keeps them)."""
    out: dict[str, dict[str, Any]] = {}
    for doc in docs:
        entry = out.get(doc["thread_id"])
        if entry is None:
            entry = out[doc["thread_id"]] = {"out": [], "last_at": "", "last_dir": "",
                                             "identity": None, "last_id": None}
        sent = doc.get("sent_at") or ""
        if doc.get("direction") == "out":
            entry["out"].append(sent)
        if sent >= entry["last_at"]:
            entry.update(last_at=sent, last_dir=doc.get("direction"), last_id=doc["id"])
        if doc.get("identity") and not entry["identity"]:
            entry["identity"] = doc["identity"]
    return out


def _merge_threads(entries: list[dict[str, Any]]) -> dict[str, Any]:
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
        self._rows: dict[str, tuple[Any, int, dict[str, Any]]] = {}
        self._derived: dict[str, tuple[Any, Any, int, Any, Any]] = {}
        self.stats = {"shards_read": 0}

    # -- parts ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read what changed on disk since the last look (cheap when nothing did)."""
        for name in FILES:
            stamp = file_stamp(self.store.root / name)
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
        contractors = [d for d in roster.contractors.values() if not d.get("merged_into")]
        names = {c["id"]: c["name"] for c in contractors}
        if names != self.names:
            self.gen["names"] += 1
        self.roster, self.links, self.names, self.contractors = roster, links, names, contractors

    def _stamps(self, folder: str) -> dict[str, Any]:
        cat = self.store.catalog(folder)
        return {name: cat.shards[name].get("stamp") for name in cat.names()}

    def _refresh_deliverables(self) -> None:
        stamps = self._stamps("deliverables")
        changed = set(self._dparts) - set(stamps)
        for name in changed:
            del self._dparts[name]
        links_gen = self.gen["links"]
        for name, stamp in stamps.items():
            have = self._dparts.get(name)
            if have is None or have[0] != (stamp, links_gen):
                if have is None or have[0][0] != stamp:
                    part = DeliverablePart(
                        list(self.store.read_shard("deliverables", name).docs("deliverables")))
                    self.stats["shards_read"] += 1
                else:
                    part = have[1]
                part.docs = [dict(d, contractor_id=self.links.get(d.get("identity") or "")
                                  or d.get("contractor_id")) for d in part.raw]
                self._dparts[name] = ((stamp, links_gen), part)
                changed.add(name)
        if changed:
            self.gen["deliverables"] += 1

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
            part = MessagePart(timeline, _thread_summary(docs), sources)
            for tid in part.activity:
                self._thread_shards.setdefault(tid, set()).add(name)
            touched.update(part.activity)
            self._mparts[name] = (stamp, part)
            changed = True
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

    def deliverables(self) -> list[dict[str, Any]]:
        """Every deliverable, contractor resolved, oldest first (as ``Store.deliverables``)."""
        def build() -> list[dict[str, Any]]:
            out = [d for _, part in self._dparts.values() for d in part.docs]
            out.sort(key=lambda d: d.get("received_at") or "")
            return out

        return self.memo("deliverables", ("deliverables",), build)  # type: ignore[no-any-return]

    def deliverable_map(self) -> dict[str, dict[str, Any]]:
        return self.memo("deliverable_map", ("deliverables",),  # type: ignore[no-any-return]
                         lambda: {d["id"]: d for d in self.deliverables()})

    def deliverables_of(self, cid: str) -> list[dict[str, Any]]:
        def build() -> dict[str, list[dict[str, Any]]]:
            out: dict[str, list[dict[str, Any]]] = {}
            for d in self.deliverables():
                out.setdefault(d.get("contractor_id") or "", []).append(d)
            return out

        index = self.memo("deliverables_by_contractor", ("deliverables",), build)
        return list(index.get(cid, []))

    def queue(self, row_of: Callable[[dict[str, Any], dict[str, str]], dict[str, Any]]
              ) -> dict[str, dict[str, Any]]:
        """The unreviewed deliverables as queue rows, oldest first, by id. ``row_of(doc,
        names)`` makes one row; a row is made again only when its document or the
        contractors' names changed."""
        def build() -> dict[str, dict[str, Any]]:
            names_gen = self.gen["names"]
            rows: dict[str, dict[str, Any]] = {}
            kept: dict[str, tuple[Any, int, dict[str, Any]]] = {}
            for doc in self.deliverables():
                if doc.get("review_status") != "unreviewed":
                    continue
                have = self._rows.get(doc["id"])
                if have is not None and have[0] is doc and have[1] == names_gen:
                    row = have[2]
                else:
                    row = row_of(doc, self.names)
                kept[doc["id"]] = (doc, names_gen, row)
                rows[doc["id"]] = row
            self._rows = kept
            return rows

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
        facts = Facts(roster=self.roster, contractors=self.contractors,
                      deliverables=self.deliverables(), reviews=self.reviews(),
                      instructions=self.instructions(),
                      contracts=self.memo("contracts", ("contracts",), self.store.contracts),
                      activity=self.activity)
        for ins in facts.instructions:
            facts.by_contractor_instr.setdefault(ins["contractor_id"], []).append(ins)
        by_id = {c["id"]: c for c in facts.contractors}
        instructions_gen = self.gen["instructions"]
        kept: dict[str, tuple[Any, Any, int, Any, Any]] = {}
        for d in facts.deliverables:
            contractor = by_id.get(d.get("contractor_id") or "")
            if contractor is None:
                continue
            skills = contractor.get("skills")
            activity = self.activity.get(d.get("thread_id") or "")
            have = self._derived.get(d["id"])
            if (have is not None and have[0] is d and have[1] == skills
                    and have[2] == instructions_gen and have[3] is activity):
                facts._derived[d["id"]] = have[4]
                kept[d["id"]] = have
            else:
                kept[d["id"]] = (d, skills, instructions_gen, activity,
                                 facts.derived(d, contractor))
        self._derived = kept
        return facts

    def roster_rows(self) -> list[dict[str, Any]]:
        from agent.stats import roster_rows

        return self.memo("roster_rows", self.FACTS,  # type: ignore[no-any-return]
                         lambda: roster_rows(self.store, self.facts()))

    def roster_row(self, cid: str) -> dict[str, Any] | None:
        index = self.memo("roster_index", self.FACTS,
                          lambda: {r["id"]: r for r in self.roster_rows()})
        row: dict[str, Any] | None = index.get(cid)
        return row


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
            self._model.refresh()
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
            except Exception:  # warming is an optimization: never let it break anything
                log.debug("reading the store ahead failed", exc_info=True)

        self._warming = threading.Thread(target=run, name="retainer-web-warm", daemon=True)
        self._warming.start()

    @property
    def warming(self) -> bool:
        return self._warming is not None and self._warming.is_alive()
