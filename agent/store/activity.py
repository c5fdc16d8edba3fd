"""Per thread: when the owner wrote, and who wrote last (derived from the message shards).

Each message shard is summarized once per version of its file, ``(inode, mtime, size)``,
and the summaries are kept in ``store/cache/threads/c<NNNNN>.json``, eight shards a file
(:mod:`agent.store.chunks`): only shards changed since the last call are read again, and
only their chunk is rewritten. The cache is derived data, replaced atomically; losing it
costs one full read. A store without files (the in-memory store) reads every shard.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from agent.models import ThreadActivity
from agent.store.chunks import ChunkedCache, chunk_name
from agent.store.storage import Shard

if TYPE_CHECKING:
    from agent.store.folder import StoreFolder

INDEX_VERSION = 1
CACHE_DIR = "cache/threads"  # chunk files of PER_CHUNK shards' entries (agent.store.chunks)
PER_CHUNK = 8  # a message shard's threads take 40-60 kB here: chunks of at most ~0.5 MB


def shard_activity(shard: Shard) -> dict[str, ThreadActivity]:
    """The activity of each thread with messages in one shard."""
    return messages_activity(shard.docs("messages"))


def messages_activity(docs: Iterable[Mapping[str, Any]]) -> dict[str, ThreadActivity]:
    """The activity of each thread with messages among ``docs`` (one shard's messages)."""
    out: dict[str, ThreadActivity] = {}
    for doc in docs:
        entry = out.get(doc["thread_id"])
        if entry is None:
            entry = out[doc["thread_id"]] = {"out": [], "last_at": "", "last_dir": "",
                                             "identity": None, "last_id": None}
        sent = doc.get("sent_at") or ""
        if doc.get("direction") == "out":
            entry["out"].append(sent)
        if sent >= entry["last_at"]:
            entry["last_at"] = sent
            entry["last_dir"] = doc.get("direction") or ""
            entry["last_id"] = doc["id"]
        if doc.get("identity") and not entry["identity"]:
            entry["identity"] = doc["identity"]
    return out


def shard_threads(store: StoreFolder, names: Iterable[str] | None = None
                  ) -> dict[str, dict[str, ThreadActivity]]:
    """Per message shard (of ``names``; ``None``: every shard, oldest first): the activity
    of each thread with messages in it, from the cache when the shard is unchanged.

    Only the chunks of ``names`` are read; a full listing (``None``) also writes back the
    chunks whose shards changed."""
    folder = store.cache_path(CACHE_DIR)
    cache = ChunkedCache(folder, INDEX_VERSION)
    chunks: dict[str, dict[str, Any]] = {}
    fresh: dict[str, Any] = {}
    rebuilt: set[str] = set()
    for month in store.shard_names("messages") if names is None else names:
        stamp = store.shard_stamp("messages", month)
        name = chunk_name(month, PER_CHUNK)
        entry = cache.chunk(name).get(month)
        if entry is None or stamp is None or tuple(entry["stamp"]) != stamp:
            entry = {"stamp": list(stamp or (0, 0, 0)),
                     "threads": shard_activity(store.read_shard("messages", month))}
            rebuilt.add(name)
        chunks.setdefault(name, {})[month] = fresh[month] = entry
    if names is None:
        cache.save(chunks, rebuilt)
        if folder is not None:  # the single file of earlier versions, which grew with it
            with contextlib.suppress(OSError):
                (folder.parent / "threads.json").unlink(missing_ok=True)
    return {month: entry["threads"] for month, entry in fresh.items()}


def thread_activity(store: StoreFolder) -> dict[str, ThreadActivity]:
    """Per thread: the owner's message times (sorted) and the last message's direction."""
    fresh = shard_threads(store)
    out: dict[str, ThreadActivity] = {}
    shared: set[str] = set()  # threads whose entry is already a copy of their own
    for threads in fresh.values():
        for tid, t in threads.items():
            have = out.get(tid)
            if have is None:  # the cache was written above: its entries may be reused
                out[tid] = t
                continue
            if tid not in shared:
                have = out[tid] = {**have, "out": list(have["out"])}
                shared.add(tid)
            have["out"].extend(t["out"])
            if t["last_at"] >= have["last_at"]:
                have["last_at"], have["last_dir"] = t["last_at"], t["last_dir"]
                have["last_id"] = t["last_id"]
            have["identity"] = have["identity"] or t["identity"]
    for t in out.values():
        t["out"].sort()
    return out
