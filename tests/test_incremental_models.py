"""The delegation and review-queue read models, rebuilt from what earlier builds kept
(each deliverable shard's part, each message shard's threads, each deliverable's kind of
work and turnaround), equal byte for byte a build from nothing, over random stores
changed step by step: new mail, old mail landing in old shards, messages edited or
deleted, deliverables edited or deleted, reviews, roster changes and instructions."""

from __future__ import annotations

import random
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import reviewqueue
from agent.errors import StoreError
from agent.humanize import epoch, human_size
from agent.models import Attachment, Identity, Message
from agent.stats import Facts, _build_model, _model_doc, refresh_read_models, roster_rows
from agent.store import Store, layout
from agent.store import workflow as wf
from agent.store.storage import Shard
from agent.store.versions import version_label

OWNER = Identity("email", "owner@example.com", name="Owner")
OWNER_KEYS = frozenset({OWNER.key})
NOW = datetime(2026, 6, 1, tzinfo=UTC)
PEOPLE = 4
THREADS = 9


@pytest.fixture(autouse=True)
def small_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many small shards, so a change touches some of them and not others."""
    monkeypatch.setattr(layout, "SHARD_DOCS", 6)
    monkeypatch.setattr(layout, "DELIVERABLE_SHARD_DOCS", 3)


def truth(store: Store, with_messages: bool = True) -> Facts:
    """Facts read in full from the store, every part passed in: no read model is used."""
    return Facts(store.roster(), store.contractors(), store.deliverables(),
                 wf.review_events(store), wf.sent_instructions(store), store.contracts(),
                 wf.thread_activity(store) if with_messages else {})


def queue_truth(store: Store) -> list[list[Any]]:
    """The review queue's rows as they were built before the per-shard parts: from
    :meth:`Store.deliverables` (the shards' queue sides) and the roster."""
    names = {c["id"]: c["name"] for c in store.contractors()}
    return [[d["id"], d.get("received_at"), names.get(d.get("contractor_id") or ""),
             d.get("title") or "", d.get("filename") or "", human_size(d.get("size")),
             d.get("status") or "", bool(d.get("flagged")), d.get("note") or "",
             version_label(d), d.get("review_status") or "", epoch(d.get("received_at"))]
            for d in store.deliverables(unreviewed=True)]


class World:
    """A store on disk and what the steps sent into it."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.store = Store(data)
        self.sent: list[Message] = []
        self.serial = 0
        with self.store.writing():
            for c in range(PEOPLE):
                self.store.add_contractor(
                    f"Contractor {c}", [Identity("email", f"c{c}@example.com")],
                    skills=["logo"] if c % 2 else ["copywriting", "logo"], rate=20.0 + c)

    def message(self, rng: random.Random, when: datetime) -> Message:
        self.serial += 1
        n = self.serial
        t = rng.randrange(THREADS)
        who = Identity("email", f"c{t % PEOPLE}@example.com", name=f"Contractor {t % PEOPLE}")
        thread = f"<thread-{t}@example.com>"
        if rng.random() < 0.4:  # the owner's brief in the thread
            return Message(f"<o{n}@example.com>", when, OWNER, subject=f"Task {n}",
                           text="Please draw it", thread_remote_id=thread,
                           recipients=(who,), direction="out")
        name = rng.choice([f"logo-{n}.png", f"copy-{n}.pdf", f"draft-{n}.txt"])
        atts = (Attachment(name, "image/png", data=b"x" * (40 + n)),) if rng.random() < 0.7 else ()
        return Message(f"<i{n}@example.com>", when, who, subject=f"Re: Task {n}",
                       text="Here it is", thread_remote_id=thread, attachments=atts)

    def mail(self, rng: random.Random, count: int, past: bool) -> None:
        """A sync: new messages, now or (``past``) among older ones; some sent again
        edited (same remote id, other text and time)."""
        page: list[Message] = []
        for _ in range(count):
            if self.sent and rng.random() < 0.15:
                old = rng.choice(self.sent)
                page.append(Message(old.remote_id, old.sent_at - timedelta(hours=rng.randrange(1, 9)),
                                    old.sender, subject=old.subject, text="edited",
                                    thread_remote_id=old.thread_remote_id,
                                    recipients=old.recipients, direction=old.direction,
                                    attachments=old.attachments))
                continue
            days = rng.uniform(0, 120) if past else rng.uniform(120, 130)
            page.append(self.message(rng, NOW - timedelta(days=130) + timedelta(days=days)))
        self.sent.extend(page)
        with self.store.writing():
            self.store.commit_page("mail", "maildir", page, owner_keys=OWNER_KEYS)

    def review(self, rng: random.Random) -> None:
        waiting = self.store.deliverables(unreviewed=True)
        done = self.store.deliverables()
        picked = rng.sample(waiting, min(len(waiting), rng.randrange(1, 4)))
        if done and rng.random() < 0.5:
            picked.append(rng.choice(done))  # a second review of one
        items = []
        for doc in picked:
            received = datetime.fromisoformat(str(doc["received_at"]).replace("Z", "+00:00"))
            items.append((doc, {"status": rng.choice(["approved", "changes_requested"]),
                                "rating": rng.randrange(1, 6),
                                "cost": rng.choice([None, 10.5, 33.25]),
                                "hours": rng.choice([None, 1.5, 4.0]),
                                "when": received + timedelta(hours=rng.randrange(1, 90))}))
        if items:
            with self.store.writing():
                wf.record_reviews(self.store, items)

    def edit(self, rng: random.Random) -> None:
        docs = self.store.deliverables()
        if docs:
            doc = rng.choice(docs)
            with self.store.writing():
                self.store.update_deliverable(doc["id"], title=rng.choice(
                    ["New logo", "Copy for the site", "Misc"]))

    def drop(self, rng: random.Random, folder: str) -> None:
        """Documents deleted from one shard behind the store's back (another tool, a
        restored backup): only the shard's stamp tells."""
        names = self.store.shard_names(folder)
        if not names:
            return
        path = self.store.root / folder / f"{rng.choice(names)}.json"
        shard = Shard(path)
        ids = [d["id"] for d in shard.docs(folder)]
        shard.remove(folder, rng.sample(ids, min(len(ids), rng.randrange(1, 3))))
        shard.drop_cache()
        (self.store.root / "index" / f"{folder}.generation").unlink(missing_ok=True)

    def roster(self, rng: random.Random) -> None:
        with self.store.writing():
            choice = rng.randrange(3)
            cid = self.store.find_contractor(f"c{rng.randrange(PEOPLE)}@example.com")["id"]
            if choice == 0:
                self.store.update_contractor(cid, skills=rng.choice(
                    [["copywriting"], ["logo", "copywriting"], ["draft"], []]))
            elif choice == 1:
                self.store.update_contractor(cid, rate=rng.choice([None, 15.0, 99.0]))
            else:
                a, b = rng.sample(range(PEOPLE), 2)
                try:
                    self.store.merge_contractors(f"c{a}@example.com", f"c{b}@example.com")
                except StoreError:  # merged before: nothing to merge
                    return

    def instruction(self, rng: random.Random) -> None:
        cid = self.store.find_contractor(f"c{rng.randrange(PEOPLE)}@example.com")["id"]
        sent = NOW - timedelta(days=rng.uniform(5, 130))
        with self.store.writing():
            wf.record_instruction(self.store, {
                "template": "brief", "version": 1, "contractor_id": cid,
                "skill": rng.choice(["branding", "logo"]),
                "sent_at": sent.strftime("%Y-%m-%dT%H:%M:%SZ"), "text": "Draw"})


def from_nothing(data: Path, work: Path) -> tuple[bytes, bytes]:
    """The models built by a reader with no kept part: a copy of the store without its
    read models (new inodes too: every stamp differs)."""
    copy = work / "copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(data, copy)
    shutil.rmtree(copy / "store" / "index" / "views", ignore_errors=True)
    store = Store(copy)
    return (orjson.dumps(_build_model(store, "delegation")),
            orjson.dumps(reviewqueue._build(store)))


def check(world: World, work: Path) -> None:
    reader = Store(world.data)  # a fresh process's view
    incremental = orjson.dumps(_build_model(reader, "delegation"))
    queue = orjson.dumps(reviewqueue._build(reader))
    full = Store(world.data)
    assert incremental == orjson.dumps(_model_doc(truth(full)))
    without = _build_model(Store(world.data), "delegation-nomsg", with_messages=False)
    assert orjson.dumps(without) == orjson.dumps(_model_doc(truth(full, with_messages=False)))
    assert queue == orjson.dumps(queue_truth(full))
    assert (incremental, queue) == from_nothing(world.data, work)


STEP = st.one_of(
    st.tuples(st.just("mail"), st.integers(0, 2**32), st.integers(1, 14), st.booleans()),
    st.tuples(st.sampled_from(["review", "edit", "roster", "instruction", "drop_messages",
                               "drop_deliverables"]), st.integers(0, 2**32)),
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=st.integers(0, 2**32), steps=st.lists(STEP, min_size=1, max_size=7))
def test_incremental_builds_equal_a_build_from_nothing(first: int,
                                                       steps: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        world = World(work / "data")
        world.mail(random.Random(first), 30, past=False)
        check(world, work)
        for step in steps:
            rng = random.Random(step[1])
            if step[0] == "mail":
                world.mail(rng, step[2], step[3])
            elif step[0].startswith("drop_"):
                world.drop(rng, step[0][len("drop_"):])
            else:
                getattr(world, step[0])(rng)
            check(world, work)


def test_a_brief_deleted_from_an_old_shard_changes_a_turnaround(tmp_path: Path) -> None:
    """The owner's brief a delivery answers is deleted from a message shard older than
    the last one: that delivery's turnaround changes (its own deliverable shard is not
    written), and the incremental build sees it: it reads the changed shard's threads."""
    world = World(tmp_path / "data")
    world.mail(random.Random(7), 60, past=False)
    store = Store(world.data)
    roster_rows(store)  # the models in use
    before = _build_model(Store(world.data), "delegation")
    names = store.shard_names("messages")
    found = None
    for doc in store.deliverables():
        briefs = [m for m in store.thread_messages(doc["thread_id"])
                  if m.get("direction") == "out" and m["sent_at"] < doc["received_at"]]
        if briefs:
            brief = max(briefs, key=lambda m: m["sent_at"])
            shard = store.catalog("messages").where(brief["id"])
            if shard is not None and shard != names[-1]:
                found = (brief, shard)
                break
    assert found is not None, "the seed gives a delivery answering a brief in an old shard"
    brief, shard = found
    part = Shard(store.root / "messages" / f"{shard}.json")
    part.remove("messages", [brief["id"]])
    part.drop_cache()
    (store.root / "index" / "messages.generation").unlink(missing_ok=True)
    after = _build_model(Store(world.data), "delegation")
    assert after != before
    assert orjson.dumps(after) == orjson.dumps(_model_doc(truth(Store(world.data))))
    assert refresh_read_models(Store(world.data))  # the sync's refresh: same answers
    fresh = Store(world.data)
    assert roster_rows(fresh) == roster_rows(fresh, truth(fresh))
