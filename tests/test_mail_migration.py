"""Stores written before mail ids named more than the Message-ID keep their ids and reviews."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from agent.connector import SourceContext
from agent.mail import message_from_bytes
from agent.models import Identity, Message
from agent.store import Store
from tests.servers.dovecot import Mailbox
from tests.test_mail_realworld import TEXT, attachment, mixed

OWNER = frozenset({"email:owner@example.com"})


def read(raw: bytes) -> Message:
    context = SourceContext(source="inbox", platform="imap", state_dir=Path("/nonexistent"),
                            scratch_dir=Path("/nonexistent"), max_attachment_bytes=1 << 20,
                            wants_attachments=lambda identity: True,
                            log=logging.getLogger("retainer.test"))
    return message_from_bytes(raw, context)


def as_stored_before(message: Message) -> Message:
    """The record older versions made: the Message-ID alone was the id."""
    legacy = message.extra["legacy_remote_id"]
    extra = {k: v for k, v in message.extra.items() if k != "legacy_remote_id"}
    return Message(remote_id=legacy, sent_at=message.sent_at, sender=message.sender,
                   subject=message.subject, text=message.text,
                   thread_remote_id=message.thread_remote_id, recipients=message.recipients,
                   attachments=message.attachments, extra=extra)


def test_old_ids_and_reviews_survive_a_reread_and_new_collisions_get_their_own(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    with store.writing():
        store.add_contractor("Maria", [Identity("email", "maria@example.com")])
    raw = mixed(TEXT, attachment(b"logo.pdf", b"%PDF v1"))
    new = read(raw)
    with store.writing():
        store.commit_page("inbox", "imap", [as_stored_before(new)], owner_keys=OWNER)
        (old,) = store.deliverables()
        store.update_deliverable(old["id"], review_status="approved")
    # the same message read again by this version (a copy in another folder, a reset)
    other = read(mixed(TEXT, attachment(b"logo-v2.pdf", b"%PDF v2")))  # same Message-ID
    with store.writing():
        store.commit_page("inbox", "imap", [new, other], owner_keys=OWNER)
    messages = list(store.iter_messages())
    assert sorted(m["remote_id"] for m in messages) == sorted(["<x@example.com>",
                                                               other.remote_id])
    by_name = {d["filename"]: d for d in store.deliverables()}
    assert set(by_name) == {"logo.pdf", "logo-v2.pdf"}
    assert by_name["logo.pdf"]["id"] == old["id"]
    assert by_name["logo.pdf"]["review_status"] == "approved"
    assert by_name["logo-v2.pdf"]["review_status"] == "unreviewed"


# -- a schema-1 store that holds one id in two months ------------------------------------


def two_month_store(path: Path, tmp: Path) -> tuple[bytes, bytes]:
    """A schema-1 store as versions before 2026-12 left it: two different messages with one
    Message-ID, in January and March, both stored under the bare Message-ID, their files
    under one deliverable id; the first approved, the second sent back. Returns both."""
    from tests.test_store_layout import write_v1

    january = mixed(TEXT, attachment(b"logo.pdf", b"%PDF v1"))
    march = mixed(TEXT, attachment(b"logo.pdf", b"%PDF v2"),
                  head=HEAD_MARCH)  # same Message-ID, same part, another message
    for raw, folder, status in ((january, path, "approved"), (march, tmp, "changes_requested")):
        store = Store(folder)
        with store.writing():
            store.set_review_since("")
            store.add_contractor("Maria", [Identity("email", "maria@example.com")])
            store.commit_page("inbox", "imap", [as_stored_before(read(raw))], owner_keys=OWNER)
            (doc,) = store.deliverables()
            store.update_deliverable(doc["id"], review_status=status)
        write_v1(store)
    for folder in ("messages", "deliverables"):  # the March month files join January's
        for month in (tmp / "store" / folder).glob("2026-03.json"):
            month.rename(path / "store" / folder / month.name)
    assert len(list((path / "store" / "messages").glob("*.json"))) == 2
    return january, march


HEAD_MARCH = (b"From: Maria <maria@example.com>\nTo: owner@example.com\n"
              b"Date: Wed, 04 Mar 2026 10:00:00 +0000\n")


def check_repaired(store: Store) -> dict[str, dict[str, object]]:
    messages = {m["sent_at"][:7]: m for m in store.iter_messages()}
    assert sorted(messages) == ["2026-01", "2026-03"]
    assert messages["2026-01"]["remote_id"] == "<x@example.com>"  # the first keeps its id
    assert messages["2026-03"]["remote_id"].startswith("<x@example.com>~r")
    deliverables = {d["received_at"][:7]: d for d in store.deliverables()}
    assert len({d["id"] for d in deliverables.values()}) == 2
    assert deliverables["2026-01"]["review_status"] == "approved"
    assert deliverables["2026-03"]["review_status"] == "changes_requested"
    for month, message in messages.items():  # message and file point at each other
        (entry,) = message["attachments"]
        assert entry["deliverable_id"] == deliverables[month]["id"]
        assert deliverables[month]["message_id"] == message["id"]
        assert store.deliverable(deliverables[month]["id"])["id"] == deliverables[month]["id"]
    return {"messages": messages, "deliverables": deliverables}


def test_one_id_in_two_months_becomes_two_messages_with_their_reviews(tmp_path: Path) -> None:
    january, march = two_month_store(tmp_path / "data", tmp_path / "other")
    store = Store(tmp_path / "data")  # the upgrade runs on open
    before = check_repaired(store)
    # both read again by this version: found under the ids they have, nothing new
    with store.writing():
        result = store.commit_page("inbox", "imap", [read(march), read(january)],
                                   owner_keys=OWNER)
    assert result.messages_new == 0 and result.deliverables_new == 0
    after = check_repaired(store)
    assert {k: v["id"] for k, v in after["deliverables"].items()} == \
        {k: v["id"] for k, v in before["deliverables"].items()}


def test_the_same_message_refetched_into_another_month_is_kept_once(tmp_path: Path) -> None:
    import json

    from tests.test_store_layout import write_v1

    store = Store(tmp_path / "data")
    with store.writing():
        store.set_review_since("")
        store.add_contractor("Maria", [Identity("email", "maria@example.com")])
        store.commit_page("inbox", "imap", [as_stored_before(read(mixed(TEXT)))],
                          owner_keys=OWNER)
    write_v1(store)
    january = json.loads((store.root / "messages" / "2026-01.json").read_bytes())
    for doc in january["messages"].values():  # undated mail fetched again in March
        doc["sent_at"] = doc["sent_at"].replace("2026-01", "2026-03")
    (store.root / "messages" / "2026-03.json").write_bytes(json.dumps(january).encode())
    assert [m["remote_id"] for m in Store(tmp_path / "data").iter_messages()] == \
        ["<x@example.com>"]


CHILD = """
import os, signal, sys
from pathlib import Path
import agent.store.storage as storage
import agent.store.migrate as migrate
import agent.store.layout as layout
limit = int(sys.argv[2])
calls = 0
def counted(real):
    def wrapper(*args, **kwargs):
        global calls
        calls += 1
        if calls == limit:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return wrapper
storage.write_private = counted(storage.write_private)
layout.write_derived = counted(layout.write_derived)
migrate.fsync_dir = counted(migrate.fsync_dir)
from agent.store import Store
Store(Path(sys.argv[1]))
"""


def test_a_kill_during_the_repair_leaves_the_old_store_or_the_repaired_one(
        tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    pristine = tmp_path / "pristine"
    two_month_store(pristine, tmp_path / "other")
    limit = 1
    while True:
        data = tmp_path / f"run{limit}"
        subprocess.run(["cp", "-a", str(pristine), str(data)], check=True)
        proc = subprocess.run([sys.executable, "-c", CHILD, str(data), str(limit)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr
        check_repaired(Store(data))  # the next open finishes or starts again
        if proc.returncode == 0:
            break
        limit += 1
    assert limit > 3


# -- mail without a Message-ID, stored by versions before 2026-12 ---------------------------

NO_ID = (b"From: Maria <maria@example.com>\nTo: owner@example.com\n"
         b"Received: from a by b; Mon, 05 Jan 2026 09:00:00 +0000\n"
         b"Subject: no id,\n  folded\nDate: Mon, 05 Jan 2026 10:00:00 +0000\n"
         b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"BOUNDARY-1234\"\n\n"
         b"--BOUNDARY-1234\n" + TEXT + b"\n--BOUNDARY-1234\n"
         + attachment(b"plan.pdf", b"%PDF plan") + b"\n--BOUNDARY-1234--\n")


def old_header_record(message: Message, old_id: str) -> Message:
    extra = {k: v for k, v in message.extra.items() if k != "legacy_header_ids"}
    return Message(remote_id=old_id, sent_at=message.sent_at, sender=message.sender,
                   subject=message.subject, text=message.text,
                   thread_remote_id=old_id, recipients=message.recipients,
                   attachments=message.attachments, extra=extra)


def imap_header_fields(mailbox: Mailbox, raw: bytes) -> bytes:
    """What versions before 2026-12 hashed over IMAP: the fields they fetched, as Dovecot
    returns them."""
    mailbox.append("INBOX", raw.replace(b"\n", b"\r\n"))
    with mailbox.connect() as imap:
        imap.select("INBOX")
        typ, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (DATE FROM SENDER TO "
                             "CC SUBJECT MESSAGE-ID IN-REPLY-TO REFERENCES)])")
    assert typ == "OK"
    item = data[0]
    assert isinstance(item, tuple)
    return item[1]


def test_mail_without_message_id_keeps_the_id_an_old_version_gave_it(
        tmp_path: Path, dovecot_mailbox: Mailbox) -> None:
    fields = imap_header_fields(dovecot_mailbox, NO_ID)
    old_ids = {  # per path and line endings, as versions before 2026-12 named it
        "imap": "sha256:" + hashlib.sha256(fields).hexdigest(),
        "maildir": "sha256:" + hashlib.sha256(NO_ID.split(b"\n\n")[0]).hexdigest(),
        "maildir crlf": "sha256:" + hashlib.sha256(
            NO_ID.replace(b"\n", b"\r\n").split(b"\r\n\r\n")[0]).hexdigest(),
    }
    new = read(NO_ID)
    assert sorted(new.extra["legacy_header_ids"]) == sorted(old_ids.values())
    assert read(NO_ID.replace(b"\n", b"\r\n")).extra == new.extra  # the same on both paths
    for path, old_id in old_ids.items():
        store = Store(tmp_path / path)
        with store.writing():
            store.set_review_since("")
            store.add_contractor("Maria", [Identity("email", "maria@example.com")])
            store.commit_page("inbox", "imap", [old_header_record(new, old_id)],
                              owner_keys=OWNER)
            (old,) = store.deliverables()
            store.update_deliverable(old["id"], review_status="approved")
        with store.writing():
            result = store.commit_page("inbox", "imap", [new], owner_keys=OWNER)
        assert result.messages_new == 0, path
        assert [m["remote_id"] for m in store.iter_messages()] == [old_id]
        (after,) = store.deliverables()
        assert after["id"] == old["id"] and after["review_status"] == "approved"
    # another message without a Message-ID is still a record of its own
    other = read(NO_ID.replace(attachment(b"plan.pdf", b"%PDF plan"),
                               attachment(b"plan.pdf", b"%PDF other plan")))
    with store.writing():
        assert store.commit_page("inbox", "imap", [other], owner_keys=OWNER).messages_new == 1
