"""Per-contractor (and per-skill) metrics: what each delegation cost and what came back.

Everything is computed from the store in one pass over its tables:

* **deliverables** in the period (by ``received_at``);
* **average rating** of the latest review of each of them;
* **revision rate**: the share of review events that asked for changes; a new version of
  a deliverable (``replaces``) counts as changes asked on the one it replaces, once;
* **turnaround**: from the instruction sent to the contractor (``retainer instructions
  send``) to the delivery, or else from the owner's previous message in the same thread;
* **spend**: what the marketplace reports on contracts, plus costs entered in reviews
  (``--cost``), plus ``rate`` x hours entered in reviews (``--hours``), marked estimated;
* **review latency**: from delivery to the owner's first review.
"""

from __future__ import annotations

import bisect
import re
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.models import ContractorRecord, ContractRecord, DeliverableRecord, ThreadActivity
from agent.models import ReviewEvent as StoredReview
from agent.store import Store
from agent.store import workflow as wf
from agent.store.core import Roster, iso

#: An instruction older than this before a delivery is not what the delivery answers.
INSTRUCTION_WINDOW = timedelta(days=60)
_WORD = re.compile(r"[a-z0-9]+")


def parse_time(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    try:
        value = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def hours_between(start: str | None, end: str | None) -> float | None:
    a, b = parse_time(start), parse_time(end)
    if a is None or b is None or b < a:
        return None
    return (b - a).total_seconds() / 3600


def words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def median(values: Iterable[float]) -> float | None:
    data = [v for v in values if v is not None]
    return statistics.median(data) if data else None


def mean(values: Iterable[float]) -> float | None:
    data = [v for v in values if v is not None]
    return sum(data) / len(data) if data else None


@dataclass
class Facts:
    """Everything the metrics need, read from the store once."""

    roster: Roster
    contractors: list[ContractorRecord]
    deliverables: list[DeliverableRecord]
    reviews: list[StoredReview]
    instructions: list[dict[str, Any]]
    contracts: list[ContractRecord]
    activity: dict[str, ThreadActivity]
    by_contractor_instr: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def load(cls, store: Store, *, with_messages: bool = True) -> Facts:
        roster = store.roster()
        facts = cls(
            roster=roster,
            contractors=store.contractors(),
            deliverables=store.deliverables(),
            reviews=wf.review_events(store),
            instructions=wf.sent_instructions(store),
            contracts=store.contracts(),
            activity=store.thread_activity() if with_messages else {},
        )
        for ins in facts.instructions:
            facts.by_contractor_instr.setdefault(ins["contractor_id"], []).append(ins)
        return facts

    _derived: dict[str, tuple[str, float | None]] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)

    def derived(self, deliverable: DeliverableRecord, contractor: ContractorRecord | None
                ) -> tuple[str, float | None]:
        """A deliverable's kind of work and turnaround hours, computed once per load."""
        got = self._derived.get(deliverable["id"])
        if got is None:
            got = (skill_of(self, deliverable, contractor), turnaround(self, deliverable)[0])
            self._derived[deliverable["id"]] = got
        return got

    def contractor_of(self, doc: DeliverableRecord) -> str | None:
        return self.roster.contractor_of(doc.get("identity")) or doc.get("contractor_id")


def answered_instruction(facts: Facts, deliverable: DeliverableRecord) -> dict[str, Any] | None:
    """The instruction a deliverable answers: the latest one sent to its contractor before it
    (in the same thread when the instruction went to a thread), within the window."""
    received = deliverable.get("received_at") or ""
    cid = deliverable.get("contractor_id")
    best = None
    for ins in facts.by_contractor_instr.get(cid or "", []):
        if ins["sent_at"] > received:
            break
        best = ins
    if best is None:
        return None
    hours = hours_between(best["sent_at"], received)
    if hours is None or hours > INSTRUCTION_WINDOW.total_seconds() / 3600:
        return None
    return best


def turnaround(facts: Facts, deliverable: DeliverableRecord) -> tuple[float | None, str | None]:
    """Hours from what asked for the work to its delivery, and what asked ("instruction",
    "message"), or (None, None) when nothing did."""
    received = deliverable.get("received_at") or ""
    ins = answered_instruction(facts, deliverable)
    if ins is not None:
        return hours_between(ins["sent_at"], received), "instruction"
    entry = facts.activity.get(deliverable.get("thread_id") or "")
    if entry:
        times: list[str] = entry["out"]
        pos = bisect.bisect_left(times, received)
        if pos:
            return hours_between(times[pos - 1], received), "message"
    return None, None


def skill_of(facts: Facts, deliverable: DeliverableRecord, contractor: ContractorRecord | None
             ) -> str:
    """The kind of work a deliverable is: its instruction's skill, else the contractor's skill
    that its title or file name mentions, else the contractor's first skill."""
    ins = answered_instruction(facts, deliverable)
    if ins is not None and ins.get("skill"):
        return str(ins["skill"])
    skills: list[str] = list(contractor["skills"] or []) if contractor else []
    text = words(f"{deliverable.get('title', '')} {deliverable.get('filename', '')}")
    for skill in skills:
        if words(skill) & text:
            return skill
    return skills[0] if skills else "other"


def _empty(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "deliverables": 0, "reviewed": 0, "approved": 0, "changes_requested": 0,
        "unreviewed": 0, "average_rating": None, "revision_rate": None,
        "median_turnaround_hours": None, "median_review_latency_hours": None,
        "spend": None, "spend_estimated": False, "currency": doc.get("currency") or "USD",
        "_ratings": [], "_turnarounds": [], "_latencies": [], "_events": 0, "_changes": 0,
        "_platform_spend": 0.0, "_entered": 0.0, "_estimated": 0.0, "_has_spend": False,
    }


def _finish(acc: dict[str, Any]) -> dict[str, Any]:
    acc["average_rating"] = _round(mean(acc["_ratings"]), 2)
    acc["revision_rate"] = _round(acc["_changes"] / acc["_events"], 3) if acc["_events"] else None
    acc["median_turnaround_hours"] = _round(median(acc["_turnarounds"]), 1)
    acc["median_review_latency_hours"] = _round(median(acc["_latencies"]), 1)
    if acc["_has_spend"]:
        acc["spend"] = round(acc["_platform_spend"] + acc["_entered"] + acc["_estimated"], 2)
        acc["spend_estimated"] = acc["_estimated"] > 0
    acc["cost_per_deliverable"] = (round(acc["spend"] / acc["deliverables"], 2)
                                   if acc["spend"] is not None and acc["deliverables"] else None)
    return {k: v for k, v in acc.items() if not k.startswith("_")}


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True, slots=True)
class Work:
    """One deliverable of a contractor, reduced to what the metrics need."""

    id: str
    contractor_id: str
    received: str
    status: str
    rating: float | None
    cost: float | None
    estimated: float | None  # rate x hours entered in the review
    skill: str
    turnaround: float | None


@dataclass(frozen=True, slots=True)
class ReviewEvent:
    contractor_id: str
    skill: str
    reviewed: str
    changes: bool
    latency: float | None  # only on the first review of a deliverable


def _work(facts: Facts) -> tuple[list[Work], list[ReviewEvent]]:
    cached = facts._cache.get("work")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    by_id = {c["id"]: c for c in facts.contractors}
    works: dict[str, Work] = {}
    for d in facts.deliverables:
        contractor = by_id.get(d.get("contractor_id") or "")
        if contractor is None:
            continue
        skill, hours = facts.derived(d, contractor)
        review: Mapping[str, Any] = d.get("review") or {}
        rating = review.get("rating")
        cost = review.get("cost")
        entered = review.get("hours")
        rate = contractor.get("rate")
        works[d["id"]] = Work(
            d["id"], contractor["id"], d.get("received_at") or "",
            d.get("review_status") or "unreviewed",
            float(rating) if rating is not None and d.get("review_status") != "unreviewed"
            else None,
            float(cost) if cost is not None else None,
            float(entered) * float(rate) if cost is None and entered is not None
            and rate is not None else None,
            skill, hours)
    events = []
    seen: set[str] = set()
    asked = {e["deliverable_id"] for e in facts.reviews if e["status"] == "changes_requested"}
    for d in facts.deliverables:  # a new version answers changes asked (or implied) on the last
        w = works.get(d.get("replaces") or "")
        if w is not None and w.id not in asked:
            events.append(ReviewEvent(w.contractor_id, w.skill, d.get("received_at") or "",
                                      True, None))
    for event in facts.reviews:
        w = works.get(event["deliverable_id"])
        if w is None:
            continue
        first = w.id not in seen
        seen.add(w.id)
        events.append(ReviewEvent(
            w.contractor_id, w.skill, event.get("reviewed_at") or "",
            event["status"] == "changes_requested",
            hours_between(w.received, event.get("reviewed_at")) if first else None))
    result = (list(works.values()), events)
    facts._cache["work"] = result
    return result


def compute(facts: Facts, *, since: datetime | None = None, until: datetime | None = None,
            by_skill: bool = False) -> dict[str, dict[str, Any]]:
    """Metrics per contractor id (or, with ``by_skill``, per skill) for a period."""
    lo, hi = iso(since) or "", iso(until) or "\uffff"
    by_id = {c["id"]: c for c in facts.contractors}
    accs: dict[str, dict[str, Any]] = {}

    def acc_for(key: str, contractor_id: str) -> dict[str, Any]:
        acc = accs.get(key)
        if acc is None:
            acc = accs[key] = _empty(by_id.get(contractor_id) or {})
        return acc

    if not by_skill:
        for doc in facts.contractors:
            acc_for(doc["id"], doc["id"])
    works, events = _work(facts)
    for w in works:
        if not lo <= w.received < hi:
            continue
        acc = acc_for(w.skill if by_skill else w.contractor_id, w.contractor_id)
        acc["deliverables"] += 1
        acc[w.status if w.status in ("approved", "changes_requested") else "unreviewed"] += 1
        if w.status != "unreviewed":
            acc["reviewed"] += 1
            if w.rating is not None:
                acc["_ratings"].append(w.rating)
        if w.turnaround is not None:
            acc["_turnarounds"].append(w.turnaround)
        if w.cost is not None:
            acc["_entered"] += w.cost
            acc["_has_spend"] = True
        elif w.estimated is not None:
            acc["_estimated"] += w.estimated
            acc["_has_spend"] = True
    for e in events:
        if not lo <= e.reviewed < hi:
            continue
        acc = acc_for(e.skill if by_skill else e.contractor_id, e.contractor_id)
        acc["_events"] += 1
        acc["_changes"] += e.changes
        if e.latency is not None:
            acc["_latencies"].append(e.latency)
    if not by_skill:
        for k in facts.contracts:
            cid = facts.roster.contractor_of(k.get("identity"))
            spent = k.get("spent")
            if cid not in accs or spent is None:
                continue
            start = k.get("started_at") or ""
            end = k.get("ended_at")
            if start < hi and (end is None or end >= lo):
                accs[cid]["_platform_spend"] += float(spent)
                accs[cid]["_has_spend"] = True
                accs[cid]["currency"] = k.get("currency") or accs[cid]["currency"]
    return {key: _finish(acc) for key, acc in accs.items()}


def roster_rows(store: Store, facts: Facts | None = None) -> list[dict[str, Any]]:
    """Every contractor with identities, contact dates and all-time metrics, by name."""
    facts = facts or Facts.load(store)
    metrics = compute(facts)
    out = []
    for doc in facts.contractors:
        idents = [facts.roster.identities[k] for k in doc.get("identities", [])
                  if k in facts.roster.identities]
        firsts = [first for i in idents if (first := i.get("first_seen"))]
        lasts = [last for i in idents if (last := i.get("last_seen"))]
        out.append(dict(doc, platforms=sorted({i["platform"] for i in idents}),
                        addresses=[i["address"] for i in idents],
                        first_contact=min(firsts) if firsts else None,
                        last_contact=max(lasts) if lasts else None,
                        **metrics.get(doc["id"], {})))
    out.sort(key=lambda d: d["name"].lower())
    return out
