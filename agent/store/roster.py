"""The roster: who is a contractor, who a candidate, and the rules that change it.

``store/roster.json`` holds two tables: ``identities`` (one per address or platform
account a message or file came from, keyed ``platform:address``) and ``contractors``
(the people the owner works with, each owning some identities). An identity without a
contractor is a candidate. Merging keeps the merged contractor as a pointer
(``merged_into``) so old references still resolve.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from agent.errors import StoreError
from agent.models import CONTRACTOR_STATUSES, ContractorRecord, Identity, IdentityRecord
from agent.store.documents import now_utc
from agent.store.folder import StoreFolder
from agent.store.ids import contractor_id_for
from agent.store.storage import iso, json_safe

MERGE_HOPS = 10  # how many ``merged_into`` pointers are followed, at most


def check_status(status: str) -> None:
    if status not in CONTRACTOR_STATUSES:
        raise StoreError(f"status must be one of {', '.join(CONTRACTOR_STATUSES)}")


def new_contractor(cid: str, name: str, stamp: str | None, *, status: str = "trial",
                   skills: Iterable[str] = (), rate: float | None = None,
                   currency: str = "USD", notes: str = "") -> ContractorRecord:
    """A contractor document owning no identity yet."""
    return {
        "id": cid, "name": name, "status": status, "skills": sorted(set(skills)),
        "rate": rate, "currency": currency, "notes": notes, "identities": [],
        "created_at": stamp, "status_changed_at": stamp, "merged_into": None,
    }


def identity_doc(identity: Identity, current: IdentityRecord | None,
                 contractor_id: str | None) -> IdentityRecord:
    """The stored identity (``current``, or a new one) owned by ``contractor_id``."""
    doc: IdentityRecord = current.copy() if current else {
        "key": identity.key, "platform": identity.platform,
        "address": identity.address.strip().lower(), "name": identity.name,
        "profile_url": identity.profile_url, "first_seen": None, "last_seen": None,
        "contractor_id": None,
    }
    doc["contractor_id"] = contractor_id
    if identity.name and not doc.get("name"):
        doc["name"] = identity.name
    if identity.profile_url:
        doc["profile_url"] = identity.profile_url
    return doc


def seen_at(doc: IdentityRecord, stamp: str | None) -> None:
    """Stretch an identity's first and last seen times over ``stamp``."""
    first, last = doc.get("first_seen"), doc.get("last_seen")
    if stamp and (not first or stamp < first):
        doc["first_seen"] = stamp
    if stamp and (not last or stamp > last):
        doc["last_seen"] = stamp


class Roster:
    """The identities table in memory: who is a contractor, who a candidate."""

    def __init__(self, identities: list[IdentityRecord], contractors: list[ContractorRecord]
                 ) -> None:
        self.identities = {doc["key"]: doc for doc in identities}
        self.contractors = {doc["id"]: doc for doc in contractors}
        self.by_profile = {
            doc["profile_url"]: doc for doc in identities if doc.get("profile_url")
        }

    def contractor_of(self, key: str | None) -> str | None:
        if not key:
            return None
        doc = self.identities.get(key)
        cid = doc.get("contractor_id") if doc is not None else None
        if not cid:
            return None
        seen = 0
        while cid in self.contractors and seen < MERGE_HOPS:
            merged_into = self.contractors[cid].get("merged_into")
            if not merged_into:
                break
            cid = merged_into
            seen += 1
        return cid

    def is_contractor(self, identity: Identity) -> bool:
        return self.contractor_of(identity.key) is not None

    def identities_of(self, cid: str) -> set[str]:
        """The identity keys that resolve to contractor ``cid``."""
        return {key for key in self.identities if self.contractor_of(key) == cid}

    def link(self, cid: str, key: str) -> ContractorRecord:
        """Contractor ``cid`` with identity ``key`` among theirs (a copy if it changed)."""
        doc = self.contractors[cid]
        if key not in doc["identities"]:
            doc = doc.copy()
            doc["identities"] = [*doc["identities"], key]
        self.contractors[cid] = doc
        return doc

    def find(self, ref: str) -> ContractorRecord:
        """A contractor by id (or unique id prefix), exact name, or identity."""
        ref_l = ref.strip().lower()
        for key in (ref_l, f"email:{ref_l}"):
            cid = self.contractor_of(key)
            if cid and cid in self.contractors:
                return self.contractors[cid]
        docs = [d for d in self.contractors.values() if not d.get("merged_into")]
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


class RosterStore(StoreFolder):
    """The store's roster operations (``roster.json``); writers hold :meth:`writing`."""

    def roster(self) -> Roster:
        return Roster(self.identities(), self.contractors(include_merged=True))

    def contractors(self, *, include_merged: bool = False) -> list[ContractorRecord]:
        docs = cast("list[ContractorRecord]", self.roster_shard.docs("contractors"))
        return [d for d in docs if include_merged or not d.get("merged_into")]

    def identities(self) -> list[IdentityRecord]:
        return cast("list[IdentityRecord]", self.roster_shard.docs("identities"))

    def candidates(self) -> list[IdentityRecord]:
        return [d for d in self.identities() if not d.get("contractor_id")]

    def find_contractor(self, ref: str) -> ContractorRecord:
        """Find a contractor by id (or unique id prefix), exact name, or identity."""
        return self.roster().find(ref)

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
    ) -> ContractorRecord:
        """Create a contractor (or extend the one that already owns an identity)."""
        check_status(status)
        roster = self.roster()
        owner_id = next((roster.contractor_of(i.key) for i in identities
                         if roster.contractor_of(i.key)), None)
        if owner_id:
            doc = roster.contractors[owner_id].copy()
            doc["skills"] = sorted(set(doc.get("skills") or []) | set(skills))
        else:
            seed = identities[0].key if identities else f"name:{name.lower()}"
            doc = new_contractor(contractor_id_for(seed), name, iso(now_utc()), status=status,
                                 skills=skills, rate=rate, currency=currency, notes=notes)
        ident_docs: list[IdentityRecord] = []
        promoted = []
        for identity in identities:
            current = roster.identities.get(identity.key)
            if current is not None and current.get("first_seen") \
                    and not current.get("contractor_id"):
                promoted.append(identity.key)  # seen before: their earlier files wait
            ident_docs.append(identity_doc(identity, current, doc["id"]))
            if identity.key not in doc["identities"]:
                doc["identities"] = [*doc["identities"], identity.key]
        self.roster_shard.upsert_many("contractors", [cast("dict[str, Any]", doc)])
        if ident_docs:
            self.roster_shard.upsert_many("identities", cast("list[dict[str, Any]]", ident_docs),
                                          "key")
        if promoted:
            self.mark_backfill(promoted)
        return doc

    def update_contractor(self, contractor_id: str, **changes: Any) -> ContractorRecord:
        doc: dict[str, Any] = dict(self.find_contractor(contractor_id))
        if "status" in changes:
            check_status(changes["status"])
            if changes["status"] != doc["status"]:
                doc["status_changed_at"] = iso(now_utc())
        doc.update(json_safe(changes))
        self.roster_shard.upsert_many("contractors", [doc])
        return cast("ContractorRecord", doc)

    def demote(self, ref: str) -> ContractorRecord:
        """Turn a contractor back into candidates (their identities stay, unlinked)."""
        doc = self.find_contractor(ref)
        roster = self.roster()
        idents = [dict(roster.identities[k], contractor_id=None)
                  for k in doc.get("identities", []) if k in roster.identities]
        if idents:
            self.roster_shard.upsert_many("identities", idents, "key")
        self.roster_shard.remove("contractors", [doc["id"]])
        return doc

    def merge_contractors(self, keep_ref: str, other_ref: str) -> ContractorRecord:
        """Merge ``other`` into ``keep``: identities, skills and history follow."""
        keep: dict[str, Any] = dict(self.find_contractor(keep_ref))
        other: dict[str, Any] = dict(self.find_contractor(other_ref))
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
        return cast("ContractorRecord", keep)

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

    def mark_backfill(self, keys: Sequence[str]) -> None:
        """Ask every source to fetch again the files these (newly promoted) identities
        sent before; :meth:`backfill_locators` lists them, the next sync fetches them."""
        for source, state in self.source_states().items():
            pending = sorted(set(state.get("backfill") or []) | set(keys))
            self.update_source_state(source, backfill=pending)
