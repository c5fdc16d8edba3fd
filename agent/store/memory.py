"""An in-memory :class:`~agent.store.Store` for tests: the same code, TinyDB in memory.

Tables live in :class:`tinydb.storages.MemoryStorage`; only deliverable files (and the
write lock) touch ``data_dir``, so content-addressed blobs behave exactly as in the real
store. Plugin authors get it as the ``memory_store`` fixture of :mod:`agent.testing`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import MemoryStorage

from agent.store.core import Store
from agent.store.storage import Shard


class MemoryShard(Shard):
    """A shard whose TinyDB lives in memory for the life of the object."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._memory_db = TinyDB(storage=MemoryStorage)

    @property
    def db(self) -> TinyDB:
        return self._memory_db

    @property
    def storage(self) -> Any:  # a MemoryStorage, not the atomic file storage
        return self._memory_db.storage

    def drop_cache(self) -> None:
        """Nothing to reload: memory is the only copy."""


class MemoryStore(Store):
    """A :class:`Store` whose tables are in memory (files still go to ``data_dir/files``)."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self._months: dict[str, MemoryShard] = {}

    def shard(self, relative: str) -> Shard:
        shard = self._shards.get(relative)
        if shard is None:
            shard = self._shards[relative] = MemoryShard(self.root / relative)
        return shard

    def month_shard(self, month: str) -> Shard:
        shard = self._months.get(month)
        if shard is None:
            shard = self._months[month] = MemoryShard(self.root / "messages" / f"{month}.json")
        return shard

    def month_names(self) -> list[str]:
        return sorted(month for month, shard in self._months.items() if shard.docs("messages"))

    def iter_messages(self) -> Iterator[dict[str, Any]]:
        roster = self.roster()
        for month in reversed(self.month_names()):
            for doc in self._months[month].docs("messages"):
                yield dict(doc, contractor_id=roster.contractor_of(doc.get("identity")))

    def thread_sources(self) -> list[str]:
        return sorted(name.removeprefix("threads/").removesuffix(".json")
                      for name in self._shards if name.startswith("threads/"))


__all__ = ["MemoryShard", "MemoryStore"]
