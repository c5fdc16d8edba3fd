"""Bounded shards and their small indexes (store schema 2).

Messages (with their thread entries) and deliverables live in numbered shard files,
``store/messages/s000001.json``, ``s000002.json`` ... New documents go to the last shard
until it holds :data:`SHARD_DOCS` documents or :data:`SHARD_BYTES` bytes, then a new
shard is started, whatever the documents' dates. A document that changes is rewritten
in the shard it already lives in. So one page writes the shards it touched: the open one,
bounded in size, and the few older ones that held re-fetched documents.

Each shard has a summary in ``store/index/<folder>/<shard>.json``: its document ids, the
identities, sources and contractors it holds, its time range and (deliverables) which
ids await review; a message shard's thread entries are in ``<shard>.threads.json``.
Summaries are derived data: each records the (inode, mtime, size) stamp of the shard it
describes and is rebuilt from the shard when the stamp does not match (a kill between the
shard write and the summary write, another process, a lost temp file, a copied folder).
Summaries and the folders' change marks are rewritten in place, sealed with a CRC-32
(:func:`agent.files.write_derived`): no temp file, so no inode freed at every page (what
made a long sync's file creations slower and slower on ext4); a copy torn by a kill or
read while being written fails its seal and is rebuilt. So the shards stay the only
truth and crash-safety is that of the shards: atomic replace, records before cursors.

Listings read the summaries (a few kB per shard) to pick the shards worth opening:
a contractor's messages, the review queue, a thread, one document by id.
"""

from __future__ import annotations

import logging
import os
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from agent.files import ensure_private_dir, read_derived, write_derived
from agent.store.storage import Shard, file_stamp

log = logging.getLogger("retainer.store")

SCHEMA_VERSION = 3  # of the store: 1, one shard per month; 2, bounded shards + summaries;
#                    3, reviews, outbox and reminders in bounded shards too (no workflow.json)
BOUNDED_SCHEMA = 2  # the first schema of bounded message and deliverable shards
SHARD_DOCS = 1000  # messages per shard, at most
DELIVERABLE_SHARD_DOCS = 250  # deliverables come one per 20-50 messages: smaller shards
#                               (and so do reviews, sent messages, reminders: every folder
#                               but messages rolls at this count)
SHARD_BYTES = 2 << 20  # bytes per shard, at most (one bigger document gets a shard alone)
SHARD_RE = re.compile(r"^s(\d{6,})$")
MONTH_RE = re.compile(r"^\d{4}-\d{2}$")
SUMMARY_VERSION = 6  # 6: sealed and rewritten in place (agent.files.write_derived)
MAP_AFTER = 1000  # lookups by id answered from the sorted summaries before a map is built

# per folder: the table of documents and its time field
TABLES = {"messages": ("messages", "sent_at"), "deliverables": ("deliverables", "received_at"),
          # records of the owner's work (agent.store.records): one folder of shards each
          "reviews": ("reviews", "reviewed_at"), "outbox": ("outbox", "sent_at"),
          "notified": ("events", "at"), "instructions": ("sent", "sent_at")}


def shard_name(number: int) -> str:
    return f"s{number:06d}"


def shard_number(name: str) -> int:
    match = SHARD_RE.match(name)
    return int(match.group(1)) if match else 0


def shard_docs(folder: str) -> int:
    return SHARD_DOCS if folder == "messages" else DELIVERABLE_SHARD_DOCS


def doc_size(doc: Mapping[str, Any]) -> int:
    """About how many bytes a document takes in its shard."""
    try:
        return len(orjson.dumps(doc)) + 12
    except (orjson.JSONEncodeError, TypeError):
        return len(repr(doc)) + 12


def chain_key(doc: dict[str, Any]) -> str | None:
    """Which piece of work a deliverable is a version of: same person, same thread (or
    contract), same file name apart from version marks; None when that is not known."""
    where = doc.get("thread_id") or (doc.get("extra") or {}).get("contract_remote_id")
    if doc.get("identity") and where and doc.get("work"):
        return f"{doc.get('identity')}|{where}|{doc.get('work')}"
    return None


def summarize(folder: str, shard: Shard) -> dict[str, Any]:
    """The summary of one shard, from its documents (and, for messages, its thread
    entries under ``threads``, which are kept in a file of their own)."""
    table, when = TABLES[folder]
    docs = shard.docs(table)
    ids: list[str] = []
    identities: set[str] = set()
    sources: set[str] = set()
    contractors: set[str] = set()
    unreviewed: list[str] = []
    queue: list[dict[str, Any]] = []  # the unreviewed documents themselves, as stored
    chains: dict[str, dict[str, Any]] = {}  # work -> its latest version in this shard
    first, last = "", ""
    for doc in docs:
        ids.append(doc["id"])
        if doc.get("identity"):
            identities.add(doc["identity"])
        if doc.get("contractor_id"):
            contractors.add(doc["contractor_id"])
        sources.add(doc.get("source") or "")
        stamp = doc.get(when) or ""
        if not first or stamp < first:
            first = stamp
        if stamp > last:
            last = stamp
        if folder == "deliverables":
            if doc.get("review_status") == "unreviewed":
                unreviewed.append(doc["id"])
                queue.append(doc)
            key = chain_key(doc)
            have = chains.get(key) if key else None
            if key and (have is None or (have["latest_at"], have["version"])
                        <= (stamp, doc.get("version") or 1)):
                chains[key] = {"key": key, "latest": doc["id"], "latest_at": stamp,
                               "version": doc.get("version") or 1,
                               "root": doc.get("version_of") or doc["id"]}
    ids.sort()  # looked up by bisection
    summary: dict[str, Any] = {
        "version": SUMMARY_VERSION, "stamp": None, "ids": ids,
        "identities": sorted(identities), "sources": sorted(sources),
        "contractors": sorted(contractors), "first": first, "last": last,
    }
    if folder == "deliverables":
        summary["unreviewed"] = unreviewed
        summary["chains"] = chains
        summary["queue"] = queue
    elif folder == "messages":
        summary["threads"] = {doc["id"]: doc for doc in shard.docs("threads")}
    return summary


SIDES = ("ids", "threads", "chains", "queue")  # kept beside the summary, loaded when needed
#: side data only listings read (the write path never does): once a write has saved it to
#: its file it is let go, and read back from the file if a listing asks
READ_SIDES = ("threads", "queue")
#: lists of text in a summary, kept as tuples in memory (see :func:`compact`)
TEXT_LISTS = ("identities", "sources", "contractors", "unreviewed")


def compact(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary as the catalog keeps it in memory: its lists of text as tuples.

    A catalog lives as long as its store and grows with it (at 200,000 messages, 200
    summaries and 200,000 ids). Python's cyclic garbage collector walks every list at
    every full collection, while a tuple of text is untracked after the first one; so
    the collector's work stays that of a page, not of the store. Written to JSON the
    same (arrays); read the same (``in``, iteration, ``len``).
    """
    for key in TEXT_LISTS:
        value = summary.get(key)
        if isinstance(value, list):
            summary[key] = tuple(value)
    return summary


class Catalog:
    """The shards of one folder and their summaries, in memory; lookups by id.

    A summary is three small files: ``<shard>.json`` (what listings filter on),
    ``<shard>.ids.json`` (sorted ids: lookups by id, placing new documents) and, for
    messages, ``<shard>.threads.json`` (thread entries), for deliverables,
    ``<shard>.chains.json`` (the latest version of each piece of work in the shard) and
    ``<shard>.queue.json`` (its unreviewed deliverables as stored: the review queue is read
    from these, not from the shards).
    ``disk=False`` (the in-memory store) keeps them only in memory.

    What the catalog keeps lives as long as its store and grows with it, so it is kept in
    shapes Python's cyclic garbage collector skips (:func:`compact`), and the thread and
    queue sides of the shards a write produced are let go once in their files
    (:data:`READ_SIDES`): a long sync's collections cost what a page costs.
    """

    def __init__(self, folder: str, shard_dir: Path, index_dir: Path,
                 reader: Callable[[str], Shard], *, disk: bool = True) -> None:
        self.folder = folder
        self.shard_dir = shard_dir
        self.index_dir = index_dir
        self.reader = reader
        self.disk = disk
        self.shards: dict[str, dict[str, Any]] = {}
        self._where: dict[str, str] | None = None
        self._lookups = 0
        self._lists: list[tuple[str, tuple[str, ...]]] | None = None  # (shard, sorted ids)
        self._sides: dict[str, dict[str, tuple[Any, Any]]] = {k: {} for k in SIDES}
        self._dirty: set[str] = set()
        self._pending: dict[str, tuple[int, int]] = {}  # shard -> (docs, bytes) being placed
        self._loaded = False
        # "dirty:<token>" while a process writes shards of this folder, "clean:<token>"
        # after: an unchanged clean token means nothing changed since we last looked
        self._gen_path = index_dir.parent / f"{folder}.generation"
        self._gen_seen: bytes | None = None
        self._writing = False

    # -- reading --------------------------------------------------------------------------

    def names(self) -> list[str]:
        self.refresh()
        return list(self.shards)

    def refresh(self) -> None:
        """Pick up shards written since the last look (by this or another process)."""
        if not self.disk:
            self._loaded = True
            return
        generation = read_derived(self._gen_path)  # None: missing, or torn by a writer now
        if not generation or not generation.startswith(b'"clean:'):
            generation = None  # being written, or a writer was killed: look at every shard
        elif self._loaded and generation == self._gen_seen:
            return
        found: dict[str, tuple[int, int, int]] = {}
        try:
            entries = list(os.scandir(self.shard_dir))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            name, dot, ext = entry.name.partition(".")
            if ext != "json" or not dot or not SHARD_RE.match(name):
                continue
            st = entry.stat()
            found[name] = (st.st_ino, st.st_mtime_ns, st.st_size)
        changed = not self._loaded or set(found) != set(self.shards)
        fresh: dict[str, dict[str, Any]] = {}
        for name in sorted(found, key=shard_number):
            stamp = list(found[name])
            summary = self.shards.get(name)
            if summary is None or summary["stamp"] != stamp:
                summary = self._cached(self.index_dir / f"{name}.json", stamp)
                if summary is None:
                    summary = self._rebuild(name, stamp, keep=False)
                else:
                    compact(summary)
                changed = True
            fresh[name] = summary
        self.shards = fresh
        self._loaded = True
        self._gen_seen = generation
        if changed:
            self._where = None
            self._lists = None

    def _cached(self, path: Path, stamp: list[int] | None) -> dict[str, Any] | None:
        raw = read_derived(path)
        if raw is None:  # lost, torn by a write now or a kill, or of an older version
            return None
        try:
            cached = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if (isinstance(cached, dict) and cached.get("version") == SUMMARY_VERSION
                and cached.get("stamp") == stamp):
            return cached
        return None

    def _rebuild(self, name: str, stamp: list[int] | None, *, keep: bool = True
                 ) -> dict[str, Any]:
        """A shard's summary from the shard itself (its cached one is stale or lost).
        Unless ``keep``, the sides only listings read are let go once in their files, so
        summing up every shard (a copied data folder) holds one shard's at a time."""
        summary = summarize(self.folder, self.reader(name))
        summary["stamp"] = stamp
        self._split(name, summary)
        if self._save(name, summary) and not keep:
            for kind in READ_SIDES:
                self._sides[kind].pop(name, None)
        return summary

    def _split(self, name: str, summary: dict[str, Any]) -> None:
        """Move the side data (ids, threads) out of a fresh summary into memory."""
        summary["count"] = len(summary["ids"])
        summary["ids"] = tuple(summary["ids"])  # untracked by the collector: see compact()
        compact(summary)
        for kind in SIDES:
            if kind in summary:
                self._sides[kind][name] = (summary["stamp"], summary.pop(kind))

    def _save(self, name: str, summary: dict[str, Any]) -> bool:
        """Write a summary and its side files; False if they could not be (or the
        catalog keeps them in memory only)."""
        if not self.disk:
            return False
        try:  # derived data: no fsync; a lost or stale summary is rebuilt from its shard
            for kind in SIDES:  # first, so a summary never outlives its side files
                have = self._sides[kind].get(name)
                if have is not None and have[0] == summary["stamp"]:
                    write_derived(self.index_dir / f"{name}.{kind}.json",
                                  orjson.dumps({"version": SUMMARY_VERSION,
                                                "stamp": summary["stamp"], kind: have[1]}))
            write_derived(self.index_dir / f"{name}.json", orjson.dumps(summary))
        except OSError:
            return False  # a read-only data folder still gets its answers, just slower
        return True

    def _side(self, name: str, kind: str) -> Any:
        stamp = self.shards[name]["stamp"]
        have = self._sides[kind].get(name)
        if have is not None and have[0] == stamp:
            return have[1]
        cached = self._cached(self.index_dir / f"{name}.{kind}.json", stamp)
        if cached is None:
            self._rebuild(name, stamp)
            return self._sides[kind][name][1]
        value = tuple(cached[kind]) if kind == "ids" else cached[kind]
        self._sides[kind][name] = (stamp, value)
        return value

    def threads(self, name: str) -> dict[str, dict[str, Any]]:
        """The thread entries of one message shard (``{thread id: entry}``)."""
        threads: dict[str, dict[str, Any]] = self._side(name, "threads")
        return threads

    def chain(self, key: str) -> dict[str, Any] | None:
        """The latest stored version of one piece of work (see :func:`chain_key`)."""
        if not self._loaded:
            self.refresh()
        best: dict[str, Any] | None = None
        for name in self.shards:
            found = self._side(name, "chains").get(key)
            if found is not None and (best is None or (best["latest_at"], best["version"])
                                      <= (found["latest_at"], found["version"])):
                best = found
        return best

    def queue(self, name: str) -> list[dict[str, Any]]:
        """The unreviewed deliverables of one shard, as stored, in shard order (a review
        queue read model written with the shard; rebuilt from it when stale or lost)."""
        docs: list[dict[str, Any]] = self._side(name, "queue")
        return docs

    def shard_ids(self, name: str) -> list[str]:
        """The ids of one shard, sorted."""
        return list(self._ids(name))

    def _ids(self, name: str) -> tuple[str, ...]:
        """The ids of one shard, sorted, as kept in memory (no copy, for lookups)."""
        ids: tuple[str, ...] = self._side(name, "ids")
        return ids

    def where(self, doc_id: str) -> str | None:
        """The shard holding a document, or None.

        The first lookups bisect each shard's sorted ids (a small sync, a review, a
        listing: no map to build); after :data:`MAP_AFTER` of them (a big sync) an
        ``{id: shard}`` map is built once and kept up to date.
        """
        if not self._loaded:
            self.refresh()
        if self._where is None and self._lookups < MAP_AFTER:
            self._lookups += 1
            if self._lists is None:
                self._lists = [(name, self._ids(name)) for name in self.shards]
            for name, ids in self._lists:
                at = bisect_left(ids, doc_id)
                if at < len(ids) and ids[at] == doc_id:
                    return name
            return None
        if self._where is None:
            where: dict[str, str] = {}
            for name in self.shards:
                where.update(dict.fromkeys(self._ids(name), name))
            self._where = where
        return self._where.get(doc_id)

    def where_many(self, doc_ids: Iterable[str]) -> dict[str, str]:
        """The shard of each of ``doc_ids`` that is stored (``{id: shard}``; new ones
        left out), for a page of documents at once.

        Without the map of :meth:`where`, each shard's sorted ids are intersected with the
        page's (one pass in C per shard, about 20 microseconds for 1,000 ids) instead of
        bisecting every shard for every document (a few microseconds per shard and
        document: at 200 shards, a second per page of 200). Counts towards
        :data:`MAP_AFTER` like single lookups, so a long sync still builds the map once.
        """
        wanted = set(doc_ids)
        if not wanted:
            return {}
        if not self._loaded:
            self.refresh()
        self._lookups += len(wanted)
        if self._where is None and self._lookups > MAP_AFTER:
            self.where(next(iter(wanted)))  # builds the map
        if self._where is not None:
            where = self._where
            return {doc_id: where[doc_id] for doc_id in wanted if doc_id in where}
        if self._lists is None:
            self._lists = [(name, self._ids(name)) for name in self.shards]
        found: dict[str, str] = {}
        for name, ids in self._lists:
            for doc_id in wanted.intersection(ids):
                found.setdefault(doc_id, name)
        return found

    def ids(self) -> Iterable[str]:
        if not self._loaded:
            self.refresh()
        for name in list(self.shards):
            yield from self._ids(name)

    # -- writing (the caller holds the store's write lock) --------------------------------

    def _mark(self, state: bytes) -> None:
        if not self.disk:
            return
        token = b'"%s:%s"' % (state, os.urandom(8).hex().encode())  # a JSON string
        try:  # no fsync: only processes running now rely on it, and they die with a crash
            write_derived(self._gen_path, token)
        except OSError:
            token = b""
        self._gen_seen = token if state == b"clean" else None

    def will_write(self) -> None:
        """Called before this process writes a shard of the folder (once per section)."""
        if not self._writing:
            self._writing = True
            self._mark(b"dirty")

    def place(self, doc: Mapping[str, Any]) -> str:
        """The shard a new document goes to: the open one, or a new one once it is full."""
        if not self._loaded:
            self.refresh()
        size = doc_size(doc)
        if self.shards or self._pending:
            last = (max(self._pending, key=shard_number) if self._pending
                    else next(reversed(self.shards)))  # shards are kept in order
            summary = self.shards.get(last)
            count, nbytes = self._pending.get(last, (0, 0))
            if summary is not None:
                count += summary["count"]
                nbytes += summary["stamp"][2] if summary.get("stamp") else summary.get("bytes", 0)
            if count < shard_docs(self.folder) and (count == 0 or nbytes + size <= SHARD_BYTES):
                docs, added = self._pending.get(last, (0, 0))
                self._pending[last] = (docs + 1, added + size)
                return last
            name = shard_name(shard_number(last) + 1)
        else:
            name = shard_name(1)
        self._pending[name] = (1, size)
        return name

    def written(self, name: str, shard: Shard, ids: Iterable[str] | None = None) -> None:
        """Record a shard this process just wrote: its new summary, in memory now and on
        disk at :meth:`flush`. ``ids``: the documents written, when the caller knows them
        (only those are new to the id map; None: any of the shard's)."""
        self._pending.pop(name, None)
        old = self.shards.get(name)
        summary = summarize(self.folder, shard)
        stamp = file_stamp(shard.path) if self.disk else None
        summary["stamp"] = list(stamp) if stamp else None
        if not self.disk:
            summary["bytes"] = sum(doc_size(d) for d in shard.docs(TABLES[self.folder][0]))
        if self._where is not None:  # ids of a big shard are lookups into a big map
            self._where.update(dict.fromkeys(summary["ids"] if ids is None else ids, name))
        self._split(name, summary)
        self._lists = None
        self.shards[name] = summary
        if old is None:  # a new shard: keep the catalog in shard order
            self.shards = dict(sorted(self.shards.items(), key=lambda kv: shard_number(kv[0])))
        self._dirty.add(name)

    def flush(self) -> None:
        """Write the summaries of the shards written since the last flush (once per
        locked section, so a run of reviews writes each summary once)."""
        dirty, self._dirty = self._dirty, set()
        for name in sorted(dirty):
            summary = self.shards.get(name)
            if summary is not None and self._save(name, summary):
                for kind in READ_SIDES:  # in their files now: a long sync does not keep
                    self._sides[kind].pop(name, None)  # every shard's threads in memory
        if self._writing:
            self._writing = False
            self._mark(b"clean")

    def forget_pending(self) -> None:
        self._pending.clear()


def ensure_index_dirs(root: Path, folders: Iterable[str]) -> dict[str, Path]:
    return {folder: ensure_private_dir(root / "index" / folder) for folder in folders}
