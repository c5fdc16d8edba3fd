"""Upgrade a store from one shard per month (schema 1) to bounded shards (schema 2), and
its records of the owner's work from whole files to bounded shards (schema 3,
:func:`upgrade_records`).

Run once, when a :class:`~agent.store.Store` is opened on a folder that still holds month
files (``messages/2024-05.json``), under the store's write lock. Crash-safe:

1. any bounded shard already in the folders is left from an upgrade that was killed
   before its commit, so it is removed (schema 1 means it was never used);
2. the month files are copied, one at a time, into new bounded shards beside them
   (``s000001.json`` ...), each written atomically and fsynced, then the folders fsynced;
3. the commit: ``meta.json`` is replaced atomically with schema 2;
4. the month files are deleted.

A kill before step 3 leaves the old layout, untouched (the next open starts again); a
kill after it leaves the new one (the next open finishes step 4). Cursors (in
``meta.json``) and reviews (on the deliverables, and in ``workflow.json`` or their shards)
are carried as they are: documents are copied, not rebuilt.

Versions before 2026-12 named a mail message by its Message-ID alone, so two different
messages with one Message-ID in two months were stored under one id in both month files
(and their files under one deliverable id): neither could be reviewed. The upgrade tells
them apart: a document found again under an id already copied is the same message
re-fetched (kept once) when sender, subject, text and files agree; otherwise it is another
message and gets its own ids (:func:`repaired_remote_id`), reviews and all, which a later
read of that message finds again (``PageStaging._stored_remote_id``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from agent.files import ensure_private_dir, fsync_dir, remove_orphan_temps, write_private
from agent.store.ids import deliverable_id_for, message_id_for, short_hash
from agent.store.layout import (
    BOUNDED_SCHEMA,
    MONTH_RE,
    SCHEMA_VERSION,
    SHARD_BYTES,
    SHARD_RE,
    TABLES,
    doc_size,
    shard_docs,
    shard_name,
)
from agent.store.storage import Shard, batched_dir_sync

RECORDS_MOVED = "records_moved"  # agent.store.folder.RECORDS_MOVED (no import: one arrow)

if TYPE_CHECKING:
    from agent.store.layout import Catalog


class Store(Protocol):
    """What an upgrade needs of the store folder (:class:`agent.store.folder.StoreFolder`,
    named by this protocol only, so the folder's import of this module is the one arrow)."""

    @property
    def root(self) -> Path: ...

    @property
    def meta(self) -> Shard: ...

    def shard(self, relative: str) -> Shard: ...

    def catalog(self, folder: str) -> Catalog: ...

log = logging.getLogger("retainer.store")

FOLDERS = ("messages", "deliverables")


def month_files(root: Path, folder: str) -> list[Path]:
    return sorted(p for p in (root / folder).glob("*.json") if MONTH_RE.match(p.stem))


def upgrade(store: Store) -> None:
    """Bring ``store`` to the bounded-shard layout (hold the store's write lock)."""
    root = store.root
    months = {folder: month_files(root, folder) for folder in FOLDERS}
    if not any(months.values()):
        return  # another process upgraded it while we waited for the lock
    meta = store.meta.get("meta", "schema", key="name")
    if meta is not None and meta.get("version", 0) >= BOUNDED_SCHEMA:
        _remove(months)  # committed; a kill came before the old files were gone
        return
    started = time.monotonic()
    for folder in FOLDERS:  # never committed, so never used: start again
        for path in (root / folder).glob("*.json"):
            if SHARD_RE.match(path.stem):
                path.unlink()
        for path in (root / "index" / folder).glob("*.json"):
            path.unlink()
        remove_orphan_temps(root / folder)
    count = 0
    for folder in FOLDERS:
        store.catalog(folder).will_write()
    repairs = _collisions(months["messages"])
    with batched_dir_sync():  # every shard written and fsynced; the folders at the end
        renamed: dict[tuple[str, str], str] = {}  # (old deliverable id, when) -> new id
        count += _copy(store, "deliverables", months["deliverables"], repairs, renamed)
        count += _copy(store, "messages", months["messages"], repairs, renamed)
    for folder in FOLDERS:
        store.catalog(folder).flush()
    store.meta.upsert_many("meta", [{"name": "schema", "version": BOUNDED_SCHEMA}], "name")
    _remove(months)
    log.info("store upgraded to bounded shards: %d documents in %.1f s",
             count, time.monotonic() - started)


def _remove(months: dict[str, list[Path]]) -> None:
    for folder_files in months.values():
        for path in folder_files:
            path.unlink(missing_ok=True)
        if folder_files:
            fsync_dir(folder_files[0].parent)


def repaired_remote_id(remote_id: str, sent_at: str, sender: str) -> str:
    """The id of a message that shared its old id with another message: the old id and
    what tells the two apart (its date and sender), as a later read of it finds again."""
    return f"{remote_id}~r{short_hash(sent_at, sender.lower())[:12]}"


def _signature(doc: dict[str, Any]) -> tuple[Any, ...]:
    """What a message re-fetched under another month keeps (its date may have been the
    arrival time, which differs per fetch)."""
    files = sorted((a.get("filename") or "", a.get("sha256") or "", a.get("size") or 0)
                   for a in doc.get("attachments") or ())
    return ((doc.get("sender") or {}).get("address"), doc.get("subject"), doc.get("text"),
            files)


def _collisions(paths: list[Path]) -> dict[tuple[str, str], tuple[str, str]]:
    """The messages stored under an id another message had in an earlier month:
    ``(old id, sent_at) -> (new id, new remote id)``."""
    first: dict[str, tuple[Any, ...]] = {}
    taken: set[str] = set()
    repairs: dict[tuple[str, str], tuple[str, str]] = {}
    for path in paths:
        old = Shard(path)
        for doc in old.docs("messages"):
            signature = _signature(doc)
            if doc["id"] not in first:
                first[doc["id"]] = signature
                taken.add(doc["id"])
                continue
            if signature == first[doc["id"]] or (doc["id"], doc["sent_at"]) in repairs:
                continue  # the same message re-fetched: kept once
            base = repaired_remote_id(doc["remote_id"], doc.get("sent_at") or "",
                                      (doc.get("sender") or {}).get("address") or "")
            remote, number = base, 1
            while message_id_for(doc["source"], remote) in taken:  # same date and sender
                number += 1
                remote = f"{base}-{number}"
            new_id = message_id_for(doc["source"], remote)
            taken.add(new_id)
            repairs[(doc["id"], doc["sent_at"])] = (new_id, remote)
        old.drop_cache()
    return repairs


def _repaired(folder: str, doc: dict[str, Any],
              repairs: dict[tuple[str, str], tuple[str, str]],
              renamed: dict[tuple[str, str], str]) -> dict[str, Any] | None:
    """``doc`` under its own ids if it belongs to a message that shared its id with
    another one; None if it is not such a document."""
    if folder == "deliverables":
        found = repairs.get((doc.get("message_id") or "", doc.get("received_at") or ""))
        if found is None:
            return None
        message_id, remote = found
        part = str(doc.get("remote_id") or "").rpartition("#")[2]
        new_remote = f"{remote}#{part}"
        new = dict(doc, id=deliverable_id_for(doc["source"], new_remote),
                   remote_id=new_remote, message_id=message_id)
        renamed[(doc["id"], doc.get("received_at") or "")] = new["id"]
        return new
    found = repairs.get((doc["id"], doc.get("sent_at") or ""))
    if found is None:
        return None
    message_id, remote = found
    attachments = []
    for entry in doc.get("attachments") or ():
        did = entry.get("deliverable_id")
        if did:
            entry = dict(entry, deliverable_id=renamed.get((did, doc.get("sent_at") or ""), did))
        attachments.append(entry)
    return dict(doc, id=message_id, remote_id=remote, attachments=attachments)


def _copy(store: Store, folder: str, paths: list[Path],
          repairs: dict[tuple[str, str], tuple[str, str]],
          renamed: dict[tuple[str, str], str]) -> int:
    """Copy the documents of the month files of one folder into bounded shards, in
    order; a document found twice (re-fetched under another month) is kept once, one
    of another message that had the same id gets its own (:func:`_collisions`)."""
    table, _when = TABLES[folder]
    catalog = store.catalog(folder)
    seen: set[str] = set()
    batch: list[dict[str, Any]] = []
    bases: dict[str, dict[str, Any]] = {}  # thread id -> its entry in the month file
    size = 0
    number = 0

    def flush() -> None:
        nonlocal number, size
        number += 1
        name = shard_name(number)
        shard = Shard(store.root / folder / f"{name}.json")
        batches = [(table, batch, "id")]
        if folder == "messages":
            batches.append(("threads", _thread_entries(batch, bases), "id"))
        shard.upsert_tables(batches)
        catalog.written(name, shard)
        shard.drop_cache()
        batch.clear()
        bases.clear()
        size = 0

    for path in paths:
        old = Shard(path)
        month_threads = ({t["id"]: t for t in old.docs("threads")}
                         if folder == "messages" else {})
        for doc in old.docs(table):
            repaired = _repaired(folder, doc, repairs, renamed) if repairs else None
            doc = repaired or doc
            if doc["id"] in seen:
                continue
            seen.add(doc["id"])
            nbytes = doc_size(doc)
            if batch and (len(batch) >= shard_docs(folder) or size + nbytes > SHARD_BYTES):
                flush()
            batch.append(doc)
            size += nbytes
            tid = doc.get("thread_id")
            if tid and tid in month_threads and tid not in bases:
                bases[tid] = month_threads[tid]
        old.drop_cache()
    if batch:
        flush()
    return len(seen)


def _thread_entries(docs: list[dict[str, Any]], bases: dict[str, dict[str, Any]]
                    ) -> list[dict[str, Any]]:
    """One thread entry per thread with messages in ``docs``, spanning those messages."""
    out: dict[str, dict[str, Any]] = {}
    for doc in docs:
        tid, sent = doc.get("thread_id"), doc.get("sent_at") or ""
        if not tid:
            continue
        entry = out.get(tid)
        if entry is None:
            base = bases.get(tid) or {
                "id": tid, "source": doc.get("source"), "platform": doc.get("platform"),
                "remote_id": doc.get("thread_remote_id"), "subject": doc.get("subject"),
                "identity": doc.get("identity"),
            }
            entry = out[tid] = dict(base, first_at=sent, last_at=sent)
        entry["first_at"] = min(entry["first_at"], sent)
        entry["last_at"] = max(entry["last_at"], sent)
        if not entry.get("identity") and doc.get("identity"):
            entry["identity"] = doc["identity"]
    return list(out.values())


# -- schema 3: the owner's records (reviews, outbox, reminders) out of whole files -----------

#: the files of schema 2 that held every record of the owner's work: ``{file: {table:
#: folder of bounded shards}}`` (agent.store.records)
RECORD_FILES = {"workflow.json": {"reviews": "reviews", "outbox": "outbox"},
                "notify.json": {"events": "notified"},
                "instructions.json": {"sent": "instructions"}}
#: files that stay, holding their other tables (the instruction templates, bounded by
#: the owner's templates, not by the work)
STAYING = ("instructions.json",)


def _pending(path: Path, tables: dict[str, str]) -> dict[str, Any] | None:
    """The tables of ``path`` if it still holds one to move, else None."""
    if not path.exists():
        return None
    old = Shard(path)
    data = old.storage.read() or {}
    old.drop_cache()
    return data if any(table in data for table in tables) else None


def upgrade_records(store: Store) -> None:
    """Move the records of :data:`RECORD_FILES` into bounded shards (hold the write lock).

    Per file, crash-safe like :func:`upgrade`: while the old file is there nothing was
    committed, so shards found in its folders are left from a killed upgrade and removed;
    its tables are copied into new shards (each written atomically and fsynced, then the
    folders fsynced); the commit is the removal of the old file (tables Retainer does not
    know are first written to ``<file>.kept.json``, atomically). A kill before the
    commit leaves the old file, whole, and the next open starts that file again; a kill
    after it leaves the new shards. Documents are copied as they are, in file order.
    ``meta.json`` says schema 3 before the first copy, so an older Retainer (which would
    write a new ``workflow.json``) refuses to write to the store from then on.
    """
    root = store.root
    pending = {name: data for name, tables in RECORD_FILES.items()
               if (data := _pending(root / name, tables)) is not None}
    meta = store.meta.get("meta", "schema", key="name")
    if meta is None or meta.get("version", 0) < SCHEMA_VERSION:
        # first: a Retainer of schema 2 refuses to write from now on, so no review can be
        # added to workflow.json once its copy has begun
        store.meta.upsert_many("meta", [{"name": "schema", "version": SCHEMA_VERSION}], "name")
    for name, data in pending.items():
        tables = RECORD_FILES[name]
        path = root / name
        started = time.monotonic()
        for folder in tables.values():  # never committed, so never used: start again
            _clear_folder(root, folder)
        count = 0
        with batched_dir_sync():
            for table, folder in tables.items():
                docs = list((data.get(table) or {}).values())
                count += _copy_records(store, folder, table, docs)
        for folder in tables.values():
            store.catalog(folder).flush()
        rest = {table: docs for table, docs in data.items() if table not in tables}
        if rest and name in STAYING:
            write_private(path, orjson.dumps(rest))  # the commit: atomic, fsynced
        else:
            if rest:  # tables this Retainer does not know: kept aside, never dropped
                write_private(root / f"{path.stem}.kept.json", orjson.dumps(rest))
            path.unlink()  # the commit
            fsync_dir(root)
        store.shard(name).drop_cache()
        log.info("store upgraded: %d records of %s into bounded shards in %.1f s",
                 count, name, time.monotonic() - started)
    # last: until this is written, every open looks again (a kill between two files)
    store.meta.upsert_many("meta", [{"name": RECORDS_MOVED}], "name")


def _clear_folder(root: Path, folder: str) -> None:
    for base in (root / folder, root / "index" / folder):
        if base.is_dir():
            for path in base.iterdir():
                if path.is_file():
                    path.unlink()
    (root / "index" / f"{folder}.generation").unlink(missing_ok=True)


def _copy_records(store: Store, folder: str, table: str, docs: list[dict[str, Any]]) -> int:
    """Write ``docs`` into new shards of ``folder``, in order, each within the bounds."""
    ensure_private_dir(store.root / folder)
    catalog = store.catalog(folder)
    catalog.will_write()
    batch: list[dict[str, Any]] = []
    size = number = 0
    seen: set[str] = set()

    def flush() -> None:
        nonlocal number, size
        number += 1
        name = shard_name(number)
        shard = Shard(store.root / folder / f"{name}.json")
        shard.upsert_tables([(table, batch, "id")])
        catalog.written(name, shard)
        shard.drop_cache()
        batch.clear()
        size = 0

    for doc in docs:
        if doc.get("id") in seen:
            continue
        seen.add(doc["id"])
        nbytes = doc_size(doc)
        if batch and (len(batch) >= shard_docs(folder) or size + nbytes > SHARD_BYTES):
            flush()
        batch.append(doc)
        size += nbytes
    if batch:
        flush()
    return len(seen)
