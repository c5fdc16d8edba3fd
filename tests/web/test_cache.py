"""The dashboard's read model: after every kind of write, by this process or another, its
views equal what the store computes from scratch, and it re-read only what changed."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.models import Attachment, Identity, Message
from agent.report import build
from agent.stats import Facts, roster_rows
from agent.store import Store
from agent.store import workflow as wf
from agent.suggest import rank
from agent.web.cache import ReadModel, StoreAccess
from tests.support.workflow_mail import OWNER, synced


def _same_as_the_store(model: ReadModel, data: Path) -> None:
    """Every view of the model against the store's own answers, on a fresh Store."""
    fresh = Store(data)
    facts = Facts.load(fresh)
    model.refresh()
    expected = roster_rows(fresh, facts)
    assert model.roster_rows() == expected
    now = datetime.now(UTC)
    for days in (7, 30, 90):
        since = timedelta(days=days)
        got = build(model.store, since=since, now=now, facts=model.facts(),
                    metrics=lambda a, b, by_skill: model._period(now, a, b, by_skill))
        assert got == build(fresh, since=since, now=now, facts=Facts.load(fresh)), days
    for task in ("logo", "blog post copy", ""):
        assert model.suggest(task) == rank(task, expected, facts), task
    queue = list(model.queue(lambda doc, names: dict(doc)).values())
    assert [r["id"] for r in queue] == [d["id"] for d in fresh.deliverables(unreviewed=True)]
    assert {k: dict(v) for k, v in model.deliverable_map().items()} == {
        d["id"]: dict(d) for d in fresh.deliverables()}
    for c in fresh.contractors():
        mine = [m["id"] for m in fresh.messages(contractor=c["id"])]
        shown, total = model.messages_of(c["id"], limit=10_000)
        assert sorted(m["id"] for m in shown) == sorted(mine) and total == len(mine)
        assert model.reviews_of(c["id"]) == [r for r in facts.reviews
                                             if r.get("contractor_id") == c["id"]]


def _mail(n: int, sender: Identity, *, file: str = "", thread: str = "<new@x>") -> Message:
    atts = (Attachment(file, "application/pdf", data=b"%PDF " + file.encode()),) if file else ()
    return Message(f"<m{n}@example.com>", datetime.now(UTC) - timedelta(hours=n), sender,
                   subject=f"Update {n}", text="here", thread_remote_id=thread, attachments=atts)


def test_views_equal_the_store_after_every_kind_of_write(tmp_path: Path) -> None:
    synced(tmp_path)
    data = tmp_path / "data"
    model = ReadModel(Store(data))
    _same_as_the_store(model, data)
    other = Store(data)  # another process: the CLI, the daemon
    maria = Identity("email", "maria@example.com", name="Maria Lopez")
    stranger = Identity("email", "stranger@example.com", name="Stranger")
    owner = frozenset({f"email:{OWNER}"})

    def read_after(write: Any) -> int:
        before = model.stats["shards_read"]
        with other.writing():
            write()
        _same_as_the_store(model, data)
        return model.stats["shards_read"] - before

    waiting = other.deliverables(unreviewed=True)
    # a review: one deliverable shard changed, no message shard is read again
    assert read_after(lambda: wf.record_review(other, waiting[0]["id"], "changes_requested",
                                               rating=2, cost=80.0)) == 1
    assert read_after(lambda: wf.record_review(other, waiting[1]["id"], "approved",
                                               rating=5, hours=3.0)) == 1
    # a sync: new mail and a new version of Maria's logo, a candidate writes
    assert read_after(lambda: other.commit_page("mail", "maildir", [
        _mail(1, maria, file="logo-spring-v2.png", thread="<work-t1@example.com>"),
        _mail(2, maria), _mail(3, stranger)], owner_keys=owner)) <= 3
    # the owner writes in a thread shortly before a delivery: its turnaround changes
    work = next(d for d in other.deliverables() if d["filename"] == "checkout-design.pdf")
    thread = (other.stored_message(work["message_id"]) or {})["thread_remote_id"]
    nudge = Message("<nudge@owner.example.com>", datetime.fromisoformat(
        work["received_at"].replace("Z", "+00:00")) - timedelta(hours=2),
        Identity("email", OWNER), subject="Any news?", text="?", thread_remote_id=thread,
        recipients=(Identity("email", "priya@example.com"),), direction="out")
    before = model.roster_row(other.find_contractor("priya@example.com")["id"])
    assert read_after(lambda: other.commit_page("mail", "maildir", [nudge],
                                                owner_keys=owner)) == 1
    after = model.roster_row(other.find_contractor("priya@example.com")["id"])
    assert before and after and before["median_turnaround_hours"] != \
        after["median_turnaround_hours"]
    # the roster changes: skills and rate, a promotion, a merge, a demotion
    cid = other.find_contractor("maria@example.com")["id"]
    assert read_after(lambda: other.update_contractor(cid, skills=["logo", "print"],
                                                      rate=55.0)) == 0
    read_after(lambda: other.add_contractor("Stranger", [stranger]))
    read_after(lambda: other.merge_contractors(cid, other.find_contractor("Stranger")["id"]))
    read_after(lambda: other.demote("Sam Chen"))
    # an instruction sent before a delivery changes its turnaround and kind of work
    read_after(lambda: wf.record_instruction(other, {
        "template": "brief", "version": 1, "skill": "illustration", "contractor_id": cid,
        "sent_at": (datetime.now(UTC) - timedelta(days=21)).isoformat(), "task": "t",
        "text": "t"}))
    assert model.stats["shards_read"] < 20  # never the whole store again


def test_the_dashboard_s_own_writes_are_seen_by_its_next_request(tmp_path: Path) -> None:
    synced(tmp_path)
    access = StoreAccess(tmp_path / "data", threading.RLock())
    first = access.model()
    waiting = list(first.queue(lambda doc, names: dict(doc)))
    with access.writing() as store:
        wf.record_review(store, waiting[0], "approved", rating=4)
    model = access.model()
    assert model is first and waiting[0] not in model.queue(lambda doc, names: dict(doc))
    assert model.deliverable_map()[waiting[0]]["review_status"] == "approved"
    warmed = threading.Event()
    access.warm(lambda m: warmed.set())
    assert warmed.wait(10)
