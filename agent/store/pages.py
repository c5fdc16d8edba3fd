"""One page of connector records turned into the documents the store will write.

:class:`PageStaging` applies the roster rules to each record (who the counterpart is,
whether they are a contractor, who gets hired by a contract), keeps the files of
contractors' work (:class:`~agent.store.blobs.Blobs`) and shapes the documents
(documents.py). It writes no document: :meth:`agent.store.Store.commit_page` writes what
it staged, blobs first, then deliverables, messages and threads, then the roster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent.errors import StoreError
from agent.files import sanitize_filename
from agent.models import (
    Attachment,
    AttachmentEntry,
    Contract,
    ContractorRecord,
    ContractRecord,
    DeliverableRecord,
    Identity,
    IdentityRecord,
    Message,
    MessageRecord,
    Record,
    Submission,
    ThreadRecord,
)
from agent.store.documents import (
    DELIVERABLE_STATUSES,
    attachment_entry,
    contract_doc,
    deliverable_doc,
    handled_before,
    message_doc,
    month_of,
    now_utc,
    thread_entry,
    widen_thread,
)
from agent.store.ids import contractor_id_for, message_id_for, thread_id_for
from agent.store.migrate import repaired_remote_id
from agent.store.roster import identity_doc, new_contractor, seen_at
from agent.store.storage import iso

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agent.store.reads import StoreReads

log = logging.getLogger("retainer.store")


@dataclass
class CommitResult:
    """What one committed page changed."""

    messages_new: int = 0
    messages_updated: int = 0
    deliverables_new: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    deliverables: list[dict[str, Any]] = field(default_factory=list)


def _warn_unstated_contract(source: str, record: Submission) -> None:
    text = (f"{source}: Submission {record.remote_id!r} does not say whether "
            f"{record.contractor.key} is under contract, so they join the roster as before; "
            "set Submission(under_contract=True) when the platform has a contract with them, "
            "or False to make them a candidate (not saying will mean False in a later version)")
    warnings.warn(text, DeprecationWarning, stacklevel=2)
    log.warning("%s", text)


def _legacy_candidates(record: Message, sent: str) -> list[str]:
    """The ids a message may have been stored under before ids named more than the
    Message-ID (see :meth:`PageStaging._stored_remote_id`), most likely first."""
    legacy = record.extra.get("legacy_remote_id")
    if isinstance(legacy, str) and legacy and legacy != record.remote_id:
        return [legacy, repaired_remote_id(legacy, sent, record.sender.address)]
    headers = record.extra.get("legacy_header_ids")
    if isinstance(headers, list):
        return [h for h in headers if isinstance(h, str) and h != record.remote_id]
    return []


class PageStaging:
    """The documents one page of records becomes, staged in memory."""

    def __init__(self, store: StoreReads, source: str, platform: str,
                 owner_keys: frozenset[str]) -> None:
        self.store = store
        self.source = source
        self.platform = platform
        self.owner_keys = owner_keys
        self.roster = store.roster()
        self.identities: dict[str, IdentityRecord] = {}  # changed, by key
        self.contractors: dict[str, ContractorRecord] = {}  # changed, by id
        self.messages: dict[str, list[MessageRecord]] = {}  # by month sent
        self.threads: dict[str, dict[str, ThreadRecord]] = {}  # month -> thread id -> entry
        self.deliverables: list[DeliverableRecord] = []
        self.contracts: list[ContractRecord] = []
        self._legacy: dict[str, MessageRecord] = {}  # stored under an earlier id (add_page)

    def add_page(self, records: Sequence[Record]) -> None:
        """Every record of a page, in order. The ids the page's mail may be stored under
        already (:meth:`_stored_remote_id`) are looked up for the whole page at once."""
        wanted = [message_id_for(self.source, candidate)
                  for record in records if isinstance(record, Message)
                  for candidate in _legacy_candidates(record, iso(record.sent_at) or "")]
        self._legacy = self.store.stored_messages(wanted) if wanted else {}
        for record in records:
            self._add(record)

    def _add(self, record: Record) -> None:
        if isinstance(record, Message):
            self._message(record)
        elif isinstance(record, Submission):
            self._submission(record)
        elif isinstance(record, Contract):
            key = self.touch(record.contractor, record.started_at, hire=True)
            self.contracts.append(contract_doc(self.source, self.platform, record, key))
        else:
            raise StoreError(f"{self.source}: a connector yielded {type(record).__name__}, "
                             "which is not a Message, Submission or Contract")

    # -- the roster ------------------------------------------------------------------------

    def touch(self, identity: Identity, when: datetime | None, *, hire: bool = False
              ) -> str | None:
        """Note that ``identity`` was seen at ``when`` (a new one joins as a candidate, or
        linked to the contractor owning its profile or address); ``hire`` makes them a
        contractor. The owner's own identities are never touched (None)."""
        key = identity.key
        if key in self.owner_keys:
            return None
        roster = self.roster
        doc = self.identities.get(key)
        if doc is None and key in roster.identities:
            doc = roster.identities[key].copy()
        if doc is None:
            doc = identity_doc(identity, None, None)
            linked = roster.by_profile.get(identity.profile_url) if identity.profile_url else None
            if linked is None and identity.platform != "email" and "@" in identity.address:
                linked = roster.identities.get(f"email:{identity.address.lower()}")
            owner = linked.get("contractor_id") if linked else None
            if owner:
                doc["contractor_id"] = owner
                self._link(owner, key)
        if hire and not doc.get("contractor_id"):
            cid = contractor_id_for(key)
            doc["contractor_id"] = cid
            if cid not in roster.contractors:
                roster.contractors[cid] = new_contractor(
                    cid, identity.name or identity.address, iso(now_utc()))
            self._link(cid, key)
        seen_at(doc, iso(when))
        self.identities[key] = doc
        roster.identities[key] = doc
        return key

    def _link(self, cid: str, key: str) -> None:
        self.contractors[cid] = self.roster.link(cid, key)

    # -- records ---------------------------------------------------------------------------

    def _submission(self, record: Submission) -> None:
        roster = self.roster
        key = self.touch(record.contractor, record.submitted_at)
        if key and roster.contractor_of(key) is None and record.under_contract is not False:
            if record.under_contract is None:
                _warn_unstated_contract(self.source, record)
            key = self.touch(record.contractor, record.submitted_at, hire=True)
        thread_id = (thread_id_for(self.source, record.thread_remote_id)
                     if record.thread_remote_id else None)
        announced = (message_id_for(self.source, record.message_remote_id)
                     if record.message_remote_id else None)
        att = record.attachment
        if roster.contractor_of(key) is None and att.status == "stored":
            # not a contractor: the work is recorded, its file is not kept
            att = dataclasses.replace(att, data=None, path=None, status="not_downloaded")
        self.deliverables.append(self._deliverable(
            record.platform or self.platform, record.remote_id, announced, thread_id, key,
            att, record.submitted_at, record.title,
            extra={"contract_remote_id": record.contract_remote_id, **record.extra},
            replaces=record.replaces or att.replaces))

    def _counterpart(self, record: Message, direction: str) -> Identity | None:
        """Who a message is with: its sender when it came in (none for mail a notification
        format kept as it came, ``system``), else the first recipient who is a contractor,
        else the first who is not the owner."""
        if direction == "in":
            return None if record.extra.get("system") else record.sender
        others = [r for r in record.recipients if r.key not in self.owner_keys]
        known = [r for r in others if self.roster.contractor_of(r.key)]
        candidates = known or others
        return candidates[0] if candidates else None

    def _message(self, record: Message) -> None:
        source = self.source
        platform = record.platform or self.platform
        direction = record.direction or ("out" if record.sender.key in self.owner_keys else "in")
        counterpart = self._counterpart(record, direction)
        hire = direction == "in" and record.under_contract is True
        key = self.touch(counterpart, record.sent_at, hire=hire) if counterpart is not None else None
        contractor_id = self.roster.contractor_of(key)
        sent = iso(record.sent_at) or ""
        remote_id = self._stored_remote_id(record, sent)
        message_id = message_id_for(source, remote_id)
        thread_remote = record.thread_remote_id or remote_id
        thread_id = thread_id_for(source, thread_remote)
        attachments: list[AttachmentEntry] = []
        for index, att in enumerate(record.attachments):
            entry = attachment_entry(att)
            wanted = (direction == "in" and contractor_id is not None and not att.inline
                      and att.status in DELIVERABLE_STATUSES)
            if wanted:
                doc = self._deliverable(
                    platform, f"{remote_id}#{att.remote_id or index}", message_id, thread_id,
                    key, att, record.sent_at, record.subject, replaces=att.replaces)
                if not record.extra.get("backfill"):
                    handled_before(doc, self.store.review_since())
                entry["deliverable_id"] = doc["id"]
                entry["sha256"] = doc["sha256"]
                self.deliverables.append(doc)
            attachments.append(entry)
        month = month_of(sent)
        self.messages.setdefault(month, []).append(message_doc(
            source, platform, record, message_id=message_id, remote_id=remote_id,
            thread_id=thread_id, thread_remote_id=thread_remote, direction=direction,
            identity=key, contractor_id=contractor_id, sent=sent, attachments=attachments))
        month_threads = self.threads.setdefault(month, {})
        thread = month_threads.get(thread_id) or thread_entry(
            source, platform, thread_id, thread_remote, record.subject, key, sent)
        widen_thread(thread, sent, key)
        month_threads[thread_id] = thread

    def _stored_remote_id(self, record: Message, sent: str) -> str:
        """The id a message already has in this store: mail stored before ids named more
        than the Message-ID (``extra["legacy_remote_id"]``, or lacking one the header
        hashes of ``extra["legacy_header_ids"]``) keeps its old id, or the one the
        upgrade gave it when another message had that id (:func:`repaired_remote_id`),
        so its deliverables and their reviews stay as they are."""
        legacy = record.extra.get("legacy_remote_id")
        for candidate in _legacy_candidates(record, sent):
            message_id = message_id_for(self.source, candidate)
            old = self._legacy.get(message_id)
            if old is None or old.get("remote_id") != candidate:
                continue
            if candidate == legacy and (  # a header hash already names date and sender
                    old.get("sent_at") != sent
                    or (old.get("sender") or {}).get("address") != record.sender.address):
                continue
            # the same message only if every file it brings is one the old record stored
            stored = {a.get("sha256") for a in old.get("attachments") or () if a.get("sha256")}
            if any(att.status == "stored" and (att.data is not None or att.handover_sha256)
                   and (att.handover_sha256 or hashlib.sha256(att.data or b"").hexdigest())
                   not in stored
                   for att in (record.attachments if stored else ())):
                continue
            return candidate
        return record.remote_id

    def _deliverable(self, platform: str, remote_id: str, message_id: str | None,
                     thread_id: str | None, key: str | None, att: Attachment,
                     when: datetime, title: str, extra: dict[str, Any] | None = None,
                     replaces: str = "") -> DeliverableRecord:
        """A deliverable document; a stored attachment's file is kept first."""
        blob: tuple[str | None, str | None, int | None] = (None, None, att.size)
        if att.status == "stored":
            blob = self.store.blobs.put(att, sanitize_filename(att.filename))
        return deliverable_doc(
            self.source, platform, remote_id, message_id=message_id, thread_id=thread_id,
            identity=key, contractor_id=self.roster.contractor_of(key), att=att, blob=blob,
            when=when, title=title, extra=extra, replaces=replaces)

    def message_docs(self) -> list[MessageRecord]:
        """The staged messages, grouped by the month they were sent in."""
        return [doc for docs in self.messages.values() for doc in docs]
