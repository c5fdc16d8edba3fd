"""Caches of per-shard entries, kept in files of a bounded number of shards each.

A cache derived from the shards (thread activity, counts per source) holds one entry
per shard with the shard file's stamp. Kept in one file, it grows with the store and is
rewritten whole whenever one shard changed; here the entries of shards ``0..per-1``
go to one chunk file, ``per..2*per-1`` to the next, and so on, so a write rewrites the
chunks whose shards changed (usually the last one) and every file stays bounded.

Derived data: written atomically without fsync; a lost, damaged or older-version chunk
is rebuilt from its shards by the caller.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import orjson

from agent.files import ensure_private_dir, remove_orphan_temps, write_private
from agent.store.layout import shard_number


def chunk_name(shard: str, per: int, prefix: str = "c") -> str:
    """The chunk file (without ``.json``) that keeps the entry of ``shard``."""
    return f"{prefix}{shard_number(shard) // per:05d}"


class ChunkedCache:
    """Entries ``{key: entry}`` by chunk, read from ``folder`` (None: memory only)."""

    def __init__(self, folder: Path | None, version: int) -> None:
        self.folder = folder
        self.version = version
        self._loaded: dict[str, dict[str, Any]] = {}

    def chunk(self, name: str) -> dict[str, Any]:
        """The entries of one chunk as stored (``{}`` if none, stale or damaged)."""
        found = self._loaded.get(name)
        if found is None:
            found = {}
            if self.folder is not None:
                try:
                    raw = orjson.loads((self.folder / f"{name}.json").read_bytes())
                except (OSError, orjson.JSONDecodeError):
                    raw = None
                if (isinstance(raw, dict) and raw.get("version") == self.version
                        and isinstance(raw.get("entries"), dict)):
                    found = raw["entries"]
            self._loaded[name] = found
        return found

    def save(self, chunks: dict[str, dict[str, Any]], rebuilt: set[str]) -> None:
        """Keep ``chunks`` (all of them: chunk files not named are removed), writing those
        named in ``rebuilt`` (an entry was recomputed) or whose shards changed."""
        if self.folder is None:
            return
        changed = {name: entries for name, entries in chunks.items()
                   if name in rebuilt or set(self.chunk(name)) != set(entries)}
        try:
            existing = {e.name[:-5] for e in os.scandir(self.folder)
                        if e.name.endswith(".json")}
        except FileNotFoundError:
            existing = set()
        gone = existing - set(chunks)
        if not changed and not gone:
            return
        with contextlib.suppress(OSError):  # a read-only data folder: slower next time
            remove_orphan_temps(ensure_private_dir(self.folder))
            for name, entries in changed.items():
                write_private(self.folder / f"{name}.json",
                              orjson.dumps({"version": self.version, "entries": entries}),
                              sync=False, sync_dir=False)
                self._loaded[name] = entries
            for name in gone:
                (self.folder / f"{name}.json").unlink(missing_ok=True)
                self._loaded.pop(name, None)
