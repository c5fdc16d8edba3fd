"""An in-memory :class:`~agent.store.Store` for tests: the same code, TinyDB in memory.

Tables live in :class:`tinydb.storages.MemoryStorage`; only deliverable files (and the
write lock) touch ``data_dir``, so content-addressed blobs behave exactly as in the real
store. Plugin authors get it as the ``memory_store`` fixture of :mod:`agent.testing`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import MemoryStorage

from agent.errors import StoreError
from agent.store.core import Store
from agent.store.storage import Shard, Stamp, json_safe


class CountingStorage(MemoryStorage):  # type: ignore[misc]
    """Memory storage that counts its writes (what a file's mtime tells on disk)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.writes = 0

    def write(self, data: dict[str, Any]) -> None:
        super().write(data)
        self.writes += 1


class MemoryShard(Shard):
    """A shard whose TinyDB lives in memory for the life of the object."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._memory_db = TinyDB(storage=CountingStorage)

    @property
    def db(self) -> TinyDB:
        return self._memory_db

    @property
    def storage(self) -> Any:  # a MemoryStorage, not the atomic file storage
        return self._memory_db.storage

    def drop_cache(self) -> None:
        """Nothing to reload: memory is the only copy."""


def _writes(shard: Shard) -> int:
    storage = shard.db.storage
    return storage.writes if isinstance(storage, CountingStorage) else 0


class MemoryStore(Store):
    """A :class:`Store` whose tables are in memory (files still go to ``data_dir/files``)."""

    on_disk = False  # shard summaries are kept in memory, beside the shards

    def shard(self, relative: str) -> Shard:
        shard = self._shards.get(relative)
        if shard is None:
            shard = self._shards[relative] = MemoryShard(self.root / relative)
        return shard

    def monthly_shard(self, folder: str, month: str) -> Shard:
        return self.shard(f"{folder}/{month}.json")

    def read_shard(self, folder: str, month: str) -> Shard:
        return self.shard(f"{folder}/{month}.json")

    def shard_stamp(self, folder: str, name: str) -> Stamp | None:
        """No file to tell versions apart: derived data is computed from the shard."""
        return None

    def fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        """Each table file's name with how often it was written."""
        return tuple(sorted((relative, _writes(shard), 0)
                            for relative, shard in self._shards.items()))

    def cache_path(self, relative: str) -> Path | None:
        """No cache files: only deliverable files and the write lock touch ``data_dir``."""
        return None

    def quick_record(self, source: str) -> dict[str, Any] | None:
        """Kept in memory (a test's engine); a fresh process never sees it."""
        records: dict[str, dict[str, Any]] = self.__dict__.get("_quick_records", {})
        return records.get(source)

    def save_quick_record(self, source: str, record: dict[str, Any] | None) -> None:
        if not self._writing:
            raise StoreError("save_quick_record() outside writing()")
        records: dict[str, dict[str, Any]] = self.__dict__.setdefault("_quick_records", {})
        if record is None:
            records.pop(source, None)
        else:
            records[source] = json_safe(record)

    def roster_stamp(self) -> list[int] | None:
        """How often the roster table was written (no file to stamp)."""
        return [_writes(self.roster_shard)]


__all__ = ["CountingStorage", "MemoryShard", "MemoryStore"]
