"""One reader: the same messages give the same records over IMAP (Dovecot) and from a Maildir."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.models import Message
from tests.plugins.imap.util import connector, context, run
from tests.plugins.maildir.util import connector as maildir_connector
from tests.plugins.maildir.util import make_maildir
from tests.plugins.maildir.util import sync as maildir_sync
from tests.servers.dovecot import Mailbox
from tests.test_mail_realworld import TEXT, _tnef, attachment, mixed

ARRIVED = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
SENDER = "maria@example.com"
HEAD_FROM = (b"From: Someone <%s>\nTo: owner@example.com\n"
             b"Date: Mon, 05 Jan 2026 10:00:00 +0000\n")
UNBALANCED = base64.b64encode('Иван "Ц'.encode()).decode()

TRICKY = [
    # same Message-ID, different files
    mixed(TEXT, attachment(b"one.pdf", b"%PDF one")),
    mixed(TEXT, attachment(b"two.pdf", b"%PDF two")),
    # no Message-ID, no Date, a colon-less header line
    (b"Received: from a\nby b; Tue, 06 Jan 2026 08:30:00 +0100\nFrom: maria@example.com\n"
     b"Subject: no id\n\nplain body\n"),
    # folded boundary, uuencode, signature, invite, forwarded message, winmail.dat
    (b"From: maria@example.com\nMessage-ID: <f@x>\nSubject: folded\nMIME-Version: 1.0\n"
     b"Content-Type: multipart/mixed;\n    boundary=\"----=_NextPart\n _000_0002\"\n\n"
     b"------=_NextPart _000_0002\nContent-Type: text/plain\n\nthe text\n"
     b"------=_NextPart _000_0002\n" + attachment(b"shot.png", b"\x89PNG", b"image/png")
     + b"\n------=_NextPart _000_0002--\n"),
    mixed(TEXT, b"Content-Type: application/octet-stream; name=\"w.txt\"\n"
                b"Content-Disposition: attachment; filename=\"w.txt\"\n"
                b"Content-Transfer-Encoding: x-uuencode\n\nbegin 644 w.txt\n"
                b"%=V]R:PH`\n`\nend\n", msgid=b"<uu@x>"),
    mixed(TEXT, attachment(b"signature.asc", b"sig", b"application/pgp-signature"),
          b"Content-Type: text/calendar\n\nBEGIN:VEVENT\nSUMMARY:Review\nEND:VEVENT\n",
          msgid=b"<sig@x>"),
    mixed(TEXT, b"Content-Type: message/rfc822\n\n"
          + mixed(b"Content-Type: text/plain\n\ninner\n", attachment(b"in.pdf", b"%PDF in"),
                  msgid=b"<inner@x>"), msgid=b"<fwd@x>"),
    mixed(TEXT, attachment(b"winmail.dat", _tnef([("a.doc", b"doc")]), b"application/ms-tnef"),
          msgid=b"<tnef@x>"),
    # one bad byte in UTF-8, an encoded name with unbalanced quotes, a named inline text
    (f"From: =?UTF-8?B?{UNBALANCED}?= <{SENDER}>\n"
     "Subject: bad byte\nMessage-ID: <bad@x>\nContent-Type: text/plain; charset=utf-8\n"
     "Content-Transfer-Encoding: 8bit\n\n").encode() + "Grüße ".encode() * 5 + b"\xff\n",
    mixed(b"Content-Type: text/plain; name=\"note.txt\"\nContent-Disposition: inline\n\nnote\n",
          msgid=b"<inline@x>"),
]


def comparable(message: Message) -> dict[str, Any]:
    extra = {k: v for k, v in message.extra.items() if k not in ("folder", "uid", "file", "flags")}
    return {
        "remote_id": message.remote_id, "sender": message.sender, "subject": message.subject,
        "sent_at": message.sent_at, "text": message.text, "html": message.html,
        "recipients": message.recipients, "thread": message.thread_remote_id, "extra": extra,
        "attachments": [(a.filename, a.content_type, a.status, a.data, a.size, a.inline)
                        for a in message.attachments],
    }


def test_imap_and_maildir_give_the_same_records(dovecot_mailbox: Mailbox, monkeypatch: Any,
                                                 tmp_path: Path) -> None:
    root = make_maildir(tmp_path / "Mail")
    for index, raw in enumerate(TRICKY):
        path = root / "cur" / f"{index:04d}.host:2,S"
        path.write_bytes(raw)
        os.utime(path, (ARRIVED.timestamp(), ARRIVED.timestamp()))
    with dovecot_mailbox.connect() as imap:
        for raw in TRICKY:
            typ, _ = imap.append("INBOX", "(\\Seen)", ARRIVED, raw.replace(b"\n", b"\r\n"))
            assert typ == "OK"
    (tmp_path / "m").mkdir()
    (tmp_path / "i").mkdir()
    from_maildir, _ = maildir_sync(
        maildir_connector(root, tmp_path / "m", context={"contractors": (SENDER,)}), {})
    from_imap, _, _ = run(connector(dovecot_mailbox, monkeypatch, tmp_path / "i",
                                    ctx=context(tmp_path / "i", contractors=[SENDER])), {})
    assert len(from_maildir) == len(from_imap) == len(TRICKY)
    assert len({m.remote_id for m in from_imap}) == len(TRICKY)  # nothing collapsed
    for left, right in zip(from_maildir, from_imap, strict=True):
        assert comparable(left) == comparable(right)


def test_refetch_reads_earlier_messages_by_uid_without_moving_the_cursor(
        dovecot_mailbox: Mailbox, monkeypatch: Any, tmp_path: Path) -> None:
    stranger = "newbie@example.com"
    raw = mixed(TEXT, attachment(b"draft.pdf", b"%PDF draft"),
                head=HEAD_FROM % stranger.encode(), msgid=b"<draft@x>")
    dovecot_mailbox.append_many("INBOX", [raw, mixed(TEXT, msgid=b"<other@x>")])
    first, cursor, _ = run(connector(dovecot_mailbox, monkeypatch, tmp_path,
                                     ctx=context(tmp_path, contractors=[])), {})
    assert first[0].attachments[0].status == "not_downloaded"
    promoted = context(tmp_path, contractors=[stranger])
    promoted.refetch.append(dict(first[0].extra))
    again, after, pages = run(connector(dovecot_mailbox, monkeypatch, tmp_path, ctx=promoted),
                              cursor)
    assert [m.remote_id for m in again] == [first[0].remote_id]
    assert again[0].attachments[0].status == "stored"
    assert again[0].attachments[0].data == b"%PDF draft"
    assert pages[0].cursor is None and after == cursor


def test_refetch_downloads_the_files_whoever_sent_the_email(
        dovecot_mailbox: Mailbox, monkeypatch: Any, tmp_path: Path) -> None:
    """A notification about a person just promoted comes from the marketplace's robot
    address, which is no contractor: read again for the backfill, its files come anyway."""
    robot = "donotreply@upwork.com"
    raw = mixed(TEXT, attachment(b"sketch.pdf", b"%PDF sketch"),
                head=HEAD_FROM % robot.encode(), msgid=b"<note@x>")
    dovecot_mailbox.append_many("INBOX", [raw])
    first, cursor, _ = run(connector(dovecot_mailbox, monkeypatch, tmp_path,
                                     ctx=context(tmp_path, contractors=[])), {})
    assert first[0].attachments[0].status == "not_downloaded"
    again_context = context(tmp_path, contractors=[])  # the robot is still nobody
    again_context.refetch.append(dict(first[0].extra))
    again, _, _ = run(connector(dovecot_mailbox, monkeypatch, tmp_path, ctx=again_context),
                      cursor)
    assert [m.remote_id for m in again] == [first[0].remote_id]
    assert again[0].attachments[0].data == b"%PDF sketch"
    assert again[0].extra["backfill"] is True
