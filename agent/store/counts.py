"""Messages and deliverables per source, counted in the committed shard files.

Counts are never kept as running totals beside the data (a sync killed between writing
a page and adding to the total made such a total wrong for good). Each shard file is
counted when it changes; ``store/.counts.json`` remembers each shard's counts together
with the file's identity (inode, mtime, size), so an unchanged shard is not parsed again
and a changed one always is. Losing or damaging that file only costs a recount.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from agent.files import write_private

if TYPE_CHECKING:
    from agent.store.folder import StoreFolder as Store

CACHE_NAME = ".counts.json"
FOLDERS = ("messages", "deliverables")


def committed_counts(store: Store) -> dict[str, dict[str, int]]:
    """``{source: {"messages": n, "deliverables": n}}`` from the shard files on disk."""
    cache_path = store.cache_path(CACHE_NAME)
    cache = _load(cache_path) if cache_path is not None else {}
    fresh: dict[str, Any] = {}
    totals: dict[str, dict[str, int]] = {}
    for folder in FOLDERS:
        for month in store.shard_names(folder):
            relative = f"{folder}/{month}.json"
            stamp = store.shard_stamp(folder, month)
            entry = cache.get(relative)
            if stamp is None:  # no file to tell versions by (in memory, or just removed)
                entry = {"counts": _count(store, folder, month)}
            elif not (isinstance(entry, dict) and entry.get("stamp") == list(stamp)
                      and isinstance(entry.get("counts"), dict)):
                entry = {"stamp": list(stamp), "counts": _count(store, folder, month)}
            if stamp is not None:
                fresh[relative] = entry
            for source, n in entry["counts"].items():
                row = totals.setdefault(source, dict.fromkeys(FOLDERS, 0))
                row[folder] += int(n)
    if cache_path is not None and fresh != cache:
        with contextlib.suppress(OSError):  # only a cache: a read-only disk just recounts
            write_private(cache_path, orjson.dumps(fresh))
    return totals


def _count(store: Store, folder: str, month: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for doc in store.read_shard(folder, month).docs(folder):
        source = str(doc.get("source") or "")
        counts[source] = counts.get(source, 0) + 1
    return counts


def _load(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
