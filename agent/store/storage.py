"""TinyDB storage that survives ``kill -9``, and the cached shard files built on it.

TinyDB's default ``JSONStorage`` rewrites its file in place and leaves an unreadable
file behind in about 3% of kills during writes. :class:`AtomicStorage` writes a temp
file, fsyncs it, renames it over the old one and fsyncs the folder, so a kill leaves
either the old state or the new one. Reads are served from memory and reloaded only when
another process has replaced the file.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from threading import get_ident
from typing import TYPE_CHECKING, Any

import orjson

from agent.errors import NoSpace, StoreError
from agent.files import fsync_dir, write_private

if TYPE_CHECKING:  # TinyDB itself is imported to write: reading a shard needs none of it
    from tinydb import TinyDB
    from tinydb.table import Table

Stamp = tuple[int, int, int]


def iso(value: datetime | None) -> str | None:
    """An aware datetime as the store writes it: UTC, ISO 8601, ``Z``."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def json_safe(value: Any) -> Any:
    """A copy of ``value`` that JSON can hold: datetimes as :func:`iso`, text made valid
    UTF-8 (lone surrogates from undecodable mail replaced), odd types as text."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, datetime):
        return iso(value)
    return str(value)


def file_stamp(path: Path) -> Stamp | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


_deferred: set[Path] | None = None
#: which batched section runs now (0: none); a shard's file checked in this section is
#: not checked again in it (see :attr:`Shard.storage`)
_section = 0
_sections = 0
_section_thread = 0  # the thread that runs it: other threads still check every access


@contextmanager
def batched_dir_sync() -> Iterator[None]:
    """Within this block, folders are fsynced once at the end instead of after every file.

    Each file is still written to a temp file, fsynced and renamed, so a crash leaves the
    old or the new version; what waits for the end is only the durability of the renames
    against power loss, and the caller commits nothing that depends on them before then.

    The caller holds the store's write lock for the whole block, so no other process
    replaces a store file meanwhile: a shard checks its file against the copy in memory
    once per block, not at every access (a page of 200 messages read its open shard's
    stamp 330 times).
    """
    global _deferred, _section, _sections, _section_thread
    outer = _deferred
    if outer is not None:
        yield
        return
    _deferred = set()
    _sections += 1
    _section, _section_thread = _sections, get_ident()
    try:
        yield
    finally:
        folders, _deferred = _deferred, None
        _section = 0
        for folder in folders:
            fsync_dir(folder)


#: The field each known table's documents are keyed by (``Shard.key_map``).
TABLE_KEYS = {"sources": "source", "identities": "key", "meta": "name",
              **{t: "id" for t in ("contractors", "messages", "threads", "deliverables",
                                   "contracts", "reviews", "outbox", "templates", "sent",
                                   "events")}}


def shape_problem(data: Any) -> str:
    """Why ``data`` is not what a store file holds, or ``""``: a non-empty object of
    tables, each an object of numbered documents, each document an object with its key.

    A file Retainer wrote always holds at least one table, so ``null``, ``{}`` or ``[]``
    mean the file was replaced, and reading it as empty would lose what it held.
    """
    if not isinstance(data, dict):
        return f"the file holds {_kind(data)}, not an object of tables"
    if not data:
        return "the file holds an empty object; Retainer never writes one"
    for name, table in data.items():
        if not isinstance(table, dict):
            return f'table "{name}" is {_kind(table)}, not an object'
        key = TABLE_KEYS.get(name)
        for doc_id, doc in table.items():
            if not doc_id.isdigit():
                return f'table "{name}" has a document numbered {doc_id[:40]!r}'
            if not isinstance(doc, dict):
                return f'document {doc_id} of table "{name}" is {_kind(doc)}'
            if key is not None and not isinstance(doc.get(key), str):
                return f'document {doc_id} of table "{name}" has no text "{key}"'
    return ""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "text", bool: "true/false"}.get(
        type(value), "a number")


class AtomicStorage:
    """Whole-file JSON storage with atomic replace and an in-memory copy: a TinyDB
    storage (``read``, ``write``, ``close``; duck-typed, so that defining it imports no
    TinyDB)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] | None = None
        self.stamp: Stamp | None = None
        self.checked = 0  # the batched section that last saw the file match (0: none)

    def read(self) -> dict[str, Any] | None:
        if self.data is None:
            self.stamp = file_stamp(self.path)
            if self.stamp is None:
                return None
            raw = self.path.read_bytes()
            if not raw:
                raise StoreError(f"{self.path} is empty; it was not written by Retainer. "
                                 "Move it aside and run `retainer sync` to fetch again.")
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise StoreError(
                    f"{self.path} is not valid JSON ({exc}); Retainer never leaves files "
                    "half-written, so something else changed it. Move it aside "
                    "(mv it to a .corrupt name) and run `retainer sync` to fetch again."
                ) from None
            problem = shape_problem(data)
            if problem:
                raise StoreError(
                    f"{self.path} is valid JSON but not a Retainer store file ({problem}); "
                    "something else changed it. Move it aside (mv it to a .corrupt name) "
                    "and run `retainer sync` to fetch again; nothing was read or written.")
            self.data = data
        return self.data

    def write(self, data: dict[str, Any]) -> None:
        try:
            blob = orjson.dumps(data)
        except (orjson.JSONEncodeError, TypeError):
            # text with lone surrogates (undecodable mail) or an odd type from a plugin
            blob = orjson.dumps(json_safe(data))
        try:
            write_private(self.path, blob, sync_dir=_deferred is None)
            if _deferred is not None:
                _deferred.add(self.path.parent)
        except OSError as exc:
            self.data = None  # the file still holds the previous state; reload it
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                folder = next((p.parent for p in self.path.parents if p.name == "store"),
                              self.path.parent)  # the data folder
                raise NoSpace(f"no space left in {folder} (writing {self.path.name}); "
                                 "free some disk space: the next sync goes on from the "
                                 "last committed page") from None
            raise StoreError(f"could not write {self.path}: {exc.strerror}; check that its "
                             "folder can be written (permissions, a read-only or failing "
                             "disk), then sync again") from None
        self.data = data
        self.stamp = file_stamp(self.path)

    def close(self) -> None:
        self.data = None


class Shard:
    """One TinyDB file of the store, kept open and reloaded when replaced on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._storage: AtomicStorage | None = None
        self._db: TinyDB | None = None
        self._keys: dict[str, dict[str, int]] = {}

    @property
    def storage(self) -> AtomicStorage:
        """The file's storage; a new one (and no cached keys) once another process
        replaced the file."""
        current = self._storage
        if current is not None and current.data is not None and (
                not _section or current.checked != _section
                or _section_thread != get_ident()):
            if file_stamp(self.path) != current.stamp:
                current = None
            else:
                current.checked = _section
        if current is None:
            current = self._storage = AtomicStorage(self.path)
            self._db = None
            self._keys = {}
        return current

    @property
    def db(self) -> TinyDB:
        """TinyDB on :attr:`storage` (for writes; reads take the storage's data)."""
        storage = self.storage
        if self._db is None:
            from tinydb import TinyDB

            self._db = TinyDB(storage=lambda: storage)
        return self._db

    def table(self, name: str) -> Table:
        return self.db.table(name)

    def _raw(self, table: str) -> dict[str, Any]:
        """One table as stored, ``{document number (text): document}`` (do not mutate).

        Read from the storage's data, not through TinyDB's private table API, so the
        store depends only on TinyDB's public interface (``Storage``, ``TinyDB.table``).
        """
        data = self.storage.read()
        raw: dict[str, Any] = (data or {}).get(table) or {}
        return raw

    def key_map(self, table: str, key: str = "id") -> dict[str, int]:
        """``{doc[key]: doc_id}`` for a table, cached until the file changes."""
        _ = self.storage  # first: reloads, forgetting the cached keys, if the file was replaced
        if table not in self._keys:
            raw = self._raw(table)
            self._keys[table] = {doc[key]: int(doc_id) for doc_id, doc in raw.items()}
        return self._keys[table]

    def docs(self, table: str) -> list[dict[str, Any]]:
        """All documents of a table as plain dicts (no copies: do not mutate)."""
        return list(self._raw(table).values())

    def get(self, table: str, record_id: str, key: str = "id") -> dict[str, Any] | None:
        doc_id = self.key_map(table, key).get(record_id)
        if doc_id is None:
            return None
        doc: dict[str, Any] = self._raw(table)[str(doc_id)]
        return doc

    def upsert_many(
        self, table: str, docs: list[dict[str, Any]], key: str = "id"
    ) -> tuple[int, int]:
        """Insert new documents and replace changed ones, in one write.

        Returns ``(inserted, updated)``; unchanged documents cost nothing.
        """
        return self.upsert_tables([(table, docs, key)])[0]

    def upsert_tables(
        self, batches: list[tuple[str, list[dict[str, Any]], str]]
    ) -> list[tuple[int, int]]:
        """:meth:`upsert_many` for several tables of this file, ``(table, docs, key)``
        each, in one write. Returns ``(inserted, updated)`` per table.

        Documents are matched by ``doc[key]``; a page naming one new key twice stores
        one document (the later fields win). Nothing is written when nothing changed.
        """
        plans: list[tuple[str, str, list[dict[str, Any]], dict[int, dict[str, Any]]]] = []
        for table, docs, key in batches:
            keys = self.key_map(table, key)
            existing = self._raw(table)
            fresh: dict[str, dict[str, Any]] = {}
            changed: dict[int, dict[str, Any]] = {}
            for doc in docs:
                doc_id = keys.get(doc[key])
                if doc_id is None:
                    if doc[key] in fresh:
                        fresh[doc[key]].update(doc)
                    else:
                        fresh[doc[key]] = doc
                elif existing[str(doc_id)] != doc:
                    changed[doc_id] = doc
            plans.append((table, key, list(fresh.values()), changed))
        counts = [(len(plan[2]), len(plan[3])) for plan in plans]
        if not any(n or u for n, u in counts):
            return counts
        db = self.db
        # a new top level and new tables: the copy in memory changes only once written
        data = dict(db.storage.read() or {})
        assigned: list[list[int]] = []
        for table, _key, new, updates in plans:
            raw = data[table] = dict(data.get(table) or {})
            first = max(map(int, raw), default=0) + 1  # numbers are never reused while held
            new_ids = list(range(first, first + len(new)))
            for doc_id, doc in updates.items():
                raw[str(doc_id)] = doc
            for doc_id, doc in zip(new_ids, new, strict=True):
                raw[str(doc_id)] = doc
            assigned.append(new_ids)
        db.storage.write(data)  # one write for every table
        for (table, key, new, _updates), new_ids in zip(plans, assigned, strict=True):
            db.table(table).clear_cache()
            keys = self.key_map(table, key)
            for doc, doc_id in zip(new, new_ids, strict=True):
                keys[doc[key]] = doc_id
        return counts

    def remove(self, table: str, record_ids: list[str], key: str = "id") -> None:
        keys = self.key_map(table, key)
        doc_ids = [keys.pop(r) for r in record_ids if r in keys]
        if doc_ids:
            self.db.table(table).remove(doc_ids=doc_ids)

    def drop_cache(self) -> None:
        self._storage = None
        self._db = None
        self._keys = {}
