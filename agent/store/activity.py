"""Per thread: when the owner wrote, and who wrote last (derived from the message shards).

Each message shard is summarized once per version of its file, ``(inode, mtime, size)``,
and the summaries are kept in ``store/cache/threads.json``: only shards changed since the
last call are read again. The cache is derived data, replaced atomically; losing it
costs one full read. A store without files (the in-memory store) reads every shard.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from agent.files import ensure_private_dir, remove_orphan_temps, write_private
from agent.models import ThreadActivity
from agent.store.storage import Shard

if TYPE_CHECKING:
    from agent.store.folder import StoreFolder

INDEX_VERSION = 1


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


def thread_activity(store: StoreFolder) -> dict[str, ThreadActivity]:
    """Per thread: the owner's message times (sorted) and the last message's direction."""
    cache_path = store.cache_path("cache/threads.json")
    cached: dict[str, Any] = {}
    if cache_path is not None:
        try:
            cached = orjson.loads(cache_path.read_bytes())
            if cached.get("version") != INDEX_VERSION:
                cached = {}
        except (OSError, orjson.JSONDecodeError):
            cached = {}
    months: dict[str, Any] = cached.get("months") or {}
    fresh: dict[str, Any] = {}
    changed = False
    for month in store.shard_names("messages"):
        stamp = store.shard_stamp("messages", month)
        entry = months.get(month)
        if entry is None or stamp is None or tuple(entry["stamp"]) != stamp:
            entry = {"stamp": list(stamp or (0, 0, 0)),
                     "threads": shard_activity(store.read_shard("messages", month))}
            changed = True
        fresh[month] = entry
    if cache_path is not None and (changed or set(fresh) != set(months)):
        try:
            remove_orphan_temps(ensure_private_dir(cache_path.parent))
            write_private(cache_path, orjson.dumps({"version": INDEX_VERSION, "months": fresh}),
                          sync=False)
        except OSError:
            pass  # a read-only data folder still gets its answer, just slower next time
    out: dict[str, ThreadActivity] = {}
    shared: set[str] = set()  # threads whose entry is already a copy of their own
    for entry in fresh.values():
        for tid, t in entry["threads"].items():
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
