"""The write path's rules, on the store on disk and the one in memory: who a record is
with, who joins the roster, what a failed page leaves behind, what a committed page says
it changed."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.errors import StoreError
from agent.models import Attachment, Contract, Identity, Message, Submission
from agent.store import Store, layout
from tests.store.contract import (
    MARIA,
    OWNER,
    OWNER_KEYS,
    SAM,
    SHOP,
    at,
    inbound,
    outbound,
    png,
    stamp,
)


def commit(store: Store, records: list[Any], source: str = "inbox", platform: str = "imap",
           owner_keys: frozenset[str] = OWNER_KEYS) -> Any:
    with store.writing():
        return store.commit_page(source, platform, records, owner_keys=owner_keys)


def keys(docs: list[Any]) -> list[str]:
    return sorted(d["key"] for d in docs)


def test_a_reply_counts_for_the_first_recipient_on_the_roster(store: Store) -> None:
    """Mail the owner sends is with the first recipient who is a contractor, else with the
    first who is not the owner; the owner's own identities never join the roster."""
    to_both = Message("o1", at(1), OWNER, recipients=(OWNER, SAM, MARIA), thread_remote_id="a")
    to_sam = Message("o2", at(2), OWNER, recipients=(OWNER, SAM, SHOP), thread_remote_id="b")
    to_me = Message("o3", at(3), OWNER, recipients=(OWNER,), thread_remote_id="c")
    commit(store, [to_both, to_sam, to_me])
    by_remote = {m["remote_id"]: m for m in store.messages()}
    maria = store.find_contractor("Maria Lopez")["id"]
    assert (by_remote["o1"]["identity"], by_remote["o1"]["contractor_id"]) == (MARIA.key, maria)
    assert (by_remote["o2"]["identity"], by_remote["o2"]["contractor_id"]) == (SAM.key, None)
    assert (by_remote["o3"]["identity"], by_remote["o3"]["contractor_id"]) == (None, None)
    assert {m["direction"] for m in by_remote.values()} == {"out"}
    assert keys(store.candidates()) == [SAM.key]  # SHOP was not the counterpart of anything
    assert OWNER.key not in keys(store.identities())
    maria_seen = next(i for i in store.identities() if i["key"] == MARIA.key)
    assert (maria_seen["first_seen"], maria_seen["last_seen"]) == (stamp(1), stamp(1))


def test_a_direction_given_by_the_connector_wins(store: Store) -> None:
    """A platform that says a message went out is believed, even when the sender is not
    one of the owner's identities (the owner's account on that platform)."""
    commit(store, [Message("x", at(1), SAM, recipients=(MARIA,), direction="out")])
    (doc,) = store.messages()
    assert (doc["direction"], doc["identity"]) == ("out", MARIA.key)


def test_a_system_message_is_with_nobody(store: Store) -> None:
    commit(store, [inbound("n", 1, SHOP, extra={"system": True})])
    (doc,) = store.messages()
    assert doc["identity"] is None and store.candidates() == []
    (thread,) = store.threads()
    assert thread["identity"] is None


def test_a_new_identity_joins_the_contractor_who_owns_its_profile(store: Store) -> None:
    """A platform account whose profile URL or e-mail address the roster knows is linked
    to that contractor; another is a candidate."""
    profile = "https://example.invalid/u/maria"
    with store.writing():
        store.add_contractor("Sam Chen", [Identity("upwork", "~sam", profile_url=profile)])
    sam = store.find_contractor("Sam Chen")["id"]
    maria = store.find_contractor("Maria Lopez")["id"]
    by_profile = Identity("fiverr", "samc", name="Sam C.", profile_url=profile)
    by_address = Identity("upwork", "Maria@Example.com")
    stranger = Identity("upwork", "nobody@example.com")
    commit(store, [inbound("a", 1, by_profile, thread="a"), inbound("b", 2, by_address,
                                                                    thread="b"),
                   inbound("c", 3, stranger, thread="c")], source="up", platform="upwork")
    contractor_of = {m["remote_id"]: m["contractor_id"] for m in store.messages()}
    assert contractor_of == {"a": sam, "b": maria, "c": None}
    assert sorted(store.find_contractor("Sam Chen")["identities"]) == \
        ["fiverr:samc", "upwork:~sam"]
    assert sorted(store.find_contractor("Maria Lopez")["identities"]) == \
        [MARIA.key, "upwork:maria@example.com"]
    assert keys(store.candidates()) == ["upwork:nobody@example.com"]


def test_an_email_identity_is_not_linked_by_address_to_itself(store: Store) -> None:
    """Only an account on another platform is linked through an e-mail address: a new
    address is a candidate, even one that contains another's address."""
    other = Identity("email", "x.maria@example.com")
    commit(store, [inbound("a", 1, other)])
    assert keys(store.candidates()) == [other.key]


def test_a_message_under_contract_hires_and_keeps_its_files(store: Store) -> None:
    ben = Identity("email", "ben@example.com", name="Ben")
    no_name = Identity("upwork", "~anon")
    result = commit(store, [
        inbound("a", 1, ben, under_contract=True, files=[png("a.png", b"a")]),
        inbound("b", 2, no_name, under_contract=True, thread="t2"),
        inbound("c", 3, SAM, under_contract=False, files=[png("c.png", b"c")], thread="t3"),
    ])
    hired = {c["name"]: c for c in store.contractors()}
    assert set(hired) == {"Maria Lopez", "Ben", "~anon"}  # no name: the address
    assert hired["Ben"]["identities"] == [ben.key] and hired["Ben"]["status"] == "trial"
    assert keys(store.candidates()) == [SAM.key]
    (work,) = store.deliverables()
    assert (work["filename"], work["contractor_id"]) == ("a.png", hired["Ben"]["id"])
    assert result.deliverables_new == 1 and [d["id"] for d in result.deliverables] == \
        [work["id"]]


def test_submissions_without_a_stated_contract_warn_and_hire(store: Store) -> None:
    ravi = Identity("upwork", "~ravi", name="Ravi")
    with pytest.warns(DeprecationWarning) as caught:
        commit(store, [Submission("s1", at(1), ravi, png("w.png", b"w"))], source="up",
               platform="upwork")
    (warning,) = [str(w.message) for w in caught if w.category is DeprecationWarning]
    assert warning.startswith("up: Submission 's1' does not say whether upwork:~ravi is "
                              "under contract, so they join the roster as before; set "
                              "Submission(under_contract=True)")
    assert store.find_contractor("Ravi")["identities"] == [ravi.key]
    (work,) = store.deliverables()
    assert work["status"] == "stored" and Path(work["path"] or "").read_bytes() == b"w"


def test_work_of_someone_not_under_contract_is_recorded_without_its_file(store: Store) -> None:
    stranger = Identity("upwork", "~x")
    result = commit(store, [Submission("s1", at(1), stranger, png("w.png", b"w"),
                                       under_contract=False, thread_remote_id="room",
                                       message_remote_id="m9", title="Draft",
                                       contract_remote_id="k1", extra={"n": 1})],
                    source="up", platform="upwork")
    (work,) = store.deliverables()
    assert (work["status"], work["path"], work["sha256"], work["contractor_id"]) == \
        ("not_downloaded", None, None, None)
    assert (work["identity"], work["title"], work["extra"]) == \
        (stranger.key, "Draft", {"contract_remote_id": "k1", "n": 1})
    assert work["thread_id"] is not None and work["message_id"] is not None
    assert work["thread_id"].startswith("t_") and work["message_id"].startswith("m_")
    assert list((store.data_dir / "files").iterdir()) == []
    assert result.deliverables_new == 1 and keys(store.candidates()) == [stranger.key]


def test_a_submission_by_a_contractor_names_its_thread_only_when_it_has_one(store: Store
                                                                          ) -> None:
    commit(store, [Submission("s1", at(1), MARIA, png("w.png", b"w"), under_contract=True)])
    (work,) = store.deliverables()
    assert (work["thread_id"], work["message_id"]) == (None, None)
    assert work["contractor_id"] == store.find_contractor("Maria Lopez")["id"]


def test_a_contract_hires_unless_it_is_with_the_owner(store: Store) -> None:
    ravi = Identity("upwork", "~ravi", name="Ravi")
    commit(store, [Contract("k1", ravi, started_at=at(0)), Contract("k2", OWNER)],
           source="up", platform="upwork")
    assert [c["name"] for c in store.contractors()] == ["Maria Lopez", "Ravi"]
    ravi_seen = next(i for i in store.identities() if i["key"] == ravi.key)
    assert ravi_seen["first_seen"] == stamp(0)
    by_remote = {c["remote_id"]: c for c in store.contracts()}
    assert (by_remote["k1"]["identity"], by_remote["k2"]["identity"]) == (ravi.key, None)


def test_a_record_of_another_type_is_refused_and_the_page_leaves_nothing(store: Store
                                                                       ) -> None:
    page: list[Any] = [inbound("a", 1, files=[png("a.png", b"a")]), "not a record"]
    with pytest.raises(StoreError, match="inbox: a connector yielded str, which is not a "
                                         "Message, Submission or Contract"):
        commit(store, page)
    assert store.messages() == [] and store.deliverables() == []
    assert list((store.data_dir / "files").iterdir()) == []
    assert list((store.data_dir / "tmp").iterdir()) == []
    commit(store, page[:1])  # the same file, kept once the page commits
    assert [Path(d["path"] or "").read_bytes() for d in store.deliverables()] == [b"a"]


def test_the_owners_identities_are_never_touched(store: Store) -> None:
    commit(store, [Message("a", at(1), OWNER, recipients=(MARIA,), under_contract=True),
                   Contract("k", OWNER), Submission("s", at(2), OWNER, png("o.png", b"o"),
                                                    under_contract=True)])
    assert OWNER.key not in keys(store.identities())
    assert [c["name"] for c in store.contractors()] == ["Maria Lopez"]


def test_commit_result_counts_what_changed(store: Store) -> None:
    first = commit(store, [inbound("a", 1, files=[png("a.png", b"a")]), inbound("b", 2)])
    assert (first.messages_new, first.messages_updated, first.deliverables_new) == (2, 0, 1)
    assert sorted(m["remote_id"] for m in first.messages) == ["a", "b"]
    again = commit(store, [inbound("a", 1, files=[png("a.png", b"a")], text="edited"),
                           inbound("c", 3)])
    assert (again.messages_new, again.messages_updated, again.deliverables_new) == (1, 1, 0)
    assert [m["remote_id"] for m in again.messages] == ["c"]
    assert again.deliverables == []


def test_a_page_with_the_same_message_twice_stores_it_once(store: Store) -> None:
    result = commit(store, [inbound("a", 1), inbound("a", 1, text="later copy")])
    assert result.messages_new == 1 and [m["remote_id"] for m in result.messages] == ["a"]
    (doc,) = store.messages()
    assert doc["text"] == "later copy"


def test_inline_and_unwanted_attachments_are_no_deliverables(store: Store) -> None:
    sig = Attachment("sig.png", data=b"s", inline=True, remote_id="1")
    skipped = Attachment("x.zip", status="not_downloaded", remote_id="2")
    link = Attachment("big.mov", status="link", url="https://example.invalid/m", remote_id="3")
    commit(store, [inbound("a", 1, files=[sig, skipped, link])])
    (work,) = store.deliverables()
    assert (work["filename"], work["status"], work["remote_id"]) == ("big.mov", "link", "a#3")
    (msg,) = store.messages()
    assert [(a["filename"], a["inline"], a.get("deliverable_id")) for a in msg["attachments"]] \
        == [("sig.png", True, None), ("x.zip", False, None), ("big.mov", False, work["id"])]
    assert msg["attachments"][2]["sha256"] is None


def test_attachments_without_a_remote_id_are_numbered(store: Store) -> None:
    commit(store, [inbound("a", 1, files=[Attachment("x.png", data=b"x"),
                                          Attachment("y.png", data=b"y")])])
    assert sorted(d["remote_id"] for d in store.deliverables()) == ["a#0", "a#1"]


def test_backfilled_work_enters_the_queue_even_before_the_cut_off(store: Store) -> None:
    with store.writing():
        store.set_review_since("2026-03-03")
    commit(store, [inbound("old", 1, files=[png("old.png", b"o")], extra={"backfill": True})])
    (work,) = store.deliverables()
    assert work["review_status"] == "unreviewed"


def test_a_thread_spans_its_messages_across_pages(store: Store) -> None:
    commit(store, [inbound("b", 5), inbound("a", 2, SHOP)])
    commit(store, [inbound("c", 1), inbound("d", 9)])
    (thread,) = store.threads()
    assert (thread["first_at"], thread["last_at"]) == (stamp(1), stamp(9))
    assert thread["identity"] == MARIA.key and thread["remote_id"] == "t1"
    no_thread = Message("solo", datetime(2026, 4, 1, tzinfo=UTC), SAM)
    commit(store, [no_thread])
    solo = next(t for t in store.threads() if t["remote_id"] == "solo")
    assert solo["first_at"] == solo["last_at"] == "2026-04-01T00:00:00Z"


def test_a_message_without_a_date_is_stored(store: Store) -> None:
    """Mail with no usable date is kept (sent ``""``), in its own thread entry."""
    commit(store, [Message("nodate", None, SAM, thread_remote_id="x")])  # type: ignore[arg-type]
    (doc,) = store.messages()
    assert doc["sent_at"] == ""
    (thread,) = store.threads()
    assert thread["first_at"] == thread["last_at"] == ""


def test_no_temp_file_is_left_by_a_committed_page(store: Store) -> None:
    commit(store, [inbound("a", 1, files=[png("a.png", b"a"), png("b.png", b"b", "2")])])
    assert list((store.data_dir / "tmp").iterdir()) == []
    files = sorted(p.name for p in (store.data_dir / "files").iterdir())
    assert len(files) == 2 and all(n.endswith(".png") for n in files)
    assert all(os.stat(store.data_dir / "files" / n).st_mode & 0o777 == 0o600 for n in files)


def test_a_later_page_inside_a_threads_span_keeps_the_span(store: Store) -> None:
    """A page whose messages fall inside a stored thread's time range leaves the range,
    and the thread's counterpart, as they were."""
    commit(store, [outbound("a", 1, to=SAM), inbound("d", 9)])
    commit(store, [inbound("b", 5), inbound("c", 6, SHOP)])
    (thread,) = store.threads()
    assert (thread["first_at"], thread["last_at"], thread["identity"]) == \
        (stamp(1), stamp(9), SAM.key)


def test_commit_result_counts_a_page_spread_over_several_shards(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a sync reports as new and updated counts every shard the page touched, not
    only the last (the open shard fills in the middle of a page)."""
    monkeypatch.setattr(layout, "SHARD_DOCS", 2)
    first = commit(store, [inbound(rid, hours) for hours, rid in enumerate("abcde")])
    assert (first.messages_new, first.messages_updated) == (5, 0)
    assert len(store.shard_names("messages")) == 3
    again = commit(store, [inbound("a", 0, text="edited"), inbound("e", 4, text="edited"),
                           inbound("f", 5)])
    assert (again.messages_new, again.messages_updated) == (1, 2)
    assert [m["remote_id"] for m in again.messages] == ["f"]


def test_the_same_new_message_twice_when_the_open_shard_fills(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first copy fills the open shard: the second goes to the same shard, so the
    message is stored once, not once in each of two shards."""
    monkeypatch.setattr(layout, "SHARD_DOCS", 2)
    commit(store, [inbound("a", 1)])
    result = commit(store, [inbound("b", 2), inbound("b", 2, text="later copy")])
    assert result.messages_new == 1
    assert sorted((m["remote_id"], m["text"]) for m in store.messages()) == \
        [("a", "message a"), ("b", "later copy")]


def test_a_refetched_file_that_changed_is_what_the_queue_shows_next(store: Store) -> None:
    """A file first only linked, fetched on a later page: the review queue read right after
    by the same process shows it as stored (a page that only updated one deliverable
    still renews its shard's summary)."""
    link = Attachment("cut.mov", status="link", url="https://example.invalid/m", remote_id="1")
    commit(store, [inbound("a", 1, files=[link])])
    (first,) = store.deliverables(unreviewed=True)
    assert first["status"] == "link"
    fetched = Attachment("cut.mov", "video/quicktime", data=b"movie", remote_id="1")
    result = commit(store, [inbound("a", 1, files=[fetched])])
    assert result.deliverables == []  # not new: the same deliverable, updated
    (queued,) = store.deliverables(unreviewed=True)
    assert (queued["id"], queued["status"], queued["size"]) == (first["id"], "stored", 5)
