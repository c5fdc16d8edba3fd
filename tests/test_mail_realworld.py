"""Real-world mail defects (issue 8), one small hand-written message per defect class.

Each message is read by :func:`agent.mail.message_from_bytes`, the reader IMAP and
Maildir share (tests/plugins/imap/test_one_reader.py checks they agree).
"""

from __future__ import annotations

import base64
import logging
import struct
from datetime import UTC, datetime
from pathlib import Path

from agent.connector import SourceContext
from agent.mail import decode_text, message_from_bytes
from agent.models import Identity

ARRIVED = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def ctx(tmp: Path | None = None) -> SourceContext:
    where = tmp or Path("/nonexistent")
    return SourceContext(source="mail", platform="maildir", state_dir=where, scratch_dir=where,
                         max_attachment_bytes=10 * 1024 * 1024,
                         wants_attachments=lambda identity: True,
                         log=logging.getLogger("retainer.test"))


def read(raw: bytes) -> object:
    return message_from_bytes(raw, ctx(), fallback_date=ARRIVED)


HEAD = (b"From: Maria <maria@example.com>\nTo: owner@example.com\n"
        b"Date: Mon, 05 Jan 2026 10:00:00 +0000\n")


def mixed(*parts: bytes, head: bytes = HEAD, msgid: bytes = b"<x@example.com>") -> bytes:
    body = b"".join(b"--BOUNDARY-1234\n" + part + b"\n" for part in parts)
    return (head + b"Message-ID: " + msgid + b"\nSubject: s\nMIME-Version: 1.0\n"
            b"Content-Type: multipart/mixed; boundary=\"BOUNDARY-1234\"\n\n"
            + body + b"--BOUNDARY-1234--\n")


TEXT = b"Content-Type: text/plain; charset=utf-8\n\nHere is the work.\n"


def attachment(name: bytes, data: bytes, ctype: bytes = b"application/pdf") -> bytes:
    return (b"Content-Type: " + ctype + b"; name=\"" + name + b"\"\n"
            b"Content-Disposition: attachment; filename=\"" + name + b"\"\n"
            b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(data))


# -- identity -----------------------------------------------------------------------------

def test_same_message_id_on_two_different_messages_gives_two_ids() -> None:
    first = message_from_bytes(mixed(TEXT, attachment(b"a.pdf", b"%PDF one")), ctx())
    second = message_from_bytes(mixed(TEXT, attachment(b"b.pdf", b"%PDF two")), ctx())
    assert first.remote_id != second.remote_id
    assert first.remote_id.startswith("<x@example.com>~")
    assert first.extra["legacy_remote_id"] == "<x@example.com>"


def test_the_same_message_again_has_the_same_id_whatever_its_line_endings() -> None:
    raw = mixed(TEXT, attachment(b"a.pdf", b"%PDF one"))
    crlf = raw.replace(b"\n", b"\r\n")
    assert message_from_bytes(raw, ctx()).remote_id == message_from_bytes(crlf, ctx()).remote_id


def test_messages_without_message_id_do_not_collapse() -> None:
    one = HEAD + b"Subject: same\n\nfirst body\n"
    two = HEAD + b"Subject: same\n\nsecond body\n"
    assert message_from_bytes(one, ctx()).remote_id != message_from_bytes(two, ctx()).remote_id
    assert message_from_bytes(one, ctx()).remote_id == message_from_bytes(one, ctx()).remote_id


def test_message_id_without_angle_brackets_is_used() -> None:
    message = read(HEAD.replace(b"Date", b"Message-ID: bare-id@example.com\nDate")
                   + b"Subject: s\n\nbody\n")
    assert message.extra["message_id"] == "bare-id@example.com"
    assert message.remote_id.startswith("<bare-id@example.com>~")


# -- dates --------------------------------------------------------------------------------

def test_missing_date_uses_received_then_the_arrival_time_never_now() -> None:
    with_received = (b"Received: from a by b; Tue, 06 Jan 2026 08:30:00 +0100\n"
                     b"From: maria@example.com\nSubject: s\n\nbody\n")
    assert read(with_received).sent_at == datetime(2026, 1, 6, 7, 30, tzinfo=UTC)
    bare = b"From: maria@example.com\nSubject: s\n\nbody\n"
    assert read(bare).sent_at == ARRIVED


# -- decoding -----------------------------------------------------------------------------

def test_one_bad_byte_keeps_the_rest_of_utf8_text() -> None:
    body = "Grüße, der Entwurf für München ist fertig. ".encode() * 3 + b"\xff end"
    raw = HEAD + b"Subject: s\nContent-Type: text/plain; charset=utf-8\n\n" + body
    text = read(raw).text
    assert "Grüße, der Entwurf für München" in text and text.count("\ufffd") == 1
    assert "Ã" not in text


def test_one_bad_byte_in_big5_gb2312_and_hebrew() -> None:
    for charset, words in (("big5", "設計稿已完成請查收附件"), ("gb2312", "设计稿已经完成请查收附件"),
                           ("iso-8859-8-i", "הטיוטה מוכנה, ראה קובץ מצורף")):
        codec = {"iso-8859-8-i": "iso-8859-8"}.get(charset, charset)
        body = words.encode(codec) * 2 + b"\xff"
        raw = (HEAD + b"Subject: s\nContent-Type: text/plain; charset=" + charset.encode()
               + b"\nContent-Transfer-Encoding: 8bit\n\n" + body)
        text = read(raw).text
        assert words in text, charset


def test_encoded_subject_and_attachment_name_with_a_bad_byte() -> None:
    subject = base64.b64encode("设计稿 最终版".encode("gb2312") + b"\xff").decode()
    name = "=?utf-8?b?" + base64.b64encode("Entwurf-Größe".encode() + b"\xfe.pdf").decode() + "?="
    raw = mixed(TEXT, attachment(name.encode(), b"%PDF"),
                head=HEAD + f"Subject: =?gb2312?b?{subject}?=\n".encode())
    message = read(raw)
    assert "设计稿 最终版" in message.subject
    assert message.attachments[0].filename.startswith("Entwurf-Größe")


def test_wrongly_labelled_utf8_is_read_as_utf8() -> None:
    assert decode_text("Café déjà vu".encode(), "iso-8859-1") == "Café déjà vu"
    assert decode_text("Café".encode("latin-1"), "iso-8859-1") == "Café"


def test_rfc2231_name_and_folded_parameters() -> None:
    part = (b"Content-Type: application/pdf\nContent-Disposition: attachment;\n"
            b" filename*0*=utf-8''%E2%82%AC%20plan;\n filename*1=\".pdf\"\n"
            b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(b"%PDF"))
    (att,) = read(mixed(TEXT, part)).attachments
    assert att.filename == "\u20ac plan.pdf" and att.data == b"%PDF"


def test_folded_boundary_parameter() -> None:
    raw = (HEAD + b"Message-ID: <f@x>\nSubject: s\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/mixed;\n    boundary=\"----=_NextPart\n _000_0002\"\n\n"
           b"------=_NextPart _000_0002\nContent-Type: text/plain\n\nthe text\n"
           b"------=_NextPart _000_0002\n" + attachment(b"shot.png", b"\x89PNG", b"image/png")
           + b"\n------=_NextPart _000_0002--\n")
    message = read(raw)
    assert message.text == "the text"
    assert [(a.filename, a.data) for a in message.attachments] == [("shot.png", b"\x89PNG")]


def test_header_line_without_colon_does_not_end_the_header() -> None:
    raw = (b"Received: from a (HELO b)\nby localhost with SMTP; 19 Nov 2014 08:46:08 -0000\n"
           b"From: Maria <maria@example.com>\nSubject: still a header\n"
           b"Message-ID: <c@x>\n\nthe body\n")
    message = read(raw)
    assert message.sender.address == "maria@example.com"
    assert message.subject == "still a header" and message.text == "the body"
    assert "HeaderLineWithoutColon" in message.extra["defects"]


def test_encoded_display_name_with_unbalanced_quotes_keeps_the_sender() -> None:
    name = base64.b64encode('ФГУП "СибНИИ им. Чаплыгина""'.encode()).decode()
    raw = f"From: =?UTF-8?B?{name}?= <user@example.ru>\nSubject: s\n\nbody\n".encode()
    message = read(raw)
    assert message.sender.address == "user@example.ru"
    assert "СибНИИ" in message.sender.name


def test_quoted_local_part_is_an_address() -> None:
    message = read(b'From: "big bug bb"@bug.example\nSubject: s\n\nbody\n')
    assert message.sender == Identity("email", '"big bug bb"@bug.example')


def test_x_uuencode_attachment_is_decoded() -> None:
    import binascii

    data = b"uuencoded work file\n" * 3
    lines = b"".join(binascii.b2a_uu(data[i:i + 45]) for i in range(0, len(data), 45))
    part = (b"Content-Type: application/octet-stream; name=\"work.txt\"\n"
            b"Content-Disposition: attachment; filename=\"work.txt\"\n"
            b"Content-Transfer-Encoding: x-uuencode\n\nbegin 644 work.txt\n" + lines
            + b"`\nend\n")
    (att,) = read(mixed(TEXT, part)).attachments
    assert att.data == data


# -- deliverables -------------------------------------------------------------------------

def test_signatures_cards_and_reports_are_not_deliverables() -> None:
    parts = [
        attachment(b"signature.asc", b"-----BEGIN PGP SIGNATURE-----", b"application/pgp-signature"),
        attachment(b"smime.p7s", b"\x30\x82", b"application/pkcs7-signature"),
        attachment(b"maria.vcf", b"BEGIN:VCARD", b"text/vcard"),
        attachment(b"work.pdf", b"%PDF real work"),
    ]
    message = read(mixed(TEXT, *parts))
    statuses = {a.filename: a.status for a in message.attachments}
    assert statuses == {"signature.asc": "not_downloaded", "smime.p7s": "not_downloaded",
                        "maria.vcf": "not_downloaded", "work.pdf": "stored"}
    assert "not work" in message.attachments[0].note


def test_delivery_report_is_text_without_deliverables() -> None:
    raw = (b"From: MAILER-DAEMON@example.com\nSubject: Undelivered\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"r\"\n\n"
           b"--r\nContent-Type: text/plain\n\nYour message could not be delivered.\n"
           b"--r\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n\n"
           b"Final-Recipient: rfc822; gone@example.com\nAction: failed\n"
           b"--r\nContent-Type: message/disposition-notification\n\nDisposition: displayed\n"
           b"--r--\n")
    message = read(raw)
    assert message.text == "Your message could not be delivered."
    assert all(a.status == "not_downloaded" for a in message.attachments)


def test_calendar_invite_is_noted_not_text_nor_deliverable() -> None:
    ics = (b"Content-Type: text/calendar; method=REQUEST; charset=utf-8\n\n"
           b"BEGIN:VCALENDAR\nMETHOD:REQUEST\nBEGIN:VEVENT\nSUMMARY:Design review\n"
           b"DTSTART:20260110T150000Z\nEND:VEVENT\nEND:VCALENDAR\n")
    message = read(mixed(TEXT, ics))
    assert message.text == "Here is the work."
    assert message.extra["invite"]["summary"] == "Design review"
    assert message.extra["invite"]["dtstart"] == "20260110T150000Z"
    assert [a.status for a in message.attachments] == ["not_downloaded"]


def test_named_inline_text_is_the_body() -> None:
    part = (b"Content-Type: text/plain; charset=utf-8; name=\"note.txt\"\n"
            b"Content-Disposition: inline; filename=\"note.txt\"\n\nThe body text.\n")
    message = read(mixed(part))
    assert message.text == "The body text." and message.attachments == ()


def test_forwarded_message_is_read_into_the_body_with_its_files() -> None:
    inner = mixed(b"Content-Type: text/plain\n\nInner text.\n",
                  attachment(b"inner.pdf", b"%PDF inner"), msgid=b"<inner@x>")
    part = (b"Content-Type: message/rfc822\nContent-Disposition: attachment\n\n" + inner)
    message = read(mixed(TEXT, part))
    assert "Here is the work." in message.text and "Inner text." in message.text
    assert [(a.filename, a.data) for a in message.attachments] == [("inner.pdf", b"%PDF inner")]


def _tnef(files: list[tuple[str, bytes]]) -> bytes:
    """A minimal TNEF stream (as Outlook writes winmail.dat) holding ``files``."""

    def attribute(level: int, ident: int, data: bytes) -> bytes:
        checksum = sum(data) & 0xFFFF
        return struct.pack("<BII", level, ident, len(data)) + data + struct.pack("<H", checksum)

    out = struct.pack("<IH", 0x223E9F78, 1)
    out += attribute(1, 0x00089006, struct.pack("<I", 0x00010000))  # TNEF version
    for name, data in files:
        out += attribute(2, 0x00069002, b"\x01\x00\x00\x00" + b"\x00" * 10)  # attAttachRendData
        out += attribute(2, 0x00018010, name.encode() + b"\x00")  # attAttachTitle
        out += attribute(2, 0x0006800F, data)  # attAttachData
    return out


def test_winmail_dat_is_unpacked_into_its_files() -> None:
    tnef = _tnef([("design.pdf", b"%PDF tnef"), ("notes.txt", b"hello")])
    message = read(mixed(TEXT, attachment(b"winmail.dat", tnef, b"application/ms-tnef")))
    assert [(a.filename, a.data) for a in message.attachments] == [
        ("design.pdf", b"%PDF tnef"), ("notes.txt", b"hello")]


def test_an_undated_copy_with_another_arrival_time_keeps_its_id() -> None:
    raw = b"From: maria@example.com\nMessage-ID: <undated@x>\nSubject: s\n\nbody\n"
    early = message_from_bytes(raw, ctx(), fallback_date=ARRIVED)
    later = message_from_bytes(raw, ctx(), fallback_date=datetime(2026, 2, 1, tzinfo=UTC))
    assert early.sent_at != later.sent_at and early.remote_id == later.remote_id
