"""Read models: small derived documents, so a read command need not parse every shard.

A read model is one JSON file, ``store/index/views/<name>.json``, holding what some
listing computes from the store (e.g. each deliverable reduced to what the delegation
metrics need), together with the *stamp* (inode, mtime, size) of every store file it
was derived from. It is used only while every one of those stamps still matches the
files; a sync, a review, a roster change, a write killed halfway, another process or a
copied folder all change some stamp, and then the model is rebuilt from the store and
saved again. A missing, damaged or older-version file is rebuilt the same way. So the
shards stay the only truth: a read model is never trusted blindly, and losing one costs
one slow read.

Checking a model costs one ``stat`` per input file (a directory scan for the shard
folders): well under a millisecond per hundred shards. Each file starts with a digest of
its inputs, so telling whether a model is current reads its first bytes, not the model.

Rebuilding stays bounded by what changed, not by the store: a builder keeps partial
results beside its model. :func:`shard_parts` keeps one part per shard (e.g. each
deliverable shard's documents reduced to what the delegation metrics read, or its rows of
the review queue) with that shard's stamp, and recomputes only the parts of shards
written since; :func:`load_partial` / :func:`save_partial` keep a result for one state of
some inputs (the delegation model's per-deliverable kinds of work and turnarounds, with
each message shard's stamp and threads, see :func:`agent.stats._build_model`). The
output of a rebuild from those equals a rebuild from nothing (tested byte for byte).

Writers keep the models in use fresh: :func:`refresh` rebuilds, once, at the end of a
sync or a batch of reviews, every model that a reader saved before, so the next read
command finds them current (see :func:`agent.stats.refresh_read_models`).

Inputs are named by part: ``roster``, ``contracts``, ``workflow``, ``instructions``
(single files) and ``messages``, ``deliverables`` (every shard of the folder).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

try:  # hashlib's blake2b without importing hashlib (see agent.store.ids)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - a Python built without _blake2
    from hashlib import blake2b

from agent.files import ensure_private_dir, write_private

if TYPE_CHECKING:
    from agent.store.core import Store

log = logging.getLogger("retainer.store")

FILES = {"roster": "roster.json", "contracts": "contracts.json",
         "instructions": "instructions.json"}
FOLDERS = ("messages", "deliverables")
#: parts kept in folders of shards (agent.store.records): ``workflow`` is the reviews and
#: the outbox; ``instructions``, the templates' file and the instructions sent
GROUPS = {"workflow": ("reviews", "outbox"), "instructions": ("instructions",)}
FORMAT = 1  # the layout of a read model file itself

Builder = Callable[["Store"], Any]
#: Builders of the models that :func:`refresh` may rebuild: name -> (version, inputs, build).
BUILDERS: dict[str, tuple[str, tuple[str, ...], Builder]] = {}


def views_dir(store: Store) -> Path:
    return store.root / "index" / "views"


def input_stamps(root: Path, parts: Iterable[str]) -> list[list[Any]]:
    """``[[relative path, inode, mtime_ns, size], ...]`` of every file of ``parts``
    (a missing single file as ``[path, 0, 0, -1]``), in a fixed order."""
    out: list[list[Any]] = []
    for part in sorted(set(parts)):
        folders = GROUPS.get(part) or ((part,) if part in FOLDERS else ())
        if part not in FILES and not folders:
            raise ValueError(f"unknown read model input {part!r}")
        if part in FILES:
            try:
                st = os.stat(root / FILES[part])
                out.append([FILES[part], st.st_ino, st.st_mtime_ns, st.st_size])
            except FileNotFoundError:
                out.append([FILES[part], 0, 0, -1])
        for folder in folders:
            try:
                entries = sorted(os.scandir(root / folder), key=lambda e: e.name)
            except FileNotFoundError:
                entries = []
            for entry in entries:
                if not entry.name.endswith(".json") or entry.name.startswith("."):
                    continue
                st = entry.stat()
                out.append([f"{folder}/{entry.name}", st.st_ino, st.st_mtime_ns, st.st_size])
    return out


def _load(path: Path, version: str, stamps: list[list[Any]]) -> tuple[bool, Any]:
    try:
        saved = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False, None
    if (isinstance(saved, dict) and saved.get("format") == FORMAT
            and saved.get("version") == version and saved.get("inputs") == stamps
            and "data" in saved):
        return True, saved["data"]
    return False, None


def _digest(stamps: list[list[Any]]) -> str:
    return blake2b(orjson.dumps(stamps), digest_size=16).hexdigest()


def _current(path: Path, version: str, stamps: list[list[Any]]) -> bool | None:
    """Whether the model file at ``path`` was saved for ``stamps`` (None: there is none),
    told from its first bytes (format, version and a digest of its inputs, written first)
    without parsing the model: what :func:`refresh` asks of every model after a write.
    A file that says so but is damaged further on is still rebuilt by its next reader
    (:func:`_load` parses and checks it all)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(256)
    except FileNotFoundError:
        return None
    except OSError:
        return False
    end = head.find(b',"inputs":')
    try:
        saved = orjson.loads(head[:end] + b"}") if end > 0 else None
    except orjson.JSONDecodeError:
        return False
    return (isinstance(saved, dict) and saved.get("format") == FORMAT
            and saved.get("version") == version and saved.get("digest") == _digest(stamps))


def _save(store: Store, name: str, version: str, stamps: list[list[Any]], data: Any) -> None:
    if not store.on_disk:
        return
    try:  # derived data: no fsync; a lost or stale model is rebuilt from the store
        folder = ensure_private_dir(views_dir(store))
        write_private(folder / f"{name}.json",
                      orjson.dumps({"format": FORMAT, "version": version,
                                    "digest": _digest(stamps), "inputs": stamps,
                                    "data": data}), sync=False, sync_dir=False)
    except (OSError, TypeError, orjson.JSONEncodeError) as exc:
        log.debug("read model %s not saved: %s", name, exc)  # read-only folder: next time


def view(store: Store, name: str, version: str, inputs: Iterable[str], build: Builder
         ) -> Any:
    """The read model ``name``: the saved one when its inputs are unchanged, else
    ``build(store)`` (JSON-ready), saved for the next reader.

    ``version`` names the derivation: change it whenever ``build`` computes something
    else, so models saved by an older Retainer are rebuilt.
    """
    inputs = tuple(sorted(set(inputs)))
    if not store.on_disk:  # the in-memory store: nothing to keep
        return build(store)
    stamps = input_stamps(store.root, inputs)
    path = views_dir(store) / f"{name}.json"
    if _current(path, version, stamps):  # else stale or none: not parsed in vain
        found, data = _load(path, version, stamps)
        if found:
            return data
    data = build(store)
    after = input_stamps(store.root, inputs)
    if after == stamps:  # a writer changed the inputs meanwhile: do not keep a mix
        _save(store, name, version, stamps, data)
    return data


def stale(store: Store, name: str) -> bool | None:
    """Whether the saved model ``name`` no longer matches the store (``None``: there is
    none, or its builder is unknown to this process)."""
    builder = BUILDERS.get(name)
    if builder is None:
        return None
    version, inputs, _ = builder
    current = _current(views_dir(store) / f"{name}.json", version,
                       input_stamps(store.root, inputs))
    return None if current is None else not current


def register(name: str, version: str, inputs: Iterable[str], build: Builder) -> None:
    """Make a read model known to :func:`refresh` (done by the module that builds it)."""
    BUILDERS[name] = (version, tuple(sorted(set(inputs))), build)


def refresh(store: Store) -> list[str]:
    """Rebuild every saved read model whose inputs changed; return their names.

    Called by writers after their files are committed (outside any page commit: a model
    is derived data, and a kill here only leaves it stale, so the next read rebuilds it).
    Only registered models that a reader saved before are rebuilt: a store nobody lists
    costs nothing.
    """
    rebuilt = []
    for name, (version, inputs, build) in list(BUILDERS.items()):
        if stale(store, name):
            view(store, name, version, inputs, build)
            rebuilt.append(name)
    return rebuilt


# -- caches of partial results, checked by the caller ----------------------------------------


def load_partial(store: Store, name: str, version: str, inputs: Iterable[str]) -> Any:
    """A partial result saved with :func:`save_partial`, or None unless it was saved for
    exactly the current state of ``inputs`` (a subset of what a model depends on: e.g.
    what each deliverable's turnaround depends on besides the deliverable itself)."""
    if not store.on_disk:
        return None
    found, data = _load(views_dir(store) / f"{name}.partial.json", version,
                        input_stamps(store.root, inputs))
    return data if found else None


def save_partial(store: Store, name: str, version: str, inputs: Iterable[str],
                 stamps: list[list[Any]], data: Any) -> None:
    """Keep a partial result computed from the state ``stamps`` of ``inputs`` (taken
    before computing it); not kept when the inputs changed meanwhile."""
    if store.on_disk and stamps == input_stamps(store.root, inputs):
        _save(store, f"{name}.partial", version, stamps, data)


# -- per-shard parts of a model, kept with each shard's stamp -----------------------------------

PartOf = Callable[[list[Any]], Any]


def shard_parts(store: Store, name: str, version: str, folder: str, part_of: PartOf,
                valid: Callable[[Any], bool] = lambda part: True) -> list[Any]:
    """``part_of(documents of the shard)`` for every shard of ``folder`` (``messages``
    or ``deliverables``), in the store's order: a saved part is reused while its shard's
    stamp is unchanged; only the parts of shards written since (or new) are computed, and
    the parts of shards gone are dropped.

    Kept in ``views/<name>.parts.json`` (JSON-ready parts), with each shard's stamp taken
    before the shard was read, so a shard written meanwhile is read again next time. A
    missing, damaged or other-version file is rebuilt from every shard; replaced
    atomically, so a kill leaves the old file or the new one. ``version`` names what
    ``part_of`` computes: change it whenever that changes. A saved part that ``valid``
    rejects (not shaped as ``part_of`` writes) is computed afresh, never trusted.
    """
    names = store.shard_names(folder)
    if not store.on_disk:
        return [part_of(store.read_shard(folder, n).docs(folder)) for n in names]
    path = views_dir(store) / f"{name}.parts.json"
    kept: dict[str, Any] = {}
    try:
        saved = orjson.loads(path.read_bytes())
        if (isinstance(saved, dict) and saved.get("format") == FORMAT
                and saved.get("version") == version and saved.get("folder") == folder
                and isinstance(saved.get("shards"), dict)):
            kept = saved["shards"]
    except (OSError, orjson.JSONDecodeError):
        pass
    shards: dict[str, list[Any]] = {}
    changed = set(kept) != set(names)
    for shard in names:
        stamp = store.shard_stamp(folder, shard)
        entry = kept.get(shard)
        if (stamp is None or not isinstance(entry, list) or len(entry) != 2
                or entry[0] != list(stamp) or not valid(entry[1])):
            entry = [list(stamp) if stamp is not None else None,
                     part_of(store.read_shard(folder, shard).docs(folder))]
            changed = True
        shards[shard] = entry
    if changed:
        try:  # derived data: no fsync; a lost part file costs one read of every shard
            write_private(ensure_private_dir(views_dir(store)) / f"{name}.parts.json",
                          orjson.dumps({"format": FORMAT, "version": version,
                                        "folder": folder, "shards": shards}),
                          sync=False, sync_dir=False)
        except (OSError, TypeError, orjson.JSONEncodeError) as exc:
            log.debug("read model parts %s not saved: %s", name, exc)
    return [entry[1] for entry in shards.values()]
