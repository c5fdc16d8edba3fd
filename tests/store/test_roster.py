"""The roster's operations (agent/store/roster.py) on the store on disk and in memory:
adding, extending, updating, merging and demoting contractors; ignoring candidates; the
seed from the config; the backfill a promotion asks for."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.errors import StoreError
from agent.models import Identity
from agent.store import Store
from agent.store.ids import contractor_id_for
from agent.store.memory import MemoryStore
from agent.store.roster import IGNORED_FILE
from tests.store.contract import MARIA, OWNER_KEYS, SAM, SHOP, StoreFactory, at, inbound, stamp


@pytest.fixture(params=[Store, MemoryStore], ids=["disk", "memory"])
def factory(request: pytest.FixtureRequest) -> StoreFactory:
    made: StoreFactory = request.param
    return made


@pytest.fixture
def store(factory: StoreFactory, tmp_path: Path) -> Store:
    return factory(tmp_path / "data")


def commit(store: Store, records: list[Any], source: str = "inbox") -> None:
    with store.writing():
        store.commit_page(source, "imap", records, owner_keys=OWNER_KEYS)


def test_a_new_contractor_has_every_field(store: Store) -> None:
    with store.writing():
        doc = store.add_contractor("Maria Lopez", [MARIA, Identity("upwork", "~M")],
                                   status="core", skills=["web", "logo", "web"], rate=40.0,
                                   currency="EUR", notes="fast")
    assert doc["id"].startswith("c_") and len(doc["id"]) == 12
    assert {k: v for k, v in doc.items() if k not in ("id", "created_at",
                                                       "status_changed_at")} == {
        "name": "Maria Lopez", "status": "core", "skills": ["logo", "web"], "rate": 40.0,
        "currency": "EUR", "notes": "fast", "identities": [MARIA.key, "upwork:~m"],
        "merged_into": None}
    assert doc["created_at"] == doc["status_changed_at"] and doc["created_at"]
    assert store.find_contractor("Maria Lopez") == doc
    idents = {i["key"]: i for i in store.identities()}
    assert idents["upwork:~m"] == {"key": "upwork:~m", "platform": "upwork", "address": "~m",
                                   "name": "", "profile_url": "", "first_seen": None,
                                   "last_seen": None, "contractor_id": doc["id"]}
    assert idents[MARIA.key]["name"] == "Maria Lopez"


def test_a_contractor_without_identities_and_the_defaults(store: Store) -> None:
    with store.writing():
        doc = store.add_contractor("Nobody Yet")
        other = store.add_contractor("nobody yet")
    assert doc["id"] == other["id"]  # the same seed: the name
    assert doc["id"] == contractor_id_for("name:nobody yet")  # as earlier versions stored it
    assert (doc["status"], doc["skills"], doc["rate"], doc["currency"], doc["notes"],
            doc["identities"]) == ("trial", [], None, "USD", "", [])
    with store.writing(), pytest.raises(StoreError, match="status must be one of trial, "
                                                          "core, bench, retired"):
        store.add_contractor("X", status="hired")


def test_adding_an_identity_that_has_an_owner_extends_that_contractor(store: Store) -> None:
    with store.writing():
        first = store.add_contractor("Maria Lopez", [MARIA], skills=["logo"], rate=40.0)
        again = store.add_contractor("M. Lopez", [SAM, MARIA], skills=["web"], rate=10.0)
    assert again["id"] == first["id"] and again["name"] == "Maria Lopez"
    assert (again["skills"], again["rate"]) == (["logo", "web"], 40.0)
    assert again["identities"] == [MARIA.key, SAM.key]
    assert [c["id"] for c in store.contractors()] == [first["id"]]


def test_promoting_a_seen_candidate_asks_every_source_for_their_files(store: Store) -> None:
    commit(store, [inbound("a", 1, SAM, thread="s")])
    commit(store, [inbound("b", 2, SHOP, thread="n")], source="news")
    with store.writing():  # what the syncs of both sources recorded
        store.update_source_state("inbox", cursor={"uid": 1})
        store.update_source_state("news", cursor={"uid": 2}, backfill=["email:old@x"])
        store.add_contractor("Unseen", [Identity("email", "new@x")])
    assert "backfill" not in store.source_state("inbox")  # never seen: nothing to fetch
    with store.writing():
        store.add_contractor("Sam Chen", [SAM])
    assert store.source_state("inbox")["backfill"] == [SAM.key]
    assert store.source_state("news")["backfill"] == ["email:old@x", SAM.key]
    seen = next(i for i in store.identities() if i["key"] == SAM.key)
    assert (seen["first_seen"], seen["contractor_id"]) == \
        (stamp(1), store.find_contractor("Sam Chen")["id"])


def test_update_contractor_marks_a_status_change_only(store: Store) -> None:
    with store.writing():
        doc = store.add_contractor("Maria Lopez", [MARIA])
        same = store.update_contractor("Maria Lopez", status="trial", notes="x")
        moved = store.update_contractor(doc["id"], status="core")
    assert same["status_changed_at"] == doc["status_changed_at"] and same["notes"] == "x"
    assert (moved["status_changed_at"] or "") > (doc["status_changed_at"] or "")
    assert moved["status"] == "core" and moved["created_at"] == doc["created_at"]
    assert store.find_contractor("Maria Lopez")["status"] == "core"


def test_merging_keeps_one_contractor_and_a_pointer(store: Store) -> None:
    with store.writing():
        keep = store.add_contractor("Maria Lopez", [MARIA], skills=["logo"])
        other = store.add_contractor("Sam Chen", [SAM], skills=["web"], rate=25.0)
        with pytest.raises(StoreError) as err:
            store.merge_contractors("Maria Lopez", keep["id"])
        assert str(err.value) == "those are the same contractor"
        kept = store.merge_contractors("Maria Lopez", "Sam Chen")
    assert (kept["rate"], kept["skills"], kept["identities"]) == \
        (25.0, ["logo", "web"], sorted([MARIA.key, SAM.key]))
    merged = next(c for c in store.contractors(include_merged=True) if c["id"] == other["id"])
    assert (merged["merged_into"], merged["identities"]) == (keep["id"], [])
    assert {i["key"]: i["contractor_id"] for i in store.identities()} == \
        {MARIA.key: keep["id"], SAM.key: keep["id"]}
    with store.writing():
        rated = store.add_contractor("Ann", [Identity("email", "ann@x")], rate=50.0)
        store.add_contractor("Bo", [Identity("email", "bo@x")], rate=10.0)
        assert store.merge_contractors("Ann", "Bo")["rate"] == 50.0
    assert rated["rate"] == 50.0


def test_demoting_turns_identities_back_into_candidates(store: Store) -> None:
    with store.writing():
        store.add_contractor("Maria Lopez", [MARIA, Identity("upwork", "~m")])
        store.add_contractor("Sam Chen", [SAM])
        gone = store.demote("Maria Lopez")
    assert gone["name"] == "Maria Lopez"
    assert [c["name"] for c in store.contractors(include_merged=True)] == ["Sam Chen"]
    assert sorted(c["key"] for c in store.candidates()) == [MARIA.key, "upwork:~m"]
    with store.writing():
        store.add_contractor("Empty")
        store.demote("Empty")  # no identities: only the contractor goes
    assert [c["name"] for c in store.contractors()] == ["Sam Chen"]


def test_ignoring_candidates(store: Store) -> None:
    commit(store, [inbound("a", 1, SAM, thread="s"), inbound("b", 2, SHOP, thread="n")])
    with store.writing():
        store.add_contractor("Maria Lopez", [MARIA])
        changed = store.ignore_candidates([" EMAIL:Sam@Example.com ", SAM.key])
        assert [c["key"] for c in changed] == [SAM.key] and changed[0].get("ignored") is True
        assert store.ignore_candidates([SAM.key]) == []  # already: nothing written
        for bad in (MARIA.key, "email:nobody@x"):
            with pytest.raises(StoreError, match=f"{bad} is not a candidate; see `retainer "
                                                 "contractors candidates`"):
                store.ignore_candidates([SHOP.key, bad])
    assert [c["key"] for c in store.candidates()] == [SHOP.key]  # the refused call wrote nothing
    assert [c["key"] for c in store.candidates(ignored=True)] == [SAM.key]
    assert sorted(c["key"] for c in store.candidates(ignored=None)) == sorted([SAM.key,
                                                                              SHOP.key])
    with store.writing():
        shown = store.ignore_candidates([SAM.key], ignored=False)
    assert [c.get("ignored") for c in shown] == [None]
    assert sorted(c["key"] for c in store.candidates()) == sorted([SAM.key, SHOP.key])
    with store.writing():
        store.ignore_candidates([SHOP.key])
        store.add_contractor("Shop", [SHOP])  # promoted: no longer ignored
    shop = next(i for i in store.identities() if i["key"] == SHOP.key)
    assert "ignored" not in shop


@pytest.mark.parametrize(("content", "moved"), [
    (orjson.dumps([" Email:Sam@Example.com", "email:maria@example.com", 7]), [SAM.key]),
    (b"{not json", []), (orjson.dumps({"email:sam@example.com": True}), []),
])
def test_candidates_an_older_dashboard_ignored_move_into_the_store(
        factory: StoreFactory, tmp_path: Path, content: bytes, moved: list[str]) -> None:
    store = factory(tmp_path / "data")
    commit(store, [inbound("a", 1, SAM, thread="s"), inbound("b", 2, MARIA)])
    with store.writing():
        store.add_contractor("Maria Lopez", [MARIA])
    path = tmp_path / "data" / IGNORED_FILE
    path.parent.mkdir()
    path.write_bytes(content)
    if factory is MemoryStore:  # tables in memory: a new object starts empty
        from agent.store.roster import adopt_ignored_file
        adopt_ignored_file(store)
        reopened = store
    else:
        reopened = Store(tmp_path / "data")
    assert not path.exists()
    assert [c["key"] for c in reopened.candidates(ignored=True)] == moved
    assert reopened.find_contractor("Maria Lopez")["identities"] == [MARIA.key]


@dataclass
class Seed:
    name: str
    emails: list[str] = field(default_factory=list)
    identities: dict[str, str] = field(default_factory=dict)
    status: str = "trial"
    skills: list[str] = field(default_factory=list)
    rate: float | None = None
    currency: str = "USD"
    notes: str = ""


def test_contractors_from_the_config_are_added_once(store: Store) -> None:
    seeds = [Seed("Maria Lopez", ["maria@example.com"], {"upwork": "~m"}, status="core",
                  skills=["logo"], rate=40.0, currency="EUR", notes="n"),
             Seed("Sam Chen", ["sam@example.com"])]
    with store.writing():
        store.seed_contractors(seeds)
        first = store.find_contractor("Maria Lopez")
        assert (first["status"], first["skills"]) == ("core", ["logo"])
        store.update_contractor("Maria Lopez", status="bench", skills=[])  # the store stays
        store.seed_contractors(seeds)                                      # the truth
    maria, sam = sorted(store.contractors(), key=lambda c: c["name"])
    assert (maria["status"], maria["rate"], maria["currency"], maria["notes"],
            maria["skills"]) == ("bench", 40.0, "EUR", "n", [])
    assert sorted(maria["identities"]) == [MARIA.key, "upwork:~m"]
    assert sam["identities"] == [SAM.key]
    with store.writing():  # a known contractor is skipped, the next seed still added
        store.seed_contractors([seeds[1], Seed("Ann", ["ann@example.com"])])
    assert sorted(c["name"] for c in store.contractors()) == ["Ann", "Maria Lopez", "Sam Chen"]
    with store.writing():  # a new address of a known contractor joins them
        store.seed_contractors([Seed("Maria Lopez", ["maria@example.com", "m@new.example"])])
    assert len(store.contractors()) == 3
    assert "email:m@new.example" in store.find_contractor("Maria Lopez")["identities"]


def test_find_contractor_prefers_identity_then_exact_then_prefix(store: Store) -> None:
    with store.writing():
        maria = store.add_contractor("Maria Lopez", [MARIA])
        store.add_contractor("maria@example.com", [Identity("email", "other@x")])
    assert store.find_contractor(" MARIA@EXAMPLE.COM ")["id"] == maria["id"]
    assert store.find_contractor(maria["id"].upper())["id"] == maria["id"]
    with pytest.raises(StoreError) as err:
        store.find_contractor("c_")
    assert "matches several contractors" in str(err.value) and "use the id" in str(err.value)


def test_only_candidates_not_yet_ignored_move_from_the_older_file(
        store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from agent.store.roster import adopt_ignored_file

    commit(store, [inbound("a", 1, SAM, thread="s"), inbound("b", 2, SHOP, thread="n"),
                   inbound("c", 3, MARIA)])
    with store.writing():
        store.add_contractor("Maria Lopez", [MARIA])
        store.ignore_candidates([SHOP.key])
    before = {i["key"]: i for i in store.identities()}
    path = tmp_path / "data" / IGNORED_FILE
    path.parent.mkdir()
    path.write_bytes(orjson.dumps([SAM.key, SHOP.key, MARIA.key]))
    with caplog.at_level("INFO", logger="retainer.store"):
        adopt_ignored_file(store)
    assert f"moved 1 ignored candidates from {path} into the store" in caplog.messages
    after = {i["key"]: i for i in store.identities()}
    assert after[MARIA.key] == before[MARIA.key]  # on the roster: not marked
    assert after[SHOP.key] == before[SHOP.key]
    assert after[SAM.key] == dict(before[SAM.key], ignored=True)
    assert not path.exists()


def test_a_promoted_identity_keeps_its_first_name_and_takes_a_new_profile(store: Store) -> None:
    unnamed = Identity("email", "ann@example.com")
    commit(store, [inbound("a", 1, unnamed, thread="a"), inbound("b", 2, SAM, thread="s")])
    with store.writing():
        store.add_contractor("Ann", [Identity("email", "ann@example.com", name="Ann Lee",
                                              profile_url="https://x.example/ann")])
        store.add_contractor("Sam", [Identity("email", "sam@example.com", name="Samuel")])
        store.add_contractor("Sam", [Identity("email", "sam@example.com")])
    idents = {i["key"]: i for i in store.identities()}
    assert (idents["email:ann@example.com"]["name"],
            idents["email:ann@example.com"]["profile_url"]) == ("Ann Lee", "https://x.example/ann")
    assert idents[SAM.key]["name"] == "Sam Chen"  # the name it was first seen with
    assert idents[SAM.key]["profile_url"] == ""
    with store.writing():
        store.add_contractor("Ann", [Identity("email", "ann@example.com")])
    ann = next(i for i in store.identities() if i["key"] == "email:ann@example.com")
    assert (ann["name"], ann["profile_url"]) == ("Ann Lee", "https://x.example/ann")


def test_seen_times_stretch_over_every_message_whatever_the_order(store: Store) -> None:
    for n, hours in enumerate([3, 1, 5, 2]):  # a page each, older mail fetched later
        commit(store, [inbound(f"s{n}", hours, SAM, thread="s")])
    with store.writing():  # and one page holding both ends
        store.commit_page("news", "imap", [inbound("n1", 4, SHOP, thread="n"),
                                           inbound("n2", 0, SHOP, thread="n"),
                                           inbound("n3", 6, SHOP, thread="n"),
                                           inbound("n4", 2, SHOP, thread="n")],
                          owner_keys=OWNER_KEYS)
    seen = {i["key"]: (i["first_seen"], i["last_seen"]) for i in store.identities()}
    assert seen[SAM.key] == (stamp(1), stamp(5))
    assert seen[SHOP.key] == (stamp(0), stamp(6))


def test_a_contractor_gets_the_same_id_added_by_hand_or_hired_by_their_work(
        factory: StoreFactory, tmp_path: Path) -> None:
    from agent.models import Attachment, Submission

    ravi = Identity("upwork", "~01abc", name="Ravi K.")
    hired = factory(tmp_path / "a")
    with hired.writing():
        hired.commit_page("upwork", "upwork", [Submission("s1", at(1), ravi, Attachment(
            "page.zip", status="delivery_waiting"), under_contract=True)], owner_keys=OWNER_KEYS)
    added = factory(tmp_path / "b")
    with added.writing():
        doc = added.add_contractor("Ravi", [ravi, Identity("email", "ravi@example.com")])
    assert doc["id"] == hired.find_contractor("Ravi K.")["id"]


def test_adding_an_identity_already_on_the_roster_asks_for_nothing_again(store: Store) -> None:
    commit(store, [inbound("a", 1, SAM, thread="s")])
    with store.writing():
        store.update_source_state("inbox", cursor={"uid": 1})
        store.add_contractor("Sam Chen", [SAM])
    assert store.source_state("inbox")["backfill"] == [SAM.key]
    with store.writing():  # what the next sync does once it fetched the files
        store.update_source_state("inbox", backfill=[])
        store.add_contractor("Sam Chen", [SAM, Identity("upwork", "~sam")])
    assert store.source_state("inbox")["backfill"] == []


def test_a_merged_contractor_is_no_longer_found_by_name(store: Store) -> None:
    with store.writing():
        store.add_contractor("Maria Lopez", [MARIA])
        store.add_contractor("Sam", [SAM])
        store.merge_contractors("Maria Lopez", "Sam")
        kept = store.add_contractor("Sam", [Identity("email", "sam2@example.com")])
    assert store.find_contractor("sam")["id"] == kept["id"]  # not "several contractors"
    assert store.find_contractor(SAM.key)["name"] == "Maria Lopez"  # through the pointer
    roster = store.roster()
    assert roster.is_contractor(SAM) and roster.is_contractor(MARIA)
    assert not roster.is_contractor(SHOP)


def test_several_matches_name_the_first_five(store: Store) -> None:
    with store.writing():
        for n in range(7):
            store.add_contractor("Dup", [Identity("email", f"dup{n}@example.com")])
    with pytest.raises(StoreError) as err:
        store.find_contractor("dup")
    assert str(err.value).startswith('"dup" matches several contractors: Dup (c_')
    assert str(err.value).count("Dup (c_") == 5 and str(err.value).endswith("; use the id")


def test_a_contractor_added_now_is_stamped_in_utc(store: Store, monkeypatch: pytest.MonkeyPatch
                                                  ) -> None:
    """The times the store stamps itself (a contractor added, a status changed) are UTC
    whatever the machine's zone: they are compared with mail times, which are UTC."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # local time nine hours ahead of UTC
    time.tzset()
    try:
        before = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        with store.writing():
            cid = store.add_contractor("Sam Chen", [SAM])["id"]
            store.update_contractor(cid, status="core")
        after = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    finally:
        monkeypatch.undo()
        time.tzset()
    doc = store.find_contractor(cid)
    assert before <= doc["created_at"] <= doc["status_changed_at"] <= after
