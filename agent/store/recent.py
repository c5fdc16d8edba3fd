"""The newest messages of the store and of each identity, for ``messages --limit N``.

A listing of the newest messages (of everybody, or of one contractor) would otherwise
read the summary of every message shard to order the shards, then parse whole shards
(a megabyte each) for a few of their messages: at 200,000 messages, a contractor's
newest twenty sit in five shards. This read model keeps, per *group* (``*``, every
message; else one identity key, ``email:ann@example.com``), that group's newest
:data:`KEEP` messages as stored, and per message shard its stamp (inode, mtime, size),
its newest message time and its sources:

- ``index/views/recent-messages.json``: the shards, and per group its file's token and
  its *floor*: every message of the group sent after the floor is in its file (``None``:
  every message of the group is);
- ``index/views/recent/<hash of the group>.json``: the group's messages, newest first,
  each as ``[sent_at, shard, position in the shard, document]``, and the same token.

Derived data, never trusted blindly: a reader compares every shard's stamp with the files
(one directory scan) and, for each group it reads, the token of the group's file with the
main file's. Shards written since (a sync, a review, another process, a copied folder)
are read again, only they, and the groups they touch are updated and saved, one group at
a time; a missing, damaged, torn or older-version file (or a token that does not match)
makes the whole model again from every shard. Nothing is saved when a writer changed the
shards while they were read. A sync brings a model that a listing saved up to date once
its pages are committed (:func:`refresh`), so the first listing after it reads one
group's file. The files are rewritten in place and sealed with a CRC-32
(:func:`agent.files.write_derived`): a sync touches a hundred groups, and a temp file
each made the first listing after it slow (ext4 allocating inodes, 0.46 ms a file). So
the shards stay the only truth; the write path is untouched.

The order is exactly that of
:meth:`~agent.store.reads.StoreReads.iter_messages_newest_first`: newest first, ties by
the order of the shards (newest message first, then shard number), then by their place
in the shard.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from agent.store.ids import short_hash
from agent.store.layout import SHARD_RE, shard_number

if TYPE_CHECKING:
    from agent.store.folder import StoreFolder

log = logging.getLogger("retainer.store")

NAME = "recent-messages"
VERSION = f"{NAME}-2"  # 2: files sealed and rewritten in place
FORMAT = 1
KEEP = 50  # messages kept per group: `--limit` up to this is answered from the model
ALL = "*"  # the group of every message

Entry = list[Any]  # [sent_at, shard, position, document]
Stamp = list[int]


def model_path(root: Path) -> Path:
    return root / "index" / "views" / "recent-messages.json"


def group_path(root: Path, group: str) -> Path:
    return root / "index" / "views" / "recent" / f"{short_hash('recent', group)}.json"


def shard_stamps(root: Path) -> dict[str, Stamp]:
    """``{shard name: [inode, mtime_ns, size]}`` of every message shard on disk (the
    files :class:`~agent.store.layout.Catalog` reads as shards)."""
    out: dict[str, Stamp] = {}
    try:
        entries = list(os.scandir(root / "messages"))
    except FileNotFoundError:
        return out
    for entry in entries:
        name, dot, ext = entry.name.partition(".")
        if ext != "json" or not dot or not SHARD_RE.match(name):
            continue
        st = entry.stat()
        out[name] = [st.st_ino, st.st_mtime_ns, st.st_size]
    return out


class Model:
    """The model in memory: shards (name -> stamp, last, sources), groups (name ->
    token, floor) and the group entries loaded so far."""

    def __init__(self, shards: dict[str, dict[str, Any]], groups: dict[str, dict[str, Any]]
                 ) -> None:
        self.shards = shards
        self.groups = groups
        self.entries: dict[str, list[Entry]] = {}

    def ranks(self) -> dict[str, int]:
        """Each shard's place in the listing's order: newest message first, then by
        shard number (as the catalog lists them)."""
        names = sorted(self.shards, key=shard_number)
        names.sort(key=lambda n: self.shards[n]["last"], reverse=True)
        return {name: i for i, name in enumerate(names)}


def newest(store: StoreFolder, groups: Iterable[str], limit: int) -> list[dict[str, Any]] | None:
    """The newest ``limit`` messages of ``groups`` (``[ALL]`` or identity keys), as
    stored, newest first; None when the model cannot tell them (more than it keeps, or a
    store without files): then read the shards."""
    if not store.on_disk or limit > KEEP:
        return None
    if limit <= 0:
        return []
    root = store.root
    groups = sorted(set(groups))
    model = current(store, keep=groups)
    found = None if model is None else _entries(model, root, groups)
    if found is None:  # a group's file lost, damaged, or just rewritten by another reader
        model = current(store, keep=groups)
        found = None if model is None else _entries(model, root, groups)
    if found is None:
        model = rebuild(store)
        found = None if model is None else _entries(model, root, groups)
    if model is None or found is None:
        return None
    docs, short = _answer(model, groups, found, limit)
    if docs is None and short:  # re-dated messages left a group short: make it all again
        model = rebuild(store)
        found = None if model is None else _entries(model, root, groups)
        if model is None or found is None:
            return None
        docs, _ = _answer(model, groups, found, limit)
    return docs


def _answer(model: Model, groups: list[str], merged: list[Entry], limit: int
            ) -> tuple[list[dict[str, Any]] | None, bool]:
    """The newest ``limit`` of ``merged`` (the entries of ``groups``), or None when some
    group's older messages, not kept, could be among them; and whether a group that
    keeps fewer than :data:`KEEP` has some not kept (then a rebuild can tell: a group
    made from every shard keeps :data:`KEEP`, or all it has)."""
    ranks = model.ranks()
    merged.sort(key=lambda e: (ranks[e[1]], e[2]))
    merged.sort(key=lambda e: e[0], reverse=True)
    floors = [model.groups[g]["floor"] for g in groups if g in model.groups]
    floors = [f for f in floors if f is not None]
    if floors and (len(merged) < limit or merged[limit - 1][0] <= max(floors)):
        short = any(model.groups[g]["floor"] is not None
                    and len(model.entries.get(g) or ()) < KEEP
                    for g in groups if g in model.groups)
        return None, short  # older messages of some group are not kept: cannot tell
    return [e[3] for e in merged[:limit]], False


def _entries(model: Model, root: Path, groups: list[str]) -> list[Entry] | None:
    """The entries of ``groups`` together (None if a group's file does not match)."""
    out: list[Entry] = []
    for group in groups:
        if group not in model.groups:
            continue  # no message of that identity
        entries = _group_entries(model, root, group)
        if entries is None:
            return None
        out.extend(entries)
    return out


def _group_entries(model: Model, root: Path, group: str) -> list[Entry] | None:
    if group in model.entries:
        return model.entries[group]
    saved = _read(group_path(root, group))
    if (not isinstance(saved, dict) or saved.get("token") != model.groups[group]["token"]
            or saved.get("group") != group or not isinstance(saved.get("entries"), list)):
        return None
    entries: list[Entry] = saved["entries"]
    if not all(isinstance(e, list) and len(e) == 4 and isinstance(e[0], str)
               and e[1] in model.shards and isinstance(e[2], int) and isinstance(e[3], dict)
               for e in entries):
        return None
    model.entries[group] = entries
    return entries


def _read(path: Path) -> Any:
    """A file of the model; None when it is missing, torn (a writer rewrites it in place
    now, or was killed doing it) or not JSON."""
    from agent.files import read_derived

    raw = read_derived(path)
    try:
        return None if raw is None else orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _load(root: Path) -> Model | None:
    saved = _read(model_path(root))
    if (not isinstance(saved, dict) or saved.get("format") != FORMAT
            or saved.get("version") != VERSION or not isinstance(saved.get("shards"), dict)
            or not isinstance(saved.get("groups"), dict)):
        return None
    shards, groups = saved["shards"], saved["groups"]
    if not all(isinstance(line, dict) and isinstance(line.get("last"), str)
               and isinstance(line.get("sources"), list)
               and isinstance(line.get("stamp"), list) and len(line["stamp"]) == 3
               for line in shards.values()):
        return None
    if not all(isinstance(line, dict) and isinstance(line.get("token"), str)
               and isinstance(line.get("floor"), str | None)
               and isinstance(line.get("in"), list) and set(line["in"]) <= shards.keys()
               for line in groups.values()):
        return None
    return Model(shards, groups)


def current(store: StoreFolder, keep: Collection[str] | None = None) -> Model | None:
    """The model, brought up to date with the shards on disk (only the shards written
    since it was saved are read again). The entries of the groups it rewrites stay in
    memory only for ``keep`` (None: every group); the others are written and let go, one
    group at a time, so bringing it up to date after a large sync stays small."""
    model = _load(store.root)
    if model is None:
        return rebuild(store)
    return _update(store, model, shard_stamps(store.root), keep)


def refresh(store: StoreFolder) -> bool:
    """Bring the model up to date now if a listing saved it before and shards changed
    since: what a writer calls once its pages are committed, so that the next
    ``messages --limit N`` reads one group's file instead of the shards the writer
    wrote. Keeps no group in memory. Whether it was out of date (a store nobody listed
    costs one ``stat``)."""
    root = store.root
    if not store.on_disk or not model_path(root).exists():
        return False
    model = _load(root)
    if model is None:
        return rebuild(store) is not None  # damaged or of an older version
    stamps = shard_stamps(root)
    if not _changed(model, stamps) and model.shards.keys() <= stamps.keys():
        return False  # no shard written or removed since
    return _update(store, model, stamps, keep=()) is not None


def _changed(model: Model, stamps: dict[str, Stamp]) -> list[str]:
    """The shards written (or made) since the model was saved."""
    return [n for n, st in stamps.items()
            if n not in model.shards or model.shards[n]["stamp"] != st]


def _update(store: StoreFolder, model: Model, stamps: dict[str, Stamp],
            keep: Collection[str] | None) -> Model | None:
    root = store.root
    changed = _changed(model, stamps)
    removed = [n for n in model.shards if n not in stamps]
    if not changed and not removed:
        return model
    gone = set(changed) | set(removed)
    fresh: dict[str, list[Entry]] = {}  # group -> its newest entries in the changed shards
    cut: dict[str, str] = {}  # group -> the newest of its entries let go from fresh
    for name in removed:
        del model.shards[name]
    for name in sorted(changed, key=shard_number):
        if not _read_shard(store, name, stamps[name], model.shards, fresh):
            return rebuild(store)  # changed while read: start from the files again
        ranks = model.ranks()
        for group, entries in fresh.items():  # one shard's messages in memory, not all
            if len(entries) > KEEP:
                fresh[group], line = _trim(entries, ranks, cut.get(group))
                cut[group] = line["floor"]
    touched = set(fresh) | {g for g, line in model.groups.items()
                            if not gone.isdisjoint(line.get("in") or ())}
    ranks = model.ranks()
    saving = _saving(store, stamps)
    for group in sorted(touched):
        old = model.groups.get(group)
        kept = [] if old is None else _group_entries(model, root, group)
        if kept is None:
            return rebuild(store)
        entries = [e for e in kept if e[1] not in gone] + fresh.pop(group, [])
        floors = [f for f in (None if old is None else old["floor"], cut.get(group))
                  if f is not None]  # "": undated messages were let go
        entries, line = _trim(entries, ranks, max(floors, default=None))
        if old is None or entries != kept or line["floor"] != old["floor"]:
            model.entries[group], model.groups[group] = entries, line
            if saving:
                saving = _save_group(root, model, group)
        # else the same messages (a sync of other people's): its file stays
        if keep is not None and group not in keep:
            model.entries.pop(group, None)
    if saving:
        _save_main(root, model)
    return model


def rebuild(store: StoreFolder) -> Model | None:
    """The whole model from every shard (one shard in memory at a time), saved; None
    when it could not be saved (a read-only data folder: reading every shard at every
    listing would cost more than reading the few a listing needs)."""
    root = store.root
    if not _writable(root):
        return None
    stamps = shard_stamps(root)
    model = Model({}, {})
    for name in sorted(stamps, key=shard_number):
        fresh: dict[str, list[Entry]] = {}
        if not _read_shard(store, name, stamps[name], model.shards, fresh):
            return None  # a writer is at work: read the shards themselves this time
        ranks = model.ranks()
        for group, entries in fresh.items():
            have = model.entries.get(group, [])
            floor = model.groups.get(group, {}).get("floor")
            model.entries[group], model.groups[group] = _trim(have + entries, ranks, floor)
    if _saving(store, stamps) and all(_save_group(root, model, g) for g in sorted(model.groups)):
        _save_main(root, model)
    return model


def _writable(root: Path) -> bool:
    """Whether the model's files can be written (the nearest folder that exists)."""
    folder = group_path(root, ALL).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK)


def _read_shard(store: StoreFolder, name: str, stamp: Stamp,
                shards: dict[str, dict[str, Any]], fresh: dict[str, list[Entry]]) -> bool:
    """Add one shard's messages to ``fresh`` (by group) and its line to ``shards``;
    False when the shard is not the file ``stamp`` describes any more."""
    docs = store.read_shard("messages", name).docs("messages")
    from agent.store.storage import file_stamp

    now = file_stamp(store.root / "messages" / f"{name}.json")
    if now is None or list(now) != stamp:
        return False
    last = ""
    sources: set[str] = set()
    for pos, doc in enumerate(docs):
        sent = doc.get("sent_at") or ""
        last = max(last, sent)
        sources.add(doc.get("source") or "")
        entry = [sent, name, pos, doc]
        fresh.setdefault(ALL, []).append(entry)
        key = doc.get("identity")
        if key:
            fresh.setdefault(key, []).append(entry)
    shards[name] = {"stamp": stamp, "last": last, "sources": sorted(sources)}
    return True


def _trim(entries: list[Entry], ranks: dict[str, int], floor: str | None
          ) -> tuple[list[Entry], dict[str, Any]]:
    """A group's entries in listing order, the newest :data:`KEEP`, and its line (the
    floor raised past what was let go; the token is given when the file is written)."""
    entries.sort(key=lambda e: (ranks[e[1]], e[2]))
    entries.sort(key=lambda e: e[0], reverse=True)
    if len(entries) > KEEP:
        dropped = entries[KEEP][0]  # the newest of those let go
        floor = dropped if floor is None else max(floor, dropped)
        del entries[KEEP:]
    if floor is not None and entries and entries[-1][0] < floor:
        # older than what is known to be complete (re-dated messages): of no use
        entries = [e for e in entries if e[0] >= floor]
    return entries, {"token": "", "floor": floor, "in": sorted({e[1] for e in entries})}


def _saving(store: StoreFolder, stamps: dict[str, Stamp]) -> bool:
    """Whether the model made from ``stamps`` may be saved: not when a writer changed
    the shards meanwhile, nor where its folder cannot be made."""
    from agent.files import ensure_private_dir

    if shard_stamps(store.root) != stamps:
        return False
    try:
        ensure_private_dir(group_path(store.root, ALL).parent)
    except OSError as exc:
        _not_saved(exc)  # e.g. a file where a folder of it goes
        return False
    return True


def _save_group(root: Path, model: Model, group: str) -> bool:
    """Write one group's file with a new token (derived data, sealed, no fsync: a lost
    or torn file is made again); False if it could not be written."""
    from agent.files import write_derived

    model.groups[group]["token"] = os.urandom(6).hex()
    try:
        write_derived(group_path(root, group),
                      orjson.dumps({"group": group, "token": model.groups[group]["token"],
                                    "entries": model.entries[group]}))
    except (OSError, TypeError, orjson.JSONEncodeError) as exc:
        _not_saved(exc)
        return False
    return True


def _save_main(root: Path, model: Model) -> None:
    """Write the main file, after the groups' files it names the tokens of."""
    from agent.files import write_derived

    try:
        write_derived(model_path(root),
                      orjson.dumps({"format": FORMAT, "version": VERSION,
                                    "shards": model.shards, "groups": model.groups}))
    except (OSError, TypeError, orjson.JSONEncodeError) as exc:
        _not_saved(exc)


def _not_saved(exc: Exception) -> None:
    log.debug("read model %s not saved: %s", NAME, exc)
