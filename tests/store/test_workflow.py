"""The owner's workflow in the store (agent/store/workflow.py), on disk and in memory:
reviews and their events, the outbox, instruction templates and the instructions sent,
which reminders went out."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.errors import StoreError
from agent.store import Store
from agent.store import workflow as wf
from agent.store.ids import short_hash
from tests.store.contract import OWNER_KEYS, at, inbound, png, stamp


def delivered(store: Store, *names: str) -> list[str]:
    """Deliverable ids of files Maria sent, one message each."""
    with store.writing():
        store.commit_page("inbox", "imap", [
            inbound(f"m{n}", n + 1, files=[png(name, name.encode())], thread=f"t{n}")
            for n, name in enumerate(names)], owner_keys=OWNER_KEYS)
    by_name = {d["filename"]: d["id"] for d in store.deliverables()}
    return [by_name[name] for name in names]


def test_a_second_review_is_a_new_round_keeping_cost_hours_and_what_was_sent(
        store: Store) -> None:
    (did,) = delivered(store, "logo.png")
    maria = store.find_contractor("Maria Lopez")["id"]
    with store.writing():
        wf.record_review(store, did, "changes_requested", rating=2, feedback="bigger",
                         cost=80.0, hours=1.5, when=at(5))
        wf.record_sent(store, {"kind": "feedback", "to": "maria@example.com", "text": "bigger",
                               "sent_at": stamp(6), "remote_id": "<r1@x>"}, deliverable_id=did)
        doc = wf.record_review(store, did, "approved", rating=5, when=at(7))
    review = doc["review"]
    assert review is not None
    assert doc["review_status"] == "approved"
    assert {k: v for k, v in review.items() if k != "sent"} == {
        "status": "approved", "rating": 5, "feedback": "", "reviewed_at": stamp(7),
        "cost": 80.0, "hours": 1.5, "round": 2}
    (sent,) = wf.outbox(store)
    assert review["sent"] == [{"outbox_id": sent["id"], "sent_at": stamp(6),
                               "remote_id": "<r1@x>"}]
    assert store.deliverable(did) == doc
    with store.writing():  # new figures replace the kept ones
        again = wf.record_review(store, did, "approved", cost=90.0, hours=2.0, when=at(8))
    assert (again["review"] or {}).get("cost") == 90.0
    assert ((again["review"] or {}).get("hours"), (again["review"] or {}).get("round")) == (2.0, 3)
    first, second, third = wf.review_events(store)
    assert first == {
        "id": "r_" + short_hash(did, stamp(5), "1"), "deliverable_id": did,
        "status": "changes_requested", "rating": 2, "feedback": "bigger",
        "reviewed_at": stamp(5), "received_at": stamp(1), "identity": "email:maria@example.com",
        "contractor_id": maria}
    assert (second["id"], second["rating"], second["feedback"]) == \
        ("r_" + short_hash(did, stamp(7), "2"), 5, "")
    assert third["reviewed_at"] == stamp(8)


def test_review_events_come_oldest_first(store: Store) -> None:
    a, b = delivered(store, "a.png", "b.png")
    with store.writing():
        wf.record_reviews(store, [(store.deliverable(a), {"status": "approved", "when": at(9)}),
                                  (store.deliverable(b), {"status": "approved", "when": at(3)})])
    assert [(e["deliverable_id"], e["reviewed_at"]) for e in wf.review_events(store)] == \
        [(b, stamp(3)), (a, stamp(9))]
    assert [d["review_status"] for d in store.deliverables()] == ["approved", "approved"]
    assert [e["feedback"] for e in wf.review_events(store)] == ["", ""]  # none given
    assert [(d["review"] or {}).get("feedback") for d in store.deliverables()] == ["", ""]


def test_a_review_without_a_time_is_stamped_now_in_utc(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    (did,) = delivered(store, "a.png")
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # local time nine hours ahead of UTC
    time.tzset()
    try:
        before = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        with store.writing():
            doc = wf.record_review(store, did, "approved")
        after = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    finally:
        monkeypatch.undo()
        time.tzset()
    reviewed_at = (doc["review"] or {}).get("reviewed_at") or ""
    assert before <= reviewed_at <= after
    assert (doc["review"] or {}).get("rating") is None


@pytest.mark.parametrize(("status", "rating", "message"), [
    ("unreviewed", None, "a review is approved or changes_requested, not 'unreviewed'"),
    ("done", None, "a review is approved or changes_requested, not 'done'"),
    ("approved", 0, "a rating is a whole number from 1 to 5"),
    ("approved", 6, "a rating is a whole number from 1 to 5"),
])
def test_a_bad_review_is_refused_and_nothing_is_written(
        store: Store, status: str, rating: int | None, message: str) -> None:
    (did,) = delivered(store, "a.png")
    before = store.fingerprint()
    with store.writing(), pytest.raises(StoreError) as err:
        wf.record_review(store, did, status, rating=rating)
    assert str(err.value) == message
    assert store.fingerprint() == before and wf.review_events(store) == []


@pytest.mark.parametrize("rating", [1, 5])
def test_ratings_from_one_to_five(store: Store, rating: int) -> None:
    (did,) = delivered(store, "a.png")
    with store.writing():
        doc = wf.record_review(store, did, "approved", rating=rating)
    assert (doc["review"] or {}).get("rating") == rating


def test_a_review_of_a_deliverable_not_stored_is_refused(store: Store) -> None:
    (did,) = delivered(store, "a.png")
    ghost: dict[str, Any] = dict(store.deliverable(did), id="d_0000000000000000")
    with store.writing(), pytest.raises(StoreError) as err:
        wf.record_reviews(store, [(ghost, {"status": "approved"})])
    assert str(err.value) == "no deliverable d_0000000000000000; see `retainer deliverables`"
    assert wf.review_events(store) == []


def test_the_outbox_keeps_what_was_sent_oldest_first(store: Store) -> None:
    with store.writing():
        late = wf.record_sent(store, {"to": "a@x", "text": "late", "sent_at": stamp(5)})
        early = wf.record_sent(store, {"to": "b@x", "text": "early", "sent_at": stamp(1),
                                       "id": "o_given"})
        before = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        now = wf.record_sent(store, {"to": "c@x", "text": "now"})
    assert late["id"] == "o_" + short_hash(stamp(5), "late", "a@x")
    assert early["id"] == "o_given"
    assert before <= now["sent_at"] <= datetime.now(UTC).isoformat().replace("+00:00", "Z")
    assert now["id"] == "o_" + short_hash(now["sent_at"], "now", "c@x")
    assert [d.get("text") for d in wf.outbox(store)][:3] == ["early", "late", "now"]
    with store.writing():  # neither text nor address: the id still derives
        bare = wf.record_sent(store, {"kind": "note", "sent_at": stamp(9)})
    assert bare["id"] == "o_" + short_hash(stamp(9), "", "")
    assert wf.outbox(store)[0] == {"to": "b@x", "text": "early", "sent_at": stamp(1),
                                   "id": "o_given"}


def test_templates_keep_a_version_per_changed_text(store: Store) -> None:
    with store.writing():
        first = wf.save_template(store, " Logo-Brief ", "Draw {thing}", skill="logo",
                                 subject="Brief", when=at(1))
        same = wf.save_template(store, "logo-brief", "Draw {thing}", when=at(2))
        second = wf.save_template(store, "LOGO-BRIEF", "Draw {thing} in blue", when=at(3))
        wf.save_template(store, "alpha", "a", when=at(4))
    assert first == {"id": "logo-brief", "name": "logo-brief",
                     "versions": [{"version": 1, "text": "Draw {thing}",
                                   "created_at": stamp(1)}],
                     "skill": "logo", "subject": "Brief", "created_at": stamp(1),
                     "updated_at": stamp(1)}
    assert same["versions"] == first["versions"] and same["updated_at"] == stamp(2)
    assert (same["skill"], same["subject"]) == ("logo", "Brief")  # kept when not given
    assert second["versions"][1] == {"version": 2, "text": "Draw {thing} in blue",
                                     "created_at": stamp(3)}
    assert (second["created_at"], second["updated_at"]) == (stamp(1), stamp(3))
    assert wf.template(store, " LOGO-brief ") == second
    assert [t["name"] for t in wf.templates(store)] == ["alpha", "logo-brief"]
    with store.writing():
        changed = wf.save_template(store, "logo-brief", "Draw {thing} in blue", skill="web",
                                   subject="")
    assert (changed["skill"], changed["subject"], len(changed["versions"])) == ("web", "", 2)
    with pytest.raises(StoreError) as err:
        wf.template(store, "Nope")
    assert str(err.value) == 'no instruction template "Nope"; see `retainer instructions list`'


@pytest.mark.parametrize("name", ["", "  ", "a/b", "a\\b", "two\nlines"])
def test_a_template_name_is_one_line_without_slashes(store: Store, name: str) -> None:
    with store.writing(), pytest.raises(StoreError) as err:
        wf.save_template(store, name, "text")
    assert str(err.value) == "a template name is one line without slashes, e.g. logo-brief"
    assert wf.templates(store) == []


def test_instructions_sent_are_kept_oldest_first(store: Store) -> None:
    maria = store.find_contractor("Maria Lopez")["id"]
    entry = {"template": "logo-brief", "version": 2, "contractor_id": maria}
    with store.writing():
        late = wf.record_instruction(store, dict(entry, sent_at=stamp(4)))
        early = wf.record_instruction(store, dict(entry, sent_at=stamp(2), id="i_given"))
        now = wf.record_instruction(store, entry)
    assert late["id"] == "i_" + short_hash("logo-brief", "2", maria, stamp(4))
    assert early["id"] == "i_given"
    assert now["sent_at"] > stamp(4) and now["id"].startswith("i_") and "sent_at" not in entry
    assert [d["id"] for d in wf.sent_instructions(store)] == [early["id"], late["id"], now["id"]]
    assert wf.sent_instructions(store)[0] == dict(entry, sent_at=stamp(2), id="i_given")


def test_reminders_sent_are_kept_by_key(store: Store) -> None:
    before = store.fingerprint()
    with store.writing():
        wf.mark_notified(store, [])  # nothing to keep: nothing written
    assert store.fingerprint() == before and wf.notified(store) == {}
    with store.writing():
        wf.mark_notified(store, ["a", "b"], when=at(1))
        wf.mark_notified(store, ["b"], when=at(2))
        start = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        wf.mark_notified(store, ["c"])
    notified = wf.notified(store)
    assert {k: v["at"] for k, v in notified.items() if k != "c"} == {"a": stamp(1), "b": stamp(2)}
    assert notified["a"] == {"id": "a", "at": stamp(1)}
    assert notified["c"]["at"] >= start


def test_templates_live_in_instructions_json(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    with store.writing():
        wf.save_template(store, "brief", "text")
    assert (tmp_path / "data" / "store" / "instructions.json").is_file()
    assert wf.template(Store(tmp_path / "data"), "brief")["versions"][0]["text"] == "text"


def test_every_message_sent_about_a_deliverable_is_kept_on_its_review(store: Store) -> None:
    (did,) = delivered(store, "a.png")
    with store.writing():
        first = wf.record_sent(store, {"to": "m@x", "text": "one", "sent_at": stamp(2)},
                               deliverable_id=did)
        second = wf.record_sent(store, {"to": "m@x", "text": "two", "sent_at": stamp(3)},
                                deliverable_id=did)
    sent = (store.deliverable(did)["review"] or {}).get("sent")
    assert sent == [{"outbox_id": first["id"], "sent_at": stamp(2), "remote_id": None},
                    {"outbox_id": second["id"], "sent_at": stamp(3), "remote_id": None}]
