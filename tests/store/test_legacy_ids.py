"""Mail stored under an older kind of id keeps it (agent/store/pages.py,
``_stored_remote_id``): a re-fetch names the id an older Retainer gave it, and the store
updates that message instead of storing it a second time, when it is the same message
(same date and sender, no file the old record did not keep)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.models import Message
from agent.store import Store
from agent.store.ids import message_id_for
from agent.store.migrate import repaired_remote_id
from tests.store.contract import MARIA, OWNER_KEYS, SAM, at, png, stamp


def commit(store: Store, records: list[Any]) -> None:
    with store.writing():
        store.commit_page("inbox", "imap", records, owner_keys=OWNER_KEYS)


def msg(remote_id: str, hours: float = 1, sender: Any = MARIA, files: tuple[Any, ...] = (),
        **extra: Any) -> Message:
    return Message(remote_id, at(hours), sender, text=f"text {remote_id}", recipients=(),
                   thread_remote_id="t", attachments=files, extra=extra)


def remote_ids(store: Store) -> list[str]:
    return sorted(m["remote_id"] for m in store.messages())


def test_a_refetch_keeps_the_old_id_of_the_same_message(store: Store) -> None:
    commit(store, [msg("<old@x>")])
    commit(store, [msg("<new@x>|h", legacy_remote_id="<old@x>")])
    assert remote_ids(store) == ["<old@x>"]
    (doc,) = store.messages()
    assert doc["id"] == message_id_for("inbox", "<old@x>") and doc["text"] == "text <new@x>|h"


@pytest.mark.parametrize("other", [
    {"hours": 2}, {"sender": SAM},
], ids=["another date", "another sender"])
def test_another_message_under_the_old_id_is_not_taken_over(store: Store,
                                                            other: dict[str, Any]) -> None:
    commit(store, [msg("<old@x>")])
    commit(store, [msg("<new@x>|h", legacy_remote_id="<old@x>", **other)])
    assert remote_ids(store) == ["<new@x>|h", "<old@x>"]


def test_the_id_the_upgrade_repaired_is_found(store: Store) -> None:
    repaired = repaired_remote_id("<old@x>", stamp(1), MARIA.address)
    commit(store, [msg("<old@x>", 5, SAM), msg(repaired)])
    commit(store, [msg("<new@x>|h", legacy_remote_id="<old@x>")])
    assert remote_ids(store) == sorted(["<old@x>", repaired])


def test_header_hashes_name_the_old_id_without_a_date_check(store: Store) -> None:
    commit(store, [msg("hash-2", 7)])
    commit(store, [msg("<new@x>", 1, legacy_header_ids=["hash-1", 3, "hash-2"])])
    assert remote_ids(store) == ["hash-2"]
    assert store.messages()[0]["sent_at"] == stamp(1)


def test_a_file_the_old_record_did_not_keep_makes_it_another_message(store: Store) -> None:
    commit(store, [msg("<old@x>", files=(png("a.png", b"a"),))])
    commit(store, [msg("<n1@x>", files=(png("a.png", b"a"),), legacy_remote_id="<old@x>")])
    assert remote_ids(store) == ["<old@x>"]
    commit(store, [msg("<n2@x>", files=(png("b.png", b"b", "2"),), legacy_remote_id="<old@x>")])
    assert remote_ids(store) == ["<n2@x>", "<old@x>"]


def test_an_old_id_equal_to_the_new_one_or_unknown_changes_nothing(store: Store) -> None:
    commit(store, [msg("<same@x>", legacy_remote_id="<same@x>"),
                   msg("<b@x>", legacy_remote_id="<never-stored@x>"),
                   msg("<c@x>", legacy_remote_id=""), msg("<d@x>", legacy_header_ids="x")])
    assert remote_ids(store) == ["<b@x>", "<c@x>", "<d@x>", "<same@x>"]
