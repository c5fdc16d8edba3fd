"""The store contract: what every store gives back, whatever keeps its files.

:class:`StoreContract` is a class of tests over one fixture, ``make_store``: a callable
returning a fresh, empty store in a given folder. ``test_store_contract.py`` runs it
against :class:`~agent.store.Store` (shards on disk) and
:class:`~agent.store.memory.MemoryStore` (the fixture plugin authors get), so a test
that passes on the memory store says something about the real one.

Every read the contract makes goes through public store methods, and every record it
gets back is checked against its typed shape (:mod:`agent.models`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NotRequired, get_origin, get_type_hints

import pytest

from agent.errors import StoreError
from agent.models import (
    Attachment,
    Contract,
    ContractorRecord,
    ContractRecord,
    DeliverableRecord,
    Identity,
    IdentityRecord,
    Message,
    MessageRecord,
    Record,
    ReviewEvent,
    Submission,
    ThreadActivity,
    ThreadRecord,
)
from agent.store import Store, layout
from agent.store import workflow as wf

StoreFactory = Callable[[Path], Store]

OWNER = Identity("email", "owner@example.com", name="Owner")
OWNER_KEYS = frozenset({OWNER.key})
MARIA = Identity("email", "maria@example.com", name="Maria Lopez")
SAM = Identity("email", "sam@example.com", name="Sam Chen")
SHOP = Identity("email", "news@shop.example", name="Shop")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def stamp(hours: float) -> str:
    return at(hours).isoformat().replace("+00:00", "Z")


def inbound(remote_id: str, hours: float, sender: Identity = MARIA, *, thread: str = "t1",
            files: Sequence[Attachment] = (), text: str = "", **kw: Any) -> Message:
    return Message(remote_id, at(hours), sender, subject=kw.pop("subject", "Logo"),
                   text=text or f"message {remote_id}", thread_remote_id=thread,
                   recipients=(OWNER,), attachments=tuple(files), **kw)


def outbound(remote_id: str, hours: float, to: Identity = MARIA, *, thread: str = "t1"
             ) -> Message:
    return Message(remote_id, at(hours), OWNER, subject="Re: Logo", text="thanks",
                   thread_remote_id=thread, recipients=(to,))


def png(name: str, data: bytes, remote_id: str = "1") -> Attachment:
    return Attachment(name, "image/png", data=data, remote_id=remote_id)


def one_reviewed_deliverable(store: Store) -> None:
    """Maria on the roster, one message of hers with a file, and its review."""
    with store.writing():
        store.add_contractor("Maria Lopez", [MARIA])
        store.commit_page("inbox", "imap", [inbound("a", 1, files=[png("a.png", b"a")])],
                          owner_keys=OWNER_KEYS)
    with store.writing():
        wf.record_review(store, store.deliverables()[0]["id"], "approved")


def assert_shape(doc: Mapping[str, Any], record: Any) -> None:
    """``doc`` has every required key of the TypedDict ``record`` and no unknown key."""
    hints = get_type_hints(record, include_extras=True)  # agent.models postpones annotations
    allowed = set(hints)
    required = {key for key, hint in hints.items() if get_origin(hint) is not NotRequired}
    assert required <= doc.keys(), (record.__name__, sorted(required - doc.keys()))
    assert doc.keys() <= allowed, (record.__name__, sorted(doc.keys() - allowed))


class StoreContract:
    """Tests any store must pass; subclasses (or a conftest) provide ``make_store``."""

    @pytest.fixture
    def store(self, make_store: StoreFactory, tmp_path: Path) -> Store:
        store = make_store(tmp_path / "data")
        with store.writing():
            store.add_contractor("Maria Lopez", [MARIA], skills=["logo"], rate=40.0)
        return store

    @staticmethod
    def commit(store: Store, records: Sequence[Record], source: str = "inbox",
               platform: str = "imap") -> Any:
        with store.writing():
            return store.commit_page(source, platform, records, owner_keys=OWNER_KEYS)

    # -- the write path ------------------------------------------------------------------

    def test_a_page_committed_twice_changes_nothing(self, store: Store) -> None:
        page = [inbound("a", 1), inbound("b", 2)]
        first = self.commit(store, page)
        again = self.commit(store, page)
        assert (first.messages_new, first.messages_updated) == (2, 0)
        assert (again.messages_new, again.messages_updated, again.deliverables_new) == (0, 0, 0)
        assert sorted(m["id"] for m in first.messages) == sorted(m["id"] for m in store.messages())
        assert store.counts() == {"messages": 2, "deliverables": 0, "contractors": 1,
                                  "candidates": 0}

    def test_a_changed_message_is_updated_in_place(self, store: Store) -> None:
        self.commit(store, [inbound("a", 1, text="first")])
        result = self.commit(store, [inbound("a", 1, text="edited")])
        assert (result.messages_new, result.messages_updated) == (0, 1)
        (doc,) = store.messages()
        assert doc["text"] == "edited"

    def test_the_fingerprint_changes_with_every_write_only(self, store: Store) -> None:
        self.commit(store, [inbound("a", 1, files=[png("a.png", b"a")])])
        before = store.fingerprint()
        store.messages(), store.deliverables(), store.thread_activity(), store.counts()
        assert store.fingerprint() == before  # reads change nothing
        self.commit(store, [inbound("a", 1, files=[png("a.png", b"a")])])
        assert store.fingerprint() == before  # nor does a page that changes nothing
        with store.writing():
            wf.record_review(store, store.deliverables()[0]["id"], "approved")
        after_review = store.fingerprint()
        assert after_review != before
        self.commit(store, [inbound("b", 2)])
        assert store.fingerprint() not in (before, after_review)

    def test_cursor_and_sync_state_round_trip(self, store: Store) -> None:
        assert store.source_state("inbox") == {"source": "inbox"}
        with store.writing():
            store.update_source_state("inbox", cursor={"uid": 7}, last_ok=at(0))
        assert store.source_state("inbox") == {"source": "inbox", "cursor": {"uid": 7},
                                               "last_ok": stamp(0)}
        assert set(store.source_states()) == {"inbox"}

    # -- messages and threads ------------------------------------------------------------

    def test_messages_newest_first_with_contractor_resolved(self, store: Store) -> None:
        self.commit(store, [inbound("a", 1), outbound("b", 2), inbound("c", 3, SHOP, thread="n")])
        docs = store.messages()
        assert [d["remote_id"] for d in docs] == ["c", "b", "a"]
        maria = store.find_contractor("Maria Lopez")["id"]
        assert [d["contractor_id"] for d in docs] == [None, maria, maria]
        assert [d["direction"] for d in docs] == ["in", "out", "in"]
        for doc in docs:
            assert_shape(doc, MessageRecord)
        assert docs[0]["sender"] == {"address": "news@shop.example", "name": "Shop",
                                     "platform": "email"}
        assert docs[1]["recipients"] == [{"address": "maria@example.com",
                                          "name": "Maria Lopez"}]

    def test_messages_filter_by_contractor_and_source(self, store: Store) -> None:
        self.commit(store, [inbound("a", 1), inbound("n", 2, SHOP, thread="n")])
        self.commit(store, [inbound("u", 3, thread="u")], source="upwork", platform="upwork")
        assert [d["remote_id"] for d in store.messages(contractor="maria@example.com")] == \
            ["u", "a"]
        assert [d["remote_id"] for d in store.messages(source="inbox")] == ["n", "a"]
        assert [d["remote_id"] for d in store.messages(contractor="Maria Lopez",
                                                       source="upwork")] == ["u"]
        with pytest.raises(StoreError, match="no contractor matches"):
            store.iter_messages_newest_first(contractor="nobody")
        assert sorted(d["remote_id"] for d in store.iter_messages()) == ["a", "n", "u"]

    def test_one_message_by_id(self, store: Store) -> None:
        self.commit(store, [inbound("a", 1, text="hello")])
        (listed,) = store.messages()
        doc = store.message(listed["id"])
        assert doc is not None and doc["text"] == "hello" and doc["id"] == listed["id"]
        assert_shape(doc, MessageRecord)
        doc["text"] = "changed by the caller"  # a copy: the store keeps its own
        again = store.message(listed["id"])
        assert again is not None and again["text"] == "hello"
        assert store.message("m_0000000000000000") is None
        assert wf.message(store, listed["id"]) == store.message(listed["id"])

    def test_thread_messages_oldest_first(self, store: Store) -> None:
        self.commit(store, [inbound("c", 3), outbound("b", 2), inbound("a", 1),
                            inbound("x", 4, SAM, thread="other")])
        tid = store.messages(contractor="Maria Lopez")[0]["thread_id"]
        docs = store.thread_messages(tid)
        assert [d["remote_id"] for d in docs] == ["a", "b", "c"]
        assert {d["thread_id"] for d in docs} == {tid}
        assert store.thread_messages("t_0000000000000000") == []
        assert wf.thread_messages(store, tid) == docs

    def test_threads_merged_and_most_recent_first(self, store: Store) -> None:
        self.commit(store, [inbound("a", 1), outbound("b", 5), inbound("x", 3, SAM, thread="s")])
        self.commit(store, [inbound("y", 1, SHOP, thread="n")], source="news")
        threads = store.threads()
        assert [t["remote_id"] for t in threads] == ["t1", "s", "n"]
        first = threads[0]
        assert_shape(first, ThreadRecord)
        assert (first["first_at"], first["last_at"]) == (stamp(1), stamp(5))
        assert first["identity"] == MARIA.key and first["subject"] == "Logo"
        assert [t["remote_id"] for t in store.threads("news")] == ["n"]

    def test_thread_activity(self, store: Store) -> None:
        self.commit(store, [inbound("a", 1), outbound("b", 2), outbound("c", 4), inbound("d", 3),
                            inbound("x", 1, SAM, thread="s")])
        tid = store.messages(contractor="Maria Lopez")[0]["thread_id"]
        activity = store.thread_activity()
        assert set(activity) == {t["id"] for t in store.threads()} and len(activity) == 2
        entry = activity[tid]
        assert_shape(entry, ThreadActivity)
        last = next(m for m in store.messages() if m["remote_id"] == "c")
        assert entry == {"out": [stamp(2), stamp(4)], "last_at": stamp(4), "last_dir": "out",
                         "identity": MARIA.key, "last_id": last["id"]}
        self.commit(store, [inbound("e", 6)])  # a later page changes the answer
        assert store.thread_activity()[tid]["last_dir"] == "in"
        assert wf.thread_activity(store) == store.thread_activity()

    # -- the roster ----------------------------------------------------------------------

    def test_unknown_senders_are_candidates(self, store: Store) -> None:
        self.commit(store, [inbound("n", 1, SHOP, thread="n")])
        assert [c["name"] for c in store.contractors()] == ["Maria Lopez"]
        (candidate,) = store.candidates()
        assert_shape(candidate, IdentityRecord)
        assert (candidate["key"], candidate["contractor_id"]) == (SHOP.key, None)
        assert (candidate["first_seen"], candidate["last_seen"]) == (stamp(1), stamp(1))
        for doc in store.identities():
            assert_shape(doc, IdentityRecord)

    def test_find_contractor_by_name_identity_and_id_prefix(self, store: Store) -> None:
        maria = store.find_contractor("Maria Lopez")
        assert_shape(maria, ContractorRecord)
        assert (maria["skills"], maria["rate"], maria["status"]) == (["logo"], 40.0, "trial")
        assert store.find_contractor("MARIA@example.com") == maria
        assert store.find_contractor("email:maria@example.com") == maria
        assert store.find_contractor(maria["id"][2:6]) == maria
        with pytest.raises(StoreError, match="no contractor matches"):
            store.find_contractor("nobody")

    def test_update_merge_and_demote(self, store: Store) -> None:
        with store.writing():
            store.add_contractor("Sam Chen", [SAM], skills=["web"])
            updated = store.update_contractor("Sam Chen", status="core", notes="fast")
            with pytest.raises(StoreError, match="status must be one of"):
                store.update_contractor("Sam Chen", status="hired")
        assert (updated["status"], updated["notes"]) == ("core", "fast")
        self.commit(store, [inbound("x", 1, SAM, thread="s")])
        with store.writing():
            kept = store.merge_contractors("Maria Lopez", "Sam Chen")
        assert kept["skills"] == ["logo", "web"]
        assert sorted(kept["identities"]) == [MARIA.key, SAM.key]
        assert [c["name"] for c in store.contractors()] == ["Maria Lopez"]
        assert len(store.contractors(include_merged=True)) == 2
        assert store.messages()[0]["contractor_id"] == kept["id"]
        with store.writing():
            store.demote("Maria Lopez")
        assert store.contractors() == []
        assert sorted(c["key"] for c in store.candidates()) == [MARIA.key, SAM.key]

    def test_contracts_and_submissions_hire(self, store: Store) -> None:
        ravi = Identity("upwork", "~01abc", name="Ravi K.")
        self.commit(store, [
            Contract("k1", ravi, title="Landing page", kind="fixed", budget=500.0,
                     currency="USD", started_at=at(0)),
            Submission("s1", at(1), ravi, Attachment("page.zip", status="delivery_waiting",
                                                     url="https://example.invalid/d"),
                       under_contract=True),
        ], source="upwork", platform="upwork")
        hired = store.find_contractor("upwork:~01abc")
        assert (hired["name"], hired["status"]) == ("Ravi K.", "trial")
        assert (hired["skills"], hired["rate"], hired["currency"], hired["notes"]) == \
            ([], None, "USD", "")  # the defaults of a contractor hired by the work
        (contract,) = store.contracts()
        assert_shape(contract, ContractRecord)
        assert (contract["budget"], contract["identity"], contract["started_at"]) == \
            (500.0, ravi.key, stamp(0))
        (work,) = store.deliverables(contractor="Ravi K.")
        assert (work["status"], work["path"], work["url"]) == \
            ("delivery_waiting", None, "https://example.invalid/d")

    # -- deliverables and reviews --------------------------------------------------------

    def test_contractor_files_become_deliverables_kept_once(self, store: Store) -> None:
        self.commit(store, [inbound("a", 1, files=[png("logo.png", b"v1"),
                                                   png("sig.png", b"s", "2")]),
                            inbound("b", 2, files=[png("logo copy.png", b"v1")], thread="t2"),
                            inbound("n", 3, SHOP, thread="n", files=[png("ad.png", b"ad")])])
        docs = store.deliverables()
        assert [d["filename"] for d in docs] == ["logo.png", "sig.png", "logo copy.png"]
        for doc in docs:
            assert_shape(doc, DeliverableRecord)
            assert doc["review_status"] == "unreviewed" and doc["review"] is None
        assert docs[0]["sha256"] == docs[2]["sha256"] and docs[0]["path"] == docs[2]["path"]
        assert Path(docs[0]["path"] or "").read_bytes() == b"v1"
        message = store.message(docs[0]["message_id"] or "")
        assert message is not None
        assert [a.get("deliverable_id") for a in message["attachments"]] == \
            [docs[0]["id"], docs[1]["id"]]
        assert store.counts()["deliverables"] == 3
        assert store.source_counts() == {"inbox": {"messages": 3, "deliverables": 3}}
        assert store.stored_counts() == {"messages": 3, "deliverables": 3}

    def test_later_versions_are_linked(self, store: Store) -> None:
        self.commit(store, [inbound("a", 1, files=[png("logo.png", b"v1")])])
        self.commit(store, [inbound("b", 2, files=[png("Logo-v2 final.png", b"v2")])])
        first, second = store.deliverables()
        assert (first.get("version"), second.get("version")) == (1, 2)
        assert (second.get("replaces"), second.get("version_of")) == (first["id"], first["id"])
        assert second["work"] == "logo"

    def test_review_queue_reviews_and_their_events(self, store: Store) -> None:
        self.commit(store, [inbound("a", 1, files=[png("a.png", b"a")]),
                            inbound("b", 2, files=[png("b.png", b"b")])])
        first, second = store.deliverables(unreviewed=True)
        assert store.deliverable(first["id"][2:8]) == store.stored_deliverable(first["id"])
        with store.writing():
            reviewed = wf.record_review(store, first["id"], "approved", rating=5,
                                        feedback="great", hours=2.0, when=at(3))
        assert reviewed["review_status"] == "approved"
        assert [d["id"] for d in store.deliverables(unreviewed=True)] == [second["id"]]
        review = store.deliverable(first["id"])["review"]
        assert review is not None
        assert (review["rating"], review["hours"], review["round"]) == (5, 2.0, 1)
        (event,) = wf.review_events(store)
        assert_shape(event, ReviewEvent)
        assert (event["deliverable_id"], event["status"], event["reviewed_at"]) == \
            (first["id"], "approved", stamp(3))
        self.commit(store, [inbound("a", 1, files=[png("a.png", b"a")])])  # re-fetched
        assert store.deliverable(first["id"])["review_status"] == "approved"
        with pytest.raises(StoreError, match="no deliverable match"):
            store.deliverable("zzzz")

    def test_records_of_the_owners_work_roll_over_shards(
            self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        """Reviews, sent messages and reminders: every one read back, in order, however
        many shards they fill; one recorded again stays one."""
        monkeypatch.setattr(layout, "DELIVERABLE_SHARD_DOCS", 3)
        self.commit(store, [inbound(f"m{n}", n, files=[png(f"f{n}.png", b"%d" % n)])
                            for n in range(5)])
        docs = store.deliverables()
        with store.writing():
            for round_ in range(2):
                for n, doc in enumerate(docs):
                    wf.record_review(store, doc["id"], "changes_requested",
                                     feedback=f"r{round_}", when=at(10 * round_ + n))
            for n in range(7):
                wf.record_sent(store, {"kind": "feedback", "to": "maria@example.com",
                                       "text": f"t{n}", "sent_at": stamp(n)})
            wf.mark_notified(store, [f"k{n}" for n in range(8)], when=at(1))
            wf.mark_notified(store, ["k0"], when=at(2))
        events = wf.review_events(store)
        assert [e["reviewed_at"] for e in events] == sorted(
            stamp(10 * r + n) for r in range(2) for n in range(5))
        assert {e["feedback"] for e in events[5:]} == {"r1"}
        assert len(store.catalog("reviews").names()) == 4  # 10 reviews, 3 a shard
        assert len(store.catalog("outbox").names()) == 3
        assert [s["text"] for s in wf.outbox(store)] == [f"t{n}" for n in range(7)]
        notified = wf.notified(store)
        assert sorted(notified) == [f"k{n}" for n in range(8)]
        assert notified["k0"]["at"] == stamp(2)
        assert [(d.get("review") or {}).get("round") for d in store.deliverables()] == [2] * 5

    def test_update_deliverable(self, store: Store) -> None:
        self.commit(store, [inbound("a", 1, files=[png("a.png", b"a")])])
        (doc,) = store.deliverables()
        with store.writing():
            changed = store.update_deliverable(doc["id"], note="checked")
        assert changed["note"] == "checked" == store.deliverables()[0]["note"]
        assert [d["id"] for d in store.iter_deliverables()] == [doc["id"]]

    def test_work_before_the_cut_off_enters_as_handled(self, store: Store) -> None:
        with store.writing():
            store.set_review_since("2026-03-03")
        self.commit(store, [inbound("old", 1, files=[png("old.png", b"o")]),
                            inbound("new", 30, files=[png("new.png", b"n")], thread="t2")])
        assert store.review_since() == "2026-03-03"
        old, new = store.deliverables()
        assert (old["review_status"], new["review_status"]) == ("approved", "unreviewed")
        assert (old["review"] or {}).get("auto") == "received before review_since 2026-03-03"

    def test_promoting_a_candidate_asks_for_their_files(self, store: Store) -> None:
        skipped = Attachment("brief.pdf", remote_id="1", status="not_downloaded")
        self.commit(store, [inbound("s1", 1, SAM, thread="s", files=[skipped],
                                    extra={"uid": 41})])
        with store.writing():  # what a sync records after the page
            store.update_source_state("inbox", cursor={"uid": 41})
        assert store.deliverables() == []
        assert store.backfill_locators("inbox") == []
        with store.writing():
            store.add_contractor("Sam Chen", [SAM])
        assert store.source_state("inbox")["backfill"] == [SAM.key]
        assert store.backfill_locators("inbox") == [{"uid": 41, "stored": {  # + the message
            "remote_id": "s1", "thread_remote_id": "s", "subject": "Logo",
            "recipients": [{"address": OWNER.address, "name": OWNER.name}]}}]

    # -- what the quick check keeps ------------------------------------------------------

    def test_quick_records_are_kept_per_source_and_forgotten(self, store: Store) -> None:
        assert store.quick_record("inbox") is None
        with pytest.raises(StoreError, match=r"^save_quick_record\(\) outside writing\(\)$"):
            store.save_quick_record("inbox", {"cursor": 1})
        with store.writing():
            store.save_quick_record("inbox", {"cursor": (1, 2), "at": at(1), "n": None})
            store.save_quick_record("news", {"cursor": 3})
            store.save_quick_record("gone", None)  # forgetting an unknown source: nothing
        # kept as JSON holds it: a tuple as a list, a datetime as its ISO text
        assert store.quick_record("inbox") == {"cursor": [1, 2], "at": stamp(1), "n": None}
        assert store.quick_record("news") == {"cursor": 3}
        assert store.quick_record("gone") is None
        with store.writing():
            store.save_quick_record("inbox", None)
        assert store.quick_record("inbox") is None
        assert store.quick_record("news") == {"cursor": 3}  # the other source's stays

    def test_the_roster_stamp_changes_when_the_roster_is_written(self, store: Store) -> None:
        before = store.roster_stamp()
        assert before is not None  # the fixture added Maria
        store.contractors(), store.candidates(), store.find_contractor("Maria Lopez")
        assert store.roster_stamp() == before  # reads change nothing
        with store.writing():
            store.add_contractor("Sam Chen", [SAM])
        after = store.roster_stamp()
        assert after is not None and after != before
        with store.writing():
            store.update_contractor("Sam Chen", notes="fast")
        assert store.roster_stamp() not in (before, after)
