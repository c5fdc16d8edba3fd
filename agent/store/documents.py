"""The shape of stored documents: ids, messages, thread entries, deliverables, contracts.

Pure functions from connector records (and what the store decided about them: the
identity a message counts for, where a file was kept) to the JSON documents the shards
hold. Nothing here reads or writes a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from agent.files import sanitize_filename
from agent.models import (
    Attachment,
    AttachmentEntry,
    Contract,
    ContractRecord,
    DeliverableRecord,
    Message,
    MessageRecord,
    ThreadRecord,
)
from agent.store.ids import deliverable_id_for, short_hash, thread_id_for
from agent.store.storage import iso, json_safe
from agent.store.versions import work_stem

#: What an attachment's status may be for it to enter the review queue.
DELIVERABLE_STATUSES = {"stored", "too_large", "delivery_waiting", "link", "unavailable"}
REVIEW_STATUSES = ("unreviewed", "approved", "changes_requested")


def now_utc() -> datetime:
    return datetime.now(UTC)


Doc = TypeVar("Doc", bound=Mapping[str, Any])


def json_doc(value: Doc) -> Doc:
    """A JSON-safe copy of a document (datetimes as ISO strings, text valid UTF-8)."""
    return cast("Doc", json_safe(value))


def month_of(sent: str) -> str:
    """The month a message's thread entries are staged under (``0000-00``: no date)."""
    return sent[:7] or "0000-00"


def handled_before(doc: DeliverableRecord, cutoff: str) -> None:
    """Work received before the first-import cut-off enters the queue as handled."""
    received = doc.get("received_at") or ""
    if cutoff and received and received[:10] < cutoff and doc["review_status"] == "unreviewed":
        doc["review_status"] = "approved"
        doc["review"] = {"status": "approved", "rating": None, "feedback": "",
                         "reviewed_at": None, "cost": None, "hours": None, "sent": [],
                         "round": 0, "auto": f"received before review_since {cutoff}"}


def attachment_entry(att: Attachment) -> AttachmentEntry:
    """What a message document says about one of its attachments."""
    return {"filename": sanitize_filename(att.filename), "content_type": att.content_type,
            "size": att.size, "status": att.status, "inline": att.inline}


def message_doc(source: str, platform: str, record: Message, *, message_id: str,
                remote_id: str, thread_id: str, thread_remote_id: str, direction: str,
                identity: str | None, contractor_id: str | None, sent: str,
                attachments: list[AttachmentEntry]) -> MessageRecord:
    sender = record.sender
    return {
        "id": message_id, "source": source, "platform": platform,
        "remote_id": remote_id, "thread_id": thread_id,
        "thread_remote_id": thread_remote_id, "contractor_id": contractor_id,
        "identity": identity, "direction": direction, "sent_at": sent,
        "subject": record.subject, "text": record.text,
        "sender": {"address": sender.address, "name": sender.name,
                   "platform": sender.platform},
        "recipients": [{"address": r.address, "name": r.name} for r in record.recipients],
        "attachments": attachments,
        "extra": json_safe(dict(record.extra)) if record.extra else {},
    }


def thread_entry(source: str, platform: str, thread_id: str, remote_id: str, subject: str,
                 identity: str | None, sent: str) -> ThreadRecord:
    """A thread's entry in one message shard, before any message widened its time range."""
    return {"id": thread_id, "source": source, "platform": platform, "remote_id": remote_id,
            "subject": subject, "identity": identity, "first_at": sent, "last_at": sent}


def widen_thread(entry: ThreadRecord, sent: str, identity: str | None) -> None:
    """Stretch a thread entry over one more message (sent at ``sent``, from ``identity``)."""
    entry["first_at"] = min(entry["first_at"], sent)
    entry["last_at"] = max(entry["last_at"], sent)
    if identity and not entry.get("identity"):
        entry["identity"] = identity


def merge_thread_entries(current: ThreadRecord, new: ThreadRecord) -> ThreadRecord:
    """A stored thread entry with a page's entry for the same thread and shard folded in."""
    merged = current.copy()
    merged["first_at"] = min(current["first_at"], new["first_at"])
    merged["last_at"] = max(current["last_at"], new["last_at"])
    merged["identity"] = current.get("identity") or new.get("identity")
    return merged


def deliverable_doc(source: str, platform: str, remote_id: str, *, message_id: str | None,
                    thread_id: str | None, identity: str | None, contractor_id: str | None,
                    att: Attachment, blob: tuple[str | None, str | None, int | None],
                    when: datetime, title: str, extra: dict[str, Any] | None = None,
                    replaces: str = "") -> DeliverableRecord:
    """A deliverable as it enters the review queue; ``blob`` is (sha256, path, size) of
    the kept file, or (None, None, the size the platform gave) when none is kept."""
    sha, path, size = blob
    status = att.status
    doc: DeliverableRecord = {
        "id": deliverable_id_for(source, remote_id), "source": source, "platform": platform,
        "remote_id": remote_id, "message_id": message_id, "thread_id": thread_id,
        "contractor_id": contractor_id, "identity": identity,
        "filename": sanitize_filename(att.filename), "content_type": att.content_type,
        "size": size, "sha256": sha, "path": path, "url": att.url, "status": status,
        "flagged": status in ("too_large", "unavailable"), "note": att.note, "title": title,
        "received_at": iso(when), "review_status": "unreviewed", "review": None,
        "extra": extra or {}, "work": work_stem(att.filename),
        "replaces_remote_id": replaces or None,
    }
    return json_doc(doc)


def contract_doc(source: str, platform: str, record: Contract, identity: str | None
                 ) -> ContractRecord:
    doc: ContractRecord = {
        "id": "k_" + short_hash(source, record.remote_id), "source": source,
        "platform": platform, "remote_id": record.remote_id, "identity": identity,
        "title": record.title, "status": record.status, "kind": record.kind,
        "started_at": iso(record.started_at), "ended_at": iso(record.ended_at),
        "rate": record.rate, "budget": record.budget, "spent": record.spent,
        "currency": record.currency,
        "thread_id": (thread_id_for(source, record.thread_remote_id)
                      if record.thread_remote_id else None),
        "extra": dict(record.extra),
    }
    return json_doc(doc)
