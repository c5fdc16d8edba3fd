"""What a stored document holds, field by field, for records that fill every field: what
the store writes is what the record said (agent/store/documents.py), on both stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.models import Attachment, Contract, Identity, Message
from agent.store import Store
from agent.store.ids import deliverable_id_for, message_id_for, short_hash, thread_id_for
from tests.store.contract import MARIA, OWNER, OWNER_KEYS, at, stamp


def commit(store: Store, records: list[Any], source: str = "inbox", platform: str = "imap"
           ) -> Any:
    with store.writing():
        return store.commit_page(source, platform, records, owner_keys=OWNER_KEYS)


def test_a_message_and_its_files_as_stored(store: Store) -> None:
    files = (Attachment("Logo v2.PNG", "image/png", data=b"png!", remote_id="p1"),
             Attachment("huge.mov", "video/quicktime", size=9_000_000, status="too_large",
                        remote_id="p2", note="over the limit"),
             Attachment("gone.zip", status="unavailable", remote_id="p3",
                        url="https://example.invalid/z"),
             Attachment("sig.gif", "image/gif", data=b"gif", inline=True, remote_id="p4"))
    record = Message("<m1@x>", at(1), MARIA, subject="Logo", text="see attached",
                     thread_remote_id="<t@x>", recipients=(OWNER,), attachments=files,
                     platform="gmail", extra={"uid": 7, "when": at(2)})
    commit(store, [record])
    (msg,) = store.messages()
    maria = store.find_contractor("Maria Lopez")["id"]
    mid, tid = message_id_for("inbox", "<m1@x>"), thread_id_for("inbox", "<t@x>")
    by_name = {d["filename"]: d for d in store.deliverables()}
    assert msg == {
        "id": mid, "source": "inbox", "platform": "gmail", "remote_id": "<m1@x>",
        "thread_id": tid, "thread_remote_id": "<t@x>", "contractor_id": maria,
        "identity": MARIA.key, "direction": "in", "sent_at": stamp(1), "subject": "Logo",
        "text": "see attached",
        "sender": {"address": "maria@example.com", "name": "Maria Lopez", "platform": "email"},
        "recipients": [{"address": "owner@example.com", "name": "Owner"}],
        "attachments": [
            {"filename": "Logo v2.PNG", "content_type": "image/png", "size": None,
             "status": "stored", "inline": False,
             "deliverable_id": by_name["Logo v2.PNG"]["id"],
             "sha256": by_name["Logo v2.PNG"]["sha256"]},
            {"filename": "huge.mov", "content_type": "video/quicktime", "size": 9_000_000,
             "status": "too_large", "inline": False, "deliverable_id": by_name["huge.mov"]["id"],
             "sha256": None},
            {"filename": "gone.zip", "content_type": "application/octet-stream", "size": None,
             "status": "unavailable", "inline": False,
             "deliverable_id": by_name["gone.zip"]["id"], "sha256": None},
            {"filename": "sig.gif", "content_type": "image/gif", "size": None,
             "status": "stored", "inline": True},
        ],
        "extra": {"uid": 7, "when": stamp(2)},
    }
    logo = dict(by_name["Logo v2.PNG"])
    path = Path(logo.pop("path") or "")
    assert path.read_bytes() == b"png!" and path.name == f"{logo['sha256']}.png"
    assert logo == {
        "id": deliverable_id_for("inbox", "<m1@x>#p1"), "source": "inbox",
        "platform": "gmail", "remote_id": "<m1@x>#p1", "message_id": mid, "thread_id": tid,
        "contractor_id": maria, "identity": MARIA.key, "filename": "Logo v2.PNG",
        "content_type": "image/png", "size": 4, "sha256": logo["sha256"], "url": "",
        "status": "stored", "flagged": False, "note": "", "title": "Logo",
        "received_at": stamp(1), "review_status": "unreviewed", "review": None, "extra": {},
        "work": "logo", "replaces_remote_id": None, "version": 1, "replaces": None,
        "version_of": None,
    }
    huge = by_name["huge.mov"]
    assert (huge["flagged"], huge["size"], huge["note"], huge["path"], huge["sha256"]) == \
        (True, 9_000_000, "over the limit", None, None)
    gone = by_name["gone.zip"]
    assert (gone["flagged"], gone["url"], gone["content_type"]) == \
        (True, "https://example.invalid/z", "application/octet-stream")
    (thread,) = store.threads()
    assert thread == {"id": tid, "source": "inbox", "platform": "gmail", "remote_id": "<t@x>",
                      "subject": "Logo", "identity": MARIA.key, "first_at": stamp(1),
                      "last_at": stamp(1)}


def test_a_message_without_extra_or_thread(store: Store) -> None:
    commit(store, [Message("solo", at(1), MARIA)])
    (msg,) = store.messages()
    assert (msg["extra"], msg["thread_remote_id"], msg["thread_id"], msg["recipients"]) == \
        ({}, "solo", thread_id_for("inbox", "solo"), [])
    assert msg["platform"] == "imap"  # the source's platform when the record names none


def test_a_contract_as_stored(store: Store) -> None:
    ravi = Identity("upwork", "~R", name="Ravi")
    commit(store, [Contract("k1", ravi, title="Landing page", status="active", kind="hourly",
                            started_at=at(0), ended_at=at(48), rate=30.0, budget=None,
                            spent=120.5, currency="EUR", thread_remote_id="room-1",
                            extra={"offer": 3}),
                   Contract("k2", ravi)], source="up", platform="upwork")
    first, second = sorted(store.contracts(), key=lambda c: c["remote_id"])
    assert first == {
        "id": "k_" + short_hash("up", "k1"), "source": "up", "platform": "upwork",
        "remote_id": "k1", "identity": "upwork:~r", "title": "Landing page",
        "status": "active", "kind": "hourly", "started_at": stamp(0), "ended_at": stamp(48),
        "rate": 30.0, "budget": None, "spent": 120.5, "currency": "EUR",
        "thread_id": thread_id_for("up", "room-1"), "extra": {"offer": 3},
    }
    assert (second["thread_id"], second["started_at"], second["extra"]) == (None, None, {})
