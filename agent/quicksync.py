"""The quick check of ``retainer sync``: skip a source when nothing it stands for changed.

As make, rsync and notmuch do: a connector declares, during a sync, the files or
folders that stand for its whole source (:meth:`agent.connector.SourceContext.quick_check`,
e.g. a Maildir's ``cur/`` and ``new/`` folders). After a complete, clean sync the host
keeps their stamps, taken *before* the connector read them, with the :func:`environment`
the sync ran in (the config, the roster, the installed plugins) and its cursor; see
:meth:`agent.sync.SyncEngine._keep_quick`. Any other sync forgets the record, and one
that fails, stops with pages committed or is killed mid-way leaves the source's state
(failures, cursor, pending journal) unlike what the record was taken with.

The next ``retainer sync`` (:func:`quick_sync`), before importing pydantic or any plugin,
compares all of it for every source it would sync; when everything is equal it records
each source as synced with nothing new, exactly as a no-op sync does, and the command
prints the same lines. Anything else (no record, one stamp, the config's ``[agent]`` or
source table, ``[[contractors]]``, ``[plugins]``, notifiers configured, a roster write, a
plugin installed, removed or edited, a plugin implementing ``source_synced``, a pending
backfill or announcement, a failed last sync, a moved cursor) takes the normal path.

This module imports neither pydantic nor pluggy: the quick path must start faster than
the plugins load.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

try:  # hashlib's blake2b without importing hashlib (see agent.store.ids)
    from _blake2 import blake2b
except ImportError:
    from hashlib import blake2b

if TYPE_CHECKING:
    from agent.locks import FileLock
    from agent.store import Store
    from agent.syncresult import SyncResult

#: Hooks whose implementations must run on every sync: a plugin implementing one turns
#: the quick check off (``records_stored`` and ``register_mail_formats`` run only when
#: something is stored, which a skipped sync never does).
PER_SYNC_HOOKS = frozenset({"source_synced"})
#: Environment switches that change which plugins load (agent.plugins).
PLUGIN_ENV = ("RETAINER_LOAD_PLUGINS", "RETAINER_DISABLE_PLUGINS")
MANIFEST_FORMAT = 1  # agent.plugins.MANIFEST_FORMAT (not imported: it imports pluggy)

log = logging.getLogger("retainer.sync")


def _stamp(path: str | os.PathLike[str]) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev]


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    # blake2b from _blake2 (as agent.store.ids): importing hashlib loads OpenSSL, a tenth
    # of a no-op sync's start. (Records kept with sha256 differ: one normal sync redoes them.)
    return blake2b(text.encode(), digest_size=32).hexdigest()


def cursor_hash(cursor: Any) -> str:
    """What the quick record keeps of a source's committed cursor (another command that
    resets it makes the next sync a normal one)."""
    return _digest(cursor or {})


def _plugins(manifest: Path, platform: str) -> list[Any] | None:
    """The manifest's stamp and its plugins' file stamps, or None when the manifest is
    missing or not current, a plugin in it implements a per-sync hook, or the plugin
    providing ``platform`` failed, warned or is not in it."""
    stamp = _stamp(manifest)
    try:
        saved = json.loads(manifest.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("format") != MANIFEST_FORMAT:
        return None
    plugins = saved.get("plugins")
    if not isinstance(plugins, dict):
        return None
    provided = False
    for entry in plugins.values():
        if not isinstance(entry, dict) or not PER_SYNC_HOOKS.isdisjoint(entry.get("hooks") or ()):
            return None
        if platform in (entry.get("platforms") or ()):
            if entry.get("error") or entry.get("warning"):
                return None
            provided = True
        key = entry.get("key")
        files = key[3] if isinstance(key, list) and len(key) == 4 else None
        if not isinstance(files, list):
            return None
        for item in files:  # [path, size, mtime_ns], as agent.plugins._entry_key
            st = _stamp(item[0]) if isinstance(item, list) and len(item) == 3 else None
            if st is None or [st[1], st[0]] != item[1:]:
                return None
    if not provided:
        return None
    # a distribution installed or removed changes its site-packages folder
    return [stamp, sys.path[1:], [[p, _stamp(p)] for p in sys.path[1:]
                                  if p.endswith(("site-packages", "dist-packages"))]]


def environment(data: dict[str, Any], table: dict[str, Any], store: Store,
                manifest: Path) -> dict[str, Any] | None:
    """What a source's quick record is valid for, or None when the quick check cannot
    apply: the config (every part but the other sources), the plugin switches, the
    roster's stamp, the plugin manifest and the Python running."""
    if data.get("notifiers"):
        return None
    platform = table.get("platform")
    plugins = _plugins(manifest, platform) if isinstance(platform, str) else None
    if plugins is None:
        return None
    config = {key: value for key, value in data.items() if key != "sources"}
    return {"config": _digest([config, table]),
            "switches": [os.environ.get(name) for name in PLUGIN_ENV],
            "roster": store.roster_stamp(), "plugins": plugins,
            "python": [sys.executable, sys.version]}


def chosen_tables(data: dict[str, Any], names: tuple[str, ...]) -> list[dict[str, Any]] | None:
    """The ``[[sources]]`` tables ``retainer sync [NAMES]`` syncs, or None when the
    file is not plainly shaped or a name is unknown (then the normal path says so)."""
    tables = data.get("sources", [])
    if not (isinstance(tables, list) and all(isinstance(t, dict) for t in tables)):
        return None
    if names:
        by_name = {t.get("name"): t for t in tables}
        if not all(name in by_name for name in names):
            return None
        return [by_name[name] for name in dict.fromkeys(names)]
    return [t for t in tables if t.get("enabled", True) is not False]


def unchanged(store: Store, name: str, env: dict[str, Any] | None) -> bool:
    """Whether source ``name`` may be skipped: its record's environment and stamps are
    those of now, and its last sync succeeded with nothing left to do."""
    record = store.quick_record(name)
    if record is None or env is None or record.get("env") != json.loads(json.dumps(env)):
        return False
    state = store.source_state(name)
    if (state.get("failures") or state.get("last_error") or state.get("pending")
            or state.get("backfill") or not state.get("last_success")
            or record.get("cursor") != cursor_hash(state.get("cursor"))):
        return False
    stamps = record.get("stamps")
    return isinstance(stamps, dict) and bool(stamps) and all(
        _stamp(path) == stamp for path, stamp in stamps.items())


class Skipped(NamedTuple):
    """A source the quick check skipped."""

    source: str
    platform: str


def quick_sync(config_path: Path, names: tuple[str, ...]) -> list[SyncResult] | None:
    """``retainer sync [NAMES]`` when every source it would sync is unchanged: each is
    recorded as synced with nothing new (as :meth:`agent.sync.SyncEngine._finish` does
    for a no-op sync) and its result returned; None (nothing done) otherwise."""
    from agent.config.file import quick_config, read_toml
    from agent.errors import ConfigError

    try:
        data = read_toml(config_path)
        data_dir = quick_config(config_path).data_dir
    except ConfigError:
        return None
    tables = chosen_tables(data, names)
    if not tables or not (data_dir / "store").is_dir():
        return None
    from agent.store import Store

    store = Store(data_dir, create=False)
    manifest = data_dir / "cache" / "plugins.json"
    skipped: list[Skipped] = []
    for table in tables:
        name, platform = table.get("name"), table.get("platform")
        if not (isinstance(name, str) and isinstance(platform, str)
                and unchanged(store, name, environment(data, table, store, manifest))):
            return None
        skipped.append(Skipped(name, platform))
    from agent.locks import FileLock, LockTimeout

    locks = [FileLock(store.source_dir(item.source) / "sync.lock", timeout=0, mode=0o600)
             for item in skipped]  # as SyncEngine.sync_source: one sync of a source at once
    held: list[FileLock] = []
    try:
        for lock in locks:
            lock.acquire()
            held.append(lock)
        return _record(store, data, tables, skipped, manifest)
    except LockTimeout:  # being synced right now: the normal path says so
        return None
    finally:
        for done in held:
            done.release()


def _record(store: Store, data: dict[str, Any], tables: list[dict[str, Any]],
            skipped: list[Skipped], manifest: Path) -> list[SyncResult] | None:
    from agent.store.storage import iso
    from agent.syncresult import SyncResult

    started = time.monotonic()  # as a normal sync's duration: from its source's lock on
    results: list[SyncResult] = []
    with store.writing():
        for item in skipped:
            if not unchanged(store, item.source, environment(  # again, under the locks
                    data, next(t for t in tables if t.get("name") == item.source), store,
                    manifest)):
                return None
        for item in skipped:
            result = SyncResult(source=item.source, platform=item.platform)
            result.duration = time.monotonic() - started
            now = iso(datetime.now(UTC))
            store.update_source_state(
                item.source, last_attempt=now, last_duration=round(result.duration, 3),
                platform=item.platform, warnings=[], last_success=now, failures=0,
                last_error=None, error_kind=None)
            results.append(result)
            log.debug("%s: nothing new (quick check: every stamp and the config, roster "
                      "and plugins unchanged since the last sync)", item.source)
    return results
