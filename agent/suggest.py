"""``contractors suggest``: who on your own team should do a new task?

Each contractor gets a score from 0 to 1, a weighted sum of:

* **skill** (0.4): how many words of the task match their skills (full weight) or the
  titles and file names of work they delivered before (half weight);
* **quality** (0.25): average rating / 5, less the revision rate; 0.5 when never rated;
* **reliability** (0.15): fast median turnaround (1 within a day, falling to 0 at 14 days);
* **recency** (0.2): last contact, halving every 90 days.

Retired contractors are left out; bench contractors lose 10 %. Cost is shown beside the
score (cost per deliverable, rate), never folded into it: value is for the owner to judge.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agent.stats import Facts, parse_time, words

WEIGHTS = {"skill": 0.4, "quality": 0.25, "reliability": 0.15, "recency": 0.2}


def work_words(facts: Facts) -> dict[str, set[str]]:
    """Per contractor id, the words of the titles and file names of their deliverables."""
    history: dict[str, set[str]] = {}
    for d in facts.deliverables:
        cid = d.get("contractor_id")
        if cid:
            history.setdefault(cid, set()).update(
                words(f"{d.get('title', '')} {d.get('filename', '')}"))
    return history


def rank(task: str, rows: list[dict[str, Any]], facts: Facts, *, now: datetime | None = None,
         include_retired: bool = False, limit: int = 10,
         history: dict[str, set[str]] | None = None) -> list[dict[str, Any]]:
    """The ``limit`` best contractors for ``task`` (``history``: :func:`work_words` of
    ``facts``, when the caller has it already)."""
    now = now or datetime.now(UTC)
    wanted = words(task)
    history = work_words(facts) if history is None else history
    out = []
    for row in rows:
        if row.get("status") == "retired" and not include_retired:
            continue
        skill_words: set[str] = set()
        for skill in row.get("skills") or []:
            skill_words |= words(skill)
        if wanted:
            direct = len(wanted & skill_words) / len(wanted)
            past = len(wanted & history.get(row["id"], set())) / len(wanted)
            skill = min(1.0, direct + 0.5 * past)
        else:
            skill = 0.0
        rating = row.get("average_rating")
        revisions = row.get("revision_rate") or 0.0
        quality = max(0.0, rating / 5 - 0.5 * revisions) if rating is not None else 0.5
        turnaround = row.get("median_turnaround_hours")
        reliability = (max(0.0, min(1.0, 1 - (turnaround - 24) / (13 * 24)))
                       if turnaround is not None else 0.5)
        last = parse_time(row.get("last_contact"))
        days = (now - last).total_seconds() / 86400 if last else None
        recency = 0.5 ** (max(days, 0) / 90) if days is not None else 0.0
        parts = {"skill": skill, "quality": quality, "reliability": reliability,
                 "recency": recency}
        score = sum(WEIGHTS[k] * v for k, v in parts.items())
        if row.get("status") == "bench":
            score *= 0.9
        out.append({
            "id": row["id"], "name": row["name"], "status": row.get("status"),
            "skills": row.get("skills") or [], "score": round(score, 3),
            "parts": {k: round(v, 3) for k, v in parts.items()},
            "average_rating": rating, "revision_rate": row.get("revision_rate"),
            "median_turnaround_hours": turnaround, "deliverables": row.get("deliverables", 0),
            "last_contact": row.get("last_contact"), "rate": row.get("rate"),
            "currency": row.get("currency") or "USD", "spend": row.get("spend"),
            "cost_per_deliverable": row.get("cost_per_deliverable"),
        })
    out.sort(key=lambda r: (r["parts"]["skill"] == 0, -r["score"], r["name"].lower()))
    return out[:limit]
