"""Stores written before mail ids named more than the Message-ID keep their ids and reviews."""

from __future__ import annotations

import logging
from pathlib import Path

from agent.connector import SourceContext
from agent.mail import message_from_bytes
from agent.models import Identity, Message
from agent.store import Store
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
