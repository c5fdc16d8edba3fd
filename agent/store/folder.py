"""One data folder: its shard files and their caches, the write lock, schema and sync state.

:class:`StoreFolder` is the base of :class:`~agent.store.Store`: it knows where every
file is and how it is opened, locked and cleaned up, and keeps ``meta.json`` (schema
version, per-source sync state and cursors, the first-import cut-off). What the files
hold is the business of the layers built on it (roster.py, reads.py, core.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from agent.errors import StoreError, StoreLocked
from agent.files import ensure_private_dir, remove_orphan_temps, sanitize_filename
from agent.store.blobs import Blobs
from agent.store.layout import MONTH_RE, SCHEMA_VERSION, Catalog, ensure_index_dirs
from agent.store.pluginstate import PluginState
from agent.store.storage import Shard, Stamp, file_stamp, json_safe

if TYPE_CHECKING:
    from agent.locks import FileLock

log = logging.getLogger("retainer.store")

MONTHLY = ("messages", "deliverables")  # folders of bounded shards (once: per-month)
MONTHLY_CACHE = 4
LOCK_TIMEOUT = 120.0
DERIVED = ("index", "cache")  # folders of data derived from the shards (rebuilt when lost)
#: files of schema 2 whose records moved to bounded shards (agent.store.migrate)
RECORD_FILES = ("workflow.json", "notify.json")
RECORD_FOLDERS = ("reviews", "outbox", "notified", "instructions")  # agent.store.records
#: in meta.json once every record of those files is in its folder (agent.store.migrate)
RECORDS_MOVED = "records_moved"


def _has_month_files(folder: Path) -> bool:
    """Whether ``folder`` holds a month shard of schema 1 (``2026-03.json``); one scan,
    no glob (every command opens the store: at 200,000 messages that is 240 names)."""
    try:
        with os.scandir(folder) as entries:
            return any(e.name[:1].isdigit() and e.name.endswith(".json")
                       and MONTH_RE.match(e.name[:-5]) for e in entries)
    except FileNotFoundError:
        return False


class StoreFolder:
    """Open a data folder. Reads need no lock; writes happen inside :meth:`writing`."""

    def __init__(self, data_dir: Path, *, create: bool = True) -> None:
        self.data_dir = Path(data_dir).expanduser()
        if not create and not (self.data_dir / "store").is_dir():
            raise StoreError(f"{self.data_dir} holds no Retainer store yet; run `retainer sync`")
        self.root = ensure_private_dir(self.data_dir / "store")
        self.files_dir = ensure_private_dir(self.data_dir / "files")
        self.tmp_dir = ensure_private_dir(self.data_dir / "tmp")
        for folder in MONTHLY:
            ensure_private_dir(self.root / folder)
        self._index_dirs = ensure_index_dirs(self.root, MONTHLY)
        self._filelock: FileLock | None = None
        self._shards: dict[str, Shard] = {}
        self._monthly: dict[str, Shard] = {}  # a few recently used shards
        self._catalogs: dict[str, Catalog] = {}
        self._writing = False
        self._cleaned = False
        self.blobs = Blobs(self.data_dir, self.files_dir, self.tmp_dir)
        self._upgrade_layout()

    on_disk = True  # whether its files are on disk (the in-memory store keeps none)

    @property
    def _lock(self) -> FileLock:
        """The write lock (imported on first use: read commands never lock)."""
        if self._filelock is None:
            from agent.locks import FileLock

            self._filelock = FileLock(self.data_dir / "store.lock", timeout=LOCK_TIMEOUT,
                                      mode=0o600)
        return self._filelock

    def _upgrade_layout(self) -> None:
        """Move a store written by an older Retainer to the current layout (once)."""
        months = any(_has_month_files(self.root / folder) for folder in MONTHLY)
        records = any((self.root / name).exists() for name in RECORD_FILES) or (
            (self.root / "meta.json").exists()
            and self.meta.get("meta", RECORDS_MOVED, key="name") is None)
        if not months and not records:
            return
        from agent.store.migrate import upgrade, upgrade_records

        self._acquire_lock()
        try:
            if months:
                upgrade(self)
            upgrade_records(self)  # after: a schema-1 store has both steps to take
            # (a no-op apart from meta.json when there is nothing to move)
        finally:
            self._lock.release()

    def catalog(self, folder: str) -> Catalog:
        """The shards of ``messages``, ``deliverables`` or a folder of records
        (:data:`agent.store.records.RECORD_FOLDERS`) and their summaries."""
        cat = self._catalogs.get(folder)
        if cat is None:
            index_dir = self._index_dirs.get(folder) or self.root / "index" / folder
            cat = self._catalogs[folder] = Catalog(
                folder, self.root / folder, index_dir,
                lambda name: self.read_shard(folder, name), disk=self.on_disk)
        return cat

    def _fresh(self, folder: str) -> Catalog:
        """The catalog, checked against the files unless this process holds the write
        lock (then it was checked on entry and only this process writes)."""
        cat = self.catalog(folder)
        if not self._writing:
            cat.refresh()
        return cat

    # -- files --------------------------------------------------------------------------

    def shard(self, relative: str) -> Shard:
        shard = self._shards.get(relative)
        if shard is None:
            shard = self._shards[relative] = Shard(self.root / relative)
        return shard

    @property
    def meta(self) -> Shard:
        return self.shard("meta.json")

    @property
    def roster_shard(self) -> Shard:
        return self.shard("roster.json")

    @property
    def contracts_shard(self) -> Shard:
        return self.shard("contracts.json")

    def monthly_shard(self, folder: str, month: str) -> Shard:
        """One shard of ``messages/`` or ``deliverables/`` (``month`` is its name, e.g.
        ``s000042``), kept in a small cache so a big first sync does not hold every
        shard in memory."""
        self.catalog(folder).will_write()  # the write path: tell other processes
        relative = f"{folder}/{month}.json"
        shard = self._monthly.pop(relative, None)
        if shard is None:
            shard = Shard(self.root / relative)
            if len(self._monthly) >= MONTHLY_CACHE:
                self._monthly.pop(next(iter(self._monthly))).drop_cache()
        self._monthly[relative] = shard  # most recently used last
        return shard

    def shard_names(self, folder: str) -> list[str]:
        """The shards of ``folder``, oldest first."""
        return self.catalog(folder).names()

    def month_names(self) -> list[str]:
        return self.shard_names("messages")

    def read_shard(self, folder: str, month: str) -> Shard:
        """A shard for one pass of reading (not cached, so listings stay small in memory)."""
        relative = f"{folder}/{month}.json"
        return self._monthly.get(relative) or Shard(self.root / relative)

    def shard_stamp(self, folder: str, name: str) -> Stamp | None:
        """What identifies the current version of one shard's file (inode, mtime, size),
        for caches derived from it; None when it cannot be told (then read the shard)."""
        return file_stamp(self.root / folder / f"{name}.json")

    def cache_path(self, relative: str) -> Path | None:
        """Where a cache derived from the shards lives (under ``store/``); None for a
        store that keeps no files of its own."""
        return self.root / relative

    def fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        """What changes whenever anything in the store is written (by any process):
        each file of stored data with its mtime and size. Caches of views derived from the
        store (the dashboard's) compare it instead of looking at the files themselves.

        Derived files (shard summaries in ``index/``, ``cache/``, ``.counts/``) are
        left out: they follow the data, and reads rewrite them."""
        out: list[tuple[str, int, int]] = []
        stack = [str(self.root)]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                if entry.name.startswith(".") or entry.name in DERIVED:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.name.endswith(".json"):
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:  # replaced while we looked: the next look sees it
                        continue
                    out.append((entry.path, st.st_mtime_ns, st.st_size))
        out.sort()
        return tuple(out)

    def scratch_dir(self, source: str) -> Path:
        """An empty folder for one source's downloads in progress (same filesystem as files/).

        Emptied here, at the start of each sync of that source (the caller holds the
        source's sync lock), so what a killed sync left behind is removed.
        """
        folder = ensure_private_dir(self.tmp_dir / sanitize_filename(source))
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                import shutil

                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        return folder

    def source_dir(self, source: str) -> Path:
        return ensure_private_dir(self.data_dir / "sources" / sanitize_filename(source))

    def plugin_state(self, source: str) -> PluginState:
        """One source's committed per-item plugin state (``Page.state``); commit changes
        with its :meth:`~agent.store.pluginstate.PluginState.commit` inside :meth:`writing`."""
        return PluginState(self.source_dir(source))

    # -- locking ------------------------------------------------------------------------

    def _acquire_lock(self) -> None:
        from agent.locks import LockTimeout

        try:
            self._lock.acquire()
        except LockTimeout:
            raise StoreLocked(
                f"another Retainer process has been writing to {self.data_dir} for "
                f"{LOCK_TIMEOUT:.0f} s; wait for it to finish, or stop it"
            ) from None

    @contextmanager
    def writing(self) -> Iterator[Self]:
        """Hold the store's write lock; caches are checked against the files on entry."""
        self._acquire_lock()
        try:
            if not self._cleaned:
                self._cleanup()
            self._ensure_schema()
            for cat in self._catalogs.values():
                cat.refresh()
            self._writing = True
            yield self
        finally:
            self._writing = False
            for cat in self._catalogs.values():
                cat.forget_pending()
                cat.flush()
            self._lock.release()

    def _cleanup(self) -> None:
        removed = remove_orphan_temps(self.root) + remove_orphan_temps(self.root / "index")
        removed += remove_orphan_temps(self.root / "index" / "views")  # read models
        for folder in MONTHLY + RECORD_FOLDERS:
            removed += remove_orphan_temps(self.root / folder)
            removed += remove_orphan_temps(self.root / "index" / folder)
        for entry in self.tmp_dir.iterdir():
            if entry.is_file():
                entry.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("removed %d temporary files left by an interrupted run", removed)
        self._cleaned = True

    def _ensure_schema(self) -> None:
        meta = self.meta.get("meta", "schema", key="name")
        if meta is None:  # a new store: nothing to move, ever
            self.meta.upsert_many("meta", [{"name": "schema", "version": SCHEMA_VERSION},
                                           {"name": RECORDS_MOVED}], "name")
        elif meta.get("version", 0) > SCHEMA_VERSION:  # (older ones are upgraded on opening)
            raise StoreError(f"{self.data_dir} was written by a newer Retainer "
                             f"(schema {meta['version']}); upgrade Retainer")

    # -- first import ------------------------------------------------------------------

    def review_since(self) -> str:
        """The cut-off day (``YYYY-MM-DD``): work received before it is stored as handled."""
        doc = self.meta.get("meta", "review_since", key="name")
        return str(doc.get("date") or "") if doc else ""

    def set_review_since(self, day: str) -> None:
        """Use ``day`` (``YYYY-MM-DD``) as the cut-off; ``""`` for none."""
        if day != self.review_since():
            self.meta.upsert_many("meta", [{"name": "review_since", "date": day}], "name")

    def first_sync_day(self) -> str | None:
        """The default cut-off recorded at the first sync (``YYYY-MM-DD``; ``""``: none,
        for a store that synced before the default existed); ``None`` if not recorded yet."""
        doc = self.meta.get("meta", "first_sync", key="name")
        return str(doc.get("date") or "") if doc else None

    def record_first_sync_day(self, today: str) -> str:
        """Record the default cut-off once and return it: ``today`` for a new store,
        ``""`` for one that synced before (its history keeps entering the queue)."""
        recorded = self.first_sync_day()
        if recorded is not None:
            return recorded
        day = "" if self.source_states() else today
        self.meta.upsert_many("meta", [{"name": "first_sync", "date": day}], "name")
        return day

    # -- sync state ----------------------------------------------------------------------

    def source_state(self, source: str) -> dict[str, Any]:
        return dict(self.meta.get("sources", source, key="source") or {"source": source})

    def source_states(self) -> dict[str, dict[str, Any]]:
        return {doc["source"]: doc for doc in self.meta.docs("sources")}

    def update_source_state(self, source: str, **changes: Any) -> None:
        state = self.source_state(source)
        state.update(json_safe(changes))
        self.meta.upsert_many("sources", [state], "source")

    # -- the quick check of `retainer sync` (agent.quicksync) ----------------------------

    @property
    def _quick_path(self) -> Path:
        return self.data_dir / "cache" / "quick-sync.json"

    def quick_record(self, source: str) -> dict[str, Any] | None:
        """What the last complete sync of ``source`` left for the quick check (see
        :mod:`agent.quicksync`), or None. Read without the lock: the file is replaced
        atomically."""
        import json

        try:
            saved = json.loads(self._quick_path.read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(saved, dict) or saved.get("format") != 1:
            return None
        sources = saved.get("sources")
        record = sources.get(source) if isinstance(sources, dict) else None
        return record if isinstance(record, dict) else None

    def save_quick_record(self, source: str, record: dict[str, Any] | None) -> None:
        """Keep (or with ``None`` forget) ``source``'s quick-check record; inside
        :meth:`writing`. A small 0600 file under ``cache/``, replaced atomically."""
        import json

        from agent.files import write_private

        if not self._writing:
            raise StoreError("save_quick_record() outside writing()")
        try:
            saved = json.loads(self._quick_path.read_bytes())
            sources = saved.get("sources") if saved.get("format") == 1 else None
        except (OSError, ValueError, AttributeError):
            sources = None
        sources = dict(sources) if isinstance(sources, dict) else {}
        if record is None:
            if source not in sources:
                return
            del sources[source]
        else:
            sources[source] = json_safe(record)
        ensure_private_dir(self._quick_path.parent)
        write_private(self._quick_path, json.dumps(  # derived and self-checking: no fsync
            {"format": 1, "sources": sources}, sort_keys=True).encode(), sync=False,
            sync_dir=False)

    def roster_stamp(self) -> list[int] | None:
        """What changes whenever the roster is written (a promotion, a new contractor):
        ``roster.json``'s inode, mtime and size; None if there is none yet."""
        stamp = file_stamp(self.root / "roster.json")
        return list(stamp) if stamp is not None else None
