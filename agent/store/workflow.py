"""The owner's workflow in the store: reviews, instruction templates, sent messages, notifier state.

The only module of the workflow features that talks to TinyDB. Layout (under ``store/``)::

    deliverables/       each deliverable's current ``review_status`` and ``review`` (kept on
                        re-sync by :meth:`Store._upsert_deliverables`)
    reviews/            every review event (a deliverable can be reviewed twice), in bounded
                        shards (:mod:`agent.store.records`; until schema 3, workflow.json)
    outbox/             every message the owner sent through Retainer, likewise
    notified/           which reminders went out, so none is sent twice (was notify.json)
    instructions/       every instruction sent, likewise (was ``sent`` in instructions.json)
    instructions.json   ``templates``: versioned Markdown templates (one per template the
                        owner keeps: bounded by the owner, not by the work)

Messages and deliverables are read through :class:`~agent.store.Store` methods only
(:meth:`~agent.store.Store.message`, :meth:`~agent.store.Store.thread_messages`,
:meth:`~agent.store.Store.thread_activity`, ...), never from their shard files here.
Writers must hold :meth:`Store.writing`; readers need no lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from agent.errors import StoreError
from agent.store import records
from agent.store.core import REVIEW_STATUSES, Store, iso, short_hash
from agent.store.storage import Shard

if TYPE_CHECKING:  # typed records: hints only
    from agent.models import DeliverableRecord, MessageRecord, ReviewEvent, ThreadActivity


def _now() -> datetime:
    return datetime.now(UTC)


def _templates(store: Store) -> Shard:
    return store.shard("instructions.json")


# -- reviews ------------------------------------------------------------------------------------


def record_review(
    store: Store,
    deliverable_id: str,
    status: str,
    *,
    rating: int | None = None,
    feedback: str = "",
    cost: float | None = None,
    hours: float | None = None,
    when: datetime | None = None,
) -> DeliverableRecord:
    """Record a review on a deliverable (hold :meth:`Store.writing`); return the deliverable."""
    current = store.deliverable(deliverable_id)
    return record_reviews(store, [(current, {
        "status": status, "rating": rating, "feedback": feedback, "cost": cost, "hours": hours,
        "when": when})])[0]


def record_reviews(store: Store, items: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]]
                   ) -> list[DeliverableRecord]:
    """Record many reviews in two writes: ``(deliverable doc, {status, rating, feedback,
    cost, hours, when})`` pairs. Hold :meth:`Store.writing`."""
    docs: list[DeliverableRecord] = []
    events: list[ReviewEvent] = []
    for current, r in items:
        status, rating = r["status"], r.get("rating")
        if status not in REVIEW_STATUSES or status == "unreviewed":
            raise StoreError(f"a review is {' or '.join(REVIEW_STATUSES[1:])}, not {status!r}")
        if rating is not None and not 1 <= rating <= 5:
            raise StoreError("a rating is a whole number from 1 to 5")
        stamp = iso(r.get("when") or _now())
        previous: Mapping[str, Any] = current.get("review") or {}
        review = {
            "status": status, "rating": rating, "feedback": r.get("feedback", ""),
            "reviewed_at": stamp,
            "cost": r["cost"] if r.get("cost") is not None else previous.get("cost"),
            "hours": r["hours"] if r.get("hours") is not None else previous.get("hours"),
            "sent": list(previous.get("sent") or []),
            "round": int(previous.get("round") or 0) + 1,
        }
        stored = store.stored_deliverable(current["id"])
        if stored is None:
            raise StoreError(f"no deliverable {current['id']}; see `retainer deliverables`")
        docs.append(cast("DeliverableRecord", dict(stored, review_status=status, review=review)))
        events.append({
            "id": "r_" + short_hash(current["id"], str(stamp), str(review["round"])),
            "deliverable_id": current["id"], "status": status, "rating": rating,
            "feedback": review["feedback"], "reviewed_at": stamp,
            "received_at": current.get("received_at"), "identity": current.get("identity"),
            "contractor_id": current.get("contractor_id"),
        })
    store.save_deliverables(docs)
    records.save(store, "reviews", cast("list[dict[str, Any]]", events))
    return docs


def review_events(store: Store) -> list[ReviewEvent]:
    """Every review ever recorded, oldest first (do not mutate)."""
    docs = cast("list[ReviewEvent]", records.read_all(store, "reviews"))
    return sorted(docs, key=lambda d: d.get("reviewed_at") or "")


def record_sent(store: Store, entry: dict[str, Any], *, deliverable_id: str | None = None
                ) -> dict[str, Any]:
    """Keep a message the owner sent (feedback or instruction) in the outbox."""
    stamp = entry.get("sent_at") or iso(_now())
    doc = dict(entry, sent_at=stamp,
               id=entry.get("id") or "o_" + short_hash(str(stamp), entry.get("text", ""),
                                                     entry.get("to", "")))
    records.save(store, "outbox", [doc])
    if deliverable_id is not None:
        current = store.deliverable(deliverable_id)
        review: dict[str, Any] = dict(current.get("review") or {})
        review["sent"] = [*(review.get("sent") or []), {"outbox_id": doc["id"], "sent_at": stamp,
                                                       "remote_id": doc.get("remote_id")}]
        store.update_deliverable(current["id"], review=review)
    return doc


def outbox(store: Store) -> list[dict[str, Any]]:
    return sorted(records.read_all(store, "outbox"), key=lambda d: d.get("sent_at") or "")


# -- instruction templates ----------------------------------------------------------------------


def templates(store: Store) -> list[dict[str, Any]]:
    return sorted(_templates(store).docs("templates"), key=lambda d: d["name"])


def template(store: Store, name: str) -> dict[str, Any]:
    doc = _templates(store).get("templates", name.strip().lower())
    if doc is None:
        raise StoreError(f'no instruction template "{name}"; see `retainer instructions list`')
    return doc


def save_template(store: Store, name: str, text: str, *, skill: str | None = None,
                  subject: str | None = None, when: datetime | None = None) -> dict[str, Any]:
    """Add a template, or a new version of one when the text changed."""
    key = name.strip().lower()
    if not key or any(c in key for c in "/\\\n"):
        raise StoreError("a template name is one line without slashes, e.g. logo-brief")
    shard = _templates(store)
    current = shard.get("templates", key)
    stamp = iso(when or _now())
    versions = list(current["versions"]) if current else []
    if not versions or versions[-1]["text"] != text:
        versions.append({"version": len(versions) + 1, "text": text, "created_at": stamp})
    doc = {
        "id": key, "name": key, "versions": versions,
        "skill": skill if skill is not None else (current or {}).get("skill"),
        "subject": subject if subject is not None else (current or {}).get("subject"),
        "created_at": (current or {}).get("created_at", stamp), "updated_at": stamp,
    }
    shard.upsert_many("templates", [doc])
    return doc


def record_instruction(store: Store, entry: dict[str, Any]) -> dict[str, Any]:
    """Keep an instruction that was sent (linked to its template version and task)."""
    doc = dict(entry)
    doc.setdefault("sent_at", iso(_now()))
    doc["id"] = doc.get("id") or "i_" + short_hash(doc["template"], str(doc["version"]),
                                                  doc["contractor_id"], doc["sent_at"])
    records.save(store, "instructions", [doc])
    return doc


def sent_instructions(store: Store) -> list[dict[str, Any]]:
    return sorted(records.read_all(store, "instructions"), key=lambda d: d.get("sent_at") or "")


# -- reads kept for callers of the first workflow API ----------------------------------------


def thread_activity(store: Store) -> dict[str, ThreadActivity]:
    """:meth:`Store.thread_activity <agent.store.Store.thread_activity>`."""
    return store.thread_activity()


def message(store: Store, message_id: str) -> MessageRecord | None:
    """:meth:`Store.message <agent.store.Store.message>`."""
    return store.message(message_id)


def thread_messages(store: Store, thread_id: str) -> list[MessageRecord]:
    """:meth:`Store.thread_messages <agent.store.Store.thread_messages>`."""
    return store.thread_messages(thread_id)


# -- notifier state -----------------------------------------------------------------------------


def notified(store: Store) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in records.read_all(store, "notified")}


def mark_notified(store: Store, keys: Iterable[str], when: datetime | None = None) -> None:
    stamp = iso(when or _now())
    docs = [{"id": k, "at": stamp} for k in keys]
    if docs:
        records.save(store, "notified", docs)
