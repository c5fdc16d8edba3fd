"""The :class:`Store`: normalized records, idempotent upserts, cursors after records."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from agent.errors import NoSpace, StoreError, StoreLocked
from agent.files import ensure_private_dir, fsync_dir, remove_orphan_temps, sanitize_filename
from agent.models import (
    CONTRACTOR_STATUSES,
    Attachment,
    Contract,
    Identity,
    Message,
    Record,
    Submission,
)
from agent.store.layout import MONTH_RE, Catalog, chain_key, ensure_index_dirs
from agent.store.pluginstate import PluginState
from agent.store.storage import Shard, batched_dir_sync, json_safe
from agent.store.storage import iso as iso

log = logging.getLogger("retainer.store")

SCHEMA_VERSION = 2  # 1: one shard per month; 2: bounded shards + summaries (layout.py)
MONTHLY = ("messages", "deliverables")  # folders of bounded shards (once: per-month)
MONTHLY_CACHE = 4
LOCK_TIMEOUT = 120.0
DELIVERABLE_STATUSES = {"stored", "too_large", "delivery_waiting", "link", "unavailable"}
REVIEW_STATUSES = ("unreviewed", "approved", "changes_requested")


def now_utc() -> datetime:
    return datetime.now(UTC)


def short_hash(*parts: str) -> str:
    return hashlib.blake2b("\x00".join(parts).encode("utf-8", "surrogatepass"),
                           digest_size=8).hexdigest()


def message_id_for(source: str, remote_id: str) -> str:
    return "m_" + short_hash(source, remote_id)


def thread_id_for(source: str, thread_remote_id: str) -> str:
    return "t_" + short_hash(source, thread_remote_id)


def _handled_before(doc: dict[str, Any], cutoff: str) -> None:
    """Work received before the first-import cut-off enters the queue as handled."""
    received = doc.get("received_at") or ""
    if cutoff and received and received[:10] < cutoff and doc["review_status"] == "unreviewed":
        doc["review_status"] = "approved"
        doc["review"] = {"status": "approved", "rating": None, "feedback": "",
                         "reviewed_at": None, "cost": None, "hours": None, "sent": [],
                         "round": 0, "auto": f"received before review_since {cutoff}"}


def _doc(value: dict[str, Any]) -> dict[str, Any]:
    """A JSON-safe copy of a document (datetimes as ISO strings, text valid UTF-8)."""
    safe: dict[str, Any] = json_safe(value)
    return safe


_VERSION_MARK = re.compile(
    r"(?:[\s._-]+(?:v(?:er(?:sion)?)?\s*\d+|rev(?:ision)?\s*\d*|r\d+|final|draft|revised|"
    r"updated|new|copy|\d{1,2})|\s*\(\d+\))$", re.IGNORECASE)


def work_stem(filename: str) -> str:
    """The name of a piece of work without version marks: ``Logo-v2 final.png`` is ``logo``."""
    stem = Path(filename.replace("\\", "/")).stem.lower().strip()
    while True:
        shorter = _VERSION_MARK.sub("", stem).strip(" ._-")
        if shorter == stem or not shorter:
            return stem
        stem = shorter


def version_label(doc: dict[str, Any]) -> str:
    """``"v2 of logo"`` for a later version of a piece of work, else ``""``."""
    version = doc.get("version") or 1
    return f"v{version} of {doc.get('work') or doc.get('filename')}" if version > 1 else ""


def _warn_unstated_contract(source: str, record: Submission) -> None:
    text = (f"{source}: Submission {record.remote_id!r} does not say whether "
            f"{record.contractor.key} is under contract, so they join the roster as before; "
            "set Submission(under_contract=True) when the platform has a contract with them, "
            "or False to make them a candidate (not saying will mean False in a later version)")
    warnings.warn(text, DeprecationWarning, stacklevel=2)
    log.warning("%s", text)


class Versions:
    """Which deliverables are versions of one piece of work.

    A new deliverable is a later version of an earlier one when its record says so
    (``replaces``), or else when it comes from the same person, in the same thread (or
    contract), with the same file name apart from version marks (:func:`work_stem`).
    The latest version of each such piece of work is found through the deliverable
    shards' summaries (:meth:`agent.store.layout.Catalog.chain`): an index written with
    the shards, so a page does not rewrite a file that grows with every deliverable.
    """

    def __init__(self, find: Callable[[str], dict[str, Any] | None],
                 lookup: Callable[[str], dict[str, Any] | None]) -> None:
        self.find = find  # the latest stored version of a piece of work, by chain key
        self.lookup = lookup  # a stored deliverable by id
        self.chains: dict[str, dict[str, Any]] = {}
        self.linked: dict[str, dict[str, Any]] = {}  # linked in this commit, by id

    def _chain(self, key: str) -> dict[str, Any] | None:
        if key not in self.chains:
            found = self.find(key)
            if found is None:
                return None
            self.chains[key] = dict(found)
        return self.chains[key]

    def _previous(self, deliverable_id: str) -> dict[str, Any]:
        doc = self.linked.get(deliverable_id) or self.lookup(deliverable_id) or {}
        version = doc.get("version") or 1
        return {"id": deliverable_id, "version": version,
                "root": doc.get("version_of") or deliverable_id}

    def link(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``doc`` with ``version``, ``replaces`` and ``version_of`` set (and remembered)."""
        key = chain_key(doc)
        previous: dict[str, Any] | None = None
        if doc.get("replaces_remote_id"):
            previous = self._previous("d_" + short_hash(doc["source"], doc["replaces_remote_id"]))
        elif key is not None:
            chain = self._chain(key)
            if chain is not None and chain["latest"] != doc["id"] and (
                    chain.get("latest_at") or "") <= (doc.get("received_at") or ""):
                previous = {"id": chain["latest"], "version": chain["version"],
                            "root": chain["root"]}
        version = previous["version"] + 1 if previous else 1
        root = previous["root"] if previous else doc["id"]
        doc = dict(doc, version=version, replaces=previous["id"] if previous else None,
                   version_of=root if previous else None)
        self.linked[doc["id"]] = doc
        if key is not None:
            self.chains[key] = {"key": key, "latest": doc["id"], "version": version,
                                "root": root, "latest_at": doc.get("received_at") or ""}
        return doc

    def save(self) -> None:
        """Nothing to write: the chains are derived from the deliverables as stored."""


@dataclass
class CommitResult:
    """What one committed page changed."""

    messages_new: int = 0
    messages_updated: int = 0
    deliverables_new: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    deliverables: list[dict[str, Any]] = field(default_factory=list)


class Roster:
    """The identities table in memory: who is a contractor, who a candidate."""

    def __init__(self, identities: list[dict[str, Any]], contractors: list[dict[str, Any]]) -> None:
        self.identities = {doc["key"]: doc for doc in identities}
        self.contractors = {doc["id"]: doc for doc in contractors}
        self.by_profile = {
            doc["profile_url"]: doc for doc in identities if doc.get("profile_url")
        }

    def contractor_of(self, key: str | None) -> str | None:
        if not key:
            return None
        doc = self.identities.get(key)
        if doc is None or not doc.get("contractor_id"):
            return None
        cid: str = doc["contractor_id"]
        seen = 0
        while cid in self.contractors and self.contractors[cid].get("merged_into") and seen < 10:
            cid = self.contractors[cid]["merged_into"]
            seen += 1
        return cid

    def is_contractor(self, identity: Identity) -> bool:
        return self.contractor_of(identity.key) is not None


class Store:
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
        self._lock = FileLock(str(self.data_dir / "store.lock"), timeout=LOCK_TIMEOUT, mode=0o600)
        self._shards: dict[str, Shard] = {}
        self._monthly: dict[str, Shard] = {}  # a few recently used shards
        self._catalogs: dict[str, Catalog] = {}
        self._writing = False
        self._cleaned = False
        self._dirty_files = False
        self._upgrade_layout()

    _on_disk = True  # the in-memory store keeps its shard summaries in memory only

    def _upgrade_layout(self) -> None:
        """Move a store written by an older Retainer to the current layout (once)."""
        if not any(MONTH_RE.match(p.stem) for folder in MONTHLY
                   for p in (self.root / folder).glob("*.json")):
            return
        from agent.store.migrate import upgrade

        self._acquire_lock()
        try:
            upgrade(self)
        finally:
            self._lock.release()

    def catalog(self, folder: str) -> Catalog:
        """The shards of ``messages`` or ``deliverables`` and their summaries."""
        cat = self._catalogs.get(folder)
        if cat is None:
            cat = self._catalogs[folder] = Catalog(
                folder, self.root / folder, self._index_dirs[folder],
                lambda name: self.read_shard(folder, name), disk=self._on_disk)
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

    def month_shard(self, month: str) -> Shard:
        return self.monthly_shard("messages", month)

    def shard_names(self, folder: str) -> list[str]:
        """The shards of ``folder``, oldest first."""
        return self.catalog(folder).names()

    def month_names(self) -> list[str]:
        return self.shard_names("messages")

    def read_shard(self, folder: str, month: str) -> Shard:
        """A shard for one pass of reading (not cached, so listings stay small in memory)."""
        relative = f"{folder}/{month}.json"
        return self._monthly.get(relative) or Shard(self.root / relative)

    def scratch_dir(self, source: str) -> Path:
        """An empty folder for one source's downloads in progress (same filesystem as files/).

        Emptied here, at the start of each sync of that source (the caller holds the
        source's sync lock), so what a killed sync left behind is removed.
        """
        folder = ensure_private_dir(self.tmp_dir / sanitize_filename(source))
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
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
        try:
            self._lock.acquire()
        except Timeout:
            raise StoreLocked(
                f"another Retainer process has been writing to {self.data_dir} for "
                f"{LOCK_TIMEOUT:.0f} s; wait for it to finish, or stop it"
            ) from None

    @contextmanager
    def writing(self) -> Iterator[Store]:
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
        for folder in MONTHLY:
            removed += remove_orphan_temps(self.root / folder)
            removed += remove_orphan_temps(self._index_dirs[folder])
        for entry in self.tmp_dir.iterdir():
            if entry.is_file():
                entry.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("removed %d temporary files left by an interrupted run", removed)
        self._cleaned = True

    def _ensure_schema(self) -> None:
        meta = self.meta.get("meta", "schema", key="name")
        if meta is None or meta.get("version", 0) < SCHEMA_VERSION:
            # new, or older but holding no month shards (_upgrade_layout moved any)
            self.meta.upsert_many("meta", [{"name": "schema", "version": SCHEMA_VERSION}], "name")
        elif meta.get("version", 0) > SCHEMA_VERSION:
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

    # -- roster -------------------------------------------------------------------------

    def roster(self) -> Roster:
        return Roster(self.roster_shard.docs("identities"), self.roster_shard.docs("contractors"))

    def contractors(self, *, include_merged: bool = False) -> list[dict[str, Any]]:
        docs = self.roster_shard.docs("contractors")
        return [d for d in docs if include_merged or not d.get("merged_into")]

    def identities(self) -> list[dict[str, Any]]:
        return self.roster_shard.docs("identities")

    def candidates(self) -> list[dict[str, Any]]:
        return [d for d in self.identities() if not d.get("contractor_id")]

    def find_contractor(self, ref: str) -> dict[str, Any]:
        """Find a contractor by id (or unique id prefix), exact name, or identity."""
        ref_l = ref.strip().lower()
        docs = self.contractors()
        roster = self.roster()
        for key in (ref_l, f"email:{ref_l}"):
            cid = roster.contractor_of(key)
            if cid and cid in roster.contractors:
                return roster.contractors[cid]
        exact = [d for d in docs if d["id"] == ref_l or d["name"].lower() == ref_l]
        if len(exact) == 1:
            return exact[0]
        prefix = [d for d in docs if d["id"].startswith(ref_l) or d["id"][2:].startswith(ref_l)]
        if len(prefix) == 1:
            return prefix[0]
        if not exact and not prefix:
            raise StoreError(f'no contractor matches "{ref}"; see `retainer contractors`')
        names = ", ".join(f"{d['name']} ({d['id']})" for d in (exact or prefix)[:5])
        raise StoreError(f'"{ref}" matches several contractors: {names}; use the id')

    def add_contractor(
        self,
        name: str,
        identities: Sequence[Identity] = (),
        *,
        status: str = "trial",
        skills: Sequence[str] = (),
        rate: float | None = None,
        currency: str = "USD",
        notes: str = "",
    ) -> dict[str, Any]:
        """Create a contractor (or extend the one that already owns an identity)."""
        if status not in CONTRACTOR_STATUSES:
            raise StoreError(f"status must be one of {', '.join(CONTRACTOR_STATUSES)}")
        roster = self.roster()
        owner_id = next((roster.contractor_of(i.key) for i in identities
                         if roster.contractor_of(i.key)), None)
        stamp = iso(now_utc())
        if owner_id:
            doc = dict(roster.contractors[owner_id])
            doc["skills"] = sorted(set(doc.get("skills", [])) | set(skills))
        else:
            seed = identities[0].key if identities else f"name:{name.lower()}"
            doc = {
                "id": "c_" + short_hash(seed)[:10], "name": name, "status": status,
                "skills": sorted(set(skills)), "rate": rate, "currency": currency,
                "notes": notes, "identities": [], "created_at": stamp,
                "status_changed_at": stamp, "merged_into": None,
            }
        ident_docs = []
        promoted = []
        for identity in identities:
            current = roster.identities.get(identity.key, {})
            if current.get("first_seen") and not current.get("contractor_id"):
                promoted.append(identity.key)  # seen before: their earlier files wait
            ident_docs.append(self._identity_doc(identity, current, doc["id"]))
            if identity.key not in doc["identities"]:
                doc["identities"] = [*doc["identities"], identity.key]
        self.roster_shard.upsert_many("contractors", [doc])
        if ident_docs:
            self.roster_shard.upsert_many("identities", ident_docs, "key")
        if promoted:
            self.mark_backfill(promoted)
        return doc

    # -- promotion backfill -------------------------------------------------------------

    def mark_backfill(self, keys: Sequence[str]) -> None:
        """Ask every source to fetch again the files these (newly promoted) identities
        sent before; :meth:`backfill_locators` lists them, the next sync fetches them."""
        for source, state in self.source_states().items():
            pending = sorted(set(state.get("backfill") or []) | set(keys))
            self.update_source_state(source, backfill=pending)

    def backfill_locators(self, source: str) -> list[dict[str, Any]]:
        """The ``extra`` of this source's messages from identities waiting for a backfill
        whose files were recorded but not downloaded (oldest first), each with
        ``"stored"``: the message's remote id, thread, subject and recipients as stored
        (what a marketplace connector needs to read that one message again)."""
        keys = set(self.source_state(source).get("backfill") or [])
        if not keys:
            return []
        found: list[tuple[str, dict[str, Any]]] = []
        for doc in self.iter_messages():
            if doc.get("source") != source or doc.get("identity") not in keys:
                continue
            if any(a.get("status") == "not_downloaded" and not a.get("inline")
                   for a in doc.get("attachments") or ()):
                stored = {k: doc.get(k) for k in ("remote_id", "thread_remote_id", "subject",
                                                  "recipients")}
                found.append((doc.get("sent_at") or "", {**(doc.get("extra") or {}),
                                                         "stored": stored}))
        return [extra for _, extra in sorted(found, key=lambda item: item[0])]

    def _identity_doc(self, identity: Identity, current: dict[str, Any],
                      contractor_id: str | None) -> dict[str, Any]:
        doc = dict(current) if current else {
            "key": identity.key, "platform": identity.platform,
            "address": identity.address.strip().lower(), "name": identity.name,
            "profile_url": identity.profile_url, "first_seen": None, "last_seen": None,
        }
        doc["contractor_id"] = contractor_id
        if identity.name and not doc.get("name"):
            doc["name"] = identity.name
        if identity.profile_url:
            doc["profile_url"] = identity.profile_url
        return doc

    def update_contractor(self, contractor_id: str, **changes: Any) -> dict[str, Any]:
        doc = dict(self.find_contractor(contractor_id))
        if "status" in changes:
            if changes["status"] not in CONTRACTOR_STATUSES:
                raise StoreError(f"status must be one of {', '.join(CONTRACTOR_STATUSES)}")
            if changes["status"] != doc["status"]:
                doc["status_changed_at"] = iso(now_utc())
        doc.update(json_safe(changes))
        self.roster_shard.upsert_many("contractors", [doc])
        return doc

    def demote(self, ref: str) -> dict[str, Any]:
        """Turn a contractor back into candidates (their identities stay, unlinked)."""
        doc = self.find_contractor(ref)
        roster = self.roster()
        idents = [dict(roster.identities[k], contractor_id=None)
                  for k in doc.get("identities", []) if k in roster.identities]
        if idents:
            self.roster_shard.upsert_many("identities", idents, "key")
        self.roster_shard.remove("contractors", [doc["id"]])
        return doc

    def merge_contractors(self, keep_ref: str, other_ref: str) -> dict[str, Any]:
        """Merge ``other`` into ``keep``: identities, skills and history follow."""
        keep = dict(self.find_contractor(keep_ref))
        other = dict(self.find_contractor(other_ref))
        if keep["id"] == other["id"]:
            raise StoreError("those are the same contractor")
        roster = self.roster()
        moved = [dict(roster.identities[k], contractor_id=keep["id"])
                 for k in other.get("identities", []) if k in roster.identities]
        keep["identities"] = sorted(set(keep["identities"]) | set(other.get("identities", [])))
        keep["skills"] = sorted(set(keep.get("skills", [])) | set(other.get("skills", [])))
        if keep.get("rate") is None:
            keep["rate"] = other.get("rate")
        other["merged_into"] = keep["id"]
        other["identities"] = []
        self.roster_shard.upsert_many("identities", moved, "key")
        self.roster_shard.upsert_many("contractors", [keep, other])
        return keep

    def seed_contractors(self, seeds: Iterable[Any]) -> None:
        """Make sure every contractor from the config exists (the store stays the truth)."""
        roster = self.roster()
        for seed in seeds:
            idents = [Identity("email", e) for e in seed.emails]
            idents += [Identity(p, uid) for p, uid in seed.identities.items()]
            known = [i for i in idents if roster.contractor_of(i.key)]
            if known and len(known) == len(idents):
                continue
            self.add_contractor(seed.name, idents, status=seed.status, skills=seed.skills,
                                rate=seed.rate, currency=seed.currency, notes=seed.notes)
            roster = self.roster()

    # -- the write path ----------------------------------------------------------------

    def commit_page(
        self,
        source: str,
        platform: str,
        records: Sequence[Record],
        *,
        owner_keys: frozenset[str] = frozenset(),
    ) -> CommitResult:
        """Store one page of records: blobs, then deliverables, messages and threads.

        Idempotent: storing the same records again changes nothing. The caller commits the
        cursor only after this returns.
        """
        with batched_dir_sync():
            return self._commit_page(source, platform, records, owner_keys)

    def _commit_page(self, source: str, platform: str, records: Sequence[Record],
                     owner_keys: frozenset[str]) -> CommitResult:
        result = CommitResult()
        roster = self.roster()
        identity_updates: dict[str, dict[str, Any]] = {}
        contractor_updates: dict[str, dict[str, Any]] = {}
        messages_by_month: dict[str, list[dict[str, Any]]] = {}
        threads: dict[str, dict[str, dict[str, Any]]] = {}  # month -> thread id -> doc
        deliverables: list[dict[str, Any]] = []
        contracts: list[dict[str, Any]] = []

        def touch(identity: Identity, when: datetime | None, *, hire: bool = False) -> str | None:
            key = identity.key
            if key in owner_keys:
                return None
            doc = identity_updates.get(key) or dict(roster.identities.get(key) or {})
            if not doc:
                doc = self._identity_doc(identity, {}, None)
                linked = roster.by_profile.get(identity.profile_url) if identity.profile_url else None
                if linked is None and identity.platform != "email" and "@" in identity.address:
                    linked = roster.identities.get(f"email:{identity.address.lower()}")
                if linked and linked.get("contractor_id"):
                    doc["contractor_id"] = linked["contractor_id"]
                    self._link(roster, contractor_updates, linked["contractor_id"], key)
            if hire and not doc.get("contractor_id"):
                cid = "c_" + short_hash(key)[:10]
                doc["contractor_id"] = cid
                if cid not in roster.contractors:
                    stamp = iso(now_utc())
                    roster.contractors[cid] = {
                        "id": cid, "name": identity.name or identity.address, "status": "trial",
                        "skills": [], "rate": None, "currency": "USD", "notes": "",
                        "identities": [], "created_at": stamp, "status_changed_at": stamp,
                        "merged_into": None,
                    }
                self._link(roster, contractor_updates, cid, key)
            stamp = iso(when)
            if stamp and (not doc.get("first_seen") or stamp < doc["first_seen"]):
                doc["first_seen"] = stamp
            if stamp and (not doc.get("last_seen") or stamp > doc["last_seen"]):
                doc["last_seen"] = stamp
            identity_updates[key] = doc
            roster.identities[key] = doc
            return key

        for record in records:
            if isinstance(record, Message):
                self._stage_message(source, platform, record, owner_keys, touch, roster,
                                    messages_by_month, threads, deliverables)
            elif isinstance(record, Submission):
                key = touch(record.contractor, record.submitted_at)
                if (key and roster.contractor_of(key) is None
                        and record.under_contract is not False):
                    if record.under_contract is None:
                        _warn_unstated_contract(source, record)
                    key = touch(record.contractor, record.submitted_at, hire=True)
                thread_id = (thread_id_for(source, record.thread_remote_id)
                             if record.thread_remote_id else None)
                announced = (message_id_for(source, record.message_remote_id)
                             if record.message_remote_id else None)
                att = record.attachment
                if roster.contractor_of(key) is None and att.status == "stored":
                    # not a contractor: the work is recorded, its file is not kept
                    att = dataclasses.replace(att, data=None, path=None, status="not_downloaded")
                deliverables.append(self._deliverable_doc(
                    source, record.platform or platform, record.remote_id, announced,
                    thread_id, key, roster,
                    att, record.submitted_at, record.title,
                    extra={"contract_remote_id": record.contract_remote_id, **record.extra},
                    replaces=record.replaces or att.replaces))
            elif isinstance(record, Contract):
                key = touch(record.contractor, record.started_at, hire=True)
                contracts.append(self._contract_doc(source, platform, record, key))
            else:
                raise StoreError(f"{source}: a connector yielded {type(record).__name__}, "
                                 "which is not a Message, Submission or Contract")

        # blobs were written while staging; make their names durable, then the documents
        if self._dirty_files:
            fsync_dir(self.files_dir)
            self._dirty_files = False
        if messages_by_month:
            self._upsert_messages([d for docs in messages_by_month.values() for d in docs],
                                  threads, result)
        if deliverables:
            result.deliverables = self._upsert_deliverables(deliverables)
            result.deliverables_new = len(result.deliverables)
        if contracts:
            self.contracts_shard.upsert_many("contracts", contracts)
        if contractor_updates:
            self.roster_shard.upsert_many("contractors", list(contractor_updates.values()))
        if identity_updates:
            self.roster_shard.upsert_many("identities", list(identity_updates.values()), "key")
        return result

    def _link(self, roster: Roster, updates: dict[str, dict[str, Any]], cid: str, key: str) -> None:
        doc = updates.get(cid) or dict(roster.contractors[cid])
        if key not in doc["identities"]:
            doc["identities"] = [*doc["identities"], key]
        updates[cid] = doc
        roster.contractors[cid] = doc

    def _stage_message(self, source: str, platform: str, record: Message,
                       owner_keys: frozenset[str], touch: Any, roster: Roster,
                       by_month: dict[str, list[dict[str, Any]]],
                       threads: dict[str, dict[str, dict[str, Any]]],
                       deliverables: list[dict[str, Any]]) -> None:
        msg_platform = record.platform or platform
        sender = record.sender
        direction = record.direction or ("out" if sender.key in owner_keys else "in")
        if direction == "in":
            # mail a notification format kept as it came ("system") names no person
            counterpart: Identity | None = None if record.extra.get("system") else sender
        else:
            others = [r for r in record.recipients if r.key not in owner_keys]
            known = [r for r in others if roster.contractor_of(r.key)]
            candidates = known or others
            counterpart = candidates[0] if candidates else None
        hire = direction == "in" and record.under_contract is True
        key = touch(counterpart, record.sent_at, hire=hire) if counterpart is not None else None
        contractor_id = roster.contractor_of(key)
        sent = iso(record.sent_at) or ""
        remote_id = self._stored_remote_id(source, record, sent)
        message_id = message_id_for(source, remote_id)
        thread_remote = record.thread_remote_id or remote_id
        thread_id = thread_id_for(source, thread_remote)
        attachments = []
        for index, att in enumerate(record.attachments):
            entry: dict[str, Any] = {
                "filename": sanitize_filename(att.filename),
                "content_type": att.content_type, "size": att.size, "status": att.status,
                "inline": att.inline,
            }
            wanted = (direction == "in" and contractor_id is not None and not att.inline
                      and att.status in DELIVERABLE_STATUSES)
            if wanted:
                doc = self._deliverable_doc(
                    source, msg_platform, f"{remote_id}#{att.remote_id or index}",
                    message_id, thread_id, key, roster, att, record.sent_at, record.subject,
                    replaces=att.replaces)
                if not record.extra.get("backfill"):
                    _handled_before(doc, self.review_since())
                entry["deliverable_id"] = doc["id"]
                entry["sha256"] = doc["sha256"]
                deliverables.append(doc)
            attachments.append(entry)
        doc = {
            "id": message_id, "source": source, "platform": msg_platform,
            "remote_id": remote_id, "thread_id": thread_id,
            "thread_remote_id": thread_remote, "contractor_id": contractor_id,
            "identity": key, "direction": direction, "sent_at": sent,
            "subject": record.subject, "text": record.text,
            "sender": {"address": sender.address, "name": sender.name,
                       "platform": sender.platform},
            "recipients": [{"address": r.address, "name": r.name} for r in record.recipients],
            "attachments": attachments, "extra": json_safe(dict(record.extra)) if record.extra else {},
        }
        by_month.setdefault(sent[:7] or "0000-00", []).append(doc)
        month_threads = threads.setdefault(sent[:7] or "0000-00", {})
        thread = month_threads.get(thread_id) or {
            "id": thread_id, "source": source, "platform": msg_platform,
            "remote_id": thread_remote, "subject": record.subject, "identity": key,
            "first_at": sent, "last_at": sent,
        }
        thread["first_at"] = min(thread["first_at"], sent)
        thread["last_at"] = max(thread["last_at"], sent)
        if key and not thread.get("identity"):
            thread["identity"] = key
        month_threads[thread_id] = thread

    def _stored_remote_id(self, source: str, record: Message, sent: str) -> str:
        """The id a message already has in this store: mail stored before ids named more
        than the Message-ID (``extra["legacy_remote_id"]``, or lacking one the header
        hashes of ``extra["legacy_header_ids"]``) keeps its old id, or the one the
        upgrade gave it when another message had that id (``migrate.repaired_remote_id``),
        so its deliverables and their reviews stay as they are."""
        from agent.store.migrate import repaired_remote_id

        legacy = record.extra.get("legacy_remote_id")
        headers = record.extra.get("legacy_header_ids")
        candidates: list[str] = []
        if isinstance(legacy, str) and legacy and legacy != record.remote_id:
            candidates = [legacy, repaired_remote_id(legacy, sent, record.sender.address)]
        elif isinstance(headers, list):
            candidates = [h for h in headers if isinstance(h, str) and h != record.remote_id]
        for candidate in candidates:
            old = self.stored_message(message_id_for(source, candidate))
            if old is None or old.get("remote_id") != candidate:
                continue
            if candidate == legacy and (  # a header hash already names date and sender
                    old.get("sent_at") != sent
                    or (old.get("sender") or {}).get("address") != record.sender.address):
                continue
            # the same message only if every file it brings is one the old record stored
            stored = {a.get("sha256") for a in old.get("attachments") or () if a.get("sha256")}
            if any(att.status == "stored" and att.data is not None
                   and hashlib.sha256(att.data).hexdigest() not in stored
                   for att in (record.attachments if stored else ())):
                continue
            return candidate
        return record.remote_id

    def _deliverable_doc(self, source: str, platform: str, remote_id: str,
                         message_id: str | None, thread_id: str | None, key: str | None,
                         roster: Roster, att: Attachment, when: datetime,
                         title: str, extra: dict[str, Any] | None = None,
                         replaces: str = "") -> dict[str, Any]:
        filename = sanitize_filename(att.filename)
        sha, path, size = None, None, att.size
        if att.status == "stored":
            sha, path, size = self._store_blob(att, filename)
        status = att.status
        return _doc({
            "id": "d_" + short_hash(source, remote_id), "source": source, "platform": platform,
            "remote_id": remote_id, "message_id": message_id, "thread_id": thread_id,
            "contractor_id": roster.contractor_of(key), "identity": key,
            "filename": filename, "content_type": att.content_type, "size": size,
            "sha256": sha, "path": path, "url": att.url, "status": status,
            "flagged": status in ("too_large", "unavailable"), "note": att.note, "title": title,
            "received_at": iso(when), "review_status": "unreviewed", "review": None,
            "extra": extra or {}, "work": work_stem(att.filename),
            "replaces_remote_id": replaces or None,
        })

    def _store_blob(self, att: Attachment, filename: str) -> tuple[str, str, int]:
        """Write (or find) the file for an attachment; return sha256, path and size."""
        suffix = Path(filename).suffix.lower()
        if not (1 < len(suffix) <= 10 and suffix[1:].isalnum()):
            suffix = ""
        digest = hashlib.sha256()
        if att.data is not None:
            digest.update(att.data)
            size = len(att.data)
        elif att.path is not None:
            size = 0
            with open(att.path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
                    size += len(chunk)
        else:
            raise StoreError(f"attachment {filename!r} is marked stored but has no data")
        sha = digest.hexdigest()
        folder = self.files_dir
        target = folder / f"{sha}{suffix}"
        if not target.exists():
            tmp = self.tmp_dir / f".tmp-{sha}"
            try:
                if att.data is not None:
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    with os.fdopen(fd, "wb") as handle:
                        handle.write(att.data)
                        handle.flush()
                        os.fsync(handle.fileno())
                else:
                    assert att.path is not None
                    shutil.copyfile(att.path, tmp)
                    os.chmod(tmp, 0o600)
                    fd2 = os.open(tmp, os.O_RDONLY)
                    try:
                        os.fsync(fd2)
                    finally:
                        os.close(fd2)
                os.replace(tmp, target)
            except OSError as exc:  # disk full: a domain error, and no half file left
                tmp.unlink(missing_ok=True)
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise NoSpace(f"no space left in {self.data_dir} (writing {filename!r}); "
                                  "free some disk space: the next sync goes on from the "
                                  "last committed page") from None
                raise StoreError(f"could not store {filename!r} in {folder}: {exc.strerror}; "
                                 "free some disk space and sync again") from None
            self._dirty_files = True
        return sha, str(target), size

    def _placed(self, folder: str, docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """Documents grouped by the shard each goes to: the one it is stored in, else the
        open shard (a new one once that is full)."""
        cat = self.catalog(folder)
        cat.will_write()
        seen: dict[str, str] = {}
        out: dict[str, list[dict[str, Any]]] = {}
        for doc in docs:
            name = seen.get(doc["id"]) or cat.where(doc["id"]) or cat.place(doc)
            seen[doc["id"]] = name
            out.setdefault(name, []).append(doc)
        return out

    def _upsert_messages(self, docs: list[dict[str, Any]],
                         threads: dict[str, dict[str, dict[str, Any]]],
                         result: CommitResult) -> None:
        """Write a page's messages and their thread entries: one write per shard touched.

        Threads are kept per shard beside their messages: one entry per thread and shard
        it has messages in, merged when read (:meth:`threads`)."""
        cat = self.catalog("messages")
        for name, shard_docs in self._placed("messages", docs).items():
            shard = self.monthly_shard("messages", name)
            known = shard.key_map("messages")
            fresh = list({d["id"]: d for d in shard_docs if d["id"] not in known}.values())
            entries: dict[str, dict[str, Any]] = {}
            for doc in shard_docs:
                sent, tid = doc["sent_at"], doc["thread_id"]
                entry = entries.get(tid)
                if entry is None:
                    base = threads.get(sent[:7] or "0000-00", {}).get(tid) or {}
                    entry = entries[tid] = dict(base, first_at=sent, last_at=sent)
                entry["first_at"] = min(entry["first_at"], sent)
                entry["last_at"] = max(entry["last_at"], sent)
            thread_docs = []
            for doc in entries.values():
                current = shard.get("threads", doc["id"])
                if current is not None:
                    doc = dict(current, first_at=min(current["first_at"], doc["first_at"]),
                               last_at=max(current["last_at"], doc["last_at"]),
                               identity=current.get("identity") or doc.get("identity"))
                thread_docs.append(doc)
            (new, updated), _ = shard.upsert_tables([("messages", shard_docs, "id"),
                                                     ("threads", thread_docs, "id")])
            cat.written(name, shard)
            result.messages_new += new
            result.messages_updated += updated
            result.messages.extend(fresh)

    def _upsert_deliverables(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        fresh: list[dict[str, Any]] = []
        cat = self.catalog("deliverables")
        versions = Versions(cat.chain, self.stored_deliverable)
        ordered = sorted(docs, key=lambda d: d.get("received_at") or "")
        for month, month_docs in self._placed("deliverables", ordered).items():
            shard = self.monthly_shard("deliverables", month)
            merged: list[dict[str, Any]] = []
            for doc in month_docs:
                current = shard.get("deliverables", doc["id"])
                if current is not None:
                    # re-fetched: keep everything the owner did (review, notes)
                    doc = {**doc, "review_status": current.get("review_status", "unreviewed"),
                           "review": current.get("review"),
                           **{k: v for k, v in current.items() if k not in doc}}
                elif all(d["id"] != doc["id"] for d in fresh):
                    doc = versions.link(doc)
                    fresh.append(doc)
                merged.append(doc)
            if shard.upsert_many("deliverables", merged) != (0, 0):
                cat.written(month, shard)
        versions.save()
        return fresh

    def save_deliverables(self, docs: list[dict[str, Any]]) -> None:
        """Write back deliverable documents changed by the owner's workflow (reviews)."""
        cat = self.catalog("deliverables")
        for name, shard_docs in self._placed("deliverables", docs).items():
            shard = self.monthly_shard("deliverables", name)
            if shard.upsert_many("deliverables", shard_docs) != (0, 0):
                cat.written(name, shard)

    def stored_deliverable(self, deliverable_id: str) -> dict[str, Any] | None:
        """The stored document of one deliverable, by exact id (no contractor resolution)."""
        name = self._fresh("deliverables").where(deliverable_id)
        if name is None:
            return None
        return self.read_shard("deliverables", name).get("deliverables", deliverable_id)

    def stored_message(self, message_id: str) -> dict[str, Any] | None:
        """The stored document of one message, by exact id (do not mutate)."""
        name = self._fresh("messages").where(message_id)
        if name is None:
            return None
        return self.read_shard("messages", name).get("messages", message_id)

    def iter_deliverables(self, shards: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every stored deliverable document as stored (of ``shards``), newest shard first."""
        names = self.shard_names("deliverables") if shards is None else list(shards)
        for name in reversed(names):
            yield from self.read_shard("deliverables", name).docs("deliverables")

    def _contract_doc(self, source: str, platform: str, record: Contract, key: str | None
                      ) -> dict[str, Any]:
        return _doc({
            "id": "k_" + short_hash(source, record.remote_id), "source": source,
            "platform": platform, "remote_id": record.remote_id, "identity": key,
            "title": record.title, "status": record.status, "kind": record.kind,
            "started_at": record.started_at, "ended_at": record.ended_at,
            "rate": record.rate, "budget": record.budget, "spent": record.spent,
            "currency": record.currency,
            "thread_id": (thread_id_for(source, record.thread_remote_id)
                          if record.thread_remote_id else None),
            "extra": dict(record.extra),
        })

    # -- reads ----------------------------------------------------------------------------

    def iter_messages(self) -> Iterator[dict[str, Any]]:
        """Every stored message, newest shard first, with its contractor resolved."""
        roster = self.roster()
        for month in reversed(self.month_names()):
            for doc in self.read_shard("messages", month).docs("messages"):
                yield dict(doc, contractor_id=roster.contractor_of(doc.get("identity")))

    def messages(self, *, contractor: str | None = None, source: str | None = None
                 ) -> list[dict[str, Any]]:
        return list(self.iter_messages_newest_first(contractor=contractor, source=source))

    def iter_messages_newest_first(self, *, contractor: str | None = None,
                                   source: str | None = None) -> Iterator[dict[str, Any]]:
        """Messages newest first, one month in memory at a time (for big listings).

        An unknown ``contractor`` raises at once, before anything is yielded.
        """
        cid = self.find_contractor(contractor)["id"] if contractor else None
        return self._newest_first(cid, source)

    def _identities_of(self, roster: Roster, cid: str) -> set[str]:
        return {key for key in roster.identities if roster.contractor_of(key) == cid}

    def _newest_first(self, cid: str | None, source: str | None) -> Iterator[dict[str, Any]]:
        """Shards are read in order of their newest message; what is buffered is only the
        messages of shards whose time ranges overlap."""
        roster = self.roster()
        cat = self.catalog("messages")
        names = cat.names()
        keys = self._identities_of(roster, cid) if cid is not None else set()
        wanted = [n for n in names
                  if (source is None or source in cat.shards[n]["sources"])
                  and (cid is None or not keys.isdisjoint(cat.shards[n]["identities"]))]
        wanted.sort(key=lambda n: cat.shards[n]["last"], reverse=True)

        def sent(doc: dict[str, Any]) -> str:
            stamp: str = doc["sent_at"]
            return stamp

        buffer: list[dict[str, Any]] = []
        for pos, name in enumerate(wanted):
            for doc in self.read_shard("messages", name).docs("messages"):
                if source is not None and doc["source"] != source:
                    continue
                resolved = roster.contractor_of(doc.get("identity"))
                if cid is None or resolved == cid:
                    buffer.append(dict(doc, contractor_id=resolved))
            buffer.sort(key=sent, reverse=True)
            following = cat.shards[wanted[pos + 1]]["last"] if pos + 1 < len(wanted) else None
            cut = len(buffer)
            if following is not None:  # later shards may still hold messages this new
                cut = next((i for i, d in enumerate(buffer) if d["sent_at"] <= following),
                           len(buffer))
            yield from buffer[:cut]
            del buffer[:cut]

    def deliverables(self, *, unreviewed: bool = False, contractor: str | None = None
                     ) -> list[dict[str, Any]]:
        roster = self.roster()
        cid = self.find_contractor(contractor)["id"] if contractor else None
        cat = self.catalog("deliverables")
        keys = self._identities_of(roster, cid) if cid is not None else set()
        shards = [n for n in cat.names()
                  if (not unreviewed or cat.shards[n]["unreviewed"])
                  and (cid is None or cid in cat.shards[n]["contractors"]
                       or not keys.isdisjoint(cat.shards[n]["identities"]))]
        out = []
        for doc in self.iter_deliverables(shards):
            if unreviewed and doc.get("review_status") != "unreviewed":
                continue
            resolved = roster.contractor_of(doc.get("identity")) or doc.get("contractor_id")
            if cid is not None and resolved != cid:
                continue
            out.append(dict(doc, contractor_id=resolved))
        out.sort(key=lambda d: d.get("received_at") or "")
        return out

    def deliverable(self, ref: str) -> dict[str, Any]:
        found = [i for i in self._fresh("deliverables").ids()
                 if i == ref or i.startswith(ref) or i[2:].startswith(ref)]
        doc = self.stored_deliverable(found[0]) if len(set(found)) == 1 else None
        if doc is None:
            what = "no deliverable" if not found else "several deliverables"
            raise StoreError(f'{what} match "{ref}"; see `retainer deliverables`')
        return doc

    def update_deliverable(self, deliverable_id: str, **changes: Any) -> dict[str, Any]:
        doc = dict(self.deliverable(deliverable_id), **json_safe(changes))
        self.save_deliverables([doc])
        return doc

    def contracts(self) -> list[dict[str, Any]]:
        return self.contracts_shard.docs("contracts")

    def threads(self, source: str | None = None) -> list[dict[str, Any]]:
        """Threads (of one source), their per-shard entries merged, most recent first."""
        merged: dict[str, dict[str, Any]] = {}
        cat = self.catalog("messages")
        for month in cat.names():
            for doc in cat.threads(month).values():
                if source is not None and doc["source"] != source:
                    continue
                seen = merged.get(doc["id"])
                if seen is None:
                    merged[doc["id"]] = dict(doc)
                else:
                    seen["last_at"] = max(seen["last_at"], doc["last_at"])
                    seen["identity"] = seen.get("identity") or doc.get("identity")
        return sorted(merged.values(), key=lambda d: d["last_at"], reverse=True)

    def source_counts(self) -> dict[str, dict[str, int]]:
        """Messages and deliverables per source, counted in what is committed."""
        from agent.store.counts import committed_counts

        return committed_counts(self)

    def stored_counts(self) -> dict[str, int]:
        """How many messages and deliverables the shards hold, from their summaries
        (no shard is opened)."""
        out = {}
        for folder in MONTHLY:
            cat = self.catalog(folder)
            out[folder] = sum(cat.shards[name]["count"] for name in cat.names())
        return out

    def thread_shards(self, thread_id: str) -> list[str]:
        """The message shards holding messages of one thread, oldest first."""
        cat = self.catalog("messages")
        return [n for n in cat.names() if thread_id in cat.threads(n)]

    def counts(self) -> dict[str, int]:
        per_source = self.source_counts().values()
        return {
            "messages": sum(c["messages"] for c in per_source),
            "deliverables": sum(c["deliverables"] for c in per_source),
            "contractors": len(self.contractors()),
            "candidates": len(self.candidates()),
        }
