"""Records of the owner's work in bounded shards: reviews, the outbox, reminders sent.

Each kind has a folder of numbered shard files like the messages' (``store/reviews/
s000001.json`` ...; table and time field in :data:`agent.store.layout.TABLES`), each
holding at most :data:`~agent.store.layout.SHARD_DOCS` records or
:data:`~agent.store.layout.SHARD_BYTES` bytes, with a summary per shard in
``store/index/<folder>/`` (its ids, its time range). Recording writes only the shard a
record goes to: the open one for a new record, the one holding it for a changed one
(found through the summaries), each write atomic and fsynced like every shard. Nothing
is rewritten whole, so the cost of a review does not grow with the history.

Reading every record (statistics, the report, the dashboard) reads the folder's shards
in order; a long-lived process keeps each shard parsed until its file changes.

Until schema 3 these lived in ``workflow.json`` (reviews, outbox) and ``notify.json``
(reminders); :func:`agent.store.migrate.upgrade_records` moves them when a store is
opened. Writers hold :meth:`Store.writing`; readers need no lock.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agent.files import ensure_private_dir
from agent.store.folder import RECORD_FOLDERS
from agent.store.layout import SHARD_RE, TABLES, shard_number
from agent.store.storage import Stamp, file_stamp

if TYPE_CHECKING:
    from agent.store.core import Store

__all__ = ["RECORD_FOLDERS", "read_all", "save", "shard_names", "stamps"]


def save(store: Store, folder: str, docs: Sequence[Mapping[str, Any]]) -> None:
    """Insert or replace records (by ``id``) in ``folder``: one write per shard touched
    (hold :meth:`Store.writing`)."""
    if not docs:
        return
    table = TABLES[folder][0]
    if store.cache_path(folder) is not None:  # on disk: the folders, once
        ensure_private_dir(store.root / folder)
        ensure_private_dir(store.root / "index" / folder)
    cat = store.catalog(folder)
    for name, group in store._placed(folder, [dict(d) for d in docs]).items():
        shard = store.shard(f"{folder}/{name}.json")
        if shard.upsert_many(table, group) != (0, 0):
            cat.written(name, shard)


def shard_names(store: Store, folder: str) -> list[str]:
    """The shards of ``folder``, oldest first (a directory scan; no summary read)."""
    if store.cache_path(folder) is None:  # the in-memory store: what its catalog wrote
        return store.catalog(folder).names()
    try:
        with os.scandir(store.root / folder) as entries:
            names = [e.name[:-5] for e in entries
                     if e.name.endswith(".json") and SHARD_RE.match(e.name[:-5])]
    except FileNotFoundError:
        return []
    return sorted(names, key=shard_number)


def read_all(store: Store, folder: str) -> list[dict[str, Any]]:
    """Every record of ``folder``, in shard order (do not mutate)."""
    table = TABLES[folder][0]
    out: list[dict[str, Any]] = []
    for name in shard_names(store, folder):
        out.extend(store.shard(f"{folder}/{name}.json").docs(table))
    return out


def stamps(store: Store, folders: Sequence[str]) -> tuple[tuple[str, Stamp | None], ...]:
    """What changes whenever a record of ``folders`` is written: each shard's stamp."""
    return tuple((f"{folder}/{name}", file_stamp(store.root / folder / f"{name}.json"))
                 for folder in folders for name in shard_names(store, folder))
