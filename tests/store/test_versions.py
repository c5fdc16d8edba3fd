"""Versions of one piece of work (agent/store/versions.py), through commit_page on both
stores: a later file with the same name apart from version marks, from the same person
in the same thread, is the next version; a record may name the one it replaces."""

from __future__ import annotations

from typing import Any

import pytest

from agent.models import Attachment, Message, Submission
from agent.store import Store
from agent.store.ids import deliverable_id_for
from tests.store.contract import MARIA, OWNER_KEYS, SAM, at, inbound, png


@pytest.fixture
def store(store: Store) -> Store:
    """The shared store (conftest: disk and memory, Maria on the roster) with Sam too."""
    with store.writing():
        store.add_contractor("Sam Chen", [SAM])
    return store


def commit(store: Store, records: list[Any]) -> Any:
    with store.writing():
        return store.commit_page("inbox", "imap", records, owner_keys=OWNER_KEYS)


def chain(store: Store) -> list[tuple[str, int, str | None, str | None]]:
    docs = sorted(store.deliverables(), key=lambda d: d["received_at"] or "")
    name = {d["id"]: d["filename"] for d in docs}
    return [(d["filename"], d.get("version") or 0, name.get(d.get("replaces") or ""),
             name.get(d.get("version_of") or "")) for d in docs]


def test_three_versions_in_three_pages_share_their_root(store: Store) -> None:
    commit(store, [inbound("a", 1, files=[png("logo.png", b"1")])])
    commit(store, [inbound("b", 2, files=[png("logo v2.png", b"2")])])
    commit(store, [inbound("c", 3, files=[png("Logo-final.png", b"3")])])
    assert chain(store) == [("logo.png", 1, None, None),
                            ("logo v2.png", 2, "logo.png", "logo.png"),
                            ("Logo-final.png", 3, "logo v2.png", "logo.png")]


def test_versions_within_one_page_follow_their_dates(store: Store) -> None:
    commit(store, [inbound("c", 3, files=[png("logo-v3.png", b"3")]),
                   inbound("a", 1, files=[png("logo.png", b"1")]),
                   inbound("b", 2, files=[png("logo-v2.png", b"2")])])
    assert chain(store) == [("logo.png", 1, None, None),
                            ("logo-v2.png", 2, "logo.png", "logo.png"),
                            ("logo-v3.png", 3, "logo-v2.png", "logo.png")]


def test_an_older_file_arriving_late_is_no_later_version(store: Store) -> None:
    commit(store, [inbound("b", 5, files=[png("logo v2.png", b"new")])])
    commit(store, [inbound("a", 1, files=[png("logo.png", b"old")])])
    assert [(f, v) for f, v, _, _ in chain(store)] == [("logo.png", 1), ("logo v2.png", 1)]


def test_other_people_threads_and_names_are_other_work(store: Store) -> None:
    commit(store, [inbound("a", 1, files=[png("logo.png", b"1")])])
    commit(store, [inbound("b", 2, SAM, files=[png("logo v2.png", b"2")]),
                   inbound("c", 3, thread="t9", files=[png("logo v3.png", b"3")]),
                   inbound("d", 4, files=[png("banner.png", b"4")])])
    assert [v for _, v, _, _ in chain(store)] == [1, 1, 1, 1]


def test_a_refetched_version_keeps_its_number(store: Store) -> None:
    page = [inbound("a", 1, files=[png("logo.png", b"1")])]
    commit(store, page)
    commit(store, [inbound("b", 2, files=[png("logo v2.png", b"2")])])
    commit(store, page)
    commit(store, [inbound("b", 2, files=[png("logo v2.png", b"2")])])
    assert chain(store) == [("logo.png", 1, None, None),
                            ("logo v2.png", 2, "logo.png", "logo.png")]


def test_a_record_naming_what_it_replaces_wins_over_names(store: Store) -> None:
    def work(rid: str, hours: float, name: str, data: bytes, replaces: str = "") -> Submission:
        return Submission(rid, at(hours), MARIA, Attachment(name, data=data),
                          under_contract=True, replaces=replaces)

    commit(store, [work("s1", 1, "first.png", b"1")])
    commit(store, [work("s2", 2, "second.png", b"2", replaces="s1")])
    commit(store, [work("s3", 3, "third.png", b"3", replaces="s2")])
    assert chain(store) == [("first.png", 1, None, None),
                            ("second.png", 2, "first.png", "first.png"),
                            ("third.png", 3, "second.png", "first.png")]


def test_replacements_within_one_page_count_on(store: Store) -> None:
    def work(rid: str, hours: float, replaces: str = "") -> Submission:
        return Submission(rid, at(hours), MARIA, Attachment(f"{rid}.png", data=rid.encode()),
                          under_contract=True, replaces=replaces)

    commit(store, [work("s1", 1), work("s2", 2, "s1"), work("s3", 3, "s2")])
    assert chain(store) == [("s1.png", 1, None, None), ("s2.png", 2, "s1.png", "s1.png"),
                            ("s3.png", 3, "s2.png", "s1.png")]


def test_two_versions_attached_to_one_message_are_a_chain(store: Store) -> None:
    """Both files of one message carry the same date: the later name is still the next
    version of the first, not a piece of work of its own."""
    commit(store, [inbound("a", 1, files=[png("logo.png", b"1", "p1"),
                                          png("logo v2.png", b"2", "p2")])])
    assert sorted(chain(store)) == [("logo v2.png", 2, "logo.png", "logo.png"),
                                    ("logo.png", 1, None, None)]


def test_replacing_work_never_stored_is_its_second_version(store: Store) -> None:
    """A record saying it replaces work Retainer never saw (sent before the first sync,
    or in a source not synced) is the second version of that work, whatever its name."""
    commit(store, [Submission("s2", at(2), MARIA, Attachment("final.png", data=b"2"),
                              under_contract=True, replaces="s1")])
    (doc,) = store.deliverables()
    unseen = deliverable_id_for("inbox", "s1")
    assert (doc["version"], doc["replaces"], doc["version_of"]) == (2, unseen, unseen)


def test_a_file_without_a_date_is_no_later_version(store: Store) -> None:
    """Mail with no usable date cannot be placed after the dated versions: its file is
    work of its own (version 1), not a guess at the next version."""
    commit(store, [inbound("a", 1, files=[png("logo.png", b"1")])])
    commit(store, [Message("nodate", None, MARIA, thread_remote_id="t1",  # type: ignore[arg-type]
                           attachments=(png("logo v2.png", b"2"),))])
    versions = {d["filename"]: (d["version"], d["replaces"]) for d in store.deliverables()}
    assert versions == {"logo.png": (1, None), "logo v2.png": (1, None)}


@pytest.mark.parametrize("pages", [1, 2], ids=["one page", "two pages"])
def test_dated_work_after_a_file_without_a_date_is_its_next_version(store: Store, pages: int
                                                                    ) -> None:
    undated = Message("nodate", None, MARIA, thread_remote_id="t1",  # type: ignore[arg-type]
                      attachments=(png("logo.png", b"1"),))
    dated = inbound("b", 2, files=[png("logo v2.png", b"2")])
    if pages == 1:
        commit(store, [dated, undated])
    else:
        commit(store, [undated])
        commit(store, [dated])
    versions = {d["filename"]: (d["version"], d["replaces"] is not None)
                for d in store.deliverables()}
    assert versions == {"logo.png": (1, False), "logo v2.png": (2, True)}


@pytest.mark.parametrize("pages", [1, 2], ids=["one page", "two pages"])
def test_an_older_file_in_the_page_does_not_break_the_chain(store: Store, pages: int) -> None:
    """A draft older than the latest stored version, fetched with a newer version: the
    newer one follows the latest version, however the mail was split into pages."""
    commit(store, [inbound("a", 1, files=[png("logo.png", b"1")])])
    commit(store, [inbound("b", 5, files=[png("logo v2.png", b"2")])])
    draft = inbound("c", 3, files=[png("logo draft.png", b"3")])
    newest = inbound("d", 7, files=[png("logo v3.png", b"4")])
    if pages == 1:
        commit(store, [draft, newest])
    else:
        commit(store, [draft])
        commit(store, [newest])
    assert chain(store) == [("logo.png", 1, None, None),
                            ("logo draft.png", 1, None, None),
                            ("logo v2.png", 2, "logo.png", "logo.png"),
                            ("logo v3.png", 3, "logo v2.png", "logo.png")]
