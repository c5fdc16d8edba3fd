"""agent.mail: RFC 822 bytes to Message records, on good, hostile and malformed mail.

The hostile corpus lives in tests/data/mime/ (constructed by tests/data/make_mime_corpus.py).
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.connector import SourceContext
from agent.files import sanitize_filename
from agent.mail import (
    MAX_PARTS,
    build_message,
    decode_header_value,
    decode_text,
    html_to_text,
    message_from_bytes,
    parse_header_bytes,
)
from agent.models import Identity, Message
from tests.test_files import assert_safe

CORPUS = Path(__file__).parent / "data" / "mime"
CONTRACTOR = "maria@example.com"
OWNER = "owner@example.com"


def ctx(tmp_path: Path | None = None, *, cap: int = 50 * 1024 * 1024) -> SourceContext:
    where = tmp_path or Path("/nonexistent")
    return SourceContext(
        source="mail", platform="maildir", state_dir=where, scratch_dir=where,
        max_attachment_bytes=cap,
        is_owner=lambda i: i.address == OWNER,
        wants_attachments=lambda i: i.address == CONTRACTOR,
    )


def corpus(name: str) -> bytes:
    return (CORPUS / f"{name}.eml").read_bytes()


def assert_clean_text(value: str) -> None:
    value.encode("utf-8")  # no lone surrogates: the store can keep it
    assert "\x00" not in value


def assert_sane(message: Message) -> None:
    assert isinstance(message, Message)
    for text in (message.subject, message.text, message.sender.address, message.sender.name,
                 message.remote_id, message.thread_remote_id, message.html):
        assert_clean_text(text)
    for att in message.attachments:
        assert_safe(sanitize_filename(att.filename))
        assert att.data is None or att.status == "stored"


# -- ordinary mail -----------------------------------------------------------------------------


def test_plain_message_with_attachment_and_thread():
    msg = EmailMessage()
    msg["From"] = "Maria Lopez <Maria@Example.com>"
    msg["To"] = "Owner <owner@example.com>, other@example.com"
    msg["Cc"] = "cc@example.com"
    msg["Subject"] = "Re: Logo =?utf-8?q?v2_=E2=9C=93?="
    msg["Date"] = "Tue, 06 Jan 2026 09:30:00 +0100"
    msg["Message-ID"] = "<m2@example.com>"
    msg["In-Reply-To"] = "<m1@example.com>"
    msg["References"] = "<m0@example.com> <m1@example.com>"
    msg.set_content("Here is v2.\n")
    msg.add_attachment(b"\x89PNG fake", maintype="image", subtype="png", filename="logo-v2.png")
    message = message_from_bytes(msg.as_bytes(), ctx())
    assert message.remote_id.startswith("<m2@example.com>~")
    assert message.thread_remote_id == "<m0@example.com>"
    assert message.sender == Identity("email", "maria@example.com", name="Maria Lopez")
    assert [r.address for r in message.recipients] == [OWNER, "other@example.com",
                                                        "cc@example.com"]
    assert message.subject == "Re: Logo v2 ✓"
    assert message.sent_at == datetime(2026, 1, 6, 8, 30, tzinfo=UTC)
    assert message.text == "Here is v2."
    (att,) = message.attachments
    assert (att.filename, att.status, att.data) == ("logo-v2.png", "stored", b"\x89PNG fake")
    assert message.extra["in_reply_to"] == "m1@example.com"
    assert message.extra["references"] == ["m0@example.com", "m1@example.com"]


def test_strangers_and_owner_files_are_recorded_not_downloaded():
    msg = EmailMessage()
    msg["From"] = "news@shop.example"
    msg["Message-ID"] = "<n1@shop.example>"
    msg.set_content("Sale!")
    msg.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename="flyer.pdf")
    (att,) = message_from_bytes(msg.as_bytes(), ctx()).attachments
    assert att.status == "not_downloaded" and att.data is None and att.size == 4
    msg.replace_header("From", OWNER)
    (att,) = message_from_bytes(msg.as_bytes(), ctx()).attachments
    assert att.status == "not_downloaded"


def test_inline_signature_image_is_not_a_deliverable():
    msg = EmailMessage()
    msg["From"] = CONTRACTOR
    msg["Message-ID"] = "<sig@example.com>"
    msg.set_content("text")
    msg.add_alternative('<p>text</p><img src="cid:logo@sig">', subtype="html")
    msg.get_payload()[1].add_related(b"\x89PNG", maintype="image", subtype="png",
                                     cid="<logo@sig>", filename="signature.png",
                                     disposition="inline")
    (att,) = message_from_bytes(msg.as_bytes(), ctx()).attachments
    assert att.inline and att.status == "not_downloaded" and att.data is None


def test_attachment_over_the_cap_is_too_large(caplog):
    msg = EmailMessage()
    msg["From"] = CONTRACTOR
    msg["Message-ID"] = "<big@example.com>"
    msg.set_content("the video")
    msg.add_attachment(b"x" * 5000, maintype="video", subtype="mp4", filename="cut.mp4")
    with caplog.at_level(logging.WARNING):
        (att,) = message_from_bytes(msg.as_bytes(), ctx(cap=1000)).attachments
    assert att.status == "too_large" and att.data is None and att.size >= 5000
    assert "over the 1000 byte cap" in caplog.text


def test_message_without_message_id_gets_a_stable_hash_id():
    raw = b"From: a@example.com\nSubject: no id\n\nbody\n"
    first = message_from_bytes(raw, ctx())
    assert first.remote_id.startswith("sha256:")
    assert first.remote_id == message_from_bytes(raw, ctx()).remote_id
    assert first.thread_remote_id == first.remote_id


def test_fallback_date_when_the_date_header_is_missing_or_broken():
    when = datetime(2025, 5, 5, 12, 0, tzinfo=UTC)
    for date in (b"", b"Date: yesterday-ish\n", b"Date: Tue, 99 Foo 2026 99:99:99 +9999\n"):
        raw = b"From: a@example.com\n" + date + b"\nbody\n"
        assert message_from_bytes(raw, ctx(), fallback_date=when).sent_at == when


def test_parse_header_bytes_and_build_message():
    info = parse_header_bytes(b"From: Mar\xeda <maria@example.com>\r\nMessage-ID: <h@x>\r\n"
                              b"Subject: =?utf-8?b?w6k=?=\r\n")
    assert info.sender.name == "María" and info.subject == "é"
    message = build_message(info, "text", [], {"k": 1}, html="<p>x</p>")
    assert message.remote_id.startswith("<h@x>~") and message.html == "<p>x</p>"


def test_decode_helpers_never_raise():
    assert decode_text(b"caf\xe9", "x-unknown") == "café"
    assert decode_text(b"hi", "utf\x008") == "hi"
    assert decode_text(b"+2AA-", "utf-7") == "\ufffd"
    assert decode_text(b"\xff\xfe", "idna") == "ÿþ"
    assert decode_header_value("=?x-klingon?q?Qapla=27?=") == "Qapla'"
    assert decode_header_value("=?utf-7?q?+2AA-?=") == "\ufffd"
    assert decode_header_value("a\x00b\x1b[31mc") == "ab[31mc"


def test_html_to_text_drops_scripts():
    text = html_to_text("<p>Hi</p><script>alert(1)</script><style>p{}</style><!-- c -->"
                        "<iframe src='x'>in frame</iframe><p>there<br>you</p>")
    assert [line for line in text.splitlines() if line] == ["Hi", "there", "you"]


# -- the hostile corpus --------------------------------------------------------------------


def parse(name: str, caplog: pytest.LogCaptureFixture, **kw: int) -> Message:
    with caplog.at_level(logging.INFO, logger="retainer.mail"):
        message = message_from_bytes(corpus(name), ctx(**kw))
    assert_sane(message)
    return message


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.eml")), ids=lambda p: p.stem)
def test_every_corpus_message_is_kept_with_a_log_line(path, caplog):
    message = parse(path.stem, caplog)
    assert message.remote_id
    assert caplog.records, f"{path.name}: no log line"
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_traversal_names(caplog):
    message = parse("traversal_names", caplog)
    names = [a.filename for a in message.attachments]
    assert names[:3] == ["../../x", "/etc/passwd", "CON"]
    assert "../../.ssh/authorized_keys" in names  # RFC 2231 encoded traversal, decoded
    assert "../../evil.sh" in names  # encoded-word traversal
    stored = {sanitize_filename(n) for n in names}
    assert {"x", "passwd", "_CON", "authorized_keys", "evil.sh", "win.ini",
            "invoicefdp.exe", "nulbyte.txt"} <= stored
    assert all(a.status == "stored" and a.data for a in message.attachments)
    for unsafe in ("'../../x'", "'/etc/passwd'", "'CON'", "NUL bytes", "\\u202e"):
        assert unsafe in caplog.text


def test_declared_2gb_size_is_not_trusted(caplog):
    (att,) = parse("declared_2gb", caplog).attachments
    assert att.status == "stored" and att.data == b"tiny really\n" and att.size == 12
    assert "declares 2147483648 bytes" in caplog.text


def test_declared_2gb_with_a_small_cap_is_recorded_too_large(caplog):
    (att,) = parse("declared_2gb", caplog, cap=4).attachments
    assert att.status == "too_large" and att.data is None


def test_malformed_multiparts_keep_their_text(caplog):
    no_boundary = parse("no_boundary", caplog)
    assert "body without a declared boundary" in no_boundary.text
    assert "NoBoundaryInMultipartDefect" in no_boundary.extra["defects"]
    unclosed = parse("no_close_boundary", caplog)
    assert unclosed.text == "the text is still here"
    assert [a.filename for a in unclosed.attachments] == ["draft.pdf"]
    assert "CloseBoundaryNotFoundDefect" in unclosed.extra["defects"]
    assert "has MIME defects" in caplog.text


def test_bad_base64(caplog):
    message = parse("bad_base64", caplog)
    assert message.text.startswith("Hello world")
    assert "InvalidBase64CharactersDefect" in message.extra["defects"]
    assert [a.filename for a in message.attachments] == ["mock.png"]


def test_unknown_charset_and_8bit_and_non_utf8_headers(caplog):
    klingon = parse("unknown_charset", caplog)
    assert klingon.subject == "Qapla'" and klingon.text.startswith("café and")
    eight = parse("eight_bit_headers", caplog)
    assert eight.subject.startswith("Résumé")
    assert eight.sender.name == "María López"
    assert eight.attachments[0].filename.startswith("désign")
    sjis = parse("non_utf8_headers", caplog)
    assert sjis.subject.startswith("日本語café")
    assert sjis.text == "日本語の本文"


def test_deep_nesting_and_many_parts(caplog):
    deep = parse("nested_200", caplog)
    assert deep.text == "at the bottom"
    many = parse("many_parts", caplog)
    assert len(many.attachments) < MAX_PARTS
    assert "TooManyParts" in many.extra["defects"]


def test_absurd_nesting_is_kept_as_text(caplog):
    depth = 3000
    raw = b"From: a@example.com\nMessage-ID: <deep@x>\nContent-Type: multipart/mixed; boundary=b0\n\n"
    raw += b"".join(b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1)
                    for i in range(depth))
    raw += b"--b%d\nContent-Type: text/plain\n\nbottom\n" % depth
    with caplog.at_level(logging.WARNING):
        message = message_from_bytes(raw, ctx())
    assert_sane(message)
    assert message.remote_id.startswith("<deep@x>~")
    assert "bottom" in message.text or "TooDeeplyNested" in message.extra["defects"]
    assert "defects" in caplog.text


def test_html_with_scripts(caplog):
    message = parse("html_script", caplog)
    assert "alert" not in message.text and "fetch(" not in message.text
    assert "Here is my portfolio." in message.text and "Thanks, Maria" in message.text
    assert "dropped 3 script/iframe/object element(s)" in caplog.text
    assert message.subject == "Portfolio <script>alert(1)</script>"  # text, never markup


def test_binary_junk(caplog):
    message = parse("no_headers_at_all", caplog)
    assert message.sender.address == "unknown@invalid"
    assert message.remote_id.startswith("sha256:")


# -- fuzzing -------------------------------------------------------------------------------

_header_bytes = st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b)
_names = st.sampled_from([
    b"../../x", b"/etc/passwd", b"CON", b"a" * 300, b"nul\x00.txt", b"=?utf-8?b?Li4vZXZpbA==?=",
    b"\xff\xfe.pdf", b"", b"..", b"ok.pdf",
])
_charsets = st.sampled_from([b"utf-8", b"x-unknown", b"utf-7", b"idna", b"utf\x008", b"latin-1",
                             b"shift_jis", b"utf-16", b""])
_encodings = st.sampled_from([b"base64", b"quoted-printable", b"8bit", b"b\xe4se64", b"x-uue"])


@st.composite
def _part(draw: st.DrawFn, depth: int = 0) -> bytes:
    kind = draw(st.integers(0, 3 if depth < 4 else 2))
    if kind == 3:
        boundary = draw(st.sampled_from([b"B", b"", b"b1", b'"quoted"', b"=_x"]))
        children = draw(st.lists(_part(depth + 1), max_size=4))
        body = b"".join(b"--" + boundary + b"\n" + c for c in children)
        if draw(st.booleans()):
            body += b"--" + boundary + b"--\n"
        return b"Content-Type: multipart/mixed; boundary=" + boundary + b"\n\n" + body
    ctype = draw(st.sampled_from([b"text/plain", b"text/html", b"application/pdf",
                                  b"image/png", b"message/rfc822", b"bogus"]))
    head = b"Content-Type: " + ctype + b"; charset=" + draw(_charsets) + b"\n"
    if draw(st.booleans()):
        head += b'Content-Disposition: attachment; filename="' + draw(_names) + b'"\n'
    if draw(st.booleans()):
        head += b"Content-Disposition: inline; filename*=utf-8''..%2F" + draw(_header_bytes) + b"\n"
    head += b"Content-Transfer-Encoding: " + draw(_encodings) + b"\n"
    body = draw(st.binary(max_size=80) | st.sampled_from(
        [b"<script>alert(1)</script><p>x</p>", b"SGVsbG8=", b"=E9=\n", b"begin 644 x\n"]))
    return head + b"\n" + body + b"\n"


@st.composite
def _message(draw: st.DrawFn) -> bytes:
    headers = b""
    for name in draw(st.lists(st.sampled_from(
            [b"From", b"To", b"Cc", b"Subject", b"Date", b"Message-ID", b"References",
             b"In-Reply-To", b"Sender"]), max_size=8)):
        headers += name + b": " + draw(_header_bytes | st.sampled_from(
            [b"<a@b>", b"Maria <maria@example.com>", b"=?utf-8?q?=FF?=", b"<<>>", b"@",
             b"Tue, 06 Jan 2026 09:30:00 +0100", b"=?bogus?b?!!?="])) + b"\n"
    if draw(st.booleans()):
        headers += b"MIME-Version: 1.0\n"
    return headers + draw(_part())


@settings(max_examples=int(os.environ.get("RETAINER_FUZZ_EXAMPLES", "300")), deadline=None,
          database=None, suppress_health_check=[HealthCheck.too_slow])
@given(_message() | st.binary(max_size=600))
def test_message_from_bytes_never_raises(raw):
    message = message_from_bytes(raw, ctx())
    assert_sane(message)


def test_big_inline_image_is_a_deliverable():
    """Apple Mail shows pasted work inline: a big inline image is still a deliverable."""
    msg = EmailMessage()
    msg["From"] = CONTRACTOR
    msg["Message-ID"] = "<pasted@example.com>"
    msg.set_content("see the design below")
    msg.add_alternative('<p>see</p><img src="cid:design@x">', subtype="html")
    msg.get_payload()[1].add_related(b"\x89PNG" + b"p" * 200_000, maintype="image",
                                     subtype="png", cid="<design@x>", filename="design.png",
                                     disposition="inline")
    (att,) = message_from_bytes(msg.as_bytes(), ctx()).attachments
    assert not att.inline and att.status == "stored" and att.filename == "design.png"


def test_huge_html_is_cut(caplog):
    raw = (b"From: a@example.com\nMessage-ID: <h@x>\nContent-Type: text/html\n\n"
           + b"<p>" + b"word " * 300_000 + b"</p>")
    with caplog.at_level(logging.WARNING):
        message = message_from_bytes(raw, ctx())
    assert "HtmlTruncated" in message.extra["defects"]
    assert message.text.startswith("word")
