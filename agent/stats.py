"""Per-contractor (and per-skill) metrics: what each delegation cost and what came back.

Everything is computed from the store's tables (through the ``delegation`` read model,
see :func:`model`, so a period is a bisection of time-sorted columns):

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
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, TypeGuard, cast

from agent.humanize import parse_stamp
from agent.store import Store, readmodels
from agent.store import workflow as wf
from agent.store.core import Roster, iso

if TYPE_CHECKING:  # typed records: hints only, the read path does not import agent.models
    from agent.models import ContractorRecord, ContractRecord, DeliverableRecord, ThreadActivity
    from agent.models import ReviewEvent as StoredReview

#: An instruction older than this before a delivery is not what the delivery answers.
INSTRUCTION_WINDOW = timedelta(days=60)
_WORD = re.compile(r"[a-z0-9]+")


parse_time = parse_stamp  # an ISO stamp as an aware datetime (naive means UTC), or None


def hours_between(start: str | None, end: str | None) -> float | None:
    a, b = parse_time(start), parse_time(end)
    if a is None or b is None or b < a:
        return None
    return (b - a).total_seconds() / 3600


def words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def median(values: Iterable[float]) -> float | None:
    data = sorted(v for v in values if v is not None)
    if not data:
        return None  # as statistics.median, without importing it (decimal, fractions...)
    half = len(data) // 2
    return data[half] if len(data) % 2 else (data[half - 1] + data[half]) / 2


def mean(values: Iterable[float]) -> float | None:
    data = [v for v in values if v is not None]
    return sum(data) / len(data) if data else None


class Facts:
    """Everything the metrics need, read from the store once, each part when first used.

    The delegation metrics' inputs (:func:`model`: each deliverable's kind of work,
    turnaround and review, and the review events, grouped by contractor and by skill) are
    kept in the store as a read model (``delegation``, see :mod:`agent.store.readmodels`):
    a listing loads that one document instead of every deliverable shard, review and
    message shard, and it is rebuilt whenever any of them changed, from what changed:
    the deliverable shards written since, the threads of the message shards written since
    (:func:`_build_model`).
    """

    def __init__(self, roster: Roster, contractors: list[ContractorRecord],
                 deliverables: list[DeliverableRecord] | None = None,
                 reviews: list[StoredReview] | None = None,
                 instructions: list[dict[str, Any]] | None = None,
                 contracts: list[ContractRecord] | None = None,
                 activity: dict[str, ThreadActivity] | None = None, *,
                 store: Store | None = None, with_messages: bool = True) -> None:
        self.roster = roster
        self.contractors = contractors
        self.store = store
        self.with_messages = with_messages
        self._parts: dict[str, Any] = {}
        self._explicit = any(v is not None for v in (deliverables, reviews, instructions,
                                                      contracts, activity))
        for key, value in (("deliverables", deliverables), ("reviews", reviews),
                           ("instructions", instructions), ("contracts", contracts),
                           ("activity", activity)):
            if value is not None:
                self._parts[key] = value
        self._derived: dict[str, tuple[str, float | None]] = {}
        self._cache: dict[str, Any] = {}
        # kind of work and turnaround computed by an earlier build for the same roster,
        # instructions and messages, by deliverable id (see _build_model)
        self._reuse: dict[str, list[Any]] = {}
        self._derived_rows: dict[str, list[Any]] = {}
        self._keys: dict[str, list[Any]] = {}  # derived_key by id, computed ahead of derived

    @classmethod
    def load(cls, store: Store, *, with_messages: bool = True) -> Facts:
        return cls(store.roster(), store.contractors(), store=store,
                   with_messages=with_messages)

    def _part(self, key: str) -> Any:
        if key not in self._parts:
            store = self.store
            assert store is not None, f"Facts without a store needs {key}"
            if key == "deliverables":
                value: Any = store.deliverables()
            elif key == "reviews":
                value = wf.review_events(store)
            elif key == "instructions":
                value = wf.sent_instructions(store)
            elif key == "contracts":
                value = store.contracts()
            else:
                value = store.thread_activity() if self.with_messages else {}
            self._parts[key] = value
        return self._parts[key]

    @property
    def deliverables(self) -> list[DeliverableRecord]:
        value: list[DeliverableRecord] = self._part("deliverables")
        return value

    @property
    def reviews(self) -> list[StoredReview]:
        value: list[StoredReview] = self._part("reviews")
        return value

    @property
    def instructions(self) -> list[dict[str, Any]]:
        value: list[dict[str, Any]] = self._part("instructions")
        return value

    @property
    def contracts(self) -> list[ContractRecord]:
        value: list[ContractRecord] = self._part("contracts")
        return value

    @property
    def activity(self) -> dict[str, ThreadActivity]:
        value: dict[str, ThreadActivity] = self._part("activity")
        return value

    @property
    def by_contractor_instr(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] | None = self._cache.get("by_instr")
        if found is None:
            found = {}
            for ins in self.instructions:
                found.setdefault(ins["contractor_id"], []).append(ins)
            self._cache["by_instr"] = found
        return found

    def derived(self, deliverable: DeliverableRecord, contractor: ContractorRecord | None
                ) -> tuple[str, float | None]:
        """A deliverable's kind of work and turnaround hours, computed once per load."""
        got = self._derived.get(deliverable["id"])
        if got is None:
            key = self._keys.pop(deliverable["id"], None) or derived_key(deliverable,
                                                                          contractor)
            old = self._reuse.get(deliverable["id"])
            if _reusable(old, key):  # same inputs
                got = (old[6], old[7])
            else:
                got = (skill_of(self, deliverable, contractor), turnaround(self, deliverable)[0])
            self._derived[deliverable["id"]] = got
            self._derived_rows[deliverable["id"]] = [*key, *got]
        return got

    def contractor_of(self, doc: DeliverableRecord) -> str | None:
        return self.roster.contractor_of(doc.get("identity")) or doc.get("contractor_id")


def derived_key(deliverable: DeliverableRecord, contractor: ContractorRecord | None
                ) -> list[Any]:
    """What a deliverable's kind of work and turnaround depend on, besides the
    instructions and the owner's messages in its thread: its own fields and its
    contractor's skills."""
    return [deliverable.get("received_at"), deliverable.get("contractor_id"),
            deliverable.get("thread_id"), deliverable.get("title", ""),
            deliverable.get("filename", ""),
            list(contractor["skills"] or []) if contractor else []]


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


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


class Work(NamedTuple):
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


class ReviewEvent(NamedTuple):
    """A review (or a new version asking for it) of one :class:`Work`."""

    contractor_id: str
    skill: str
    reviewed: str
    changes: bool
    latency: float | None  # only on the first review of a deliverable


#: The delegation read model: bump when :func:`_model_doc` computes something else.
MODEL_VERSION = "delegation-3"
MODEL_INPUTS = ("roster", "deliverables", "workflow", "instructions", "messages")
#: Columns of a group's works (sorted by receipt) and review events (sorted by review time).
#: (Position and contractor, the last two, only in the groups by skill.)
WORK_COLUMNS = ("t", "s", "r", "c", "e", "h", "i", "k")  # time, status, rating, cost,
#                  estimated, turnaround, position among all works, contractor id
EVENT_COLUMNS = ("t", "x", "l", "i", "k")  # time, asked for changes, latency, position, who


#: The recent part of the delegation model (``delegation-recent``): every group's works
#: and events, review marks and first reviews from this many days before it was built on.
#: A report of a period of up to 100 days (it compares with the period before) reads it
#: instead of the whole history: what a listing parses stays bounded as the years pile up.
RECENT_DAYS = 200
RECENT_VERSION = f"{MODEL_VERSION}/recent-1"


def model(facts: Facts, since: str = "") -> dict[str, Any]:
    """The delegation metrics' inputs, grouped for windows (see :func:`_model_doc`): from
    the store's read model when ``facts`` came from the store, else computed.

    ``since`` (an ISO time): only windows from then on will be asked of what is returned
    (the store's recent part of the model may do); ``""``: any window."""
    cached: dict[str, Any] | None = facts._cache.get("model")
    if cached is not None and since >= facts._cache.get("model_from", ""):
        return cached
    store = facts.store
    start = ""
    if store is not None and not facts._explicit:  # all from the store: the read model
        data = _recent(store, since) if since and facts.with_messages else None
        if data is not None:
            start = data["from"]
            data = data["model"]
        else:
            data = _stored_model(store, facts.with_messages)
    else:
        data = _model_doc(facts)
    facts._cache["model"] = data
    facts._cache["model_from"] = start
    built: dict[str, Any] = data
    return built


def _stored_model(store: Store, with_messages: bool = True) -> dict[str, Any]:
    """The whole ``delegation`` read model (``delegation-nomsg`` without messages)."""
    name = "delegation" if with_messages else "delegation-nomsg"

    def build(store: Store) -> dict[str, Any]:
        return _build_model(store, name, with_messages)

    data = readmodels.view(store, name, MODEL_VERSION, MODEL_INPUTS, build)
    if not _well_formed(data):  # not what we write: build it afresh, never trust it
        data = build(store)
    stored: dict[str, Any] = data
    return stored


def _recent(store: Store, since: str) -> dict[str, Any] | None:
    """The ``delegation-recent`` read model (``{"from": time, "model": ...}``) when it
    covers ``since``, else None."""
    if since < (iso(datetime.now(UTC) - timedelta(days=RECENT_DAYS)) or ""):
        return None  # further back than a model built now would reach: the whole one
    data = readmodels.view(store, "delegation-recent", RECENT_VERSION, MODEL_INPUTS,
                           _build_recent)
    if not (isinstance(data, dict) and isinstance(data.get("from"), str)
            and _well_formed(data.get("model"))):
        return None  # not what we write: the whole model serves, never this
    found: dict[str, Any] = data
    return found if since >= found["from"] else None


def _build_recent(store: Store) -> dict[str, Any]:
    start = iso(datetime.now(UTC) - timedelta(days=RECENT_DAYS)) or ""
    return {"from": start, "model": model_from(_stored_model(store), start)}


def model_from(data: dict[str, Any], start: str) -> dict[str, Any]:
    """What of a delegation model is at or after ``start``: every group (kept, in its
    order, empty or not), each column cut where its times reach ``start``. Any window
    from ``start`` on computes from it exactly what it computes from the whole."""
    def cut(cols: dict[str, list[Any]]) -> dict[str, list[Any]]:
        at = bisect.bisect_left(cols["t"], start)
        return {key: column[at:] for key, column in cols.items()}

    def groups(section: dict[str, Any]) -> dict[str, Any]:
        return {name: {"works": cut(g["works"]), "events": cut(g["events"])}
                for name, g in section.items()}

    marks = bisect.bisect_left(data["marks_t"], start)
    first = bisect.bisect_left([str(f[0]) for f in data["first_reviews"]], start)
    return {"contractors": groups(data["contractors"]), "skills": groups(data["skills"]),
            "marks_t": data["marks_t"][marks:], "marks_x": data["marks_x"][marks:],
            "first_reviews": data["first_reviews"][first:]}


def _well_formed(data: Any) -> bool:
    try:
        groups: list[tuple[Any, tuple[str, ...], tuple[str, ...]]] = [
            (g, WORK_COLUMNS[:6], EVENT_COLUMNS[:3]) for g in data["contractors"].values()]
        groups += [(g, WORK_COLUMNS, EVENT_COLUMNS) for g in data["skills"].values()]
        ok = all(len({len(g["works"][c]) for c in works}) == 1
                 and len({len(g["events"][c]) for c in events}) == 1
                 for g, works, events in groups)
        return ok and len(data["marks_t"]) == len(data["marks_x"]) and all(
            len(pair) == 2 for pair in data["first_reviews"])
    except (KeyError, TypeError, AttributeError):
        return False


def _model_doc(facts: Facts) -> dict[str, Any]:
    """What every window of the metrics needs, computed once from the full data.

    Works and review events (:func:`_work`) grouped by contractor and by skill, each
    group in columns sorted by time (stable, so within a group the order of the original
    pass is kept and float sums come out exactly as before); the review marks' times and
    whether each asked for changes; each deliverable's first review: time and latency.
    """
    works, events = _work(facts)

    def grouped(key: str) -> dict[str, Any]:
        works_of: dict[str, list[int]] = {}
        for i, w in enumerate(works):
            works_of.setdefault(getattr(w, key), []).append(i)
        events_of: dict[str, list[int]] = {}
        for i, e in enumerate(events):
            events_of.setdefault(getattr(e, key), []).append(i)
        out: dict[str, dict[str, Any]] = {}
        for name in [*works_of, *(n for n in events_of if n not in works_of)]:
            ws = sorted(works_of.get(name, ()), key=lambda i: works[i].received)  # stable
            es = sorted(events_of.get(name, ()), key=lambda i: events[i].reviewed)
            wl = [works[i] for i in ws]
            el = [events[i] for i in es]
            group = out[name] = {
                "works": {"t": [w.received for w in wl], "s": [w.status for w in wl],
                          "r": [w.rating for w in wl], "c": [w.cost for w in wl],
                          "e": [w.estimated for w in wl], "h": [w.turnaround for w in wl]},
                "events": {"t": [e.reviewed for e in el], "x": [int(e.changes) for e in el],
                           "l": [e.latency for e in el]},
            }
            if key == "skill":  # which contractor's currency a skill's row takes: _first_seen
                group["works"].update(i=ws, k=[w.contractor_id for w in wl])
                group["events"].update(i=es, k=[e.contractor_id for e in el])
        return out

    return {"contractors": grouped("contractor_id"), "skills": grouped("skill"),
            **_marks_doc(facts)}


def review_marks(facts: Facts, since: str = "") -> dict[str, Any]:
    """The review marks' times (``marks_t``, sorted), whether each asked for changes
    (``marks_x``), and each deliverable's first review (``first_reviews``: ``[time,
    latency hours]``, sorted by time): from :func:`model` when ``facts`` came from the
    store (its read model) or the model is built already, else computed on their own.

    A caller that keeps the first reviews itself (the dashboard) may put them, in that
    shape and order, in ``facts._cache["first_reviews"]`` before the first use.
    ``since``: as for :func:`model` (only times from then on will be looked at)."""
    cached: dict[str, Any] | None = facts._cache.get("model") or facts._cache.get("marks")
    if cached is not None and since < facts._cache.get("model_from", ""):
        cached = None  # the recent part only: the marks before it are asked for
    if cached is None:
        if facts.store is not None and not facts._explicit:
            cached = model(facts, since)
        else:
            cached = facts._cache["marks"] = _marks_doc(facts)
    return cached


def _marks_doc(facts: Facts) -> dict[str, Any]:
    # as the store lists them (oldest first), the sorts change nothing; they are stable
    marks = [(e.get("reviewed_at") or "", e["status"] == "changes_requested",
              e["deliverable_id"]) for e in facts.reviews]
    first: list[list[Any]] | None = facts._cache.get("first_reviews")
    if first is None:
        received = {d["id"]: d.get("received_at") for d in facts.deliverables}
        first = []
        seen: set[str] = set()
        for at, _, did in marks:  # a deliverable's first in the listing's order
            if did in seen or did not in received:
                continue
            seen.add(did)
            first.append([at, hours_between(received[did], at)])
        first.sort(key=lambda f: str(f[0]))
    marks.sort(key=lambda m: m[0])
    return {"marks_t": [m[0] for m in marks], "marks_x": [int(m[1]) for m in marks],
            "first_reviews": first}


#: The partial result kept beside the delegation model (see :func:`_build_model`): bump
#: when its shape or what a row holds changes.
DERIVED_VERSION = "derived-2"
#: Any change to these and every kind of work and turnaround is computed afresh.
DERIVED_INPUTS = ("instructions",)
#: More message shards changed than this share of them: read every shard's threads at once
#: (and keep them in the thread-activity cache) rather than shard by shard.
FULL_SHARE = 0.5


def _reusable(old: list[Any] | None, key: list[Any]) -> TypeGuard[list[Any]]:
    """Whether a kept row (``[*derived_key, skill, hours]``) answers for ``key``."""
    return (old is not None and old[:6] == key and isinstance(old[6], str)
            and (old[7] is None or type(old[7]) in (int, float)))


class _Partial(NamedTuple):
    shards: dict[str, list[int]]  # message shard -> its stamp [inode, mtime_ns, size]
    out: dict[str, list[str]]  # message shard -> threads with an owner's message in it
    rows: dict[str, list[Any]]  # deliverable id -> [*derived_key, skill, turnaround]


def _partial(data: Any) -> _Partial | None:
    """A kept partial result, or None when it is not shaped as written (never trusted)."""
    if not isinstance(data, dict):
        return None
    shards, out, rows = data.get("shards"), data.get("out"), data.get("rows")
    if not (isinstance(shards, dict) and isinstance(out, dict) and isinstance(rows, dict)):
        return None
    if not (set(map(type, shards.values())) <= {list}
            and all(len(v) == 3 and set(map(type, v)) <= {int} for v in shards.values())
            and set(out) <= set(shards) and set(map(type, out.values())) <= {list}
            and all(set(map(type, v)) <= {str} for v in out.values())
            and set(map(type, rows.values())) <= {list}
            and set(map(len, rows.values())) <= {8}):
        return None
    return _Partial(shards, out, rows)


def _shard_stamps(store: Store) -> dict[str, list[int]]:
    """Each message shard file's stamp ``[inode, mtime_ns, size]`` by shard name."""
    return {path[len("messages/"):-len(".json")]: [ino, mtime, size]
            for path, ino, mtime, size in readmodels.input_stamps(store.root, ("messages",))}


def _build_model(store: Store, name: str, with_messages: bool = True,
                 facts: Facts | None = None) -> dict[str, Any]:
    """:func:`_model_doc` from the store, reusing what an earlier build computed.

    Each deliverable's kind of work and turnaround are kept beside the model
    (``<name>.partial.json``, saved for the state of the instructions they came from),
    with each message shard's stamp and the threads with an owner's message in it. A
    rebuild reuses a deliverable's row when its own fields and its contractor's skills
    are unchanged and no message shard that changed since (new, rewritten or gone) has
    or had an owner's message in its thread; the others are computed from the activity
    of their threads alone, read from the shards that hold the owner's messages in them.
    So a sync of a page reads the threads of the shards it wrote, not of every shard, and
    a review reads none. The output is the same as a build from nothing (tested)."""
    base = readmodels.input_stamps(store.root, DERIVED_INPUTS)
    stamps = _shard_stamps(store) if with_messages else {}
    if facts is None:
        facts = Facts.load(store, with_messages=with_messages)
        facts._parts["deliverables"] = _deliverables(store, facts.roster)
    kept = _partial(readmodels.load_partial(store, name, DERIVED_VERSION, DERIVED_INPUTS))
    shards: dict[str, list[int]] = {}
    out: dict[str, list[str]] = {}
    touched: set[str] = set()
    summaries: dict[str, dict[str, ThreadActivity]] = {}
    if with_messages:
        from agent.store.activity import shard_threads


        names = store.shard_names("messages")
        before = kept or _Partial({}, {}, {})
        changed = [n for n in names if stamps.get(n) is None or before.shards.get(n) != stamps[n]]
        gone = set(before.shards) - set(names)
        changed_set = set(changed)
        summaries = (shard_threads(store) if len(changed) > FULL_SHARE * len(names)
                     else shard_threads(store, changed))
        for n in names:
            if n in summaries and n in changed_set:
                out[n] = sorted(t for t, a in summaries[n].items() if a["out"])
            else:
                out[n] = before.out.get(n, [])
            shards[n] = stamps.get(n) or [0, 0, 0]
        for n in [*changed, *gone]:
            touched.update(before.out.get(n, ()))
            touched.update(out.get(n, ()))
    if kept is not None:
        facts._reuse = {k: v for k, v in kept.rows.items() if (v[2] or "") not in touched}
    if with_messages and "activity" not in facts._parts:
        facts._parts["activity"] = _needed_activity(store, facts, out, summaries)
    data = _model_doc(facts)
    if not with_messages or _shard_stamps(store) == stamps:  # else: a mix, not kept
        readmodels.save_partial(store, name, DERIVED_VERSION, DERIVED_INPUTS, base,
                                {"shards": shards, "out": out, "rows": facts._derived_rows})
    return data


#: What the delegation model reads of a deliverable (and of its ``review``).
DELIVERABLE_KEYS = ("id", "received_at", "identity", "contractor_id", "thread_id", "title",
                    "filename", "review_status", "replaces")
REVIEW_KEYS = ("rating", "cost", "hours")
PARTS_VERSION = "delegation-deliverables-1"


def _reduced(docs: list[Any]) -> list[dict[str, Any]]:
    """One deliverable shard's documents, each reduced to what the model reads."""
    out = []
    for doc in docs:
        small = {k: doc[k] for k in DELIVERABLE_KEYS if k in doc}
        review = doc.get("review")
        if review:
            small["review"] = {k: review[k] for k in REVIEW_KEYS if k in review}
        out.append(small)
    return out


def _reduced_ok(part: Any) -> bool:
    return (isinstance(part, list) and set(map(type, part)) <= {dict}
            and all(isinstance(d.get("id"), str) and isinstance(d.get("review") or {}, dict)
                    for d in part))


def _deliverables(store: Store, roster: Roster) -> list[DeliverableRecord]:
    """:meth:`Store.deliverables` reduced to what the delegation model reads, in its order
    (each shard's part kept with the shard's stamp: only the shards written since the
    last build are read)."""
    parts = readmodels.shard_parts(store, "delegation-deliverables", PARTS_VERSION,
                                   "deliverables", _reduced, _reduced_ok)
    out: list[DeliverableRecord] = []
    for part in reversed(parts):  # as Store.deliverables: newest shard first, then sorted
        for doc in part:
            resolved = roster.contractor_of(doc.get("identity")) or doc.get("contractor_id")
            out.append(cast("DeliverableRecord", dict(doc, contractor_id=resolved)))
    out.sort(key=lambda d: d.get("received_at") or "")
    return out


def _needed_activity(store: Store, facts: Facts, out: dict[str, list[str]],
                     summaries: dict[str, dict[str, ThreadActivity]]
                     ) -> dict[str, ThreadActivity]:
    """The activity (the owner's message times) of the threads of the deliverables whose
    row cannot be reused, from the shards with an owner's message in them (``out``, in
    shard order; ``summaries``: the shards' threads read already)."""
    from agent.store.activity import shard_threads

    by_id = {c["id"]: c for c in facts.contractors}
    needed: set[str] = set()
    for d in facts.deliverables:
        contractor = by_id.get(d.get("contractor_id") or "")
        if contractor is None:
            continue
        key = facts._keys[d["id"]] = derived_key(d, contractor)
        if not _reusable(facts._reuse.get(d["id"]), key):
            needed.add(d.get("thread_id") or "")
    where: dict[str, list[str]] = {}
    for shard, threads in out.items():
        for tid in threads:
            if tid in needed:
                where.setdefault(tid, []).append(shard)
    missing = sorted({s for shards in where.values() for s in shards} - set(summaries))
    if missing:
        summaries = {**summaries, **shard_threads(store, missing)}
    return {tid: cast("ThreadActivity", {"out": sorted(
        t for s in shards for t in summaries[s][tid]["out"])}) for tid, shards in where.items()}


readmodels.register("delegation", MODEL_VERSION, MODEL_INPUTS,
                    lambda store: _build_model(store, "delegation"))
readmodels.register("delegation-recent", RECENT_VERSION, MODEL_INPUTS, _build_recent)


def refresh_read_models(store: Store) -> list[str]:
    """Rebuild the read models in use that the store's files no longer match (called by
    writers after a sync or a review, outside the write lock), the newest messages'
    (:mod:`agent.store.recent`) too; returns their names."""
    import agent.reviewqueue  # noqa: F401  (registers the review queue's model)
    from agent.store import recent

    rebuilt = readmodels.refresh(store)
    if recent.refresh(store):
        rebuilt.append(recent.NAME)
    return rebuilt


def _work(facts: Facts) -> tuple[list[Work], list[ReviewEvent]]:
    """Each deliverable of a contractor as a :class:`Work` and the review events, once per
    :class:`Facts` (``_cache["work"]``, which the dashboard fills for a view of a period)."""
    cached: tuple[list[Work], list[ReviewEvent]] | None = facts._cache.get("work")
    if cached is None:
        cached = facts._cache["work"] = _derive(facts)
    return cached


def _derive(facts: Facts) -> tuple[list[Work], list[ReviewEvent]]:
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
    return list(works.values()), events


def _span(times: list[str], lo: str, hi: str) -> tuple[int, int]:
    return bisect.bisect_left(times, lo), bisect.bisect_left(times, hi)


def _row(group: dict[str, Any] | None, lo: str, hi: str, currency: str,
         platform: float = 0.0, has_spend: bool = False) -> dict[str, Any]:
    """One row of metrics: a group's works and events with ``lo <= time < hi``, plus
    ``platform`` spend from contracts (``has_spend``: some contract counted).

    Straight from the group's time-sorted columns, in one pass per column: what adding
    the group to an empty accumulator and finishing it computed before, float for float
    (sums in the columns' order, from 0.0)."""
    n = approved = changes = reviewed = events = asked = 0
    ratings: list[float] = []
    turnarounds: list[float] = []
    latencies: list[float] = []
    entered = estimated = 0.0
    if group is not None:
        w = group["works"]
        a, b = _span(w["t"], lo, hi)
        if b > a:
            status = w["s"][a:b]
            n = b - a
            approved, changes = status.count("approved"), status.count("changes_requested")
            reviewed = n - status.count("unreviewed")
            ratings = [r for r in w["r"][a:b] if r is not None]
            turnarounds = [h for h in w["h"][a:b] if h is not None]
            for cost, guess in zip(w["c"][a:b], w["e"][a:b], strict=True):
                if cost is not None:
                    entered += cost
                    has_spend = True
                elif guess is not None:
                    estimated += guess
                    has_spend = True
        e = group["events"]
        a, b = _span(e["t"], lo, hi)
        if b > a:
            events = b - a
            asked = sum(e["x"][a:b])
            latencies = [x for x in e["l"][a:b] if x is not None]
    spend = round(platform + entered + estimated, 2) if has_spend else None
    return {
        "deliverables": n, "reviewed": reviewed, "approved": approved,
        "changes_requested": changes, "unreviewed": n - approved - changes,
        "average_rating": round(sum(ratings) / len(ratings), 2) if ratings else None,
        "revision_rate": round(asked / events, 3) if events else None,
        "median_turnaround_hours": _round(median(turnarounds), 1),
        "median_review_latency_hours": _round(median(latencies), 1),
        "spend": spend, "spend_estimated": has_spend and estimated > 0,
        "currency": currency,
        "cost_per_deliverable": round(spend / n, 2) if spend is not None and n else None,
    }


def _first_seen(group: dict[str, Any], lo: str, hi: str) -> tuple[int, int, str] | None:
    """Where a group first shows in one pass over the window (works first, then events):
    ``(0 or 1, position, contractor id)``, or None when nothing of it is in the window."""
    for rank, part in enumerate(("works", "events")):
        cols = group[part]
        a, b = _span(cols["t"], lo, hi)
        if b > a:
            at = min(range(a, b), key=cols["i"].__getitem__)
            return rank, cols["i"][at], cols["k"][at]
    return None


def _currency(doc: Mapping[str, Any] | None) -> str:
    return (doc or {}).get("currency") or "USD"


def compute(facts: Facts, *, since: datetime | None = None, until: datetime | None = None,
            by_skill: bool = False) -> dict[str, dict[str, Any]]:
    """Metrics per contractor id (or, with ``by_skill``, per skill) for a period."""
    lo, hi = iso(since) or "", iso(until) or "\uffff"
    by_id = {c["id"]: c for c in facts.contractors}
    data = model(facts, lo)
    if by_skill:
        found = []
        for skill, group in data["skills"].items():
            first = _first_seen(group, lo, hi)
            if first is not None:
                found.append((first, skill, group))
        return {skill: _row(group, lo, hi, _currency(by_id.get(cid)))
                for (_, _, cid), skill, group in sorted(found, key=lambda item: item[0][:2])}
    # contracts in the period: spend on the platform, and its currency, per contractor
    platform: dict[str, list[Any]] = {}
    for k in facts.contracts:
        owner = facts.roster.contractor_of(k.get("identity"))
        spent = k.get("spent")
        if owner is None or owner not in by_id or spent is None:
            continue
        start = k.get("started_at") or ""
        end = k.get("ended_at")
        if start < hi and (end is None or end >= lo):
            mine = platform.setdefault(owner, [0.0, _currency(by_id[owner])])
            mine[0] += float(spent)
            mine[1] = k.get("currency") or mine[1]
    groups = data["contractors"]
    out: dict[str, dict[str, Any]] = {}
    for cid in by_id:  # each contractor once, where it first shows in the roster
        paid = platform.get(cid)
        out[cid] = (_row(groups.get(cid), lo, hi, _currency(by_id[cid])) if paid is None
                    else _row(groups.get(cid), lo, hi, paid[1], paid[0], True))
    return out


#: The roster read model (``retainer contractors``): bump when :func:`roster_rows` changes.
ROSTER_VERSION = "roster-1"
ROSTER_INPUTS = (*MODEL_INPUTS, "contracts")


def roster_rows(store: Store, facts: Facts | None = None,
                metrics: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every contractor with identities, contact dates and all-time metrics, by name
    (``metrics``: :func:`compute` of ``facts``, when the caller has it already).

    Without ``facts`` or ``metrics``, from the store's ``roster`` read model (one small
    document, rebuilt whenever the roster, a deliverable, review, instruction, message or
    contract changed), so listing the roster does not compute anything.
    """
    if facts is None and metrics is None:
        rows = readmodels.view(store, "roster", ROSTER_VERSION, ROSTER_INPUTS, _roster_model)
        if isinstance(rows, list) and all(isinstance(r, dict) and isinstance(r.get("id"), str)
                                          and isinstance(r.get("name"), str) for r in rows):
            return rows
        return _roster_model(store)  # not what we write: computed afresh, never trusted
    facts = facts or Facts.load(store)
    metrics = compute(facts) if metrics is None else metrics
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


def _roster_model(store: Store) -> list[dict[str, Any]]:
    return roster_rows(store, Facts.load(store))


readmodels.register("roster", ROSTER_VERSION, ROSTER_INPUTS, _roster_model)
