"""Messages and deliverables per source, counted in the committed shard files.

Counts are never kept as running totals beside the data (a sync killed between writing
a page and adding to the total made such a total wrong for good). Each shard file is
counted when it changes; ``store/.counts/<folder>-<NNNNN>.json`` (256 shards a file,
:mod:`agent.store.chunks`) remembers each shard's counts together with the file's
identity (inode, mtime, size), so an unchanged shard is not parsed again and a changed
one always is. Losing or damaging those files only costs a recount.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

from agent.store.chunks import ChunkedCache, chunk_name
from agent.store.layout import SHARD_RE, shard_number
from agent.store.storage import Stamp

if TYPE_CHECKING:
    from agent.store.folder import StoreFolder as Store

CACHE_DIR = ".counts"  # chunk files of PER_CHUNK shards' counts (agent.store.chunks)
CACHE_VERSION = 1
PER_CHUNK = 256  # about 100 bytes a shard: chunks of at most ~25 kB
FOLDERS = ("messages", "deliverables")


def committed_counts(store: Store) -> dict[str, dict[str, int]]:
    """``{source: {"messages": n, "deliverables": n}}`` from the shard files on disk."""
    folder_path = store.cache_path(CACHE_DIR)
    cache = ChunkedCache(folder_path, CACHE_VERSION)
    chunks: dict[str, dict[str, Any]] = {}
    rebuilt: set[str] = set()
    totals: dict[str, dict[str, int]] = {}
    for folder in FOLDERS:
        for month, stamp in _shards(store, folder):
            relative = f"{folder}/{month}.json"
            chunk = chunk_name(month, PER_CHUNK, prefix=f"{folder}-")
            entry = cache.chunk(chunk).get(relative)
            if stamp is None:  # no file to tell versions by (in memory, or just removed)
                entry = {"counts": _count(store, folder, month)}
            elif not (isinstance(entry, dict) and entry.get("stamp") == list(stamp)
                      and isinstance(entry.get("counts"), dict)):
                entry = {"stamp": list(stamp), "counts": _count(store, folder, month)}
                rebuilt.add(chunk)
            if stamp is not None:
                chunks.setdefault(chunk, {})[relative] = entry
            for source, n in entry["counts"].items():
                row = totals.setdefault(source, dict.fromkeys(FOLDERS, 0))
                row[folder] += int(n)
    cache.save(chunks, rebuilt)
    if folder_path is not None:  # the single file of earlier versions (grew with the store)
        with contextlib.suppress(OSError):
            (folder_path.parent / ".counts.json").unlink(missing_ok=True)
    return totals


def _shards(store: Store, folder: str) -> list[tuple[str, Stamp | None]]:
    """The shards of ``folder`` and their stamps, listed from the folder itself: the
    shard summaries (which :meth:`shard_names` loads) are not needed to count."""
    if not store.on_disk:  # the in-memory store: no files to list
        return [(name, store.shard_stamp(folder, name)) for name in store.shard_names(folder)]
    found: list[tuple[str, Stamp | None]] = []
    try:
        entries = list(os.scandir(store.root / folder))
    except FileNotFoundError:
        return []
    for entry in entries:
        name, dot, ext = entry.name.partition(".")
        if ext != "json" or not dot or not SHARD_RE.match(name):
            continue
        try:
            st = entry.stat()
        except FileNotFoundError:
            continue
        found.append((name, (st.st_ino, st.st_mtime_ns, st.st_size)))
    return sorted(found, key=lambda item: shard_number(item[0]))


def _count(store: Store, folder: str, month: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for doc in store.read_shard(folder, month).docs(folder):
        source = str(doc.get("source") or "")
        counts[source] = counts.get(source, 0) + 1
    return counts
